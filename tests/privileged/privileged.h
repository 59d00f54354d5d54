// Helpers for tests that load real BPF programs on the running kernel.
//
// Outside CI a test that lacks privilege or kernel support is skipped with
// the reason; with KSPAN_REQUIRE_BPF=1 (set by .ci/run and the vm-tests) the
// same condition fails the test, so CI can never pass by skipping.
#pragma once

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace kspan::testing {

// Empty when this process can load BPF programs here; else why not.
std::string WhyBpfUnavailable();

bool BpfRequired();

#define KSPAN_REQUIRE_BPF()                                                     \
  do {                                                                          \
    const std::string why_ = ::kspan::testing::WhyBpfUnavailable();            \
    if (!why_.empty()) {                                                        \
      if (::kspan::testing::BpfRequired()) {                                    \
        FAIL() << "KSPAN_REQUIRE_BPF=1 and BPF is unavailable: " << why_;      \
      }                                                                         \
      GTEST_SKIP() << why_;                                                     \
    }                                                                           \
  } while (0)

// Any other precondition a test cannot run without (a tool, an image):
// fails in CI (KSPAN_REQUIRE_BPF=1 or CI=true), skips elsewhere, with `why`.
#define KSPAN_REQUIRE(cond, why)                                \
  do {                                                          \
    if (!(cond)) {                                              \
      if (::kspan::testing::BpfRequired()) FAIL() << (why);     \
      GTEST_SKIP() << (why);                                    \
    }                                                           \
  } while (0)

// A bpffs pin directory private to this test process, so privileged tests
// never collide with a running agent's /sys/fs/bpf/kspan.
std::string TestPinDir();

// Prints the line the vm-tests harness collects: KSPAN-VARIANT family=variant
void ReportVariant(const std::string& family, const std::string& variant);

// A listening TCP socket on a loopback address with an ephemeral port.
class Listener {
 public:
  explicit Listener(int family, int backlog = 16);
  ~Listener();
  int port() const { return port_; }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// A port on the loopback address that is bound but not listening, so a
// connect() to it is answered with RST (ECONNREFUSED) and nobody else can
// start listening on it during the test.
class ClosedPort {
 public:
  explicit ClosedPort(int family);
  ~ClosedPort();
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

struct ConnectResult {
  int fd = -1;
  int err = 0;                  // errno of connect(), 0 on success
  std::uint64_t mono_before = 0;  // CLOCK_MONOTONIC around the call
  std::uint64_t mono_after = 0;
  std::uint64_t real_before = 0;  // CLOCK_REALTIME around the call
  std::uint64_t real_after = 0;
  int local_port = 0;
};

// Blocking connect to the loopback address of `family`. `syn_retries` > 0
// sets TCP_SYNCNT, so an unanswered handshake times out in seconds.
ConnectResult ConnectLoopback(int family, int port, int syn_retries = 0);

// A child process that, when told to, runs `body` and exits 0 (the body
// may _exit() with another status itself). Lets a test learn the child's
// pid, filter it in or out, and only then let it act.
class ChildProcess {
 public:
  explicit ChildProcess(std::function<void()> body);
  std::uint32_t pid() const { return static_cast<std::uint32_t>(pid_); }
  // Runs the body, waits for the exit; true when the child exited 0.
  bool RunAndWait();

 private:
  int go_[2] = {-1, -1};
  pid_t pid_ = -1;
};

std::uint64_t RealtimeNowNs();
int CurrentTid();

}  // namespace kspan::testing
