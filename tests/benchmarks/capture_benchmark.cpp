// Userspace cost per kernel record: decode (bytes -> event) and span
// assembly (event -> Span with ids, time, attributes, resource), the work the
// ring reader thread does for every record before export.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <sys/socket.h>

#include <cstring>

#include <unistd.h>

#include "userspace/container_metadata.h"
#include "userspace/event_decoder.h"
#include "userspace/span_assembler.h"

namespace kspan {
namespace {

kspan_tcp_connect_event SampleConnect(std::uint32_t pid) {
  kspan_tcp_connect_event e{};
  e.type = KSPAN_EVENT_TCP_CONNECT;
  e.pid = pid;
  e.tid = pid;
  e.start_ns = 1'000'000;
  e.end_ns = 1'250'000;
  e.family = AF_INET;
  e.sport = 40000;
  e.dport = 443;
  e.established = 1;
  inet_pton(AF_INET, "10.0.0.1", e.saddr);
  inet_pton(AF_INET, "10.0.0.2", e.daddr);
  std::strcpy(e.comm, "nginx");
  return e;
}

void BM_DecodeAndAssembleTcpConnect(benchmark::State& state) {
  ClockSync clock;
  ProcessResources resources(
      ProcessResources::Options{.proc_root = "/nonexistent", .host_name = "bench-host", .max_entries = 8192});
  MetricsRegistry metrics;
  std::size_t sink = 0;
  SpanAssembler assembler(clock, resources, metrics,
                          [&](Span&& s) { sink += s.attributes.size(); });
  EventDecoder decoder(assembler, metrics);
  // A handful of processes, as on a real host: resources come from the cache.
  std::vector<kspan_tcp_connect_event> events;
  for (std::uint32_t pid = 100; pid < 164; ++pid) events.push_back(SampleConnect(pid));
  std::size_t i = 0;
  for (auto _ : state) {
    const auto& e = events[i++ % events.size()];
    decoder.OnEvent(std::span<const std::byte>(reinterpret_cast<const std::byte*>(&e), sizeof(e)));
  }
  benchmark::DoNotOptimize(sink);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DecodeAndAssembleTcpConnect);

// What the ring reader pays at an exec on the host: the process family's
// record makes kspan read the new image's identity from /proc at once
// (executable, cgroup, environment's service name; and container names,
// from the cache, for a process in a container). This process stands in for
// the one that exec'd.
void BM_IdentityAtExec(benchmark::State& state) {
  MetricsRegistry metrics;
  ContainerMetadata containers(ContainerMetadata::Options{}, &metrics);
  ProcessResources::Options o;
  o.containers = &containers;
  ProcessResources resources(o, &metrics);
  const auto pid = static_cast<std::uint32_t>(getpid());
  const auto ppid = static_cast<std::uint32_t>(getppid());
  std::uint64_t t = 1;
  for (auto _ : state) {
    resources.OnExec(pid, ppid, t++, "bench", "/usr/bin/bench");
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_IdentityAtExec);

void BM_IdGeneration(benchmark::State& state) {
  IdGenerator ids;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ids.NewTraceId());
    benchmark::DoNotOptimize(ids.NewSpanId());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_IdGeneration);

}  // namespace
}  // namespace kspan

BENCHMARK_MAIN();
