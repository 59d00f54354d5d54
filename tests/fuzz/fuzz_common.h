// Shared by the libFuzzer targets in this directory (one per parser, built
// with KSPAN_FUZZ=ON; see tests/fuzz/CMakeLists.txt).
//
// A target fails on what the sanitizers report (a crash, an out-of-bounds
// access, undefined behaviour, a leak) and on a broken invariant: FUZZ_CHECK
// aborts, so libFuzzer saves the input as a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "exporter/export_config.h"
#include "exporter/otlp_decode.h"
#include "exporter/span.h"

#define FUZZ_CHECK(cond)                                                              \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

namespace kspan::fuzz {

inline std::string_view AsText(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Turns kspan's and protobuf's logging off: the targets exercise error paths
// millions of times, and what matters is the sanitizers' report.
void QuietLogs();

// The spans go on the way received spans go: through every encoder a
// destination may use. Checks that the protobuf wire encoder writes exactly
// what the protobuf message of the same spans serializes to, and that the
// OTLP/JSON text reads back to that message (otlp_wire.h and
// otlp_json_writer.h promise both).
void CheckEncoders(std::span<const Span> spans);

// Small span limits, so that a fuzzer's short inputs reach every limit of
// the decoder (each count, the value length, the nesting depth).
SpanLimits TightLimits();

// What the decoder promises of a request of `request_bytes` decoded within
// `limits`: no span, event, link, resource or scope holds more attributes,
// events or links than the limits allow, no string or bytes value is longer
// and no value nests deeper, and what was built stays within
// MaxDecodedBytes.
void CheckWithinLimits(const DecodedSpans& decoded, const SpanLimits& limits, std::size_t request_bytes);

// The protobuf decoder on one request three ways, as the receiver calls it:
// from bytes (OTLP/HTTP), from a stream of `block`-byte pieces (the gRPC
// request's slices) and within TightLimits(). The stream gives exactly what
// the bytes give; the tight limits keep every span the defaults keep.
// Returns the decode from bytes with the default limits.
absl::StatusOr<DecodedSpans> DecodeProtobufEveryWay(std::string_view body, int block);

}  // namespace kspan::fuzz
