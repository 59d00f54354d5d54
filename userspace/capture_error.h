// The error a capture family's loader returns when a stage (open,
// configure, load, attach) fails: "<family> capture: <what>: <strerror>",
// and, where the kernel refused for want of privilege, what it takes.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace kspan {

absl::Status CaptureError(const std::string& family, const std::string& what, int err);

}  // namespace kspan
