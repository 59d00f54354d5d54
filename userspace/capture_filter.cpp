#include "userspace/capture_filter.h"

#include <bpf/bpf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kspan {
namespace {

absl::Status Errno(const std::string& what, int err) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(err)));
}

}  // namespace

absl::StatusOr<CaptureFilter> CaptureFilter::Open(const std::string& pin_dir) {
  CaptureFilter f;
  struct Pin {
    const char* name;
    int* fd;
  };
  for (const Pin& p : {Pin{"kspan_cfg", &f.cfg_fd_}, Pin{"kspan_pid_allow", &f.pid_allow_fd_},
                       Pin{"kspan_pid_deny", &f.pid_deny_fd_}, Pin{"kspan_cg_allow", &f.cg_allow_fd_},
                       Pin{"kspan_comm_pfx", &f.comm_fd_}}) {
    const std::string path = pin_dir + "/" + p.name;
    *p.fd = bpf_obj_get(path.c_str());
    if (*p.fd < 0) return Errno(absl::StrCat("filter map ", path), errno);
  }
  return f;
}

CaptureFilter::CaptureFilter(CaptureFilter&& o) noexcept { *this = std::move(o); }

CaptureFilter& CaptureFilter::operator=(CaptureFilter&& o) noexcept {
  if (this != &o) {
    Close();
    for (auto [mine, theirs] : {std::pair{&cfg_fd_, &o.cfg_fd_}, {&pid_allow_fd_, &o.pid_allow_fd_},
                                {&pid_deny_fd_, &o.pid_deny_fd_}, {&cg_allow_fd_, &o.cg_allow_fd_},
                                {&comm_fd_, &o.comm_fd_}}) {
      *mine = *theirs;
      *theirs = -1;
    }
  }
  return *this;
}

CaptureFilter::~CaptureFilter() { Close(); }

void CaptureFilter::Close() noexcept {
  for (int* fd : {&cfg_fd_, &pid_allow_fd_, &pid_deny_fd_, &cg_allow_fd_, &comm_fd_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
}

struct kspan_filter_config CaptureFilter::ReadConfig() const {
  struct kspan_filter_config cfg {};
  std::uint32_t zero = 0;
  bpf_map_lookup_elem(cfg_fd_, &zero, &cfg);
  return cfg;
}

bool CaptureFilter::HasSelection() const {
  const struct kspan_filter_config cfg = ReadConfig();
  if (cfg.pid_allow_count || cfg.cgroup_allow_count || cfg.comm_prefix_count) return true;
  // The first key of each map (O(1)); ENOENT: empty.
  std::uint32_t pid = 0;
  std::uint64_t cgroup = 0;
  struct kspan_comm_key comm {};
  return bpf_map_get_next_key(pid_allow_fd_, nullptr, &pid) == 0 ||
         bpf_map_get_next_key(cg_allow_fd_, nullptr, &cgroup) == 0 ||
         bpf_map_get_next_key(comm_fd_, nullptr, &comm) == 0;
}

absl::Status CaptureFilter::UpdateCounts(int d_pid, int d_cgroup, int d_comm) {
  // Single writer (the agent); bpftool users editing the lists by hand keep
  // the counts with `bpftool map update` on kspan_cfg (docs/bpftool.md).
  struct kspan_filter_config cfg = ReadConfig();
  cfg.pid_allow_count = static_cast<std::uint32_t>(static_cast<int>(cfg.pid_allow_count) + d_pid);
  cfg.cgroup_allow_count =
      static_cast<std::uint32_t>(static_cast<int>(cfg.cgroup_allow_count) + d_cgroup);
  cfg.comm_prefix_count =
      static_cast<std::uint32_t>(static_cast<int>(cfg.comm_prefix_count) + d_comm);
  cfg.generation++;
  std::uint32_t zero = 0;
  if (bpf_map_update_elem(cfg_fd_, &zero, &cfg, BPF_ANY) != 0) {
    return Errno("update kspan_cfg", errno);
  }
  return absl::OkStatus();
}

absl::Status CaptureFilter::AllowPid(std::uint32_t tgid) {
  const std::uint8_t mine = KSPAN_ALLOW_USERSPACE;
  // The kernel adds and removes environment entries concurrently (exec and
  // exit hooks): an entry seen a moment ago may be gone, so each step
  // re-checks; the second round settles it (a gone entry is inserted anew).
  for (int round = 0; round < 2; ++round) {
    if (bpf_map_update_elem(pid_allow_fd_, &tgid, &mine, BPF_NOEXIST) == 0) {
      return UpdateCounts(1, 0, 0);
    }
    if (errno != EEXIST) return Errno(absl::StrCat("allow pid ", tgid), errno);
    const std::uint8_t source = AllowSource(tgid);
    if (source == 0) continue;  // removed in between
    if (source != KSPAN_ALLOW_ENVIRONMENT) return absl::OkStatus();  // ours already
    // The kernel's entry becomes the agent's: counted, and no longer removed
    // by the exit hook (the agent removes its own).
    if (bpf_map_update_elem(pid_allow_fd_, &tgid, &mine, BPF_EXIST) == 0) {
      return UpdateCounts(1, 0, 0);
    }
    if (errno != ENOENT) return Errno(absl::StrCat("allow pid ", tgid), errno);
  }
  return absl::UnavailableError(
      absl::StrCat("allow pid ", tgid, ": its entry keeps changing under the exec and exit hooks"));
}

absl::Status CaptureFilter::RemoveAllowedPid(std::uint32_t tgid) {
  if (AllowSource(tgid) != KSPAN_ALLOW_USERSPACE) return absl::OkStatus();
  if (bpf_map_delete_elem(pid_allow_fd_, &tgid) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return Errno(absl::StrCat("remove allowed pid ", tgid), errno);
  }
  return UpdateCounts(-1, 0, 0);
}

std::uint8_t CaptureFilter::AllowSource(std::uint32_t tgid) const {
  std::uint8_t v = 0;
  if (bpf_map_lookup_elem(pid_allow_fd_, &tgid, &v) != 0) return 0;
  return v;
}

absl::Status CaptureFilter::SetEnvironmentEnrollment(std::uint32_t otel_env_mask) {
  struct kspan_filter_config cfg = ReadConfig();
  cfg.env_enroll = otel_env_mask;
  cfg.generation++;
  std::uint32_t zero = 0;
  if (bpf_map_update_elem(cfg_fd_, &zero, &cfg, BPF_ANY) != 0) {
    return Errno("update kspan_cfg", errno);
  }
  return absl::OkStatus();
}

absl::Status CaptureFilter::AllowPidFromEnvironment(std::uint32_t tgid) {
  const std::uint8_t env = KSPAN_ALLOW_ENVIRONMENT;
  if (bpf_map_update_elem(pid_allow_fd_, &tgid, &env, BPF_NOEXIST) != 0) {
    if (errno == EEXIST) return absl::OkStatus();
    return Errno(absl::StrCat("allow pid ", tgid), errno);
  }
  // Not counted (pid_allow_count is the agent's entries); the generation
  // bump makes the programs look the process up again.
  return UpdateCounts(0, 0, 0);
}

absl::Status CaptureFilter::RemoveEnvironmentPid(std::uint32_t tgid) {
  if (AllowSource(tgid) != KSPAN_ALLOW_ENVIRONMENT) return absl::OkStatus();
  if (bpf_map_delete_elem(pid_allow_fd_, &tgid) != 0 && errno != ENOENT) {
    return Errno(absl::StrCat("remove pid ", tgid), errno);
  }
  return UpdateCounts(0, 0, 0);
}

absl::Status CaptureFilter::DenyPid(std::uint32_t tgid) {
  std::uint8_t one = 1;
  if (bpf_map_update_elem(pid_deny_fd_, &tgid, &one, BPF_ANY) != 0) {
    return Errno(absl::StrCat("deny pid ", tgid), errno);
  }
  return UpdateCounts(0, 0, 0);
}

absl::Status CaptureFilter::RemoveDeniedPid(std::uint32_t tgid) {
  if (bpf_map_delete_elem(pid_deny_fd_, &tgid) != 0 && errno != ENOENT) {
    return Errno(absl::StrCat("remove denied pid ", tgid), errno);
  }
  return UpdateCounts(0, 0, 0);
}

absl::StatusOr<std::uint64_t> CaptureFilter::CgroupId(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return Errno(absl::StrCat("cgroup ", path), errno);
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("cgroup ", path, ": not a directory"));
  }
  return static_cast<std::uint64_t>(st.st_ino);
}

absl::Status CaptureFilter::AllowCgroup(const std::string& cgroup) {
  auto id = CgroupId(cgroup);
  if (!id.ok()) return id.status();
  return AllowCgroupId(*id);
}

absl::Status CaptureFilter::AllowCgroupId(std::uint64_t id) {
  std::uint8_t one = 1;
  if (bpf_map_update_elem(cg_allow_fd_, &id, &one, BPF_NOEXIST) != 0) {
    if (errno == EEXIST) return absl::OkStatus();
    return Errno(absl::StrCat("allow cgroup id ", id), errno);
  }
  return UpdateCounts(0, 1, 0);
}

absl::Status CaptureFilter::AllowCommPrefix(const std::string& prefix) {
  if (prefix.empty() || prefix.size() >= KSPAN_COMM_LEN) {
    return absl::InvalidArgumentError(
        absl::StrCat("comm prefix '", prefix, "': must be 1 to 15 bytes"));
  }
  struct kspan_comm_key key {};
  key.prefixlen = static_cast<std::uint32_t>(8 * prefix.size());
  std::memcpy(key.comm, prefix.data(), prefix.size());
  std::uint8_t one = 1;
  if (bpf_map_update_elem(comm_fd_, &key, &one, BPF_NOEXIST) != 0) {
    if (errno == EEXIST) return absl::OkStatus();
    return Errno(absl::StrCat("allow comm prefix ", prefix), errno);
  }
  return UpdateCounts(0, 0, 1);
}

absl::Status CaptureFilter::SetSlowThreshold(std::chrono::nanoseconds threshold) {
  struct kspan_filter_config cfg = ReadConfig();
  cfg.slow_threshold_ns = static_cast<std::uint64_t>(threshold.count());
  cfg.generation++;
  std::uint32_t zero = 0;
  if (bpf_map_update_elem(cfg_fd_, &zero, &cfg, BPF_ANY) != 0) {
    return Errno("update kspan_cfg", errno);
  }
  return absl::OkStatus();
}

}  // namespace kspan
