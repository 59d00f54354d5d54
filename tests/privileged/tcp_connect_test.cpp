// The TCP connect program on the running kernel: enable capture, make real
// connections, assert each record field by field.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <vector>

#include "tests/privileged/privileged.h"
#include "tests/privileged/tcp_fixture.h"
#include "userspace/capture_filter.h"
#include "userspace/event_decoder.h"
#include "userspace/pin_directory.h"
#include "userspace/ring_reader.h"
#include "userspace/span_assembler.h"
#include "userspace/tcp_capture.h"

namespace kspan {
namespace {

using ::kspan::testing::ClosedPort;
using ::kspan::testing::ConnectLoopback;
using ::kspan::testing::ConnectResult;
using ::kspan::testing::Listener;

using ::kspan::testing::TcpCaptureTest;

class TcpConnectCapture : public TcpCaptureTest {
 protected:
  // This process's connect record to `dport` (from `sport` when non-zero).
  std::optional<kspan_tcp_connect_event> WaitFor(std::uint32_t pid, int dport,
                                                 std::chrono::milliseconds timeout,
                                                 int sport = 0) {
    return collector_.WaitConnect(
        [&](const kspan_tcp_connect_event& e) {
          return e.pid == pid && e.dport == dport && (sport == 0 || e.sport == sport);
        },
        timeout);
  }

  static std::string Addr(const kspan_tcp_connect_event& e, const std::uint8_t* a) {
    return FormatAddress(e.family, a);
  }

  // Fields every connect record must carry, whatever the outcome.
  static void ExpectCommon(const kspan_tcp_connect_event& e, const ConnectResult& r, int family) {
    EXPECT_EQ(e.type, static_cast<std::uint32_t>(KSPAN_EVENT_TCP_CONNECT));
    EXPECT_EQ(e.pid, static_cast<std::uint32_t>(getpid()));
    EXPECT_EQ(e.tid, static_cast<std::uint32_t>(::kspan::testing::CurrentTid()));
    EXPECT_EQ(e.family, family);
    EXPECT_EQ(Addr(e, e.daddr), family == AF_INET6 ? "::1" : "127.0.0.1");
    EXPECT_EQ(Addr(e, e.saddr), family == AF_INET6 ? "::1" : "127.0.0.1");
    EXPECT_EQ(e.sport, r.local_port);
    // The handshake happens inside connect(): the kernel's interval lies
    // within the one the test measured around the call.
    EXPECT_GE(e.start_ns, r.mono_before);
    EXPECT_LE(e.end_ns, r.mono_after);
    EXPECT_LE(e.start_ns, e.end_ns);
    EXPECT_EQ(std::string(e.comm, strnlen(e.comm, sizeof(e.comm))), "kspan_privilege");
  }
};

// A child process that connects to `port` on 127.0.0.1 when told to and
// exits 0 when the connect succeeded.
::kspan::testing::ChildProcess ConnectingChild(int port) {
  return ::kspan::testing::ChildProcess([port] {
    if (ConnectLoopback(AF_INET, port).err != 0) _exit(1);
  });
}

TEST_P(TcpConnectCapture, EstablishedIpv4AndIpv6) {
  KSPAN_REQUIRE_BPF();
  StartCapture(0);
  for (int family : {AF_INET, AF_INET6}) {
    SCOPED_TRACE(family == AF_INET ? "ipv4" : "ipv6");
    Listener server(family);
    ASSERT_GT(server.port(), 0);
    ConnectResult r = ConnectLoopback(family, server.port());
    ASSERT_EQ(r.err, 0) << std::strerror(r.err);
    auto e = WaitFor(getpid(), server.port(), std::chrono::seconds(5));
    ASSERT_TRUE(e.has_value()) << "no connect record for port " << server.port();
    ExpectCommon(*e, r, family);
    EXPECT_EQ(e->established, 1);
    EXPECT_EQ(e->error, 0u);
    close(r.fd);
  }
  const auto stats = capture_->ReadStats();
  EXPECT_GE(stats[KSPAN_TCP_STAT_CONNECT_EMITTED], 2u);
  EXPECT_EQ(stats[KSPAN_TCP_STAT_RING_FULL], 0u);
}

TEST_P(TcpConnectCapture, RefusedConnectCarriesEconnrefused) {
  KSPAN_REQUIRE_BPF();
  StartCapture(0);
  for (int family : {AF_INET, AF_INET6}) {
    SCOPED_TRACE(family == AF_INET ? "ipv4" : "ipv6");
    ClosedPort closed(family);
    ConnectResult r = ConnectLoopback(family, closed.port());
    ASSERT_EQ(r.err, ECONNREFUSED);
    auto e = WaitFor(getpid(), closed.port(), std::chrono::seconds(5));
    ASSERT_TRUE(e.has_value());
    ExpectCommon(*e, r, family);
    EXPECT_EQ(e->established, 0);
    EXPECT_EQ(e->error, static_cast<std::uint32_t>(ECONNREFUSED));
    close(r.fd);
  }
}

TEST_P(TcpConnectCapture, UnansweredHandshakeCarriesEtimedout) {
  KSPAN_REQUIRE_BPF();
  StartCapture(0);
  // Backlog 0 admits one connection; with it unaccepted, the accept queue is
  // full and the kernel drops further SYNs, so the next connect times out
  // after TCP_SYNCNT=1 retransmission (about 3 s).
  Listener server(AF_INET, 0);
  ConnectResult first = ConnectLoopback(AF_INET, server.port());
  ASSERT_EQ(first.err, 0);
  // The client's connect() returns once it sent the final ACK; the server
  // may queue the connection a moment later (another CPU's softirq, slow
  // under emulation). Only a queued connection makes the queue full.
  pollfd queued = {server.fd(), POLLIN, 0};
  ASSERT_EQ(poll(&queued, 1, 5000), 1) << "the first connection never reached the accept queue";
  ConnectResult r = ConnectLoopback(AF_INET, server.port(), /*syn_retries=*/1);
  ASSERT_EQ(r.err, ETIMEDOUT) << std::strerror(r.err);
  auto e = WaitFor(getpid(), server.port(), std::chrono::seconds(5), r.local_port);
  ASSERT_TRUE(e.has_value()) << "no record for the timed-out connect";
  ExpectCommon(*e, r, AF_INET);
  EXPECT_EQ(e->established, 0);
  EXPECT_EQ(e->error, static_cast<std::uint32_t>(ETIMEDOUT));
  // SYN, one retransmission after 1 s, give up 2 s later.
  EXPECT_GE(e->end_ns - e->start_ns, 2'500'000'000ull);
  close(first.fd);
  close(r.fd);
}

TEST_P(TcpConnectCapture, KspanItselfIsNeverTraced) {
  KSPAN_REQUIRE_BPF();
  StartCapture(static_cast<std::uint32_t>(getpid()));  // as if this process were kspan
  Listener server(AF_INET, 64);
  ConnectResult own = ConnectLoopback(AF_INET, server.port());
  ASSERT_EQ(own.err, 0);
  // A child is traced, which proves capture is live while we look.
  auto child = ConnectingChild(server.port());
  ASSERT_TRUE(child.RunAndWait());
  ASSERT_TRUE(WaitFor(child.pid(), server.port(), std::chrono::seconds(5)).has_value())
      << "capture saw nothing at all";
  EXPECT_EQ(collector_.ConnectsFrom(static_cast<std::uint32_t>(getpid())), 0u);
  close(own.fd);
}

TEST_P(TcpConnectCapture, DenyListedProcessProducesNothing) {
  KSPAN_REQUIRE_BPF();
  StartCapture(0);
  auto filter = CaptureFilter::Open(pins_->path());
  ASSERT_TRUE(filter.ok()) << filter.status();
  Listener server(AF_INET, 64);
  auto denied = ConnectingChild(server.port());
  auto allowed = ConnectingChild(server.port());
  ASSERT_TRUE(filter->DenyPid(denied.pid()).ok());
  ASSERT_TRUE(denied.RunAndWait());
  ASSERT_TRUE(allowed.RunAndWait());
  ASSERT_TRUE(WaitFor(allowed.pid(), server.port(), std::chrono::seconds(5)).has_value());
  EXPECT_EQ(collector_.ConnectsFrom(denied.pid()), 0u);

  // Removing it from the deny-list takes effect without reloading.
  ASSERT_TRUE(filter->RemoveDeniedPid(denied.pid()).ok());
  ConnectResult r = ConnectLoopback(AF_INET, server.port());  // this process, not denied
  ASSERT_EQ(r.err, 0);
  EXPECT_TRUE(WaitFor(getpid(), server.port(), std::chrono::seconds(5)).has_value());
  close(r.fd);
}

KSPAN_INSTANTIATE_TCP_VARIANTS(TcpConnectCapture);

}  // namespace
}  // namespace kspan
