#include "userspace/ring_reader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

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

absl::Status RingReader::Add(int ring_fd, std::string name, EventSink* sink) {
  if (thread_.joinable()) return absl::FailedPreconditionError("ring reader already started");
  auto ring = std::make_unique<Ring>(Ring{std::move(name), sink, this});
  int err = 0;
  if (rb_ == nullptr) {
    rb_ = ring_buffer__new(ring_fd, &RingReader::OnRecord, ring.get(), nullptr);
    if (rb_ == nullptr) err = errno;
  } else {
    err = -ring_buffer__add(rb_, ring_fd, &RingReader::OnRecord, ring.get());
  }
  if (err != 0) {
    return absl::InternalError(
        absl::StrCat("ring buffer ", ring->name, ": ", std::strerror(err)));
  }
  rings_.push_back(std::move(ring));
  return absl::OkStatus();
}

int RingReader::PollOnce(std::chrono::milliseconds timeout) {
  if (rb_ == nullptr) return 0;
  int n = ring_buffer__poll(rb_, static_cast<int>(timeout.count()));
  if (n < 0) return n;
  // The BPF side skips wakeups until wakeup_bytes are waiting, so a timeout
  // does not mean the rings are empty: drain them either way.
  int m = ring_buffer__consume(rb_);
  return m < 0 ? m : n + m;
}

absl::Status RingReader::Start(std::chrono::milliseconds poll_timeout) {
  if (rb_ == nullptr) return absl::FailedPreconditionError("ring reader has no rings");
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
    ring_buffer__consume(rb_);
  });
  return absl::OkStatus();
}

void RingReader::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

}  // namespace kspan
