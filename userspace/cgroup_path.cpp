#include "userspace/cgroup_path.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "userspace/split_view.h"

// Forms recognised (each has a test over the real path string):
//
//   Docker, cgroupfs driver            /docker/<id>
//   Docker, systemd driver             /system.slice/docker-<id>.scope
//   nerdctl (containerd), systemd      /system.slice/nerdctl-<id>.scope
//   Podman, systemd                    /machine.slice/libpod-<id>.scope[/container]
//   Podman, cgroupfs                   /libpod_parent/libpod-<id>
//   Podman rootless                    .../user@1000.service/.../libpod-<id>.scope
//   Podman rootless, cgroup v1         .../podman-<pid>.scope/<id>   (as Falco reads it)
//   CRI-O                              .../crio-<id>.scope[/container], .../crio-<id>
//   Kubernetes, cgroupfs               /kubepods[/burstable|/besteffort]/pod<uid>/<id>
//   Kubernetes, systemd                /kubepods.slice/kubepods-burstable.slice/
//                                        kubepods-burstable-pod<uid_with_underscores>.slice/
//                                        cri-containerd-<id>.scope | crio-<id>.scope |
//                                        docker-<id>.scope (cri-dockerd)
//   Kubernetes, systemd-style path     ...-pod<uid>.slice:cri-containerd:<id> (containerd
//     under a cgroupfs runc)            without SystemdCgroup, as Falco reads it)
//   systemd-nspawn                     /machine.slice/systemd-nspawn@<name>.service[/payload]
//                                      /machine.slice/machine-<name>.scope[/payload]
//   LXC                                /lxc/<name>, /lxc.payload/<name>, /lxc.payload.<name>
//
// Not containers (the runtime's supervisor, in its own cgroup next to the
// container): libpod-conmon-<id>.scope, crio-conmon-<id>.scope,
// lxc.monitor.<name>, lxc.monitor/<name>, the "supervisor" cgroup of nspawn.
// A supervisor under a pod still gives the pod, since the kernel accounts it
// to the pod.
//
// Deliberately not guessed:
//   - containerd's default cgroupfs path "/<namespace>/<id>" (ctr, nerdctl
//     without systemd: "/default/<id>", "/k8s.io/<id>", "/moby/<id>"): the
//     namespace is any name an operator picks, so "/<word>/<64 hex>" could
//     be anything. Falco accepts "/default/"; we do not.
//   - "containerd-<id>.scope": no runtime we found creates it.
//   - libvirt's machine scopes "machine-qemu\x2d1\x2dvm.scope" (a VM, not a
//     container) and "machine-lxc\x2d<pid>\x2d<name>.scope" (libvirt-lxc):
//     registered with systemd-machined like nspawn, but not nspawn.
//   - ECS, Mesos, GitHub Actions ("/actions_job/<id>"), Garden: no host-side
//     metadata source in kspan for them.
//
// Nesting: the outermost container wins. "/docker/<A>/kubepods/.../<B>" (a
// kind node, Docker-in-Docker) is container A: that is the container the
// host's runtime knows, and a process inside A that can write cgroups must not
// be able to claim another identity by naming a sub-cgroup. Pod components
// below the container are ignored for the same reason.

namespace kspan {
namespace {

using Components = std::vector<std::string_view>;

// Debian's abseil has its own string_view (not std's), so its string helpers
// do not take std::string_view; these few are written here.
bool ConsumePrefix(std::string_view* s, std::string_view prefix) {
  if (!s->starts_with(prefix)) return false;
  s->remove_prefix(prefix.size());
  return true;
}

bool ConsumeSuffix(std::string_view* s, std::string_view suffix) {
  if (!s->ends_with(suffix)) return false;
  s->remove_suffix(suffix.size());
  return true;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsDigits(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), IsDigit); }
bool IsAlnum(char c) { return IsDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return !s.empty();
}

// A Kubernetes pod UID as it appears in a cgroup name: a UUID with '-' (the
// cgroupfs driver) or '_' (the systemd driver, where '-' separates slice
// levels) between its groups, or 32 hex digits (a static pod: the UID is the
// manifest's hash). Returns the canonical dashed form.
std::optional<std::string> CanonicalPodUid(std::string_view s, char separator) {
  if (s.size() == 32 && IsLowerHex(s)) return std::string(s);
  if (s.size() != 36) return std::nullopt;
  std::string out(s);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const bool dash_position = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash_position) {
      if (out[i] != separator) return std::nullopt;
      out[i] = '-';
    } else if (!IsLowerHex(std::string_view(&out[i], 1))) {
      return std::nullopt;
    }
  }
  return out;
}

// systemd escapes unit name characters as "\xNN" ('-' as "\x2d", since '-'
// separates slice levels). Returns nullopt on a malformed escape.
std::optional<std::string> UnescapeUnitName(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 4 > s.size() || s[i + 1] != 'x') return std::nullopt;
    int value = 0;
    for (std::size_t k = i + 2; k < i + 4; ++k) {
      char c = s[k];
      if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
      value <<= 4;
      if (c >= '0' && c <= '9') {
        value |= c - '0';
      } else if (c >= 'a' && c <= 'f') {
        value |= c - 'a' + 10;
      } else {
        return std::nullopt;
      }
    }
    out.push_back(static_cast<char>(value));
    i += 3;
  }
  return out;
}

// Machine (nspawn) and LXC container names: host-name-like. Anything else
// (control bytes, '/', a leading '.') is refused so a name is safe to print
// and never a path.
bool IsMachineName(std::string_view s) {
  if (s.empty() || s.size() > 128 || s.front() == '.' || s.front() == '-') return false;
  for (char c : s) {
    if (!(IsAlnum(c) || c == '.' || c == '-' || c == '_')) {
      return false;
    }
  }
  return true;
}

// "<prefix><64 hex><suffix>" -> the id.
std::optional<std::string_view> IdBetween(std::string_view component, std::string_view prefix,
                                          std::string_view suffix) {
  if (!ConsumePrefix(&component, prefix)) return std::nullopt;
  if (!ConsumeSuffix(&component, suffix)) return std::nullopt;
  if (!IsFullContainerId(component)) return std::nullopt;
  return component;
}

enum class Match { kNone, kContainer, kSupervisor };

struct Found {
  Match match = Match::kNone;
  ContainerRuntime runtime = ContainerRuntime::kNone;
  std::string id;
};

Found Container(ContainerRuntime runtime, std::string_view id) {
  return Found{Match::kContainer, runtime, std::string(id)};
}
Found Supervisor() { return Found{Match::kSupervisor, ContainerRuntime::kNone, {}}; }

// A systemd-managed machine (nspawn): the payload is the container, the
// "supervisor" sub-cgroup is systemd-nspawn itself. Older systemd keeps both
// in the unit's own cgroup, where the container's processes are.
Found Machine(std::string_view escaped_name, const Components& c, std::size_t i) {
  auto name = UnescapeUnitName(escaped_name);
  if (!name || !IsMachineName(*name)) return {};
  if (i + 1 < c.size() && c[i + 1] == "supervisor") return Supervisor();
  return Container(ContainerRuntime::kSystemdNspawn, *name);
}

// Runtime of a "slice:prefix:id" path that a cgroupfs runc took literally.
std::optional<ContainerRuntime> ScopePrefixRuntime(std::string_view prefix) {
  if (prefix == "cri-containerd" || prefix == "nerdctl") return ContainerRuntime::kContainerd;
  if (prefix == "crio") return ContainerRuntime::kCrio;
  if (prefix == "docker") return ContainerRuntime::kDocker;
  if (prefix == "libpod") return ContainerRuntime::kPodman;
  return std::nullopt;
}

// Component i as a container (or a runtime supervisor). `pod_at` is the index
// of a cgroupfs pod component ("pod<uid>") seen so far, or npos.
Found MatchContainer(const Components& c, std::size_t i, std::size_t pod_at) {
  const std::string_view s = c[i];
  const std::string_view parent = i > 0 ? c[i - 1] : std::string_view();

  // Supervisors first: "crio-conmon-<id>.scope" also starts with "crio-".
  if (IdBetween(s, "libpod-conmon-", ".scope") || IdBetween(s, "crio-conmon-", ".scope")) {
    return Supervisor();
  }
  struct ScopeForm {
    std::string_view prefix;
    std::string_view suffix;
    ContainerRuntime runtime;
  };
  static constexpr ScopeForm kScopes[] = {
      {"docker-", ".scope", ContainerRuntime::kDocker},
      {"cri-containerd-", ".scope", ContainerRuntime::kContainerd},
      {"nerdctl-", ".scope", ContainerRuntime::kContainerd},
      {"crio-", ".scope", ContainerRuntime::kCrio},
      {"crio-", "", ContainerRuntime::kCrio},  // CRI-O with the cgroupfs manager
      {"libpod-", ".scope", ContainerRuntime::kPodman},
      {"libpod-", "", ContainerRuntime::kPodman},  // Podman with the cgroupfs manager
  };
  for (const auto& form : kScopes) {
    if (auto id = IdBetween(s, form.prefix, form.suffix)) return Container(form.runtime, *id);
  }

  // "kubepods-burstable-pod<uid>.slice:cri-containerd:<id>".
  if (std::vector<std::string_view> parts = SplitView(s, ':'); parts.size() == 3) {
    auto runtime = ScopePrefixRuntime(parts[1]);
    if (runtime && parts[0].ends_with(".slice") && IsFullContainerId(parts[2])) {
      return Container(*runtime, parts[2]);
    }
  }

  if (IsFullContainerId(s)) {
    if (parent == "docker") return Container(ContainerRuntime::kDocker, s);
    // Directly in a cgroupfs pod: containerd, or Docker through cri-dockerd.
    // The metadata sources tell which.
    if (pod_at != std::string_view::npos && pod_at + 1 == i) {
      return Container(ContainerRuntime::kUnknown, s);
    }
    // Rootless Podman on cgroup v1 keeps the container under the user's
    // "podman-<pid>.scope" in the name=systemd hierarchy.
    std::string_view pid = parent;
    if (ConsumePrefix(&pid, "podman-") && ConsumeSuffix(&pid, ".scope") && IsDigits(pid)) {
      return Container(ContainerRuntime::kPodman, s);
    }
  }

  // systemd-nspawn.
  std::string_view unit = s;
  if (ConsumePrefix(&unit, "systemd-nspawn@") && ConsumeSuffix(&unit, ".service")) {
    return Machine(unit, c, i);
  }
  unit = s;
  if (parent == "machine.slice" && ConsumePrefix(&unit, "machine-") &&
      ConsumeSuffix(&unit, ".scope")) {
    auto name = UnescapeUnitName(unit);
    // libvirt registers its VMs and libvirt-lxc domains with machined too.
    if (name && (name->starts_with("qemu-") || name->starts_with("lxc-"))) return {};
    return Machine(unit, c, i);
  }

  // LXC: "lxc.payload.<name>" (4.0+), "lxc.payload/<name>" (3.x),
  // "lxc/<name>" (the legacy pattern); monitors beside them.
  std::string_view name = s;
  if (ConsumePrefix(&name, "lxc.payload.")) {
    if (IsMachineName(name)) return Container(ContainerRuntime::kLxc, name);
    return {};
  }
  if (s.starts_with("lxc.monitor.") || (parent == "lxc.monitor" && IsMachineName(s))) {
    return Supervisor();
  }
  if ((parent == "lxc" || parent == "lxc.payload") && IsMachineName(s)) {
    return Container(ContainerRuntime::kLxc, s);
  }
  return {};
}

struct Pod {
  std::string uid;
  std::string qos;
};

// A pod component: cgroupfs "pod<uid>" below kubepods[/<qos>], or systemd
// "<root>-kubepods[-<qos>]-pod<uid_>.slice" where <root> is empty or a
// kubelet --cgroup-root slice ("kubelet-kubepods-..." on kind nodes).
std::optional<Pod> MatchPod(const Components& c, std::size_t i, bool kubepods_seen) {
  std::string_view s = c[i];
  if (kubepods_seen && ConsumePrefix(&s, "pod")) {
    auto uid = CanonicalPodUid(s, '-');
    if (!uid || i == 0) return std::nullopt;
    const std::string_view parent = c[i - 1];
    if (parent == "kubepods") return Pod{*uid, "guaranteed"};
    if ((parent == "burstable" || parent == "besteffort") && i >= 2 && c[i - 2] == "kubepods") {
      return Pod{*uid, std::string(parent)};
    }
    return std::nullopt;
  }
  s = c[i];
  if (!ConsumeSuffix(&s, ".slice")) return std::nullopt;
  const std::size_t at = s.rfind("-pod");
  if (at == std::string_view::npos) return std::nullopt;
  auto uid = CanonicalPodUid(s.substr(at + 4), '_');
  if (!uid) return std::nullopt;
  const std::string_view prefix = s.substr(0, at);
  for (std::string_view qos : {"burstable", "besteffort"}) {
    const std::string form = std::string("kubepods-") + std::string(qos);
    if (prefix == form || prefix.ends_with("-" + form)) {
      return Pod{*uid, std::string(qos)};
    }
  }
  if (prefix == "kubepods" || prefix.ends_with("-kubepods")) return Pod{*uid, "guaranteed"};
  return std::nullopt;
}

bool IsUserManager(std::string_view s) {
  // "user@1000.service": systemd delegates this subtree to user 1000.
  if (!ConsumePrefix(&s, "user@") || !ConsumeSuffix(&s, ".service")) return false;
  return IsDigits(s);
}

struct Line {
  std::string_view controllers;
  bool v2 = false;
  CgroupIdentity identity;
};

}  // namespace

std::string_view RuntimeName(ContainerRuntime runtime) {
  switch (runtime) {
    case ContainerRuntime::kDocker:
      return "docker";
    case ContainerRuntime::kContainerd:
      return "containerd";
    case ContainerRuntime::kCrio:
      return "cri-o";
    case ContainerRuntime::kPodman:
      return "podman";
    case ContainerRuntime::kSystemdNspawn:
      return "systemd-nspawn";
    case ContainerRuntime::kLxc:
      return "lxc";
    case ContainerRuntime::kNone:
    case ContainerRuntime::kUnknown:
      return "";
  }
  return "";
}

bool IsFullContainerId(std::string_view s) { return s.size() == 64 && IsLowerHex(s); }

absl::StatusOr<CgroupIdentity> ParseCgroupPath(std::string_view path) {
  if (path.empty() || path.front() != '/') {
    return absl::InvalidArgumentError("cgroup path is not absolute");
  }
  if (path.size() > kMaxCgroupPathBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("cgroup path of ", path.size(), " bytes is longer than PATH_MAX"));
  }
  if (path.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError("cgroup path contains a NUL byte");
  }
  if (path.starts_with("/..")) {
    return absl::InvalidArgumentError(
        "cgroup path starts with \"/..\": the process is outside the reader's cgroup namespace "
        "(kspan must run in the host's cgroup namespace)");
  }
  Components c;
  if (path != "/") c = SplitView(path.substr(1), '/');
  for (std::string_view s : c) {
    if (s.empty() || s == "." || s == "..") {
      return absl::InvalidArgumentError("cgroup path has an empty, \".\" or \"..\" component");
    }
  }

  CgroupIdentity id;
  id.cgroup_path = std::string(path);
  bool kubepods_seen = false;
  std::size_t pod_at = std::string_view::npos;
  for (std::size_t i = 0; i < c.size(); ++i) {
    if (IsUserManager(c[i])) id.user_delegated = true;
    if (c[i] == "kubepods") kubepods_seen = true;
    if (!id.in_pod()) {
      if (auto pod = MatchPod(c, i, kubepods_seen)) {
        id.pod_uid = std::move(pod->uid);
        id.qos_class = std::move(pod->qos);
        pod_at = i;
        continue;
      }
    }
    Found found = MatchContainer(c, i, pod_at);
    if (found.match == Match::kContainer) {
      id.container_id = std::move(found.id);
      id.runtime = found.runtime;
      break;
    }
    if (found.match == Match::kSupervisor) break;
  }
  return id;
}

absl::StatusOr<CgroupIdentity> ParseProcCgroup(std::string_view content) {
  if (content.size() > kMaxProcCgroupBytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cgroup file of ", content.size(), " bytes is over the limit of ", kMaxProcCgroupBytes));
  }
  std::vector<Line> lines;
  std::size_t number = 0;
  for (std::string_view text : SplitView(content, '\n')) {
    ++number;
    if (text.empty()) continue;  // the final newline
    if (text.size() > kMaxProcCgroupLineBytes) {
      return absl::ResourceExhaustedError(absl::StrCat("cgroup line ", number, " has ", text.size(),
                                                       " bytes, over the limit of ",
                                                       kMaxProcCgroupLineBytes));
    }
    if (lines.size() == kMaxProcCgroupLines) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cgroup file has more than ", kMaxProcCgroupLines, " lines"));
    }
    // "hierarchy-id:controller-list:path"; the path may itself contain ':'.
    const std::size_t first = text.find(':');
    const std::size_t second = first == std::string_view::npos ? first : text.find(':', first + 1);
    // Hierarchy ids are small (at most the number of hierarchies); nine
    // digits keep the check simple and any overflow out.
    if (second == std::string_view::npos || first > 9 || !IsDigits(text.substr(0, first))) {
      return absl::InvalidArgumentError(
          absl::StrCat("cgroup line ", number, " is not \"id:controllers:path\""));
    }
    Line line;
    line.controllers = text.substr(first + 1, second - first - 1);
    line.v2 = text.substr(0, first) == "0" && line.controllers.empty();
    auto identity = ParseCgroupPath(text.substr(second + 1));
    if (!identity.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cgroup line ", number, ": ", identity.status().message()));
    }
    line.identity = *std::move(identity);
    lines.push_back(std::move(line));
  }
  if (lines.empty()) return absl::InvalidArgumentError("cgroup file has no lines");

  // The v2 line first, then v1 lines in the kernel's order.
  std::vector<const Line*> order;
  for (const auto& l : lines) {
    if (l.v2) order.push_back(&l);
  }
  for (const auto& l : lines) {
    if (!l.v2) order.push_back(&l);
  }
  for (const Line* l : order) {
    if (l->identity.has_container()) return l->identity;
  }
  for (const Line* l : order) {
    if (l->identity.in_pod()) return l->identity;
  }
  for (const Line* l : order) {
    if (l->v2 || l->controllers == "name=systemd") return l->identity;
  }
  return lines.front().identity;
}

}  // namespace kspan
