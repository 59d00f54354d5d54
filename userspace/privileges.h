// What kspan may still do once its BPF programs are loaded and attached.
//
// Loading and attaching needs most of root (CAP_BPF, CAP_PERFMON,
// CAP_SYS_ADMIN for the cgroup namespace, CAP_SYS_RESOURCE on old kernels);
// what the agent does afterwards, while it parses what local processes and
// collectors send it, needs only the few capabilities RunTimeCapabilities
// names. DropCapabilities keeps those and gives up the rest for good:
// permitted, effective, inheritable, ambient and bounding sets, and sets
// no_new_privs. docs/operations.md ("What runs as root, and what it keeps") has the measurement behind the
// list.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kspan {

struct AgentConfig;

// The capabilities of the calling thread, and its no_new_privs flag.
struct PrivilegeState {
  bool dropped = false;  // DropCapabilities ran (security.drop_capabilities)
  std::vector<std::string> effective;  // "CAP_BPF", ...
  std::vector<std::string> permitted;
  std::vector<std::string> bounding;
  std::vector<std::string> ambient;
  bool no_new_privs = false;
  // Bounding-set entries that could not be removed (no CAP_SETPCAP): the
  // permitted set and no_new_privs still keep the agent from regaining them.
  std::vector<std::string> bounding_not_dropped;

  // "kept CAP_BPF, ...; dropped all others; no_new_privs"
  std::string Describe() const;
};

// The capabilities the agent uses after start-up with this config, on this
// kernel: CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (other users' and other
// root processes' /proc/<pid>/environ, exe, fd and ns/*, container engines'
// files under resource.host_root); CAP_BPF only on kernels before 6.5 with
// kernel.unprivileged_bpf_disabled set, which refuse every bpf() command
// without it, even on the maps the agent holds; CAP_NET_BIND_SERVICE when a
// port it binds after the drop is below net.ipv4.ip_unprivileged_port_start.
std::vector<std::string> RunTimeCapabilities(const AgentConfig& config);

// Keeps `keep` (names as cap_from_name reads them, e.g. "cap_bpf") in the
// permitted and effective sets where they are now, clears everything else,
// the inheritable and ambient sets, removes every other capability from the
// bounding set and sets PR_SET_NO_NEW_PRIVS.
//
// Capabilities belong to threads, not processes, and capset(2) changes only
// the calling thread: this must run while the calling thread is the only
// one, so every thread started afterwards inherits the reduced sets. It
// refuses (FailedPrecondition) when /proc/self/task shows another thread.
// Not libcap's psx, which would reach other threads: psx sees only threads
// created through a pthread_create that the linker wrapped, and gRPC,
// libstdc++'s std::thread and libcurl create theirs from shared libraries
// the wrap does not reach; a thread it missed would keep every capability.
absl::StatusOr<PrivilegeState> DropCapabilities(const std::vector<std::string>& keep);

// The calling thread's sets, as /status reports them.
PrivilegeState ReadPrivileges();

}  // namespace kspan
