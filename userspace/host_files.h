// Bounded, read-only access to the node's files under a root directory: "/"
// on a host, or where a DaemonSet mounts the node's filesystem (e.g. /host).
//
// Paths are resolved inside the root with openat2(RESOLVE_IN_ROOT): an
// absolute symlink on the node (/var/run -> /run, /var/lib/docker -> /data)
// resolves against the node's tree, not the agent's, and no path, symlink or
// ".." can leave the root. On a kernel or sandbox without openat2 the paths
// are opened relative to the root without that guarantee (intermediate
// symlinks then resolve in the agent's own mount namespace).
//
// Thread-safe: every call works on its own descriptors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kspan {

// What tells whether a file changed since it was last read.
struct FileStamp {
  std::uint64_t device = 0;
  std::uint64_t inode = 0;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  bool operator==(const FileStamp&) const = default;
};

class HostFiles {
 public:
  explicit HostFiles(std::string root);
  ~HostFiles();
  HostFiles(const HostFiles&) = delete;
  HostFiles& operator=(const HostFiles&) = delete;

  const std::string& root() const { return root_; }

  // `path` is relative to the root ("var/lib/docker/..."; a leading '/' is
  // ignored). A regular file of at most max_bytes, else NotFound (absent),
  // FailedPrecondition (a symlink, when the last component must not be one;
  // not a regular file) or ResourceExhausted (larger than max_bytes).
  absl::StatusOr<std::string> ReadRegularFile(std::string_view path, std::size_t max_bytes,
                                              bool refuse_symlink = true) const;
  absl::StatusOr<FileStamp> Stamp(std::string_view path, bool refuse_symlink = true) const;
  // Entry names (not "." and ".."), NotFound when the directory is absent,
  // ResourceExhausted when it holds more than max_entries.
  absl::StatusOr<std::vector<std::string>> ListDirectory(std::string_view path,
                                                         std::size_t max_entries) const;
  // true: a directory; false: absent (ENOENT/ENOTDIR); an error otherwise
  // (the caller cannot tell, e.g. a path over PATH_MAX or EACCES).
  absl::StatusOr<bool> IsDirectory(std::string_view path) const;
  bool Exists(std::string_view path) const;

 private:
  // An fd for `path` inside the root, or -errno.
  int Open(std::string_view path, int flags) const;

  std::string root_;
  int root_fd_ = -1;
  int root_errno_ = 0;
};

}  // namespace kspan
