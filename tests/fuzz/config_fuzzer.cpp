// The configuration reader: YAML text as `kspan validate` and `kspan run -c`
// read it (yaml-cpp, then every key checked), with no environment and no
// flags. Seeds: the reference file of docs/configuration.md and the configs
// of the tests.
#include <cstddef>
#include <cstdint>
#include <string>

#include "tests/fuzz/fuzz_common.h"
#include "userspace/config.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kspan::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kspan;
  const std::string yaml(fuzz::AsText(data, size));
  auto config = ParseConfig(yaml, "fuzz.yaml", FlagOverrides{}, [](const char*) -> const char* { return nullptr; });
  if (config.ok()) {
    FUZZ_CHECK(!config->exporter.destinations.empty());
  } else {
    // The message names the file (and the key).
    FUZZ_CHECK(config.status().message().find("fuzz.yaml") != std::string_view::npos);
  }
  return 0;
}
