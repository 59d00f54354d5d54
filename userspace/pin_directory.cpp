#include "userspace/pin_directory.h"

#include <bpf/bpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "exporter/terminal_text.h"
#include "spdlog/spdlog.h"

namespace kspan {
namespace {

constexpr std::array<std::string_view, 13> kPinnedMaps = {
    // bpf/filter.bpf.h (every family)
    "kspan_cfg", "kspan_pid_deny", "kspan_pid_allow", "kspan_cg_allow", "kspan_comm_pfx",
    // bpf/tcp.bpf.c
    "kspan_tcp_stats", "kspan_rcv_ports", "kspan_rcv_peers",
    // bpf/syscalls.bpf.c
    "kspan_sys_cfg", "kspan_sys_stats",
    // bpf/dns.bpf.c, bpf/http.bpf.c, bpf/process.bpf.c
    "kspan_dns_stats", "kspan_http_stats", "kspan_proc_stats"};

constexpr char kKey[] = "bpf.pin_path: ";

// bpffs holds no regular files to lock, so the lock lives in /run.
std::string LockPathFor(const std::string& pin_path) {
  return absl::StrCat("/run/kspan-", std::hash<std::string>{}(pin_path), ".lock");
}

bool OnBpffs(const std::string& path) {
  struct statfs fs {};
  return statfs(path.c_str(), &fs) == 0 && static_cast<unsigned long>(fs.f_type) == BPF_FS_MAGIC;
}

bool IsKspanPin(const std::string& dir, const char* name) {
  if (std::find(kPinnedMaps.begin(), kPinnedMaps.end(), std::string_view(name)) ==
      kPinnedMaps.end()) {
    return false;
  }
  // A name alone could be anyone's: it must also be a pinned BPF object.
  const int fd = bpf_obj_get(absl::StrCat(dir, "/", name).c_str());
  if (fd < 0) return false;
  close(fd);
  return true;
}

// The entries of `dir` that are not kspan's pins (escaped for the message).
std::vector<std::string> ForeignEntries(const std::string& dir) {
  std::vector<std::string> foreign;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return foreign;
  while (struct dirent* e = readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    if (!IsKspanPin(dir, e->d_name)) foreign.push_back(EscapeForTerminal(e->d_name));
  }
  closedir(d);
  std::sort(foreign.begin(), foreign.end());
  return foreign;
}

// The path as the lock and the checks see it: absolute, normalized, its
// directory resolved (so /sys/fs/bpf/kspan/ and a link to /sys/fs/bpf name
// the same lock). Refuses what cannot be a directory of kspan's own inside a
// bpffs mount.
absl::StatusOr<std::string> CheckPinPath(const std::string& configured) {
  std::filesystem::path p = std::filesystem::path(configured).lexically_normal();
  if (!p.is_absolute()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kKey, "'", configured, "' is not an absolute path"));
  }
  if (!p.has_filename()) p = p.parent_path();  // a trailing '/'
  const std::string parent = p.parent_path().string();
  const std::string name = p.filename().string();
  if (name.empty() || p == p.root_path()) {
    return absl::InvalidArgumentError(absl::StrCat(kKey, "'", configured, "' names no directory"));
  }
  char resolved[PATH_MAX];
  if (realpath(parent.c_str(), resolved) == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(kKey, configured, ": ", parent, ": ", std::strerror(errno),
                     " (bpffs is normally mounted at /sys/fs/bpf)"));
  }
  const std::string path = absl::StrCat(resolved, resolved[1] == '\0' ? "" : "/", name);
  if (!OnBpffs(resolved)) {
    if (OnBpffs(path)) {
      return absl::FailedPreconditionError(absl::StrCat(
          kKey, configured, " is a bpffs mount itself, where other tools pin their objects: "
          "use a directory of kspan's own inside it, such as ", path, "/kspan"));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        kKey, configured, " is not on bpffs (", resolved, " is not a bpffs mount): kspan pins its "
        "maps in a directory of its own inside a bpffs mount, such as /sys/fs/bpf/kspan"));
  }
  struct stat st {}, parent_st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return path;
    return absl::FailedPreconditionError(absl::StrCat(kKey, path, ": ", std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(kKey, path, " exists and is not a directory (a pinned object?)"));
  }
  if (stat(resolved, &parent_st) != 0 || parent_st.st_dev != st.st_dev) {
    return absl::FailedPreconditionError(absl::StrCat(
        kKey, path, " is a mount point: use a directory of kspan's own inside a bpffs mount"));
  }
  return path;
}

}  // namespace

std::span<const std::string_view> KspanPinnedMaps() { return kPinnedMaps; }

int RemovePinDirectory(const std::string& path) {
  int removed = 0;
  if (DIR* d = opendir(path.c_str())) {
    std::vector<std::string> ours;
    while (struct dirent* e = readdir(d)) {
      if (IsKspanPin(path, e->d_name)) ours.emplace_back(e->d_name);
    }
    closedir(d);
    for (const auto& name : ours) {
      const std::string entry = path + "/" + name;
      if (unlink(entry.c_str()) == 0) {
        ++removed;
      } else {
        spdlog::warn("cannot remove pin {}: {}", entry, std::strerror(errno));
      }
    }
  }
  if (rmdir(path.c_str()) != 0 && errno == ENOTEMPTY) {
    spdlog::warn("pin directory {} left in place: it holds entries kspan did not pin ({})", path,
                 absl::StrJoin(ForeignEntries(path), ", "));
  }
  return removed;
}

absl::StatusOr<PinDirectory> PinDirectory::Create(std::string configured) {
  // Checked before anything is touched, the lock file included.
  auto checked = CheckPinPath(configured);
  if (!checked.ok()) return checked.status();
  std::string path = *std::move(checked);

  const std::string lock_path = LockPathFor(path);
  int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open lock file ", lock_path, ": ", std::strerror(errno)));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    close(fd);
    return absl::AlreadyExistsError(absl::StrCat(
        "another kspan agent is running with pin directory ", path, " (lock ", lock_path, ")"));
  }
  struct stat st {};
  if (stat(path.c_str(), &st) == 0) {
    if (auto foreign = ForeignEntries(path); !foreign.empty()) {
      close(fd);
      constexpr std::size_t kNamed = 5;
      const std::size_t n = foreign.size();
      if (n > kNamed) foreign.resize(kNamed);
      return absl::FailedPreconditionError(absl::StrCat(
          kKey, path, " holds ", n, " entr", n == 1 ? "y" : "ies", " kspan did not pin (",
          absl::StrJoin(foreign, ", "), n > kNamed ? ", ..." : "",
          "): it is not kspan's pin directory. Choose another bpf.pin_path (KSPAN_PIN_PATH), "
          "or remove them if nothing uses them"));
    }
    const int n = RemovePinDirectory(path);
    if (n > 0) spdlog::warn("removed {} stale pin(s) under {} left by an earlier run", n, path);
  }
  if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    int err = errno;
    close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat(kKey, "cannot create pin directory ", path, ": ", std::strerror(err)));
  }
  return PinDirectory(std::move(path), fd);
}

PinDirectory::PinDirectory(PinDirectory&& other) noexcept
    : path_(std::move(other.path_)), lock_fd_(other.lock_fd_) {
  other.path_.clear();
  other.lock_fd_ = -1;
}

PinDirectory& PinDirectory::operator=(PinDirectory&& other) noexcept {
  if (this != &other) {
    Remove();
    path_ = std::move(other.path_);
    lock_fd_ = other.lock_fd_;
    other.path_.clear();
    other.lock_fd_ = -1;
  }
  return *this;
}

PinDirectory::~PinDirectory() { Remove(); }

void PinDirectory::Remove() noexcept {
  if (!path_.empty()) RemovePinDirectory(path_);
  if (lock_fd_ >= 0) close(lock_fd_);  // the lock file itself stays: harmless, reused
  path_.clear();
  lock_fd_ = -1;
}

}  // namespace kspan
