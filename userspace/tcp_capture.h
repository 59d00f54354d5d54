// Loader of the TCP program family (bpf/tcp.bpf.c) with explicit stages:
//   Open -> Configure(variant) -> Load -> Attach -> (ring polled elsewhere)
//   -> Detach -> destroy
// Start() walks the variant ladder (tp_btf, raw_tp, classic tracepoint): a
// variant the kernel refuses is destroyed and the next one tried, and one
// line says which was taken. Each stage returns a Status naming the object
// that failed and why; the destructor detaches links and frees the skeleton.
#pragma once

#include <array>
#include <atomic>
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
  // Then the socket data variant (6.3+), before the syscall tracepoints.
  bool accept_socket_data = true;
};

enum class TcpVariant { kTpBtf, kRawTp, kTracepoint };
// How accepts are seen: fexit on inet_csk_accept (cheapest, where tracing
// programs are allowed); the first data the accepting process reads or
// writes on the connection (tp_btf on sock_recv_length/sock_send_length,
// 6.3+: only socket I/O pays, the span ends at that first data); or the
// syscalls:sys_exit_accept* tracepoints, which put every syscall of every
// process on the kernel's syscall tracing path while attached.
enum class AcceptVariant { kFexit, kSocketData, kSyscallTracepoint };
const char* VariantName(TcpVariant v);
// "tp_btf", "raw_tp", "tracepoint"; nullopt for anything else.
std::optional<TcpVariant> ParseTcpVariant(const std::string& name);

using TcpStats = std::array<std::uint64_t, KSPAN_TCP_STAT_MAX>;

// The process that owns the client end of a connection to kspan's receiver
// (bpf/tcp.h struct kspan_rcv_peer).
struct ReceiverPeerOwner {
  std::uint32_t pid = 0;    // tgid in the host pid namespace
  std::uint32_t tid = 0;    // the thread that called connect()
  std::uint32_t netns = 0;  // inode number of the client's network namespace
  std::uint64_t established_ns = 0;  // CLOCK_MONOTONIC: handshake completed
};

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
  // Whether accept spans are captured, and how ("fexit", "socket_data",
  // "tracepoint").
  bool accept_attached() const { return accept_attached_; }
  const std::string& accept_variant() const { return accept_variant_; }
  // Names of the programs attached, for `kspan status`.
  const std::vector<std::string>& attached_programs() const { return attached_; }
  // Per-CPU counters summed; zeros before Load().
  TcpStats ReadStats() const;

  // The ports kspan's OTLP receiver listens on (at most KSPAN_RCV_MAX_PORTS,
  // none 0): connections to them are remembered by their owner, for every
  // process not denied, traced or not. Replaces the previous set; kept
  // across Start()'s variant retries, so it may be called before Start().
  // Not concurrently with itself or Start().
  absl::Status SetReceiverPorts(const std::vector<std::uint16_t>& ports);
  const std::vector<std::uint16_t>& receiver_ports() const { return receiver_ports_; }

  // Who owns the client end of the connection from `address`:`port` (as the
  // receiver sees it: "10.88.0.5", "::1"; "::ffff:127.0.0.1" is read as
  // IPv4) to the receiver port `server_port`, or nullopt when kspan did not
  // see its handshake: begun before the port was set, from a denied process
  // or kspan itself, loopback from another network namespace, or evicted.
  // Safe from any thread between Start() and destruction: one map lookup.
  std::optional<ReceiverPeerOwner> LookupReceiverPeer(const std::string& address,
                                                      std::uint16_t port,
                                                      std::uint16_t server_port) const;

 private:
  void Destroy();
  // Writes receiver_ports_ into the loaded object's kspan_rcv_ports.
  absl::Status ApplyReceiverPorts();

  CaptureOptions options_;
  tcp_bpf* skel_ = nullptr;
  TcpVariant chosen_ = TcpVariant::kTracepoint;
  AcceptVariant accept_ = AcceptVariant::kSyscallTracepoint;
  std::string variant_;
  std::string accept_variant_;
  bool accept_attached_ = false;
  std::vector<std::string> attached_;
  std::vector<std::uint16_t> receiver_ports_;
  // kspan_rcv_peers of the loaded object, for LookupReceiverPeer() on
  // receiver threads; -1 when none is loaded.
  std::atomic<int> rcv_peers_fd_{-1};
};

}  // namespace kspan
