#include "userspace/span_assembler.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace kspan {

std::string FormatAddress(std::uint16_t family, const std::uint8_t* addr) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (inet_ntop(family == AF_INET6 ? AF_INET6 : AF_INET, addr, buf, sizeof(buf)) == nullptr) {
    return {};
  }
  return buf;
}

std::string ErrnoName(int err) {
  switch (err) {
    case ECONNREFUSED: return "ECONNREFUSED";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ENETUNREACH: return "ENETUNREACH";
    case ECONNRESET: return "ECONNRESET";
    case ECONNABORTED: return "ECONNABORTED";
    case EPROTO: return "EPROTO";
    default: return absl::StrCat("errno ", err);
  }
}

SpanAssembler::SpanAssembler(ClockSync& clock, ProcessResources& resources,
                             MetricsRegistry& metrics, SpanConsumer consumer)
    : clock_(clock),
      resources_(resources),
      consumer_(std::move(consumer)),
      assembled_(metrics.GetCounter("kspan_spans_assembled_total",
                                    "Kernel spans built from decoded events.",
                                    {{"family", "tcp_connect"}})) {}

Span SpanAssembler::BuildTcpConnect(const kspan_tcp_connect_event& e) {
  Span s;
  s.trace_id = ids_.NewTraceId();
  s.span_id = ids_.NewSpanId();
  s.name = "tcp connect";
  s.kind = SpanKind::kClient;
  s.start_unix_nano = clock_.ToUnixNanos(e.start_ns);
  s.end_unix_nano = clock_.ToUnixNanos(e.end_ns);
  s.scope = KernelScope();

  const std::string comm(e.comm, strnlen(e.comm, sizeof(e.comm)));
  s.resource = resources_.For(e.pid, comm);

  const std::string peer = FormatAddress(e.family, e.daddr);
  s.attributes = {
      {"network.transport", std::string("tcp")},
      {"network.type", std::string(e.family == AF_INET6 ? "ipv6" : "ipv4")},
      {"network.peer.address", peer},
      {"network.peer.port", static_cast<std::int64_t>(e.dport)},
      {"network.local.address", FormatAddress(e.family, e.saddr)},
      {"network.local.port", static_cast<std::int64_t>(e.sport)},
      {"server.address", peer},
      {"server.port", static_cast<std::int64_t>(e.dport)},
      {"process.pid", static_cast<std::int64_t>(e.pid)},
      {"thread.id", static_cast<std::int64_t>(e.tid)},
  };

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

void SpanAssembler::OnTcpConnect(const kspan_tcp_connect_event& event) noexcept {
  try {
    consumer_(BuildTcpConnect(event));
    assembled_.Add();
  } catch (const std::exception& ex) {
    // Allocation failure is the only way here; losing the span is counted by
    // the gap between decoded and assembled.
    spdlog::error("span assembly failed: {}", ex.what());
  }
}

}  // namespace kspan
