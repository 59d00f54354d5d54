// Span model -> OTLP wire messages (the "transform" of opentelemetry-cpp's
// exporters/otlp split). Spans are grouped by resource, then by scope, by
// pointer identity: the capture side shares one Resource per process.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "exporter/span.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb.h"

namespace kspan {

namespace otlp {
using ExportTraceServiceRequest = opentelemetry::proto::collector::trace::v1::ExportTraceServiceRequest;
using ExportTraceServiceResponse = opentelemetry::proto::collector::trace::v1::ExportTraceServiceResponse;
}  // namespace otlp

// Appends the spans to `request` (which may live on an arena). Resource and
// scope groups keep the order in which they first appear.
void AppendToExportRequest(std::span<const Span> spans, otlp::ExportTraceServiceRequest& request);

otlp::ExportTraceServiceRequest ToExportRequest(std::span<const Span> spans);

// The reverse, for batches read back from the disk queue and the dead-letter
// store: one Resource per ResourceSpans; spans under kspan's own scope are
// kernel spans, all others app spans.
std::vector<Span> FromExportRequest(const otlp::ExportTraceServiceRequest& request);

// Every field kept (see span.h); with `source`, every span gets that source
// and kspan's own scope is not recognized (received app spans).
// ResourceSpans without a resource give spans with a null resource, and
// likewise for scopes, so the spans encode back to the same message.
std::vector<Span> FromExportRequest(const otlp::ExportTraceServiceRequest& request,
                                    std::optional<SpanSource> source);

// proto3 strings must be valid UTF-8 and receivers (the Go collector, for
// one) reject a whole request otherwise, while captured names and payload
// excerpts can hold any bytes: invalid sequences become U+FFFD.
std::string SanitizeUtf8(std::string_view in);

// True when every byte of `s` is ASCII, eight at a time: the encoders' fast
// path past IsValidUtf8 and SanitizeUtf8 for the usual all-ASCII string
// (inline: it runs for every string the encoders write).
inline bool IsAscii(std::string_view s) {
  std::size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    if ((w & 0x8080808080808080ull) != 0) return false;
  }
  for (; i < s.size(); ++i) {
    if (static_cast<unsigned char>(s[i]) & 0x80) return false;
  }
  return true;
}

// True when `s` is valid UTF-8 (what proto3 requires of string fields).
bool IsValidUtf8(std::string_view s);

// The length of the longest prefix of `s` that is at most `max` bytes and
// does not end inside a character (where to cut a value to a length limit).
std::size_t Utf8PrefixLength(std::string_view s, std::size_t max);

}  // namespace kspan
