// The in-kernel process filter (bpf/filter.bpf.h), seen from userspace:
// which processes are traced fully, which are denied, and the host-wide
// slow-syscall threshold for every other process. Changes take effect at
// once, without reloading programs; bpftool can change the same pinned maps.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bpf/filter.h"

namespace kspan {

class CaptureFilter {
 public:
  // Opens the filter maps pinned under `pin_dir` (created by the first BPF
  // object loaded with pin_root_path = pin_dir).
  static absl::StatusOr<CaptureFilter> Open(const std::string& pin_dir);

  CaptureFilter(CaptureFilter&& other) noexcept;
  CaptureFilter& operator=(CaptureFilter&& other) noexcept;
  CaptureFilter(const CaptureFilter&) = delete;
  CaptureFilter& operator=(const CaptureFilter&) = delete;
  ~CaptureFilter();

  // Pids the agent selects (config) or enrolls (a sender): value
  // KSPAN_ALLOW_USERSPACE, counted in pid_allow_count. AllowPid takes over
  // an entry the kernel made from the environment; RemoveAllowedPid removes
  // only the agent's own entries (an environment entry stays until exit).
  absl::Status AllowPid(std::uint32_t tgid);
  absl::Status RemoveAllowedPid(std::uint32_t tgid);
  // Enrollment from the environment (bpf/process.bpf.c): with a non-zero
  // mask of KSPAN_OTEL_ENV_* bits, the exec hook puts every process whose
  // environment has one of them on the allow-list itself (value
  // KSPAN_ALLOW_ENVIRONMENT), and the exit hook takes it off. 0 = off.
  absl::Status SetEnvironmentEnrollment(std::uint32_t otel_env_mask);
  // The same entry for a process found by the start-up scan of /proc (it
  // exec'd before kspan ran); a pid already allowed is left as it is.
  absl::Status AllowPidFromEnvironment(std::uint32_t tgid);
  // Takes an environment entry off (userspace judged the variables do not
  // name this agent); the agent's own entries are left alone.
  absl::Status RemoveEnvironmentPid(std::uint32_t tgid);
  // Who put `tgid` on the allow-list (enum kspan_allow_source), 0 = nobody.
  std::uint8_t AllowSource(std::uint32_t tgid) const;
  absl::Status DenyPid(std::uint32_t tgid);
  absl::Status RemoveDeniedPid(std::uint32_t tgid);
  // `cgroup` is a cgroup v2 directory (e.g. /sys/fs/cgroup/system.slice/x);
  // its inode number is the id bpf_get_current_cgroup_id() returns.
  absl::Status AllowCgroup(const std::string& cgroup);
  absl::Status AllowCgroupId(std::uint64_t id);
  // Processes whose comm starts with `prefix` (at most 15 bytes).
  absl::Status AllowCommPrefix(const std::string& prefix);
  // Processes not selected above record only syscalls slower than this;
  // zero records nothing for them.
  absl::Status SetSlowThreshold(std::chrono::nanoseconds threshold);

  struct kspan_filter_config ReadConfig() const;

  // Whether any process is selected or enrolled: an allow-list entry of any
  // source (the agent's, the exec hook's, one added with bpftool), a cgroup
  // or a comm prefix. Looks at the maps themselves, not only the counts in
  // kspan_cfg, which the exec hook and bpftool users do not keep.
  bool HasSelection() const;

  // cgroup v2 id of a cgroup directory (its inode number).
  static absl::StatusOr<std::uint64_t> CgroupId(const std::string& path);

 private:
  CaptureFilter() = default;
  absl::Status UpdateCounts(int d_pid, int d_cgroup, int d_comm);
  void Close() noexcept;

  int cfg_fd_ = -1;
  int pid_allow_fd_ = -1;
  int pid_deny_fd_ = -1;
  int cg_allow_fd_ = -1;
  int comm_fd_ = -1;
};

}  // namespace kspan
