// Acceptance: the real kspan binary traces a real nginx (`--comm nginx`),
// curl calls it with a W3C traceparent, and an OTLP receiver gets the
// kernel SERVER span in that trace, child of the caller's span.
//
// Needs nginx and curl from Debian (scripts/setup.sh installs them); with
// KSPAN_REQUIRE_BPF=1 (CI) their absence fails it. An end-to-end test of the
// host (label e2e), not part of the privileged suite the vm-tests guests run.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "tests/privileged/agent_process.h"
#include "tests/privileged/privileged.h"
#include "tests/support/otlp_test_server.h"

namespace kspan {
namespace {

using ::kspan::testing::AgentProcess;
using ::kspan::testing::OtlpTestServer;
using ::kspan::testing::ReceivedSpan;

bool Executable(const char* path) { return access(path, X_OK) == 0; }

// nginx in the foreground with a private prefix and a loopback port.
class Nginx {
 public:
  explicit Nginx(int port) : port_(port) {
    char tmpl[] = "/tmp/kspan-nginx-XXXXXX";
    dir_ = mkdtemp(tmpl);
    chmod(dir_.c_str(), 0755);  // workers run as nobody
    std::ofstream conf(dir_ + "/nginx.conf");
    conf << "daemon off;\nworker_processes 1;\npid " << dir_ << "/nginx.pid;\n"
         << "error_log " << dir_ << "/error.log;\n"
         << "events { worker_connections 64; }\n"
         << "http {\n  access_log off;\n"
         << "  client_body_temp_path " << dir_ << "/body;\n"
         << "  proxy_temp_path " << dir_ << "/proxy;\n"
         << "  fastcgi_temp_path " << dir_ << "/fastcgi;\n"
         << "  uwsgi_temp_path " << dir_ << "/uwsgi;\n"
         << "  scgi_temp_path " << dir_ << "/scgi;\n"
         << "  server {\n    listen 127.0.0.1:" << port << ";\n"
         << "    location / { return 200 \"hello from nginx\\n\"; }\n"
         << "    location /missing { return 404; }\n"
         << "    location /broken { return 500 \"broken\\n\"; }\n"
         << "  }\n}\n";
    conf.close();
    pid_ = fork();
    if (pid_ == 0) {
      execl("/usr/sbin/nginx", "nginx", "-p", dir_.c_str(), "-c", (dir_ + "/nginx.conf").c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~Nginx() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    std::system(("rm -rf " + dir_).c_str());
  }
  bool WaitListening(std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto c = ::kspan::testing::ConnectLoopback(AF_INET, port_);
      if (c.fd >= 0) close(c.fd);
      if (c.err == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  std::string error_log() const { return ::kspan::testing::ReadFile(dir_ + "/error.log"); }

 private:
  int port_;
  std::string dir_;
  pid_t pid_ = -1;
};

std::string Curl(int port, const std::string& path, const std::string& traceparent) {
  const std::string cmd = "curl -s -o /dev/null -w '%{http_code}' -H 'traceparent: " +
                          traceparent + "' 'http://127.0.0.1:" + std::to_string(port) + path +
                          "'";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return "";
  char buf[16] = {};
  std::string out = fgets(buf, sizeof(buf), p) ? buf : "";
  pclose(p);
  return out;
}

TEST(HttpNginx, ServerSpanJoinsTheCallersTrace) {
  KSPAN_REQUIRE_BPF();
  if (!Executable("/usr/sbin/nginx") || !Executable("/usr/bin/curl")) {
    const char* why = "nginx or curl is not installed (apt-get install nginx-light curl)";
    if (::kspan::testing::BpfRequired()) FAIL() << why;
    GTEST_SKIP() << why;
  }
  OtlpTestServer receiver;
  AgentProcess agent({"--otlp-endpoint", receiver.endpoint(), "--no-console", "--comm", "nginx"});
  ASSERT_TRUE(agent.WaitReady(std::chrono::seconds(60))) << agent.log();
  const int port = ::kspan::testing::FreeLoopbackPort();
  Nginx nginx(port);
  ASSERT_TRUE(nginx.WaitListening(std::chrono::seconds(10))) << nginx.error_log();

  struct Call {
    std::string path, trace, parent, want_path;
    int status;
  };
  const std::vector<Call> calls = {
      {"/hello?user=secret", "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "/hello", 200},
      {"/missing", "1af7651916cd43dd8448eb211c80319c", "c7ad6b7169203331", "/missing", 404},
      {"/broken", "2af7651916cd43dd8448eb211c80319c", "d7ad6b7169203331", "/broken", 500},
  };
  for (const auto& c : calls) {
    ASSERT_EQ(Curl(port, c.path, "00-" + c.trace + "-" + c.parent + "-01"),
              std::to_string(c.status));
  }
  auto server_span = [&](const std::vector<ReceivedSpan>& spans, const Call& c) {
    const ReceivedSpan* found = nullptr;
    for (const auto& s : spans) {
      if (s.trace_id_hex() == c.trace && s.Attribute("http.request.method") != nullptr &&
          s.span.kind() == opentelemetry::proto::trace::v1::Span::SPAN_KIND_SERVER) {
        found = &s;
      }
    }
    return found;
  };
  ASSERT_TRUE(receiver.WaitForSpans(
      [&](const auto& spans) {
        for (const auto& c : calls) {
          if (server_span(spans, c) == nullptr) return false;
        }
        return true;
      },
      std::chrono::seconds(30)))
      << "received " << receiver.spans().size() << " spans\n"
      << agent.log();
  const auto spans = receiver.spans();
  for (const auto& c : calls) {
    SCOPED_TRACE(c.path);
    const ReceivedSpan* s = server_span(spans, c);
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->span.name(), "GET " + c.want_path);
    EXPECT_EQ(s->parent_span_id_hex(), c.parent);
    for (const char* key : {"url.path", "http.response.status_code", "server.port", "server.address",
                            "network.protocol.version"}) {
      ASSERT_NE(s->Attribute(key), nullptr) << key;
    }
    EXPECT_EQ(s->Attribute("http.request.method")->string_value(), "GET");
    EXPECT_EQ(s->Attribute("url.path")->string_value(), c.want_path);
    EXPECT_EQ(s->Attribute("http.response.status_code")->int_value(), c.status);
    EXPECT_EQ(s->Attribute("server.port")->int_value(), port);
    EXPECT_EQ(s->Attribute("server.address")->string_value(), "127.0.0.1");
    EXPECT_EQ(s->Attribute("network.protocol.version")->string_value(), "1.1");
    EXPECT_EQ(s->span.flags() & 0xffu, 1u);
    EXPECT_EQ(s->span.status().code(),
              c.status >= 500 ? opentelemetry::proto::trace::v1::Status::STATUS_CODE_ERROR
                              : opentelemetry::proto::trace::v1::Status::STATUS_CODE_UNSET);
    EXPECT_EQ(s->Attribute("url.query"), nullptr);
    EXPECT_LT(s->span.start_time_unix_nano(), s->span.end_time_unix_nano());
  }
  EXPECT_EQ(agent.Terminate(std::chrono::seconds(20)), 0) << agent.log();
}

}  // namespace
}  // namespace kspan
