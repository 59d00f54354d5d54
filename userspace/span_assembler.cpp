#include "userspace/span_assembler.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "userspace/syscall_spans.h"

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

namespace {
constexpr char kAssembled[] = "kspan_spans_assembled_total";
constexpr char kAssembledHelp[] = "Kernel spans built from decoded events, by family.";
}  // namespace

SpanAssembler::SpanAssembler(ClockSync& clock, ProcessResources& resources,
                             MetricsRegistry& metrics, SpanConsumer consumer,
                             HttpTrackerOptions http_options)
    : clock_(clock),
      metrics_(metrics),
      ctx_{clock, resources, ids_},
      consumer_(std::move(consumer)),
      dns_ctx_{clock, resources, dns_ids_},
      dns_spans_(metrics.GetCounter(kAssembled, kAssembledHelp, {{"family", "dns"}})),
      http_ctx_{clock, resources, http_ids_},
      http_(http_options),
      http_spans_(metrics.GetCounter(kAssembled, kAssembledHelp, {{"family", "http"}})),
      connect_spans_(metrics.GetCounter(kAssembled, kAssembledHelp, {{"family", "tcp_connect"}})),
      accept_spans_(metrics.GetCounter(kAssembled, kAssembledHelp, {{"family", "tcp_accept"}})),
      connection_spans_(
          metrics.GetCounter(kAssembled, kAssembledHelp, {{"family", "tcp_connection"}})),
      syscall_spans_(metrics.GetCounter(kAssembled, kAssembledHelp, {{"family", "syscall"}})),
      assembly_failed_(metrics.GetCounter("kspan_spans_assembly_failed_total",
                                          "Kernel events whose span could not be built.")) {
  metrics.AddCallbackCounter(
      "kspan_dns_messages_unusable_total",
      "DNS messages that were not DNS (malformed) or answered no query kspan saw.", {},
      [this] {
        std::lock_guard lock(dns_mu_);
        return static_cast<double>(dns_.malformed() + dns_.unmatched_responses());
      },
      this);
  metrics.AddCallbackCounter(
      "kspan_http_requests_unanswered_total",
      "HTTP requests ended without a response (connection closed, timeout, too many waiting).",
      {},
      [this] {
        std::lock_guard lock(http_mu_);
        return static_cast<double>(http_.unanswered());
      },
      this);
  metrics.AddCallbackCounter(
      "kspan_http_traceparent_invalid_total",
      "traceparent header values that are not valid W3C trace context (ignored).", {},
      [this] {
        std::lock_guard lock(http_mu_);
        return static_cast<double>(http_.invalid_traceparent());
      },
      this);
  metrics.AddCallbackCounter(
      "kspan_http_records_unmatched_total",
      "HTTP responses with no request kspan saw, and records of untracked connections.", {},
      [this] {
        std::lock_guard lock(http_mu_);
        return static_cast<double>(http_.unmatched());
      },
      this);
  metrics.AddCallbackGauge("kspan_http_connections", "HTTP connections tracked.", {},
                           [this] {
                             std::lock_guard lock(http_mu_);
                             return static_cast<double>(http_.connections());
                           },
                           this);
  metrics.AddCallbackCounter(
      "kspan_tcp_notes_discarded_total",
      "Retransmit/reset notes discarded because too many connections or notes were pending.",
      {}, [this] { return static_cast<double>(notes_.discarded()); }, this);
}

SpanAssembler::~SpanAssembler() { metrics_.RemoveCallbacks(this); }

template <typename Build>
void SpanAssembler::Emit(Counter& counter, Build&& build) noexcept {
  try {
    consumer_(build());
    counter.Add();
  } catch (const std::exception& ex) {
    // Allocation failure is the only way here; counted, never silent.
    assembly_failed_.Add();
    spdlog::error("span assembly failed: {}", ex.what());
  }
}

void SpanAssembler::OnProcess(const kspan_proc_event& e) noexcept {
  try {
    if (e.kind == KSPAN_PROC_EXEC) {
      ctx_.resources.OnExec(e.pid, e.ppid, e.ts_ns, std::string_view(e.comm, strnlen(e.comm, sizeof(e.comm))),
                            std::string_view(e.filename, strnlen(e.filename, sizeof(e.filename))));
    } else if (e.kind == KSPAN_PROC_EXIT) {
      ctx_.resources.OnExit(e.pid, e.ts_ns);
    }
    if (process_observer_) process_observer_(e);
  } catch (const std::exception& ex) {
    assembly_failed_.Add();
    spdlog::error("process identity update failed: {}", ex.what());
  }
}

void SpanAssembler::OnTcpConnect(const kspan_tcp_connect_event& event) noexcept {
  Emit(connect_spans_, [&] { return BuildTcpConnectSpan(event, ctx_); });
}

void SpanAssembler::OnTcpAccept(const kspan_tcp_accept_event& event) noexcept {
  Emit(accept_spans_, [&] { return BuildTcpAcceptSpan(event, ctx_); });
}

void SpanAssembler::OnTcpConn(const kspan_tcp_conn_event& event) noexcept {
  Emit(connection_spans_,
       [&] { return BuildTcpConnectionSpan(event, notes_.Take(event.sock_id), ctx_); });
}

void SpanAssembler::OnSyscall(const kspan_syscall_event& event, std::string_view path) noexcept {
  Emit(syscall_spans_, [&] { return BuildSyscallSpan(event, path, clock_, ctx_.resources, ids_); });
}

void SpanAssembler::OnDns(const kspan_dns_event& event) noexcept {
  try {
    std::vector<Span> spans;
    {
      std::lock_guard lock(dns_mu_);
      spans = dns_.OnMessage(event, dns_ctx_);
      auto expired = dns_.Expire(event.ts_ns, dns_ctx_);
      std::move(expired.begin(), expired.end(), std::back_inserter(spans));
    }
    for (auto& s : spans) {
      consumer_(std::move(s));
      dns_spans_.Add();
    }
  } catch (const std::exception&) {
    assembly_failed_.Add();
  }
}

void SpanAssembler::ExpireDns(std::uint64_t now_mono_ns) noexcept {
  try {
    std::vector<Span> spans;
    {
      std::lock_guard lock(dns_mu_);
      spans = dns_.Expire(now_mono_ns, dns_ctx_);
    }
    for (auto& s : spans) {
      consumer_(std::move(s));
      dns_spans_.Add();
    }
  } catch (const std::exception&) {
    assembly_failed_.Add();
  }
}

void SpanAssembler::OnHttp(const kspan_http_event& event) noexcept {
  try {
    std::vector<Span> spans;
    {
      std::lock_guard lock(http_mu_);
      spans = http_.OnEvent(event, http_ctx_);
      // Expiry walks every connection: at most every 100 ms of event time.
      if (event.end_ns > http_last_expire_ns_ + 100'000'000) {
        http_last_expire_ns_ = event.end_ns;
        auto expired = http_.Expire(event.end_ns, http_ctx_);
        std::move(expired.begin(), expired.end(), std::back_inserter(spans));
      }
    }
    for (auto& s : spans) {
      consumer_(std::move(s));
      http_spans_.Add();
    }
  } catch (const std::exception&) {
    assembly_failed_.Add();
  }
}

void SpanAssembler::ExpireHttp(std::uint64_t now_mono_ns) noexcept {
  try {
    std::vector<Span> spans;
    {
      std::lock_guard lock(http_mu_);
      spans = http_.Expire(now_mono_ns, http_ctx_);
    }
    for (auto& s : spans) {
      consumer_(std::move(s));
      http_spans_.Add();
    }
  } catch (const std::exception&) {
    assembly_failed_.Add();
  }
}

void SpanAssembler::FlushHttp() noexcept {
  try {
    std::vector<Span> spans;
    {
      std::lock_guard lock(http_mu_);
      spans = http_.Flush(http_ctx_);
    }
    for (auto& s : spans) {
      consumer_(std::move(s));
      http_spans_.Add();
    }
  } catch (const std::exception&) {
    assembly_failed_.Add();
  }
}

void SpanAssembler::OnTcpNote(const kspan_tcp_note& note) noexcept {
  try {
    notes_.Add(note, clock_.ToUnixNanos(note.ts_ns));
  } catch (const std::exception&) {
    assembly_failed_.Add();
  }
}

}  // namespace kspan
