// Issue #18, finding 9: after load and attach the agent keeps only the
// capabilities it still uses (docs/operations.md ("What runs as root, and what it keeps")), on every one of
// its threads, with no_new_privs; says so in its log and in `kspan status`;
// and still captures, identifies another user's process, receives and
// exports, and shuts down (pins removed) with what it kept.
#include <gtest/gtest.h>
#include <httplib.h>
#include <dirent.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/privileged/agent_process.h"
#include "tests/privileged/privileged.h"
#include "tests/support/otlp_test_server.h"

namespace kspan {
namespace {

using ::kspan::testing::AgentProcess;
using ::kspan::testing::Listener;
using ::kspan::testing::OtlpTestServer;
using ::kspan::testing::ReceivedSpan;

// The documented run-time set (docs/operations.md ("What runs as root, and what it keeps")):
// CAP_DAC_READ_SEARCH (2) and CAP_SYS_PTRACE (19), and CAP_BPF (39) on
// kernels before 6.5 with kernel.unprivileged_bpf_disabled set. Ports here
// are all ephemeral, so no CAP_NET_BIND_SERVICE.
bool KernelNeedsCapBpf() {
  utsname u{};
  int major = 0, minor = 0;
  if (uname(&u) == 0 && std::sscanf(u.release, "%d.%d", &major, &minor) == 2 &&
      (major > 6 || (major == 6 && minor >= 5))) {
    return false;
  }
  std::ifstream in("/proc/sys/kernel/unprivileged_bpf_disabled");
  int disabled = 1;
  return !(in >> disabled) || disabled != 0;
}
std::uint64_t RunTimeSet() {
  return (1ull << 2) | (1ull << 19) | (KernelNeedsCapBpf() ? 1ull << 39 : 0);
}
std::vector<std::string> RunTimeNames() {
  std::vector<std::string> names = {"CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"};
  if (KernelNeedsCapBpf()) names.push_back("CAP_BPF");
  return names;
}
std::string KeptText() {
  std::string text = "kept ";
  for (const auto& n : RunTimeNames()) text += (text.size() > 5 ? ", " : "") + n;
  return text + "; dropped all others";
}

std::string PinDir() { return ::kspan::testing::TestPinDir() + "-privileges"; }

std::string WriteConfig(const std::string& dir, const std::string& yaml) {
  const std::string path = dir + "/kspan.yaml";
  std::ofstream(path) << "bpf: {pin_path: " << PinDir() << "}\n" << yaml;
  return path;
}

std::string TempDir() {
  char tmpl[] = "/tmp/kspan-privileges-XXXXXX";
  return mkdtemp(tmpl);
}

// One thread's capability lines of /proc/<pid>/task/<tid>/status.
struct ThreadCaps {
  std::uint64_t inh = 0, prm = 0, eff = 0, bnd = 0, amb = 0;
  int no_new_privs = -1;
};

std::map<int, ThreadCaps> CapsOfEveryThread(pid_t pid) {
  std::map<int, ThreadCaps> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (const dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(dir + "/" + e->d_name + "/status");
    ThreadCaps c;
    bool read = false;  // a thread that exited after readdir has no status left
    std::string line;
    while (std::getline(in, line)) {
      auto hex = [&line](const char* key, std::uint64_t* v) {
        if (line.rfind(key, 0) == 0) *v = std::stoull(line.substr(line.find(':') + 1), nullptr, 16);
      };
      hex("CapInh:", &c.inh);
      hex("CapPrm:", &c.prm);
      hex("CapEff:", &c.eff);
      hex("CapBnd:", &c.bnd);
      hex("CapAmb:", &c.amb);
      if (line.rfind("NoNewPrivs:", 0) == 0) {
        c.no_new_privs = std::stoi(line.substr(11));
        read = true;  // the last of the lines read, after the Cap* lines
      }
    }
    // gRPC's and libcurl's short-lived threads come and go: one that ended
    // between the listing and the read is not a thread the agent runs.
    if (read) out[std::atoi(e->d_name)] = c;
  }
  closedir(d);
  return out;
}

std::uint64_t OwnEffective() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("CapEff:", 0) == 0) return std::stoull(line.substr(7), nullptr, 16);
  }
  return 0;
}

std::string Output(const std::string& command) {
  std::string out;
  if (FILE* p = popen(command.c_str(), "r")) {
    char buf[4096];
    while (std::size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    pclose(p);
  }
  return out;
}

// A process of another user (nobody) whose environment names its service:
// it connects to `port` and stays a while, so the agent reads its /proc
// (environ, exe: another user's, which takes CAP_SYS_PTRACE and
// CAP_DAC_READ_SEARCH) while it lives.
pid_t ConnectAsNobody(int port) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(126);
    const std::string script =
        "exec 3<>/dev/tcp/127.0.0.1/" + std::to_string(port) + "; sleep 3";
    // /usr/bin/bash: where Debian 12 (merged /usr) has it, and where the VM
    // matrix copies it (vm-tests/run-matrix.sh GUEST_TOOLS).
    char* const argv[] = {const_cast<char*>("/usr/bin/bash"), const_cast<char*>("-c"),
                          const_cast<char*>(script.c_str()), nullptr};
    char* const envp[] = {const_cast<char*>("OTEL_SERVICE_NAME=kspan-nobody-service"),
                          const_cast<char*>("PATH=/usr/bin:/bin"), nullptr};
    execve(argv[0], argv, envp);
    _exit(127);
  }
  return pid;
}

TEST(AgentPrivileges, EveryThreadKeepsOnlyTheRunTimeSetAndTheAgentStillWorks) {
  KSPAN_REQUIRE_BPF();
  OtlpTestServer backend;
  const std::string dir = TempDir();
  const std::string config = WriteConfig(dir, "");
  AgentProcess agent({"-c", config, "--otlp-endpoint", backend.endpoint(), "--no-console"});
  ASSERT_TRUE(agent.WaitReady(std::chrono::seconds(60))) << agent.log();

  // Work for every kind of thread: an OTLP/HTTP request with one app span,
  // a kernel span of another user's process, exports to the backend.
  Listener listener(AF_INET);
  const pid_t nobody = ConnectAsNobody(listener.port());
  ASSERT_GT(nobody, 0);
  {
    httplib::Client receiver("127.0.0.1", agent.receiver_http_port());
    const std::string body = R"({"resourceSpans":[{"resource":{"attributes":[{"key":"service.name",
        "value":{"stringValue":"kspan-privileges-app"}}]},"scopeSpans":[{"spans":[{
        "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"app",
        "kind":2,"startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]})";
    auto res = receiver.Post("/v1/traces", body, "application/json");
    ASSERT_TRUE(res) << agent.log();
    EXPECT_EQ(res->status, 200) << res->body;
  }
  const bool exported = backend.WaitForSpans(
      [&](const auto& spans) {
        bool app = false, nobody_connect = false;
        for (const auto& s : spans) {
          app = app || s.span.name() == "app";
          const auto* svc = s.ResourceAttribute("service.name");
          const auto* port = s.Attribute("network.peer.port");
          nobody_connect = nobody_connect ||
                           (s.span.name() == "tcp connect" && port &&
                            port->int_value() == listener.port() && svc &&
                            svc->string_value() == "kspan-nobody-service");
        }
        return app && nobody_connect;
      },
      std::chrono::seconds(30));
  waitpid(nobody, nullptr, 0);
  EXPECT_TRUE(exported) << "the app span and the connect of nobody's process (named from its "
                           "environment) should reach the backend\n"
                        << agent.log();

  // Every thread, whenever it was started (gRPC and libcurl start theirs
  // lazily, so after the work above).
  const auto threads = CapsOfEveryThread(agent.pid());
  EXPECT_GE(threads.size(), 5u) << "the agent runs reader, pipeline, admin and receiver threads";
  for (const auto& [tid, c] : threads) {
    SCOPED_TRACE("thread " + std::to_string(tid));
    EXPECT_EQ(c.eff, RunTimeSet());
    EXPECT_EQ(c.prm, RunTimeSet());
    EXPECT_EQ(c.bnd, RunTimeSet());
    EXPECT_EQ(c.inh, 0u);
    EXPECT_EQ(c.amb, 0u);
    EXPECT_EQ(c.no_new_privs, 1);
  }

  // Said in the log, in /status and by `kspan status`.
  EXPECT_NE(agent.log().find("privileges: " + KeptText() + "; no_new_privs"),
            std::string::npos)
      << agent.log();
  httplib::Client admin("127.0.0.1", agent.admin_port());
  auto res = admin.Get("/status");
  ASSERT_TRUE(res && res->status == 200);
  const auto status = nlohmann::json::parse(res->body);
  EXPECT_EQ(status["privileges"]["effective"], nlohmann::json(RunTimeNames()))
      << res->body;
  EXPECT_EQ(status["privileges"]["no_new_privs"], true);
  const std::string printed = Output(::kspan::testing::KspanBinary() + " status --admin 127.0.0.1:" +
                                  std::to_string(agent.admin_port()));
  EXPECT_NE(printed.find("privileges: " + KeptText() + "; no_new_privs\n"),
            std::string::npos)
      << printed;

  // Shutdown with the kept set: links destroyed, pins removed, exit 0.
  EXPECT_EQ(agent.Terminate(std::chrono::seconds(20)), 0) << agent.log();
  struct stat st {};
  EXPECT_NE(stat(PinDir().c_str(), &st), 0) << "pin directory left behind\n" << agent.log();
  EXPECT_EQ(agent.log().find("cannot remove pin"), std::string::npos) << agent.log();
}

TEST(AgentPrivileges, DropCanBeTurnedOff) {
  KSPAN_REQUIRE_BPF();
  const std::string dir = TempDir();
  const std::string config = WriteConfig(dir, "security: {drop_capabilities: false}\n");
  AgentProcess agent({"-c", config, "--no-console"});
  ASSERT_TRUE(agent.WaitReady(std::chrono::seconds(60))) << agent.log();
  const std::uint64_t mine = OwnEffective();
  for (const auto& [tid, c] : CapsOfEveryThread(agent.pid())) {
    SCOPED_TRACE("thread " + std::to_string(tid));
    EXPECT_EQ(c.eff, mine);
    EXPECT_EQ(c.no_new_privs, 0);
  }
  EXPECT_NE(agent.log().find("privileges: not dropped (security.drop_capabilities: false)"),
            std::string::npos)
      << agent.log();
  EXPECT_EQ(agent.Terminate(std::chrono::seconds(20)), 0) << agent.log();
}

}  // namespace
}  // namespace kspan
