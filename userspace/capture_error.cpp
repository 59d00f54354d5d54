#include "userspace/capture_error.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kspan {

absl::Status CaptureError(const std::string& family, const std::string& what, int err) {
  if (err < 0) err = -err;
  std::string msg = absl::StrCat(family, " capture: ", what, ": ", std::strerror(err));
  if (err == EPERM || err == EACCES) {
    absl::StrAppend(&msg,
                    " (needs root, or CAP_BPF and CAP_PERFMON; a security policy or "
                    "lockdown can also refuse a program type)");
  }
  return absl::InternalError(msg);
}

}  // namespace kspan
