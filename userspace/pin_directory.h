// The bpffs directory where kspan pins the maps that bpftool users inspect
// (bpf.pin_path, /sys/fs/bpf/kspan by default). Exists while the agent runs;
// removed on clean exit; the pins a crashed run left are removed at start.
//
// The path is a directory of kspan's own inside a bpffs mount, checked
// before anything is removed: its parent must be on bpffs (a path on any
// other file system, where "stale pins" would be a user's files, is
// refused), it must not be a mount itself (/sys/fs/bpf holds other tools'
// pins), and everything in it must be one of the maps kspan pins
// (KspanPinnedMaps()). Only those are ever removed; a directory that holds
// anything else is not kspan's and is refused.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kspan {

// The maps bpf/ declares with LIBBPF_PIN_BY_NAME: every name kspan pins.
// A map pinned by a new program family is added here (a unit test compares
// this list with the skeletons).
std::span<const std::string_view> KspanPinnedMaps();

class PinDirectory {
 public:
  // Checks the path (see above), takes an exclusive lock (so a second agent
  // cannot clean the pins of a running one), removes stale pins, creates
  // the directory. Errors name the bpf.pin_path key.
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

// Removes kspan's pins from a pin directory, and the directory itself when
// nothing else is left in it. Returns the number of pins removed.
int RemovePinDirectory(const std::string& path);

}  // namespace kspan
