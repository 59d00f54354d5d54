// The disk queue: persisted before accepted, recovered after a restart,
// bounded, degraded (not dead) when the disk refuses, and the real thing:
// kill -9 of a process exporting through it.
#include "exporter/disk_queue.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include "exporter/destination_queue.h"
#include "exporter/export_metrics.h"
#include "exporter/otlp_grpc_sender.h"
#include "tests/exporter/fake_sender.h"
#include "tests/exporter/test_spans.h"
#include "tests/support/otlp_test_server.h"

namespace kspan {
namespace {

using std::chrono::milliseconds;
using testing::FakeSender;
using testing::MakeSpan;

std::string TempDir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() /
           ("kspan-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}

std::shared_ptr<SpanBatch> Batch(int first, int n) {
  auto b = std::make_shared<SpanBatch>();
  for (int i = 0; i < n; ++i) b->spans.push_back(MakeSpan(first + i));
  return b;
}

DestinationQueue::Options DiskOptions(const std::string& dir) {
  DestinationQueue::Options o;
  o.name = "d";
  o.retry = {.initial_backoff = milliseconds(5), .max_backoff = milliseconds(20), .multiplier = 2,
             .max_elapsed = milliseconds(0)};
  o.max_queued_batches = 4;  // memory: small; the disk holds the backlog
  o.disk = {.enabled = true, .path = dir + "/q.db", .max_bytes = 64u << 20,
            .fsync = FsyncPolicy::kFull};
  return o;
}

// Backend down: `batches` batches of 5 spans are written to the disk queue
// at `dir`, then the queue stops with them kept there.
void LeaveOnDisk(const std::string& dir, int batches, MetricsRegistry& m) {
  auto down = std::make_shared<FakeSender::State>();
  for (int i = 0; i < 100000; ++i) down->Push(ExportResult::Retryable("UNAVAILABLE", "down"));
  DestinationQueue q(DiskOptions(dir), std::make_unique<FakeSender>(down), m);
  for (int i = 0; i < batches; ++i) EXPECT_TRUE(q.Enqueue(Batch(i * 5, 5)));
  ASSERT_TRUE(q.WaitPersisted(milliseconds(5000)));
  q.BeginShutdown(std::chrono::steady_clock::now() + milliseconds(200));
  q.Join();
}

TEST(DiskQueueTest, AppendListLoadRemove) {
  const auto dir = TempDir("dq");
  auto q = DiskQueue::Open({.enabled = true, .path = dir + "/q.db", .max_bytes = 1000});
  ASSERT_TRUE(q.ok()) << q.status();
  auto ids = (*q)->Append({{"aaa", 1}, {"bbbb", 2}});
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ((*q)->bytes(), 7u);
  ASSERT_TRUE((*q)->MarkAttempted((*ids)[0]).ok());
  auto rows = (*q)->List();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].attempts, 1);
  EXPECT_EQ((*rows)[1].spans, 2u);
  EXPECT_EQ(*(*q)->Load((*ids)[1]), "bbbb");
  ASSERT_TRUE((*q)->Remove((*ids)[0], 3).ok());
  EXPECT_EQ((*q)->batches(), 1u);
  // Bounded by bytes: refused whole, nothing stored.
  auto full = (*q)->Append({{std::string(2000, 'x'), 1}});
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*q)->batches(), 1u);
}

// Backend down, then the process stops (deadline): everything stays on disk
// and the next instance delivers it. Nothing is dropped.
TEST(DiskQueueTest, ShutdownKeepsTheRestOnDiskAndTheNextStartSendsIt) {
  const auto dir = TempDir("dq-restart");
  MetricsRegistry m1;
  LeaveOnDisk(dir, 20, m1);  // 20 batches > 4 in memory
  auto a = ReadAccounting(m1, "d");
  EXPECT_EQ(a.dropped_total(), 0u);
  EXPECT_EQ(a.kept_on_disk, 100u);
  EXPECT_EQ(m1.CounterValue(metric::kDiskPersistedSpans, {{"destination", "d"}}), 100u);

  MetricsRegistry m2;
  auto up = std::make_shared<FakeSender::State>();
  {
    DestinationQueue q(DiskOptions(dir), std::make_unique<FakeSender>(up), m2);
    ASSERT_TRUE(up->WaitForSpans(100, milliseconds(5000)));
    // The 20 recovered rows of 5 spans go out together (up to 512 spans an
    // export), not one round trip each.
    EXPECT_EQ(up->sends(), 1u);
    q.BeginShutdown(std::chrono::steady_clock::now() + milliseconds(2000));
    q.Join();
  }
  EXPECT_EQ(m2.CounterValue(metric::kDiskRecoveredSpans, {{"destination", "d"}}), 100u);
  EXPECT_EQ(m2.CounterValue(metric::kSpansExported, {{"destination", "d"}}), 100u);
  // The batch that was being retried when the first instance stopped had
  // been attempted: it is the possible duplicate.
  EXPECT_GE(m2.CounterValue(metric::kDiskResentBatches, {{"destination", "d"}}), 1u);
  auto b = ReadAccounting(m2, "d");
  EXPECT_TRUE(b.Balanced());
  auto q = DiskQueue::Open({.enabled = true, .path = dir + "/q.db"});
  EXPECT_EQ((*q)->batches(), 0u);
}

// The rows a restart finds are gathered into exports no larger than the
// configured span and byte caps, and every span arrives once.
TEST(DiskQueueTest, RecoveredRowsAreCoalescedWithinTheSpanAndByteCaps) {
  const auto dir = TempDir("dq-coalesce");
  {
    MetricsRegistry m;
    LeaveOnDisk(dir, 20, m);
  }
  {
    // Span cap 12: two rows of 5 per export (a third would make 15).
    MetricsRegistry m;
    auto up = std::make_shared<FakeSender::State>();
    auto o = DiskOptions(dir);
    o.coalesce_max_spans = 12;
    DestinationQueue q(o, std::make_unique<FakeSender>(up), m);
    ASSERT_TRUE(up->WaitForSpans(100, milliseconds(5000)));
    q.BeginShutdown(std::chrono::steady_clock::now() + milliseconds(2000));
    q.Join();
    std::lock_guard lock(up->mu);
    for (std::size_t n : up->sent_sizes) EXPECT_LE(n, 12u);
    EXPECT_EQ(up->sent_sizes.size(), 10u);
    EXPECT_EQ(m.CounterValue(metric::kSpansExported, {{"destination", "d"}}), 100u);
    EXPECT_TRUE(ReadAccounting(m, "d").Balanced());
  }
  {
    MetricsRegistry m;
    LeaveOnDisk(dir, 6, m);
  }
  {
    // Byte cap below one row: every row alone, nothing lost.
    MetricsRegistry m;
    auto up = std::make_shared<FakeSender::State>();
    auto o = DiskOptions(dir);
    o.coalesce_max_bytes = 1;
    DestinationQueue q(o, std::make_unique<FakeSender>(up), m);
    ASSERT_TRUE(up->WaitForSpans(30, milliseconds(5000)));
    q.BeginShutdown(std::chrono::steady_clock::now() + milliseconds(2000));
    q.Join();
    std::lock_guard lock(up->mu);
    EXPECT_EQ(up->sent_sizes, std::vector<std::size_t>(6, 5));
  }
}

// Backend down for a while under steady load with the disk queue: nothing lost.
TEST(DiskQueueTest, OutageUnderLoadLosesNothing) {
  const auto dir = TempDir("dq-outage");
  testing::OtlpTestServer server;
  for (int i = 0; i < 30; ++i) server.PushStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "down"));
  MetricsRegistry m;
  OtlpGrpcOptions g;
  g.endpoint = server.endpoint();
  auto sender = OtlpGrpcSender::Create(g);
  ASSERT_TRUE(sender.ok());
  auto o = DiskOptions(dir);
  o.disk.fsync = FsyncPolicy::kNormal;
  int submitted = 0;
  {
    DestinationQueue q(o, *std::move(sender), m);
    for (int i = 0; i < 60; ++i) {
      q.Enqueue(Batch(i * 10, 10));
      submitted += 10;
      std::this_thread::sleep_for(milliseconds(5));
    }
    ASSERT_TRUE(server.WaitForSpans(
        [&](const auto& spans) {
          std::set<std::int64_t> ids;
          for (const auto& s : spans) ids.insert(s.Attribute("span.index")->int_value());
          return ids.size() == static_cast<std::size_t>(submitted);
        },
        milliseconds(10000)));
    q.BeginShutdown(std::chrono::steady_clock::now() + milliseconds(1000));
    q.Join();
  }
  const auto a = ReadAccounting(m, "d");
  EXPECT_EQ(a.dropped_total(), 0u);
  EXPECT_EQ(a.exported, static_cast<std::uint64_t>(submitted));
}

// An unwritable disk queue: the destination keeps running on memory, counts
// the refusals, says so.
TEST(DiskQueueTest, UnwritableDiskFallsBackToMemory) {
  MetricsRegistry m;
  auto state = std::make_shared<FakeSender::State>();
  auto o = DiskOptions("/proc/kspan-cannot-write-here");
  o.max_queued_batches = 64;
  DestinationQueue q(o, std::make_unique<FakeSender>(state), m);
  EXPECT_FALSE(q.disk_enabled());
  q.Enqueue(Batch(0, 3));
  ASSERT_TRUE(state->WaitForSends(1, milliseconds(5000)));
  q.BeginShutdown(std::chrono::steady_clock::now() + milliseconds(1000));
  q.Join();
  EXPECT_EQ(m.CounterValue(metric::kSpansExported, {{"destination", "d"}}), 3u);
  EXPECT_GE(m.CounterValue(metric::kDiskRejected, {{"destination", "d"}, {"reason", "error"}}), 1u);
}

// The disk queue's byte bound reached: new batches stay in memory (counted),
// nothing is lost while memory has room.
TEST(DiskQueueTest, FullDiskQueueKeepsAcceptingToMemory) {
  const auto dir = TempDir("dq-full");
  MetricsRegistry m;
  auto state = std::make_shared<FakeSender::State>();
  state->block = true;
  auto o = DiskOptions(dir);
  o.disk.max_bytes = 2000;  // about three batches
  o.max_queued_batches = 64;
  DestinationQueue q(o, std::make_unique<FakeSender>(state), m);
  for (int i = 0; i < 10; ++i) {
    EXPECT_TRUE(q.Enqueue(Batch(i * 5, 5)));
    q.WaitPersisted(milliseconds(2000));
  }
  EXPECT_GE(m.CounterValue(metric::kDiskRejected, {{"destination", "d"}, {"reason", "full"}}), 1u);
  state->Unblock();
  q.BeginShutdown(std::chrono::steady_clock::now() + milliseconds(3000));
  q.Join();
  EXPECT_EQ(m.CounterValue(metric::kSpansExported, {{"destination", "d"}}), 50u);
}

// kill -9 of a process exporting through the disk queue, then a restart:
// every span persisted (accepted) before the kill arrives at the receiver;
// duplicates are counted and reported.
TEST(DiskQueueCrashTest, KillNineThenRestartDeliversEveryAcceptedSpan) {
  const auto dir = TempDir("dq-kill9");
  testing::OtlpTestServer server;
  server.SetDefaultDelay(milliseconds(15));  // a slow backend: a backlog on disk

  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(pipe_fds[1], 1);
    close(pipe_fds[0]);
    execl(KSPAN_CRASH_HELPER, KSPAN_CRASH_HELPER, "produce", server.endpoint().c_str(),
          dir.c_str(), nullptr);
    _exit(127);
  }
  close(pipe_fds[1]);
  FILE* out = fdopen(pipe_fds[0], "r");
  std::uint64_t persisted = 0;
  char line[256];
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (persisted < 30000 && std::chrono::steady_clock::now() < until &&
         std::fgets(line, sizeof(line), out) != nullptr) {
    unsigned long long n = 0;
    ASSERT_NE(std::strncmp(line, "dropped", 7), 0) << line;
    if (std::sscanf(line, "persisted %llu", &n) == 1) persisted = n;
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  std::fclose(out);
  ASSERT_TRUE(WIFSIGNALED(status));
  ASSERT_GE(persisted, 30000u);
  const std::size_t before_restart = server.spans().size();
  server.SetDefaultDelay(milliseconds(0));

  const std::string cmd = std::string(KSPAN_CRASH_HELPER) + " drain " + server.endpoint() + " " + dir;
  FILE* drain = popen(cmd.c_str(), "r");
  ASSERT_NE(drain, nullptr);
  unsigned long long recovered = 0, resent = 0, exported = 0;
  while (std::fgets(line, sizeof(line), drain) != nullptr) {
    std::sscanf(line, "recovered %llu resent %llu exported %llu", &recovered, &resent, &exported);
  }
  ASSERT_EQ(pclose(drain), 0);

  std::map<std::int64_t, int> seen;
  for (const auto& s : server.spans()) ++seen[s.Attribute("span.index")->int_value()];
  std::uint64_t missing = 0, duplicates = 0;
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(persisted); ++i) {
    if (!seen.contains(i)) ++missing;
  }
  for (const auto& [i, n] : seen) duplicates += static_cast<std::uint64_t>(n - 1);
  std::cout << "kill -9 after " << persisted << " spans accepted (persisted); received "
            << before_restart << " before the kill; recovered " << recovered
            << " spans from disk, re-sent " << resent << " batches already attempted; "
            << "duplicates at the receiver: " << duplicates << "; missing: " << missing << "\n";
  RecordProperty("accepted", static_cast<int>(persisted));
  RecordProperty("duplicates", static_cast<int>(duplicates));
  RecordProperty("resent_batches", static_cast<int>(resent));
  EXPECT_EQ(missing, 0u);
  EXPECT_GT(recovered, 0u);
  EXPECT_EQ(exported, recovered);
  // Duplicates only come from batches that had been attempted (max 256 spans each).
  EXPECT_LE(duplicates, resent * 256);
}

}  // namespace
}  // namespace kspan
