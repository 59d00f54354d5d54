// The correlation demo (demo/service.js: a frontend that calls a backend
// twice per request, both instrumented with the official OpenTelemetry SDK
// for Node.js) as the end-to-end tests drive it on this host, and the check
// every test of it makes: each request's trace, at the backend kspan exports
// to, holds the SDK's spans unchanged plus kspan's TCP connect, HTTP client,
// HTTP server and syscall spans, each the child of the span that contains it.
#pragma once

#include <fcntl.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "tests/privileged/agent_process.h"
#include "tests/privileged/privileged.h"
#include "tests/support/otlp_http_test_server.h"
#include "tests/support/otlp_test_server.h"

// BPF, node and the demo's npm packages, or the test skips (fails in CI).
#define KSPAN_REQUIRE_DEMO()                                                               \
  do {                                                                                     \
    KSPAN_REQUIRE_BPF();                                                                   \
    KSPAN_REQUIRE(std::system("node --version >/dev/null 2>&1") == 0,                      \
                  "node is not installed (scripts/setup.sh installs it)");                 \
    KSPAN_REQUIRE(access(KSPAN_DEMO_DIR "/node_modules/@opentelemetry/sdk-node", F_OK) == 0, \
                  "the demo's npm packages are missing: npm ci --prefix " KSPAN_DEMO_DIR); \
  } while (0)

namespace kspan::demo {

using namespace std::chrono_literals;
using ::kspan::testing::ReceivedSpan;
namespace otlp_proto = ::kspan::testing::otlp_proto;

// One demo service: `node service.js` with its environment (over the
// test's own, which carries no OTEL_ variables in CI).
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
      std::this_thread::sleep_for(20ms);
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

inline std::int64_t IntAttr(const ReceivedSpan& s, std::string_view key) {
  const auto* v = s.Attribute(key);
  return v ? v->int_value() : -1;
}

inline std::string StrAttr(const ReceivedSpan& s, std::string_view key) {
  const auto* v = s.Attribute(key);
  return v ? v->string_value() : "";
}

inline bool IsKernel(const ReceivedSpan& s) { return s.scope.name() == "kspan"; }

// The process a span belongs to: kernel spans carry process.pid, app spans
// have it in their resource.
inline std::int64_t Pid(const ReceivedSpan& s) { return IntAttr(s, "process.pid"); }

inline bool HasStringContaining(const ReceivedSpan& s, const std::string& needle) {
  for (const auto& kv : s.span.attributes()) {
    if (kv.value().has_string_value() &&
        kv.value().string_value().find(needle) != std::string::npos) {
      return true;
    }
  }
  return false;
}

// The traces of requests sent as /order?<marker>=<i>, i < n, as the SDK
// produced them (from the reference collector the services also export to):
// trace id -> its 7 app spans (frontend SERVER + 2 CLIENT, backend 2 SERVER
// + 2 compute), and trace id -> i. Waits until all are complete.
struct RequestTraces {
  std::map<std::string, std::vector<ReceivedSpan>> app_spans;
  std::map<std::string, int> request_of;
};

inline RequestTraces CollectRequestTraces(const kspan::testing::OtlpHttpTestServer& reference,
                                          const std::string& marker, int n,
                                          std::chrono::seconds timeout) {
  RequestTraces t;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    t = {};
    const auto spans = reference.spans();
    for (const auto& s : spans) {
      for (int i = 0; i < n; ++i) {
        if (s.span.kind() == otlp_proto::Span::SPAN_KIND_SERVER && s.span.parent_span_id().empty() &&
            HasStringContaining(s, marker + "=" + std::to_string(i))) {
          t.request_of[s.trace_id_hex()] = i;
        }
      }
    }
    for (const auto& s : spans) {
      if (t.request_of.contains(s.trace_id_hex())) t.app_spans[s.trace_id_hex()].push_back(s);
    }
    bool complete = t.app_spans.size() == static_cast<std::size_t>(n);
    for (const auto& [id, v] : t.app_spans) complete = complete && v.size() == 7;
    if (complete) break;
    std::this_thread::sleep_for(100ms);
  }
  return t;
}

// Which of the demo's services a span is (kernel spans by their process,
// app spans by their process or their service.name).
enum class Service { kFrontend, kBackend, kOther };

// How a setting (host or containers) tells the services apart, and what it
// checks beyond the shared rules.
struct TraceExpectations {
  std::function<Service(const ReceivedSpan&)> service_of;
  int backend_port = 0;
  // Slack for "the parent contains it": app clocks stamp in milliseconds.
  std::uint64_t tolerance_ns = 2'000'000;
  // Extra checks of a kernel span and its parent; `same_process`: placed
  // by its process (not by an HTTP request's trace context).
  std::function<void(const ReceivedSpan& kernel, const ReceivedSpan& parent, bool same_process)>
      more;
};

// The demo on the host: services by pid; a span placed by its process has
// its parent's pid.
struct DemoProcesses {
  std::uint32_t frontend_pid = 0;
  std::uint32_t backend_pid = 0;
  int backend_port = 0;

  TraceExpectations Expectations() const {
    TraceExpectations e;
    e.service_of = [f = frontend_pid, b = backend_pid](const ReceivedSpan& s) {
      const auto pid = static_cast<std::uint32_t>(Pid(s));
      return pid == f ? Service::kFrontend : pid == b ? Service::kBackend : Service::kOther;
    };
    e.backend_port = backend_port;
    e.more = [](const ReceivedSpan& s, const ReceivedSpan& p, bool same_process) {
      if (same_process) {
        EXPECT_EQ(Pid(s), Pid(p));
      }
    };
    return e;
  }
};

// Every request's trace among `exported` (what kspan sent its backend):
// the SDK's spans unchanged, nothing foreign, and kspan's connect, syscall,
// HTTP client and server spans nested under the spans that contain them.
inline void ExpectKernelSpansNestedInEveryTrace(const RequestTraces& want,
                                                const std::vector<ReceivedSpan>& exported,
                                                const TraceExpectations& expect) {
  using google::protobuf::util::MessageDifferencer;
  std::map<std::string, std::vector<ReceivedSpan>> got;
  for (const auto& s : exported) {
    if (want.request_of.contains(s.trace_id_hex())) got[s.trace_id_hex()].push_back(s);
  }
  for (const auto& [trace, app_spans] : want.app_spans) {
    SCOPED_TRACE("request " + std::to_string(want.request_of.at(trace)) + " trace " + trace);
    ASSERT_EQ(app_spans.size(), 7u);
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
      const Service service = expect.service_of(s);
      EXPECT_NE(service, Service::kOther) << "a kernel span of neither service in the trace";
      // Not orphaned: its parent is in the same trace.
      ASSERT_FALSE(s.span.parent_span_id().empty());
      auto parent = by_id.find(s.parent_span_id_hex());
      ASSERT_NE(parent, by_id.end()) << "orphaned kernel span";
      const ReceivedSpan& p = *parent->second;
      const std::uint64_t tol = expect.tolerance_ns;
      const bool http = !StrAttr(s, "http.request.method").empty();
      if (http && s.span.kind() == otlp_proto::Span::SPAN_KIND_SERVER && !IsKernel(p) &&
          p.span.kind() == otlp_proto::Span::SPAN_KIND_SERVER) {
        // The same request seen from the wire and by the SDK: it reaches the
        // socket before node has parsed it and begun its server span (more
        // so while a just-started node is still compiling its code), so the
        // two overlap and the kernel's begins first.
        EXPECT_LE(p.span.start_time_unix_nano(), s.span.end_time_unix_nano() + tol);
        EXPECT_GE(p.span.end_time_unix_nano() + tol, s.span.end_time_unix_nano());
      } else {
        // The parent contains it.
        EXPECT_LE(p.span.start_time_unix_nano(), s.span.start_time_unix_nano() + tol);
        EXPECT_GE(p.span.end_time_unix_nano() + tol, s.span.end_time_unix_nano());
      }
      // Same process, unless placed by the trace context of an HTTP request.
      if (!http) {
        EXPECT_EQ(expect.service_of(p), service);
      }
      if (expect.more) expect.more(s, p, !http);
      if (s.span.name() == "tcp connect") {
        ++connects;
        EXPECT_EQ(service, Service::kFrontend);
        EXPECT_EQ(IntAttr(s, "server.port"), expect.backend_port);
      } else if (s.span.name().rfind("syscall ", 0) == 0) {
        ++syscalls;
      } else if (http && s.span.kind() == otlp_proto::Span::SPAN_KIND_CLIENT) {
        ++http_client;
        // Joins the trace where the app's injected traceparent says: the
        // app's CLIENT span of the same call.
        EXPECT_FALSE(IsKernel(p));
        EXPECT_EQ(p.span.kind(), otlp_proto::Span::SPAN_KIND_CLIENT);
        EXPECT_EQ(service, Service::kFrontend);
        EXPECT_EQ(s.span.name(), "GET /work");
        EXPECT_EQ(IntAttr(s, "http.response.status_code"), 200);
      } else if (http && s.span.kind() == otlp_proto::Span::SPAN_KIND_SERVER &&
                 service == Service::kBackend) {
        ++http_server;
        // The incoming traceparent's span: the frontend's CLIENT span.
        EXPECT_EQ(p.span.kind(), otlp_proto::Span::SPAN_KIND_CLIENT);
        EXPECT_EQ(expect.service_of(p), Service::kFrontend);
        EXPECT_EQ(s.span.name(), "GET /work");
        EXPECT_EQ(IntAttr(s, "http.response.status_code"), 200);
      }
    }
    EXPECT_EQ(connects, 2) << "one TCP connect per backend call";
    EXPECT_GE(syscalls, 4) << "reads and writes of both services";
    EXPECT_EQ(http_client, 2) << "the frontend's two calls, from the wire";
    EXPECT_EQ(http_server, 2) << "the backend's two requests, from the wire";
  }
}

}  // namespace kspan::demo
