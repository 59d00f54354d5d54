// Small, bounded reads of /proc and of the node's own files: every file
// kspan reads about another process is written by the kernel or by a
// container engine, and is read with a size bound so a huge or endless file
// (a process's environ, a pipe planted where a file was expected) costs a
// bounded amount of memory and time.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

namespace kspan {

// The first `max_bytes` of the file at `path`, or nullopt when it cannot be
// opened or is not a regular file or a /proc (or /sys) pseudo-file.
// `truncated`, when given, says whether the file had more.
std::optional<std::string> ReadBoundedFile(const std::string& path, std::size_t max_bytes,
                                           bool* truncated = nullptr);

// readlink(2) of `path`, empty on error. " (deleted)" (a replaced binary)
// is cut off.
std::string ReadLinkPath(const std::string& path);

}  // namespace kspan
