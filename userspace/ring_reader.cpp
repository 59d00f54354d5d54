#include "userspace/ring_reader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <climits>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "userspace/percpu_ring.h"

namespace kspan {

absl::StatusOr<RingUsage> QueryRing(int ring_map_fd) {
  bpf_map_info info{};
  std::uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(ring_map_fd, &info, &len) != 0) {
    return absl::InternalError(absl::StrCat("ring info: ", std::strerror(errno)));
  }
  // Page 0 holds the consumer position, page 1 the producer position (the
  // layout libbpf's ring_buffer uses); both are readable by the map's owner.
  const long page = sysconf(_SC_PAGESIZE);
  void* cons = mmap(nullptr, page, PROT_READ, MAP_SHARED, ring_map_fd, 0);
  if (cons == MAP_FAILED) return absl::InternalError(absl::StrCat("ring mmap: ", std::strerror(errno)));
  void* prod = mmap(nullptr, page, PROT_READ, MAP_SHARED, ring_map_fd, page);
  if (prod == MAP_FAILED) {
    munmap(cons, page);
    return absl::InternalError(absl::StrCat("ring mmap: ", std::strerror(errno)));
  }
  RingUsage u;
  u.size_bytes = info.max_entries;
  const auto c = __atomic_load_n(static_cast<std::uint64_t*>(cons), __ATOMIC_ACQUIRE);
  const auto p = __atomic_load_n(static_cast<std::uint64_t*>(prod), __ATOMIC_ACQUIRE);
  u.used_bytes = p >= c ? p - c : 0;
  munmap(cons, page);
  munmap(prod, page);
  return u;
}

RingReader::RingReader() = default;

RingReader::~RingReader() {
  Stop();
  ring_buffer__free(rb_);
}

int RingReader::OnRecord(void* ctx, void* data, std::size_t size) {
  auto* ring = static_cast<Ring*>(ctx);
  ring->reader->records_read_.fetch_add(1, std::memory_order_relaxed);
  ring->sink->OnEvent(std::span<const std::byte>(static_cast<const std::byte*>(data), size));
  return 0;
}

int RingReader::OnDoorbell(void* ctx, void* /*data*/, std::size_t /*size*/) {
  // A doorbell only wakes the poll; the per-CPU rings are drained after it.
  static_cast<RingReader*>(ctx)->doorbells_.fetch_add(1, std::memory_order_relaxed);
  return 0;
}

absl::Status RingReader::AddRingBuffer(int ring_fd, const std::string& name,
                                       int (*fn)(void*, void*, std::size_t), void* ctx) {
  int err = 0;
  if (rb_ == nullptr) {
    rb_ = ring_buffer__new(ring_fd, fn, ctx, nullptr);
    if (rb_ == nullptr) err = errno;
  } else {
    err = -ring_buffer__add(rb_, ring_fd, fn, ctx);
  }
  if (err != 0) {
    return absl::InternalError(absl::StrCat("ring buffer ", name, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

absl::Status RingReader::Add(int ring_fd, std::string name, EventSink* sink) {
  if (thread_.joinable()) return absl::FailedPreconditionError("ring reader already started");
  auto ring = std::make_unique<Ring>(Ring{std::move(name), sink, this});
  if (auto s = AddRingBuffer(ring_fd, ring->name, &RingReader::OnRecord, ring.get()); !s.ok()) return s;
  rings_.push_back(std::move(ring));
  return absl::OkStatus();
}

absl::Status RingReader::AddPerCpu(PerCpuRingSpec spec, int bell_ring_fd, EventSink* sink) {
  if (thread_.joinable()) return absl::FailedPreconditionError("ring reader already started");
  if (sink == nullptr) return absl::InvalidArgumentError(absl::StrCat("per-CPU ring ", spec.name, ": no sink"));
  auto ring = PerCpuRing::Open(spec);
  if (!ring.ok()) return ring.status();
  if (bell_ring_fd >= 0) {
    bpf_map_info info{};
    std::uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(bell_ring_fd, &info, &len) != 0) {
      const int err = errno;
      return absl::InternalError(absl::StrCat("per-CPU ring ", spec.name, ": doorbell: ", std::strerror(err)));
    }
    if (info.type != BPF_MAP_TYPE_RINGBUF) {
      return absl::InvalidArgumentError(absl::StrCat("per-CPU ring ", spec.name, ": doorbell map ", info.name,
                                                     " is not a BPF ring buffer"));
    }
    // Rings that share a bell register it once: one epoll entry per map.
    if (std::find(bell_map_ids_.begin(), bell_map_ids_.end(), info.id) == bell_map_ids_.end()) {
      if (auto s = AddRingBuffer(bell_ring_fd, absl::StrCat(spec.name, " doorbell"), &RingReader::OnDoorbell, this);
          !s.ok()) {
        return s;
      }
      bell_map_ids_.push_back(info.id);
    }
  }
  per_cpu_.push_back(PerCpu{std::move(*ring), sink});
  return absl::OkStatus();
}

const PerCpuRing* RingReader::per_cpu_ring(std::string_view name) const {
  for (const auto& p : per_cpu_) {
    if (p.ring->name() == name) return p.ring.get();
  }
  return nullptr;
}

std::size_t RingReader::DrainPerCpu() noexcept {
  std::size_t n = 0;
  for (auto& p : per_cpu_) n += p.ring->Drain(p.sink);
  if (n != 0) records_read_.fetch_add(n, std::memory_order_relaxed);
  return n;
}

std::chrono::nanoseconds RingReader::ArmPerCpu(std::chrono::nanoseconds period) noexcept {
  const auto now = std::chrono::steady_clock::now();
  std::chrono::nanoseconds next = std::chrono::nanoseconds::max();
  for (auto& p : per_cpu_) next = std::min(next, p.ring->ArmDoorbells(now, period));
  // The whole period: no ring asks for an earlier poll.
  return next < period ? next : std::chrono::nanoseconds::max();
}

int RingReader::PollOnce(std::chrono::milliseconds timeout) {
  if (rb_ == nullptr && per_cpu_.empty()) return 0;
  // A busy per-CPU ring is drained on a timer shorter than the timeout.
  const auto wait = std::chrono::ceil<std::chrono::milliseconds>(
      std::min<std::chrono::nanoseconds>(timeout, pace_));
  const std::uint64_t bells_before = doorbells_.load(std::memory_order_relaxed);
  std::int64_t n = 0;
  if (rb_ != nullptr) {
    // Records waiting in per-CPU rings wait for their doorbell or the
    // timeout, like records in a ring buffer for their wakeup: looking at
    // the rings' heads before every poll would pull each head's cache line
    // away from the producer at every record, a cost on every traced
    // syscall, and spin this thread whenever records trickle in.
    int polled = ring_buffer__poll(rb_, static_cast<int>(wait.count()));
    if (polled < 0) return polled;
    // The BPF side skips wakeups until wakeup_bytes are waiting, so a timeout
    // does not mean the rings are empty: drain them either way.
    int consumed = ring_buffer__consume(rb_);
    if (consumed < 0) return consumed;
    n = std::int64_t{polled} + consumed -
        static_cast<std::int64_t>(doorbells_.load(std::memory_order_relaxed) - bells_before);
  }
  if (!per_cpu_.empty()) {
    std::size_t drained = DrainPerCpu();
    if (rb_ == nullptr && drained == 0 && wait.count() > 0) {
      // No doorbell to wait on: the timeout is the drain period.
      std::this_thread::sleep_for(wait);
      drained = DrainPerCpu();
    }
    n += static_cast<std::int64_t>(drained);
    pace_ = ArmPerCpu(timeout);
  }
  return static_cast<int>(std::min<std::int64_t>(n, INT_MAX));
}

absl::Status RingReader::Start(std::chrono::milliseconds poll_timeout) {
  if (rb_ == nullptr && per_cpu_.empty()) return absl::FailedPreconditionError("ring reader has no rings");
  stop_.store(false);
  thread_ = std::thread([this, poll_timeout] {
    while (!stop_.load(std::memory_order_relaxed)) {
      int n = PollOnce(poll_timeout);
      if (n < 0 && n != -EINTR) {
        spdlog::error("ring reader: poll failed: {}", std::strerror(-n));
        break;
      }
    }
    // Whatever was submitted before Stop() is still delivered.
    if (rb_ != nullptr) ring_buffer__consume(rb_);
    DrainPerCpu();
  });
  return absl::OkStatus();
}

void RingReader::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

}  // namespace kspan
