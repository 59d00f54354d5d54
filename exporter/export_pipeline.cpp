#include "exporter/export_pipeline.h"

#include <atomic>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "exporter/batcher.h"
#include "exporter/console_sender.h"
#include "exporter/destination_queue.h"
#include "exporter/export_metrics.h"
#include "exporter/file_store_sender.h"
#include "exporter/otlp_grpc_sender.h"
#include "exporter/otlp_http_sender.h"
#include "exporter/zipkin_sender.h"
#include "absl/strings/match.h"
#include <algorithm>
#include "spdlog/spdlog.h"

namespace kspan {
namespace {

std::string_view TypeName(DestinationType type) {
  switch (type) {
    case DestinationType::kOtlpGrpc: return "otlp_grpc";
    case DestinationType::kOtlpHttp: return "otlp_http";
    case DestinationType::kZipkin: return "zipkin";
    case DestinationType::kConsole: return "console";
    case DestinationType::kFile: return "file";
  }
  return "unknown";
}

template <typename T>
absl::StatusOr<std::unique_ptr<SpanSender>> Upcast(absl::StatusOr<std::unique_ptr<T>> s) {
  if (!s.ok()) return s.status();
  return std::unique_ptr<SpanSender>(*std::move(s));
}

}  // namespace

bool UsesOtlpHttp(const DestinationConfig& d) {
  return d.type == DestinationType::kOtlpHttp ||
         (d.type == DestinationType::kOtlpGrpc && absl::StartsWith(d.otlp_grpc.protocol, "http/"));
}

bool IsNetworkDestination(const DestinationConfig& d) {
  return d.type == DestinationType::kOtlpGrpc || d.type == DestinationType::kOtlpHttp ||
         d.type == DestinationType::kZipkin;
}

absl::StatusOr<std::unique_ptr<SpanSender>> MakeSpanSender(const DestinationConfig& d,
                                                          const EnvLookup& env) {
  if (UsesOtlpHttp(d)) {
    OtlpGrpcOptions o = d.otlp_grpc;
    if (!absl::StartsWith(o.protocol, "http/")) o.protocol = "http/protobuf";
    return Upcast(OtlpHttpSender::Create(o, env));
  }
  switch (d.type) {
    case DestinationType::kOtlpGrpc:
    case DestinationType::kOtlpHttp:
      return Upcast(OtlpGrpcSender::Create(d.otlp_grpc, env));
    case DestinationType::kZipkin:
      return Upcast(ZipkinSender::Create(d.otlp_grpc, env));
    case DestinationType::kConsole:
      return std::unique_ptr<SpanSender>(std::make_unique<ConsoleSender>(d.console));
    case DestinationType::kFile:
      return Upcast(FileStoreSender::Create(d.file));
  }
  return absl::InvalidArgumentError("unknown destination type");
}

namespace {

class ExportPipelineImpl final : public ExportPipeline {
 public:
  ExportPipelineImpl(std::vector<std::unique_ptr<DestinationQueue>> destinations,
                     MetricsRegistry& metrics)
      : destinations_(std::move(destinations)),
        submitted_(metrics.GetCounter(metric::kSpansSubmitted, "Spans handed to the exporter.")),
        not_persisted_(metrics.GetCounter(
            metric::kBatcherDropped, "Spans lost in the shared batcher before fan-out, by reason.",
            {{"reason", std::string(drop_reason::kNotPersisted)}})) {
    for (auto& d : destinations_) (d->disk_enabled() ? disk_ : memory_).push_back(d.get());
  }

  ~ExportPipelineImpl() override { Shutdown(std::chrono::milliseconds(0)); }

  void Start(const BatchOptions& options, MetricsRegistry& metrics) {
    Batcher::Sink memory_sink;
    if (!disk_.empty() && !memory_.empty()) {
      // App spans already in every disk queue: only the other destinations.
      memory_sink = [this](SharedSpanBatch batch) {
        for (auto* d : memory_) d->Enqueue(batch);
      };
    }
    batcher_ = std::make_unique<Batcher>(
        options, metrics,
        [this](SharedSpanBatch batch) {
          // Fan-out: one shared batch, a non-blocking enqueue per destination.
          for (auto& d : destinations_) d->Enqueue(batch);
        },
        std::move(memory_sink));
  }

  bool Submit(Span span) noexcept override { return batcher_->Submit(std::move(span)); }

  SubmitResult SubmitBatch(std::vector<Span>&& spans) noexcept override {
    if (disk_.empty()) return batcher_->SubmitBatch(std::move(spans));
    return SubmitPersisted(std::move(spans));
  }

  void Shutdown(std::chrono::milliseconds deadline) override {
    std::lock_guard lock(shutdown_mu_);
    if (shut_down_) return;
    shut_down_ = true;
    stopping_.store(true);
    const auto until = std::chrono::steady_clock::now() + deadline;
    spdlog::info("export pipeline: shutting down, flushing for up to {}ms", deadline.count());
    // The batcher flushes everything it holds into the destination queues
    // (without blocking), then every destination drains in parallel.
    batcher_->Shutdown();
    for (auto& d : destinations_) d->BeginShutdown(until);
    for (auto& d : destinations_) d->Join();
    spdlog::info("export pipeline: stopped");
  }

 private:
  // At-least-once from acceptance: a request's spans are committed to every
  // disk queue before the receiver answers (the batcher's delay would leave
  // them in memory for up to schedule_delay). Destinations without a disk
  // queue get them through the batcher as before. Nothing is taken when the
  // first disk queue refuses; a later one refusing leaves the request in the
  // earlier ones, which the client's retry duplicates there (counted in
  // kspan_exporter_disk_queue_persist_refused_spans_total).
  SubmitResult SubmitPersisted(std::vector<Span>&& spans) noexcept {
    const std::size_t n = spans.size();
    submitted_.Add(n);
    if (n == 0) return SubmitResult::kAccepted;
    if (stopping_.load()) {
      not_persisted_.Add(n);
      return SubmitResult::kShutdown;
    }
    try {
      std::vector<Span> for_memory;
      if (!memory_.empty()) for_memory = spans;  // shares resources and scopes
      auto batch = std::make_shared<SpanBatch>();
      batch->spans = std::move(spans);
      batch->approx_bytes = ApproximateBatchBytes(batch->spans);
      const SharedSpanBatch shared = std::move(batch);
      for (auto* d : disk_) {
        if (absl::Status s = d->Persist(shared); !s.ok()) {
          not_persisted_.Add(n);
          spdlog::debug("export to '{}': request of {} spans not persisted: {}", d->name(), n,
                        std::string(s.message()));
          return SubmitResult::kQueueFull;
        }
      }
      if (!memory_.empty() &&
          batcher_->SubmitBatch(std::move(for_memory), BatchRoute::kMemoryDestinations) !=
              SubmitResult::kAccepted) {
        // Accepted (it is on disk); the memory-only destinations miss it.
        for (auto* d : memory_) d->CountDropped(drop_reason::kQueueFull, n);
      }
      return SubmitResult::kAccepted;
    } catch (...) {
      not_persisted_.Add(n);
      return SubmitResult::kQueueFull;
    }
  }

  std::vector<std::unique_ptr<DestinationQueue>> destinations_;
  std::vector<DestinationQueue*> disk_;    // destinations with a disk queue
  std::vector<DestinationQueue*> memory_;  // the others
  Counter& submitted_;
  Counter& not_persisted_;
  std::atomic<bool> stopping_{false};
  std::unique_ptr<Batcher> batcher_;  // declared last: stopped first
  std::mutex shutdown_mu_;
  bool shut_down_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ExportPipeline>> ExportPipeline::Create(const ExportConfig& config,
                                                                       MetricsRegistry& metrics) {
  if (config.destinations.empty()) {
    return absl::InvalidArgumentError("export: no destination configured");
  }
  if (config.batch.max_export_batch_size == 0) {
    return absl::InvalidArgumentError("export: max_export_batch_size must be at least 1");
  }
  if (config.batch.max_queue_size == 0) {
    return absl::InvalidArgumentError("export: max_queue_size must be at least 1");
  }

  std::set<std::string, std::less<>> names;
  std::vector<std::unique_ptr<DestinationQueue>> destinations;
  for (const auto& d : config.destinations) {
    // Names label the metrics, so they must be unique; default: the type.
    std::string name = d.name.empty() ? std::string(TypeName(d.type)) : d.name;
    if (!names.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "export: destination name '", name, "' is used twice; give each a unique name"));
    }
    if (d.max_queued_batches == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("export: destination '", name, "': max_queued_batches must be at least 1"));
    }
    // Local destinations write one batch at a time, in order.
    const bool network = IsNetworkDestination(d);
    const std::size_t in_flight = network ? std::clamp<std::size_t>(d.max_in_flight, 1, 64) : 1;
    std::vector<std::unique_ptr<SpanSender>> senders;
    for (std::size_t i = 0; i < in_flight; ++i) {
      auto sender = MakeSpanSender(d, ProcessEnv());
      if (!sender.ok()) {
        return absl::Status(sender.status().code(), absl::StrCat("export: destination '", name,
                                                                 "': ", sender.status().message()));
      }
      senders.push_back(*std::move(sender));
    }
    DestinationQueue::Options options;
    options.name = name;
    options.retry = d.retry;
    options.max_queued_batches = d.max_queued_batches;
    options.max_queued_spans = d.queue.max_spans;
    options.max_queued_bytes = d.queue.max_bytes;
    options.disk = d.queue.disk;
    options.coalesce_max_spans = std::max<std::size_t>(1, config.batch.max_export_batch_size);
    if (options.disk.enabled && options.disk.path.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("export: destination '", name, "': queue.disk needs a path"));
    }
    options.dead_letter = d.dead_letter;
    options.circuit_breaker = d.circuit_breaker;
    options.circuit_breaker.enabled = network && d.circuit_breaker.enabled;
    destinations.push_back(
        std::make_unique<DestinationQueue>(std::move(options), std::move(senders), metrics));
  }

  auto pipeline = std::make_unique<ExportPipelineImpl>(std::move(destinations), metrics);
  pipeline->Start(config.batch, metrics);
  spdlog::info("export pipeline: {} destination(s), batch {} spans / {}ms, queue {} spans",
               names.size(), config.batch.max_export_batch_size,
               config.batch.schedule_delay.count(), config.batch.max_queue_size);
  return std::unique_ptr<ExportPipeline>(std::move(pipeline));
}

}  // namespace kspan
