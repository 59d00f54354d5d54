// The hardening of issue #18, end to end with the real kspan binary:
//   - everything under state_dir is its owner's only, files an older version
//     left readable included;
//   - bpf.pin_path must be a directory of kspan's own on bpffs;
//   - no OTLP request enrolls a process other than its sender, whatever its
//     resource claims and however the sender hangs up.
// Every agent here pins under a directory of its own, so the tests run
// beside an agent that holds /sys/fs/bpf/kspan.

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "exporter/dead_letter_store.h"
#include "exporter/disk_queue.h"
#include "exporter/file_store_sender.h"
#include "exporter/otlp_transform.h"
#include "nlohmann/json.hpp"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb.h"
#include "tests/exporter/test_spans.h"
#include "tests/privileged/agent_process.h"
#include "tests/privileged/privileged.h"

namespace kspan {
namespace {

using ::kspan::testing::AgentProcess;
using ::kspan::testing::MetricSum;
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

// ---------------------------------------------------------------------------
// No claim enrolls another process.

nlohmann::json Status(const AgentProcess& agent) {
  httplib::Client client("127.0.0.1", agent.admin_port());
  auto res = client.Get("/status");
  if (!res || res->status != 200) return {};
  return nlohmann::json::parse(res->body, nullptr, false);
}

// A process that has nothing to do with the test's requests: `sleep 600`
// (or, where there is no sleep on PATH, the same thing forked).
class UnrelatedProcess {
 public:
  UnrelatedProcess() {
    pid_ = fork();
    if (pid_ == 0) {
      execlp("sleep", "sleep", "600", nullptr);
      for (;;) pause();
    }
  }
  ~UnrelatedProcess() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  std::uint32_t pid() const { return static_cast<std::uint32_t>(pid_); }

 private:
  pid_t pid_ = -1;
};

// An OTLP/HTTP protobuf request of about `bytes` whose one resource claims
// to be process `claimed_pid`.
std::string ClaimingRequest(std::uint32_t claimed_pid, std::size_t bytes) {
  opentelemetry::proto::collector::trace::v1::ExportTraceServiceRequest req;
  auto* rs = req.add_resource_spans();
  auto* pid = rs->mutable_resource()->add_attributes();
  pid->set_key("process.pid");
  pid->mutable_value()->set_int_value(claimed_pid);
  auto* name = rs->mutable_resource()->add_attributes();
  name->set_key("service.name");
  name->mutable_value()->set_string_value("claims-another-process");
  auto* ss = rs->add_scope_spans();
  const std::string filler(1024, 'x');
  const std::size_t spans = bytes / (filler.size() + 64) + 1;
  for (std::size_t i = 0; i < spans; ++i) {
    auto* s = ss->add_spans();
    std::string trace_id(16, '\x01'), span_id(8, '\x02');
    std::memcpy(trace_id.data(), &i, sizeof(i));
    std::memcpy(span_id.data(), &i, sizeof(i));
    span_id[7] = '\x03';
    s->set_trace_id(trace_id);
    s->set_span_id(span_id);
    s->set_name("claim");
    const auto now = ::kspan::testing::RealtimeNowNs();
    s->set_start_time_unix_nano(now);
    s->set_end_time_unix_nano(now + 1000);
    auto* a = s->add_attributes();
    a->set_key("filler");
    a->mutable_value()->set_string_value(filler);
  }
  return req.SerializeAsString();
}

enum class HangUp { kClose, kShutdownThenClose };

// One request on a fresh connection, closed before the answer (after
// shutdown(SHUT_WR) first, for kShutdownThenClose). Exit status 0 when the
// whole request was written.
int SendAndHangUp(int port, const std::string& body, HangUp how) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return 1;
  const std::string request = "POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Content-Type: application/x-protobuf\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
  std::size_t done = 0;
  while (done < request.size()) {
    const ssize_t n = write(fd, request.data() + done, request.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return 2;
    done += static_cast<std::size_t>(n);
  }
  if (how == HangUp::kShutdownThenClose) shutdown(fd, SHUT_WR);
  close(fd);
  return 0;
}

bool InAllowList(const std::string& pin_dir, std::uint32_t pid, bool* map_found) {
  const int fd = bpf_obj_get((pin_dir + "/kspan_pid_allow").c_str());
  *map_found = fd >= 0;
  if (fd < 0) return false;
  std::uint8_t value[8] = {};
  const bool found = bpf_map_lookup_elem(fd, &pid, value) == 0;
  close(fd);
  return found;
}

class NoClaimEnrolls : public ::testing::TestWithParam<bool> {};

// The finding: a client sent spans naming an unrelated process's pid and
// closed its socket at once; the agent, unable to find the owner of an
// orphaned socket (inode 0), trusted the claim and enrolled that process for
// full capture. With TCP capture off the sender is looked for in /proc only.
TEST_P(NoClaimEnrolls, HungUpClientNamingAnotherProcess) {
  KSPAN_REQUIRE_BPF();
  const bool tcp = GetParam();
  const std::string dir = TempDir("claims");
  const std::string config =
      WriteConfig(dir, std::string("capture: {tcp: {enabled: ") + (tcp ? "true" : "false") + "}}\n");
  AgentProcess agent({"-c", config, "--no-console"});
  ASSERT_TRUE(agent.WaitReady(std::chrono::seconds(60))) << agent.log();
  const int port = agent.receiver_http_port();
  ASSERT_GT(port, 0);

  UnrelatedProcess victim;
  // 3 MiB: the agent is still reading the body when the client has gone.
  const std::string body = ClaimingRequest(victim.pid(), 3u << 20);
  auto refused = [&] { return MetricSum(agent.Metrics(), "kspan_receiver_pid_claims_refused_total"); };
  double expected_refusals = refused();
  for (HangUp how : {HangUp::kClose, HangUp::kShutdownThenClose}) {
    SCOPED_TRACE(how == HangUp::kClose ? "close" : "shutdown(SHUT_WR), close");
    // The client is a process of its own that is gone by the time the
    // request is handled, as an attacker's would be.
    ::kspan::testing::ChildProcess client([&] { _exit(SendAndHangUp(port, body, how)); });
    ASSERT_TRUE(client.RunAndWait());
    expected_refusals += 1;  // one resource per request
    ASSERT_TRUE(WaitFor([&] { return refused() >= expected_refusals; }, std::chrono::seconds(60)))
        << "the request never reached sender attribution\n" << agent.Metrics() << agent.log();

    // Attribution and enrollment happen before the answer: by now an
    // enrollment would show.
    const std::string metrics = agent.Metrics();
    EXPECT_EQ(MetricValue(metrics, "kspan_enrollment_joined_total"), 0) << agent.log();
    const auto status = Status(agent);
    ASSERT_TRUE(status.contains("enrolled_pids")) << status.dump();
    for (const auto& pid : status["enrolled_pids"]) {
      EXPECT_NE(pid.get<std::uint32_t>(), victim.pid()) << "the claimed process was enrolled";
    }
    EXPECT_TRUE(status["enrolled_pids"].empty()) << status.dump();
    bool map_found = false;
    EXPECT_FALSE(InAllowList(PinDirForAgents(), victim.pid(), &map_found));
    EXPECT_TRUE(map_found) << "no kspan_pid_allow under " << PinDirForAgents();
  }
  const std::string metrics = agent.Metrics();
  std::printf("tcp capture %s: senders by kernel %.0f, by /proc %.0f, unknown %.0f; refused "
              "claims: other_process %.0f, not_in_sender_namespace %.0f, sender_unknown %.0f\n",
              tcp ? "on" : "off",
              MetricValue(metrics, "kspan_receiver_senders_total{identified_by=\"kernel\"}"),
              MetricValue(metrics, "kspan_receiver_senders_total{identified_by=\"proc\"}"),
              MetricValue(metrics, "kspan_receiver_senders_total{identified_by=\"unknown\"}"),
              MetricValue(metrics, "kspan_receiver_pid_claims_refused_total{reason=\"other_process\"}"),
              MetricValue(metrics, "kspan_receiver_pid_claims_refused_total{reason=\"not_in_sender_namespace\"}"),
              MetricValue(metrics, "kspan_receiver_pid_claims_refused_total{reason=\"sender_unknown\"}"));
  EXPECT_EQ(agent.Terminate(std::chrono::seconds(30)), 0) << agent.log();
  std::filesystem::remove_all(dir);
}

std::string CaptureName(const ::testing::TestParamInfo<bool>& p) {
  return p.param ? "TcpCapture" : "ProcOnly";
}

INSTANTIATE_TEST_SUITE_P(AgentSecurity, NoClaimEnrolls, ::testing::Bool(), CaptureName);

}  // namespace
}  // namespace kspan
