#include "userspace/ring_reader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "exporter/status_macros.h"
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
  rings_.clear();
  if (epoll_fd_ >= 0) close(epoll_fd_);
}

RingReader::Ring::~Ring() {
  ring_buffer__free(rb);
  if (consumer_page != nullptr) munmap(consumer_page, page_size);
  if (producer_page != nullptr) munmap(producer_page, page_size);
}

int RingReader::OnRecord(void* ctx, void* data, std::size_t size) noexcept {
  auto* ring = static_cast<Ring*>(ctx);
  if (ring->sink == nullptr) {
    // A doorbell only wakes the poll; the per-CPU rings are drained after it.
    ring->reader->doorbells_.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  const auto* bytes = static_cast<const std::byte*>(data);
  // libbpf stores the consumer position after each record, so while this
  // callback runs it is where this record starts.
  const auto at = __atomic_load_n(static_cast<const std::uint64_t*>(ring->consumer_page), __ATOMIC_RELAXED);
  if (at >= ring->bound) {
    // Written after this drain began: a ring drained before this one may
    // have a record written before it that is not read yet. libbpf counts
    // this record as consumed once we stop here, so keep a copy.
    ring->held.assign(bytes, bytes + size);
    ring->holding = true;
    return -1;
  }
  ring->reader->records_read_.fetch_add(1, std::memory_order_relaxed);
  ring->sink->OnEvent(std::span<const std::byte>(bytes, size));
  return 0;
}

absl::Status RingReader::AddRingBuffer(int ring_fd, std::string name, EventSink* sink) {
  const auto failed = [&](const char* what, int err) {
    return absl::InternalError(absl::StrCat("ring buffer ", name, ": ", what, ": ", std::strerror(err)));
  };
  if (epoll_fd_ < 0) {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) return failed("epoll_create1", errno);
  }
  auto ring = std::make_unique<Ring>();
  ring->name = std::move(name);
  ring->sink = sink;
  ring->reader = this;
  ring->page_size = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  ring->rb = ring_buffer__new(ring_fd, &RingReader::OnRecord, ring.get(), nullptr);
  if (ring->rb == nullptr) return failed("ring_buffer__new", errno);
  void* page = mmap(nullptr, ring->page_size, PROT_READ, MAP_SHARED, ring_fd, 0);
  if (page == MAP_FAILED) return failed("mmap consumer position", errno);
  ring->consumer_page = page;
  page = mmap(nullptr, ring->page_size, PROT_READ, MAP_SHARED, ring_fd,
              static_cast<off_t>(ring->page_size));
  if (page == MAP_FAILED) return failed("mmap producer position", errno);
  ring->producer_page = page;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u32 = static_cast<std::uint32_t>(rings_.size());
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, ring_fd, &ev) != 0) return failed("epoll_ctl", errno);
  rings_.push_back(std::move(ring));
  return absl::OkStatus();
}

absl::Status RingReader::Add(int ring_fd, std::string name, EventSink* sink) {
  if (thread_.joinable()) return absl::FailedPreconditionError("ring reader already started");
  if (sink == nullptr) return absl::InvalidArgumentError(absl::StrCat("ring buffer ", name, ": no sink"));
  return AddRingBuffer(ring_fd, std::move(name), sink);
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
      KSPAN_RETURN_IF_ERROR(
          AddRingBuffer(bell_ring_fd, absl::StrCat(spec.name, " doorbell"), nullptr));
      bell_map_ids_.push_back(info.id);
    }
  }
  const std::uint32_t cpus = (*ring)->cpus();
  per_cpu_.push_back(PerCpu{std::move(*ring), sink, std::vector<std::uint64_t>(cpus)});
  return absl::OkStatus();
}

const PerCpuRing* RingReader::per_cpu_ring(std::string_view name) const {
  for (const auto& p : per_cpu_) {
    if (p.ring->name() == name) return p.ring.get();
  }
  return nullptr;
}

std::size_t RingReader::DrainPerCpu(bool bounded) noexcept {
  std::size_t n = 0;
  for (auto& p : per_cpu_) {
    n += p.ring->Drain(p.sink, std::numeric_limits<std::size_t>::max(), bounded ? &p.heads : nullptr);
  }
  if (n != 0) records_read_.fetch_add(n, std::memory_order_relaxed);
  return n;
}

void RingReader::DeliverHeld(Ring& r) noexcept {
  if (!r.holding) return;
  r.holding = false;
  --held_;
  records_read_.fetch_add(1, std::memory_order_relaxed);
  r.sink->OnEvent(std::span<const std::byte>(r.held.data(), r.held.size()));
}

std::int64_t RingReader::DrainRound() noexcept {
  const std::uint64_t before = records_read_.load(std::memory_order_relaxed);
  // Bounds in the reverse of the drain order (Ring order in ring_reader.h):
  // the per-CPU rings are drained last, so their heads are read first.
  for (auto& p : per_cpu_) p.ring->Heads(p.heads);
  for (auto it = rings_.rbegin(); it != rings_.rend(); ++it) {
    Ring& r = **it;
    // Acquire: what was written before a record below the bound, on any
    // ring, is visible once the bound is.
    r.bound = r.sink == nullptr ? std::numeric_limits<std::uint64_t>::max()
                                : __atomic_load_n(static_cast<const std::uint64_t*>(r.producer_page),
                                                  __ATOMIC_ACQUIRE);
  }
  for (auto& ring : rings_) {
    Ring& r = *ring;
    DeliverHeld(r);  // older than anything else left in its ring
    const int rc = ring_buffer__consume(r.rb);
    if (r.holding) {
      ++held_;
    } else if (rc < 0) {
      return rc;
    }
  }
  DrainPerCpu(/*bounded=*/true);
  return static_cast<std::int64_t>(records_read_.load(std::memory_order_relaxed) - before);
}

std::chrono::nanoseconds RingReader::ArmPerCpu(std::chrono::nanoseconds period) noexcept {
  const auto now = std::chrono::steady_clock::now();
  std::chrono::nanoseconds next = std::chrono::nanoseconds::max();
  for (auto& p : per_cpu_) next = std::min(next, p.ring->ArmDoorbells(now, period));
  // The whole period: no ring asks for an earlier poll.
  return next < period ? next : std::chrono::nanoseconds::max();
}

int RingReader::PollOnce(std::chrono::milliseconds timeout) {
  if (rings_.empty() && per_cpu_.empty()) return 0;
  // A busy per-CPU ring is drained on a timer shorter than the timeout.
  const auto wait = std::chrono::ceil<std::chrono::milliseconds>(
      std::min<std::chrono::nanoseconds>(timeout, pace_));
  std::int64_t n = 0;
  if (!rings_.empty()) {
    // Records waiting in per-CPU rings wait for their doorbell or the
    // timeout, like records in a ring buffer for their wakeup: looking at
    // the rings' heads before every poll would pull each head's cache line
    // away from the producer at every record, a cost on every traced
    // syscall, and spin this thread whenever records trickle in.
    // A record held back from the last drain is waiting already.
    // Which rings are ready does not matter (all are drained, in order), so
    // a few events are enough; the fds are level-triggered.
    epoll_event events[4];
    const int ms = held_ != 0 ? 0 : static_cast<int>(wait.count());
    if (epoll_wait(epoll_fd_, events, 4, ms) < 0) return -errno;
    // The BPF side skips wakeups until wakeup_bytes are waiting, so a timeout
    // does not mean the rings are empty: drain them either way.
    n = DrainRound();
    if (n < 0) return static_cast<int>(n);
  } else {
    std::size_t drained = DrainPerCpu(/*bounded=*/false);
    if (drained == 0 && wait.count() > 0) {
      // No doorbell to wait on: the timeout is the drain period.
      std::this_thread::sleep_for(wait);
      drained = DrainPerCpu(/*bounded=*/false);
    }
    n = static_cast<std::int64_t>(drained);
  }
  if (!per_cpu_.empty()) pace_ = ArmPerCpu(timeout);
  return static_cast<int>(std::min<std::int64_t>(n, INT_MAX));
}

absl::Status RingReader::Start(std::chrono::milliseconds poll_timeout) {
  if (rings_.empty() && per_cpu_.empty()) return absl::FailedPreconditionError("ring reader has no rings");
  stop_.store(false);
  thread_ = std::thread([this, poll_timeout] {
    while (!stop_.load(std::memory_order_relaxed)) {
      int n = PollOnce(poll_timeout);
      if (n < 0 && n != -EINTR) {
        spdlog::error("ring reader: poll failed: {}", std::strerror(-n));
        break;
      }
    }
    // Whatever was submitted before Stop() is still delivered: the bounds
    // are read after it, and what crossed them is not dropped either.
    if (rings_.empty()) {
      DrainPerCpu(/*bounded=*/false);
    } else {
      DrainRound();
      for (auto& r : rings_) DeliverHeld(*r);
    }
  });
  return absl::OkStatus();
}

void RingReader::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

}  // namespace kspan
