// One destination's side of the fan-out: a bounded queue of batches and the
// sender thread that delivers them, retrying per the OTLP specification.
// A slow or unreachable destination only fills its own queue (then drops,
// counted); it never blocks the batcher, other destinations or capture.
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
    std::size_t max_queued_batches = 64;
    // How often lost spans are logged (summed), at most.
    std::chrono::milliseconds drop_log_interval{10000};
  };

  DestinationQueue(Options options, std::unique_ptr<SpanSender> sender, MetricsRegistry& metrics);
  ~DestinationQueue();  // BeginShutdown(now) + Join(now) if not done yet

  DestinationQueue(const DestinationQueue&) = delete;
  DestinationQueue& operator=(const DestinationQueue&) = delete;

  // Never blocks. When the queue is full (or shut down) the batch's spans
  // are counted as dropped and false is returned.
  bool Enqueue(SharedSpanBatch batch) noexcept;

  // Stops accepting batches; the sender keeps delivering what is queued
  // until `deadline`. Non-blocking, so all destinations drain in parallel.
  void BeginShutdown(Clock::time_point deadline);
  // Waits for the queue to drain, at most until the deadline given to
  // BeginShutdown; then cancels the send in flight and counts every span not
  // delivered as dropped (reason "shutdown"). Idempotent.
  void Join();

  const std::string& name() const { return options_.name; }
  std::size_t queued_batches() const;
  std::size_t queued_spans() const;

 private:
  void Run();
  void Deliver(const SpanBatch& batch);
  bool HardStoppedLocked(Clock::time_point now) const;
  void Drop(std::string_view reason, std::uint64_t spans, std::string_view detail = {});

  const Options options_;
  std::unique_ptr<SpanSender> sender_;
  MetricsRegistry& registry_;
  DestinationMetrics metrics_;
  DropLog drop_log_;
  DropLog rejected_log_;  // partial-success messages, rate-limited apart
  Backoff backoff_;        // worker thread only
  bool failing_ = false;   // worker thread only

  mutable std::mutex mu_;
  std::condition_variable cv_;       // work arrived, stop requested
  std::condition_variable done_cv_;  // worker finished
  std::deque<SharedSpanBatch> queue_;
  std::size_t queued_spans_ = 0;
  bool stopping_ = false;
  bool hard_stop_ = false;
  bool finished_ = false;
  Clock::time_point deadline_ = Clock::time_point::max();

  std::mutex join_mu_;
  std::thread worker_;
};

}  // namespace kspan
