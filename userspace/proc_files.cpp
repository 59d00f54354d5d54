#include "userspace/proc_files.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>

namespace kspan {

std::optional<std::string> ReadBoundedFile(const std::string& path, std::size_t max_bytes,
                                           bool* truncated) {
  // O_NONBLOCK: a FIFO planted where a file was expected must not block
  // the reader; it is refused below anyway.
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return std::nullopt;
  struct stat st{};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return std::nullopt;
  }
  // /proc files report size 0: read until EOF or the bound.
  std::string out;
  out.resize(std::min<std::size_t>(max_bytes, 4096));
  std::size_t used = 0;
  bool more = false;
  while (true) {
    if (used == out.size()) {
      if (out.size() >= max_bytes) {
        char probe;
        ssize_t n;
        do n = read(fd, &probe, 1);
        while (n < 0 && errno == EINTR);
        more = n > 0;
        break;
      }
      out.resize(std::min<std::size_t>(max_bytes, out.size() * 2));
    }
    ssize_t n = read(fd, out.data() + used, out.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
  }
  close(fd);
  out.resize(used);
  if (truncated != nullptr) *truncated = more;
  return out;
}

std::string ReadLinkPath(const std::string& path) {
  char buf[PATH_MAX];
  ssize_t n = readlink(path.c_str(), buf, sizeof(buf) - 1);
  if (n <= 0) return {};
  std::string s(buf, static_cast<std::size_t>(n));
  constexpr std::string_view kDeleted = " (deleted)";
  if (s.size() > kDeleted.size() && s.ends_with(kDeleted)) s.resize(s.size() - kDeleted.size());
  return s;
}

}  // namespace kspan
