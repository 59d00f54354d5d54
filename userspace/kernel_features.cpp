#include "userspace/kernel_features.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "exporter/status_macros.h"
#include "spdlog/spdlog.h"

namespace kspan {
namespace {

std::string KernelRelease() {
  struct utsname u {};
  if (uname(&u) != 0) return "unknown";
  return u.release;
}

int LibbpfToSpdlog(enum libbpf_print_level level, const char* fmt, va_list args) {
  // Whole: a refused program's verifier log is one message of many KiB,
  // and its last lines say why.
  va_list again;
  va_copy(again, args);
  const int n = std::vsnprintf(nullptr, 0, fmt, again);
  va_end(again);
  if (n <= 0) return n;
  std::string buf(static_cast<std::size_t>(n) + 1, '\0');
  std::vsnprintf(buf.data(), buf.size(), fmt, args);
  std::string_view line(buf.data(), static_cast<std::size_t>(n));
  while (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  // libbpf's warnings are expected during feature probing (a refused
  // variant is not an error for kspan), so they stay at debug too. Its
  // lines carry their own "libbpf: " prefix.
  if (level == LIBBPF_DEBUG) {
    spdlog::trace("{}", line);
  } else {
    spdlog::debug("{}", line);
  }
  return n;
}

}  // namespace

void RouteLibbpfLogs() { libbpf_set_print(LibbpfToSpdlog); }

std::uint32_t PidMax() {
  std::ifstream in("/proc/sys/kernel/pid_max");
  std::uint64_t v = 0;
  if (!(in >> v) || v == 0) v = 4u << 20;
  return static_cast<std::uint32_t>(std::clamp<std::uint64_t>(v, 1024, 4u << 20));
}

std::uint32_t PerThreadSlots() {
  const std::uint32_t want = std::min<std::uint32_t>(PidMax(), 1u << 18);
  std::uint32_t n = 1024;
  while (n < want) n <<= 1;
  return n;
}

bool KernelBtfHas(const char* name, int btf_kind) {
  struct btf* vmlinux = btf__load_vmlinux_btf();
  if (vmlinux == nullptr) return false;
  const bool found = btf__find_by_name_kind(vmlinux, name, btf_kind) > 0;
  btf__free(vmlinux);
  return found;
}

bool KernelHasBpfHelper(const char* value) {
  struct btf* vmlinux = btf__load_vmlinux_btf();
  if (vmlinux == nullptr) return false;
  bool found = false;
  const int id = btf__find_by_name_kind(vmlinux, "bpf_func_id", BTF_KIND_ENUM);
  if (const struct btf_type* t = id > 0 ? btf__type_by_id(vmlinux, id) : nullptr) {
    const struct btf_enum* e = btf_enum(t);
    for (int i = 0; i < btf_vlen(t) && !found; ++i) {
      const char* name = btf__name_by_offset(vmlinux, e[i].name_off);
      found = name != nullptr && std::strcmp(name, value) == 0;
    }
  }
  btf__free(vmlinux);
  return found;
}

absl::Status CheckBtf(const KernelRequirements& req) {
  const bool external = !req.btf_override.empty();
  const std::string& path = external ? req.btf_override : req.sysfs_btf;
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    if (external) {
      return absl::FailedPreconditionError(
          absl::StrCat("BTF file ", path, " given with --btf: ", std::strerror(errno)));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "kernel BTF not found: ", path, " is missing, so this kernel (", KernelRelease(),
        ") was built without CONFIG_DEBUG_INFO_BTF. kspan needs BTF to relocate its "
        "programs. Use a kernel with BTF (most distributions since 2020 have it), or pass "
        "--btf FILE with BTF for exactly this kernel (e.g. from the BTFHub archive or "
        "`pahole --btf_encode_detached` on its vmlinux)."));
  }
  struct btf* btf = btf__parse(path.c_str(), nullptr);
  if (btf == nullptr) {
    int err = errno;
    return absl::FailedPreconditionError(absl::StrCat(
        external ? "BTF file " : "kernel BTF ", path, " cannot be parsed: ", std::strerror(err),
        external ? "" : ". Pass --btf FILE with BTF for this kernel."));
  }
  btf__free(btf);
  return absl::OkStatus();
}

absl::Status CheckRingBuffer() {
  int fd = bpf_map_create(BPF_MAP_TYPE_RINGBUF, "kspan_probe", 0, 0, 4096, nullptr);
  if (fd >= 0) {
    close(fd);
    return absl::OkStatus();
  }
  int err = errno;
  if (err == EPERM || err == EACCES) {
    return absl::PermissionDeniedError(absl::StrCat(
        "not allowed to create BPF maps (", std::strerror(err),
        "): run kspan as root, or with CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE"));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "BPF ring buffers are not available on this kernel (", KernelRelease(), ": ",
      std::strerror(err), "). kspan needs Linux 5.8 or later; 5.10+ is supported."));
}

absl::Status CheckKernel(const KernelRequirements& req) {
  KSPAN_RETURN_IF_ERROR(CheckBtf(req));
  return CheckRingBuffer();
}

absl::Status EnsureBpffs(const KernelRequirements& req) {
  struct statfs fs {};
  if (statfs(req.bpffs.c_str(), &fs) == 0 && fs.f_type == BPF_FS_MAGIC) {
    return absl::OkStatus();
  }
  if (mkdir(req.bpffs.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create ", req.bpffs, ": ", std::strerror(errno)));
  }
  if (mount("bpf", req.bpffs.c_str(), "bpf", 0, nullptr) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "bpffs is not mounted at ", req.bpffs, " and mounting it failed (",
        std::strerror(errno), "): mount -t bpf bpf ", req.bpffs));
  }
  spdlog::info("mounted bpffs at {}", req.bpffs);
  return absl::OkStatus();
}

void JoinHostCgroupNamespace(const std::string& proc_root) {
  struct stat self {};
  struct stat init {};
  const std::string init_ns = proc_root + "/1/ns/cgroup";
  // No cgroup namespaces (kernel before 4.6), or pid 1 not inspectable
  // (kspan in a pid namespace of its own sees its own init): nothing to do.
  if (stat((proc_root + "/self/ns/cgroup").c_str(), &self) != 0 || stat(init_ns.c_str(), &init) != 0) {
    return;
  }
  if (self.st_ino == init.st_ino && self.st_dev == init.st_dev) return;
  const int fd = open(init_ns.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWCGROUP) != 0) {
    const int err = errno;
    if (fd >= 0) close(fd);
    spdlog::warn("kspan runs in a cgroup namespace of its own and cannot enter the host's ({}): "
                 "other processes' cgroups read as \"/../..\", so their spans carry no container ids; "
                 "run kspan with the host's cgroup namespace (--cgroupns=host)",
                 std::strerror(err));
    return;
  }
  close(fd);
  spdlog::info("entered the host's cgroup namespace: container ids are read as the host sees them");
}

}  // namespace kspan
