#include "userspace/host_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kspan {
namespace {

// glibc 2.36 (Debian 12) has no openat2() wrapper.
int OpenAt2(int dir_fd, const char* path, int flags) {
  open_how how{};
  how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(syscall(SYS_openat2, dir_fd, path, &how, sizeof(how)));
}

// Cleared the first time the kernel (or a seccomp filter) refuses openat2.
std::atomic<bool> openat2_works{true};

std::string Relative(std::string_view path) {
  while (!path.empty() && path.front() == '/') path.remove_prefix(1);
  return path.empty() ? std::string(".") : std::string(path);
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

absl::Status Errno(int err, std::string_view what, std::string_view path) {
  std::string message =
      absl::StrCat(std::string(what), " ", std::string(path), ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(message);
  if (err == ELOOP) {
    return absl::FailedPreconditionError(
        absl::StrCat(std::string(what), " ", std::string(path), ": is a symlink"));
  }
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(message);
  return absl::UnavailableError(message);
}

}  // namespace

HostFiles::HostFiles(std::string root)
    : root_(root.empty() ? std::string(1, '/') : std::move(root)) {
  root_fd_ = open(root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd_ < 0) root_errno_ = errno;
}

HostFiles::~HostFiles() {
  if (root_fd_ >= 0) close(root_fd_);
}

int HostFiles::Open(std::string_view path, int flags) const {
  if (root_fd_ < 0) return -root_errno_;
  const std::string rel = Relative(path);
  if (openat2_works.load(std::memory_order_relaxed)) {
    int fd = OpenAt2(root_fd_, rel.c_str(), flags);
    if (fd >= 0) return fd;
    // ENOSYS: kernel before 5.6; EPERM: a seccomp profile that does not know
    // the syscall. Anything else is the path's own error.
    if (errno != ENOSYS && errno != EPERM) return -errno;
    openat2_works.store(false, std::memory_order_relaxed);
  }
  // Without RESOLVE_IN_ROOT, at least refuse to climb out by "..".
  if (rel == ".." || rel.starts_with("../") || rel.find("/../") != std::string::npos ||
      rel.ends_with("/..")) {
    return -EXDEV;
  }
  int fd = openat(root_fd_, rel.c_str(), flags | O_CLOEXEC);
  return fd >= 0 ? fd : -errno;
}

absl::StatusOr<std::string> HostFiles::ReadRegularFile(std::string_view path, std::size_t max_bytes,
                                                       bool refuse_symlink) const {
  // O_NONBLOCK: a FIFO planted where a file is expected must not hang us.
  Fd fd(Open(path, O_RDONLY | O_NONBLOCK | (refuse_symlink ? O_NOFOLLOW : 0)));
  if (fd.get() < 0) return Errno(-fd.get(), "cannot open", path);
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return Errno(errno, "cannot stat", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(std::string(path), " is not a regular file"));
  }
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(std::string(path), " has ", st.st_size,
                                                     " bytes, over the limit of ", max_bytes));
  }
  std::string out;
  out.resize(static_cast<std::size_t>(st.st_size) + 1);
  std::size_t used = 0;
  while (true) {
    if (used == out.size()) {
      // The file grew since fstat: read on, within the bound.
      if (out.size() > max_bytes) {
        return absl::ResourceExhaustedError(
            absl::StrCat(std::string(path), " grew over the limit of ", max_bytes, " bytes"));
      }
      out.resize(std::min(out.size() * 2 + 4096, max_bytes + 1));
    }
    ssize_t n = read(fd.get(), out.data() + used, out.size() - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno(errno, "cannot read", path);
    }
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
  }
  if (used > max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat(std::string(path), " grew over the limit of ", max_bytes, " bytes"));
  }
  out.resize(used);
  return out;
}

absl::StatusOr<FileStamp> HostFiles::Stamp(std::string_view path, bool refuse_symlink) const {
  Fd fd(Open(path, O_PATH | (refuse_symlink ? O_NOFOLLOW : 0)));
  if (fd.get() < 0) return Errno(-fd.get(), "cannot open", path);
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return Errno(errno, "cannot stat", path);
  if (refuse_symlink && S_ISLNK(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(std::string(path), ": is a symlink"));
  }
  FileStamp stamp;
  stamp.device = st.st_dev;
  stamp.inode = st.st_ino;
  stamp.size = static_cast<std::uint64_t>(st.st_size);
  stamp.mtime_ns =
      static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  return stamp;
}

absl::StatusOr<std::vector<std::string>> HostFiles::ListDirectory(std::string_view path,
                                                                  std::size_t max_entries) const {
  Fd fd(Open(path, O_RDONLY | O_DIRECTORY));
  if (fd.get() < 0) return Errno(-fd.get(), "cannot open directory", path);
  DIR* dir = fdopendir(fd.get());
  if (dir == nullptr) return Errno(errno, "cannot read directory", path);
  fd.release();  // owned by dir now
  std::vector<std::string> names;
  absl::Status status;
  while (true) {
    errno = 0;  // readdir returns nullptr both at the end and on an error
    dirent* e = readdir(dir);
    if (e == nullptr) {
      if (errno != 0) status = Errno(errno, "cannot read directory", path);
      break;
    }
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    if (names.size() == max_entries) {
      status = absl::ResourceExhaustedError(absl::StrCat(
          "directory ", std::string(path), " has more than ", max_entries, " entries"));
      break;
    }
    names.emplace_back(e->d_name);
  }
  closedir(dir);
  if (!status.ok()) return status;
  return names;
}

absl::StatusOr<bool> HostFiles::IsDirectory(std::string_view path) const {
  Fd fd(Open(path, O_PATH | O_DIRECTORY));
  if (fd.get() >= 0) return true;
  if (-fd.get() == ENOENT || -fd.get() == ENOTDIR) return false;
  return Errno(-fd.get(), "cannot open", path);
}

bool HostFiles::Exists(std::string_view path) const {
  Fd fd(Open(path, O_PATH | O_NOFOLLOW));
  return fd.get() >= 0;
}

}  // namespace kspan
