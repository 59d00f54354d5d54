// kspan on a container host, with real containers: the correlation demo's
// two services (../correlation/demo, official OpenTelemetry SDK for
// Node.js) run in two podman containers built from Debian packages
// (build-image.sh), each in its own pid and network namespace, on a
// dedicated bridge network. They export over OTLP/HTTP to a collector that
// listens on the bridge's gateway, a host address, as kspan's receiver
// would.
//
// This file proves the plumbing (containers, namespaces, cgroups, the
// network path and the SDK's export through it); the fixture is where a
// test adds a running kspan agent and its assertions on kernel spans:
// network().gateway() is the host address to put kspan's receiver on, and
// StartDemo()'s extra environment reaches both services
// (KSPAN_OTLP_URL=http://<gateway>:<port>/v1/traces).
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "tests/privileged/privileged.h"
#include "tests/support/otlp_http_test_server.h"
#include "tests/support/podman.h"

namespace kspan {
namespace {

using namespace std::chrono_literals;
using ::kspan::testing::ContainerSpec;
using ::kspan::testing::OtlpHttpTestServer;
using ::kspan::testing::PodmanContainer;
using ::kspan::testing::PodmanNetwork;
using ::kspan::testing::ReceivedSpan;
namespace otlp_proto = ::kspan::testing::otlp_proto;

// In CI (KSPAN_REQUIRE_BPF=1, or CI=true) a container test that cannot run
// fails; elsewhere it is skipped with the reason.
bool ContainersRequired() {
  const char* ci = std::getenv("CI");
  return ::kspan::testing::BpfRequired() || (ci != nullptr && std::strcmp(ci, "true") == 0);
}

#define KSPAN_REQUIRE(cond, why)                       \
  do {                                                 \
    if (!(cond)) {                                     \
      if (ContainersRequired()) FAIL() << (why);       \
      GTEST_SKIP() << (why);                           \
    }                                                  \
  } while (0)

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The namespace a process is in, e.g. "pid:[4026532451]".
std::string Namespace(int pid, const char* kind) {
  const std::string link = "/proc/" + std::to_string(pid) + "/ns/" + kind;
  char buf[64] = {};
  const ssize_t n = readlink(link.c_str(), buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
}

// `pid` as its own (innermost) pid namespace numbers it: the last NSpid
// field of /proc/<pid>/status.
long PidInOwnNamespace(int host_pid) {
  std::istringstream in(ReadFile("/proc/" + std::to_string(host_pid) + "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("NSpid:", 0) != 0) continue;
    std::vector<std::string> f = absl::StrSplit(line.substr(6), absl::ByAnyChar(" \t"),
                                                absl::SkipEmpty());
    return f.empty() ? -1 : std::atol(f.back().c_str());
  }
  return -1;
}

std::string StrResource(const ReceivedSpan& s, std::string_view key) {
  const auto* v = s.ResourceAttribute(key);
  return v ? v->string_value() : "";
}

std::int64_t IntResource(const ReceivedSpan& s, std::string_view key) {
  const auto* v = s.ResourceAttribute(key);
  return v ? v->int_value() : -1;
}

bool HasStringContaining(const ReceivedSpan& s, const std::string& needle) {
  for (const auto& kv : s.span.attributes()) {
    if (kv.value().has_string_value() &&
        kv.value().string_value().find(needle) != std::string::npos) {
      return true;
    }
  }
  return false;
}

// The helpers themselves: arguments reach the container verbatim (no shell
// in between), Exec reports output and status, Stop reports how the
// container ended, WaitLog gives up once the container is gone.
TEST(PodmanHelpers, ArgumentsPassVerbatimAndStatusesAreReported) {
  std::string why;
  KSPAN_REQUIRE(::kspan::testing::PodmanUsable(&why), why);
  ContainerSpec spec;
  spec.name = "kspan-e2e-" + std::to_string(getpid()) + "-helpers";
  const std::string tricky = "a'b \"c\" $(touch /tmp/x); `id` *";
  spec.env = {{"TRICKY", tricky}};
  // sleep as pid 1 ignores SIGTERM: Stop has to kill it.
  spec.command = {"sh", "-c", "printf 'ready %s\\n' \"$TRICKY\"; exec sleep infinity"};
  auto c = PodmanContainer::Run(spec);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->WaitLog("ready " + tricky, 20s)) << c->logs();

  auto out = c->Exec({"printf", "%s", tricky});
  EXPECT_EQ(out.status, 0) << out.Describe();
  EXPECT_EQ(out.out, tricky);
  EXPECT_EQ(c->Exec({"test", "-e", "/tmp/x"}).status, 1) << "a shell ran the variable";
  EXPECT_EQ(c->Exec({"sh", "-c", "exit 7"}).status, 7);

  auto code = c->Stop(1s);
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 137) << "SIGKILL after the grace period";
  const auto t = std::chrono::steady_clock::now();
  EXPECT_FALSE(c->WaitLog("never printed", 20s));
  EXPECT_LT(std::chrono::steady_clock::now() - t, 5s) << "WaitLog waited on a stopped container";
}

// The demo's two services in two containers on their own bridge network,
// and a reference OTLP/HTTP collector on the bridge's gateway. Members are
// destroyed in reverse order: containers, then the collector, then the
// network, also when a test fails half-way.
class ContainerDemo : public ::testing::Test {
 protected:
  // Each service has its own network namespace: both can use one port.
  static constexpr int kServicePort = 8080;
  static constexpr char kFrontendService[] = "kspan-ctr-frontend";
  static constexpr char kBackendService[] = "kspan-ctr-backend";

  void SetUp() override {
    std::string why;
    KSPAN_REQUIRE(::kspan::testing::PodmanUsable(&why), why);
    KSPAN_REQUIRE(access(KSPAN_DEMO_DIR "/node_modules/@opentelemetry/sdk-node", F_OK) == 0,
                  "the demo's npm packages are missing: npm ci --prefix " KSPAN_DEMO_DIR);
    auto net = PodmanNetwork::Create();
    ASSERT_TRUE(net.ok()) << net.status();
    network_.emplace(std::move(*net));
    // The gateway address exists once a container is on the bridge; the
    // collector must listen there before the services start.
    const absl::Status up = network_->BringUpBridge();
    ASSERT_TRUE(up.ok()) << up;
    reference_ = std::make_unique<OtlpHttpTestServer>(std::nullopt, network_->gateway());
  }

  // Starts the backend, then the frontend pointed at the backend's address,
  // and waits until both listen. `extra_env` goes to both, over the
  // defaults (e.g. KSPAN_OTLP_URL); the reference collector always gets
  // their spans.
  void StartDemo(const std::map<std::string, std::string>& extra_env = {}) {
    std::map<std::string, std::string> env = {
        {"PORT", std::to_string(kServicePort)},
        {"HOST", "0.0.0.0"},
        {"REFERENCE_OTLP_URL", reference_->base_url() + "/v1/traces"},
        {"EXPORT_DELAY_MS", "100"},
        // NodeSDK also starts OTLP metrics (and logs) exporters to
        // localhost:4318 by default; nobody listens there, and their retries
        // held each service's shutdown for some 8 s.
        {"OTEL_METRICS_EXPORTER", "none"},
        {"OTEL_LOGS_EXPORTER", "none"},
    };
    for (const auto& [key, value] : extra_env) env[key] = value;
    auto start = [&](const std::string& role, const std::string& service,
                     std::map<std::string, std::string> e) -> absl::StatusOr<PodmanContainer> {
      e["ROLE"] = role;
      e["OTEL_SERVICE_NAME"] = service;
      ContainerSpec spec;
      spec.name = network_->name() + "-" + role;
      spec.network = network_->name();
      spec.env = std::move(e);
      spec.mounts = {{KSPAN_DEMO_DIR, "/app", /*read_only=*/true}};
      // node is the container's first process: no shell or init between.
      spec.command = {"node", "/app/service.js"};
      return PodmanContainer::Run(spec);
    };
    auto backend = start("backend", kBackendService, env);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_.emplace(std::move(*backend));
    env["BACKEND"] = "http://" + backend_->ip() + ":" + std::to_string(kServicePort);
    auto frontend = start("frontend", kFrontendService, env);
    ASSERT_TRUE(frontend.ok()) << frontend.status();
    frontend_.emplace(std::move(*frontend));
    ASSERT_TRUE(backend_->WaitLog("listening", 30s)) << backend_->logs();
    ASSERT_TRUE(frontend_->WaitLog("listening", 30s)) << frontend_->logs();
  }

  // `n` requests to the frontend at once, from the host over the bridge;
  // the HTTP status of each (-1: no answer).
  std::vector<int> SendBurst(int n) {
    std::vector<int> status(static_cast<std::size_t>(n), -1);
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([this, i, &status] {
        httplib::Client client(frontend_->ip(), kServicePort);
        client.set_connection_timeout(10s);
        client.set_read_timeout(20s);
        if (auto res = client.Get("/order?req=" + std::to_string(i))) {
          status[static_cast<std::size_t>(i)] = res->status;
        }
      });
    }
    for (auto& t : threads) t.join();
    return status;
  }

  // SIGTERM to both: the SDK flushes its span processors, then exits 0.
  void StopDemo() {
    for (auto* c : {&frontend_, &backend_}) {
      auto code = (*c)->Stop(10s);
      ASSERT_TRUE(code.ok()) << code.status();
      EXPECT_EQ(*code, 0) << (*c)->name() << " exited with " << *code << ":\n" << (*c)->logs();
    }
  }

  std::string Logs() const {
    std::string s;
    for (const auto* c : {&backend_, &frontend_}) {
      if (*c) s += "--- " + (*c)->name() + "\n" + (*c)->logs();
    }
    return s;
  }

  const PodmanNetwork& network() const { return *network_; }
  OtlpHttpTestServer& reference() { return *reference_; }
  const PodmanContainer& frontend() const { return *frontend_; }
  const PodmanContainer& backend() const { return *backend_; }

  std::optional<PodmanNetwork> network_;
  std::unique_ptr<OtlpHttpTestServer> reference_;
  std::optional<PodmanContainer> backend_;
  std::optional<PodmanContainer> frontend_;
};

TEST_F(ContainerDemo, SdkTracesFromTwoContainersReachACollectorOnTheBridge) {
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_NO_FATAL_FAILURE(StartDemo());
  const auto started = std::chrono::steady_clock::now();

  // Each service is a container of its own: its own pid and network
  // namespace (not the host's, not the other's), its cgroup named by the
  // container id podman reports, and node its first process.
  struct Expect {
    const PodmanContainer* c;
    long local_pid;
  };
  std::map<std::string, Expect> services;  // service.name -> container
  std::set<std::string> pid_ns = {Namespace(getpid(), "pid")};
  std::set<std::string> net_ns = {Namespace(getpid(), "net")};
  for (const auto& [service, c] :
       {std::pair{kFrontendService, &frontend()}, std::pair{kBackendService, &backend()}}) {
    SCOPED_TRACE(c->name());
    ASSERT_EQ(c->id().size(), 64u) << c->id();
    ASSERT_GT(c->host_pid(), 0);
    EXPECT_FALSE(c->ip().empty());
    EXPECT_TRUE(pid_ns.insert(Namespace(c->host_pid(), "pid")).second) << "pid namespace shared";
    EXPECT_TRUE(net_ns.insert(Namespace(c->host_pid(), "net")).second) << "net namespace shared";
    const long local = PidInOwnNamespace(c->host_pid());
    EXPECT_EQ(local, 1) << "node is not the container's first process";
    EXPECT_NE(local, c->host_pid());
    const std::string cgroup = ReadFile("/proc/" + std::to_string(c->host_pid()) + "/cgroup");
    int lines = 0;
    // One line per hierarchy (v1 controllers and the unified "0::"); the
    // container's cgroup in each, whatever the cgroup manager calls it.
    for (const std::string& line :
         std::vector<std::string>(absl::StrSplit(cgroup, '\n', absl::SkipEmpty()))) {
      ++lines;
      EXPECT_NE(line.find(c->id()), std::string::npos) << "cgroup without the id: " << line;
    }
    EXPECT_GT(lines, 0);
    services[service] = {c, local};
  }

  // A burst at once, as soon as both listen: no warm-up request.
  constexpr int kRequests = 8;
  const std::vector<int> status = SendBurst(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_EQ(status[static_cast<std::size_t>(i)], 200) << "request " << i << "\n" << Logs();
  }
  const auto served = std::chrono::steady_clock::now();
  ASSERT_NO_FATAL_FAILURE(StopDemo());
  const auto stopped = std::chrono::steady_clock::now();

  // Stopping flushed the SDK: everything is at the collector now, sent from
  // the containers' own addresses over the bridge.
  std::set<std::string> senders;
  for (const auto& r : reference().requests()) senders.insert(r.remote_addr);
  EXPECT_EQ(senders, (std::set<std::string>{frontend().ip(), backend().ip()}));

  std::map<std::string, std::vector<ReceivedSpan>> traces;  // trace id -> spans
  std::map<int, std::string> trace_of;                       // request -> trace id
  for (const auto& s : reference().spans()) {
    traces[s.trace_id_hex()].push_back(s);
    for (int i = 0; i < kRequests; ++i) {
      if (s.span.kind() == otlp_proto::Span::SPAN_KIND_SERVER &&
          s.span.parent_span_id().empty() &&
          HasStringContaining(s, "req=" + std::to_string(i))) {
        EXPECT_FALSE(trace_of.contains(i)) << "two root spans for request " << i;
        trace_of[i] = s.trace_id_hex();
      }
    }
  }
  ASSERT_EQ(trace_of.size(), static_cast<std::size_t>(kRequests)) << Logs();

  for (const auto& [request, trace] : trace_of) {
    SCOPED_TRACE("request " + std::to_string(request) + " trace " + trace);
    const auto& spans = traces[trace];
    // frontend SERVER + 2 CLIENT, backend 2 SERVER + 2 compute.
    ASSERT_EQ(spans.size(), 7u);
    std::map<std::string, const ReceivedSpan*> by_id;
    for (const auto& s : spans) by_id[s.span_id_hex()] = &s;
    ASSERT_EQ(by_id.size(), 7u) << "duplicated span ids";
    auto parent_of = [&](const ReceivedSpan& s) -> const ReceivedSpan* {
      auto it = by_id.find(s.parent_span_id_hex());
      return it == by_id.end() ? nullptr : it->second;
    };
    std::map<std::string, int> children;
    for (const auto& s : spans) ++children[s.parent_span_id_hex()];
    // "<service> <kind> under <parent's service> <parent's kind> [compute]
    // children=<n>" -> how many spans of the trace have that place in it.
    std::map<std::string, int> shape;
    for (const auto& s : spans) {
      const std::string service = StrResource(s, "service.name");
      ASSERT_TRUE(services.contains(service)) << "unknown service " << service;
      // The SDK reports the pid its own namespace gives it, not the host's.
      EXPECT_EQ(IntResource(s, "process.pid"), services[service].local_pid) << service;
      EXPECT_NE(IntResource(s, "process.pid"), services[service].c->host_pid()) << service;
      const ReceivedSpan* p = parent_of(s);
      std::string key = service + " " + otlp_proto::Span::SpanKind_Name(s.span.kind());
      if (s.span.parent_span_id().empty()) {
        key += " root";
      } else {
        ASSERT_NE(p, nullptr) << s.span.name() << ": parent not in the trace";
        key += " under " + StrResource(*p, "service.name") + " " +
               otlp_proto::Span::SpanKind_Name(p->span.kind());
      }
      if (s.span.name() == "compute") key += " compute";
      key += " children=" + std::to_string(children[s.span_id_hex()]);
      ++shape[key];
    }
    // The root calls the backend twice; each call is served by its own
    // backend SERVER span, which holds one compute span.
    const std::string fe = kFrontendService, be = kBackendService;
    EXPECT_EQ(shape,
              (std::map<std::string, int>{
                  {fe + " SPAN_KIND_SERVER root children=2", 1},
                  {fe + " SPAN_KIND_CLIENT under " + fe + " SPAN_KIND_SERVER children=1", 2},
                  {be + " SPAN_KIND_SERVER under " + fe + " SPAN_KIND_CLIENT children=1", 2},
                  {be + " SPAN_KIND_INTERNAL under " + be + " SPAN_KIND_SERVER compute children=0",
                   2},
              }));
  }

  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  auto ms = [](auto d) { return static_cast<long long>(duration_cast<milliseconds>(d).count()); };
  std::printf("KSPAN-TIMING start+listening %lld ms, burst %lld ms, stop %lld ms\n",
              ms(started - t0), ms(served - started), ms(stopped - served));
}

}  // namespace
}  // namespace kspan
