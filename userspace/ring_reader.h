// Drains BPF ring buffers and per-CPU record rings (userspace/percpu_ring.h)
// on one thread and hands each record, as bytes, to the consumer registered
// for that ring. The reader knows nothing of record
// layouts; consumers (userspace/event_decoder) know nothing of rings, so they
// are unit-tested with synthetic records.
//
// Ring order. Each poll drains every ring buffer in the order it was
// registered, then the per-CPU rings, each only up to the position its
// producer had reached when the drain began; those positions are read in
// the reverse order, last ring first. So a record is never delivered before
// a record that an earlier-registered ring received before it: it was
// written before its own ring's position was read, and the earlier ring's
// position was read after that. A record found past its ring's position is
// held back and delivered first in that ring's turn at the next poll. The
// agent registers the process family's ring (kspan_proc_ring) first, so a
// process's exec or exit record comes before anything the process did after
// it on the other rings.
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

  // Register before Start(), in the order rings are to be drained (see Ring
  // order above). The sink must outlive the reader.
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
  // (PerCpuRing::ArmDoorbells) or held a record back (not at all), then
  // drains every ring in ring order and sets the per-CPU rings' doorbells.
  // Returns the records delivered (doorbells not included) or a negative
  // errno.
  int PollOnce(std::chrono::milliseconds timeout);

  // Records delivered to sinks, from ring buffers and per-CPU rings.
  std::uint64_t records_read() const { return records_read_.load(std::memory_order_relaxed); }
  // Doorbell records consumed (and ignored).
  std::uint64_t doorbells() const { return doorbells_.load(std::memory_order_relaxed); }

 private:
  // One BPF ring buffer: records for a sink, or a per-CPU ring's doorbell.
  struct Ring {
    Ring() = default;
    Ring(const Ring&) = delete;
    Ring& operator=(const Ring&) = delete;
    ~Ring();
    std::string name;
    EventSink* sink = nullptr;  // null: a doorbell, whose records only wake the poll
    RingReader* reader = nullptr;
    // A libbpf consumer of this ring alone: libbpf stops a consumer at a
    // callback's error, and only a consumer of one ring can be stopped
    // without stopping the rings after it.
    ring_buffer* rb = nullptr;
    // Read-only mappings of the ring's consumer and producer positions
    // (pages 0 and 1 of the map, as libbpf maps them).
    void* consumer_page = nullptr;
    void* producer_page = nullptr;
    std::size_t page_size = 0;
    std::uint64_t bound = 0;  // this drain: records that start before it
    std::vector<std::byte> held;  // a record found past `bound`, delivered next
    bool holding = false;
  };
  struct PerCpu {
    std::unique_ptr<PerCpuRing> ring;
    EventSink* sink;
    std::vector<std::uint64_t> heads;  // this drain's bound per CPU
  };
  // libbpf's callback (C frames: nothing may unwind through it).
  static int OnRecord(void* ctx, void* data, std::size_t size) noexcept;
  // Registers a ring buffer map (sink null: a doorbell).
  absl::Status AddRingBuffer(int ring_fd, std::string name, EventSink* sink);
  // Every ring buffer in registration order, then the per-CPU rings, each
  // up to its bound (Ring order in the comment at the top). Returns the
  // records delivered or a negative errno.
  std::int64_t DrainRound() noexcept;
  // The record `r` held back in the last round, if any.
  void DeliverHeld(Ring& r) noexcept;
  std::size_t DrainPerCpu(bool bounded) noexcept;
  // Sets the per-CPU rings' doorbells; the wait of the next poll.
  std::chrono::nanoseconds ArmPerCpu(std::chrono::nanoseconds period) noexcept;

  int epoll_fd_ = -1;  // every ring buffer's map fd, to wait on
  std::vector<std::unique_ptr<Ring>> rings_;
  std::size_t held_ = 0;  // rings holding a record back
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
