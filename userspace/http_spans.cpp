#include "userspace/http_spans.h"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "userspace/span_assembler.h"

namespace kspan {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // W3C: upper-case hex is invalid
}

// Lower-case hex of exactly out.size() bytes.
template <std::size_t N>
bool ParseHex(std::string_view s, std::array<std::uint8_t, N>* out) {
  if (s.size() != 2 * N) return false;
  for (std::size_t i = 0; i < N; ++i) {
    const int hi = HexDigit(s[2 * i]);
    const int lo = HexDigit(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    (*out)[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return true;
}

std::string_view Chars(const char* p, std::size_t len, std::size_t max) {
  return std::string_view(p, std::min(len, max));
}

// Addresses of an AF_INET6 socket that talks IPv4 are v4-mapped
// (::ffff:a.b.c.d): reported as the IPv4 address they stand for.
std::string Address(std::uint16_t family, const std::uint8_t* addr) {
  static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (family == AF_INET6 && std::memcmp(addr, kMapped, sizeof(kMapped)) == 0) {
    return FormatAddress(AF_INET, addr + 12);
  }
  return FormatAddress(family, addr);
}

}  // namespace

std::optional<TraceParent> ParseTraceParent(std::string_view v) {
  // version "-" trace-id "-" parent-id "-" trace-flags, lower-case hex (W3C:
  // anything else is to be ignored; bpf/http.bpf.c samples by the same rule).
  if (v.size() < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return std::nullopt;
  std::array<std::uint8_t, 1> version{}, flags{};
  TraceParent tp;
  if (!ParseHex(v.substr(0, 2), &version) || version[0] == 0xff) return std::nullopt;
  if (!ParseHex(v.substr(3, 32), &tp.trace_id) || !IsValid(tp.trace_id)) return std::nullopt;
  if (!ParseHex(v.substr(36, 16), &tp.parent_id) || !IsValid(tp.parent_id)) return std::nullopt;
  if (!ParseHex(v.substr(53, 2), &flags)) return std::nullopt;
  // Version 00 has exactly these fields; a later version may append more,
  // after a '-', and is read as far as version 00 goes.
  if (version[0] == 0 && v.size() != 55) return std::nullopt;
  if (version[0] != 0 && v.size() > 55 && v[55] != '-') return std::nullopt;
  tp.version = version[0];
  tp.flags = flags[0];
  return tp;
}

std::string HttpPathOf(std::string_view target, std::string* query) {
  // absolute-form (to a proxy): scheme://authority/path?query
  if (auto scheme = target.find("://"); scheme != std::string_view::npos && target[0] != '/') {
    const auto path = target.find('/', scheme + 3);
    target = path == std::string_view::npos ? std::string_view("/") : target.substr(path);
  }
  const auto q = target.find_first_of("?#");
  if (query != nullptr) {
    *query = q == std::string_view::npos ? std::string()
                                         : std::string(target.substr(q + 1));
    if (auto hash = query->find('#'); hash != std::string::npos) query->resize(hash);
  }
  return std::string(target.substr(0, q));
}

HttpTracker::Message HttpTracker::FromRecord(const kspan_http_event& e) {
  Message m;
  m.start_ns = e.start_ns;
  m.end_ns = e.end_ns;
  m.tid = e.tid;
  m.version_minor = e.version_minor;
  m.status = e.status;
  m.method = std::string(Chars(e.method, e.method_len, sizeof(e.method)));
  m.target = std::string(Chars(e.path, e.path_len, sizeof(e.path)));
  Merge(m, e);
  m.end_ns = e.end_ns;
  return m;
}

// A record carrying more of message m: continued headers, or body data.
void HttpTracker::Merge(Message& m, const kspan_http_event& e) {
  if (e.traceparent_len > 0) {
    m.traceparent = std::string(Chars(e.traceparent, e.traceparent_len, sizeof(e.traceparent)));
  }
  if (e.tracestate_len > 0) {
    m.tracestate = std::string(Chars(e.tracestate, e.tracestate_len, sizeof(e.tracestate)));
    // Longer than the kernel keeps: a cut list is no valid tracestate, and
    // W3C says to discard rather than pass a partial one on.
    m.tracestate_cut = (e.flags & KSPAN_HTTP_F_TRACESTATE_CUT) != 0;
  }
  if (!m.headers_done && (e.flags & KSPAN_HTTP_F_HEADERS_END) &&
      e.kind != KSPAN_HTTP_DATA) {
    m.header_len = m.bytes + e.header_len;
    m.headers_done = true;
  }
  m.bytes += e.bytes;
  m.end_ns = std::max<std::uint64_t>(m.end_ns, e.end_ns);
}

Span HttpTracker::Build(const Connection& c, const Exchange& x, const char* no_response,
                        std::uint64_t end_ns, SpanBuildContext& ctx) {
  const auto& e = c.first;
  const bool server = c.server == 1;
  const Message& rq = x.request;
  Span s;
  s.span_id = ctx.ids.NewSpanId();
  s.kind = server ? SpanKind::kServer : SpanKind::kClient;
  s.scope = KernelScope();
  std::string query;
  const std::string path = HttpPathOf(rq.target, &query);
  s.name = absl::StrCat(rq.method, " ", path);
  if (!rq.traceparent.empty()) {
    if (auto tp = ParseTraceParent(rq.traceparent)) {
      // Server: the caller's span is the parent. Client: the application
      // put its own span in the header, the one this request belongs to.
      s.trace_id = tp->trace_id;
      s.parent_span_id = tp->parent_id;
      if (!rq.tracestate_cut) s.trace_state = rq.tracestate;
      // W3C flags in bits 0-7; bits 8-9: the parent's is-remote is known
      // and, for a server span, true.
      s.flags = tp->flags | 0x100u | (server ? 0x200u : 0u);
    } else {
      ++invalid_traceparent_;
    }
  }
  if (!IsValid(s.trace_id)) s.trace_id = ctx.ids.NewTraceId();
  s.start_unix_nano = ctx.clock.ToUnixNanos(rq.start_ns);
  s.end_unix_nano = ctx.clock.ToUnixNanos(std::max(end_ns, rq.start_ns));
  s.resource = ctx.resources.For(e.pid, std::string(e.comm, strnlen(e.comm, sizeof(e.comm))), rq.start_ns);

  const std::string local = Address(e.family, e.local_addr);
  const std::string peer = Address(e.family, e.peer_addr);
  const bool v4 = local.find(':') == std::string::npos;
  const int minor = x.response ? x.response->version_minor : rq.version_minor;
  s.attributes = {
      {"http.request.method", rq.method},
      {"url.path", path},
      {"network.protocol.name", std::string("http")},
      {"network.protocol.version", absl::StrCat("1.", minor)},
      {"network.transport", std::string("tcp")},
      {"network.type", std::string(v4 ? "ipv4" : "ipv6")},
      {"server.address", server ? local : peer},
      {"server.port", static_cast<std::int64_t>(server ? e.local_port : e.peer_port)},
      {"network.peer.address", peer},
      {"network.peer.port", static_cast<std::int64_t>(e.peer_port)},
      {"network.local.address", local},
      {"network.local.port", static_cast<std::int64_t>(e.local_port)},
      {"process.pid", static_cast<std::int64_t>(e.pid)},
      {"thread.id", static_cast<std::int64_t>(rq.tid)},
  };
  if (server) {
    s.attributes.push_back({"client.address", peer});
    s.attributes.push_back({"client.port", static_cast<std::int64_t>(e.peer_port)});
  }
  if (options_.keep_query && !query.empty()) s.attributes.push_back({"url.query", query});
  if (rq.headers_done && rq.bytes >= rq.header_len) {
    s.attributes.push_back(
        {"http.request.body.size", static_cast<std::int64_t>(rq.bytes - rq.header_len)});
  }
  if (x.response) {
    const Message& rs = *x.response;
    s.attributes.push_back({"http.response.status_code", static_cast<std::int64_t>(rs.status)});
    if (rs.headers_done && rs.bytes >= rs.header_len) {
      s.attributes.push_back(
          {"http.response.body.size", static_cast<std::int64_t>(rs.bytes - rs.header_len)});
    }
    // OpenTelemetry HTTP conventions: a server errs on 5xx only (4xx is the
    // client's mistake), a client on 4xx and 5xx.
    if (rs.status >= 500 || (!server && rs.status >= 400)) {
      s.status_code = StatusCode::kError;
      s.attributes.push_back({"error.type", absl::StrCat(rs.status)});
    }
  } else {
    s.status_code = StatusCode::kError;
    s.status_message = no_response;
    s.attributes.push_back({"error.type", std::string("no_response")});
    s.attributes.push_back({"kspan.http.no_response", std::string(no_response)});
  }
  return s;
}

void HttpTracker::EndAll(Connection& c, const char* why, std::uint64_t end_ns,
                         std::vector<Span>& out, SpanBuildContext& ctx) {
  if (c.answering) {
    out.push_back(Build(c, *c.answering, nullptr, c.answering->response->end_ns, ctx));
    c.answering.reset();
  }
  for (const auto& x : c.pending) {
    ++unanswered_;
    out.push_back(Build(c, x, why, std::max(end_ns, x.request.end_ns), ctx));
  }
  c.pending.clear();
}

HttpTracker::Connection& HttpTracker::ConnectionFor(const kspan_http_event& e,
                                                    std::vector<Span>& out,
                                                    SpanBuildContext& ctx) {
  const Key key{e.pid, e.sock_id, e.sock_ino};
  if (auto it = conns_.find(key); it != conns_.end()) return it->second;
  if (conns_.size() >= options_.max_connections) {
    auto oldest = conns_.begin();
    for (auto it = conns_.begin(); it != conns_.end(); ++it) {
      if (it->second.last_ns < oldest->second.last_ns) oldest = it;
    }
    ++evicted_;
    EndAll(oldest->second, "connection no longer tracked (too many connections)",
           oldest->second.last_ns, out, ctx);
    conns_.erase(oldest);
  }
  Connection& c = conns_[key];
  c.first = e;
  return c;
}

std::vector<Span> HttpTracker::OnEvent(const kspan_http_event& e, SpanBuildContext& ctx) {
  std::vector<Span> out;
  if (e.kind == KSPAN_HTTP_CLOSE) {
    auto it = conns_.find(Key{e.pid, e.sock_id, e.sock_ino});
    if (it == conns_.end()) return out;
    EndAll(it->second, "connection closed without a response", e.end_ns, out, ctx);
    conns_.erase(it);
    return out;
  }
  if (e.kind == KSPAN_HTTP_DATA || e.kind == KSPAN_HTTP_HEADERS) {
    auto it = conns_.find(Key{e.pid, e.sock_id, e.sock_ino});
    if (it == conns_.end() || it->second.server < 0) return out;
    Connection& c = it->second;
    c.last_ns = e.end_ns;
    const bool request_dir = (e.direction == KSPAN_HTTP_READ) == (c.server == 1);
    if (request_dir) {
      if (!c.pending.empty()) Merge(c.pending.back().request, e);
    } else if (c.answering) {
      Merge(*c.answering->response, e);
    }
    return out;
  }
  if (e.kind != KSPAN_HTTP_REQUEST && e.kind != KSPAN_HTTP_RESPONSE) {
    ++unmatched_;
    return out;
  }
  Connection& c = ConnectionFor(e, out, ctx);
  c.last_ns = e.end_ns;
  const bool is_request = e.kind == KSPAN_HTTP_REQUEST;
  if (c.server < 0) {
    if (!is_request) {
      ++unmatched_;  // a response to a request sent before capture began
      return out;
    }
    c.server = e.direction == KSPAN_HTTP_READ ? 1 : 0;
  }
  const bool request_dir = (e.direction == KSPAN_HTTP_READ) == (c.server == 1);
  if (is_request != request_dir) {
    ++unmatched_;  // not the request/response pattern of this connection's side
    return out;
  }
  if (is_request) {
    if (c.pending.size() >= options_.max_pending) {
      ++unanswered_;
      out.push_back(Build(c, c.pending.front(), "too many requests waiting for a response",
                          c.pending.front().request.end_ns, ctx));
      c.pending.pop_front();
    }
    c.pending.push_back(Exchange{FromRecord(e), std::nullopt});
    return out;
  }
  // A response: the previous one is complete; this one answers the oldest
  // request still waiting.
  if (c.answering) {
    out.push_back(Build(c, *c.answering, nullptr, c.answering->response->end_ns, ctx));
    c.answering.reset();
  }
  if (c.pending.empty()) {
    ++unmatched_;
    return out;
  }
  c.answering = std::move(c.pending.front());
  c.pending.pop_front();
  c.answering->response = FromRecord(e);
  return out;
}

std::vector<Span> HttpTracker::Expire(std::uint64_t now, SpanBuildContext& ctx) {
  std::vector<Span> out;
  const auto idle = static_cast<std::uint64_t>(options_.response_idle.count());
  const auto timeout = static_cast<std::uint64_t>(options_.response_timeout.count());
  const auto conn_idle = static_cast<std::uint64_t>(options_.connection_idle.count());
  for (auto it = conns_.begin(); it != conns_.end();) {
    Connection& c = it->second;
    if (c.answering && now > c.answering->response->end_ns &&
        now - c.answering->response->end_ns > idle) {
      out.push_back(Build(c, *c.answering, nullptr, c.answering->response->end_ns, ctx));
      c.answering.reset();
    }
    while (!c.answering && !c.pending.empty() && now > c.pending.front().request.start_ns &&
           now - c.pending.front().request.start_ns > timeout) {
      ++unanswered_;
      out.push_back(Build(c, c.pending.front(), "no response within the timeout",
                          c.pending.front().request.start_ns + timeout, ctx));
      c.pending.pop_front();
    }
    if (!c.answering && c.pending.empty() && now > c.last_ns && now - c.last_ns > conn_idle) {
      it = conns_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::vector<Span> HttpTracker::Flush(SpanBuildContext& ctx) {
  std::vector<Span> out;
  for (auto& [key, c] : conns_) {
    EndAll(c, "agent stopped before a response", c.last_ns, out, ctx);
  }
  conns_.clear();
  return out;
}

}  // namespace kspan
