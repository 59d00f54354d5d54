// Compressed bodies: gzip (zlib) and zstd as the OTLP/HTTP and Zipkin
// senders inflate their backends' answers. The first byte picks the codec
// and whether the rest is inflated (untrusted bytes) or compressed and
// inflated again (which must give the same bytes back).
// Seeds: SDK requests gzipped by the SDK itself, and zstd frames of them.
#include <cstddef>
#include <cstdint>
#include <string>

#include "exporter/compression.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kspan::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kspan;
  if (size == 0) return 0;
  const bool zstd = (data[0] & 1) != 0;
  const bool round_trip = (data[0] & 2) != 0;
  const std::string_view in = fuzz::AsText(data + 1, size - 1);
  if (round_trip) {
    auto packed = zstd ? ZstdCompress(in) : GzipCompress(in);
    FUZZ_CHECK(packed.ok());
    auto unpacked = zstd ? ZstdDecompress(*packed) : GzipDecompress(*packed);
    FUZZ_CHECK(unpacked.ok() && *unpacked == in);
    return 0;
  }
  auto out = zstd ? ZstdDecompress(in) : GzipDecompress(in);
  if (out.ok()) {
    // What inflated must compress and inflate back to itself.
    auto again = zstd ? ZstdCompress(*out) : GzipCompress(*out);
    FUZZ_CHECK(again.ok());
    auto back = zstd ? ZstdDecompress(*again) : GzipDecompress(*again);
    FUZZ_CHECK(back.ok() && *back == *out);
  }
  return 0;
}
