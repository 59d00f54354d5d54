// One destination's side of the fan-out: a bounded queue of batches (memory,
// optionally backed by a crash-safe disk queue) and N sender threads that
// deliver them, retrying per the OTLP specification behind a circuit
// breaker, with a dead-letter store for what can never be delivered.
// A slow or unreachable destination only fills its own queue (then drops,
// counted, low-value kernel spans first); it never blocks the batcher, other
// destinations or capture.
//
// Accounting, per destination, at any time:
//   accepted + recovered = exported + dropped(reason) + dead_lettered
//                          + kept_on_disk + queued (incl. in flight)
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "exporter/dead_letter_store.h"
#include "exporter/disk_queue.h"
#include "exporter/export_config.h"
#include "exporter/export_metrics.h"
#include "exporter/retry.h"
#include "exporter/self_metrics.h"
#include "exporter/sender.h"

namespace kspan {

class DestinationQueue {
 public:
  using Clock = std::chrono::steady_clock;

  struct Options {
    std::string name;
    RetryOptions retry;
    // Memory bounds (0 = that bound is off, except batches).
    std::size_t max_queued_batches = 64;
    std::size_t max_queued_spans = 0;
    std::size_t max_queued_bytes = 0;
    DiskQueueOptions disk;           // used when enabled
    DeadLetterOptions dead_letter{.enabled = false};  // used when enabled with a path
    CircuitBreakerOptions circuit_breaker{.enabled = false};
    // How often lost spans are logged (summed), at most.
    std::chrono::milliseconds drop_log_interval{10000};
    // After the disk refused a write: how long until it is tried again.
    std::chrono::milliseconds disk_retry_interval{5000};
    // Persist(): longest wait for the commit before the caller is told to
    // retry (the batch may still be committed: a possible duplicate).
    std::chrono::milliseconds persist_timeout{5000};
    // With a disk queue, consecutive rows are sent as one export of at most
    // this many spans (the batcher's max_export_batch_size) and this many
    // bytes as stored (close to the OTLP size; below the 4 MiB a gRPC server
    // takes by default). A row
    // larger than either goes out alone, as the batcher made it.
    std::size_t coalesce_max_spans = 512;
    std::size_t coalesce_max_bytes = 3u << 20;
  };

  enum class CircuitState { kClosed = 0, kOpen = 1, kHalfOpen = 2 };

  DestinationQueue(Options options, std::unique_ptr<SpanSender> sender, MetricsRegistry& metrics);
  // One sender per request in flight (each with its own connection).
  DestinationQueue(Options options, std::vector<std::unique_ptr<SpanSender>> senders,
                   MetricsRegistry& metrics);
  ~DestinationQueue();  // Join() if not done yet

  DestinationQueue(const DestinationQueue&) = delete;
  DestinationQueue& operator=(const DestinationQueue&) = delete;

  // Never blocks (the disk write happens on a writer thread). When the
  // memory bounds are reached, low-priority spans are dropped first (counted);
  // false when any span of this batch was dropped.
  bool Enqueue(SharedSpanBatch batch) noexcept;

  // Disk mode only: returns once `batch` is committed to the disk queue (in
  // the writer's next transaction, shared with whatever else is waiting:
  // concurrent callers share one commit and one fsync). Not OK: the batch is
  // not in this queue (ResourceExhausted: disk queue or memory bound full;
  // Unavailable: I/O error, shutting down, or no commit within
  // persist_timeout), and nothing is counted as dropped: the caller refuses
  // the spans (its client sends them again). Blocks the caller.
  absl::Status Persist(SharedSpanBatch batch);

  // Counts spans this destination lost before they reached it (the
  // pipeline, when the batcher could not take spans meant for it).
  void CountDropped(std::string_view reason, std::uint64_t spans);

  // Stops accepting batches; the senders keep delivering what is queued
  // until `deadline`. Non-blocking, so all destinations drain in parallel.
  void BeginShutdown(Clock::time_point deadline);
  // Waits for the queue to drain, at most until the deadline given to
  // BeginShutdown; then cancels sends in flight. What is not delivered stays
  // in the disk queue (counted as kept_on_disk) or, memory only, is counted
  // as dropped (reason "shutdown"). Idempotent.
  void Join();

  const std::string& name() const { return options_.name; }
  std::size_t queued_batches() const;
  std::size_t queued_spans() const;
  std::size_t queued_bytes() const;  // in memory
  bool disk_enabled() const { return disk_ != nullptr; }
  CircuitState circuit_state() const;
  // Waits until every batch accepted so far is persisted (disk mode), for
  // tests and benchmarks; true at once without a disk queue.
  bool WaitPersisted(std::chrono::milliseconds timeout) const;

 private:
  // A Persist() caller's wait for the writer.
  struct PersistTicket {
    bool done = false;
    absl::Status status;
  };
  struct Entry {
    SharedSpanBatch batch;  // null: only on disk (read back when sent)
    std::shared_ptr<PersistTicket> ticket;  // a Persist() caller waits for it
    std::size_t spans = 0;
    std::size_t bytes = 0;       // approximate in-memory size
    std::int64_t disk_id = 0;    // 0: memory only
    std::size_t disk_bytes = 0;  // serialized size on disk
    std::int64_t attempts_before = 0;
  };
  enum class Fate { kDone, kKeep };

  void Start();
  void Recover();
  void RunWorker(std::size_t index);
  void RunWriter();
  Fate Deliver(std::size_t index, Entry& entry);
  Fate ShutdownFate(const Entry& entry);
  void GiveUp(const Entry& entry, std::string_view reason, const ExportResult& result);
  bool AwaitBreaker(std::size_t index);
  void RecordAttempt(const ExportResult& result);
  // Counts (and logs, rate-limited) an answer that could not be read.
  void NoteResponse(const ExportResult& result);
  void SetCircuitLocked(CircuitState s);

  bool HardStoppedLocked(Clock::time_point now) const;
  bool FitsLocked(std::size_t spans, std::size_t bytes) const;
  bool MemoryFullLocked() const;
  // Drops the memory copies of persisted batches (newest first) until `e`
  // fits; true when it does.
  bool FreeCachedLocked(const Entry& e);
  // Makes room for `e` by priority; false when `e` itself was dropped.
  bool MakeRoomLocked(Entry& e);
  void AddLocked(std::deque<Entry>& q, Entry e);
  void ReleaseMemoryLocked(Entry& e);
  void Drop(std::string_view reason, std::uint64_t spans, std::string_view detail = {});

  const Options options_;
  std::vector<std::unique_ptr<SpanSender>> senders_;
  MetricsRegistry& registry_;
  DestinationMetrics metrics_;
  DropLog drop_log_;
  DropLog rejected_log_;  // partial-success messages, rate-limited apart
  std::vector<Backoff> backoffs_;  // one per worker
  std::unique_ptr<DiskQueue> disk_;
  std::unique_ptr<DeadLetterStore> dlq_;

  Counter& persisted_spans_;
  Counter& disk_rejected_full_;
  Counter& disk_rejected_error_;
  Counter& persist_refused_full_;
  Counter& persist_refused_error_;
  Counter& recovered_batches_;
  Counter& recovered_spans_;
  Counter& resent_batches_;
  Counter& dlq_evicted_;
  Counter& probes_;
  Counter& bad_response_too_large_;
  Counter& bad_response_unreadable_;

  mutable std::mutex mu_;
  std::condition_variable cv_;        // work arrived, stop requested, breaker changed
  mutable std::condition_variable done_cv_;   // a worker finished; a write committed
  std::deque<Entry> staging_;  // disk mode: waiting for the writer
  std::deque<Entry> ready_;    // waiting for a sender
  std::size_t writing_ = 0;    // entries the writer holds
  std::size_t mem_batches_ = 0, mem_spans_ = 0, mem_bytes_ = 0;  // staging_ + ready_ in memory
  std::size_t queued_spans_ = 0;    // everything not yet decided, in flight included
  std::size_t queued_batches_ = 0;  // likewise
  std::size_t in_flight_ = 0;
  bool stopping_ = false;
  bool hard_stop_ = false;
  bool writer_stop_ = false;
  std::size_t workers_running_ = 0;
  Clock::time_point deadline_ = Clock::time_point::max();
  bool disk_writable_ = true;
  Clock::time_point disk_retry_at_{};
  // Circuit breaker.
  CircuitState circuit_ = CircuitState::kClosed;
  int consecutive_failures_ = 0;
  Clock::time_point open_until_{};
  bool probe_in_flight_ = false;
  bool failing_ = false;
  Clock::time_point last_dead_letter_log_{};
  Clock::time_point last_bad_response_log_{};
  bool bad_response_logged_ = false;

  std::mutex join_mu_;
  bool joined_ = false;
  std::thread writer_;
  std::vector<std::thread> workers_;
};

}  // namespace kspan
