// Who sent an OTLP request to kspan's receiver, and whose spans it holds,
// from the kernel's view; never from what the payload says about itself.
//
// The sender is the process that owns the client end of the connection:
//   1. the TCP family's receiver-peer map (bpf/tcp.bpf.c records the host
//      pid of every connect to a receiver port, in any network namespace,
//      before the first byte is sent), else
//   2. /proc: the socket in the connection tables of kspan's network
//      namespace, then of every other namespace, and the process holding
//      it (a scan, cached per connection).
// A resource's process.pid claim is then translated through the sender's
// pid namespace (userspace/pid_namespace.h):
//   own             the claim names the sender itself (or there is none):
//                   its spans are indexed under the sender, which may be
//                   enrolled and lends its service.name to its kernel spans;
//   other_process   another process of the sender's pid namespace (a
//                   collector forwarding its neighbours' spans): indexed
//                   under that process for correlation, never enrolled;
//   not_in_sender_namespace  no such process where the sender lives (a
//                   container naming a host pid): ignored;
//   sender_unknown  the connection's owner could not be found: ignored.
// The last three are counted in kspan_receiver_pid_claims_refused_total.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "exporter/self_metrics.h"
#include "exporter/span.h"
#include "userspace/otlp_receiver.h"
#include "userspace/pid_namespace.h"

namespace kspan {

// The process that owns the TCP socket whose local end is address:port and
// whose peer port is `server_port` (the client end of a connection to
// kspan), from the connection tables and fd tables in /proc: kspan's own
// network namespace first, then every other one. `hint` is checked first.
std::optional<std::uint32_t> PidOfTcpClient(const std::string& address, std::uint16_t port,
                                            std::uint16_t server_port,
                                            std::optional<std::uint32_t> hint = std::nullopt,
                                            const std::string& proc_root = "/proc");

// What one request's spans are, as far as the kernel can tell.
struct SenderAttribution {
  // Host pid of the process that sent the request.
  std::optional<std::uint32_t> sender;
  // Some of the spans are the sender's own: it may be enrolled.
  bool sender_sent_own_spans = false;
  // service.name of the sender's own spans (empty when none or unknown).
  std::string own_service_name;
  // The host pid each resource's spans belong to; resources not listed are
  // not attributed to any process.
  std::vector<std::pair<const Resource*, std::uint32_t>> resource_pids;

  std::optional<std::uint32_t> PidOf(const Resource* resource) const;
};

class SenderIdentity {
 public:
  // The host pid that owns the client end of `peer`'s connection to
  // `server_port`, from the kernel (nullopt: not known there).
  using KernelOwnerFn =
      std::function<std::optional<std::uint32_t>(const ReceiverPeer& peer, std::uint16_t server_port)>;

  SenderIdentity(MetricsRegistry& metrics, KernelOwnerFn kernel_owner,
                 std::string proc_root = "/proc");

  // The receiver's bound ports: the server side of every connection.
  void SetServerPorts(int grpc_port, int http_port);

  // Any receiver thread.
  SenderAttribution Attribute(const std::vector<Span>& spans, const ReceiverPeer& peer);

 private:
  std::optional<std::uint32_t> OwnerOf(const ReceiverPeer& peer);

  KernelOwnerFn kernel_owner_;
  const std::string proc_root_;
  PidTranslator pids_;
  std::atomic<int> grpc_port_{0};
  std::atomic<int> http_port_{0};
  // /proc answers, per connection ("addr|port"): the scan costs milliseconds.
  std::mutex mu_;
  std::unordered_map<std::string, std::optional<std::uint32_t>> scanned_;
  std::chrono::steady_clock::time_point scan_window_{};
  int scans_in_window_ = 0;

  Counter& by_kernel_;
  Counter& by_proc_;
  Counter& unknown_;
  Counter& scans_limited_;
  Counter& claims_own_;
  Counter& refused_other_process_;
  Counter& refused_not_in_namespace_;
  Counter& refused_sender_unknown_;
};

}  // namespace kspan
