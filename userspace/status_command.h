// `kspan status`: capture and export health of the running agent, from its
// /status endpoint, or, when that is unreachable, from the maps it pinned.
#pragma once

#include <cstdio>
#include <string>

namespace kspan {

struct StatusOptions {
  std::string admin = "127.0.0.1:9464";
  std::string pin_path = "/sys/fs/bpf/kspan";
  bool json = false;
  std::FILE* out = nullptr;  // stdout when null
};

// Prints to `out`; returns the process exit status (0 healthy, 1 no agent).
int RunStatus(const StatusOptions& options);

}  // namespace kspan
