#include "exporter/export_metrics.h"

#include <array>

#include "spdlog/spdlog.h"

namespace kspan {
namespace {

constexpr std::array kDestinationDropReasons = {
    drop_reason::kDestinationQueueFull, drop_reason::kPermanentError,
    drop_reason::kRetryExhausted,       drop_reason::kRejectedByBackend,
    drop_reason::kShutdown,           drop_reason::kDiskCorrupt,
};
constexpr std::array kDeadLetterReasons = {drop_reason::kPermanentError,
                                           drop_reason::kRetryExhausted};
constexpr std::array kBatcherDropReasons = {drop_reason::kQueueFull, drop_reason::kShutdown};
constexpr std::array kBatchOutcomes = {
    batch_outcome::kSuccess,
    batch_outcome::kPartialSuccess,
    batch_outcome::kRetryableError,
    batch_outcome::kPermanentError,
};

}  // namespace

std::uint64_t DestinationAccounting::dropped_total() const {
  std::uint64_t n = 0;
  for (const auto& [reason, count] : dropped) n += count;
  return n;
}

DestinationAccounting ReadAccounting(const MetricsRegistry& metrics,
                                     std::string_view destination) {
  DestinationAccounting a;
  a.submitted = metrics.CounterTotal(metric::kSpansSubmitted);
  a.batcher_dropped = metrics.CounterTotal(metric::kBatcherDropped);
  const std::string dest(destination);
  a.exported = metrics.CounterValue(metric::kSpansExported, {{"destination", dest}});
  for (auto reason : kDestinationDropReasons) {
    a.dropped[std::string(reason)] = metrics.CounterValue(
        metric::kSpansDropped, {{"destination", dest}, {"reason", std::string(reason)}});
  }
  for (auto reason : kDeadLetterReasons) {
    a.dead_lettered += metrics.CounterValue(
        metric::kDeadLettered, {{"destination", dest}, {"reason", std::string(reason)}});
  }
  a.kept_on_disk = metrics.CounterValue(metric::kKeptOnDisk, {{"destination", dest}});
  a.recovered = metrics.CounterValue(metric::kDiskRecoveredSpans, {{"destination", dest}});
  return a;
}

DropLog::DropLog(std::string destination, std::chrono::steady_clock::duration interval)
    : destination_(std::move(destination)), interval_(interval) {}

DropLog::~DropLog() { Flush(); }

void DropLog::Record(std::string_view reason, std::uint64_t spans, std::string_view detail) {
  if (spans == 0) return;
  std::lock_guard lock(mu_);
  auto it = pending_.find(reason);
  if (it == pending_.end()) it = pending_.emplace(std::string(reason), 0).first;
  it->second += spans;
  if (!detail.empty()) last_detail_ = std::string(detail);
  const auto now = std::chrono::steady_clock::now();
  // The first loss is reported at once; later ones are summed per interval.
  if (!logged_once_ || now - last_log_ >= interval_) LogLocked(now);
}

void DropLog::Flush() {
  std::lock_guard lock(mu_);
  LogLocked(std::chrono::steady_clock::now());
}

void DropLog::LogLocked(std::chrono::steady_clock::time_point now) {
  if (pending_.empty()) return;
  std::uint64_t total = 0;
  std::string reasons;
  for (const auto& [reason, count] : pending_) {
    total += count;
    if (!reasons.empty()) reasons += ", ";
    reasons += reason + "=" + std::to_string(count);
  }
  if (last_detail_.empty()) {
    spdlog::error("export to '{}': {} spans lost ({})", destination_, total, reasons);
  } else {
    spdlog::error("export to '{}': {} spans lost ({}); last error: {}", destination_, total,
                  reasons, last_detail_);
  }
  pending_.clear();
  last_detail_.clear();
  last_log_ = now;
  logged_once_ = true;
}

DestinationMetrics::DestinationMetrics(MetricsRegistry& registry, std::string destination)
    : destination_(std::move(destination)),
      exported_(registry.GetCounter(metric::kSpansExported,
                                    "Spans delivered to a destination.",
                                    {{"destination", destination_}})),
      retries_(registry.GetCounter(metric::kRetries,
                                   "Send attempts repeated after a retryable failure.",
                                   {{"destination", destination_}})),
      last_export_seconds_(registry.GetGauge(metric::kLastExportSeconds,
                                             "Duration of the latest send attempt.",
                                             {{"destination", destination_}})),
      kept_on_disk_(registry.GetCounter(
          metric::kKeptOnDisk, "Spans left in the disk queue at shutdown (sent after restart).",
          {{"destination", destination_}})),
      evicted_low_(registry.GetCounter(
          metric::kQueueEvicted,
          "Spans a full queue dropped, by priority (low = kernel spans without error).",
          {{"destination", destination_}, {"priority", "low"}})),
      evicted_high_(registry.GetCounter(
          metric::kQueueEvicted,
          "Spans a full queue dropped, by priority (low = kernel spans without error).",
          {{"destination", destination_}, {"priority", "high"}})) {
  for (auto reason : kDeadLetterReasons) {
    dead_lettered_[std::string(reason)] = &registry.GetCounter(
        metric::kDeadLettered, "Spans stored in the dead-letter store, by reason.",
        {{"destination", destination_}, {"reason", std::string(reason)}});
  }
  registry.GetCounter(metric::kDiskRecoveredSpans,
                      "Spans read back from the disk queue at start-up.",
                      {{"destination", destination_}});
  // Registered up front so every series is visible (at 0) from the start.
  for (auto reason : kDestinationDropReasons) {
    dropped_[std::string(reason)] = &registry.GetCounter(
        metric::kSpansDropped, "Spans lost at a destination, by reason.",
        {{"destination", destination_}, {"reason", std::string(reason)}});
  }
  for (auto outcome : kBatchOutcomes) {
    batches_[std::string(outcome)] = &registry.GetCounter(
        metric::kBatches, "Send attempts of a batch, by outcome.",
        {{"destination", destination_}, {"outcome", std::string(outcome)}});
  }
  // The batcher-stage families are registered here too so that a pipeline's
  // /metrics lists them before the first drop.
  for (auto reason : kBatcherDropReasons) {
    registry.GetCounter(metric::kBatcherDropped,
                        "Spans lost in the shared batcher before fan-out, by reason.",
                        {{"reason", std::string(reason)}});
  }
}

void DestinationMetrics::Dropped(std::string_view reason, std::uint64_t spans) noexcept {
  if (auto it = dropped_.find(reason); it != dropped_.end()) it->second->Add(spans);
}

void DestinationMetrics::DeadLettered(std::string_view reason, std::uint64_t spans) noexcept {
  if (auto it = dead_lettered_.find(reason); it != dead_lettered_.end()) it->second->Add(spans);
}

void DestinationMetrics::BatchAttempt(std::string_view outcome) noexcept {
  if (auto it = batches_.find(outcome); it != batches_.end()) it->second->Add();
}

void DestinationMetrics::ExportDuration(std::chrono::steady_clock::duration d) noexcept {
  last_export_seconds_.Set(std::chrono::duration<double>(d).count());
}

}  // namespace kspan
