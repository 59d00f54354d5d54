#include "tests/privileged/privileged.h"

#include <spdlog/spdlog.h>
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "userspace/clock_sync.h"
#include "userspace/kernel_features.h"

namespace kspan::testing {
namespace {

std::uint64_t Now(clockid_t c) {
  struct timespec ts {};
  clock_gettime(c, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + ts.tv_nsec;
}

socklen_t LoopbackAddr(int family, int port, sockaddr_storage* ss) {
  std::memset(ss, 0, sizeof(*ss));
  if (family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(ss);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    a->sin6_port = htons(static_cast<std::uint16_t>(port));
    return sizeof(*a);
  }
  auto* a = reinterpret_cast<sockaddr_in*>(ss);
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a->sin_port = htons(static_cast<std::uint16_t>(port));
  return sizeof(*a);
}

int BoundPort(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

int BindLoopback(int family) {
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_storage ss{};
  socklen_t len = LoopbackAddr(family, 0, &ss);
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

std::string WhyBpfUnavailable() {
  if (geteuid() != 0) return "not running as root";
  struct stat st {};
  if (stat("/sys/kernel/btf/vmlinux", &st) != 0) return "kernel has no BTF";
  if (stat("/sys/kernel/tracing/events/sock/inet_sock_set_state", &st) != 0 &&
      stat("/sys/kernel/debug/tracing/events/sock/inet_sock_set_state", &st) != 0) {
    return "tracefs is not mounted (mount -t tracefs tracefs /sys/kernel/tracing)";
  }
  int fd = bpf_map_create(BPF_MAP_TYPE_RINGBUF, "kspan_t", 0, 0, 4096, nullptr);
  if (fd < 0) return std::string("cannot create a BPF ring buffer: ") + std::strerror(errno);
  close(fd);
  return {};
}

bool BpfRequired() {
  const char* v = std::getenv("KSPAN_REQUIRE_BPF");
  const char* ci = std::getenv("CI");
  return (v != nullptr && std::strcmp(v, "1") == 0) || (ci != nullptr && std::strcmp(ci, "true") == 0);
}

std::string TestPinDir() { return "/sys/fs/bpf/kspan-test-" + std::to_string(getpid()); }

void ReportVariant(const std::string& family, const std::string& variant) {
  std::printf("KSPAN-VARIANT %s=%s\n", family.c_str(), variant.c_str());
  std::fflush(stdout);
}

Listener::Listener(int family, int backlog) {
  fd_ = BindLoopback(family);
  if (fd_ >= 0 && listen(fd_, backlog) == 0) port_ = BoundPort(fd_);
}

Listener::~Listener() {
  if (fd_ >= 0) close(fd_);
}

ClosedPort::ClosedPort(int family) {
  fd_ = BindLoopback(family);
  if (fd_ >= 0) port_ = BoundPort(fd_);
}

ClosedPort::~ClosedPort() {
  if (fd_ >= 0) close(fd_);
}

ConnectResult ConnectLoopback(int family, int port, int syn_retries) {
  ConnectResult r;
  r.fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (r.fd < 0) {
    r.err = errno;
    return r;
  }
  if (syn_retries > 0) setsockopt(r.fd, IPPROTO_TCP, TCP_SYNCNT, &syn_retries, sizeof(syn_retries));
  sockaddr_storage ss{};
  socklen_t len = LoopbackAddr(family, port, &ss);
  r.real_before = Now(CLOCK_REALTIME);
  r.mono_before = Now(CLOCK_MONOTONIC);
  int rc = connect(r.fd, reinterpret_cast<sockaddr*>(&ss), len);
  r.err = rc == 0 ? 0 : errno;
  r.mono_after = Now(CLOCK_MONOTONIC);
  r.real_after = Now(CLOCK_REALTIME);
  r.local_port = BoundPort(r.fd);
  return r;
}

ChildProcess::ChildProcess(std::function<void()> body) {
  if (pipe(go_) != 0) return;
  pid_ = fork();
  if (pid_ == 0) {
    char c;
    close(go_[1]);
    if (read(go_[0], &c, 1) != 1) _exit(2);
    body();
    _exit(0);
  }
  close(go_[0]);
}

bool ChildProcess::RunAndWait() {
  char c = 'g';
  if (write(go_[1], &c, 1) != 1) return false;
  close(go_[1]);
  int status = 0;
  waitpid(pid_, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::uint64_t RealtimeNowNs() { return Now(CLOCK_REALTIME); }

int CurrentTid() { return static_cast<int>(syscall(SYS_gettid)); }

}  // namespace kspan::testing

namespace {
// libbpf's own messages (expected while variants are probed) go to spdlog
// at debug level, as in the agent, instead of flooding the test log.
// KSPAN_TEST_LOG=debug (or trace) shows them, with the verifier's log of a
// refused program: `vm-tests/run-matrix.sh --env KSPAN_TEST_LOG=debug`.
bool RouteLogs() {
  kspan::RouteLibbpfLogs();
  if (const char* level = std::getenv("KSPAN_TEST_LOG")) {
    spdlog::set_level(spdlog::level::from_str(level));
  }
  return true;
}
[[maybe_unused]] const bool kLibbpfRouted = RouteLogs();
}  // namespace
