#include "userspace/pin_directory.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace kspan {
namespace {

// bpffs holds no regular files to lock, so the lock lives in /run.
std::string LockPathFor(const std::string& pin_path) {
  return absl::StrCat("/run/kspan-", std::hash<std::string>{}(pin_path), ".lock");
}

}  // namespace

int RemovePinDirectory(const std::string& path) {
  int removed = 0;
  if (DIR* d = opendir(path.c_str())) {
    while (struct dirent* e = readdir(d)) {
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      std::string entry = path + "/" + e->d_name;
      if (unlink(entry.c_str()) == 0) {
        ++removed;
      } else {
        spdlog::warn("cannot remove stale pin {}: {}", entry, std::strerror(errno));
      }
    }
    closedir(d);
  }
  rmdir(path.c_str());
  return removed;
}

absl::StatusOr<PinDirectory> PinDirectory::Create(std::string path) {
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
    int n = RemovePinDirectory(path);
    spdlog::warn("removed {} stale pin(s) under {} left by an earlier run", n, path);
  }
  if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    int err = errno;
    close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create pin directory ", path, ": ", std::strerror(err)));
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
