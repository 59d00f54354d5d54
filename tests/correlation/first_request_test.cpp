// Correlation from the first request, end to end: the demo's services are
// configured the way any OpenTelemetry-instrumented app is (the standard
// OTEL_ variables name kspan's receiver; the SDK's default batch processor
// exports every 5 s and at shutdown). Started next to a running kspan, or
// before kspan, they serve one burst of requests at once and are stopped
// (SIGTERM: the SDK flushes). No warm-up: kspan knows them from their
// environment, so their capture is on from their first instruction and
// their kernel spans wait in the join window for the flush. And a process
// without those variables (or whose variables name another collector) is
// not enrolled and its kernel spans leave without waiting.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <future>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/correlation/demo_support.h"
#include "tests/privileged/agent_process.h"
#include "tests/privileged/privileged.h"
#include "tests/support/otlp_http_test_server.h"
#include "tests/support/otlp_test_server.h"

namespace kspan {
namespace {

using namespace std::chrono_literals;
using ::kspan::demo::NodeService;
using ::kspan::testing::AgentProcess;
using ::kspan::testing::FreeLoopbackPort;
using ::kspan::testing::OtlpHttpTestServer;
using ::kspan::testing::OtlpTestServer;
using ::kspan::testing::ReceivedSpan;

std::set<std::uint32_t> EnrolledPids(AgentProcess& agent) {
  httplib::Client admin("127.0.0.1", agent.admin_port());
  auto st = admin.Get("/status");
  if (!st || st->status != 200) return {};
  auto pids = nlohmann::json::parse(st->body).value("enrolled_pids", nlohmann::json::array());
  return {pids.begin(), pids.end()};
}

// kspan with its join window at the default (6 s: longer than the SDKs'
// 5 s export delay), exporting to `backend` with a short batch delay.
std::unique_ptr<AgentProcess> StartAgent(const OtlpTestServer& backend, int grpc_port,
                                         int http_port, const std::string& extra_config = "") {
  char tmpl[] = "/tmp/kspan-first-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  std::ofstream(dir + "/kspan.yaml") << "batch:\n  schedule_delay: 200ms\n" << extra_config;
  return std::make_unique<AgentProcess>(std::vector<std::string>{
      "-c", dir + "/kspan.yaml", "--otlp-endpoint", backend.endpoint(), "--receiver-grpc",
      "127.0.0.1:" + std::to_string(grpc_port), "--receiver-http",
      "127.0.0.1:" + std::to_string(http_port), "--no-console"});
}

// The demo's two services, configured through the standard variables only.
struct Demo {
  Demo(int http_port, const OtlpHttpTestServer& reference)
      : backend_port(FreeLoopbackPort()), frontend_port(FreeLoopbackPort()) {
    std::map<std::string, std::string> env = {
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
         "http://127.0.0.1:" + std::to_string(http_port) + "/v1/traces"},
        {"OTEL_METRICS_EXPORTER", "none"},
        {"OTEL_LOGS_EXPORTER", "none"},
        {"REFERENCE_OTLP_URL", reference.base_url() + "/v1/traces"},
    };
    env["OTEL_SERVICE_NAME"] = "first-backend";
    backend = std::make_unique<NodeService>("backend", backend_port, env);
    env["OTEL_SERVICE_NAME"] = "first-frontend";
    env["BACKEND"] = "http://127.0.0.1:" + std::to_string(backend_port);
    frontend = std::make_unique<NodeService>("frontend", frontend_port, env);
  }
  bool WaitListening() {
    return backend->WaitListening(30s) && frontend->WaitListening(30s);
  }
  // `n` requests at once, each on its own connection.
  void Burst(int n, const std::string& marker) {
    std::vector<std::future<int>> calls;
    for (int i = 0; i < n; ++i) {
      calls.push_back(std::async(std::launch::async, [this, i, marker] {
        httplib::Client c("127.0.0.1", frontend_port);
        c.set_read_timeout(10s);
        auto res = c.Get("/order?" + marker + "=" + std::to_string(i));
        return res ? res->status : -1;
      }));
    }
    for (int i = 0; i < n; ++i) {
      EXPECT_EQ(calls[static_cast<std::size_t>(i)].get(), 200)
          << "request " << i << "\n" << frontend->log() << backend->log();
    }
  }
  demo::DemoProcesses processes() const { return {frontend->pid(), backend->pid(), backend_port}; }

  int backend_port;
  int frontend_port;
  std::unique_ptr<NodeService> backend;
  std::unique_ptr<NodeService> frontend;
};

// Burst, stop, then every trace of the burst must hold its kernel spans.
void ServeBurstAndCheck(Demo& d, AgentProcess& agent, OtlpTestServer& backend_otlp,
                        const OtlpHttpTestServer& reference) {
  constexpr int kRequests = 6;
  const demo::DemoProcesses processes = d.processes();
  d.Burst(kRequests, "first");
  // Stopped right away: the only export of the burst's spans is the SDK's
  // flush at shutdown, seconds before its first scheduled one.
  d.frontend->Stop();
  d.backend->Stop();
  const auto want = demo::CollectRequestTraces(reference, "first", kRequests, 30s);
  ASSERT_EQ(want.app_spans.size(), static_cast<std::size_t>(kRequests));
  for (const auto& [t, v] : want.app_spans) ASSERT_EQ(v.size(), 7u) << "trace " << t;
  // The join window (6 s) passes for the last kernel span, then the batcher.
  std::this_thread::sleep_for(7s);
  ASSERT_EQ(agent.Terminate(30s), 0) << agent.log();
  demo::ExpectKernelSpansNestedInEveryTrace(want, backend_otlp.spans(), processes.Expectations());
}

TEST(FirstRequest, ServicesStartedNextToKspanHaveKernelSpansInTheirFirstTraces) {
  KSPAN_REQUIRE_DEMO();
  OtlpTestServer backend_otlp;
  OtlpHttpTestServer reference;
  const int grpc_port = FreeLoopbackPort();
  const int http_port = FreeLoopbackPort();
  auto agent = StartAgent(backend_otlp, grpc_port, http_port);
  ASSERT_TRUE(agent->WaitReady(30s)) << agent->log();

  Demo d(http_port, reference);
  ASSERT_TRUE(d.WaitListening()) << d.frontend->log() << d.backend->log();
  // Enrolled from their environment, before they have sent anything.
  const auto enrolled = EnrolledPids(*agent);
  EXPECT_TRUE(enrolled.contains(d.frontend->pid()) && enrolled.contains(d.backend->pid()))
      << agent->log();
  ServeBurstAndCheck(d, *agent, backend_otlp, reference);
}

TEST(FirstRequest, ServicesStartedBeforeKspanHaveKernelSpansInTheirFirstTraces) {
  KSPAN_REQUIRE_DEMO();
  OtlpTestServer backend_otlp;
  OtlpHttpTestServer reference;
  const int grpc_port = FreeLoopbackPort();
  const int http_port = FreeLoopbackPort();
  Demo d(http_port, reference);
  ASSERT_TRUE(d.WaitListening()) << d.frontend->log() << d.backend->log();

  // kspan starts after them: its start-up scan finds them.
  auto agent = StartAgent(backend_otlp, grpc_port, http_port);
  ASSERT_TRUE(agent->WaitReady(30s)) << agent->log();
  const auto enrolled = EnrolledPids(*agent);
  EXPECT_TRUE(enrolled.contains(d.frontend->pid()) && enrolled.contains(d.backend->pid()))
      << agent->log();
  ServeBurstAndCheck(d, *agent, backend_otlp, reference);
}

// A child with exactly `env` as its environment (nothing inherited).
pid_t Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> a, e;
    for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    for (const auto& s : env) e.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    e.push_back(nullptr);
    execve(a[0], a.data(), e.data());
    _exit(127);
  }
  return pid;
}

TEST(FirstRequest, ProcessesThatDoNotExportToKspanAreNotEnrolledNorDelayed) {
  KSPAN_REQUIRE_BPF();
  KSPAN_REQUIRE(access("/usr/bin/curl", X_OK) == 0, "curl is not installed");
  OtlpTestServer backend_otlp;
  const int grpc_port = FreeLoopbackPort();
  const int http_port = FreeLoopbackPort();
  // A long window: a kernel span that waited in it could not arrive early.
  auto agent = StartAgent(backend_otlp, grpc_port, http_port, "correlation:\n  join_window: 20s\n");
  ASSERT_TRUE(agent->WaitReady(30s)) << agent->log();
  const std::string receiver = "http://127.0.0.1:" + std::to_string(http_port);

  // Idle processes: one whose variables name kspan's receiver (enrolled),
  // one whose name another collector and one with none (not enrolled).
  const pid_t mine = Spawn({"/usr/bin/sleep", "30"},
                           {"OTEL_EXPORTER_OTLP_ENDPOINT=" + receiver, "OTEL_SERVICE_NAME=a"});
  const pid_t other = Spawn({"/usr/bin/sleep", "30"},
                            {"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1", "OTEL_SERVICE_NAME=b"});
  const pid_t plain = Spawn({"/usr/bin/sleep", "30"}, {"PATH=/usr/bin:/bin"});
  std::set<std::uint32_t> enrolled;
  for (int i = 0; i < 50 && !enrolled.contains(static_cast<std::uint32_t>(mine)); ++i) {
    std::this_thread::sleep_for(100ms);
    enrolled = EnrolledPids(*agent);
  }
  EXPECT_TRUE(enrolled.contains(static_cast<std::uint32_t>(mine))) << agent->log();
  EXPECT_FALSE(enrolled.contains(static_cast<std::uint32_t>(other)));
  EXPECT_FALSE(enrolled.contains(static_cast<std::uint32_t>(plain)));
  for (pid_t p : {mine, other, plain}) {
    kill(p, SIGKILL);
    waitpid(p, nullptr, 0);
  }

  // Short-lived clients with no OTEL_ variables, and with ones naming
  // another collector: their TCP connects reach the backend within a few
  // seconds (batch delay and export), not after the 20 s window.
  const std::string url = "http://127.0.0.1:" + std::to_string(agent->admin_port()) + "/readyz";
  const pid_t c1 = Spawn({"/usr/bin/curl", "-s", "-o", "/dev/null", url}, {"PATH=/usr/bin:/bin"});
  const pid_t c2 = Spawn({"/usr/bin/curl", "-s", "-o", "/dev/null", url},
                         {"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1", "OTEL_SERVICE_NAME=c"});
  waitpid(c1, nullptr, 0);
  waitpid(c2, nullptr, 0);
  const auto t0 = std::chrono::steady_clock::now();
  const bool arrived = backend_otlp.WaitForSpans(
      [&](const std::vector<ReceivedSpan>& spans) {
        std::set<std::int64_t> seen;
        for (const auto& s : spans) {
          if (s.span.name() == "tcp connect") seen.insert(demo::Pid(s));
        }
        return seen.contains(c1) && seen.contains(c2);
      },
      8s);
  EXPECT_TRUE(arrived) << "the connects of processes kspan does not expect spans from waited";
  RecordProperty("arrival_ms", std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                  std::chrono::steady_clock::now() - t0)
                                                  .count()));
  ASSERT_EQ(agent->Terminate(30s), 0) << agent->log();
}

}  // namespace
}  // namespace kspan
