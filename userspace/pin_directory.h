// The bpffs directory where kspan pins the maps that bpftool users inspect
// (/sys/fs/bpf/kspan by default). Exists while the agent runs; removed on
// clean exit; a directory left behind by a crashed run is cleaned at start.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace kspan {

class PinDirectory {
 public:
  // Takes an exclusive lock (so a second agent cannot clean the pins of a
  // running one), removes stale pins, creates the directory.
  static absl::StatusOr<PinDirectory> Create(std::string path);

  PinDirectory(PinDirectory&& other) noexcept;
  PinDirectory& operator=(PinDirectory&& other) noexcept;
  PinDirectory(const PinDirectory&) = delete;
  PinDirectory& operator=(const PinDirectory&) = delete;
  ~PinDirectory();

  const std::string& path() const { return path_; }
  std::string PathOf(const std::string& name) const { return path_ + "/" + name; }

 private:
  PinDirectory(std::string path, int lock_fd) : path_(std::move(path)), lock_fd_(lock_fd) {}
  void Remove() noexcept;

  std::string path_;
  int lock_fd_ = -1;
};

// Removes every entry of a pin directory and the directory itself.
// Returns the number of stale pins removed.
int RemovePinDirectory(const std::string& path);

}  // namespace kspan
