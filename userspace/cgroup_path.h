// A process's container identity from its cgroup, as the kernel reports it in
// /proc/<pid>/cgroup: which container (and Kubernetes pod) the process is in.
//
// Identity comes from the kernel's view of the process, never from what a
// payload says (DESIGN.md): the cgroup path is written by the kernel, and the
// runtimes that create containers name their cgroups after the container id.
// Only forms that name their runtime, or sit in a layout that does (the
// Kubernetes pod tree, Docker's "/docker" parent), are recognised: a bare id
// elsewhere ("/default/<id>", "/<id>") is left alone rather than guessed.
//
// Pure parsing: no file is read here. The caller reads /proc/<pid>/cgroup.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kspan {

enum class ContainerRuntime {
  kNone,  // not in a container
  kDocker,
  kContainerd,  // CRI (cri-containerd-*) and nerdctl
  kCrio,
  kPodman,
  kSystemdNspawn,
  kLxc,
  kUnknown,  // a container whose cgroup does not name its runtime
};

// The value of the OpenTelemetry attribute container.runtime (renamed
// container.runtime.name in recent semantic conventions; the values are the
// same): "docker", "containerd", "cri-o", "podman", "systemd-nspawn", "lxc".
// Empty for kNone and kUnknown, so no attribute is set rather than a guess.
std::string_view RuntimeName(ContainerRuntime runtime);

struct CgroupIdentity {
  // The cgroup path the identity was read from ("/" for the root cgroup).
  std::string cgroup_path;
  // Docker, containerd, CRI-O and Podman: 64 lowercase hex digits.
  // systemd-nspawn and LXC: the machine or container name (unescaped).
  std::string container_id;
  ContainerRuntime runtime = ContainerRuntime::kNone;
  // Kubernetes pod UID in its canonical form: dashed UUID
  // ("275ecb36-5aa8-4c2a-9c47-d8bb681b9aff"), or 32 hex digits for static
  // pods (their UID is a hash of the manifest).
  std::string pod_uid;
  // "guaranteed" | "burstable" | "besteffort", or empty outside a pod.
  std::string qos_class;
  // The cgroup lies in a user's delegated subtree (user@<uid>.service):
  // names there are chosen by that (unprivileged) user, so the container id
  // is only that user's claim. Never attach root-owned runtime metadata to it.
  bool user_delegated = false;

  bool has_container() const { return !container_id.empty(); }
  bool in_pod() const { return !pod_uid.empty(); }
};

// Bounds on /proc/<pid>/cgroup. The kernel writes one line per hierarchy
// (some 13 on a cgroup v1 host), each a path of at most PATH_MAX.
inline constexpr std::size_t kMaxProcCgroupBytes = 64 * 1024;
inline constexpr std::size_t kMaxProcCgroupLineBytes = 4 * 1024;
inline constexpr std::size_t kMaxProcCgroupLines = 64;
inline constexpr std::size_t kMaxCgroupPathBytes = 4095;

// One cgroup path. Refuses (InvalidArgument) a path that is not absolute, has
// a NUL, an empty, "." or ".." component, or is longer than PATH_MAX. A path
// starting "/.." is what a reader in another cgroup namespace sees; the
// message says so. A well-formed path without a container gives kNone.
absl::StatusOr<CgroupIdentity> ParseCgroupPath(std::string_view path);

// The text of /proc/<pid>/cgroup: cgroup v2 ("0::/path"), v1
// ("N:controllers:/path" lines, including "N:name=systemd:/path") or hybrid
// (both). Takes the line that yields a container (the v2 line first), else
// one that yields a pod, else the v2 line, the name=systemd line or the first
// line. Refuses content over the bounds above (ResourceExhausted) and
// malformed lines (InvalidArgument).
absl::StatusOr<CgroupIdentity> ParseProcCgroup(std::string_view content);

// 64 lowercase hex digits: the id Docker, containerd, CRI-O and Podman use.
bool IsFullContainerId(std::string_view s);

}  // namespace kspan
