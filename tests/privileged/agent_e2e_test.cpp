// End to end: the real kspan binary, a real OTLP/gRPC receiver, real TCP
// connections made by this test process. The receiver must get exactly the
// connect spans this process caused, with the right fields.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <set>
#include <thread>

#include "tests/privileged/privileged.h"
#include "nlohmann/json.hpp"
#include "tests/privileged/agent_process.h"
#include "userspace/kernel_features.h"
#include "tests/support/otlp_test_server.h"

namespace kspan {
namespace {

using ::kspan::testing::ClosedPort;
using ::kspan::testing::ConnectLoopback;
using ::kspan::testing::ConnectResult;
using ::kspan::testing::Listener;
using ::kspan::testing::OtlpTestServer;
using ::kspan::testing::ReceivedSpan;
using ::kspan::testing::AgentProcess;
using ::kspan::testing::MetricValue;

std::int64_t IntAttr(const ReceivedSpan& s, std::string_view key) {
  const auto* v = s.Attribute(key);
  return v ? v->int_value() : -1;
}
std::string StrAttr(const ReceivedSpan& s, std::string_view key) {
  const auto* v = s.Attribute(key);
  return v ? v->string_value() : "<absent>";
}

// This process's connect spans, less its own HTTP calls to the agent's
// admin port (readiness polls, scrapes): those are real connects too.
std::vector<ReceivedSpan> SpansOfThisProcess(const std::vector<ReceivedSpan>& all,
                                             int admin_port) {
  std::vector<ReceivedSpan> mine;
  for (const auto& s : all) {
    if (s.span.name() != "tcp connect") continue;
    const auto* pid = s.ResourceAttribute("process.pid");
    if (pid == nullptr || pid->int_value() != getpid()) continue;
    if (IntAttr(s, "network.peer.port") == admin_port) continue;
    mine.push_back(s);
  }
  return mine;
}

TEST(AgentEndToEnd, ConnectSpansReachAnOtlpReceiver) {
  KSPAN_REQUIRE_BPF();
  OtlpTestServer receiver;
  AgentProcess agent({"--otlp-endpoint", receiver.endpoint(), "--no-console"});
  ASSERT_TRUE(agent.WaitReady(std::chrono::seconds(60))) << agent.log();

  Listener v4(AF_INET), v6(AF_INET6);
  ClosedPort closed(AF_INET);
  struct Expectation {
    ConnectResult r;
    int family;
    int port;
    bool refused;
  };
  std::vector<Expectation> expected = {
      {ConnectLoopback(AF_INET, v4.port()), AF_INET, v4.port(), false},
      {ConnectLoopback(AF_INET6, v6.port()), AF_INET6, v6.port(), false},
      {ConnectLoopback(AF_INET, closed.port()), AF_INET, closed.port(), true},
  };
  ASSERT_EQ(expected[0].r.err, 0);
  ASSERT_EQ(expected[1].r.err, 0);
  ASSERT_EQ(expected[2].r.err, ECONNREFUSED);

  ASSERT_TRUE(receiver.WaitForSpans(
      [&](const auto& spans) { return SpansOfThisProcess(spans, agent.admin_port()).size() >= 3; },
      std::chrono::seconds(30)))
      << "received " << receiver.spans().size() << " spans\n" << agent.log();

  const std::string metrics = agent.Metrics();
  // The variant the agent chose by itself on this kernel.
  {
    httplib::Client admin("127.0.0.1", agent.admin_port());
    auto res = admin.Get("/status");
    ASSERT_TRUE(res && res->status == 200);
    auto status = nlohmann::json::parse(res->body);
    ASSERT_FALSE(status["capture"].empty()) << res->body;
    ::kspan::testing::ReportVariant("tcp_state", status["capture"][0]["variant"]);
  }
  EXPECT_EQ(agent.Terminate(std::chrono::seconds(20)), 0) << agent.log();
  struct stat st {};
  EXPECT_NE(stat("/sys/fs/bpf/kspan", &st), 0) << "pin directory left behind";

  auto mine = SpansOfThisProcess(receiver.spans(), agent.admin_port());
  ASSERT_EQ(mine.size(), 3u) << "exactly the three connects of this process";
  const int tid = ::kspan::testing::CurrentTid();
  for (const auto& want : expected) {
    SCOPED_TRACE("port " + std::to_string(want.port));
    auto it = std::find_if(mine.begin(), mine.end(), [&](const ReceivedSpan& s) {
      return IntAttr(s, "network.peer.port") == want.port;
    });
    ASSERT_NE(it, mine.end());
    const ReceivedSpan& s = *it;
    EXPECT_EQ(s.span.name(), "tcp connect");
    EXPECT_EQ(s.span.kind(), opentelemetry::proto::trace::v1::Span::SPAN_KIND_CLIENT);
    EXPECT_EQ(s.trace_id_hex().size(), 32u);
    EXPECT_NE(s.trace_id_hex(), std::string(32, '0'));
    EXPECT_EQ(s.span_id_hex().size(), 16u);
    EXPECT_EQ(s.parent_span_id_hex(), "");
    EXPECT_EQ(StrAttr(s, "network.peer.address"), want.family == AF_INET6 ? "::1" : "127.0.0.1");
    EXPECT_EQ(StrAttr(s, "network.type"), want.family == AF_INET6 ? "ipv6" : "ipv4");
    EXPECT_EQ(StrAttr(s, "network.transport"), "tcp");
    EXPECT_EQ(IntAttr(s, "network.local.port"), want.r.local_port);
    EXPECT_EQ(IntAttr(s, "process.pid"), getpid());
    EXPECT_EQ(IntAttr(s, "thread.id"), tid);
    EXPECT_EQ(s.ResourceAttribute("service.name")->string_value(), "kspan_privileged_tests");
    EXPECT_FALSE(s.ResourceAttribute("host.name")->string_value().empty());
    if (want.refused) {
      EXPECT_EQ(s.span.status().code(), opentelemetry::proto::trace::v1::Status::STATUS_CODE_ERROR);
      EXPECT_EQ(StrAttr(s, "error.type"), "ECONNREFUSED");
      EXPECT_NE(s.span.status().message().find("refused"), std::string::npos);
    } else {
      EXPECT_EQ(s.span.status().code(), opentelemetry::proto::trace::v1::Status::STATUS_CODE_UNSET);
      EXPECT_EQ(s.Attribute("error.type"), nullptr);
    }
    // Converted to Unix time, the kernel's interval lies inside the one the
    // test measured around connect() (1 ms allowance for the clock offset).
    constexpr std::uint64_t kSlack = 1'000'000;
    EXPECT_GE(s.span.start_time_unix_nano() + kSlack, want.r.real_before);
    EXPECT_LE(s.span.end_time_unix_nano(), want.r.real_after + kSlack);
    EXPECT_LE(s.span.start_time_unix_nano(), s.span.end_time_unix_nano());
    EXPECT_LE(s.span.end_time_unix_nano() - s.span.start_time_unix_nano(),
              want.r.mono_after - want.r.mono_before);
  }

  // The agent counted what it sent.
  EXPECT_GE(MetricValue(metrics, "kspan_bpf_events_total{family=\"tcp\",kind=\"tcp_connect\"}"), 3);
  EXPECT_EQ(MetricValue(metrics,
                        "kspan_bpf_dropped_total{family=\"tcp\",reason=\"ring_full\"}"),
            0);
}

// A process forked from another and then exec'ing (a program started from
// a shell) is that program on every kernel span from its exec on; what it
// did before the exec stays the parent program's. The pid is the same.
TEST(AgentEndToEnd, IdentityFollowsExec) {
  KSPAN_REQUIRE_BPF();
  OtlpTestServer receiver;
  AgentProcess agent({"--otlp-endpoint", receiver.endpoint(), "--no-console"});
  ASSERT_TRUE(agent.WaitReady(std::chrono::seconds(60))) << agent.log();

  Listener before(AF_INET);
  ClosedPort after(AF_INET);
  const std::string kspan = ::kspan::testing::KspanBinary();
  char resolved[PATH_MAX];
  ASSERT_NE(realpath(kspan.c_str(), resolved), nullptr) << kspan;
  const std::string admin = "127.0.0.1:" + std::to_string(after.port());
  // Before the exec: this test program connects; then it becomes `kspan
  // status`, whose request to a closed port is the second connect.
  ::kspan::testing::ChildProcess child([&] {
    auto r = ConnectLoopback(AF_INET, before.port());
    if (r.err != 0) _exit(3);
    execl(resolved, "kspan", "status", "--admin", admin.c_str(), nullptr);
    _exit(4);
  });
  const std::uint32_t pid = child.pid();
  child.RunAndWait();  // `kspan status` fails: nobody listens there

  auto of_child = [&](const std::vector<ReceivedSpan>& spans) {
    std::vector<ReceivedSpan> out;
    for (const auto& s : spans) {
      const auto* p = s.ResourceAttribute("process.pid");
      if (s.span.name() == "tcp connect" && p != nullptr && p->int_value() == pid) out.push_back(s);
    }
    return out;
  };
  ASSERT_TRUE(receiver.WaitForSpans([&](const auto& spans) { return of_child(spans).size() >= 2; },
                                    std::chrono::seconds(30)))
      << agent.log();
  EXPECT_EQ(agent.Terminate(std::chrono::seconds(20)), 0) << agent.log();
  const auto spans = of_child(receiver.spans());
  ASSERT_EQ(spans.size(), 2u);
  for (const auto& s : spans) {
    SCOPED_TRACE("connect to port " + std::to_string(IntAttr(s, "network.peer.port")));
    if (IntAttr(s, "network.peer.port") == before.port()) {
      EXPECT_EQ(s.ResourceAttribute("service.name")->string_value(), "kspan_privileged_tests");
      EXPECT_EQ(s.ResourceAttribute("process.executable.name")->string_value(), "kspan_privileged_tests");
    } else {
      ASSERT_EQ(IntAttr(s, "network.peer.port"), after.port());
      EXPECT_EQ(s.ResourceAttribute("service.name")->string_value(), "kspan");
      EXPECT_EQ(s.ResourceAttribute("process.executable.name")->string_value(), "kspan");
      EXPECT_EQ(s.ResourceAttribute("process.executable.path")->string_value(), resolved);
    }
  }
}

TEST(AgentEndToEnd, UnreachableBackendDoesNotStopCapture) {
  KSPAN_REQUIRE_BPF();
  ClosedPort nowhere(AF_INET);
  AgentProcess agent({"--otlp-endpoint", "http://127.0.0.1:" + std::to_string(nowhere.port()),
                      "--no-console"});
  ASSERT_TRUE(agent.WaitReady(std::chrono::seconds(60))) << agent.log();

  Listener server(AF_INET);
  constexpr int kConnects = 20;
  for (int i = 0; i < kConnects; ++i) {
    ConnectResult r = ConnectLoopback(AF_INET, server.port());
    ASSERT_EQ(r.err, 0);
    close(accept(server.fd(), nullptr, nullptr));  // keep the accept queue short
    close(r.fd);
  }
  // Capture keeps going while export fails: spans are assembled and queued.
  double assembled = -1;
  for (int i = 0; i < 100 && assembled < kConnects; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    assembled = MetricValue(agent.Metrics(), "kspan_spans_assembled_total{family=\"tcp_connect\"}");
  }
  EXPECT_GE(assembled, kConnects) << agent.log();

  // Shutdown gives up on the backend within its deadline, counting the loss.
  EXPECT_EQ(agent.Terminate(std::chrono::seconds(30)), 0) << agent.log();
  const std::string log = agent.log();
  EXPECT_NE(log.find("dropped"), std::string::npos) << log;
}

// kill -9 of the real agent while its backend is down, with the disk queue:
// after a restart every span accepted (persisted) before the kill arrives.
TEST(AgentEndToEnd, DiskQueueDeliversAcrossKill9) {
  KSPAN_REQUIRE_BPF();
  const int backend_port = ::kspan::testing::FreeLoopbackPort();  // nobody listens yet
  char tmpl[] = "/tmp/kspan-kill9-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::string config = dir + "/kspan.yaml";
  std::ofstream(config) << "destinations:\n"
                           "  - name: backend\n"
                           "    type: otlp_grpc\n"
                           "    endpoint: http://127.0.0.1:" << backend_port << "\n"
                           "    queue: {disk: {enabled: true, fsync: full}}\n"
                           "    retry: {initial_backoff: 100ms, max_backoff: 500ms, max_elapsed: 0}\n"
                           "    circuit_breaker: {open_duration: 500ms}\n"
                           "batch: {schedule_delay: 100ms}\n";
  const std::string state = dir + "/state";
  ClosedPort refused(AF_INET);
  constexpr int kConnects = 25;
  {
    AgentProcess agent({"-c", config, "--no-console"}, state);
    ASSERT_TRUE(agent.WaitReady(std::chrono::seconds(60))) << agent.log();
    for (int i = 0; i < kConnects; ++i) {
      ConnectResult r = ConnectLoopback(AF_INET, refused.port());
      ASSERT_EQ(r.err, ECONNREFUSED);
      close(r.fd);
    }
    // Accepted means persisted. Our records were emitted inside connect();
    // wait until every connect record emitted by now is assembled (one
    // ring, read in order), then until everything submitted by then is on
    // disk (the batcher is FIFO).
    using ::kspan::testing::MetricSum;
    const double emitted =
        MetricValue(agent.Metrics(), "kspan_bpf_events_total{family=\"tcp\",kind=\"tcp_connect\"}");
    ASSERT_GE(emitted, kConnects);
    double assembled = 0, persisted = -1;
    for (int i = 0; i < 300 && assembled < emitted; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      assembled = MetricValue(agent.Metrics(),
                              "kspan_spans_assembled_total{family=\"tcp_connect\"}");
    }
    ASSERT_GE(assembled, emitted) << agent.log();
    const double submitted = MetricSum(agent.Metrics(), "kspan_exporter_spans_submitted_total");
    for (int i = 0; i < 300 && persisted < submitted; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      persisted = MetricSum(agent.Metrics(), "kspan_exporter_disk_queue_persisted_spans_total");
    }
    ASSERT_GE(persisted, submitted) << agent.log();
    agent.Kill();
  }

  OtlpTestServer receiver(backend_port);
  AgentProcess restarted({"-c", config, "--no-console"}, state);
  ASSERT_TRUE(restarted.WaitReady(std::chrono::seconds(60))) << restarted.log();
  auto ours = [&](const std::vector<ReceivedSpan>& spans) {
    std::set<std::int64_t> local_ports;
    for (const auto& s : spans) {
      const auto* pid = s.ResourceAttribute("process.pid");
      if (s.span.name() == "tcp connect" && pid && pid->int_value() == getpid() &&
          IntAttr(s, "network.peer.port") == refused.port()) {
        local_ports.insert(IntAttr(s, "network.local.port"));
      }
    }
    return local_ports.size();
  };
  ASSERT_TRUE(receiver.WaitForSpans(
      [&](const auto& spans) { return ours(spans) >= static_cast<std::size_t>(kConnects); },
      std::chrono::seconds(60)))
      << "received " << ours(receiver.spans()) << " of " << kConnects << "\n" << restarted.log();
  const std::string m = restarted.Metrics();
  std::printf("kill -9: %d spans accepted before the kill all delivered; batches re-sent after "
              "restart: %.0f\n",
              kConnects,
              MetricValue(m, "kspan_exporter_disk_queue_resent_batches_total{destination=\"backend\"}"));
  EXPECT_EQ(restarted.Terminate(std::chrono::seconds(30)), 0) << restarted.log();
}

// The names of the BPF programs `pid` holds: the prog ids of its
// anon_inode:bpf-prog descriptors (fdinfo), named by bpftool (Debian's
// bpftool has no pid column).
std::set<std::string> ProgramsHeldBy(pid_t pid) {
  std::set<long> ids;
  const std::string dir = "/proc/" + std::to_string(pid);
  for (const auto& fd : std::filesystem::directory_iterator(dir + "/fd")) {
    std::error_code ec;
    if (std::filesystem::read_symlink(fd.path(), ec).string() != "anon_inode:bpf-prog") continue;
    std::ifstream info(dir + "/fdinfo/" + fd.path().filename().string());
    std::string line;
    while (std::getline(info, line)) {
      if (line.rfind("prog_id:", 0) == 0) ids.insert(std::stol(line.substr(8)));
    }
  }
  std::string out;
  if (FILE* p = popen("bpftool -j prog show 2>/dev/null", "r")) {
    char buf[4096];
    while (std::size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    pclose(p);
  }
  std::set<std::string> names;
  const auto progs = nlohmann::json::parse(out, nullptr, false);
  if (!progs.is_array()) return names;
  for (const auto& prog : progs) {
    if (ids.count(prog.value("id", -1L))) names.insert(prog.value("name", ""));
  }
  return names;
}

// With no process selected the syscall enter/exit programs, which every
// syscall of every process on the host pays for, are detached; a process
// enrolled from its environment at exec attaches them, and a configured pid
// keeps them attached from the start. With the host-wide slow threshold set
// (the default) they are detached only where the slow-syscall watch runs
// without them (the scan, by default, or sched_switch); elsewhere they time
// every process's syscalls. With the threshold 0 (no host-wide watch)
// neither watch is loaded: a context switch pays nothing, and the agent
// does not scan.
TEST(AgentEndToEnd, SyscallHooksFollowTheSelection) {
  KSPAN_REQUIRE_BPF();
  const std::string series = "kspan_syscall_hooks_attached";
  const std::string config = "/tmp/kspan-e2e-hooks-" + std::to_string(getpid()) + ".yaml";
  {
    std::ofstream out(config);
    out << "capture:\n  slow_threshold: 0\n";
  }
  {
    AgentProcess agent({"--no-console", "-c", config});
    ASSERT_TRUE(agent.WaitReady(std::chrono::seconds(60))) << agent.log();
    ASSERT_EQ(MetricValue(agent.Metrics(), series), 0.0) << agent.log();
    EXPECT_NE(agent.log().find("enter/exit programs detached until a process is selected"),
              std::string::npos)
        << agent.log();
    const auto held = ProgramsHeldBy(agent.pid());
    EXPECT_TRUE(held.count("kspan_sys_exec")) << "bpftool shows no programs of the agent";
    EXPECT_FALSE(held.count("kspan_sys_slow")) << agent.log();
    EXPECT_FALSE(held.count("kspan_sys_scan") || held.count("kspan_sys_scant")) << agent.log();
    EXPECT_NE(agent.log().find("slow syscalls of every process: off (capture.slow_threshold: 0)"),
              std::string::npos)
        << agent.log();
    // A shell whose environment says it exports to this agent: the exec hook
    // enrolls it, and its exec record makes the agent attach.
    const std::string endpoint =
        "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:" + std::to_string(agent.receiver_http_port());
    ASSERT_GT(agent.receiver_http_port(), 0);
    const pid_t child = fork();
    if (child == 0) {
      const char* env[] = {endpoint.c_str(), "PATH=/usr/bin:/bin", nullptr};
      execle("/bin/sh", "sh", "-c", "sleep 2", nullptr, env);
      _exit(127);
    }
    ASSERT_GT(child, 0);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    double attached = 0;
    while ((attached = MetricValue(agent.Metrics(), series)) != 1.0 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    int status = 0;
    waitpid(child, &status, 0);
    EXPECT_EQ(attached, 1.0) << agent.log();
    EXPECT_NE(agent.log().find("enter/exit programs attached ("), std::string::npos)
        << agent.log();
    EXPECT_EQ(agent.Terminate(std::chrono::seconds(20)), 0) << agent.log();
  }
  // The default watch (scan) and the other one (sched_switch): where the
  // kernel has bpf_task_pt_regs (5.15+) the one configured, with the hooks
  // detached; elsewhere the hooks.
  for (const std::string want : {"scan", "sched_switch"}) {
    std::vector<std::string> args = {"--no-console"};
    if (want != "scan") {
      std::ofstream(config) << "capture:\n  slow_watch: " << want << "\n";
      args.insert(args.end(), {"-c", config});
    }
    AgentProcess agent(args);
    ASSERT_TRUE(agent.WaitReady(std::chrono::seconds(60))) << agent.log();
    httplib::Client admin("127.0.0.1", agent.admin_port());
    auto res = admin.Get("/status");
    ASSERT_TRUE(res && res->status == 200);
    std::string watch;
    const auto status = nlohmann::json::parse(res->body);
    for (const auto& f : status["capture"]) {
      if (f["family"] == "syscalls") watch = f.value("slow_watch", "");
    }
    const std::string taken = watch.rfind("scan", 0) == 0           ? "scan"
                              : watch.rfind("sched_switch", 0) == 0 ? "sched_switch"
                                                                    : "hooks";
    ::kspan::testing::ReportVariant("syscalls.slow_watch." + want, taken);
    if (KernelHasBpfHelper("BPF_FUNC_task_pt_regs")) {
      EXPECT_EQ(taken, want) << agent.log();
    }
    EXPECT_EQ(MetricValue(agent.Metrics(), series), taken == "hooks" ? 1.0 : 0.0)
        << watch << "\n" << agent.log();
    const auto held = ProgramsHeldBy(agent.pid());
    EXPECT_EQ(held.count("kspan_sys_slow"), taken == "sched_switch" ? 1u : 0u) << watch;
    // The whole pass in one run (6.7+), or one run per thread.
    EXPECT_EQ(held.count("kspan_sys_scan") + held.count("kspan_sys_scant"),
              taken == "scan" ? 1u : 0u)
        << watch;
    if (taken == "scan") {
      // The scan runs, and what it costs is in the agent's metrics.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      double scans = 0;
      while ((scans = MetricValue(agent.Metrics(), "kspan_syscall_slow_scans_total")) < 5 &&
             std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      EXPECT_GE(scans, 5) << agent.log();
      EXPECT_GT(MetricValue(agent.Metrics(), "kspan_syscall_slow_scan_seconds_total"), 0.0);
      EXPECT_EQ(MetricValue(agent.Metrics(), "kspan_syscall_slow_scan_failures_total"), 0.0);
    }
    EXPECT_EQ(agent.Terminate(std::chrono::seconds(20)), 0) << agent.log();
  }
  unlink(config.c_str());
  {
    AgentProcess agent({"--no-console", "--pid", std::to_string(getpid())});
    ASSERT_TRUE(agent.WaitReady(std::chrono::seconds(60))) << agent.log();
    EXPECT_EQ(MetricValue(agent.Metrics(), series), 1.0) << agent.log();
    EXPECT_EQ(agent.Terminate(std::chrono::seconds(20)), 0) << agent.log();
  }
}

TEST(AgentEndToEnd, RestartAfterACrashCleansStalePins) {
  KSPAN_REQUIRE_BPF();
  struct stat st {};
  {
    AgentProcess crashed({"--no-console"});
    ASSERT_TRUE(crashed.WaitReady(std::chrono::seconds(60))) << crashed.log();
    crashed.Kill();
  }
  ASSERT_EQ(stat("/sys/fs/bpf/kspan/kspan_tcp_stats", &st), 0) << "a killed agent leaves its pins";

  AgentProcess agent({"--no-console"});
  ASSERT_TRUE(agent.WaitReady(std::chrono::seconds(60))) << agent.log();
  EXPECT_NE(agent.log().find("stale pin(s) under /sys/fs/bpf/kspan"), std::string::npos)
      << agent.log();
  EXPECT_EQ(agent.Terminate(std::chrono::seconds(20)), 0) << agent.log();
  EXPECT_NE(stat("/sys/fs/bpf/kspan", &st), 0) << "pin directory left behind after a clean exit";
}

}  // namespace
}  // namespace kspan
