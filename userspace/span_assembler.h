// Kernel events -> kspan spans: names, semantic-convention attributes, status,
// Unix times, fresh W3C ids and the process's resource.
#pragma once

#include <functional>
#include <mutex>
#include <string>

#include "exporter/self_metrics.h"
#include "exporter/span.h"
#include "userspace/clock_sync.h"
#include "userspace/event_decoder.h"
#include "userspace/id_generator.h"
#include "userspace/process_resources.h"
#include "userspace/dns_spans.h"
#include "userspace/http_spans.h"
#include "userspace/tcp_spans.h"

namespace kspan {

using SpanConsumer = std::function<void(Span&&)>;

class SpanAssembler final : public KernelEventHandler {
 public:
  SpanAssembler(ClockSync& clock, ProcessResources& resources, MetricsRegistry& metrics,
                SpanConsumer consumer, HttpTrackerOptions http_options = {});
  ~SpanAssembler() override;

  void OnTcpConnect(const kspan_tcp_connect_event& event) noexcept override;
  void OnTcpAccept(const kspan_tcp_accept_event& event) noexcept override;
  void OnTcpConn(const kspan_tcp_conn_event& event) noexcept override;
  void OnTcpNote(const kspan_tcp_note& note) noexcept override;
  void OnDns(const kspan_dns_event& event) noexcept override;
  // Reports DNS queries that got no response in time (any thread).
  void ExpireDns(std::uint64_t now_mono_ns) noexcept;
  void OnSyscall(const kspan_syscall_event& event, std::string_view path) noexcept override;
  void OnHttp(const kspan_http_event& event) noexcept override;
  // exec and exit: the process's identity changes or ends (no span), and
  // the observer hears of it.
  void OnProcess(const kspan_proc_event& event) noexcept override;
  // Called on the ring reader's thread for every exec and exit record,
  // after the process's identity is updated: must be quick (no /proc).
  // Set before the reader starts.
  using ProcessObserver = std::function<void(const kspan_proc_event&)>;
  void SetProcessObserver(ProcessObserver observer) { process_observer_ = std::move(observer); }
  // Ends HTTP responses gone quiet and requests left unanswered (any thread).
  void ExpireHttp(std::uint64_t now_mono_ns) noexcept;
  // Ends every HTTP exchange still open (shutdown, after the rings drained).
  void FlushHttp() noexcept;

  // Exposed for tests: the span for one event, without handing it on.
  Span BuildTcpConnect(const kspan_tcp_connect_event& event) {
    return BuildTcpConnectSpan(event, ctx_);
  }

  const TcpNoteBuffer& tcp_notes() const { return notes_; }

 private:
  // Builds with `build` and hands the span on, counting it under `family`.
  template <typename Build>
  void Emit(Counter& counter, Build&& build) noexcept;

  ClockSync& clock_;
  MetricsRegistry& metrics_;
  IdGenerator ids_;
  SpanBuildContext ctx_;
  SpanConsumer consumer_;
  ProcessObserver process_observer_;
  TcpNoteBuffer notes_;
  // DNS pairing runs on the ring reader and on the agent's tick: its own
  // lock, and its own id generator (IdGenerator is single-threaded).
  std::mutex dns_mu_;
  IdGenerator dns_ids_;
  SpanBuildContext dns_ctx_;
  DnsTracker dns_;
  Counter& dns_spans_;
  // HTTP exchanges: the same arrangement as DNS.
  std::mutex http_mu_;
  IdGenerator http_ids_;
  SpanBuildContext http_ctx_;
  HttpTracker http_;
  std::uint64_t http_last_expire_ns_ = 0;
  Counter& http_spans_;
  Counter& connect_spans_;
  Counter& accept_spans_;
  Counter& connection_spans_;
  Counter& syscall_spans_;
  Counter& assembly_failed_;
};

// "127.0.0.1", "::1": the textual address of a family/bytes pair.
std::string FormatAddress(std::uint16_t family, const std::uint8_t* addr);

// "ECONNREFUSED" and a human reason ("connection refused") for an errno.
std::string ErrnoName(int err);

}  // namespace kspan
