// The consumer side of kspan's per-CPU record rings (layout and protocol in
// bpf/kspan_common.h, struct kspan_percpu_pos): fixed-size records in one
// mmapable BPF array, and each CPU's head/tail in a second one. Records are
// handed to an EventSink straight from the shared mapping, in the order each
// CPU wrote them.
//
// Hand-written because libbpf has a consumer for BPF ring buffers and perf
// buffers but none for this layout; it is an mmap of two arrays and two
// atomics per CPU.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bpf/kspan_common.h"
#include "userspace/ring_reader.h"

namespace kspan {

// What the loader knows about one family's rings. The fds stay owned by the
// loader; the mappings keep the maps alive for as long as the ring is open.
struct PerCpuRingSpec {
  std::string name;             // for logs and errors, e.g. "kspan_sys_rec"
  int records_fd = -1;          // ARRAY, BPF_F_MMAPABLE, cpus * slots_per_cpu slots
  int positions_fd = -1;        // ARRAY, BPF_F_MMAPABLE, cpus struct kspan_percpu_pos
  std::uint32_t cpus = 0;
  std::uint32_t slots_per_cpu = 0;  // a power of two
  std::uint32_t slot_bytes = 0;     // the records map's value_size, a multiple of 8
  // Records between doorbells the producer repeats past bell_at (its
  // bell_mask + 1); 0: the producer rings no doorbell, bell_at is not set.
  std::uint32_t bell_every = 0;
};

class PerCpuRing {
 public:
  // Checks `spec` against the kernel's description of both maps
  // (InvalidArgument naming the map and the mismatch) and maps them
  // (Internal on a failed syscall, with errno).
  static absl::StatusOr<std::unique_ptr<PerCpuRing>> Open(const PerCpuRingSpec& spec);

  ~PerCpuRing();
  PerCpuRing(const PerCpuRing&) = delete;
  PerCpuRing& operator=(const PerCpuRing&) = delete;

  // Hands every record waiting on each CPU (at most `max_per_cpu` per CPU) to
  // `sink`, oldest first, then frees their slots for the producer. One
  // thread at a time. Returns the records delivered.
  // With `upto` (one entry per CPU, from Heads()), only records written
  // before those heads are delivered: RingReader drains its rings up to
  // positions read before the drain (userspace/ring_reader.h, ring order).
  std::size_t Drain(EventSink* sink,
                    std::size_t max_per_cpu = std::numeric_limits<std::size_t>::max(),
                    const std::vector<std::uint64_t>* upto = nullptr) noexcept;

  // Each CPU's head now (records written), for Drain()'s `upto`.
  void Heads(std::vector<std::uint64_t>& out) const;

  // Sets each CPU's doorbell (bell_at) after a drain and returns how soon
  // the consumer should drain again, at most `period` (its poll timeout);
  // zero when a producer has already passed its new bell_at. A CPU whose
  // records arrived fast enough since the last call to ring more than once
  // per `period` is polled on a timer instead (drain again when a quarter
  // of its ring would be in use, at least 1 ms apart) and rings only at
  // half a ring; any other CPU rings bell_every records past its tail.
  // A doorbell forces a wakeup, which costs the producing CPU an IPI.
  // Rings without doorbells (bell_every 0) return `period`.
  std::chrono::nanoseconds ArmDoorbells(std::chrono::steady_clock::time_point now,
                                        std::chrono::nanoseconds period) noexcept;

  // Bytes of all slots and bytes of records waiting, summed over CPUs. Safe
  // from any thread while another drains.
  RingUsage Usage() const noexcept;
  // The fullest CPU's share of its slots in use, 0..1: a ring can drop
  // records on a busy CPU while the sum over CPUs looks low.
  double MaxCpuUsedFraction() const noexcept;

  const std::string& name() const { return name_; }
  std::uint32_t cpus() const { return cpus_; }
  std::uint32_t slots_per_cpu() const { return slots_; }
  std::uint32_t slot_bytes() const { return slot_bytes_; }
  // Drains that found a CPU's head more than a ring ahead of its tail (a
  // corrupted position): nothing is delivered from that CPU.
  std::uint64_t corrupt_positions() const { return corrupt_.load(std::memory_order_relaxed); }

 private:
  PerCpuRing() = default;
  kspan_percpu_pos* Position(std::uint32_t cpu) const noexcept { return positions_ + cpu; }
  // Records waiting on `cpu`, clamped to the ring's size.
  std::uint64_t Waiting(std::uint32_t cpu) const noexcept;

  std::string name_;
  std::uint32_t cpus_ = 0;
  std::uint32_t slots_ = 0;
  std::uint32_t slot_bytes_ = 0;
  std::uint32_t bell_every_ = 0;
  // Per CPU: records delivered since the last ArmDoorbells().
  std::vector<std::uint64_t> delivered_since_arm_;
  std::chrono::steady_clock::time_point last_arm_{};
  const std::byte* records_ = nullptr;
  std::size_t records_len_ = 0;
  kspan_percpu_pos* positions_ = nullptr;
  std::size_t positions_len_ = 0;
  std::atomic<std::uint64_t> corrupt_{0};
  bool corrupt_logged_ = false;
};

}  // namespace kspan
