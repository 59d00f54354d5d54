// The NSpid line of /proc/<pid>/status, which names a process in each pid
// namespace it is in; kspan translates the pids senders claim with it. The
// file also holds the process's own name (Name:, any bytes the process
// chose), so the text around the line is untrusted. Seeds: real status
// files of a host process and of processes in containers.
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/fuzz_common.h"
#include "userspace/pid_namespace.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kspan::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto pids = kspan::ParseNsPid(kspan::fuzz::AsText(data, size));
  for (auto pid : pids) FUZZ_CHECK(pid != 0);
  return 0;
}
