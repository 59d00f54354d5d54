#include "userspace/event_decoder.h"

#include <algorithm>
#include <cstddef>
#include <cstring>

namespace kspan {

// The BPF side writes these structs; a layout drift must not compile.
static_assert(sizeof(kspan_tcp_connect_event) == 88);
static_assert(offsetof(kspan_tcp_connect_event, type) == 0);
static_assert(offsetof(kspan_tcp_connect_event, start_ns) == 16);
static_assert(offsetof(kspan_tcp_connect_event, end_ns) == 24);
static_assert(offsetof(kspan_tcp_connect_event, family) == 32);
static_assert(offsetof(kspan_tcp_connect_event, established) == 38);
static_assert(offsetof(kspan_tcp_connect_event, saddr) == 40);
static_assert(offsetof(kspan_tcp_connect_event, daddr) == 56);
static_assert(offsetof(kspan_tcp_connect_event, comm) == 72);
static_assert(sizeof(kspan_tcp_endpoints) == 40);
static_assert(sizeof(kspan_tcp_accept_event) == 88);
static_assert(offsetof(kspan_tcp_accept_event, queued_ns) == 16);
static_assert(offsetof(kspan_tcp_accept_event, ep) == 32);
static_assert(offsetof(kspan_tcp_accept_event, comm) == 72);
static_assert(sizeof(kspan_tcp_conn_event) == 128);
static_assert(offsetof(kspan_tcp_conn_event, sock_id) == 16);
static_assert(offsetof(kspan_tcp_conn_event, bytes_sent) == 40);
static_assert(offsetof(kspan_tcp_conn_event, srtt_us) == 68);
static_assert(offsetof(kspan_tcp_conn_event, ep) == 72);
static_assert(offsetof(kspan_tcp_conn_event, comm) == 112);
static_assert(sizeof(kspan_tcp_note) == 32);
static_assert(sizeof(kspan_dns_event) == 72 + KSPAN_DNS_PAYLOAD);
static_assert(offsetof(kspan_dns_event, ts_ns) == 16);
static_assert(offsetof(kspan_dns_event, server) == 40);
static_assert(offsetof(kspan_dns_event, payload) == 72);
static_assert(offsetof(kspan_tcp_note, ts_ns) == 16);
static_assert(sizeof(kspan_http_event) == 584);
static_assert(offsetof(kspan_http_event, start_ns) == 16);
static_assert(offsetof(kspan_http_event, sock_ino) == 40);
static_assert(offsetof(kspan_http_event, header_len) == 60);
static_assert(offsetof(kspan_http_event, local_addr) == 72);
static_assert(offsetof(kspan_http_event, method_len) == 104);
static_assert(offsetof(kspan_http_event, method) == 112);
static_assert(offsetof(kspan_http_event, path) == 136);
static_assert(offsetof(kspan_http_event, traceparent) == 264);
static_assert(offsetof(kspan_http_event, tracestate) == 328);
static_assert(sizeof(kspan_syscall_event) == 136);
static_assert(offsetof(kspan_syscall_event, nr) == 12);
static_assert(offsetof(kspan_syscall_event, start_ns) == 16);
static_assert(offsetof(kspan_syscall_event, ret) == 32);
static_assert(offsetof(kspan_syscall_event, args) == 40);
static_assert(offsetof(kspan_syscall_event, fd) == 72);
static_assert(offsetof(kspan_syscall_event, sport) == 80);
static_assert(offsetof(kspan_syscall_event, path_len) == 84);
static_assert(offsetof(kspan_syscall_event, saddr) == 88);
static_assert(offsetof(kspan_syscall_event, daddr) == 104);
static_assert(offsetof(kspan_syscall_event, comm) == 120);
static_assert(sizeof(kspan_syscall_path_event) == 136 + KSPAN_SYSCALL_PATH_MAX);
static_assert(sizeof(kspan_syscall_config) == 24);
static_assert(sizeof(kspan_proc_event) == 56 + KSPAN_PROC_FILENAME_LEN);
static_assert(offsetof(kspan_proc_event, kind) == 4);
static_assert(offsetof(kspan_proc_event, pid) == 8);
static_assert(offsetof(kspan_proc_event, ppid) == 12);
static_assert(offsetof(kspan_proc_event, ts_ns) == 16);
static_assert(offsetof(kspan_proc_event, cgroup_id) == 24);
static_assert(offsetof(kspan_proc_event, comm) == 32);
static_assert(offsetof(kspan_proc_event, otel_env) == 48);
static_assert(offsetof(kspan_proc_event, flags) == 52);
static_assert(offsetof(kspan_proc_event, filename) == 56);

namespace {
constexpr char kErrors[] = "kspan_decoder_errors_total";
constexpr char kErrorsHelp[] = "Ring records the decoder rejected, by reason.";
}  // namespace

EventDecoder::EventDecoder(KernelEventHandler& handler, MetricsRegistry& metrics)
    : handler_(handler),
      decoded_(metrics.GetCounter("kspan_decoder_events_total",
                                  "Ring records decoded into kernel events.")),
      short_record_(metrics.GetCounter(kErrors, kErrorsHelp, {{"reason", "short_record"}})),
      unknown_type_(metrics.GetCounter(kErrors, kErrorsHelp, {{"reason", "unknown_type"}})),
      bad_size_(metrics.GetCounter(kErrors, kErrorsHelp, {{"reason", "size_mismatch"}})) {}

template <typename Record>
bool EventDecoder::Copy(std::span<const std::byte> record, Record* out) noexcept {
  if (record.size() != sizeof(Record)) {
    bad_size_.Add();
    return false;
  }
  // Ring records are 8-byte aligned, but copying keeps the decoder
  // independent of that and of strict aliasing.
  std::memcpy(out, record.data(), sizeof(Record));
  decoded_.Add();
  return true;
}

void EventDecoder::OnEvent(std::span<const std::byte> record) noexcept {
  std::uint32_t type = 0;
  if (record.size() < sizeof(type)) {
    short_record_.Add();
    return;
  }
  std::memcpy(&type, record.data(), sizeof(type));
  switch (type) {
    case KSPAN_EVENT_TCP_CONNECT: {
      kspan_tcp_connect_event e;
      if (Copy(record, &e)) handler_.OnTcpConnect(e);
      return;
    }
    case KSPAN_EVENT_TCP_ACCEPT: {
      kspan_tcp_accept_event e;
      if (Copy(record, &e)) handler_.OnTcpAccept(e);
      return;
    }
    case KSPAN_EVENT_TCP_CONN: {
      kspan_tcp_conn_event e;
      if (Copy(record, &e)) handler_.OnTcpConn(e);
      return;
    }
    case KSPAN_EVENT_DNS: {
      kspan_dns_event e;
      if (Copy(record, &e)) handler_.OnDns(e);
      return;
    }
    case KSPAN_EVENT_HTTP: {
      kspan_http_event e;
      if (Copy(record, &e)) handler_.OnHttp(e);
      return;
    }
    case KSPAN_EVENT_PROCESS: {
      kspan_proc_event e;
      if (Copy(record, &e)) handler_.OnProcess(e);
      return;
    }
    case KSPAN_EVENT_TCP_CONN_EVENT: {
      kspan_tcp_note e;
      if (Copy(record, &e)) handler_.OnTcpNote(e);
      return;
    }
    case KSPAN_EVENT_SYSCALL: {
      // Two sizes: without a path, or followed by a KSPAN_SYSCALL_PATH_MAX tail.
      kspan_syscall_event e;
      const bool has_tail = record.size() == sizeof(kspan_syscall_path_event);
      if (record.size() != sizeof(e) && !has_tail) {
        bad_size_.Add();
        return;
      }
      std::memcpy(&e, record.data(), sizeof(e));
      std::string_view path;
      if (has_tail) {
        const char* tail = reinterpret_cast<const char*>(record.data()) + sizeof(e);
        path = std::string_view(tail, strnlen(tail, std::min<std::size_t>(
                                                        e.path_len, KSPAN_SYSCALL_PATH_MAX)));
      }
      decoded_.Add();
      handler_.OnSyscall(e, path);
      return;
    }
    default:
      unknown_type_.Add();
  }
}

}  // namespace kspan
