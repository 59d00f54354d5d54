// Ring consumer throughput: records drained from a real BPF ring buffer and
// decoded, on one core, with no loss. A benchmark-only BPF program fills the
// ring (tests/benchmarks/ring_producer.bpf.c) while the clock is paused;
// only the drain (libbpf ring_buffer__consume + EventDecoder) is timed.
// BM_PerCpuDrainAndDecode does the same for the per-CPU record rings
// (userspace/percpu_ring), filled from userspace through the producer
// protocol of bpf/kspan_common.h. Needs root.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <thread>

#include "ring_producer.skel.h"
#include "userspace/event_decoder.h"
#include "userspace/percpu_ring.h"
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

struct SyscallCountingHandler : KernelEventHandler {
  std::uint64_t syscalls = 0;
  std::uint64_t duration_ns = 0;
  void OnTcpConnect(const kspan_tcp_connect_event&) noexcept override {}
  void OnSyscall(const kspan_syscall_event& e, std::string_view) noexcept override {
    ++syscalls;
    duration_ns += e.end_ns - e.start_ns;
  }
};

bool PinTo(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

// Drain + decode of kspan_syscall_event records from per-CPU record rings of
// range(0) slots on each of 2 CPUs, every slot full at each iteration.
// range(1) == 1: the records are written by a thread on CPU 0 and drained on
// CPU 1, so they come from the other core's cache as the BPF programs' do;
// 0: written and drained on the same core (cache-hot, a lower bound).
void BM_PerCpuDrainAndDecode(benchmark::State& state) {
  constexpr std::uint32_t kCpus = 2;
  constexpr std::uint32_t kSlot = sizeof(kspan_syscall_event);
  const auto slots = static_cast<std::uint32_t>(state.range(0));
  LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_MMAPABLE);
  const int rec_fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "bench_rec", 4, kSlot, kCpus * slots, &opts);
  const int pos_fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "bench_pos", 4, sizeof(kspan_percpu_pos), kCpus, &opts);
  if (rec_fd < 0 || pos_fd < 0) {
    state.SkipWithError("bpf_map_create failed (root needed)");
    return;
  }
  PerCpuRingSpec spec{"bench_rec", rec_fd, pos_fd, kCpus, slots, kSlot};
  auto ring = PerCpuRing::Open(spec);
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  const std::size_t rec_len = (std::size_t{kCpus} * slots * kSlot + page - 1) / page * page;
  // The producer's own mappings, as the BPF programs' view of the maps.
  void* rec = mmap(nullptr, rec_len, PROT_READ | PROT_WRITE, MAP_SHARED, rec_fd, 0);
  void* pos = mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_SHARED, pos_fd, 0);
  if (!ring.ok() || rec == MAP_FAILED || pos == MAP_FAILED) {
    state.SkipWithError("per-CPU ring setup failed");
    close(rec_fd);
    close(pos_fd);
    return;
  }
  auto* slots_base = static_cast<std::byte*>(rec);
  auto* positions = static_cast<kspan_percpu_pos*>(pos);

  MetricsRegistry metrics;
  SyscallCountingHandler handler;
  EventDecoder decoder(handler, metrics);
  kspan_syscall_event e{};
  e.type = KSPAN_EVENT_SYSCALL;
  e.pid = 4242;
  e.nr = 0;  // read
  e.syscall_class = KSPAN_SYSCALL_CLASS_FILE_IO;
  e.fd = 3;
  std::memcpy(e.comm, "bench", 6);
  const bool cross_core = state.range(1) != 0;
  if (cross_core && (std::thread::hardware_concurrency() < 2 || !PinTo(1))) {
    state.SkipWithError("needs 2 CPUs");
    return;
  }
  std::uint64_t drained = 0;
  std::uint64_t ts = 1'000'000;
  auto fill = [&] {
    for (std::uint32_t cpu = 0; cpu < kCpus; ++cpu) {
      kspan_percpu_pos* p = &positions[cpu];
      for (std::uint32_t i = 0; i < slots; ++i) {
        const std::uint64_t head = __atomic_load_n(&p->head, __ATOMIC_RELAXED);
        e.tid = 5000 + i;
        e.start_ns = ts;
        e.end_ns = ts += 1000;
        std::memcpy(slots_base + (std::size_t{cpu} * slots + (head & (slots - 1))) * kSlot, &e, kSlot);
        __atomic_store_n(&p->head, head + 1, __ATOMIC_RELEASE);
      }
    }
  };
  for (auto _ : state) {
    state.PauseTiming();
    if (cross_core) {
      std::thread producer([&] {
        PinTo(0);
        fill();
      });
      producer.join();
    } else {
      fill();
    }
    state.ResumeTiming();
    drained += (*ring)->Drain(&decoder);
  }
  state.counters["decode_errors"] = static_cast<double>(decoder.errors());
  state.counters["undelivered"] = static_cast<double>(state.iterations() * kCpus * slots - handler.syscalls);
  state.SetItemsProcessed(static_cast<std::int64_t>(drained));
  if (cross_core) {
    cpu_set_t all;
    CPU_ZERO(&all);
    for (unsigned c = 0; c < std::thread::hardware_concurrency(); ++c) CPU_SET(c, &all);
    pthread_setaffinity_np(pthread_self(), sizeof(all), &all);
  }
  munmap(rec, rec_len);
  munmap(pos, page);
  ring->reset();
  close(rec_fd);
  close(pos_fd);
}
BENCHMARK(BM_PerCpuDrainAndDecode)
    ->ArgNames({"slots", "cross_core"})
    ->ArgsProduct({{4096, 65536}, {0, 1}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
}  // namespace kspan

BENCHMARK_MAIN();
