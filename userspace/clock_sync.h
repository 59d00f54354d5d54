// Converts BPF timestamps (CLOCK_MONOTONIC) to Unix nanoseconds.
//
// The offset realtime - monotonic changes when NTP steps or slews the wall
// clock, so it is re-sampled periodically; each re-sample records how far the
// offset moved (the skew corrected), exported as a metric.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>

namespace kspan {

class ClockSync {
 public:
  struct Sample {
    std::int64_t offset_ns;   // realtime - monotonic
    std::int64_t uncertainty_ns;  // width of the bracketing monotonic reads
  };
  using Sampler = std::function<Sample()>;

  // The sampler is injectable so tests can drive the clock.
  explicit ClockSync(std::chrono::nanoseconds resample_every = std::chrono::seconds(10),
                     Sampler sampler = MeasureOffset);

  // monotonic ns -> Unix ns. Cheap; re-samples when the last sample is older
  // than resample_every (measured on the monotonic axis of `mono_ns`).
  std::uint64_t ToUnixNanos(std::uint64_t mono_ns) noexcept;

  std::int64_t offset_ns() const { return offset_ns_.load(std::memory_order_relaxed); }
  // Signed change of the offset at the last re-sample.
  std::int64_t last_skew_ns() const { return last_skew_ns_.load(std::memory_order_relaxed); }
  std::int64_t max_abs_skew_ns() const { return max_abs_skew_ns_.load(std::memory_order_relaxed); }

  // Best of several bracketed reads of both clocks.
  static Sample MeasureOffset();

 private:
  void Resample(std::uint64_t now_mono) noexcept;

  std::chrono::nanoseconds resample_every_;
  Sampler sampler_;
  std::atomic<std::int64_t> offset_ns_{0};
  std::atomic<std::int64_t> last_skew_ns_{0};
  std::atomic<std::int64_t> max_abs_skew_ns_{0};
  std::uint64_t sampled_at_mono_ = 0;
};

// CLOCK_MONOTONIC now, in ns: the clock bpf_ktime_get_ns() reads.
std::uint64_t MonotonicNowNs() noexcept;

}  // namespace kspan
