#include "userspace/clock_sync.h"

#include <time.h>

#include <cstdlib>
#include <limits>

namespace kspan {
namespace {

std::int64_t ReadNs(clockid_t clock) noexcept {
  struct timespec ts {};
  clock_gettime(clock, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace

std::uint64_t MonotonicNowNs() noexcept {
  return static_cast<std::uint64_t>(ReadNs(CLOCK_MONOTONIC));
}

ClockSync::Sample ClockSync::MeasureOffset() {
  Sample best{0, std::numeric_limits<std::int64_t>::max()};
  for (int i = 0; i < 5; ++i) {
    std::int64_t m1 = ReadNs(CLOCK_MONOTONIC);
    std::int64_t r = ReadNs(CLOCK_REALTIME);
    std::int64_t m2 = ReadNs(CLOCK_MONOTONIC);
    if (m2 - m1 < best.uncertainty_ns) best = {r - (m1 + (m2 - m1) / 2), m2 - m1};
  }
  return best;
}

ClockSync::ClockSync(std::chrono::nanoseconds resample_every, Sampler sampler)
    : resample_every_(resample_every), sampler_(std::move(sampler)) {
  offset_ns_.store(sampler_().offset_ns);
  sampled_at_mono_ = MonotonicNowNs();
}

void ClockSync::Resample(std::uint64_t now_mono) noexcept {
  std::int64_t fresh = sampler_().offset_ns;
  std::int64_t skew = fresh - offset_ns_.load(std::memory_order_relaxed);
  offset_ns_.store(fresh, std::memory_order_relaxed);
  last_skew_ns_.store(skew, std::memory_order_relaxed);
  if (std::llabs(skew) > max_abs_skew_ns_.load(std::memory_order_relaxed)) {
    max_abs_skew_ns_.store(std::llabs(skew), std::memory_order_relaxed);
  }
  sampled_at_mono_ = now_mono;
}

std::uint64_t ClockSync::ToUnixNanos(std::uint64_t mono_ns) noexcept {
  if (mono_ns > sampled_at_mono_ &&
      mono_ns - sampled_at_mono_ > static_cast<std::uint64_t>(resample_every_.count())) {
    Resample(mono_ns);
  }
  // Unsigned arithmetic: the same sum for every real timestamp, and no
  // signed overflow for a corrupt one near 2^63 (found by
  // tests/fuzz/http_spans_fuzzer).
  return mono_ns + static_cast<std::uint64_t>(offset_ns_.load(std::memory_order_relaxed));
}

}  // namespace kspan
