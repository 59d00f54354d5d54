// Drains BPF ring buffers and per-CPU record rings (userspace/percpu_ring.h)
// on one thread and hands each record, as bytes, to the consumer registered
// for that ring. The reader knows nothing of record
// layouts; consumers (userspace/event_decoder) know nothing of rings, so they
// are unit-tested with synthetic records.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct ring_buffer;

namespace kspan {

class EventSink {
 public:
  virtual ~EventSink() = default;
  // Called on the reader thread for every record, in ring order.
  virtual void OnEvent(std::span<const std::byte> record) noexcept = 0;
};

// Bytes waiting in a BPF ring buffer, read from its position pages.
struct RingUsage {
  std::uint64_t size_bytes = 0;
  std::uint64_t used_bytes = 0;
};
absl::StatusOr<RingUsage> QueryRing(int ring_map_fd);

struct PerCpuRingSpec;
class PerCpuRing;

class RingReader {
 public:
  RingReader();
  ~RingReader();
  RingReader(const RingReader&) = delete;
  RingReader& operator=(const RingReader&) = delete;

  // Register before Start(). The sink must outlive the reader.
  absl::Status Add(int ring_fd, std::string name, EventSink* sink);

  // Registers a per-CPU record ring (userspace/percpu_ring.h), drained into
  // `sink` at every poll. `bell_ring_fd` is the BPF ring buffer its producer
  // rings (records ignored, they only wake the poll), or -1: the ring is then
  // drained every poll timeout. Several rings may share one bell.
  absl::Status AddPerCpu(PerCpuRingSpec spec, int bell_ring_fd, EventSink* sink);

  // The per-CPU ring registered under `name` (for its Usage()), or null.
  const PerCpuRing* per_cpu_ring(std::string_view name) const;

  // Polls on a thread of its own. `poll_timeout` bounds how long records wait
  // when the BPF side batches wakeups.
  absl::Status Start(std::chrono::milliseconds poll_timeout);

  // Stops the thread after draining what is in the rings.
  void Stop();

  // Poll once on the calling thread (for tests and benchmarks): waits up to
  // `timeout` for a wakeup or a doorbell (per-CPU rings without a bell: the
  // timeout, unless records are already waiting), or less when the last
  // poll found a per-CPU ring busy enough to be drained on a timer
  // (PerCpuRing::ArmDoorbells), then drains every ring and sets the
  // per-CPU rings' doorbells. Returns the records delivered (doorbells not
  // included) or a negative errno.
  int PollOnce(std::chrono::milliseconds timeout);

  // Records delivered to sinks, from ring buffers and per-CPU rings.
  std::uint64_t records_read() const { return records_read_.load(std::memory_order_relaxed); }
  // Doorbell records consumed (and ignored).
  std::uint64_t doorbells() const { return doorbells_.load(std::memory_order_relaxed); }

 private:
  struct Ring {
    std::string name;
    EventSink* sink;
    RingReader* reader;
  };
  struct PerCpu {
    std::unique_ptr<PerCpuRing> ring;
    EventSink* sink;
  };
  static int OnRecord(void* ctx, void* data, std::size_t size);
  static int OnDoorbell(void* ctx, void* data, std::size_t size);
  // Adds a ring buffer map to rb_ (creating rb_ for the first one).
  absl::Status AddRingBuffer(int ring_fd, const std::string& name, int (*fn)(void*, void*, std::size_t),
                             void* ctx);
  std::size_t DrainPerCpu() noexcept;
  // Sets the per-CPU rings' doorbells; the wait of the next poll.
  std::chrono::nanoseconds ArmPerCpu(std::chrono::nanoseconds period) noexcept;

  ring_buffer* rb_ = nullptr;
  std::vector<std::unique_ptr<Ring>> rings_;
  std::vector<PerCpu> per_cpu_;
  std::vector<std::uint32_t> bell_map_ids_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> records_read_{0};
  std::atomic<std::uint64_t> doorbells_{0};
  // How long the next poll may wait at most (per-CPU rings polled on a timer).
  std::chrono::nanoseconds pace_ = std::chrono::nanoseconds::max();
};

}  // namespace kspan
