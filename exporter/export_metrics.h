// The exporter's self-metrics (names, labels, the accounting invariant) and
// the rate-limited logging of lost spans.
//
// Invariant, per destination D, once the pipeline is shut down:
//   spans_submitted_total
//     = batcher_dropped_spans_total{reason=*}            (lost before fan-out)
//     + spans_exported_total{destination=D}
//     + spans_dropped_total{destination=D, reason=*}
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "exporter/self_metrics.h"

namespace kspan {

namespace metric {
inline constexpr std::string_view kSpansSubmitted = "kspan_exporter_spans_submitted_total";
inline constexpr std::string_view kBatcherDropped = "kspan_exporter_batcher_dropped_spans_total";
inline constexpr std::string_view kBatcherQueueSpans = "kspan_exporter_batcher_queue_spans";
inline constexpr std::string_view kBatcherQueueBytes = "kspan_exporter_batcher_queue_bytes";
inline constexpr std::string_view kBatcherBatches = "kspan_exporter_batcher_batches_total";
inline constexpr std::string_view kSpansExported = "kspan_exporter_spans_exported_total";
inline constexpr std::string_view kSpansDropped = "kspan_exporter_spans_dropped_total";
inline constexpr std::string_view kBatches = "kspan_exporter_batches_total";
inline constexpr std::string_view kRetries = "kspan_exporter_retries_total";
inline constexpr std::string_view kQueueBatches = "kspan_exporter_destination_queue_batches";
inline constexpr std::string_view kQueueSpans = "kspan_exporter_destination_queue_spans";
inline constexpr std::string_view kLastExportSeconds = "kspan_exporter_last_export_duration_seconds";
inline constexpr std::string_view kQueueBytes = "kspan_exporter_destination_queue_bytes";
inline constexpr std::string_view kQueueEvicted = "kspan_exporter_queue_priority_drops_total";
inline constexpr std::string_view kDeadLettered = "kspan_exporter_spans_dead_lettered_total";
inline constexpr std::string_view kKeptOnDisk = "kspan_exporter_spans_kept_on_disk_total";
inline constexpr std::string_view kDiskRecoveredSpans = "kspan_exporter_disk_queue_recovered_spans_total";
inline constexpr std::string_view kDiskRecoveredBatches = "kspan_exporter_disk_queue_recovered_batches_total";
inline constexpr std::string_view kDiskResentBatches = "kspan_exporter_disk_queue_resent_batches_total";
inline constexpr std::string_view kDiskPersistedSpans = "kspan_exporter_disk_queue_persisted_spans_total";
inline constexpr std::string_view kDiskPersistRefused = "kspan_exporter_disk_queue_persist_refused_spans_total";
inline constexpr std::string_view kDiskRejected = "kspan_exporter_disk_queue_rejected_batches_total";
inline constexpr std::string_view kDiskBytes = "kspan_exporter_disk_queue_bytes";
inline constexpr std::string_view kDiskBatches = "kspan_exporter_disk_queue_batches";
inline constexpr std::string_view kDiskWritable = "kspan_exporter_disk_queue_writable";
inline constexpr std::string_view kDlqBytes = "kspan_exporter_dlq_bytes";
inline constexpr std::string_view kDlqEvicted = "kspan_exporter_dlq_evicted_batches_total";
inline constexpr std::string_view kCircuitState = "kspan_exporter_circuit_state";
inline constexpr std::string_view kCircuitTransitions = "kspan_exporter_circuit_transitions_total";
inline constexpr std::string_view kCircuitProbes = "kspan_exporter_circuit_probes_total";
inline constexpr std::string_view kInFlight = "kspan_exporter_requests_in_flight";
// Answers that arrived but could not be read (reason too_large | unreadable).
inline constexpr std::string_view kBadResponses = "kspan_exporter_bad_responses_total";
}  // namespace metric

// Values of the `reason` label.
namespace drop_reason {
inline constexpr std::string_view kQueueFull = "queue_full";  // batcher (before fan-out)
inline constexpr std::string_view kDestinationQueueFull = "destination_queue_full";
inline constexpr std::string_view kPermanentError = "permanent_error";
inline constexpr std::string_view kRetryExhausted = "retry_exhausted";
inline constexpr std::string_view kRejectedByBackend = "rejected_by_backend";
inline constexpr std::string_view kShutdown = "shutdown";  // batcher and destinations
// Batcher: an app-span request a disk queue could not commit (refused to its
// client as retryable, like queue_full).
inline constexpr std::string_view kNotPersisted = "not_persisted";
// A persisted batch that could not be read back (corrupt disk queue row).
inline constexpr std::string_view kDiskCorrupt = "disk_corrupt";
}  // namespace drop_reason

// Values of the `outcome` label of kspan_exporter_batches_total (one per
// send attempt).
namespace batch_outcome {
inline constexpr std::string_view kSuccess = "success";
inline constexpr std::string_view kPartialSuccess = "partial_success";
inline constexpr std::string_view kRetryableError = "retryable_error";
inline constexpr std::string_view kPermanentError = "permanent_error";
}  // namespace batch_outcome

// Totals of one destination, read back from the registry (tests, `status`).
struct DestinationAccounting {
  std::uint64_t submitted = 0;       // whole pipeline
  std::uint64_t batcher_dropped = 0;  // whole pipeline, before fan-out
  std::uint64_t exported = 0;
  std::map<std::string, std::uint64_t, std::less<>> dropped;  // by reason
  std::uint64_t dead_lettered = 0;  // kept in the dead-letter store
  std::uint64_t kept_on_disk = 0;   // left in the disk queue at shutdown
  std::uint64_t recovered = 0;      // read back from the disk queue at start
  std::uint64_t dropped_total() const;
  // submitted + recovered
  //   == batcher_dropped + exported + dropped_total() + dead_lettered + kept_on_disk
  bool Balanced() const {
    return submitted + recovered ==
           batcher_dropped + exported + dropped_total() + dead_lettered + kept_on_disk;
  }
};
DestinationAccounting ReadAccounting(const MetricsRegistry& metrics, std::string_view destination);

// Logs lost spans at most once per interval per destination, with counts by
// reason, never per span. Thread-safe.
class DropLog {
 public:
  explicit DropLog(std::string destination,
                   std::chrono::steady_clock::duration interval = std::chrono::seconds(10));
  ~DropLog();  // flushes what was not logged yet

  // `detail` is the latest error message (no payloads).
  void Record(std::string_view reason, std::uint64_t spans, std::string_view detail = {});
  void Flush();

 private:
  void LogLocked(std::chrono::steady_clock::time_point now);

  std::mutex mu_;
  std::string destination_;
  std::chrono::steady_clock::duration interval_;
  std::chrono::steady_clock::time_point last_log_{};
  bool logged_once_ = false;
  std::map<std::string, std::uint64_t, std::less<>> pending_;
  std::string last_detail_;
};

// Counters of one destination, looked up once.
class DestinationMetrics {
 public:
  DestinationMetrics(MetricsRegistry& registry, std::string destination);

  const std::string& destination() const { return destination_; }
  void Exported(std::uint64_t spans) noexcept { exported_.Add(spans); }
  void Dropped(std::string_view reason, std::uint64_t spans) noexcept;
  void BatchAttempt(std::string_view outcome) noexcept;
  void Retry() noexcept { retries_.Add(); }
  void DeadLettered(std::string_view reason, std::uint64_t spans) noexcept;
  void KeptOnDisk(std::uint64_t spans) noexcept { kept_on_disk_.Add(spans); }
  void PriorityDrop(bool high_priority, std::uint64_t spans) noexcept {
    (high_priority ? evicted_high_ : evicted_low_).Add(spans);
  }
  void ExportDuration(std::chrono::steady_clock::duration d) noexcept;

 private:
  std::string destination_;
  Counter& exported_;
  Counter& retries_;
  Gauge& last_export_seconds_;
  Counter& kept_on_disk_;
  Counter& evicted_low_;
  Counter& evicted_high_;
  std::map<std::string, Counter*, std::less<>> dead_lettered_;  // fixed after construction
  std::map<std::string, Counter*, std::less<>> dropped_;   // fixed after construction
  std::map<std::string, Counter*, std::less<>> batches_;   // fixed after construction
};

}  // namespace kspan
