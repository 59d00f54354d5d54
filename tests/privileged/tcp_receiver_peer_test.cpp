// Receiver peers on the running kernel: the TCP family remembers who owns
// the client end of each connection to kspan's receiver ports, and
// TcpCapture::LookupReceiverPeer finds it by the address and port the
// receiver sees, as soon as connect() has returned.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <string>

#include "tests/privileged/privileged.h"
#include "tests/privileged/tcp_fixture.h"
#include "userspace/capture_filter.h"
#include "userspace/tcp_capture.h"

namespace kspan {
namespace {

using ::kspan::testing::ConnectLoopback;
using ::kspan::testing::ConnectResult;
using ::kspan::testing::Listener;
using ::kspan::testing::TcpCaptureTest;

std::uint32_t OwnNetns() {
  struct stat st {};
  if (stat("/proc/self/ns/net", &st) != 0) return 0;
  return static_cast<std::uint32_t>(st.st_ino);
}

sockaddr_in Ipv4(const char* addr, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  inet_pton(AF_INET, addr, &a.sin_addr);
  return a;
}

int LocalPort(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return -1;
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

// A listening socket on addr:port; -1 on failure.
int ListenOn(const char* addr, int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = Ipv4(addr, port);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(fd, 8) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

// Connects to addr:port; the local port, or -errno. The socket stays open.
int ConnectTo(const char* addr, int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  sockaddr_in a = Ipv4(addr, port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return -errno;
  return LocalPort(fd);
}

// Runs `body` in a forked child, which writes `out` back; false when the
// child failed.
template <typename Result>
bool RunInChild(const std::function<void(Result*)>& body, Result* out, pid_t* pid = nullptr) {
  int fds[2];
  if (pipe(fds) != 0) return false;
  const pid_t child = fork();
  if (child == 0) {
    close(fds[0]);
    Result r{};
    body(&r);
    _exit(write(fds[1], &r, sizeof(r)) == static_cast<ssize_t>(sizeof(r)) ? 0 : 1);
  }
  close(fds[1]);
  const bool read_ok = read(fds[0], out, sizeof(*out)) == static_cast<ssize_t>(sizeof(*out));
  close(fds[0]);
  int status = 0;
  waitpid(child, &status, 0);
  if (pid != nullptr) *pid = child;
  return read_ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

class TcpReceiverPeer : public TcpCaptureTest {};

TEST_P(TcpReceiverPeer, ConnectionIsOwnedByTheConnectingThread) {
  KSPAN_REQUIRE_BPF();
  StartCapture(0);
  for (int family : {AF_INET, AF_INET6}) {
    SCOPED_TRACE(family == AF_INET ? "ipv4" : "ipv6");
    Listener server(family);
    ASSERT_GT(server.port(), 0);
    const auto port = static_cast<std::uint16_t>(server.port());
    ASSERT_TRUE(capture_->SetReceiverPorts({port}).ok());
    ConnectResult r = ConnectLoopback(family, server.port());
    ASSERT_EQ(r.err, 0) << std::strerror(r.err);
    // No waiting: the entry is written before the handshake's last ACK.
    auto owner = capture_->LookupReceiverPeer(family == AF_INET ? "127.0.0.1" : "::1",
                                              static_cast<std::uint16_t>(r.local_port), port);
    ASSERT_TRUE(owner.has_value()) << "no receiver peer for port " << r.local_port;
    EXPECT_EQ(owner->pid, static_cast<std::uint32_t>(getpid()));
    EXPECT_EQ(owner->tid, static_cast<std::uint32_t>(::kspan::testing::CurrentTid()));
    EXPECT_EQ(owner->netns, OwnNetns());
    EXPECT_GE(owner->established_ns, r.mono_before);
    EXPECT_LE(owner->established_ns, r.mono_after);
    if (family == AF_INET6) {
      EXPECT_TRUE(capture_->LookupReceiverPeer("[::1]", static_cast<std::uint16_t>(r.local_port), port));
    }
    // Another server port or another client port is another connection.
    EXPECT_FALSE(capture_->LookupReceiverPeer(family == AF_INET ? "127.0.0.1" : "::1",
                                              static_cast<std::uint16_t>(r.local_port),
                                              static_cast<std::uint16_t>(port + 1)));
    EXPECT_FALSE(capture_->LookupReceiverPeer(family == AF_INET ? "::1" : "127.0.0.1",
                                              static_cast<std::uint16_t>(r.local_port), port));
    close(r.fd);
  }
}

// An IPv6 socket connecting to an IPv4 listener through a v4-mapped address
// is, for the listener, an IPv4 peer.
TEST_P(TcpReceiverPeer, V4MappedClientIsAnIpv4Peer) {
  KSPAN_REQUIRE_BPF();
  StartCapture(0);
  Listener server(AF_INET);
  ASSERT_GT(server.port(), 0);
  const auto port = static_cast<std::uint16_t>(server.port());
  ASSERT_TRUE(capture_->SetReceiverPorts({port}).ok());
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(port);
  ASSERT_EQ(inet_pton(AF_INET6, "::ffff:127.0.0.1", &a.sin6_addr), 1);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << std::strerror(errno);
  const auto local = static_cast<std::uint16_t>(LocalPort(fd));
  auto owner = capture_->LookupReceiverPeer("127.0.0.1", local, port);
  ASSERT_TRUE(owner.has_value());
  EXPECT_EQ(owner->pid, static_cast<std::uint32_t>(getpid()));
  EXPECT_TRUE(capture_->LookupReceiverPeer("::ffff:127.0.0.1", local, port).has_value());
  close(fd);
}

TEST_P(TcpReceiverPeer, OnlyReceiverPortsAreRecorded) {
  KSPAN_REQUIRE_BPF();
  StartCapture(0);
  Listener receiver(AF_INET);
  Listener other(AF_INET);
  ASSERT_GT(receiver.port(), 0);
  ASSERT_GT(other.port(), 0);
  const auto rport = static_cast<std::uint16_t>(receiver.port());
  const auto oport = static_cast<std::uint16_t>(other.port());

  // No receiver port yet.
  ConnectResult before = ConnectLoopback(AF_INET, receiver.port());
  ASSERT_EQ(before.err, 0);
  EXPECT_FALSE(capture_->LookupReceiverPeer("127.0.0.1", static_cast<std::uint16_t>(before.local_port), rport));

  ASSERT_TRUE(capture_->SetReceiverPorts({rport}).ok());
  ConnectResult to_other = ConnectLoopback(AF_INET, other.port());
  ASSERT_EQ(to_other.err, 0);
  EXPECT_FALSE(capture_->LookupReceiverPeer("127.0.0.1", static_cast<std::uint16_t>(to_other.local_port), oport));
  ConnectResult to_receiver = ConnectLoopback(AF_INET, receiver.port());
  ASSERT_EQ(to_receiver.err, 0);
  EXPECT_TRUE(capture_->LookupReceiverPeer("127.0.0.1", static_cast<std::uint16_t>(to_receiver.local_port), rport));

  // The set is replaced, not added to.
  ASSERT_TRUE(capture_->SetReceiverPorts({oport}).ok());
  ConnectResult old_port = ConnectLoopback(AF_INET, receiver.port());
  ConnectResult new_port = ConnectLoopback(AF_INET, other.port());
  ASSERT_EQ(old_port.err, 0);
  ASSERT_EQ(new_port.err, 0);
  EXPECT_FALSE(capture_->LookupReceiverPeer("127.0.0.1", static_cast<std::uint16_t>(old_port.local_port), rport));
  EXPECT_TRUE(capture_->LookupReceiverPeer("127.0.0.1", static_cast<std::uint16_t>(new_port.local_port), oport));

  EXPECT_FALSE(capture_->SetReceiverPorts({0}).ok());
  EXPECT_FALSE(capture_->LookupReceiverPeer("not an address", 1, oport));
  for (auto* r : {&before, &to_other, &to_receiver, &old_port, &new_port}) close(r->fd);
}

// tcp.selected_only leaves this process out of TCP spans; the receiver still
// learns that it owns its connection, and no span or connection state is
// made for it.
TEST_P(TcpReceiverPeer, ProcessLeftOutBySelectedOnlyIsStillIdentified) {
  KSPAN_REQUIRE_BPF();
  StartCapture(0, [](CaptureOptions& o) { o.tcp_selected_only = true; });
  Listener receiver(AF_INET, 64);
  ASSERT_GT(receiver.port(), 0);
  const auto rport = static_cast<std::uint16_t>(receiver.port());
  ASSERT_TRUE(capture_->SetReceiverPorts({rport}).ok());

  ConnectResult r = ConnectLoopback(AF_INET, receiver.port());
  ASSERT_EQ(r.err, 0);
  auto owner = capture_->LookupReceiverPeer("127.0.0.1", static_cast<std::uint16_t>(r.local_port), rport);
  ASSERT_TRUE(owner.has_value());
  EXPECT_EQ(owner->pid, static_cast<std::uint32_t>(getpid()));
  EXPECT_EQ(owner->tid, static_cast<std::uint32_t>(::kspan::testing::CurrentTid()));
  // Both ends close: a tracked connection would report its lifetime at CLOSE.
  int served = accept(receiver.fd(), nullptr, nullptr);
  ASSERT_GE(served, 0);
  close(r.fd);
  close(served);

  // A selected process's connect afterwards is reported: capture is live,
  // and anything of ours would have come first.
  auto filter = CaptureFilter::Open(pins_->path());
  ASSERT_TRUE(filter.ok()) << filter.status();
  ::kspan::testing::ChildProcess selected([port = receiver.port()] {
    if (ConnectLoopback(AF_INET, port).err != 0) _exit(1);
  });
  ASSERT_TRUE(filter->AllowPid(selected.pid()).ok());
  ASSERT_TRUE(selected.RunAndWait());
  ASSERT_TRUE(collector_
                  .WaitConnect([&](const kspan_tcp_connect_event& e) { return e.pid == selected.pid(); },
                               std::chrono::seconds(5))
                  .has_value());
  EXPECT_EQ(collector_.ConnectsFrom(static_cast<std::uint32_t>(getpid())), 0u);
  EXPECT_FALSE(collector_
                   .WaitConn([&](const kspan_tcp_conn_event& e) { return e.pid == static_cast<std::uint32_t>(getpid()); },
                             std::chrono::milliseconds(0))
                   .has_value());
}

TEST_P(TcpReceiverPeer, DeniedProcessIsNotIdentified) {
  KSPAN_REQUIRE_BPF();
  StartCapture(0);
  auto filter = CaptureFilter::Open(pins_->path());
  ASSERT_TRUE(filter.ok()) << filter.status();
  Listener receiver(AF_INET, 64);
  ASSERT_GT(receiver.port(), 0);
  const auto rport = static_cast<std::uint16_t>(receiver.port());
  ASSERT_TRUE(capture_->SetReceiverPorts({rport}).ok());

  int denied_port = 0;
  pid_t denied = -1;
  // The child denies itself through the pinned map before it connects.
  const std::string pin_dir = pins_->path();
  ASSERT_TRUE(RunInChild<int>(
      [&](int* out) {
        auto f = CaptureFilter::Open(pin_dir);
        if (!f.ok() || !f->DenyPid(static_cast<std::uint32_t>(getpid())).ok()) return;
        *out = ConnectTo("127.0.0.1", receiver.port());
      },
      &denied_port, &denied));
  ASSERT_GT(denied_port, 0);
  EXPECT_FALSE(capture_->LookupReceiverPeer("127.0.0.1", static_cast<std::uint16_t>(denied_port), rport));
  ASSERT_TRUE(filter->RemoveDeniedPid(static_cast<std::uint32_t>(denied)).ok());

  int allowed_port = 0;
  pid_t allowed = -1;
  ASSERT_TRUE(RunInChild<int>([&](int* out) { *out = ConnectTo("127.0.0.1", receiver.port()); },
                              &allowed_port, &allowed));
  ASSERT_GT(allowed_port, 0);
  auto owner = capture_->LookupReceiverPeer("127.0.0.1", static_cast<std::uint16_t>(allowed_port), rport);
  ASSERT_TRUE(owner.has_value());
  EXPECT_EQ(owner->pid, static_cast<std::uint32_t>(allowed));
  EXPECT_EQ(owner->tid, static_cast<std::uint32_t>(allowed));
}

// A process in another network namespace (a container) that listens and
// connects on its own loopback, on the receiver's port number, is not a
// client of kspan's receiver; the same process connecting to a non-loopback
// address on that port could be, and is recorded with its namespace.
TEST_P(TcpReceiverPeer, LoopbackInAnotherNetworkNamespaceIsNotRecorded) {
  KSPAN_REQUIRE_BPF();
  StartCapture(0);
  Listener receiver(AF_INET);
  ASSERT_GT(receiver.port(), 0);
  const auto rport = static_cast<std::uint16_t>(receiver.port());
  ASSERT_TRUE(capture_->SetReceiverPorts({rport}).ok());

  struct Result {
    int error;  // errno of the step that failed, with `step`
    int step;
    std::uint32_t netns;
    int loopback_port;
    int other_port;
  };
  Result res{};
  pid_t child = -1;
  const bool ran = RunInChild<Result>(
      [port = receiver.port()](Result* out) {
        auto fail = [out](int step) {
          out->error = errno;
          out->step = step;
        };
        if (unshare(CLONE_NEWNET) != 0) return fail(1);
        out->netns = OwnNetns();
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (s < 0) return fail(2);
        // `lo` up, without iproute2 (not in the VM guests).
        ifreq ifr{};
        std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
        if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) return fail(3);
        ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
        if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) return fail(4);
        // A non-loopback address of this namespace, as a container's
        // interface address would be.
        ifreq alias{};
        std::strncpy(alias.ifr_name, "lo:1", IFNAMSIZ - 1);
        sockaddr_in addr = Ipv4("10.200.0.1", 0);
        std::memcpy(&alias.ifr_addr, &addr, sizeof(addr));
        if (ioctl(s, SIOCSIFADDR, &alias) != 0) return fail(5);
        close(s);
        // The receiver's port number is free in this namespace.
        if (ListenOn("127.0.0.1", port) < 0) return fail(6);
        if ((out->loopback_port = ConnectTo("127.0.0.1", port)) < 0) return fail(7);
        if (ListenOn("10.200.0.1", port) < 0) return fail(8);
        if ((out->other_port = ConnectTo("10.200.0.1", port)) < 0) return fail(9);
      },
      &res, &child);
  ASSERT_TRUE(ran);
  ASSERT_EQ(res.step, 0) << "child failed at step " << res.step << ": " << std::strerror(res.error);
  ASSERT_NE(res.netns, OwnNetns());

  EXPECT_FALSE(capture_->LookupReceiverPeer("127.0.0.1", static_cast<std::uint16_t>(res.loopback_port), rport))
      << "a loopback connection inside another network namespace was recorded";
  auto owner = capture_->LookupReceiverPeer("10.200.0.1", static_cast<std::uint16_t>(res.other_port), rport);
  ASSERT_TRUE(owner.has_value()) << "the non-loopback connection in the namespace was not recorded";
  EXPECT_EQ(owner->pid, static_cast<std::uint32_t>(child));
  EXPECT_EQ(owner->netns, res.netns);
}

KSPAN_INSTANTIATE_TCP_VARIANTS(TcpReceiverPeer);

}  // namespace
}  // namespace kspan
