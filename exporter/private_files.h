// Files that hold span data (the local store, disk queues, dead letters and
// SQLite's -wal/-shm beside them) are readable by their owner only: spans
// carry request paths, peer addresses, service and process names. New
// directories are made 0700 and new files 0600 whatever the umask; what an
// older version left (0644 files in 0755 directories) is tightened at start.
#pragma once

#include <string>
#include <sys/types.h>
#include <vector>

#include "absl/status/status.h"

namespace kspan {

// mkdir -p, each directory it creates 0700 (existing ones are left as they
// are: a configured path may go through /var/log).
absl::Status CreatePrivateDirectories(const std::string& dir);

// Creates `path` empty with mode 0600 if it does not exist (so that a
// library that creates files with 0644, as SQLite does, finds it there).
absl::Status CreatePrivateFile(const std::string& path);

struct TightenedPath {
  std::string path;
  mode_t was = 0;  // permission bits before
  mode_t now = 0;  // and after
};

struct TightenResult {
  std::vector<TightenedPath> tightened;
  std::vector<std::string> errors;  // "path: why", for the log
};

// Removes the group and other permission bits from `root` and every
// directory and regular file below it. Symbolic links below the root are
// not followed and nothing but directories and regular files is changed:
// every entry is opened without following links and changed through its
// descriptor, so a link swapped in while the walk runs changes nothing
// outside. A missing root is not an error.
TightenResult MakeTreeOwnerOnly(const std::string& root);

// The same for one regular file, if it exists (a data file configured
// outside the state directory; its directory may be shared).
TightenResult MakeFileOwnerOnly(const std::string& path);

}  // namespace kspan
