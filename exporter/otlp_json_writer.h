// Span model -> OTLP/JSON ExportTraceServiceRequest text, written straight
// into one reused std::string with no protobuf message or JSON DOM in
// between (the file store's and the OTLP/HTTP json sender's hot path; the
// JSON counterpart of otlp_wire.h).
//
// The text parses (FromOtlpJson) to exactly the message otlp_transform's
// ToExportRequest() builds, and is what ToOtlpJson(ToExportRequest(spans))
// writes: the same grouping (by resource pointer, then scope pointer, in
// order of first appearance), fields in field-number order with the same
// default values left out, lowerCamelCase keys, lower-case hex ids, enums as
// integers, 64-bit integers as decimal strings, bytes in base64, non-finite
// doubles as "NaN"/"Infinity"/"-Infinity", and invalid UTF-8 replaced by
// U+FFFD as SanitizeUtf8 does. Doubles are written as nlohmann writes them
// except in the rare cases where its Grisu2 digits are not the shortest;
// every double reads back to the same value.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "exporter/span.h"
#include "exporter/span_grouping.h"

namespace kspan {

class OtlpJsonEncoder {
 public:
  // Replaces `out`'s content with the request for `spans`: one JSON document
  // on one line, no newline at the end. `out` keeps its capacity, so a
  // caller that reuses one string (and one encoder, for the grouping
  // buffers) allocates nothing once both have grown to the batch size.
  void Encode(std::span<const Span> spans, std::string& out);

 private:
  SpanGrouping grouping_;
  std::string scratch_;                     // base64 and sanitized strings
};

// The whole request as a new string (tests, and callers that want a copy).
std::string EncodeOtlpJson(std::span<const Span> spans);

}  // namespace kspan
