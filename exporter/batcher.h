// The shared batcher: capture threads Submit() spans into one bounded queue;
// one worker cuts batches (by size or age) and hands each, shared and
// immutable, to a sink that fans it out to every destination's queue.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "exporter/export_config.h"
#include "exporter/self_metrics.h"
#include "exporter/sender.h"
#include "exporter/span.h"

namespace kspan {

enum class SubmitResult { kAccepted, kQueueFull, kShutdown };

class Batcher {
 public:
  // Called on the worker thread; must not block (destination queues drop
  // rather than wait).
  using Sink = std::function<void(SharedSpanBatch)>;

  Batcher(const BatchOptions& options, MetricsRegistry& metrics, Sink sink);
  ~Batcher();  // Shutdown()

  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Never blocks on export. False (and counted) when the queue is full or the
  // batcher is shut down.
  bool Submit(Span span) noexcept;

  // All or nothing, never blocks: either every span of `spans` is queued
  // (kAccepted, `spans` is emptied) or none is and `spans` is left as it was
  // (kQueueFull when the queue lacks room for all of them, kShutdown). A
  // refused batch is counted as submitted and dropped, like refused spans.
  SubmitResult SubmitBatch(std::vector<Span>&& spans) noexcept;

  // Stops accepting, hands every queued span to the sink, joins the worker.
  // Idempotent.
  void Shutdown();

  std::size_t queued_spans() const;

 private:
  void Run();

  const BatchOptions options_;
  MetricsRegistry& metrics_;
  Sink sink_;
  Counter& submitted_;
  Counter& dropped_queue_full_;
  Counter& dropped_shutdown_;
  Counter& batches_;

  std::mutex shutdown_mu_;  // serializes Shutdown() callers
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Span> queue_;
  // When the oldest span now in the queue arrived (approximately, after a
  // partial cut): the batch is due schedule_delay after it.
  std::chrono::steady_clock::time_point oldest_{};
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace kspan
