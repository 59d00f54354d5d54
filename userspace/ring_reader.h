// Drains BPF ring buffers on one thread and hands each record, as bytes, to
// the consumer registered for that ring. The reader knows nothing of record
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

class RingReader {
 public:
  RingReader() = default;
  ~RingReader();
  RingReader(const RingReader&) = delete;
  RingReader& operator=(const RingReader&) = delete;

  // Register before Start(). The sink must outlive the reader.
  absl::Status Add(int ring_fd, std::string name, EventSink* sink);

  // Polls on a thread of its own. `poll_timeout` bounds how long records wait
  // when the BPF side batches wakeups.
  absl::Status Start(std::chrono::milliseconds poll_timeout);

  // Stops the thread after draining what is in the rings.
  void Stop();

  // Poll once on the calling thread (for tests and benchmarks).
  int PollOnce(std::chrono::milliseconds timeout);

  std::uint64_t records_read() const { return records_read_.load(std::memory_order_relaxed); }

 private:
  struct Ring {
    std::string name;
    EventSink* sink;
    RingReader* reader;
  };
  static int OnRecord(void* ctx, void* data, std::size_t size);

  ring_buffer* rb_ = nullptr;
  std::vector<std::unique_ptr<Ring>> rings_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> records_read_{0};
};

}  // namespace kspan
