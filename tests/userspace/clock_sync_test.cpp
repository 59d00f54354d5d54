#include "userspace/clock_sync.h"

#include <gtest/gtest.h>

#include <time.h>

namespace kspan {
namespace {

TEST(ClockSync, ConvertsWithTheSampledOffset) {
  std::int64_t offset = 1'700'000'000'000'000'000;
  ClockSync clock(std::chrono::hours(1), [&] { return ClockSync::Sample{offset, 10}; });
  const std::uint64_t now = MonotonicNowNs();
  EXPECT_EQ(clock.ToUnixNanos(now), now + static_cast<std::uint64_t>(offset));
  EXPECT_EQ(clock.last_skew_ns(), 0);
}

TEST(ClockSync, ResamplesAndReportsTheSkewItCorrects) {
  std::int64_t offset = 5'000'000'000;
  ClockSync clock(std::chrono::milliseconds(10), [&] { return ClockSync::Sample{offset, 10}; });
  const std::uint64_t now = MonotonicNowNs();
  offset += 2'500'000;  // the wall clock was stepped 2.5 ms forward
  const std::uint64_t later = now + 50'000'000;  // past the re-sample period
  EXPECT_EQ(clock.ToUnixNanos(later), later + 5'002'500'000u);
  EXPECT_EQ(clock.last_skew_ns(), 2'500'000);
  EXPECT_EQ(clock.max_abs_skew_ns(), 2'500'000);
}

// Fuzzing found (tests/fuzz/http_spans_fuzzer, event_decoder_fuzzer): a
// record time past 2^63 - offset overflowed a signed addition, undefined
// behaviour that the sanitizer build (the sanitizer stage of scripts/test.sh) reports.
// Such a time is no real timestamp; it converts modulo 2^64 like any other.
TEST(ClockSync, ATimeNearTheTopOfTheRangeDoesNotOverflow) {
  const std::int64_t offset = 1'700'000'000'000'000'000;
  ClockSync clock(std::chrono::hours(1), [&] { return ClockSync::Sample{offset, 1}; });
  const std::uint64_t mono = 8'030'529'762'471'274'347u;  // the fuzzer's value
  EXPECT_EQ(clock.ToUnixNanos(mono), mono + static_cast<std::uint64_t>(offset));
  EXPECT_EQ(clock.ToUnixNanos(UINT64_MAX), static_cast<std::uint64_t>(offset) - 1);
}

TEST(ClockSync, RealClocksAgreeWithinAMillisecond) {
  ClockSync clock;
  struct timespec rt {};
  const std::uint64_t mono = MonotonicNowNs();
  clock_gettime(CLOCK_REALTIME, &rt);
  const std::int64_t real = rt.tv_sec * 1'000'000'000ll + rt.tv_nsec;
  const std::int64_t converted = static_cast<std::int64_t>(clock.ToUnixNanos(mono));
  EXPECT_LT(std::llabs(real - converted), 1'000'000);
}

}  // namespace
}  // namespace kspan
