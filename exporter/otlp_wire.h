// Span model -> OTLP ExportTraceServiceRequest bytes, with no protobuf
// message objects in between (the gRPC sender's hot path).
//
// The bytes are what otlp_transform's ToExportRequest() would serialize to:
// the same grouping (by resource pointer, then scope pointer, in order of
// first appearance), the same fields and the same UTF-8 sanitizing. Field
// numbers come from the generated headers; varints, tags and fixed-width
// values are written with protobuf's io::CodedOutputStream. Two passes:
// Plan() computes every nested message's length, Write() emits the bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "exporter/span.h"
#include "exporter/span_grouping.h"

namespace kspan {

class ExportRequestEncoder {
 public:
  // Groups `spans` and computes the request's exact size in bytes. The spans
  // must stay alive and unchanged until Write() returns. Reuses its buffers
  // from one call to the next, so keep one encoder per sender.
  std::size_t Plan(std::span<const Span> spans);

  // Writes the planned request: exactly Plan()'s size bytes at `out`.
  void Write(std::uint8_t* out) const;

 private:
  std::span<const Span> spans_;
  SpanGrouping grouping_;
  std::vector<std::uint32_t> span_bytes_;    // Span message body of each span
  std::vector<std::size_t> scope_bytes_;     // ScopeSpans body of each scope group
  std::vector<std::size_t> resource_bytes_;  // ResourceSpans body of each resource group
  std::size_t total_bytes_ = 0;
};

// The whole request as a string (tests, and callers that want a copy).
std::string EncodeExportRequest(std::span<const Span> spans);

}  // namespace kspan
