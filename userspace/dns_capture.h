// Loader of the DNS program family (bpf/dns.bpf.c): UDP port-53 queries and
// responses from the socket syscalls. Explicit stages like the other
// families; one variant (classic syscall tracepoints).
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "bpf/dns.h"

struct dns_bpf;

namespace kspan {

struct DnsCaptureOptions {
  std::uint32_t self_tgid = 0;
  std::size_t ring_buffer_bytes = 1u << 20;
  std::string btf_path;
  std::string pin_dir;  // required: shared filter maps are pinned here
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
  absl::Status Start();  // all four
  void Detach();

  int ring_fd() const;
  DnsStats ReadStats() const;

 private:
  DnsCaptureOptions options_;
  dns_bpf* skel_ = nullptr;
};

}  // namespace kspan
