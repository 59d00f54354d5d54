// The full-size at-least-once runs of issue #18 (the CI test,
// tests/privileged/durable_acceptance_e2e_test.cpp, runs them scaled down):
//
//   kspan_durable_soak kill9 [iterations=100] [spans_per_second=5000]
//       kill -9 at random points while spans flow and the backend is down,
//       restart on the same state; then the backend comes up.
//   kspan_durable_soak outage [seconds=600] [spans_per_second=20000]
//       one agent, backend down for the whole time at a steady rate, its RSS
//       sampled; then kill -9 and the backend comes up.
//
// Prints what was accepted, lost, duplicated and the agent's largest RSS;
// exits 1 when an accepted span was lost or duplicates reach 1 %. Needs root
// (the agent loads its BPF programs). Results: docs/benchmarks.md.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/privileged/durable_soak.h"

int main(int argc, char** argv) {
  using namespace kspan::testing;
  const std::string mode = argc > 1 ? argv[1] : "kill9";
  SoakOptions o;
  if (mode == "kill9") {
    o.iterations = argc > 2 ? std::atoi(argv[2]) : 100;
    o.rate = argc > 3 ? std::atoi(argv[3]) : 5000;
    o.drain_timeout = std::chrono::seconds(900);
    o.min_run = std::chrono::milliseconds(100);
    o.max_run = std::chrono::milliseconds(1500);
  } else if (mode == "outage") {
    o.iterations = 0;
    o.outage = std::chrono::seconds(argc > 2 ? std::atoi(argv[2]) : 600);
    o.rate = argc > 3 ? std::atoi(argv[3]) : 20000;
    o.spans_per_request = 200;
    o.senders = 4;
    o.disk_max_bytes = 8ull << 30;
    o.drain_timeout = std::chrono::seconds(1800);
  } else {
    std::fprintf(stderr, "usage: %s kill9 [iterations] [spans_per_second] | outage [seconds] [spans_per_second]\n",
                 argv[0]);
    return 2;
  }
  DurableSoak soak(o);
  const auto t0 = std::chrono::steady_clock::now();
  const SoakResult r = soak.Run([](const std::string& line) {
    std::fprintf(stderr, "%s\n", line.c_str());
  });
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!r.note.empty()) {
    std::fprintf(stderr, "failed: %s\n", r.note.c_str());
    return 1;
  }
  std::printf(
      "mode=%s accepted=%llu refused_requests=%llu failed_requests=%llu received=%llu "
      "distinct=%llu lost=%llu duplicates=%llu (%.3f%%) max_rss=%lld kB drain=%.1fs total=%.1fs\n",
      mode.c_str(), static_cast<unsigned long long>(r.accepted),
      static_cast<unsigned long long>(r.refused_requests),
      static_cast<unsigned long long>(r.failed_requests),
      static_cast<unsigned long long>(r.received),
      static_cast<unsigned long long>(r.received_distinct),
      static_cast<unsigned long long>(r.lost), static_cast<unsigned long long>(r.duplicates),
      100.0 * r.duplicate_ratio(), static_cast<long long>(r.max_rss_kb), r.drain_seconds, secs);
  return r.lost == 0 && r.duplicate_ratio() < 0.01 ? 0 : 1;
}
