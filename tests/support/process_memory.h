// This process's memory, for tests that bound what an attack costs: the
// resident set and its peak (VmRSS, VmHWM of /proc/self/status). gtest runs
// each test in a process of its own under ctest, so the peak is the test's.
#pragma once

#include <cstddef>

namespace kspan::testing {

struct Memory {
  std::size_t rss = 0;   // bytes
  std::size_t peak = 0;  // bytes
};
Memory ReadMemory();

// Resets VmHWM to the current VmRSS (/proc/self/clear_refs "5"), so that a
// test measures its own peak, not an earlier one. False where the kernel
// refuses (then the peak is the process's).
bool ResetPeakMemory();

// How far the peak rose above `before.rss` since `before` was read; also
// printed, for the figures the docs quote.
std::size_t PeakGrowthSince(const Memory& before);

// Whether the resident set measures kspan's memory. Under AddressSanitizer
// (the sanitizer tree, docs/fuzzing.md) it also holds what ASan keeps on
// purpose: freed memory in quarantine (256 MiB by default, so that a use
// after free is caught), redzones around every allocation and the shadow of
// both; an attack of many small allocations doubles. The RSS ceilings hold
// for the real allocator and are asserted by the gcc tree; under ASan the
// rest of each attack test (answers, metrics, what was kept) still is.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kRssCeilingsApply = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kRssCeilingsApply = false;
#else
inline constexpr bool kRssCeilingsApply = true;
#endif
#else
inline constexpr bool kRssCeilingsApply = true;
#endif

}  // namespace kspan::testing

// EXPECT_LT for a resident-set figure against its ceiling (see
// kRssCeilingsApply); takes a message with << like EXPECT_LT.
#define EXPECT_RSS_LT(value, ceiling) \
  if (!::kspan::testing::kRssCeilingsApply) { \
  } else                                      \
    EXPECT_LT(value, ceiling)
