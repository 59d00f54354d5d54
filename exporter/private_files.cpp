#include "exporter/private_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace kspan {
namespace {

constexpr mode_t kGroupOther = S_IRWXG | S_IRWXO;
// Deeper than any state directory kspan makes; bounds the descriptors the
// walk holds open at once.
constexpr int kMaxDepth = 32;

std::string Why(const std::string& path, const char* what, int err) {
  return absl::StrCat(path, ": ", what, ": ", std::strerror(err));
}

// Drops group/other bits of the open file `fd`, expected to be of `type`
// (S_IFDIR or S_IFREG); checked on the descriptor, not the name.
void Tighten(int fd, mode_t type, const std::string& path, TightenResult* out) {
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    out->errors.push_back(Why(path, "fstat", errno));
    return;
  }
  if ((st.st_mode & S_IFMT) != type) return;  // replaced while we looked
  const mode_t was = st.st_mode & 07777;
  if ((was & kGroupOther) == 0) return;
  const mode_t now = was & ~kGroupOther;
  if (fchmod(fd, now) != 0) {
    out->errors.push_back(Why(path, "chmod", errno));
    return;
  }
  out->tightened.push_back({path, was, now});
}

void Walk(int dir_fd, const std::string& path, int depth, TightenResult* out) {
  if (depth > kMaxDepth) {
    out->errors.push_back(absl::StrCat(path, ": deeper than ", kMaxDepth, " levels: not walked"));
    return;
  }
  const int list_fd = dup(dir_fd);  // fdopendir takes it over
  DIR* d = list_fd >= 0 ? fdopendir(list_fd) : nullptr;
  if (d == nullptr) {
    if (list_fd >= 0) close(list_fd);
    out->errors.push_back(Why(path, "opendir", errno));
    return;
  }
  while (dirent* e = readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    const std::string child = absl::StrCat(path, "/", e->d_name);
    struct stat st {};
    if (fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone
    if (S_ISDIR(st.st_mode)) {
      const int fd = openat(dir_fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) {
        out->errors.push_back(Why(child, "open", errno));
        continue;
      }
      Tighten(fd, S_IFDIR, child, out);
      Walk(fd, child, depth + 1, out);
      close(fd);
    } else if (S_ISREG(st.st_mode)) {
      // O_NONBLOCK|O_NOCTTY: harmless for a regular file, and nothing
      // happens if a FIFO or a device was swapped in after fstatat.
      const int fd = openat(dir_fd, e->d_name,
                            O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
      if (fd < 0) {
        out->errors.push_back(Why(child, "open", errno));
        continue;
      }
      Tighten(fd, S_IFREG, child, out);
      close(fd);
    }
    // Links, sockets, FIFOs, devices: not kspan's files, left alone.
  }
  closedir(d);
}

}  // namespace

absl::Status CreatePrivateDirectories(const std::string& dir) {
  if (dir.empty()) return absl::OkStatus();
  std::filesystem::path so_far;
  for (const auto& part : std::filesystem::path(dir)) {
    so_far /= part;
    if (part == "/" || part.empty()) continue;
    if (mkdir(so_far.c_str(), 0700) == 0 || errno == EEXIST) continue;
    return absl::UnavailableError(Why(so_far.string(), "cannot create directory", errno));
  }
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::UnavailableError(absl::StrCat(dir, ": not a directory"));
  }
  return absl::OkStatus();
}

absl::Status CreatePrivateFile(const std::string& path) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_NOCTTY | O_CLOEXEC, 0600);
  if (fd < 0) return absl::UnavailableError(Why(path, "cannot create", errno));
  close(fd);
  return absl::OkStatus();
}

TightenResult MakeTreeOwnerOnly(const std::string& root) {
  TightenResult out;
  // The root itself may be a link the administrator chose (state_dir ->
  // /data/kspan): followed. Nothing below it is.
  const int fd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT) out.errors.push_back(Why(root, "open", errno));
    return out;
  }
  Tighten(fd, S_IFDIR, root, &out);
  Walk(fd, root, 0, &out);
  close(fd);
  return out;
}

TightenResult MakeFileOwnerOnly(const std::string& path) {
  TightenResult out;
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return out;
  const int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    out.errors.push_back(Why(path, "open", errno));
    return out;
  }
  Tighten(fd, S_IFREG, path, &out);
  close(fd);
  return out;
}

}  // namespace kspan
