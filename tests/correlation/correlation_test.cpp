// Acceptance of correlation, end to end: a two-service Node.js demo
// instrumented with the official OpenTelemetry SDK (demo/service.js) sends
// its spans to the real kspan binary's receiver and, unchanged, to a
// reference collector. kspan, which selects neither process by config,
// enrolls them because they send spans and exports everything to a real
// OTLP/gRPC receiver. Every request's trace there must hold the SDK's spans
// exactly as the SDK produced them, plus kspan's connect, syscall and HTTP
// spans, each the child of the span that contains it; nothing orphaned or
// duplicated.
#include <gtest/gtest.h>
#include <httplib.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <thread>

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

TEST(Correlation, InstrumentedDemoTracesHoldKernelSpansUnderTheSpansThatContainThem) {
  KSPAN_REQUIRE_DEMO();

  OtlpTestServer backend_otlp;   // where kspan exports
  OtlpHttpTestServer reference;  // what the SDK produced, straight from the apps
  const int grpc_port = FreeLoopbackPort();
  const int http_port = FreeLoopbackPort();
  char tmpl[] = "/tmp/kspan-corr-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  {
    std::ofstream cfg(dir + "/kspan.yaml");
    cfg << "correlation:\n  join_window: 2s\nbatch:\n  schedule_delay: 200ms\n";
  }
  AgentProcess agent({"-c", dir + "/kspan.yaml", "--otlp-endpoint", backend_otlp.endpoint(),
                      "--receiver-grpc", "127.0.0.1:" + std::to_string(grpc_port),
                      "--receiver-http", "127.0.0.1:" + std::to_string(http_port),
                      "--no-console"});
  ASSERT_TRUE(agent.WaitReady(30s)) << agent.log();

  const int backend_port = FreeLoopbackPort();
  const int frontend_port = FreeLoopbackPort();
  std::map<std::string, std::string> env = {
      {"KSPAN_OTLP_URL", "http://127.0.0.1:" + std::to_string(http_port) + "/v1/traces"},
      {"REFERENCE_OTLP_URL", reference.base_url() + "/v1/traces"},
      {"EXPORT_DELAY_MS", "100"},
  };
  NodeService backend("backend", backend_port, env);
  env["BACKEND"] = "http://127.0.0.1:" + std::to_string(backend_port);
  NodeService frontend("frontend", frontend_port, env);
  ASSERT_TRUE(backend.WaitListening(30s)) << backend.log();
  ASSERT_TRUE(frontend.WaitListening(30s)) << frontend.log();
  const std::uint32_t frontend_pid = frontend.pid();
  const std::uint32_t backend_pid = backend.pid();

  // Neither process is selected by config: they are enrolled when they send
  // spans. Warm up until both are.
  httplib::Client client("127.0.0.1", frontend_port);
  client.set_read_timeout(10s);
  httplib::Client admin("127.0.0.1", agent.admin_port());
  bool enrolled = false;
  for (int i = 0; i < 100 && !enrolled; ++i) {
    auto res = client.Get("/order?warmup=" + std::to_string(i));
    ASSERT_TRUE(res) << "frontend did not answer\n" << frontend.log();
    std::this_thread::sleep_for(300ms);
    if (auto st = admin.Get("/status"); st && st->status == 200) {
      auto pids = nlohmann::json::parse(st->body).value("enrolled_pids", nlohmann::json::array());
      std::set<std::uint32_t> got(pids.begin(), pids.end());
      enrolled = got.contains(frontend_pid) && got.contains(backend_pid);
    }
  }
  ASSERT_TRUE(enrolled) << agent.log();
  // A moment for the in-kernel filter change to reach every program.
  std::this_thread::sleep_for(200ms);

  constexpr int kRequests = 3;
  for (int i = 0; i < kRequests; ++i) {
    auto res = client.Get("/order?req=" + std::to_string(i));
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    std::this_thread::sleep_for(100ms);
  }
  frontend.Stop();  // flushes the SDK
  backend.Stop();

  // The traces of the test requests, from the reference copy.
  const auto want = demo::CollectRequestTraces(reference, "req", kRequests, 30s);
  ASSERT_EQ(want.app_spans.size(), static_cast<std::size_t>(kRequests));
  for (const auto& [t, v] : want.app_spans) ASSERT_EQ(v.size(), 7u) << "trace " << t;

  // kspan holds kernel spans for the join window, then exports.
  std::this_thread::sleep_for(3s);
  ASSERT_EQ(agent.Terminate(30s), 0) << agent.log();
  demo::ExpectKernelSpansNestedInEveryTrace(
      want, backend_otlp.spans(),
      demo::DemoProcesses{frontend_pid, backend_pid, backend_port}.Expectations());
}

}  // namespace
}  // namespace kspan
