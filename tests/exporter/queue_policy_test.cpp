// Queue policy: bytes bound and priority drops, circuit breaker, requests in
// flight, dead letters and their replay, and the memory queue's exact
// accounting across a backend outage.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <thread>

#include "exporter/dead_letter_store.h"
#include "exporter/destination_queue.h"
#include "exporter/dlq_commands.h"
#include "exporter/export_metrics.h"
#include "exporter/otlp_grpc_sender.h"
#include "exporter/otlp_http_sender.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "tests/exporter/fake_sender.h"
#include "tests/exporter/test_spans.h"
#include "tests/support/otlp_http_test_server.h"
#include "tests/support/otlp_test_server.h"

namespace kspan {
namespace {

using std::chrono::milliseconds;
using testing::FakeSender;
using testing::MakeSpan;

std::shared_ptr<SpanBatch> Batch(int first, int n, bool high = false) {
  auto b = std::make_shared<SpanBatch>();
  for (int i = 0; i < n; ++i) {
    Span s = MakeSpan(first + i);
    if (high) s.source = SpanSource::kApp;
    b->approx_bytes += s.ApproximateBytes();
    b->spans.push_back(std::move(s));
  }
  return b;
}

std::string TempDir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() /
           ("kspan-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}

RetryOptions Fast() {
  return {.initial_backoff = milliseconds(5), .max_backoff = milliseconds(20), .multiplier = 2,
          .max_elapsed = milliseconds(60000)};
}

std::uint64_t Dropped(MetricsRegistry& m, const std::string& reason) {
  return m.CounterValue(metric::kSpansDropped, {{"destination", "d"}, {"reason", reason}});
}

TEST(QueuePolicyTest, BytesBoundDropsKernelSpansBeforeAppAndErrorSpans) {
  MetricsRegistry m;
  auto state = std::make_shared<FakeSender::State>();
  state->block = true;
  const std::size_t span_bytes = MakeSpan(1).ApproximateBytes();
  DestinationQueue::Options o;
  o.name = "d";
  o.retry = Fast();
  o.max_queued_batches = 100;
  o.max_queued_bytes = span_bytes * 10;  // room for ~10 spans
  DestinationQueue q(o, std::make_unique<FakeSender>(state), m);
  q.Enqueue(Batch(0, 1));  // taken by the hanging sender
  ASSERT_TRUE(state->WaitForSends(1, milliseconds(5000)));
  EXPECT_TRUE(q.Enqueue(Batch(10, 8)));           // 8 kernel spans: fits
  EXPECT_TRUE(q.Enqueue(Batch(20, 2, true)));     // 2 app spans: fits (10)
  // 4 more app spans: 4 queued kernel spans make room.
  auto mixed = Batch(30, 4, true);
  Span err = MakeSpan(40);
  err.status_code = StatusCode::kError;
  auto with_error = Batch(50, 2);  // 2 kernel spans, low priority
  with_error->spans.push_back(err);
  with_error->approx_bytes += err.ApproximateBytes();
  // The queued kernel batch (8 spans) makes room for the app spans.
  EXPECT_TRUE(q.Enqueue(mixed));
  EXPECT_EQ(Dropped(m, "destination_queue_full"), 8u);
  EXPECT_TRUE(q.Enqueue(with_error));  // 9 spans queued now
  // Full: the incoming kernel spans go first, queued app/error spans stay.
  EXPECT_FALSE(q.Enqueue(Batch(60, 5)));
  EXPECT_EQ(Dropped(m, "destination_queue_full"), 13u);
  EXPECT_LE(q.queued_bytes(), o.max_queued_bytes);
  const std::uint64_t low = m.CounterValue(metric::kQueueEvicted, {{"destination", "d"}, {"priority", "low"}});
  const std::uint64_t high = m.CounterValue(metric::kQueueEvicted, {{"destination", "d"}, {"priority", "high"}});
  EXPECT_EQ(high, 0u);
  EXPECT_EQ(low, Dropped(m, "destination_queue_full"));
  EXPECT_EQ(low, 13u);
  state->Unblock();
  q.BeginShutdown(std::chrono::steady_clock::now() + milliseconds(2000));
  q.Join();
  // Every app span and the error span was delivered.
  const auto exported = m.CounterValue(metric::kSpansExported, {{"destination", "d"}});
  EXPECT_EQ(exported + low, 1u + 8 + 2 + 4 + 3 + 5);
  EXPECT_EQ(exported, 10u);  // the first batch, every app span and the error span
}

TEST(QueuePolicyTest, CircuitBreakerOpensProbesAndCloses) {
  MetricsRegistry m;
  auto state = std::make_shared<FakeSender::State>();
  for (int i = 0; i < 3; ++i) state->Push(ExportResult::Retryable("UNAVAILABLE", "down"));
  // The first probe fails, the second succeeds.
  state->Push(ExportResult::Retryable("UNAVAILABLE", "down"));
  DestinationQueue::Options o;
  o.name = "d";
  o.retry = Fast();
  o.circuit_breaker = {.enabled = true, .failure_threshold = 3, .open_duration = milliseconds(200)};
  DestinationQueue q(o, std::make_unique<FakeSender>(state), m);
  const auto t0 = std::chrono::steady_clock::now();
  q.Enqueue(Batch(0, 5));
  ASSERT_TRUE(state->WaitForSends(6, milliseconds(5000)));
  q.BeginShutdown(std::chrono::steady_clock::now() + milliseconds(3000));
  q.Join();
  std::lock_guard lock(state->mu);
  // 3 failed sends of the batch, then empty probes, then the batch again.
  ASSERT_GE(state->sent_sizes.size(), 6u);
  EXPECT_EQ(state->sent_sizes[3], 0u);  // probe, not a full batch
  EXPECT_EQ(state->sent_sizes[4], 0u);  // probe again after open_duration
  EXPECT_EQ(state->sent_sizes[5], 5u);
  EXPECT_GE(state->sent_at[4] - state->sent_at[3], milliseconds(190));
  EXPECT_GE(state->sent_at[5] - t0, milliseconds(390));
  EXPECT_EQ(m.CounterValue(metric::kCircuitProbes, {{"destination", "d"}}), 2u);
  EXPECT_EQ(m.CounterValue(metric::kCircuitTransitions, {{"destination", "d"}, {"to", "open"}}), 2u);
  EXPECT_EQ(m.CounterValue(metric::kSpansExported, {{"destination", "d"}}), 5u);
  EXPECT_EQ(q.circuit_state(), DestinationQueue::CircuitState::kClosed);
}

TEST(QueuePolicyTest, NRequestsInFlight) {
  MetricsRegistry m;
  auto state = std::make_shared<FakeSender::State>();
  state->block = true;
  std::vector<std::unique_ptr<SpanSender>> senders;
  for (int i = 0; i < 3; ++i) senders.push_back(std::make_unique<FakeSender>(state));
  DestinationQueue::Options o;
  o.name = "d";
  DestinationQueue q(o, std::move(senders), m);
  for (int i = 0; i < 4; ++i) q.Enqueue(Batch(i * 10, 1));
  // Three sends are in flight at once, the fourth waits.
  EXPECT_TRUE(state->WaitForSends(3, milliseconds(5000)));
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_EQ(state->sends(), 3u);
  state->Unblock();
  q.BeginShutdown(std::chrono::steady_clock::now() + milliseconds(2000));
  q.Join();
  EXPECT_EQ(m.CounterValue(metric::kSpansExported, {{"destination", "d"}}), 4u);
}

TEST(QueuePolicyTest, PermanentFailuresAndExhaustedRetriesGoToTheDeadLetterStore) {
  const auto dir = TempDir("dlq");
  MetricsRegistry m;
  auto state = std::make_shared<FakeSender::State>();
  state->Push(ExportResult::Permanent("INVALID_ARGUMENT", "bad span"));
  for (int i = 0; i < 100; ++i) state->Push(ExportResult::Retryable("UNAVAILABLE", "down"));
  DestinationQueue::Options o;
  o.name = "d";
  o.retry = Fast();
  o.retry.max_elapsed = milliseconds(100);
  o.dead_letter = {.enabled = true, .path = dir + "/dlq.db", .max_bytes = 1 << 20};
  {
    DestinationQueue q(o, std::make_unique<FakeSender>(state), m);
    q.Enqueue(Batch(0, 3));
    q.Enqueue(Batch(10, 4));
    q.BeginShutdown(std::chrono::steady_clock::now() + milliseconds(3000));
    q.Join();
  }
  EXPECT_EQ(m.CounterValue(metric::kDeadLettered, {{"destination", "d"}, {"reason", "permanent_error"}}), 3u);
  EXPECT_EQ(m.CounterValue(metric::kDeadLettered, {{"destination", "d"}, {"reason", "retry_exhausted"}}), 4u);
  auto a = ReadAccounting(m, "d");
  EXPECT_EQ(a.dropped_total(), 0u);

  // `kspan dlq list` and `replay` to a real OTLP/HTTP server.
  testing::OtlpHttpTestServer server;
  ExportConfig config;
  DestinationConfig d;
  d.name = "d";
  d.type = DestinationType::kOtlpHttp;
  d.otlp_grpc.endpoint = server.base_url();
  d.otlp_grpc.protocol = "http/protobuf";
  d.dead_letter = o.dead_letter;
  config.destinations.push_back(d);
  char* buf = nullptr;
  std::size_t len = 0;
  std::FILE* out = open_memstream(&buf, &len);
  ASSERT_TRUE(DlqList(config, out).ok());
  std::fflush(out);
  const std::string listing(buf, len);
  EXPECT_NE(listing.find("permanent_error"), std::string::npos);
  EXPECT_NE(listing.find("retry_exhausted"), std::string::npos);
  EXPECT_NE(listing.find("2 dead letter(s)"), std::string::npos);
  server.PushResponse({.status = 400});  // the first replay is refused again: kept
  auto summary = DlqReplay(config, "d", out, ProcessEnv());
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->batches_sent, 1u);
  EXPECT_EQ(summary->batches_failed, 1u);
  summary = DlqReplay(config, "", out, ProcessEnv());
  ASSERT_TRUE(summary.ok());
  EXPECT_EQ(summary->batches_sent, 1u);
  EXPECT_EQ(server.spans().size(), 7u);
  EXPECT_FALSE(DlqReplay(config, "nope", out, ProcessEnv()).ok());
  std::fclose(out);
  std::free(buf);
  auto store = DeadLetterStore::Open(o.dead_letter.path, o.dead_letter.max_bytes);
  ASSERT_TRUE(store.ok());
  EXPECT_TRUE((*store)->List()->empty());
}

TEST(QueuePolicyTest, DeadLetterStoreIsBoundedOldestEvicted) {
  const auto dir = TempDir("dlqbound");
  auto store = DeadLetterStore::Open(dir + "/dlq.db", 1000);
  ASSERT_TRUE(store.ok());
  DeadLetter meta{.destination = "d", .reason = "permanent_error", .spans = 1};
  for (int i = 0; i < 5; ++i) ASSERT_TRUE((*store)->Put(meta, std::string(300, 'a' + i)).ok());
  auto list = (*store)->List();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 3u);
  EXPECT_LE((*store)->bytes(), 1000u);
  EXPECT_EQ(*(*store)->Load(list->back().id), std::string(300, 'e'));
  EXPECT_FALSE((*store)->Put(meta, std::string(2000, 'x')).ok());
}

// Backend down for a while under steady load, memory queue: what is lost
// equals the counted drops exactly.
TEST(QueuePolicyTest, OutageWithMemoryQueueLosesExactlyTheCountedDrops) {
  testing::OtlpHttpTestServer server;
  for (int i = 0; i < 15; ++i) server.PushResponse({.status = 503});
  MetricsRegistry m;
  OtlpGrpcOptions h;
  h.endpoint = server.base_url();
  h.protocol = "http/protobuf";
  DestinationQueue::Options o;
  o.name = "d";
  o.retry = Fast();
  o.max_queued_batches = 5;
  auto sender = OtlpHttpSender::Create(h);
  ASSERT_TRUE(sender.ok());
  DestinationQueue q(o, *std::move(sender), m);
  int submitted = 0;
  for (int i = 0; i < 40; ++i) {
    q.Enqueue(Batch(i * 10, 10));
    submitted += 10;
    std::this_thread::sleep_for(milliseconds(5));
  }
  q.BeginShutdown(std::chrono::steady_clock::now() + milliseconds(5000));
  q.Join();
  const auto a = ReadAccounting(m, "d");
  EXPECT_GT(a.dropped_total(), 0u);
  // Unique spans the receiver got + counted drops == submitted.
  std::set<std::int64_t> ids;
  for (const auto& s : server.spans()) ids.insert(s.Attribute("span.index")->int_value());
  EXPECT_EQ(ids.size(), a.exported);
  EXPECT_EQ(ids.size() + a.dropped_total(), static_cast<std::size_t>(submitted));
}

// gRPC throttling through the queue and a real server: RetryInfo asks for
// 1.5 s while max_backoff is 50 ms; the batch waits, then is delivered.
TEST(QueuePolicyTest, GrpcRetryInfoIsHonouredBeyondTheBackoffCap) {
  testing::OtlpTestServer server;
  google::rpc::RetryInfo info;
  info.mutable_retry_delay()->set_seconds(1);
  info.mutable_retry_delay()->set_nanos(500'000'000);
  google::rpc::Status details;
  details.set_code(static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
  details.add_details()->PackFrom(info);
  server.PushStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "slow down",
                                 details.SerializeAsString()));
  MetricsRegistry m;
  OtlpGrpcOptions g;
  g.endpoint = server.endpoint();
  auto sender = OtlpGrpcSender::Create(g);
  ASSERT_TRUE(sender.ok());
  DestinationQueue::Options o;
  o.name = "d";
  o.retry = Fast();
  o.retry.max_backoff = milliseconds(50);
  DestinationQueue q(o, *std::move(sender), m);
  const auto t0 = std::chrono::steady_clock::now();
  q.Enqueue(Batch(0, 2));
  ASSERT_TRUE(server.WaitForSpanCount(2, milliseconds(5000)));
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, milliseconds(1450));
  EXPECT_LT(waited, milliseconds(3000));
  EXPECT_EQ(server.export_calls(), 2);
  q.BeginShutdown(std::chrono::steady_clock::now() + milliseconds(1000));
  q.Join();
}

}  // namespace
}  // namespace kspan
