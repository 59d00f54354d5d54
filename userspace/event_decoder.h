// Bytes from a ring -> typed kernel events. Validates type and size of every
// record against the shared headers in bpf/; anything else is counted as a
// decode error by reason and dropped, never parsed.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "bpf/syscalls.h"
#include "bpf/dns.h"
#include "bpf/http.h"
#include "bpf/process.h"
#include "bpf/tcp.h"
#include "exporter/self_metrics.h"
#include "userspace/ring_reader.h"

namespace kspan {

class KernelEventHandler {
 public:
  virtual ~KernelEventHandler() = default;
  virtual void OnTcpConnect(const kspan_tcp_connect_event& event) noexcept = 0;
  // `path` is the record's path tail (bpf/syscalls.h), empty when it has none.
  virtual void OnSyscall(const kspan_syscall_event&, std::string_view /*path*/) noexcept {}
  virtual void OnTcpAccept(const kspan_tcp_accept_event&) noexcept {}
  virtual void OnTcpConn(const kspan_tcp_conn_event&) noexcept {}
  virtual void OnTcpNote(const kspan_tcp_note&) noexcept {}
  virtual void OnDns(const kspan_dns_event&) noexcept {}
  virtual void OnHttp(const kspan_http_event&) noexcept {}
  // A process exec'd or exited (bpf/process.h).
  virtual void OnProcess(const kspan_proc_event&) noexcept {}
};

class EventDecoder final : public EventSink {
 public:
  EventDecoder(KernelEventHandler& handler, MetricsRegistry& metrics);

  void OnEvent(std::span<const std::byte> record) noexcept override;

  // Copies a fixed-size record after checking its size; false (counted)
  // when the size is wrong.
  template <typename Record>
  bool Copy(std::span<const std::byte> record, Record* out) noexcept;

  std::uint64_t decoded() const { return decoded_.Value(); }
  std::uint64_t errors() const { return short_record_.Value() + unknown_type_.Value() + bad_size_.Value(); }

 private:
  KernelEventHandler& handler_;
  Counter& decoded_;
  Counter& short_record_;
  Counter& unknown_type_;
  Counter& bad_size_;
};

}  // namespace kspan
