// Compressed bodies: gzip (zlib) and zstd as the OTLP/HTTP and Zipkin
// senders inflate their backends' answers, and gzip as the receiver inflates
// a request (OTLP/HTTP Content-Encoding: gzip, gRPC grpc-encoding: gzip):
// with GzipInflater, piece by piece as the body or the message's slices
// arrive, within a bound on what it grows to.
//
// The first byte picks the mode:
//   bit 0  zstd (else gzip)
//   bit 1  compress the rest and inflate it again (must give it back)
//   bit 2  gzip fed to a GzipInflater in pieces of 1 + (byte >> 3) * 64
//          bytes, bounded to kReceiverBound: must never hold more, and must
//          agree with GzipDecompress of the whole input
// otherwise the rest is inflated whole (untrusted bytes).
// Seeds: SDK requests gzipped by the SDK itself, and zstd frames of them.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "exporter/compression.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kspan::fuzz::QuietLogs();
  return 0;
}

namespace {

// Small, so that the inputs libFuzzer makes (4 KiB by default) reach it: a
// few hundred bytes of deflate inflate past it.
constexpr std::size_t kReceiverBound = 64 * 1024;

void InflateInPieces(std::string_view in, std::size_t piece) {
  using namespace kspan;
  GzipInflater inflater;
  std::string out;
  absl::Status s;
  // As the receiver's MayHold: refuse the piece that would pass the bound.
  const auto grow = [&](std::size_t more) {
    FUZZ_CHECK(more <= 16 * 1024);  // GzipInflater's promise: pieces of at most 16 KiB
    if (more > kReceiverBound - out.size()) return absl::ResourceExhaustedError("too large");
    return absl::OkStatus();
  };
  for (std::size_t at = 0; at < in.size() && s.ok(); at += piece) {
    s = inflater.Feed(in.substr(at, piece), &out, grow);
    FUZZ_CHECK(out.size() <= kReceiverBound);
  }
  auto whole = GzipDecompress(in, kReceiverBound);
  if (s.ok() && inflater.finished()) {
    FUZZ_CHECK(whole.ok() && *whole == out);
  } else {
    // Refused or cut short in pieces: so is the whole (which of "too large"
    // and "invalid" comes first may differ: the inflater finds invalid data
    // within a 16 KiB piece of output before it asks to keep that piece).
    FUZZ_CHECK(!whole.ok());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kspan;
  if (size == 0) return 0;
  const bool zstd = (data[0] & 1) != 0;
  const bool round_trip = (data[0] & 2) != 0;
  const bool pieces = (data[0] & 4) != 0;
  const std::string_view in = fuzz::AsText(data + 1, size - 1);
  if (pieces) {
    InflateInPieces(in, 1 + static_cast<std::size_t>(data[0] >> 3) * 64);
    return 0;
  }
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
