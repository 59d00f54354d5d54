// OTLP trace requests received from instrumented applications -> span model
// (the receiving side of otlp_transform / otlp_wire), and the OTLP responses
// a receiver answers with.
//
// Decoded spans keep every field (see span.h) and are app spans, so that
// re-encoding them with kspan's exporters gives back the spans as received,
// within the receiver's limits (SpanLimits in export_config.h).
//
// The protobuf decoder reads the wire format straight into the span model,
// without protobuf messages in between, and applies the limits as it reads:
// what is over a limit is skipped, never built. A request is refused when
// its spans would take more than MaxDecodedBytes() of memory, so that no
// request costs more than a fixed multiple of its size (a 4 MiB request of
// two million empty attributes cost 60 times its size through protobuf
// messages).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "exporter/export_config.h"
#include "exporter/otlp_transform.h"
#include "exporter/span.h"

namespace google::protobuf::io {
class ZeroCopyInputStream;
}

namespace kspan {

// The two OTLP/HTTP payload encodings (gRPC is always protobuf).
enum class OtlpEncoding { kProtobuf, kJson };

// What the limits took from one request: the spans' dropped_*_count fields
// say it per span; these totals are for metrics.
struct LimitCounts {
  // Attributes dropped: over a count limit (span, event, link, resource,
  // scope), or whose value was too deeply nested or held too many entries.
  std::uint64_t attributes = 0;
  std::uint64_t events = 0;
  std::uint64_t links = 0;
  std::uint64_t truncated_values = 0;  // string or bytes values cut to the length limit
};

struct DecodedSpans {
  // Spans with valid ids, in request order, source SpanSource::kApp.
  std::vector<Span> spans;
  // Spans refused for invalid ids (trace_id not 16 bytes or all zero,
  // span_id not 8 bytes or all zero, parent_span_id neither empty nor 8
  // bytes, a link's ids likewise): reported in partial_success.
  std::int64_t invalid_spans = 0;
  std::string invalid_message;  // why the first one was refused
  LimitCounts limited;
  // ApproximateBatchBytes of what was built (spans, resources, scopes;
  // refused spans included): at most MaxDecodedBytes(request size).
  std::size_t decoded_bytes = 0;
};

// The memory a request of `request_bytes` may decode to: 16 times its size,
// and 1 MiB for any request. Real spans take 3 to 8 times their protobuf
// size in kspan's span model (a span of ids, name and times about 4, short
// attributes about 8); only pathological requests (hundreds of thousands of
// empty attributes) come near the bound, and they are refused.
inline constexpr std::size_t kDecodeAmplification = 16;
inline constexpr std::size_t kDecodeFloorBytes = 1u << 20;
std::size_t MaxDecodedBytes(std::size_t request_bytes) noexcept;

// Parses a request body (already decompressed). InvalidArgument when it is
// not a well-formed ExportTraceServiceRequest in that encoding, or when it
// decodes to more than MaxDecodedBytes(body.size()).
absl::StatusOr<DecodedSpans> DecodeExportRequest(std::string_view body, OtlpEncoding encoding,
                                                 const SpanLimits& limits = {});

// The same for a protobuf request of `size` bytes read from a stream (the
// gRPC receiver's request buffer, without a copy).
absl::StatusOr<DecodedSpans> DecodeExportRequest(google::protobuf::io::ZeroCopyInputStream& in,
                                                 std::size_t size, const SpanLimits& limits = {});

// An ExportTraceServiceResponse: empty on full success, with
// partial_success when `rejected_spans` > 0 or `message` is not empty.
std::string EncodeExportResponse(std::int64_t rejected_spans, std::string_view message,
                                 OtlpEncoding encoding);

// A google.rpc.Status (the body of every OTLP/HTTP 4xx/5xx answer).
std::string EncodeRpcStatus(int code, std::string_view message, OtlpEncoding encoding);

// grpc-status-details-bin for an UNAVAILABLE answer: a google.rpc.Status
// whose details hold a google.rpc.RetryInfo with `retry_delay_ms`.
std::string EncodeRetryInfoStatus(int code, std::string_view message, std::int64_t retry_delay_ms);

}  // namespace kspan
