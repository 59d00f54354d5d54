// At-least-once from acceptance (issue #18): with a disk queue and the
// backend down, every span the agent answered with success survives kill -9
// at random points while spans flow in, and arrives once the backend is up;
// duplicates stay under 1 %. And a (scaled-down) outage at a steady rate:
// nothing lost, the agent's memory bounded. The real kspan binary, kspan's
// own OTLP/gRPC and OTLP/HTTP clients, a real gRPC collector
// (tests/privileged/durable_soak.h; the full-size runs are
// tests/benchmarks/durable_soak.cpp, results in docs/benchmarks.md).
#include <gtest/gtest.h>

#include "tests/privileged/durable_soak.h"
#include "tests/privileged/privileged.h"

namespace kspan::testing {
namespace {

TEST(DurableAcceptanceE2e, KillNineWhileBackendDownLosesNoAcceptedSpan) {
  KSPAN_REQUIRE_BPF();
  SoakOptions o;
  o.iterations = 20;
  o.min_run = std::chrono::milliseconds(100);
  o.max_run = std::chrono::milliseconds(1200);
  o.rate = 3000;
  DurableSoak soak(o);
  const SoakResult r = soak.Run();
  ASSERT_TRUE(r.note.empty()) << r.note;
  RecordProperty("accepted", std::to_string(r.accepted));
  RecordProperty("duplicates", std::to_string(r.duplicates));
  EXPECT_GT(r.accepted, 1000u) << "too few spans accepted for the test to mean anything";
  EXPECT_EQ(r.lost, 0u) << r.lost << " of " << r.accepted << " accepted spans never arrived (drain "
                        << r.drain_seconds << " s)";
  EXPECT_LT(r.duplicate_ratio(), 0.01) << r.duplicates << " duplicates of " << r.received_distinct;
}

TEST(DurableAcceptanceE2e, OutageAtSteadyRateLosesNothingAndBoundsMemory) {
  KSPAN_REQUIRE_BPF();
  SoakOptions o;
  o.iterations = 0;
  o.outage = std::chrono::seconds(20);
  o.rate = 5000;
  o.spans_per_request = 100;
  DurableSoak soak(o);
  const SoakResult r = soak.Run();
  ASSERT_TRUE(r.note.empty()) << r.note;
  EXPECT_GT(r.accepted, 20u * 5000 / 2) << "the agent took less than half the offered load";
  EXPECT_EQ(r.lost, 0u);
  EXPECT_LT(r.duplicate_ratio(), 0.01);
  // Documented ceiling (docs/operations.md): the queues' byte bounds (64 MiB
  // batcher, 64 MiB destination memory queue) plus the receiver's in-flight
  // budget and the process's own footprint.
  EXPECT_LT(r.max_rss_kb, 400 * 1024) << "agent RSS " << r.max_rss_kb << " kB";
}

// The disk queue full while the backend is down: the receiver refuses with
// the OTLP answer that tells clients to retry (HTTP 503 / gRPC UNAVAILABLE),
// counted, and what it did accept still arrives.
TEST(DurableAcceptanceE2e, FullDiskQueueRefusesRetryablyAndLosesNothingAccepted) {
  KSPAN_REQUIRE_BPF();
  SoakOptions o;
  o.iterations = 0;
  o.outage = std::chrono::seconds(6);
  o.rate = 5000;
  o.spans_per_request = 100;
  o.disk_max_bytes = 512 * 1024;  // a few thousand spans
  DurableSoak soak(o);
  const SoakResult r = soak.Run();
  ASSERT_TRUE(r.note.empty()) << r.note;
  EXPECT_GT(r.accepted, 0u);
  EXPECT_LT(r.accepted, 6u * 5000 / 2) << "the small disk queue should have filled";
  EXPECT_GT(r.refused_requests, 0u) << "no request was answered 503 / UNAVAILABLE by kspan";
  EXPECT_GT(r.persist_refused_spans, 0) << "refusals not counted";
  EXPECT_EQ(r.lost, 0u) << r.lost << " of " << r.accepted << " accepted spans never arrived";
}

}  // namespace
}  // namespace kspan::testing
