// The real kspan binary as a child process of a test: started with a private
// state directory and admin port, polled for readiness, stopped with SIGTERM.
#pragma once

#include <algorithm>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/privileged/privileged.h"

namespace kspan::testing {

inline std::string KspanBinary() {
  const char* env = std::getenv("KSPAN_BINARY");
  return env != nullptr && *env != '\0' ? env : KSPAN_BINARY_DEFAULT;
}

inline int FreeLoopbackPort() {
  Listener l(AF_INET);
  return l.port();  // released on return; the agent binds it right after
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One `kspan run` child with its output in a temporary directory.
class AgentProcess {
 public:
  // `state_dir` empty: a fresh one under the process's temporary directory;
  // else that directory (to restart an agent on the state it left). `env`:
  // NAME=value settings added to the agent's environment.
  explicit AgentProcess(std::vector<std::string> extra_args, std::string state_dir = "",
                        std::vector<std::string> env = {}) {
    char tmpl[] = "/tmp/kspan-e2e-XXXXXX";
    dir_ = mkdtemp(tmpl);
    if (state_dir.empty()) state_dir = dir_ + "/state";
    admin_port_ = FreeLoopbackPort();
    std::vector<std::string> args = {KspanBinary(), "run",
                                      "--state-dir", state_dir,
                                      "--admin-listen", "127.0.0.1:" + std::to_string(admin_port_),
                                      "--log-level", "debug"};
    // Ephemeral receiver ports unless the test chooses: a collector (or
    // another agent) on the host may hold 4317/4318.
    for (const char* flag : {"--receiver-grpc", "--receiver-http"}) {
      if (std::find(extra_args.begin(), extra_args.end(), flag) == extra_args.end()) {
        args.insert(args.end(), {flag, "127.0.0.1:0"});
      }
    }
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    pid_ = fork();
    if (pid_ == 0) {
      std::string log = dir_ + "/agent.log";
      FILE* f = std::fopen(log.c_str(), "w");
      dup2(fileno(f), 1);
      dup2(fileno(f), 2);
      for (auto& e : env) putenv(e.data());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      std::fprintf(stderr, "exec %s: %s\n", argv[0], std::strerror(errno));
      _exit(127);
    }
  }

  ~AgentProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  bool WaitReady(std::chrono::seconds timeout) {
    httplib::Client client("127.0.0.1", admin_port_);
    client.set_connection_timeout(std::chrono::seconds(1));
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (auto res = client.Get("/readyz"); res && res->status == 200) return true;
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;  // exited during start-up
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  std::string Metrics() {
    httplib::Client client("127.0.0.1", admin_port_);
    auto res = client.Get("/metrics");
    return res ? res->body : "";
  }

  // SIGTERM, then the exit status (or -1 when it did not exit in time).
  int Terminate(std::chrono::seconds timeout) {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

  // The exit status of an agent that exits by itself (a refused start), or
  // -1 when it still runs after `timeout`.
  int WaitExit(std::chrono::seconds timeout) {
    if (pid_ <= 0) return -1;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

  // SIGKILL, as a crash would: nothing is cleaned up.
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  std::string log() const { return ReadFile(dir_ + "/agent.log"); }
  pid_t pid() const { return pid_; }
  // The test's temporary directory (for config files and such).
  const std::string& dir() const { return dir_; }
  int admin_port() const { return admin_port_; }
  // The OTLP/HTTP receiver's bound port, from /status (0 when unknown).
  int receiver_http_port() const {
    httplib::Client client("127.0.0.1", admin_port_);
    auto res = client.Get("/status");
    if (!res || res->status != 200) return 0;
    const auto at = res->body.find("\"http_port\":");
    return at == std::string::npos ? 0 : std::atoi(res->body.c_str() + at + 12);
  }

 private:
  std::string dir_;
  int admin_port_ = 0;
  pid_t pid_ = -1;
};

// Value of an un-labelled or labelled sample in Prometheus text; -1 if absent.
inline double MetricValue(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return -1;
}

// Sum of every series of a metric family in Prometheus text.
inline double MetricSum(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  double sum = 0;
  while (std::getline(in, line)) {
    if (line.rfind(name, 0) != 0 || line.size() <= name.size()) continue;
    const char next = line[name.size()];
    if (next != '{' && next != ' ') continue;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

}  // namespace kspan::testing
