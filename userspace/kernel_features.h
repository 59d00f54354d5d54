// Start-up checks of what kspan needs from the kernel, each failure turned
// into one message that says what is missing and what to do, instead of a
// libbpf dump at load time.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace kspan {

struct KernelRequirements {
  // Where the kernel's own BTF lives. The default is the running kernel's.
  std::string sysfs_btf = "/sys/kernel/btf/vmlinux";
  // An external BTF file (`--btf`), for kernels built without
  // CONFIG_DEBUG_INFO_BTF. Empty: use sysfs_btf.
  std::string btf_override;
  std::string bpffs = "/sys/fs/bpf";
};

// The BTF file libbpf should relocate against, or an error naming what is
// missing. Cheap: stat() and one parse of the BTF header.
absl::Status CheckBtf(const KernelRequirements& req);

// BPF ring buffers (Linux 5.8+), probed by creating one.
absl::Status CheckRingBuffer();

// Every check, in the order a user would fix them.
absl::Status CheckKernel(const KernelRequirements& req);

// Mounts bpffs at req.bpffs when it is not mounted yet (as systemd does at
// boot on most distributions). Returns an error naming the mount point.
absl::Status EnsureBpffs(const KernelRequirements& req);

// kernel.pid_max clamped to [1024, 4 Mi]: the entries of a per-tgid array
// (the program families' trace-level caches).
std::uint32_t PidMax();

// Slots of a per-thread array indexed by tid & (slots - 1): a power of two,
// one per possible tid up to 256 Ki, so threads share a slot only on hosts
// with a larger pid_max.
std::uint32_t PerThreadSlots();

// Whether the running kernel's BTF has a type `name` of kind `btf_kind`
// (BTF_KIND_*): which kfuncs and BTF tracepoints (btf_trace_<name>
// typedefs) the kernel offers. Always the running kernel's BTF: an external
// --btf file describes types, not what the running kernel provides.
bool KernelBtfHas(const char* name, int btf_kind);

// Whether the running kernel knows BPF helper `value` (an enum bpf_func_id
// name such as "BPF_FUNC_task_pt_regs"), from that enum in its BTF: a
// program calling a helper the kernel lacks is refused at load.
bool KernelHasBpfHelper(const char* value);

// Enters the cgroup namespace of the host's init (/proc/1) when kspan runs
// in another one and sees the host's pids (a container with the host's pid
// namespace): /proc/<pid>/cgroup then names every container's cgroup as the
// host does, instead of "/../..". Must run before kspan starts a thread (a
// namespace is per thread; new threads inherit it). Logs what it did; a
// refusal only costs container ids, so it is not an error.
void JoinHostCgroupNamespace(const std::string& proc_root = "/proc");

// Routes libbpf's own messages into spdlog at debug level: the user sees
// kspan's summary of a failure, and `--log-level debug` shows libbpf's detail.
void RouteLibbpfLogs();

}  // namespace kspan
