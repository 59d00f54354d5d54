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
  struct ResourceGroup {
    const Resource* resource;
    std::size_t body_bytes;  // ResourceSpans message body
  };
  struct ScopeGroup {
    std::uint32_t resource_group;
    const InstrumentationScope* scope;
    std::uint32_t span_count;
    std::uint32_t first;      // first position in order_
    std::size_t body_bytes;   // ScopeSpans message body
  };

  std::span<const Span> spans_;
  std::vector<ResourceGroup> resources_;
  std::vector<ScopeGroup> scopes_;
  std::vector<std::uint32_t> scope_order_;   // scope groups, by resource group
  std::vector<std::uint32_t> span_group_;    // scope group of each span
  std::vector<std::uint32_t> order_;         // span indices, by scope_order_
  std::vector<std::uint32_t> cursor_;        // scratch for ordering
  std::vector<std::uint32_t> span_bytes_;    // Span message body of each span
  std::size_t total_bytes_ = 0;
};

// The whole request as a string (tests, and callers that want a copy).
std::string EncodeExportRequest(std::span<const Span> spans);

}  // namespace kspan
