// A process's environment (/proc/<pid>/environ), which any process on the
// host writes as it likes: kspan reads OTEL_SERVICE_NAME and the
// service.name of OTEL_RESOURCE_ATTRIBUTES (the W3C baggage-style list the
// SDKs read) from it to name the process's kernel spans. Seeds: environ
// files of real processes started with those variables.
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/fuzz_common.h"
#include "userspace/process_resources.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kspan::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string name = kspan::ServiceNameFromEnviron(kspan::fuzz::AsText(data, size));
  FUZZ_CHECK(name.size() <= 256);
  return 0;
}
