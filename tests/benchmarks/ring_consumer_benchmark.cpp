// Ring consumer throughput: records drained from a real BPF ring buffer and
// decoded, on one core, with no loss. A benchmark-only BPF program fills the
// ring (tests/benchmarks/ring_producer.bpf.c) while the clock is paused;
// only the drain (libbpf ring_buffer__consume + EventDecoder) is timed.
// Needs root.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>

#include "ring_producer.skel.h"
#include "userspace/event_decoder.h"
#include "userspace/ring_reader.h"

namespace kspan {
namespace {

struct CountingHandler : KernelEventHandler {
  std::uint64_t connects = 0;
  void OnTcpConnect(const kspan_tcp_connect_event& e) noexcept override { connects += e.established; }
};

void BM_RingDrainAndDecode(benchmark::State& state) {
  constexpr std::uint32_t kBatch = 4096;
  const std::size_t ring_bytes = static_cast<std::size_t>(state.range(0)) << 20;
  ring_producer_bpf* skel = ring_producer_bpf::open();
  if (skel == nullptr) {
    state.SkipWithError("open failed (root needed)");
    return;
  }
  skel->rodata->target_tgid = static_cast<std::uint32_t>(getpid());
  skel->rodata->batch = kBatch;
  bpf_map__set_max_entries(skel->maps.bench_ring, ring_bytes);
  if (ring_producer_bpf::load(skel) != 0 || ring_producer_bpf::attach(skel) != 0) {
    ring_producer_bpf::destroy(skel);
    state.SkipWithError("load/attach failed (root needed)");
    return;
  }
  MetricsRegistry metrics;
  CountingHandler handler;
  EventDecoder decoder(handler, metrics);
  RingReader reader;
  if (!reader.Add(bpf_map__fd(skel->maps.bench_ring), "bench_ring", &decoder).ok()) {
    ring_producer_bpf::destroy(skel);
    state.SkipWithError("ring reader");
    return;
  }
  // Fill to about 90% so the producer never hits a full ring.
  const std::size_t record = sizeof(kspan_tcp_connect_event) + 8;  // + ring header
  const std::size_t fills = (ring_bytes * 9 / 10) / (record * kBatch);
  std::uint64_t drained = 0;
  for (auto _ : state) {
    state.PauseTiming();
    for (std::size_t i = 0; i < fills; ++i) getppid();
    state.ResumeTiming();
    while (int n = reader.PollOnce(std::chrono::milliseconds(0))) {
      if (n < 0) break;
      drained += static_cast<std::uint64_t>(n);
    }
  }
  std::uint32_t zero = 0;
  std::uint64_t lost = 0;
  bpf_map_lookup_elem(bpf_map__fd(skel->maps.bench_lost), &zero, &lost);
  state.counters["lost"] = static_cast<double>(lost);
  state.counters["decode_errors"] = static_cast<double>(decoder.errors());
  state.SetItemsProcessed(static_cast<std::int64_t>(drained));
  ring_producer_bpf::destroy(skel);
}
BENCHMARK(BM_RingDrainAndDecode)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace kspan

BENCHMARK_MAIN();
