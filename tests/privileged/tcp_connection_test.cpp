// Accept spans and connection lifetimes on the running kernel, per variant:
// real connections over loopback, every field of the records asserted.
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "tests/privileged/privileged.h"
#include "tests/privileged/tcp_fixture.h"
#include "userspace/clock_sync.h"
#include "userspace/http_capture.h"
#include "userspace/id_generator.h"
#include "userspace/process_resources.h"
#include "userspace/span_assembler.h"
#include "userspace/tcp_spans.h"

namespace kspan {
namespace {

using ::kspan::testing::ConnectLoopback;
using ::kspan::testing::ConnectResult;
using ::kspan::testing::Listener;
using ::kspan::testing::TcpCaptureTest;

std::uint64_t MonoNow() { return MonotonicNowNs(); }

void WriteAll(int fd, std::size_t n) {
  std::string buf(n, 'x');
  ASSERT_EQ(write(fd, buf.data(), buf.size()), static_cast<ssize_t>(n));
}

void ReadExactly(int fd, std::size_t n) {
  std::string buf(n, '\0');
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf.data() + got, n - got);
    ASSERT_GT(r, 0);
    got += static_cast<std::size_t>(r);
  }
}

class TcpConnectionCapture : public TcpCaptureTest {
 protected:
  // Connect, accept, traffic both ways, client closes first: checks the
  // accept record and both lifetime records.
  void CheckAcceptAndLifetime();

  // Loopback does not lose segments: with no retransmission the byte
  // counters are exact.
  static void ExpectCounters(const kspan_tcp_conn_event& e, std::uint64_t sent,
                             std::uint64_t received) {
    EXPECT_EQ(e.total_retrans, 0u);
    EXPECT_EQ(e.bytes_sent, sent);
    EXPECT_EQ(e.bytes_received, received);
    EXPECT_GE(e.segs_out, 2u);
    EXPECT_GE(e.segs_in, 2u);
    EXPECT_LT(e.srtt_us, 1'000'000u);
    EXPECT_LE(e.start_ns, e.end_ns);
    EXPECT_EQ(std::string(e.comm, strnlen(e.comm, sizeof(e.comm))), "kspan_privilege");
  }
};

void TcpConnectionCapture::CheckAcceptAndLifetime() {
  ASSERT_TRUE(capture_->accept_attached());
  Listener server(AF_INET);
  ConnectResult client = ConnectLoopback(AF_INET, server.port());
  ASSERT_EQ(client.err, 0);

  const std::uint64_t before_accept = MonoNow();
  int conn = accept(server.fd(), nullptr, nullptr);
  const std::uint64_t after_accept = MonoNow();
  ASSERT_GE(conn, 0);
  // The socket data variant sees the accept at the server's first data.
  WriteAll(client.fd, 1000);
  const std::uint64_t before_first_read = MonoNow();
  ReadExactly(conn, 1000);
  const std::uint64_t after_first_read = MonoNow();
  const bool at_first_data = capture_->accept_variant() == "socket_data";

  // Accept: this thread, the listener's port locally, the client's as peer.
  const auto pid = static_cast<std::uint32_t>(getpid());
  auto acc = collector_.WaitAccept(
      [&](const kspan_tcp_accept_event& e) { return e.pid == pid && e.ep.dport == client.local_port; },
      std::chrono::seconds(5));
  ASSERT_TRUE(acc.has_value());
  EXPECT_EQ(acc->tid, static_cast<std::uint32_t>(::kspan::testing::CurrentTid()));
  EXPECT_EQ(acc->ep.family, AF_INET);
  EXPECT_EQ(acc->ep.sport, server.port());
  EXPECT_EQ(FormatAddress(acc->ep.family, acc->ep.saddr), "127.0.0.1");
  EXPECT_EQ(FormatAddress(acc->ep.family, acc->ep.daddr), "127.0.0.1");
  // Queued during connect(), taken inside accept().
  EXPECT_GE(acc->queued_ns, client.mono_before);
  EXPECT_LE(acc->queued_ns, client.mono_after);
  EXPECT_GE(acc->accepted_ns, at_first_data ? before_first_read : before_accept);
  EXPECT_LE(acc->accepted_ns, at_first_data ? after_first_read : after_accept);
  EXPECT_LT(acc->handshake_rtt_us, 1'000'000u);

  // Traffic the other way, then the client closes first.
  WriteAll(conn, 500);
  ReadExactly(client.fd, 500);
  close(client.fd);
  char c;
  ASSERT_EQ(read(conn, &c, 1), 0);  // the client's FIN
  close(conn);

  auto out = collector_.WaitConn(
      [&](const kspan_tcp_conn_event& e) {
        return e.direction == KSPAN_TCP_DIR_OUT && e.ep.sport == client.local_port;
      },
      std::chrono::seconds(5));
  ASSERT_TRUE(out.has_value()) << "no lifetime record for the client side";
  EXPECT_EQ(out->pid, pid);
  EXPECT_EQ(out->ep.dport, server.port());
  EXPECT_EQ(out->closed_by, KSPAN_TCP_CLOSED_LOCAL);
  ExpectCounters(*out, /*sent=*/1000, /*received=*/500);
  EXPECT_GE(out->start_ns, client.mono_before);  // established inside connect()
  EXPECT_LE(out->start_ns, client.mono_after);

  auto in = collector_.WaitConn(
      [&](const kspan_tcp_conn_event& e) {
        return e.direction == KSPAN_TCP_DIR_IN && e.ep.dport == client.local_port;
      },
      std::chrono::seconds(5));
  ASSERT_TRUE(in.has_value()) << "no lifetime record for the server side";
  EXPECT_EQ(in->pid, pid);  // the accepting process owns it
  EXPECT_EQ(in->ep.sport, server.port());
  EXPECT_EQ(in->closed_by, KSPAN_TCP_CLOSED_PEER);
  ExpectCounters(*in, /*sent=*/500, /*received=*/1000);
  EXPECT_EQ(in->start_ns, acc->queued_ns);
}

TEST_P(TcpConnectionCapture, AcceptAndLifetimeOfBothSides) {
  KSPAN_REQUIRE_BPF();
  StartCapture(0);  // accept through fexit where the kernel allows it
  CheckAcceptAndLifetime();
}

TEST_P(TcpConnectionCapture, AcceptThroughSyscallTracepoints) {
  KSPAN_REQUIRE_BPF();
  StartCapture(0, [](CaptureOptions& o) {
    o.accept_fexit = false;
    o.accept_socket_data = false;
  });
  EXPECT_EQ(capture_->accept_variant(), "tracepoint");
  CheckAcceptAndLifetime();
}

// Where fexit is refused (lockdown, an LSM) but the kernel has the socket
// data tracepoints (6.3+), accepts are seen without any syscall tracepoint.
TEST_P(TcpConnectionCapture, AcceptThroughSocketData) {
  KSPAN_REQUIRE_BPF();
  StartCapture(0, [](CaptureOptions& o) { o.accept_fexit = false; });
  EXPECT_EQ(capture_->accept_variant(),
            KernelHasSockLengthTracepoints() ? "socket_data" : "tracepoint");
  CheckAcceptAndLifetime();
}

TEST_P(TcpConnectionCapture, ResetIsReportedOnTheConnection) {
  KSPAN_REQUIRE_BPF();
  StartCapture(0);
  Listener server(AF_INET);
  ConnectResult client = ConnectLoopback(AF_INET, server.port());
  ASSERT_EQ(client.err, 0);
  int conn = accept(server.fd(), nullptr, nullptr);
  ASSERT_GE(conn, 0);
  // Zero linger: close() aborts the connection with a RST.
  struct linger abort_on_close = {1, 0};
  ASSERT_EQ(setsockopt(conn, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof(abort_on_close)), 0);
  close(conn);
  char c;
  EXPECT_EQ(read(client.fd, &c, 1), -1);
  EXPECT_EQ(errno, ECONNRESET);
  close(client.fd);

  auto in = collector_.WaitConn(
      [&](const kspan_tcp_conn_event& e) {
        return e.direction == KSPAN_TCP_DIR_IN && e.ep.dport == client.local_port;
      },
      std::chrono::seconds(5));
  ASSERT_TRUE(in.has_value());
  EXPECT_EQ(in->closed_by, KSPAN_TCP_CLOSED_RESET);

  auto out = collector_.WaitConn(
      [&](const kspan_tcp_conn_event& e) {
        return e.direction == KSPAN_TCP_DIR_OUT && e.ep.sport == client.local_port;
      },
      std::chrono::seconds(5));
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->closed_by, KSPAN_TCP_CLOSED_RESET);
  // The client received the reset while the connection was tracked.
  const auto notes = collector_.NotesOf(out->sock_id);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_EQ(notes[0].kind, static_cast<std::uint32_t>(KSPAN_TCP_NOTE_RESET_RECEIVED));
  EXPECT_EQ(notes[0].state, 1u /* TCP_ESTABLISHED */);
  EXPECT_GE(notes[0].ts_ns, out->start_ns);
  EXPECT_LE(notes[0].ts_ns, out->end_ns);
}

// Every segment arriving on `fd` is dropped by the kernel before TCP sees it
// (a classic socket filter returning 0: tcp_v4_rcv runs it on established
// sockets), so the peer gets no ACK and retransmits on its timer. Core
// networking: no qdisc, netem or nftables needed on any kernel.
void DropEverythingArrivingOn(int fd) {
  static sock_filter drop_all[] = {{BPF_RET | BPF_K, 0, 0, 0}};
  sock_fprog prog = {1, drop_all};
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)), 0)
      << std::strerror(errno);
}

TEST_P(TcpConnectionCapture, RetransmitsAreReportedOnTheConnection) {
  KSPAN_REQUIRE_BPF();
  StartCapture(0);
  Listener server(AF_INET);
  ConnectResult client = ConnectLoopback(AF_INET, server.port());
  ASSERT_EQ(client.err, 0);
  int conn = accept(server.fd(), nullptr, nullptr);
  ASSERT_GE(conn, 0);

  // The server drops what arrives: the client's 1000 bytes go unacknowledged
  // and are retransmitted (RTO at least 200 ms, doubling) until the filter
  // is removed and a retransmission gets through.
  DropEverythingArrivingOn(conn);
  const std::uint64_t lossy_from = MonoNow();
  WriteAll(client.fd, 1000);
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  const int unused = 0;  // the kernel wants an int-sized option value
  ASSERT_EQ(setsockopt(conn, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof(unused)), 0)
      << std::strerror(errno);
  const std::uint64_t lossy_until = MonoNow();
  ReadExactly(conn, 1000);
  WriteAll(conn, 10);
  ReadExactly(client.fd, 10);
  close(client.fd);
  char c;
  ASSERT_EQ(read(conn, &c, 1), 0);
  close(conn);

  auto out = collector_.WaitConn(
      [&](const kspan_tcp_conn_event& e) {
        return e.direction == KSPAN_TCP_DIR_OUT && e.ep.sport == client.local_port;
      },
      std::chrono::seconds(5));
  ASSERT_TRUE(out.has_value()) << "no lifetime record for the client side";
  EXPECT_EQ(out->closed_by, KSPAN_TCP_CLOSED_LOCAL);
  // A tail loss probe and timer retransmissions (about 200 and 600 ms)
  // fall into the 800 ms; the one that got through came after.
  EXPECT_GE(out->total_retrans, 2u);
  EXPECT_LE(out->total_retrans, 10u);
  EXPECT_EQ(out->bytes_received, 10u);

  const auto notes = collector_.NotesOf(out->sock_id);
  std::vector<kspan_tcp_note> rtx;
  for (const auto& n : notes) {
    if (n.kind == KSPAN_TCP_NOTE_RETRANSMIT) rtx.push_back(n);
  }
  ASSERT_GE(rtx.size(), 2u) << "retransmit notes: " << rtx.size();
  EXPECT_EQ(rtx.size(), notes.size()) << "only retransmits happened on this connection";
  // total_retrans also counts attempts the kernel could not send at once
  // (the original still queued on the device); the tracepoint fires for
  // sent ones, one 1000-byte segment each, which bytes_sent includes.
  EXPECT_LE(rtx.size(), out->total_retrans);
  EXPECT_GE(out->bytes_sent, 1000u * (1 + rtx.size()));
  std::uint64_t prev = 0;
  for (const auto& n : rtx) {
    EXPECT_EQ(n.state, 1u /* TCP_ESTABLISHED */);
    EXPECT_GE(n.ts_ns, lossy_from);
    EXPECT_GE(n.ts_ns, out->start_ns);
    EXPECT_LE(n.ts_ns, out->end_ns);
    EXPECT_GT(n.ts_ns, prev);
    prev = n.ts_ns;
  }
  // Retransmitted while the server was dropping.
  EXPECT_LE(rtx[0].ts_ns, lossy_until);

  // The server side received, never retransmitted.
  auto in = collector_.WaitConn(
      [&](const kspan_tcp_conn_event& e) {
        return e.direction == KSPAN_TCP_DIR_IN && e.ep.dport == client.local_port;
      },
      std::chrono::seconds(5));
  ASSERT_TRUE(in.has_value());
  EXPECT_EQ(in->total_retrans, 0u);
  EXPECT_EQ(in->bytes_received, 1000u);
  EXPECT_TRUE(collector_.NotesOf(in->sock_id).empty());

  // The span: a retransmit count and one event per retransmission.
  ClockSync clock;
  ProcessResources resources;
  IdGenerator ids;
  SpanBuildContext ctx{clock, resources, ids};
  TcpNoteBuffer buffer;
  for (const auto& n : notes) buffer.Add(n, clock.ToUnixNanos(n.ts_ns));
  Span span = BuildTcpConnectionSpan(*out, buffer.Take(out->sock_id), ctx);
  const AttributeValue* count = FindAttribute(span.attributes, "kspan.tcp.retransmits");
  ASSERT_NE(count, nullptr);
  ASSERT_TRUE(std::holds_alternative<std::int64_t>(*count));
  EXPECT_EQ(std::get<std::int64_t>(*count), static_cast<std::int64_t>(out->total_retrans));
  ASSERT_EQ(span.events.size(), rtx.size());
  for (const auto& ev : span.events) {
    EXPECT_EQ(ev.name, "tcp.retransmit");
    EXPECT_GE(ev.time_unix_nano, span.start_unix_nano);
    EXPECT_LE(ev.time_unix_nano, span.end_unix_nano);
    const AttributeValue* state = FindAttribute(ev.attributes, "kspan.tcp.state");
    ASSERT_NE(state, nullptr);
    EXPECT_EQ(std::get<std::string>(*state), "ESTABLISHED");
  }
}

KSPAN_INSTANTIATE_TCP_VARIANTS(TcpConnectionCapture);

}  // namespace
}  // namespace kspan
