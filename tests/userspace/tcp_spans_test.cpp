#include "userspace/tcp_spans.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstring>

namespace kspan {
namespace {

constexpr std::int64_t kOffset = 1'700'000'000'000'000'000;

class TcpSpansTest : public ::testing::Test {
 protected:
  ClockSync clock_{std::chrono::hours(1), [] { return ClockSync::Sample{kOffset, 1}; }};
  ProcessResources resources_{
      ProcessResources::Options{.proc_root = "/nonexistent", .host_name = "host-a", .max_entries = 16}};
  IdGenerator ids_;
  SpanBuildContext ctx_{clock_, resources_, ids_};

  static kspan_tcp_endpoints Endpoints() {
    kspan_tcp_endpoints ep{};
    ep.family = AF_INET;
    ep.sport = 8080;
    ep.dport = 51000;
    inet_pton(AF_INET, "10.0.0.1", ep.saddr);
    inet_pton(AF_INET, "10.0.0.2", ep.daddr);
    return ep;
  }
};

const AttributeValue& Attr(const Span& s, std::string_view key) {
  static const AttributeValue kAbsent = std::string("<absent>");
  const auto* v = FindAttribute(s.attributes, key);
  return v ? *v : kAbsent;
}

TEST_F(TcpSpansTest, AcceptSpanStartsAtTheEstimatedSynAndNamesBothEnds) {
  kspan_tcp_accept_event e{};
  e.type = KSPAN_EVENT_TCP_ACCEPT;
  e.pid = 10;
  e.tid = 11;
  e.handshake_rtt_us = 50;
  e.queued_ns = 5'000'000;
  e.accepted_ns = 7'000'000;
  e.ep = Endpoints();
  std::strcpy(e.comm, "nginx");
  Span s = BuildTcpAcceptSpan(e, ctx_);
  EXPECT_EQ(s.name, "tcp accept");
  EXPECT_EQ(s.kind, SpanKind::kServer);
  EXPECT_EQ(s.start_unix_nano, 5'000'000u - 50'000u + kOffset);
  EXPECT_EQ(s.end_unix_nano, 7'000'000u + kOffset);
  EXPECT_EQ(std::get<std::string>(Attr(s, "server.address")), "10.0.0.1");
  EXPECT_EQ(std::get<std::int64_t>(Attr(s, "server.port")), 8080);
  EXPECT_EQ(std::get<std::string>(Attr(s, "client.address")), "10.0.0.2");
  EXPECT_EQ(std::get<std::int64_t>(Attr(s, "client.port")), 51000);
  EXPECT_EQ(std::get<std::int64_t>(Attr(s, "kspan.tcp.accept_queue_us")), 2000);
  EXPECT_EQ(std::get<std::int64_t>(Attr(s, "thread.id")), 11);
}

TEST_F(TcpSpansTest, ConnectionSpanCarriesCountersCloserAndNotes) {
  kspan_tcp_conn_event e{};
  e.type = KSPAN_EVENT_TCP_CONN;
  e.pid = 10;
  e.tid = 12;
  e.direction = KSPAN_TCP_DIR_OUT;
  e.closed_by = KSPAN_TCP_CLOSED_PEER;
  e.sock_id = 0xabc;
  e.start_ns = 1'000;
  e.end_ns = 9'000;
  e.bytes_sent = 1234;
  e.bytes_received = 5678;
  e.segs_out = 9;
  e.segs_in = 11;
  e.total_retrans = 2;
  e.srtt_us = 300;
  e.ep = Endpoints();
  std::strcpy(e.comm, "curl");

  TcpNoteBuffer notes;
  notes.Add(kspan_tcp_note{KSPAN_EVENT_TCP_CONN_EVENT, KSPAN_TCP_NOTE_RETRANSMIT, 0xabc, 2'000, 1, 0},
            kOffset + 2'000);
  notes.Add(kspan_tcp_note{KSPAN_EVENT_TCP_CONN_EVENT, KSPAN_TCP_NOTE_RESET_RECEIVED, 0xdef, 3'000, 1, 0},
            kOffset + 3'000);
  Span s = BuildTcpConnectionSpan(e, notes.Take(e.sock_id), ctx_);
  EXPECT_EQ(s.name, "tcp connection");
  EXPECT_EQ(s.kind, SpanKind::kClient);
  EXPECT_EQ(std::get<std::int64_t>(Attr(s, "kspan.tcp.bytes_sent")), 1234);
  EXPECT_EQ(std::get<std::int64_t>(Attr(s, "kspan.tcp.bytes_received")), 5678);
  EXPECT_EQ(std::get<std::int64_t>(Attr(s, "kspan.tcp.segments_sent")), 9);
  EXPECT_EQ(std::get<std::int64_t>(Attr(s, "kspan.tcp.segments_received")), 11);
  EXPECT_EQ(std::get<std::int64_t>(Attr(s, "kspan.tcp.retransmits")), 2);
  EXPECT_EQ(std::get<std::int64_t>(Attr(s, "kspan.tcp.srtt_us")), 300);
  EXPECT_EQ(std::get<std::string>(Attr(s, "kspan.tcp.closed_by")), "peer");
  EXPECT_EQ(std::get<std::string>(Attr(s, "kspan.tcp.direction")), "outgoing");
  ASSERT_EQ(s.events.size(), 1u);  // only this connection's note
  EXPECT_EQ(s.events[0].name, "tcp.retransmit");
  EXPECT_EQ(s.events[0].time_unix_nano, kOffset + 2'000u);
  EXPECT_EQ(notes.connections(), 1u);  // the other connection still waits
}

TEST_F(TcpSpansTest, UnacceptedIncomingConnectionBelongsToTheHost) {
  kspan_tcp_conn_event e{};
  e.direction = KSPAN_TCP_DIR_IN;
  e.ep = Endpoints();
  e.end_ns = 1;
  Span s = BuildTcpConnectionSpan(e, {}, ctx_);
  EXPECT_EQ(s.kind, SpanKind::kServer);
  EXPECT_EQ(FindAttribute(s.attributes, "process.pid"), nullptr);
  EXPECT_EQ(std::get<std::string>(*FindAttribute(s.resource->attributes, "service.name")), "kernel");
}

TEST(TcpNoteBuffer, StaysBoundedAndCountsWhatItDiscards) {
  TcpNoteBuffer notes(/*max_connections=*/4, /*max_per_connection=*/3);
  for (std::uint64_t sock = 1; sock <= 10; ++sock) {
    for (int i = 0; i < 5; ++i) {
      notes.Add(kspan_tcp_note{KSPAN_EVENT_TCP_CONN_EVENT, KSPAN_TCP_NOTE_RETRANSMIT, sock, 0, 1, 0}, 0);
    }
  }
  EXPECT_LE(notes.connections(), 4u);
  // 10 connections x 5 notes: 3 kept per connection, 2 discarded each; six
  // connections' 3 kept notes evicted.
  EXPECT_EQ(notes.discarded(), 10u * 2 + 6u * 3);
  EXPECT_EQ(notes.Take(10).size(), 3u);
  EXPECT_TRUE(notes.Take(1).empty());
}

}  // namespace
}  // namespace kspan
