#include "userspace/dns_spans.h"

#include <ares.h>
#include <sys/socket.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "userspace/span_assembler.h"

namespace kspan {
namespace {

std::uint16_t Be16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}

}  // namespace

std::optional<DnsMessage> ParseDnsMessage(std::span<const std::uint8_t> b) {
  if (b.size() < 12) return std::nullopt;
  DnsMessage m;
  m.id = Be16(b.data());
  const std::uint16_t flags = Be16(b.data() + 2);
  m.response = (flags & 0x8000) != 0;
  m.rcode = flags & 0x000f;
  m.questions = Be16(b.data() + 4);
  m.answers = Be16(b.data() + 6);
  if (m.questions == 0) return std::nullopt;
  // c-ares (already linked through gRPC) decodes names, compression
  // pointers included, with its own bounds checks.
  char* name = nullptr;
  long encoded_len = 0;
  const int rc = ares_expand_name(b.data() + 12, b.data(), static_cast<int>(b.size()), &name,
                                  &encoded_len);
  if (rc != ARES_SUCCESS) return m;  // header only: the question was cut off
  m.qname = name;
  ares_free_string(name);
  const std::size_t type_at = 12 + static_cast<std::size_t>(encoded_len);
  if (type_at + 2 <= b.size()) m.qtype = Be16(b.data() + type_at);
  return m;
}

std::string DnsTypeName(std::uint16_t t) {
  switch (t) {
    case 1: return "A";
    case 2: return "NS";
    case 5: return "CNAME";
    case 6: return "SOA";
    case 12: return "PTR";
    case 15: return "MX";
    case 16: return "TXT";
    case 28: return "AAAA";
    case 33: return "SRV";
    case 64: return "SVCB";
    case 65: return "HTTPS";
    case 255: return "ANY";
    default: return absl::StrCat("TYPE", t);
  }
}

std::string DnsRcodeName(int rcode) {
  static constexpr const char* kNames[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN",
                                           "NOTIMP",  "REFUSED"};
  if (rcode >= 0 && rcode < static_cast<int>(std::size(kNames))) return kNames[rcode];
  return absl::StrCat("RCODE", rcode);
}

Span DnsTracker::Build(const Pending& q, const kspan_dns_event* response,
                       const DnsMessage* answer, SpanBuildContext& ctx) const {
  const auto& e = q.query;
  Span s;
  s.trace_id = ctx.ids.NewTraceId();
  s.span_id = ctx.ids.NewSpanId();
  s.name = "dns query";
  s.kind = SpanKind::kClient;
  s.scope = KernelScope();
  s.start_unix_nano = ctx.clock.ToUnixNanos(e.ts_ns);
  const std::uint64_t end_mono =
      response ? response->ts_ns : e.ts_ns + static_cast<std::uint64_t>(timeout_.count());
  s.end_unix_nano = ctx.clock.ToUnixNanos(end_mono);
  s.resource = ctx.resources.For(e.pid, std::string(e.comm, strnlen(e.comm, sizeof(e.comm))), e.ts_ns);
  const std::string server = FormatAddress(e.family, e.server);
  s.attributes = {
      {"dns.question.name", q.message.qname},
      {"kspan.dns.question.type", DnsTypeName(q.message.qtype)},
      {"kspan.dns.id", static_cast<std::int64_t>(q.message.id)},
      {"network.transport", std::string("udp")},
      {"network.type", std::string(e.family == AF_INET6 ? "ipv6" : "ipv4")},
      {"network.peer.address", server},
      {"network.peer.port", static_cast<std::int64_t>(e.server_port)},
      {"server.address", server},
      {"server.port", static_cast<std::int64_t>(e.server_port)},
      {"process.pid", static_cast<std::int64_t>(e.pid)},
      {"thread.id", static_cast<std::int64_t>(e.tid)},
  };
  if (answer == nullptr) {
    s.status_code = StatusCode::kError;
    s.status_message = "no DNS response";
    s.attributes.push_back({"error.type", std::string("timeout")});
    return s;
  }
  const std::string rcode = DnsRcodeName(answer->rcode);
  s.attributes.push_back({"kspan.dns.response_code", rcode});
  s.attributes.push_back({"kspan.dns.answer_count", static_cast<std::int64_t>(answer->answers)});
  if (answer->rcode != 0) {
    s.status_code = StatusCode::kError;
    s.status_message = absl::StrCat("DNS ", rcode);
    s.attributes.push_back({"error.type", rcode});
  }
  return s;
}

std::vector<Span> DnsTracker::OnMessage(const kspan_dns_event& e, SpanBuildContext& ctx) {
  std::vector<Span> out;
  const std::size_t len = std::min<std::size_t>(e.len, KSPAN_DNS_PAYLOAD);
  auto m = ParseDnsMessage(std::span<const std::uint8_t>(e.payload, len));
  if (!m) {
    ++malformed_;
    return out;
  }
  const Key key{e.pid, e.sock_id, m->id};
  if (e.direction == KSPAN_DNS_QUERY && !m->response) {
    if (pending_.size() >= max_pending_) {
      // Evict the oldest query: reported as unanswered rather than lost.
      auto oldest = pending_.begin();
      for (auto it = pending_.begin(); it != pending_.end(); ++it) {
        if (it->second.query.ts_ns < oldest->second.query.ts_ns) oldest = it;
      }
      out.push_back(Build(oldest->second, nullptr, nullptr, ctx));
      pending_.erase(oldest);
    }
    pending_[key] = Pending{e, *m};
    return out;
  }
  auto it = pending_.find(key);
  if (it == pending_.end()) {
    ++unmatched_;  // the query came before capture, or was a retransmission answered twice
    return out;
  }
  out.push_back(Build(it->second, &e, &*m, ctx));
  pending_.erase(it);
  return out;
}

std::vector<Span> DnsTracker::Expire(std::uint64_t now_mono_ns, SpanBuildContext& ctx) {
  std::vector<Span> out;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (now_mono_ns > it->second.query.ts_ns &&
        now_mono_ns - it->second.query.ts_ns > static_cast<std::uint64_t>(timeout_.count())) {
      out.push_back(Build(it->second, nullptr, nullptr, ctx));
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

}  // namespace kspan
