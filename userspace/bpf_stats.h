// Per-CPU stats maps (an array of __u64 counters per CPU, one slot per
// enum value in each family's header), summed over CPUs.
#pragma once

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <array>
#include <cstdint>
#include <vector>

namespace kspan {

// Slots that cannot be read (no map, fd < 0) read as zero.
template <std::size_t N>
std::array<std::uint64_t, N> SumPerCpuSlots(int map_fd) {
  std::array<std::uint64_t, N> total{};
  const int ncpu = libbpf_num_possible_cpus();
  if (map_fd < 0 || ncpu <= 0) return total;
  std::vector<std::uint64_t> per_cpu(static_cast<std::size_t>(ncpu));
  for (std::uint32_t slot = 0; slot < N; ++slot) {
    if (bpf_map_lookup_elem(map_fd, &slot, per_cpu.data()) != 0) continue;
    for (auto v : per_cpu) total[slot] += v;
  }
  return total;
}

}  // namespace kspan
