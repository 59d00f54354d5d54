// Loader of the TCP program family (bpf/tcp.bpf.c) with explicit stages:
//   Open -> Configure(variant) -> Load -> Attach -> (ring polled elsewhere)
//   -> Detach -> destroy
// Start() walks the variant ladder (tp_btf, raw_tp, classic tracepoint): a
// variant the kernel refuses is destroyed and the next one tried, and one
// line says which was taken. Each stage returns a Status naming the object
// that failed and why; the destructor detaches links and frees the skeleton.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "bpf/tcp.h"

struct tcp_bpf;

namespace kspan {

struct CaptureOptions {
  // Process whose events are never recorded (kspan itself); 0 = none.
  std::uint32_t self_tgid = 0;
  std::size_t ring_buffer_bytes = 4u << 20;
  // Wake the consumer once this many bytes wait (0 = kernel default).
  std::uint64_t wakeup_bytes = 256u << 10;
  // External BTF for kernels without /sys/kernel/btf/vmlinux; empty = kernel's.
  std::string btf_path;
  // bpffs directory where the shared filter maps and the stats maps are
  // pinned by name (libbpf pin_root_path). Required: it must exist.
  std::string pin_dir;
  // TCP spans only for selected processes (pid/cgroup/comm allow-lists)
  // instead of every process that is not denied.
  bool tcp_selected_only = false;
  // Try the fexit accept variant before the syscall tracepoints.
  bool accept_fexit = true;
};

enum class TcpVariant { kTpBtf, kRawTp, kTracepoint };
// How accepts are seen: fexit on inet_csk_accept (cheapest, where tracing
// programs are allowed) or the syscalls:sys_exit_accept* tracepoints.
enum class AcceptVariant { kFexit, kSyscallTracepoint };
const char* VariantName(TcpVariant v);
// "tp_btf", "raw_tp", "tracepoint"; nullopt for anything else.
std::optional<TcpVariant> ParseTcpVariant(const std::string& name);

using TcpStats = std::array<std::uint64_t, KSPAN_TCP_STAT_MAX>;

class TcpCapture {
 public:
  explicit TcpCapture(CaptureOptions options);
  ~TcpCapture();
  TcpCapture(const TcpCapture&) = delete;
  TcpCapture& operator=(const TcpCapture&) = delete;

  absl::Status Open();
  absl::Status Configure(TcpVariant variant,
                         AcceptVariant accept = AcceptVariant::kSyscallTracepoint);
  absl::Status Load();
  absl::Status Attach();
  // Every stage, trying `ladder` in order (default: all, cheapest first).
  absl::Status Start(std::vector<TcpVariant> ladder = {TcpVariant::kTpBtf, TcpVariant::kRawTp,
                                                       TcpVariant::kTracepoint});
  // Stops new records (links destroyed) while the ring stays readable, so a
  // consumer can drain it before the object is destroyed.
  void Detach();

  int ring_fd() const;
  // The variant taken ("tp_btf", "raw_tp", "tracepoint"); empty before Start.
  const std::string& variant() const { return variant_; }
  // Whether accept spans are captured, and how ("fexit", "tracepoint").
  bool accept_attached() const { return accept_attached_; }
  const std::string& accept_variant() const { return accept_variant_; }
  // Names of the programs attached, for `kspan status`.
  const std::vector<std::string>& attached_programs() const { return attached_; }
  // Per-CPU counters summed; zeros before Load().
  TcpStats ReadStats() const;

 private:
  void Destroy();

  CaptureOptions options_;
  tcp_bpf* skel_ = nullptr;
  TcpVariant chosen_ = TcpVariant::kTracepoint;
  AcceptVariant accept_ = AcceptVariant::kSyscallTracepoint;
  std::string variant_;
  std::string accept_variant_;
  bool accept_attached_ = false;
  std::vector<std::string> attached_;
};

}  // namespace kspan
