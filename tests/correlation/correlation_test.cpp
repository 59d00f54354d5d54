// Acceptance of correlation, end to end: a two-service Node.js demo
// instrumented with the official OpenTelemetry SDK (demo/service.js) sends
// its spans to the real kspan binary's receiver and, unchanged, to a
// reference collector. kspan, which selects neither process by config,
// enrolls them because they send spans and exports everything to a real
// OTLP/gRPC receiver. Every request's trace there must hold the SDK's spans
// exactly as the SDK produced them, plus kspan's connect, syscall and HTTP
// spans, each the child of the span that contains it; nothing orphaned or
// duplicated.
#include <fcntl.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "nlohmann/json.hpp"
#include "tests/privileged/agent_process.h"
#include "tests/privileged/privileged.h"
#include "tests/support/otlp_http_test_server.h"
#include "tests/support/otlp_test_server.h"

namespace kspan {
namespace {

using namespace std::chrono_literals;
using ::kspan::testing::AgentProcess;
using ::kspan::testing::FreeLoopbackPort;
using ::kspan::testing::MetricValue;
using ::kspan::testing::OtlpHttpTestServer;
using ::kspan::testing::OtlpTestServer;
using ::kspan::testing::ReceivedSpan;
using google::protobuf::util::MessageDifferencer;
namespace otlp_proto = ::kspan::testing::otlp_proto;

// One demo service: `node service.js` with its environment.
class NodeService {
 public:
  NodeService(const std::string& role, int port, std::map<std::string, std::string> env) {
    char tmpl[] = "/tmp/kspan-demo-XXXXXX";
    log_ = std::string(mkdtemp(tmpl)) + "/" + role + ".log";
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      setenv("ROLE", role.c_str(), 1);
      setenv("PORT", std::to_string(port).c_str(), 1);
      for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
      if (chdir(KSPAN_DEMO_DIR) != 0) _exit(126);
      execlp("node", "node", "service.js", nullptr);
      _exit(127);
    }
  }
  ~NodeService() { Stop(); }

  bool WaitListening(std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (kspan::testing::ReadFile(log_).find("listening") != std::string::npos) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }
  // SIGTERM: the SDK flushes its span processors, then the process exits.
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 200; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(50ms);
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  std::uint32_t pid() const { return static_cast<std::uint32_t>(pid_); }
  std::string log() const { return kspan::testing::ReadFile(log_); }

 private:
  std::string log_;
  pid_t pid_ = -1;
};

std::int64_t IntAttr(const ReceivedSpan& s, std::string_view key) {
  const auto* v = s.Attribute(key);
  return v ? v->int_value() : -1;
}

std::string StrAttr(const ReceivedSpan& s, std::string_view key) {
  const auto* v = s.Attribute(key);
  return v ? v->string_value() : "";
}

bool IsKernel(const ReceivedSpan& s) { return s.scope.name() == "kspan"; }

// The process a span belongs to: kernel spans carry process.pid, app spans
// have it in their resource.
std::int64_t Pid(const ReceivedSpan& s) { return IntAttr(s, "process.pid"); }

bool HasStringContaining(const ReceivedSpan& s, const std::string& needle) {
  for (const auto& kv : s.span.attributes()) {
    if (kv.value().has_string_value() &&
        kv.value().string_value().find(needle) != std::string::npos) {
      return true;
    }
  }
  return false;
}

TEST(Correlation, InstrumentedDemoTracesHoldKernelSpansUnderTheSpansThatContainThem) {
  KSPAN_REQUIRE_BPF();
  KSPAN_REQUIRE(std::system("node --version >/dev/null 2>&1") == 0,
                "node is not installed (scripts/setup.sh installs it)");
  KSPAN_REQUIRE(access(KSPAN_DEMO_DIR "/node_modules/@opentelemetry/sdk-node", F_OK) == 0,
                "the demo's npm packages are missing: npm ci --prefix " KSPAN_DEMO_DIR);

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
  std::map<std::string, std::vector<ReceivedSpan>> want;  // trace id -> app spans
  std::map<std::string, int> request_of;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    want.clear();
    request_of.clear();
    auto spans = reference.spans();
    for (const auto& s : spans) {
      for (int i = 0; i < kRequests; ++i) {
        if (s.span.kind() == otlp_proto::Span::SPAN_KIND_SERVER && s.span.parent_span_id().empty() &&
            HasStringContaining(s, "req=" + std::to_string(i))) {
          request_of[s.trace_id_hex()] = i;
        }
      }
    }
    for (const auto& s : spans) {
      if (request_of.contains(s.trace_id_hex())) want[s.trace_id_hex()].push_back(s);
    }
    // Each request: frontend SERVER + 2 CLIENT, backend 2 SERVER + 2 compute.
    bool complete = want.size() == kRequests;
    for (const auto& [t, v] : want) complete = complete && v.size() == 7;
    if (complete) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(want.size(), static_cast<std::size_t>(kRequests));
  for (const auto& [t, v] : want) ASSERT_EQ(v.size(), 7u) << "trace " << t;

  // kspan holds kernel spans for the join window, then exports.
  std::this_thread::sleep_for(3s);
  ASSERT_EQ(agent.Terminate(30s), 0) << agent.log();

  std::map<std::string, std::vector<ReceivedSpan>> got;
  for (const auto& s : backend_otlp.spans()) {
    if (request_of.contains(s.trace_id_hex())) got[s.trace_id_hex()].push_back(s);
  }

  for (const auto& [trace, app_spans] : want) {
    SCOPED_TRACE("request " + std::to_string(request_of[trace]) + " trace " + trace);
    const auto& spans = got[trace];
    std::map<std::string, const ReceivedSpan*> by_id;
    for (const auto& s : spans) {
      EXPECT_TRUE(by_id.emplace(s.span_id_hex(), &s).second)
          << "duplicated span " << s.span.name() << " " << s.span_id_hex();
    }
    // The SDK's spans, unchanged: span, resource and scope.
    for (const auto& a : app_spans) {
      auto it = by_id.find(a.span_id_hex());
      ASSERT_NE(it, by_id.end()) << "app span missing: " << a.span.name();
      std::string diff;
      MessageDifferencer differ;
      // An empty `status {}` and no status are the same OTLP span (the SDK
      // writes the former, kspan's encoder the latter); all else must match.
      differ.set_message_field_comparison(MessageDifferencer::EQUIVALENT);
      differ.ReportDifferencesToString(&diff);
      EXPECT_TRUE(differ.Compare(a.span, it->second->span))
          << "app span " << a.span.name() << " changed:\n" << diff;
      EXPECT_TRUE(MessageDifferencer::Equals(a.resource, it->second->resource));
      EXPECT_TRUE(MessageDifferencer::Equals(a.scope, it->second->scope));
    }
    // Nothing in the trace but the app's spans and kspan's.
    for (const auto& s : spans) {
      if (IsKernel(s)) continue;
      bool known = false;
      for (const auto& a : app_spans) known = known || a.span.span_id() == s.span.span_id();
      EXPECT_TRUE(known) << "unexpected span " << s.span.name();
    }

    int connects = 0, syscalls = 0, http_client = 0, http_server = 0;
    for (const auto& s : spans) {
      if (!IsKernel(s)) continue;
      SCOPED_TRACE(s.span.name() + " " + s.span_id_hex());
      // Not orphaned: its parent is in the same trace.
      ASSERT_FALSE(s.span.parent_span_id().empty());
      auto parent = by_id.find(s.parent_span_id_hex());
      ASSERT_NE(parent, by_id.end()) << "orphaned kernel span";
      const ReceivedSpan& p = *parent->second;
      // The parent contains it (app clocks stamp in milliseconds: 2 ms).
      constexpr std::uint64_t kTol = 2'000'000;
      EXPECT_LE(p.span.start_time_unix_nano(), s.span.start_time_unix_nano() + kTol);
      EXPECT_GE(p.span.end_time_unix_nano() + kTol, s.span.end_time_unix_nano());
      // Same process, unless placed by the trace context of an HTTP request.
      const bool http = !StrAttr(s, "http.request.method").empty();
      if (!http) {
        EXPECT_EQ(Pid(s), Pid(p));
      }
      if (s.span.name() == "tcp connect") {
        ++connects;
        EXPECT_EQ(static_cast<std::uint32_t>(Pid(s)), frontend_pid);
        EXPECT_EQ(IntAttr(s, "server.port"), backend_port);
      } else if (s.span.name().rfind("syscall ", 0) == 0) {
        ++syscalls;
      } else if (http && s.span.kind() == otlp_proto::Span::SPAN_KIND_CLIENT) {
        ++http_client;
        // Joins the trace where the app's injected traceparent says: the
        // app's CLIENT span of the same call.
        EXPECT_FALSE(IsKernel(p));
        EXPECT_EQ(p.span.kind(), otlp_proto::Span::SPAN_KIND_CLIENT);
        EXPECT_EQ(static_cast<std::uint32_t>(Pid(s)), frontend_pid);
        EXPECT_EQ(s.span.name(), "GET /work");
        EXPECT_EQ(IntAttr(s, "http.response.status_code"), 200);
      } else if (http && s.span.kind() == otlp_proto::Span::SPAN_KIND_SERVER) {
        if (static_cast<std::uint32_t>(Pid(s)) == backend_pid) {
          ++http_server;
          // The incoming traceparent's span: the frontend's CLIENT span.
          EXPECT_EQ(p.span.kind(), otlp_proto::Span::SPAN_KIND_CLIENT);
          EXPECT_EQ(static_cast<std::uint32_t>(Pid(p)), frontend_pid);
          EXPECT_EQ(s.span.name(), "GET /work");
          EXPECT_EQ(IntAttr(s, "http.response.status_code"), 200);
        }
      }
    }
    EXPECT_EQ(connects, 2) << "one TCP connect per backend call";
    EXPECT_GE(syscalls, 4) << "reads and writes of both services";
    EXPECT_EQ(http_client, 2) << "the frontend's two calls, from the wire";
    EXPECT_EQ(http_server, 2) << "the backend's two requests, from the wire";
  }
}

}  // namespace
}  // namespace kspan
