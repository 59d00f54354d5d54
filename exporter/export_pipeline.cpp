#include "exporter/export_pipeline.h"

#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "exporter/batcher.h"
#include "exporter/console_sender.h"
#include "exporter/destination_queue.h"
#include "exporter/file_store_sender.h"
#include "exporter/otlp_grpc_sender.h"
#include "spdlog/spdlog.h"

namespace kspan {
namespace {

std::string_view TypeName(DestinationType type) {
  switch (type) {
    case DestinationType::kOtlpGrpc: return "otlp_grpc";
    case DestinationType::kConsole: return "console";
    case DestinationType::kFile: return "file";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<SpanSender>> MakeSender(const DestinationConfig& d) {
  switch (d.type) {
    case DestinationType::kOtlpGrpc: {
      auto s = OtlpGrpcSender::Create(d.otlp_grpc);
      if (!s.ok()) return s.status();
      return std::unique_ptr<SpanSender>(*std::move(s));
    }
    case DestinationType::kConsole:
      return std::unique_ptr<SpanSender>(std::make_unique<ConsoleSender>(d.console));
    case DestinationType::kFile: {
      auto s = FileStoreSender::Create(d.file);
      if (!s.ok()) return s.status();
      return std::unique_ptr<SpanSender>(*std::move(s));
    }
  }
  return absl::InvalidArgumentError("unknown destination type");
}

class ExportPipelineImpl final : public ExportPipeline {
 public:
  explicit ExportPipelineImpl(std::vector<std::unique_ptr<DestinationQueue>> destinations)
      : destinations_(std::move(destinations)) {}

  ~ExportPipelineImpl() override { Shutdown(std::chrono::milliseconds(0)); }

  void Start(const BatchOptions& options, MetricsRegistry& metrics) {
    batcher_ = std::make_unique<Batcher>(options, metrics, [this](SharedSpanBatch batch) {
      // Fan-out: one shared batch, a non-blocking enqueue per destination.
      for (auto& d : destinations_) d->Enqueue(batch);
    });
  }

  bool Submit(Span span) noexcept override { return batcher_->Submit(std::move(span)); }

  void Shutdown(std::chrono::milliseconds deadline) override {
    std::lock_guard lock(shutdown_mu_);
    if (shut_down_) return;
    shut_down_ = true;
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
  std::vector<std::unique_ptr<DestinationQueue>> destinations_;
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
    auto sender = MakeSender(d);
    if (!sender.ok()) {
      return absl::Status(sender.status().code(), absl::StrCat("export: destination '", name,
                                                               "': ", sender.status().message()));
    }
    DestinationQueue::Options options;
    options.name = name;
    options.retry = d.retry;
    options.max_queued_batches = d.max_queued_batches;
    destinations.push_back(
        std::make_unique<DestinationQueue>(std::move(options), *std::move(sender), metrics));
  }

  auto pipeline = std::make_unique<ExportPipelineImpl>(std::move(destinations));
  pipeline->Start(config.batch, metrics);
  spdlog::info("export pipeline: {} destination(s), batch {} spans / {}ms, queue {} spans",
               names.size(), config.batch.max_export_batch_size,
               config.batch.schedule_delay.count(), config.batch.max_queue_size);
  return std::unique_ptr<ExportPipeline>(std::move(pipeline));
}

}  // namespace kspan
