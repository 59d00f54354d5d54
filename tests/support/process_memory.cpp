#include "tests/support/process_memory.h"

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
  return now.peak > before.rss ? now.peak - before.rss : 0;
}

}  // namespace kspan::testing
