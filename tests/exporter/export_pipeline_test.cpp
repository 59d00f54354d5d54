#include "exporter/export_pipeline.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "exporter/disk_queue.h"
#include "exporter/export_metrics.h"
#include "nlohmann/json.hpp"
#include "tests/exporter/test_spans.h"
#include "tests/support/otlp_test_server.h"
#include "tests/support/process_memory.h"

namespace kspan {
namespace {

using std::chrono::milliseconds;
using testing::MakeSpan;

DestinationConfig GrpcDestination(const std::string& name, const std::string& endpoint) {
  DestinationConfig d;
  d.name = name;
  d.type = DestinationType::kOtlpGrpc;
  d.otlp_grpc.endpoint = endpoint;
  d.retry = {.initial_backoff = milliseconds(10), .max_backoff = milliseconds(50),
             .multiplier = 2.0, .max_elapsed = milliseconds(5000)};
  return d;
}

TEST(ExportPipelineTest, CreateRejectsBadConfigs) {
  MetricsRegistry metrics;
  ExportConfig none;
  EXPECT_FALSE(ExportPipeline::Create(none, metrics).ok());

  ExportConfig twice;
  twice.destinations = {GrpcDestination("a", "http://127.0.0.1:1"),
                        GrpcDestination("a", "http://127.0.0.1:2")};
  auto dup = ExportPipeline::Create(twice, metrics);
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("'a'"), std::string::npos);

  ExportConfig bad_endpoint;
  bad_endpoint.destinations = {GrpcDestination("c", "ftp://x:1")};
  auto bad = ExportPipeline::Create(bad_endpoint, metrics);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("destination 'c'"), std::string::npos);

  ExportConfig zero_batch;
  zero_batch.batch.max_export_batch_size = 0;
  zero_batch.destinations = {GrpcDestination("d", "http://127.0.0.1:1")};
  EXPECT_FALSE(ExportPipeline::Create(zero_batch, metrics).ok());
}

TEST(ExportPipelineTest, FansOutEveryBatchToEveryDestination) {
  namespace fs = std::filesystem;
  const fs::path file = fs::temp_directory_path() /
                        ("kspan-pipeline-" + std::to_string(::getpid())) / "spans.jsonl";
  fs::remove_all(file.parent_path());
  testing::OtlpTestServer server;
  MetricsRegistry metrics;
  ExportConfig config;
  config.batch = {.max_export_batch_size = 8, .schedule_delay = milliseconds(20),
                  .max_queue_size = 1000};
  config.destinations.push_back(GrpcDestination("collector", server.endpoint()));
  DestinationConfig store;
  store.name = "local";
  store.type = DestinationType::kFile;
  store.file.path = file.string();
  config.destinations.push_back(store);

  auto pipeline = ExportPipeline::Create(config, metrics);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  for (int i = 0; i < 30; ++i) ASSERT_TRUE((*pipeline)->Submit(MakeSpan(i)));
  (*pipeline)->Shutdown(milliseconds(5000));
  (*pipeline)->Shutdown(milliseconds(5000));  // idempotent

  EXPECT_EQ(server.spans().size(), 30u);
  std::size_t in_file = 0;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    const auto doc = nlohmann::json::parse(line);
    for (const auto& rs : doc.at("resourceSpans")) {
      for (const auto& ss : rs.at("scopeSpans")) in_file += ss.at("spans").size();
    }
  }
  EXPECT_EQ(in_file, 30u);
  for (const char* d : {"collector", "local"}) {
    const auto a = ReadAccounting(metrics, d);
    EXPECT_EQ(a.exported, 30u) << d;
    EXPECT_TRUE(a.Balanced()) << d;
  }
  const std::string text = metrics.RenderPrometheus();
  EXPECT_NE(text.find("kspan_exporter_spans_exported_total{destination=\"local\"} 30"),
            std::string::npos);
  EXPECT_NE(text.find("kspan_exporter_spans_submitted_total 30"), std::string::npos);
  EXPECT_NE(text.find("kspan_exporter_destination_queue_batches{destination=\"collector\"} 0"),
            std::string::npos);
  EXPECT_FALSE((*pipeline)->Submit(MakeSpan(99)));  // after shutdown
  EXPECT_TRUE(ReadAccounting(metrics, "collector").Balanced());
  fs::remove_all(file.parent_path());
}

TEST(ExportPipelineTest, OneDeadDestinationDoesNotHoldBackAnother) {
  testing::OtlpTestServer live;
  int dead_port = 0;
  {
    testing::OtlpTestServer gone;
    dead_port = gone.port();
  }
  MetricsRegistry metrics;
  ExportConfig config;
  config.batch = {.max_export_batch_size = 5, .schedule_delay = milliseconds(10),
                  .max_queue_size = 1000};
  config.destinations = {GrpcDestination("live", live.endpoint()),
                         GrpcDestination("dead", "http://127.0.0.1:" + std::to_string(dead_port))};
  config.destinations[1].max_queued_batches = 2;
  auto pipeline = ExportPipeline::Create(config, metrics);
  ASSERT_TRUE(pipeline.ok());
  for (int i = 0; i < 100; ++i) (*pipeline)->Submit(MakeSpan(i));
  EXPECT_TRUE(live.WaitForSpanCount(100, milliseconds(10'000)));
  (*pipeline)->Shutdown(milliseconds(100));
  const auto live_a = ReadAccounting(metrics, "live");
  const auto dead_a = ReadAccounting(metrics, "dead");
  EXPECT_EQ(live_a.exported, 100u);
  EXPECT_EQ(dead_a.exported, 0u);
  EXPECT_GT(dead_a.dropped.at("destination_queue_full"), 0u);
  EXPECT_TRUE(live_a.Balanced());
  EXPECT_TRUE(dead_a.Balanced());
}


// The attack as reported: 100 requests of one span whose resource holds a
// 3 MiB attribute, the destination down. Resident memory went from 77 to
// 602 MiB while kspan_exporter_destination_queue_bytes read 29 000: the
// queues counted spans without their resources. Now the queue's byte bound
// counts the resources, and holds.
TEST(ExportPipelineMemoryTest, LargeResourcesAreCountedAndBoundedWhileTheDestinationIsDown) {
  constexpr std::size_t kMiB = 1 << 20;
  constexpr std::size_t kBlob = 3 * kMiB;
  MetricsRegistry metrics;
  ExportConfig config;
  // One span a batch: what the queue holds is then counted in whole spans.
  config.batch = {.max_export_batch_size = 1, .schedule_delay = milliseconds(5),
                  .max_queue_size = 2048};
  auto down = GrpcDestination("down", "http://127.0.0.1:1");  // nothing listens
  down.retry.max_elapsed = milliseconds(60000);
  down.queue.max_bytes = 16 * kMiB;
  down.dead_letter.enabled = false;
  config.destinations.push_back(down);
  auto pipeline = ExportPipeline::Create(config, metrics);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();

  testing::ResetPeakMemory();
  const auto before = testing::ReadMemory();
  for (int i = 0; i < 100; ++i) {
    Span s = MakeSpan(i, std::make_shared<const Resource>(
                             Resource{{{"service.name", std::string("big")},
                                       {"blob", std::string(kBlob, static_cast<char>('a' + i % 26))}}}));
    s.source = SpanSource::kApp;
    std::vector<Span> request;
    request.push_back(std::move(s));
    (*pipeline)->SubmitBatch(std::move(request));
    std::this_thread::sleep_for(milliseconds(2));
  }
  std::this_thread::sleep_for(milliseconds(200));
  const std::size_t growth = testing::PeakGrowthSince(before);
  const auto bytes = metrics.GaugeValue(metric::kQueueBytes, {{"destination", "down"}});
  const auto spans = metrics.GaugeValue(metric::kQueueSpans, {{"destination", "down"}});
  // The gauge says what the queue holds: every span in memory with its
  // 3 MiB (one more span may be in flight, not in memory's count).
  EXPECT_LE(bytes, static_cast<double>(down.queue.max_bytes));
  EXPECT_GE(bytes, static_cast<double>(kBlob) * std::max(0.0, spans - 1)) << spans << " spans";
  EXPECT_GE(spans, 2.0);
  // The bound (16 MiB), a span in flight, the batcher's and the test's
  // transient copies. Was 100 x 3 MiB.
  EXPECT_RSS_LT(growth, 64 * kMiB) << growth / kMiB << " MiB";
  // What did not fit was dropped, counted, high priority (app spans).
  EXPECT_GT(metrics.CounterValue(metric::kSpansDropped,
                                 {{"destination", "down"}, {"reason", "destination_queue_full"}}),
            80u);
  (*pipeline)->Shutdown(milliseconds(0));
  EXPECT_TRUE(ReadAccounting(metrics, "down").Balanced());
}


// At-least-once from acceptance: with a disk queue, a request's spans are
// committed before SubmitBatch returns (the batcher's delay would leave them
// in memory for an hour here), and each destination gets them once.
std::vector<Span> AppSpans(int first, int n) {
  std::vector<Span> spans;
  for (int i = first; i < first + n; ++i) {
    Span s = MakeSpan(i);
    s.source = SpanSource::kApp;
    spans.push_back(std::move(s));
  }
  return spans;
}

std::size_t SpansOnDisk(const std::string& path) {
  auto q = DiskQueue::Open({.enabled = true, .path = path});
  if (!q.ok()) return 0;
  auto rows = (*q)->List();
  std::size_t n = 0;
  if (rows.ok()) {
    for (const auto& r : *rows) n += r.spans;
  }
  return n;
}

std::string FreshDir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("kspan-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

TEST(ExportPipelineDurableTest, AppSpansAreOnDiskBeforeTheyAreAccepted) {
  const std::string dir = FreshDir("durable");
  MetricsRegistry metrics;
  ExportConfig config;
  config.batch = {.max_export_batch_size = 512, .schedule_delay = std::chrono::hours(1),
                  .max_queue_size = 1000};
  DestinationConfig down = GrpcDestination("down", "http://127.0.0.1:1");
  down.queue.disk = {.enabled = true, .path = dir + "/down.db"};
  config.destinations.push_back(down);
  DestinationConfig store;
  store.name = "local";
  store.type = DestinationType::kFile;
  store.file.path = dir + "/spans.jsonl";
  config.destinations.push_back(store);
  auto pipeline = ExportPipeline::Create(config, metrics);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();

  ASSERT_EQ((*pipeline)->SubmitBatch(AppSpans(0, 40)), SubmitResult::kAccepted);
  ASSERT_EQ((*pipeline)->SubmitBatch(AppSpans(40, 10)), SubmitResult::kAccepted);
  // Read through a connection of its own, as the next start would.
  EXPECT_EQ(SpansOnDisk(dir + "/down.db"), 50u);
  // Kernel spans still go through the batcher (and its delay).
  ASSERT_TRUE((*pipeline)->Submit(MakeSpan(100)));
  (*pipeline)->Shutdown(milliseconds(300));

  // Once on the disk destination (not again through the batcher), and once
  // to the destination without a disk queue.
  EXPECT_EQ(SpansOnDisk(dir + "/down.db"), 51u);
  std::ifstream in(dir + "/spans.jsonl");
  std::size_t in_file = 0;
  for (std::string line; std::getline(in, line);) {
    const auto doc = nlohmann::json::parse(line);
    for (const auto& rs : doc.at("resourceSpans")) {
      for (const auto& ss : rs.at("scopeSpans")) in_file += ss.at("spans").size();
    }
  }
  EXPECT_EQ(in_file, 51u);
  const auto a = ReadAccounting(metrics, "down");
  EXPECT_EQ(a.submitted, 51u);
  EXPECT_EQ(a.kept_on_disk, 51u);
  EXPECT_EQ(ReadAccounting(metrics, "local").exported, 51u);
  std::filesystem::remove_all(dir);
}

TEST(ExportPipelineDurableTest, RequestTheDiskQueueCannotTakeIsRefusedAndCounted) {
  const std::string dir = FreshDir("durable-full");
  MetricsRegistry metrics;
  ExportConfig config;
  config.batch = {.max_export_batch_size = 512, .schedule_delay = milliseconds(20),
                  .max_queue_size = 1000};
  DestinationConfig down = GrpcDestination("down", "http://127.0.0.1:1");
  down.queue.disk = {.enabled = true, .path = dir + "/down.db", .max_bytes = 4000};
  config.destinations.push_back(down);
  auto pipeline = ExportPipeline::Create(config, metrics);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();

  int accepted = 0, refused = 0;
  for (int i = 0; i < 20; ++i) {
    auto spans = AppSpans(i * 10, 10);
    const auto r = (*pipeline)->SubmitBatch(std::move(spans));
    if (r == SubmitResult::kAccepted) {
      ++accepted;
    } else {
      ++refused;
      EXPECT_EQ(r, SubmitResult::kQueueFull);
    }
  }
  EXPECT_GT(accepted, 0);
  EXPECT_GT(refused, 0);
  // Exactly the accepted requests are on disk; the refused ones nowhere.
  EXPECT_EQ(SpansOnDisk(dir + "/down.db"), static_cast<std::size_t>(accepted) * 10);
  const auto text = metrics.RenderPrometheus();
  EXPECT_NE(text.find("kspan_exporter_disk_queue_persist_refused_spans_total{destination=\"down\","
                      "reason=\"full\"} " + std::to_string(refused * 10)),
            std::string::npos)
      << text;
  const auto a = ReadAccounting(metrics, "down");
  EXPECT_EQ(a.batcher_dropped, static_cast<std::uint64_t>(refused) * 10);
  (*pipeline)->Shutdown(milliseconds(100));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kspan
