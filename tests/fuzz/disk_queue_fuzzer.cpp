// Batches read back from disk: a disk-queue row's payload or a dead
// letter's (both OTLP protobuf, written by kspan, but only as trusted as the
// disk) through DecodeStoredBatch, as the destination queue does after a
// restart and `kspan dlq replay` does. A stored batch is sent again, so it
// must encode back to itself: decode -> encode is a fixed point after one
// round, and the spans go through every encoder a destination may use.
// Seeds: batches kspan wrote (corpus/README.md).
#include <cstddef>
#include <cstdint>
#include <string>

#include "exporter/disk_queue.h"
#include "exporter/otlp_transform.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kspan::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kspan;
  auto spans = DecodeStoredBatch(fuzz::AsText(data, size));
  if (!spans) return 0;
  const std::string once = ToExportRequest(*spans).SerializeAsString();
  auto again = DecodeStoredBatch(once);
  FUZZ_CHECK(again.has_value());
  FUZZ_CHECK(again->size() == spans->size());
  FUZZ_CHECK(ToExportRequest(*again).SerializeAsString() == once);
  fuzz::CheckEncoders(*spans);
  return 0;
}
