// The agent: wires capture -> ring reader -> decoder -> span assembly ->
// export pipeline, plus the admin endpoint, in the order start-up checks
// need, and tears it down in reverse so nothing captured is lost on exit.
#pragma once

#include <atomic>
#include <chrono>
#include <unordered_map>
#include <vector>
#include <memory>
#include <functional>
#include <mutex>
#include <span>
#include <optional>

#include "absl/status/status.h"
#include "exporter/export_pipeline.h"
#include "exporter/self_metrics.h"
#include "userspace/admin_server.h"
#include "userspace/capture_filter.h"
#include "userspace/clock_sync.h"
#include "userspace/config.h"
#include "userspace/container_metadata.h"
#include "userspace/correlator.h"
#include "userspace/enrollment.h"
#include "userspace/event_decoder.h"
#include "userspace/otlp_receiver.h"
#include "userspace/pin_directory.h"
#include "userspace/privileges.h"
#include "userspace/process_capture.h"
#include "userspace/process_resources.h"
#include "userspace/percpu_ring.h"
#include "userspace/ring_reader.h"
#include "userspace/sender_identity.h"
#include "userspace/span_assembler.h"
#include "userspace/dns_capture.h"
#include "userspace/http_capture.h"
#include "userspace/syscall_capture.h"
#include "userspace/syscall_demand.h"
#include "userspace/tcp_capture.h"

namespace kspan {

class Agent {
 public:
  explicit Agent(AgentConfig config);
  ~Agent();

  absl::Status Start();
  // Periodic work from the main loop: clock gauges, totals in the log.
  void Tick();
  // Detach, drain the rings, flush export within `deadline`, remove pins.
  void Stop(std::chrono::milliseconds deadline);

  MetricsRegistry& metrics() { return metrics_; }
  // What `kspan status` shows, as JSON (served on /status).
  std::string StatusJson();
  int admin_port() const { return admin_ ? admin_->port() : 0; }

 private:
  // One slot of a family's per-CPU stats map, as a counter on /metrics.
  struct StatSlot {
    enum What { kEvent, kLost, kOwn };
    int index;
    What what;
    const char* label;  // kind or reason; for kOwn the metric name
    const char* help = "";
  };
  absl::Status ApplyProcessFilter();
  absl::Status StartReceiver();
  void MakeStateOwnerOnly();
  // Keeps only the capabilities used after load and attach; while the
  // agent has one thread (Start calls it between the two phases).
  absl::Status DropPrivileges();
  // Says in the log who can reach a receiver endpoint that is not loopback.
  static void WarnIfExposed(const char* transport, const std::string& endpoint);
  absl::Status StartProcessFamily();
  // Enrollment from the environment: the exec hook's switch (after the
  // filter is open), and the rule with the receiver's ports, the worker and
  // the start-up scan (after the receiver started).
  absl::Status SetEnvironmentEnrollment();
  void StartEnvironmentEnrollment();
  // An exec or exit record (the ring reader's thread).
  void OnProcessRecord(const kspan_proc_event& e);
  // The syscall enter and exit programs attached while some process needs
  // them (SyscallDemand), from any thread; `why` names the event for the
  // log, `exec_ns` (CLOCK_MONOTONIC, 0: none) the exec that asked.
  void UpdateSyscallHooks(const char* why, std::uint32_t pid = 0, std::uint64_t exec_ns = 0);
  bool SyscallHooksWanted() const;
  // Starts the demand after the filter is set: detaches the hooks Start
  // attached when nothing needs them.
  absl::Status StartSyscallDemand();
  // A process in a few words for the log and /status: its service name,
  // container, pod.
  std::string Describe(std::uint32_t pid);
  void RegisterCaptureMetrics();
  void RegisterStatSlots(const char* family, std::span<const StatSlot> slots,
                         std::function<std::uint64_t(int)> read);
  void LogTotals();

  AgentConfig config_;
  MetricsRegistry metrics_;
  std::unique_ptr<AdminServer> admin_;
  std::optional<PinDirectory> pins_;
  std::optional<CaptureFilter> filter_;
  std::unique_ptr<ExportPipeline> pipeline_;
  std::unique_ptr<ClockSync> clock_;
  std::unique_ptr<ContainerMetadata> containers_;
  std::unique_ptr<ProcessResources> resources_;
  std::unique_ptr<SpanAssembler> assembler_;
  std::unique_ptr<EventDecoder> decoder_;
  std::unique_ptr<ProcessCapture> process_;
  std::unique_ptr<TcpCapture> tcp_;
  std::unique_ptr<SyscallCapture> syscalls_;
  std::mutex hooks_mu_;  // syscall_demand_ and SyscallCapture's links
  std::optional<SyscallDemand> syscall_demand_;  // none: hooks always attached
  bool hooks_stopped_ = false;
  std::unique_ptr<DnsCapture> dns_;
  std::unique_ptr<HttpCapture> http_;
  std::unique_ptr<RingReader> reader_;
  std::unique_ptr<Correlator> correlator_;
  std::unique_ptr<Enrollment> enrollment_;
  std::unique_ptr<SenderIdentity> senders_;
  std::unique_ptr<OtlpReceiver> receiver_;
  std::atomic<int> receiver_grpc_port_{0};
  std::atomic<int> receiver_http_port_{0};
  std::chrono::steady_clock::time_point last_totals_log_;
  std::chrono::steady_clock::time_point last_container_sweep_;
  std::uint64_t last_logged_spans_ = 0;
  std::uint64_t last_logged_lost_ = 0;
  bool stopped_ = false;
  std::mutex status_mu_;  // capture objects vs. /status during shutdown
  PrivilegeState privileges_;  // as the drop left them
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace kspan
