// Loader of the TCP program family (bpf/tcp.bpf.c) with explicit stages:
//   Open -> Configure -> Load -> Attach -> (ring fd polled elsewhere) -> destroy
// Each stage returns a Status naming the object that failed and why; the
// destructor detaches links, removes pins and frees the skeleton.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "bpf/tcp.h"

struct tcp_bpf;

namespace kspan {

struct CaptureOptions {
  // Process whose events are never recorded (kspan itself); 0 = none.
  std::uint32_t self_tgid = 0;
  std::size_t ring_buffer_bytes = 4u << 20;
  // Wake the consumer once this many bytes wait (0 = kernel default).
  std::uint64_t wakeup_bytes = 64u << 10;
  // External BTF for kernels without /sys/kernel/btf/vmlinux; empty = kernel's.
  std::string btf_path;
  // bpffs directory where the shared filter maps and the stats maps are
  // pinned by name (libbpf pin_root_path). Required: it must exist.
  std::string pin_dir;
};

using TcpStats = std::array<std::uint64_t, KSPAN_TCP_STAT_MAX>;

class TcpCapture {
 public:
  explicit TcpCapture(CaptureOptions options);
  ~TcpCapture();
  TcpCapture(const TcpCapture&) = delete;
  TcpCapture& operator=(const TcpCapture&) = delete;

  absl::Status Open();
  absl::Status Configure();
  absl::Status Load();
  absl::Status Attach();
  // All four stages in order.
  absl::Status Start();
  // Stops new records (links destroyed) while the ring stays readable, so a
  // consumer can drain it before the object is destroyed.
  void Detach();

  int ring_fd() const;
  // The attach point taken for inet_sock_set_state ("tracepoint").
  const std::string& variant() const { return variant_; }
  // Per-CPU counters summed; zeros before Load().
  TcpStats ReadStats() const;

 private:
  CaptureOptions options_;
  tcp_bpf* skel_ = nullptr;
  std::string variant_;
};

}  // namespace kspan
