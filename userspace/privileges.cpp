#include "userspace/privileges.h"

#include <dirent.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "userspace/config.h"

namespace kspan {
namespace {

std::string CapName(cap_value_t c) {
  char* name = cap_to_name(c);
  std::string out = name ? absl::AsciiStrToUpper(name) : absl::StrCat("CAP_", c);
  cap_free(name);
  return out;
}

int ThreadCount() {
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return -1;
  int n = 0;
  while (const dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(d);
  return n;
}

// The port of "host:port", or 0.
int PortOf(const std::string& endpoint) {
  const auto colon = endpoint.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(endpoint.substr(colon + 1), &port)) return 0;
  return port;
}

int UnprivilegedPortStart() {
  std::ifstream in("/proc/sys/net/ipv4/ip_unprivileged_port_start");
  int start = 1024;
  if (!(in >> start)) start = 1024;
  return start;
}

// Whether bpf() on maps, links and pins the agent already holds works with
// no capability. Linux 6.5 moved the kernel.unprivileged_bpf_disabled check
// from every bpf() command to map creation and program load ("bpf: move
// unprivileged checks into map_create() and bpf_prog_load()"); before it,
// with the sysctl set (Debian's default is 2), even a lookup in a map whose
// fd the agent holds needs CAP_BPF.
bool HeldBpfObjectsNeedNoCapability() {
  utsname u{};
  int major = 0, minor = 0;
  if (uname(&u) == 0 && std::sscanf(u.release, "%d.%d", &major, &minor) == 2 &&
      (major > 6 || (major == 6 && minor >= 5))) {
    return true;
  }
  std::ifstream in("/proc/sys/kernel/unprivileged_bpf_disabled");
  int disabled = 1;
  return (in >> disabled) && disabled == 0;
}

}  // namespace

std::string PrivilegeState::Describe() const {
  if (!dropped) {
    return absl::StrCat("not dropped (security.drop_capabilities: false): ",
                        effective.empty() ? "no capabilities"
                                          : absl::StrCat(effective.size(), " capabilities"),
                        " effective", no_new_privs ? "; no_new_privs" : "");
  }
  std::string out = absl::StrCat("kept ", effective.empty() ? "none" : absl::StrJoin(effective, ", "),
                                 "; dropped all others");
  if (!bounding_not_dropped.empty()) {
    absl::StrAppend(&out, " (still in the bounding set, no CAP_SETPCAP to remove them: ",
                    absl::StrJoin(bounding_not_dropped, ", "), ")");
  }
  if (no_new_privs) absl::StrAppend(&out, "; no_new_privs");
  return out;
}

std::vector<std::string> RunTimeCapabilities(const AgentConfig& config) {
  // Measured in docs/operations.md ("What runs as root, and what it keeps"): another user's (or a more
  // privileged root process's) /proc/<pid>/environ takes both, exe and
  // ns/* CAP_SYS_PTRACE, listing fd/ CAP_DAC_READ_SEARCH.
  std::vector<std::string> keep = {"cap_dac_read_search", "cap_sys_ptrace"};
  if (!HeldBpfObjectsNeedNoCapability()) keep.push_back("cap_bpf");
  // The admin server and the receiver bind after the drop (they start
  // threads, see Agent::Start).
  const int unprivileged = UnprivilegedPortStart();
  bool low = false;
  auto check = [&](bool enabled, const std::string& endpoint) {
    const int port = enabled ? PortOf(endpoint) : 0;
    low = low || (port > 0 && port < unprivileged);
  };
  check(!config.admin_listen.empty(), config.admin_listen);
  check(config.receiver.grpc_enabled, config.receiver.grpc_endpoint);
  check(config.receiver.http_enabled, config.receiver.http_endpoint);
  if (low) keep.push_back("cap_net_bind_service");
  return keep;
}

absl::StatusOr<PrivilegeState> DropCapabilities(const std::vector<std::string>& keep) {
  if (const int threads = ThreadCount(); threads != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "privileges: ", threads, " threads run before the capability drop (it covers only the "
        "calling thread); set security.drop_capabilities: false to run with every capability"));
  }
  std::vector<cap_value_t> wanted;
  for (const auto& name : keep) {
    cap_value_t c;
    if (cap_from_name(name.c_str(), &c) != 0) {
      return absl::InternalError(absl::StrCat("privileges: unknown capability ", name));
    }
    wanted.push_back(c);
  }
  auto kept = [&wanted](cap_value_t c) {
    return std::find(wanted.begin(), wanted.end(), c) != wanted.end();
  };

  PrivilegeState state;
  state.dropped = true;
  // Bounding set first: removing from it takes CAP_SETPCAP, which the
  // capset below gives up.
  for (cap_value_t c = 0; c < static_cast<cap_value_t>(cap_max_bits()); ++c) {
    if (kept(c) || cap_get_bound(c) != 1) continue;
    if (cap_drop_bound(c) != 0) state.bounding_not_dropped.push_back(CapName(c));
  }
  if (cap_reset_ambient() != 0 && errno != EINVAL) {  // EINVAL: no ambient set (before 4.3)
    return absl::InternalError(
        absl::StrCat("privileges: clearing the ambient set: ", std::strerror(errno)));
  }
  cap_t now = cap_get_proc();
  cap_t next = cap_init();  // all clear, the inheritable set included
  if (now == nullptr || next == nullptr) {
    cap_free(now);
    cap_free(next);
    return absl::InternalError(absl::StrCat("privileges: ", std::strerror(errno)));
  }
  for (cap_value_t c : wanted) {
    cap_flag_value_t have = CAP_CLEAR;
    cap_get_flag(now, c, CAP_PERMITTED, &have);
    if (have != CAP_SET) continue;  // never had it: nothing to keep
    cap_set_flag(next, CAP_PERMITTED, 1, &c, CAP_SET);
    cap_set_flag(next, CAP_EFFECTIVE, 1, &c, CAP_SET);
  }
  const int rc = cap_set_proc(next);
  const int err = errno;
  cap_free(now);
  cap_free(next);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("privileges: capset: ", std::strerror(err)));
  }
  // From here no execve (none is made; a library might) can gain anything:
  // not from setuid bits, file capabilities or root's own exec rule.
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return absl::InternalError(absl::StrCat("privileges: no_new_privs: ", std::strerror(errno)));
  }
  PrivilegeState read = ReadPrivileges();
  read.dropped = true;
  read.bounding_not_dropped = std::move(state.bounding_not_dropped);
  return read;
}

PrivilegeState ReadPrivileges() {
  PrivilegeState s;
  cap_t now = cap_get_proc();
  for (cap_value_t c = 0; c < static_cast<cap_value_t>(cap_max_bits()); ++c) {
    cap_flag_value_t v = CAP_CLEAR;
    if (now != nullptr && cap_get_flag(now, c, CAP_EFFECTIVE, &v) == 0 && v == CAP_SET) {
      s.effective.push_back(CapName(c));
    }
    if (now != nullptr && cap_get_flag(now, c, CAP_PERMITTED, &v) == 0 && v == CAP_SET) {
      s.permitted.push_back(CapName(c));
    }
    if (cap_get_bound(c) == 1) s.bounding.push_back(CapName(c));
    if (cap_get_ambient(c) == 1) s.ambient.push_back(CapName(c));
  }
  cap_free(now);
  s.no_new_privs = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1;
  return s;
}

}  // namespace kspan
