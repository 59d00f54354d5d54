// Loader of the DNS program family (bpf/dns.bpf.c): UDP port-53 queries and
// responses from the socket syscalls. Explicit stages like the other
// families. Two variants, tried in order: tp_btf on the socket layer's
// sock_send_length/sock_recv_length tracepoints (6.3+, and bpf_task_pt_regs),
// then the classic per-syscall tracepoints, which put every syscall of every
// process on the kernel's syscall tracing path while attached (logged as a
// warning, and named in `kspan status`).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "bpf/dns.h"

struct dns_bpf;

namespace kspan {

enum class DnsVariant {
  kTpBtf,       // tp_btf/sock_send_length, sock_recv_length
  kTracepoint,  // syscalls:sys_enter_sendto, ... (every syscall pays)
};
std::string_view DnsVariantName(DnsVariant v);
std::optional<DnsVariant> ParseDnsVariant(std::string_view name);

struct DnsCaptureOptions {
  std::uint32_t self_tgid = 0;
  std::size_t ring_buffer_bytes = 1u << 20;
  std::string btf_path;
  std::string pin_dir;  // required: shared filter maps are pinned here
  // Only this variant (tests); empty = tp_btf where the kernel has its
  // tracepoints, else tracepoint.
  std::optional<DnsVariant> force_variant;
};

using DnsStats = std::array<std::uint64_t, KSPAN_DNS_STAT_MAX>;

class DnsCapture {
 public:
  explicit DnsCapture(DnsCaptureOptions options);
  ~DnsCapture();
  DnsCapture(const DnsCapture&) = delete;
  DnsCapture& operator=(const DnsCapture&) = delete;

  absl::Status Open();
  absl::Status Configure();
  absl::Status Load();
  absl::Status Attach();
  absl::Status Start();  // all four, for each variant in turn
  void Detach();

  int ring_fd() const;
  DnsStats ReadStats() const;
  // The variant taken ("tp_btf", "tracepoint"); empty before Start.
  const std::string& variant() const { return variant_; }

 private:
  void Destroy();

  DnsCaptureOptions options_;
  DnsVariant attempt_ = DnsVariant::kTpBtf;
  std::string variant_;
  dns_bpf* skel_ = nullptr;
};

}  // namespace kspan
