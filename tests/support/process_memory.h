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

}  // namespace kspan::testing
