#include "userspace/tcp_spans.h"

#include <sys/socket.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "userspace/span_assembler.h"

namespace kspan {
namespace {

std::string Comm(const char* comm) { return std::string(comm, strnlen(comm, KSPAN_COMM_LEN)); }

Span NewRootSpan(SpanBuildContext& ctx, std::string name, SpanKind kind, std::uint64_t start_mono,
                 std::uint64_t end_mono, std::uint32_t pid, const char* comm) {
  Span s;
  s.trace_id = ctx.ids.NewTraceId();
  s.span_id = ctx.ids.NewSpanId();
  s.name = std::move(name);
  s.kind = kind;
  s.start_unix_nano = ctx.clock.ToUnixNanos(start_mono);
  s.end_unix_nano = ctx.clock.ToUnixNanos(end_mono);
  s.scope = KernelScope();
  s.resource = ctx.resources.For(pid, Comm(comm), start_mono);
  return s;
}

// network.* for a connection as `local`/`peer` see it.
void AddEndpoints(Attributes& a, std::uint16_t family, std::uint16_t sport, std::uint16_t dport,
                  const std::uint8_t* saddr, const std::uint8_t* daddr) {
  a.push_back({"network.transport", std::string("tcp")});
  a.push_back({"network.type", std::string(family == AF_INET6 ? "ipv6" : "ipv4")});
  a.push_back({"network.peer.address", FormatAddress(family, daddr)});
  a.push_back({"network.peer.port", static_cast<std::int64_t>(dport)});
  a.push_back({"network.local.address", FormatAddress(family, saddr)});
  a.push_back({"network.local.port", static_cast<std::int64_t>(sport)});
}

void AddThread(Attributes& a, std::uint32_t pid, std::uint32_t tid) {
  if (pid == 0) return;
  a.push_back({"process.pid", static_cast<std::int64_t>(pid)});
  a.push_back({"thread.id", static_cast<std::int64_t>(tid)});
}

const char* CloserName(std::uint8_t closed_by) {
  switch (closed_by) {
    case KSPAN_TCP_CLOSED_LOCAL: return "local";
    case KSPAN_TCP_CLOSED_PEER: return "peer";
    case KSPAN_TCP_CLOSED_RESET: return "reset";
    default: return "unknown";
  }
}

}  // namespace

const char* TcpStateName(std::uint32_t state) {
  static constexpr const char* kNames[] = {
      "UNKNOWN",   "ESTABLISHED", "SYN_SENT", "SYN_RECV",   "FIN_WAIT1", "FIN_WAIT2",   "TIME_WAIT",
      "CLOSE",     "CLOSE_WAIT",  "LAST_ACK", "LISTEN",     "CLOSING",   "NEW_SYN_RECV"};
  return state < std::size(kNames) ? kNames[state] : "UNKNOWN";
}

Span BuildTcpConnectSpan(const kspan_tcp_connect_event& e, SpanBuildContext& ctx) {
  Span s = NewRootSpan(ctx, kTcpConnectSpanName, SpanKind::kClient, e.start_ns, e.end_ns, e.pid, e.comm);
  AddEndpoints(s.attributes, e.family, e.sport, e.dport, e.saddr, e.daddr);
  s.attributes.push_back({"server.address", FormatAddress(e.family, e.daddr)});
  s.attributes.push_back({"server.port", static_cast<std::int64_t>(e.dport)});
  AddThread(s.attributes, e.pid, e.tid);
  if (!e.established) {
    s.status_code = StatusCode::kError;
    if (e.error != 0) {
      const int err = static_cast<int>(e.error);
      s.status_message = absl::StrCat("connect failed: ", std::strerror(err));
      s.attributes.push_back({"error.type", ErrnoName(err)});
    } else {
      // The application closed (or gave up on) the socket during the handshake.
      s.status_message = "connect abandoned: socket closed before the handshake completed";
      s.attributes.push_back({"error.type", std::string("closed_before_established")});
    }
  }
  return s;
}

Span BuildTcpAcceptSpan(const kspan_tcp_accept_event& e, SpanBuildContext& ctx) {
  // The SYN arrived one handshake round trip before the connection was
  // queued; kernels keep no SYN timestamp once the handshake completes.
  const std::uint64_t rtt_ns = static_cast<std::uint64_t>(e.handshake_rtt_us) * 1000;
  const std::uint64_t syn_ns = e.queued_ns > rtt_ns ? e.queued_ns - rtt_ns : e.queued_ns;
  Span s = NewRootSpan(ctx, "tcp accept", SpanKind::kServer, syn_ns, e.accepted_ns, e.pid, e.comm);
  const auto& ep = e.ep;
  AddEndpoints(s.attributes, ep.family, ep.sport, ep.dport, ep.saddr, ep.daddr);
  s.attributes.push_back({"server.address", FormatAddress(ep.family, ep.saddr)});
  s.attributes.push_back({"server.port", static_cast<std::int64_t>(ep.sport)});
  s.attributes.push_back({"client.address", FormatAddress(ep.family, ep.daddr)});
  s.attributes.push_back({"client.port", static_cast<std::int64_t>(ep.dport)});
  AddThread(s.attributes, e.pid, e.tid);
  s.attributes.push_back({"kspan.tcp.handshake_rtt_us", static_cast<std::int64_t>(e.handshake_rtt_us)});
  s.attributes.push_back(
      {"kspan.tcp.accept_queue_us",
       static_cast<std::int64_t>((e.accepted_ns - e.queued_ns) / 1000)});
  return s;
}

Span BuildTcpConnectionSpan(const kspan_tcp_conn_event& e, std::vector<SpanEvent> notes,
                            SpanBuildContext& ctx) {
  const SpanKind kind = e.direction == KSPAN_TCP_DIR_OUT  ? SpanKind::kClient
                        : e.direction == KSPAN_TCP_DIR_IN ? SpanKind::kServer
                                                          : SpanKind::kInternal;
  Span s = NewRootSpan(ctx, "tcp connection", kind, e.start_ns, e.end_ns, e.pid, e.comm);
  const auto& ep = e.ep;
  AddEndpoints(s.attributes, ep.family, ep.sport, ep.dport, ep.saddr, ep.daddr);
  AddThread(s.attributes, e.pid, e.tid);
  auto i64 = [](std::uint64_t v) { return static_cast<std::int64_t>(v); };
  s.attributes.push_back({"kspan.tcp.direction",
                          std::string(e.direction == KSPAN_TCP_DIR_OUT  ? "outgoing"
                                      : e.direction == KSPAN_TCP_DIR_IN ? "incoming"
                                                                         : "unknown")});
  s.attributes.push_back({"kspan.tcp.bytes_sent", i64(e.bytes_sent)});
  s.attributes.push_back({"kspan.tcp.bytes_received", i64(e.bytes_received)});
  s.attributes.push_back({"kspan.tcp.segments_sent", i64(e.segs_out)});
  s.attributes.push_back({"kspan.tcp.segments_received", i64(e.segs_in)});
  s.attributes.push_back({"kspan.tcp.retransmits", i64(e.total_retrans)});
  s.attributes.push_back({"kspan.tcp.srtt_us", i64(e.srtt_us)});
  s.attributes.push_back({"kspan.tcp.closed_by", std::string(CloserName(e.closed_by))});
  s.events = std::move(notes);
  return s;
}

void TcpNoteBuffer::Add(const kspan_tcp_note& note, std::uint64_t unix_ns) {
  auto it = pending_.find(note.sock_id);
  if (it == pending_.end()) {
    if (pending_.size() >= max_connections_) {
      // Evict the oldest connection still waiting (its record was lost, or
      // it is very long-lived).
      while (!order_.empty()) {
        auto victim = pending_.find(order_.front());
        order_.pop_front();
        if (victim != pending_.end()) {
          discarded_ += victim->second.size();
          pending_.erase(victim);
          break;
        }
      }
    }
    it = pending_.emplace(note.sock_id, std::vector<SpanEvent>{}).first;
    order_.push_back(note.sock_id);
  }
  if (it->second.size() >= max_per_connection_) {
    ++discarded_;
    return;
  }
  const char* name = note.kind == KSPAN_TCP_NOTE_RETRANSMIT       ? "tcp.retransmit"
                     : note.kind == KSPAN_TCP_NOTE_RESET_SENT     ? "tcp.reset.sent"
                     : note.kind == KSPAN_TCP_NOTE_RESET_RECEIVED ? "tcp.reset.received"
                                                                  : "tcp.unknown";
  it->second.push_back(
      SpanEvent{name, unix_ns, {{"kspan.tcp.state", std::string(TcpStateName(note.state))}}});
}

std::vector<SpanEvent> TcpNoteBuffer::Take(std::uint64_t sock_id) {
  auto it = pending_.find(sock_id);
  if (it == pending_.end()) return {};
  std::vector<SpanEvent> notes = std::move(it->second);
  pending_.erase(it);
  // order_ keeps the stale key; Add() skips keys no longer pending. Trim
  // the front so the deque stays bounded by live connections.
  while (!order_.empty() && !pending_.contains(order_.front())) order_.pop_front();
  if (order_.size() > 2 * max_connections_) {
    // Stale keys piled up behind a long-lived connection: rebuild.
    order_.clear();
    for (const auto& [key, unused] : pending_) order_.push_back(key);
  }
  return notes;
}

}  // namespace kspan
