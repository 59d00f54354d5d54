// Loader of the process program family (bpf/process.bpf.c): an exec and an
// exit record for every process on the host, so the agent can refresh a
// pid's identity when it execs and forget it when it exits. Explicit stages
// like the other families; one variant (classic sched tracepoints).
//
// The family shares the filter maps (bpf/filter.bpf.h): while
// kspan_filter_config.env_enroll is set (CaptureFilter::
// SetEnvironmentEnrollment), its exec hook enrolls processes whose
// environment names OpenTelemetry variables and its exit hook removes them;
// exec records carry the variables found (otel_env) and KSPAN_PROC_F_ENROLLED.
//
// Its ring, kspan_proc_ring, should be the first one registered with the
// RingReader: rings are drained in registration order, so a process's exec
// or exit record reaches the agent before the records it made afterwards on
// the other families' rings (userspace/ring_reader.h).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "bpf/process.h"

struct process_bpf;

namespace kspan {

struct ProcessCaptureOptions {
  // Process whose exec and exit are not reported (kspan itself); 0 = none.
  std::uint32_t self_tgid = 0;
  std::size_t ring_buffer_bytes = 256u << 10;
  // Exit records wake the consumer once this many bytes wait (0 = kernel
  // default); exec records always wake it.
  std::uint64_t wakeup_bytes = 0;
  // External BTF for kernels without /sys/kernel/btf/vmlinux; empty = kernel's.
  std::string btf_path;
  // Required: the stats map and the shared filter maps are pinned here.
  std::string pin_dir;
};

using ProcessStats = std::array<std::uint64_t, KSPAN_PROC_STAT_MAX>;

class ProcessCapture {
 public:
  explicit ProcessCapture(ProcessCaptureOptions options);
  ~ProcessCapture();
  ProcessCapture(const ProcessCapture&) = delete;
  ProcessCapture& operator=(const ProcessCapture&) = delete;

  absl::Status Open();
  absl::Status Configure();
  absl::Status Load();
  absl::Status Attach();
  absl::Status Start();  // all four
  // Stops new records (links destroyed); the ring stays readable.
  void Detach();

  int ring_fd() const;
  // Names of the programs attached, for `kspan status`.
  const std::vector<std::string>& attached_programs() const { return attached_; }
  // Per-CPU counters summed; zeros before Load().
  ProcessStats ReadStats() const;

 private:
  ProcessCaptureOptions options_;
  process_bpf* skel_ = nullptr;
  std::vector<std::string> attached_;
};

}  // namespace kspan
