#include "tests/support/process_memory.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace kspan::testing {

Memory ReadMemory() {
  std::ifstream in("/proc/self/status");
  Memory m;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string name;
    std::size_t kib = 0;
    fields >> name >> kib;
    if (name == "VmRSS:") m.rss = kib * 1024;
    if (name == "VmHWM:") m.peak = kib * 1024;
  }
  return m;
}

bool ResetPeakMemory() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

std::size_t PeakGrowthSince(const Memory& before) {
  const Memory now = ReadMemory();
  const std::size_t growth = now.peak > before.rss ? now.peak - before.rss : 0;
  // The figure docs/operations.md quotes ("What the bounds add up to").
  std::printf("[ memory   ] peak resident memory +%.1f MiB over %.1f MiB\n", growth / 1048576.0,
              before.rss / 1048576.0);
  return growth;
}

}  // namespace kspan::testing
