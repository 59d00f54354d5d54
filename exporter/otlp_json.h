// The OTLP/JSON encoding (OTLP specification, "JSON Protobuf Encoding"):
// the proto3 JSON mapping with lowerCamelCase keys, 64-bit integers as
// decimal strings, enums as integers only, and trace/span ids as hex
// strings instead of base64.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace kspan {

// One JSON document on one line (no newline at the end), e.g. an
// ExportTraceServiceRequest for the file store.
std::string ToOtlpJson(const google::protobuf::Message& message);

// Parses OTLP/JSON (hex ids, integer or named enums, unknown fields ignored
// as the specification requires) into `message`.
absl::Status FromOtlpJson(std::string_view json, google::protobuf::Message& message);

// The same for untrusted input: InvalidArgument once the parsed JSON
// document would take more than about `max_bytes` of memory. JSON text of
// "{}," is three bytes and one object in memory (~60 bytes), so the document
// of a request is bounded while it is parsed, not after.
absl::Status FromOtlpJson(std::string_view json, google::protobuf::Message& message,
                          std::size_t max_bytes);

}  // namespace kspan
