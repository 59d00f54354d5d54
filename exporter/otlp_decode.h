// OTLP trace requests received from instrumented applications -> span model
// (the receiving side of otlp_transform / otlp_wire), and the OTLP responses
// a receiver answers with.
//
// Decoded spans keep every field (see span.h) and are app spans, so that
// re-encoding them with kspan's exporters gives back the spans as received.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "exporter/otlp_transform.h"
#include "exporter/span.h"

namespace kspan {

// The two OTLP/HTTP payload encodings (gRPC is always protobuf).
enum class OtlpEncoding { kProtobuf, kJson };

struct DecodedSpans {
  // Spans with valid ids, in request order, source SpanSource::kApp.
  std::vector<Span> spans;
  // Spans refused for invalid ids (trace_id not 16 bytes or all zero,
  // span_id not 8 bytes or all zero, parent_span_id neither empty nor 8
  // bytes, a link's ids likewise): reported in partial_success.
  std::int64_t invalid_spans = 0;
  std::string invalid_message;  // why the first one was refused
};

// Takes what is valid from an already parsed request (the gRPC server).
DecodedSpans SpansFromRequest(const otlp::ExportTraceServiceRequest& request);

// Parses a request body (already decompressed). InvalidArgument when it is
// not a well-formed ExportTraceServiceRequest in that encoding.
absl::StatusOr<DecodedSpans> DecodeExportRequest(std::string_view body, OtlpEncoding encoding);

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
