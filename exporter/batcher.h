// The shared batcher: capture threads Submit() spans into one bounded queue;
// one worker cuts batches (by size or age) and hands each, shared and
// immutable, to a sink that fans it out to every destination's queue.
//
// Bounded by spans (max_queue_size) and by bytes (max_queue_bytes): a span's
// own ApproximateBytes(), plus each distinct resource and scope object once
// while any queued span refers to it (reference-counted by address), so a
// process's resource shared by a thousand kernel spans costs once, and an
// app's 3 MiB resource attribute costs 3 MiB.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "exporter/export_config.h"
#include "exporter/self_metrics.h"
#include "exporter/sender.h"
#include "exporter/span.h"

namespace kspan {

enum class SubmitResult { kAccepted, kQueueFull, kShutdown };

// Where the spans of a submission go when their batch is cut.
enum class BatchRoute : std::uint8_t {
  kEveryDestination,
  // Only destinations without a disk queue: the spans are already in every
  // disk queue (app spans persisted before the receiver answered).
  kMemoryDestinations,
};

class Batcher {
 public:
  // Called on the worker thread; must not block (destination queues drop
  // rather than wait).
  using Sink = std::function<void(SharedSpanBatch)>;

  // `memory_sink` gets the spans submitted with BatchRoute::kMemoryDestinations
  // (in batches of their own); without one, such submissions are refused.
  Batcher(const BatchOptions& options, MetricsRegistry& metrics, Sink sink,
          Sink memory_sink = nullptr);
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
  // With BatchRoute::kMemoryDestinations nothing is counted here: the
  // pipeline counted the spans when it persisted them and counts a refusal
  // as the memory destinations' drop.
  SubmitResult SubmitBatch(std::vector<Span>&& spans,
                           BatchRoute route = BatchRoute::kEveryDestination) noexcept;

  // Stops accepting, hands every queued span to the sink, joins the worker.
  // Idempotent.
  void Shutdown();

  std::size_t queued_spans() const;
  std::size_t queued_bytes() const;

 private:
  struct Queued {
    Span span;
    std::size_t bytes;  // span.ApproximateBytes()
    BatchRoute route = BatchRoute::kEveryDestination;
  };
  // A resource or scope object some queued spans share.
  struct Shared {
    std::size_t refs = 0;
    std::size_t bytes = 0;
  };
  // The distinct resource and scope objects of some spans: how many of the
  // spans refer to each, and its ApproximateBytes.
  struct SharedRef {
    const void* object;
    std::size_t refs;
    std::size_t bytes;
  };
  using SharedUse = std::vector<SharedRef>;
  static SharedUse CountShared(std::span<const Span> spans);
  // Bytes `use` adds to the queue (objects not referred to yet).
  std::size_t NewSharedBytesLocked(const SharedUse& use) const;
  void AddSharedLocked(const SharedUse& use);
  void ReleaseSharedLocked(const Span& span);
  bool FitsLocked(std::size_t spans, std::size_t bytes) const;

  void Run();

  const BatchOptions options_;
  MetricsRegistry& metrics_;
  Sink sink_;
  Sink memory_sink_;
  Counter& submitted_;
  Counter& dropped_queue_full_;
  Counter& dropped_shutdown_;
  Counter& batches_;

  std::mutex shutdown_mu_;  // serializes Shutdown() callers
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Queued> queue_;
  std::size_t queue_bytes_ = 0;  // spans' own bytes + shared_ objects' bytes
  absl::flat_hash_map<const void*, Shared> shared_;
  // When the oldest span now in the queue arrived (approximately, after a
  // partial cut): the batch is due schedule_delay after it.
  std::chrono::steady_clock::time_point oldest_{};
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace kspan
