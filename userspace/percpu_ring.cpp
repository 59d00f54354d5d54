#include "userspace/percpu_ring.h"

#include <bpf/bpf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <span>

#include "absl/strings/str_cat.h"
#include "exporter/status_macros.h"
#include "spdlog/spdlog.h"

namespace kspan {

// The BPF side writes this struct; head and tail must stay on their own
// cache lines and at these offsets.
static_assert(sizeof(kspan_percpu_pos) == 128);
static_assert(offsetof(kspan_percpu_pos, head) == 0);
static_assert(offsetof(kspan_percpu_pos, tail) == 64);
static_assert(offsetof(kspan_percpu_pos, bell_at) == 72);

namespace {

std::size_t RoundUpToPages(std::size_t bytes) {
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return (bytes + page - 1) / page * page;
}

// Checks one map against what the spec says it is.
absl::Status CheckMap(const std::string& ring, const char* role, int fd, std::uint32_t value_size,
                      std::uint32_t entries) {
  bpf_map_info info{};
  std::uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) {
    const int err = errno;
    return absl::InternalError(
        absl::StrCat("per-CPU ring ", ring, ": ", role, " map (fd ", fd, "): ", std::strerror(err)));
  }
  const auto where = [&] { return absl::StrCat("per-CPU ring ", ring, ": ", role, " map ", info.name, ": "); };
  if (info.type != BPF_MAP_TYPE_ARRAY) {
    return absl::InvalidArgumentError(absl::StrCat(where(), "type ", info.type, ", expected an ARRAY"));
  }
  if ((info.map_flags & BPF_F_MMAPABLE) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(where(), "not created with BPF_F_MMAPABLE"));
  }
  if (info.value_size != value_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(where(), "value_size ", info.value_size, ", expected ", value_size));
  }
  if (info.max_entries != entries) {
    return absl::InvalidArgumentError(
        absl::StrCat(where(), "max_entries ", info.max_entries, ", expected ", entries));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PerCpuRing>> PerCpuRing::Open(const PerCpuRingSpec& spec) {
  const std::string& n = spec.name;
  if (spec.cpus == 0) return absl::InvalidArgumentError(absl::StrCat("per-CPU ring ", n, ": no CPUs"));
  if (spec.slots_per_cpu == 0 || (spec.slots_per_cpu & (spec.slots_per_cpu - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("per-CPU ring ", n, ": ", spec.slots_per_cpu,
                                                   " slots per CPU, expected a power of two"));
  }
  // The kernel lays array values out every round_up(value_size, 8) bytes;
  // the protocol asks for slots that need no rounding.
  if (spec.slot_bytes == 0 || spec.slot_bytes % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("per-CPU ring ", n, ": slot of ", spec.slot_bytes,
                                                   " bytes, expected a multiple of 8"));
  }
  const std::uint64_t slots_total = std::uint64_t{spec.cpus} * spec.slots_per_cpu;
  if (slots_total > UINT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("per-CPU ring ", n, ": ", spec.cpus, " CPUs x ", spec.slots_per_cpu, " slots do not fit a map"));
  }
  KSPAN_RETURN_IF_ERROR(CheckMap(n, "records", spec.records_fd, spec.slot_bytes,
                                 static_cast<std::uint32_t>(slots_total)));
  KSPAN_RETURN_IF_ERROR(
      CheckMap(n, "positions", spec.positions_fd, sizeof(kspan_percpu_pos), spec.cpus));
  if ((spec.bell_every & (spec.bell_every - 1)) != 0 || spec.bell_every > spec.slots_per_cpu) {
    return absl::InvalidArgumentError(absl::StrCat("per-CPU ring ", n, ": a doorbell every ", spec.bell_every,
                                                   " records, expected a power of two up to ",
                                                   spec.slots_per_cpu, " or 0"));
  }

  std::unique_ptr<PerCpuRing> ring(new PerCpuRing());
  ring->name_ = n;
  ring->cpus_ = spec.cpus;
  ring->slots_ = spec.slots_per_cpu;
  ring->slot_bytes_ = spec.slot_bytes;
  ring->bell_every_ = spec.bell_every;
  ring->delivered_since_arm_.assign(spec.cpus, 0);
  // The records are only read here; the producer alone writes them.
  const std::size_t records_len = RoundUpToPages(slots_total * spec.slot_bytes);
  void* rec = mmap(nullptr, records_len, PROT_READ, MAP_SHARED, spec.records_fd, 0);
  if (rec == MAP_FAILED) {
    const int err = errno;
    return absl::InternalError(absl::StrCat("per-CPU ring ", n, ": mmap records: ", std::strerror(err)));
  }
  ring->records_ = static_cast<const std::byte*>(rec);
  ring->records_len_ = records_len;
  // The positions are written here too: each CPU's tail.
  const std::size_t positions_len = RoundUpToPages(std::size_t{spec.cpus} * sizeof(kspan_percpu_pos));
  void* pos = mmap(nullptr, positions_len, PROT_READ | PROT_WRITE, MAP_SHARED, spec.positions_fd, 0);
  if (pos == MAP_FAILED) {
    const int err = errno;
    return absl::InternalError(absl::StrCat("per-CPU ring ", n, ": mmap positions: ", std::strerror(err)));
  }
  ring->positions_ = static_cast<kspan_percpu_pos*>(pos);
  ring->positions_len_ = positions_len;
  // The first doorbell of each CPU: bell_every records from where it is.
  if (ring->bell_every_ != 0) {
    for (std::uint32_t cpu = 0; cpu < ring->cpus_; ++cpu) {
      kspan_percpu_pos* p = ring->Position(cpu);
      const std::uint64_t head = __atomic_load_n(&p->head, __ATOMIC_ACQUIRE);
      __atomic_store_n(&p->bell_at, head + ring->bell_every_, __ATOMIC_RELAXED);
    }
  }
  ring->last_arm_ = std::chrono::steady_clock::now();
  return ring;
}

PerCpuRing::~PerCpuRing() {
  if (records_ != nullptr) munmap(const_cast<std::byte*>(records_), records_len_);
  if (positions_ != nullptr) munmap(positions_, positions_len_);
}

void PerCpuRing::Heads(std::vector<std::uint64_t>& out) const {
  out.resize(cpus_);
  for (std::uint32_t cpu = 0; cpu < cpus_; ++cpu) {
    out[cpu] = __atomic_load_n(&Position(cpu)->head, __ATOMIC_ACQUIRE);
  }
}

std::size_t PerCpuRing::Drain(EventSink* sink, std::size_t max_per_cpu,
                              const std::vector<std::uint64_t>* upto) noexcept {
  std::size_t delivered = 0;
  const std::uint64_t mask = slots_ - 1;
  const std::size_t cpu_bytes = std::size_t{slots_} * slot_bytes_;
  for (std::uint32_t cpu = 0; cpu < cpus_; ++cpu) {
    kspan_percpu_pos* pos = Position(cpu);
    // Acquire pairs with the producer's ordered store of head: every record
    // below head is whole once head is seen.
    const std::uint64_t head = __atomic_load_n(&pos->head, __ATOMIC_ACQUIRE);
    // Only this consumer writes tail.
    const std::uint64_t tail = __atomic_load_n(&pos->tail, __ATOMIC_RELAXED);
    const std::uint64_t waiting = head - tail;
    if (waiting == 0) continue;
    if (waiting > slots_) {
      // Either side wrote a position it should not have; the slots cannot
      // be trusted, so nothing is delivered from this CPU.
      corrupt_.fetch_add(1, std::memory_order_relaxed);
      if (!corrupt_logged_) {
        corrupt_logged_ = true;
        spdlog::error("per-CPU ring {}: CPU {} head {} is {} records past tail {} with {} slots; "
                      "its records are not read",
                      name_, cpu, head, waiting, tail, slots_);
      }
      continue;
    }
    std::uint64_t n = std::min<std::uint64_t>(waiting, max_per_cpu);
    if (upto != nullptr && cpu < upto->size()) {
      // Records written since `upto` was read wait for the next drain; a
      // bound behind tail (never, unless a position is corrupt) delivers
      // nothing.
      const std::uint64_t before_bound = (*upto)[cpu] - tail;
      n = std::min<std::uint64_t>(n, before_bound <= slots_ ? before_bound : 0);
      if (n == 0) continue;
    }
    const std::byte* base = records_ + cpu * cpu_bytes;
    for (std::uint64_t i = tail; i != tail + n; ++i) {
      sink->OnEvent(std::span<const std::byte>(base + (i & mask) * slot_bytes_, slot_bytes_));
    }
    // Release: the sink has finished with the slots before the producer may
    // reuse them.
    __atomic_store_n(&pos->tail, tail + n, __ATOMIC_RELEASE);
    delivered_since_arm_[cpu] += n;
    delivered += n;
  }
  return delivered;
}

std::chrono::nanoseconds PerCpuRing::ArmDoorbells(std::chrono::steady_clock::time_point now,
                                                  std::chrono::nanoseconds period) noexcept {
  using std::chrono::duration;
  using std::chrono::nanoseconds;
  if (bell_every_ == 0) return period;
  const double elapsed = std::max(duration<double>(now - last_arm_).count(), 1e-6);
  const double period_s = duration<double>(period).count();
  last_arm_ = now;
  nanoseconds next = period;
  for (std::uint32_t cpu = 0; cpu < cpus_; ++cpu) {
    const double rate = static_cast<double>(delivered_since_arm_[cpu]) / elapsed;  // records per second
    delivered_since_arm_[cpu] = 0;
    std::uint64_t ahead = bell_every_;
    if (rate * period_s > bell_every_) {
      // More than one doorbell per period: drain on a timer, and keep the
      // doorbell for a CPU that fills half its ring before the timer.
      ahead = std::max<std::uint64_t>(bell_every_, slots_ / 2);
      const auto quarter = nanoseconds(static_cast<std::int64_t>(slots_ / 4 / rate * 1e9));
      next = std::min(next, std::max<nanoseconds>(quarter, std::chrono::milliseconds(1)));
    }
    kspan_percpu_pos* pos = Position(cpu);
    const std::uint64_t tail = __atomic_load_n(&pos->tail, __ATOMIC_RELAXED);  // only this side writes it
    __atomic_store_n(&pos->bell_at, tail + ahead, __ATOMIC_RELAXED);
  }
  // A producer that passed its new bell_at before seeing it rings only
  // bell_every records later: drain again at once instead.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  for (std::uint32_t cpu = 0; cpu < cpus_; ++cpu) {
    const kspan_percpu_pos* pos = Position(cpu);
    const std::uint64_t head = __atomic_load_n(&pos->head, __ATOMIC_ACQUIRE);
    const std::uint64_t tail = __atomic_load_n(&pos->tail, __ATOMIC_RELAXED);
    const std::uint64_t bell_at = __atomic_load_n(&pos->bell_at, __ATOMIC_RELAXED);
    if (head - tail > slots_) continue;  // a corrupt position: Drain() skips the CPU
    if (static_cast<std::int64_t>(head - bell_at) >= 0) return nanoseconds::zero();
  }
  return next;
}

std::uint64_t PerCpuRing::Waiting(std::uint32_t cpu) const noexcept {
  const kspan_percpu_pos* pos = Position(cpu);
  const std::uint64_t tail = __atomic_load_n(&pos->tail, __ATOMIC_ACQUIRE);
  const std::uint64_t head = __atomic_load_n(&pos->head, __ATOMIC_ACQUIRE);
  // tail is loaded before head, so a drain running meanwhile cannot make it
  // pass head; what is left negative or too large is a corrupt position,
  // shown as an empty or a full ring.
  const std::uint64_t waiting = head - tail;
  if (static_cast<std::int64_t>(waiting) < 0) return 0;
  return std::min<std::uint64_t>(waiting, slots_);
}

RingUsage PerCpuRing::Usage() const noexcept {
  RingUsage u;
  u.size_bytes = std::uint64_t{cpus_} * slots_ * slot_bytes_;
  for (std::uint32_t cpu = 0; cpu < cpus_; ++cpu) u.used_bytes += Waiting(cpu) * slot_bytes_;
  return u;
}

double PerCpuRing::MaxCpuUsedFraction() const noexcept {
  std::uint64_t most = 0;
  for (std::uint32_t cpu = 0; cpu < cpus_; ++cpu) most = std::max(most, Waiting(cpu));
  return slots_ == 0 ? 0.0 : static_cast<double>(most) / slots_;
}

}  // namespace kspan
