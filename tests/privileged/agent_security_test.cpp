// The hardening of issue #18, end to end with the real kspan binary:
//   - everything under state_dir is its owner's only, files an older version
//     left readable included;
//   - bpf.pin_path must be a directory of kspan's own on bpffs.
// Every agent here pins under a directory of its own, so the tests run
// beside an agent that holds /sys/fs/bpf/kspan.

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "exporter/dead_letter_store.h"
#include "exporter/disk_queue.h"
#include "exporter/file_store_sender.h"
#include "exporter/otlp_transform.h"
#include "tests/exporter/test_spans.h"
#include "tests/privileged/agent_process.h"
#include "tests/privileged/privileged.h"

namespace kspan {
namespace {

using ::kspan::testing::AgentProcess;
using ::kspan::testing::MetricValue;

std::string PinDirForAgents() { return ::kspan::testing::TestPinDir() + "-agent"; }

// A config file in a fresh directory; the agent pins under its own path.
std::string WriteConfig(const std::string& dir, const std::string& yaml) {
  const std::string path = dir + "/kspan.yaml";
  std::ofstream(path) << "bpf: {pin_path: " << PinDirForAgents() << "}\n" << yaml;
  return path;
}

std::string TempDir(const char* name) {
  std::string tmpl = std::string("/tmp/kspan-") + name + "-XXXXXX";
  return mkdtemp(tmpl.data());
}

// Polls `done` (a condition on the agent's state) until it holds.
template <typename Pred>
bool WaitFor(Pred done, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done();
}

// ---------------------------------------------------------------------------
// state_dir is the owner's only.

// Every directory and file under `root` (the root too) whose mode has a
// group or other bit, with that mode.
std::vector<std::string> Loose(const std::string& root) {
  std::vector<std::string> loose;
  auto check = [&loose](const std::filesystem::path& p) {
    struct stat st {};
    if (lstat(p.c_str(), &st) != 0 || S_ISLNK(st.st_mode)) return;
    if ((st.st_mode & 077) != 0) {
      char mode[8];
      std::snprintf(mode, sizeof(mode), "%04o", st.st_mode & 07777);
      loose.push_back(p.string() + " " + mode);
    }
  };
  check(root);
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(root, ec)) check(e.path());
  return loose;
}

std::vector<std::string> Files(const std::string& root) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(root)) {
    out.push_back(e.path().string().substr(root.size()));
  }
  return out;
}

TEST(AgentSecurity, StateDirectoryIsOwnerOnlyAfterARunOfAnOlderVersion) {
  KSPAN_REQUIRE_BPF();
  const std::string dir = TempDir("state");
  const std::string state = dir + "/state";
  const int backend_port = ::kspan::testing::FreeLoopbackPort();  // nobody listens
  const std::string config = WriteConfig(
      dir, "state_dir: " + state + "\n" +
               "destinations:\n"
               "  - {name: local, type: file}\n"
               "  - name: backend\n"
               "    type: otlp_grpc\n"
               "    endpoint: http://127.0.0.1:" + std::to_string(backend_port) + "\n"
               "    queue: {disk: {enabled: true}}\n"
               "    retry: {initial_backoff: 100ms, max_backoff: 500ms, max_elapsed: 0}\n"
               "batch: {schedule_delay: 100ms}\n");

  // What an older version left: the same stores, killed while open (SQLite's
  // -wal and -shm stay), every directory 0755 and every file 0644.
  ::kspan::testing::ChildProcess older([&] {
    umask(022);
    FileStoreOptions fo;
    fo.path = state + "/spans/local.jsonl";
    auto file = FileStoreSender::Create(fo);
    SpanBatch batch;
    batch.spans = {::kspan::testing::MakeSpan(1)};
    if (!file.ok() || (*file)->Send(batch, SpanSender::Clock::now()).outcome !=
                          ExportResult::Outcome::kSuccess) {
      _exit(1);
    }
    DiskQueueOptions qo;
    qo.enabled = true;
    qo.path = state + "/queue/backend.db";
    auto queue = DiskQueue::Open(qo);
    const std::string payload = ToExportRequest(batch.spans).SerializeAsString();
    if (!queue.ok() || !(*queue)->Append({{payload, 1}}).ok()) _exit(2);
    auto dlq = DeadLetterStore::Open(state + "/dlq/backend.db", 1 << 20);
    if (!dlq.ok() || !(*dlq)->Put({.destination = "backend", .reason = "permanent_error",
                                   .code = "HTTP 400", .message = "old", .spans = 1},
                                  payload)
                          .ok()) {
      _exit(3);
    }
    _exit(0);  // as kill -9 would: nothing closed
  });
  ASSERT_TRUE(older.RunAndWait());
  for (const auto& e : std::filesystem::recursive_directory_iterator(state)) {
    ASSERT_EQ(chmod(e.path().c_str(), e.is_directory() ? 0755 : 0644), 0) << e.path();
  }
  ASSERT_EQ(chmod(state.c_str(), 0755), 0);
  for (const char* f : {"/queue/backend.db-wal", "/queue/backend.db-shm", "/dlq/backend.db-wal"}) {
    ASSERT_TRUE(std::filesystem::exists(state + f)) << f << " not left by the killed writer";
  }
  ASSERT_FALSE(Loose(state).empty());

  AgentProcess agent({"-c", config, "--no-console"}, state);
  ASSERT_TRUE(agent.WaitReady(std::chrono::seconds(60))) << agent.log();
  // Both destinations write while it runs: kernel spans (the test's own
  // connects to the admin port) go to the file and into the disk queue.
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::string m = agent.Metrics();
        return MetricValue(m, "kspan_exporter_spans_exported_total{destination=\"local\"}") > 0 &&
               MetricValue(m, "kspan_exporter_disk_queue_persisted_spans_total{destination=\"backend\"}") > 0;
      },
      std::chrono::seconds(60)))
      << agent.Metrics() << agent.log();
  EXPECT_TRUE(std::filesystem::exists(state + "/queue/backend.db-wal"));
  EXPECT_EQ(Loose(state), std::vector<std::string>()) << "while running";
  const std::string log = agent.log();
  for (const char* f : {"/state was", "/spans/local.jsonl was", "/queue/backend.db-wal was",
                        "/dlq/backend.db-shm was"}) {
    EXPECT_NE(log.find(f), std::string::npos) << "the log does not say " << f << "\n" << log;
  }
  EXPECT_EQ(agent.Terminate(std::chrono::seconds(30)), 0) << agent.log();
  EXPECT_EQ(Loose(state), std::vector<std::string>()) << "after the run";
  for (const auto& f : Files(state)) std::printf("  %s\n", f.c_str());
  std::filesystem::remove_all(dir);
}

// ---------------------------------------------------------------------------
// bpf.pin_path on something other than bpffs.

// The finding: KSPAN_PIN_PATH pointed at an ordinary directory; start-up
// "removed 2 stale pin(s)" (the user's files) and stop removed the
// directory. Now the agent refuses to start and names the key.
TEST(AgentSecurity, PinPathOffBpffsIsRefusedAndItsFilesKept) {
  KSPAN_REQUIRE_BPF();
  const std::string dir = TempDir("pinpath");
  const std::string pins = dir + "/pins";
  ASSERT_TRUE(std::filesystem::create_directory(pins));
  std::ofstream(pins + "/report.txt") << "a user's file";
  std::ofstream(pins + "/kspan_tcp_stats") << "a file with a pin's name";
  AgentProcess agent({"--no-console"}, "", {"KSPAN_PIN_PATH=" + pins});
  const int status = agent.WaitExit(std::chrono::seconds(60));
  const std::string log = agent.log();
  EXPECT_NE(status, 0) << log;
  EXPECT_NE(status, -1) << "still running with pins in " << pins << "\n" << log;
  EXPECT_NE(log.find("bpf.pin_path"), std::string::npos) << log;
  EXPECT_NE(log.find("not on bpffs"), std::string::npos) << log;
  EXPECT_TRUE(std::filesystem::exists(pins + "/report.txt"));
  EXPECT_TRUE(std::filesystem::exists(pins + "/kspan_tcp_stats"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kspan
