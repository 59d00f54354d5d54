// The span model shared by every stage after capture.
//
// It lives with the exporter (not with the capture code) so the whole export
// path builds and is tested with no kernel at all: userspace/ produces these,
// exporter/ consumes them, and nothing here knows about BPF.
//
// Enum values equal the OTLP wire values so the transform is a cast.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace kspan {

using TraceId = std::array<std::uint8_t, 16>;
using SpanId = std::array<std::uint8_t, 8>;

// W3C trace context: an all-zero trace or span id is invalid.
bool IsValid(const TraceId& id) noexcept;
bool IsValid(const SpanId& id) noexcept;

// Lower-case hex, as W3C traceparent and OTLP/JSON write ids.
std::string ToHex(const TraceId& id);
std::string ToHex(const SpanId& id);

enum class SpanKind : int {
  kUnspecified = 0,
  kInternal = 1,
  kServer = 2,
  kClient = 3,
  kProducer = 4,
  kConsumer = 5,
};

enum class StatusCode : int {
  kUnset = 0,
  kOk = 1,
  kError = 2,
};

// Where a span came from. Kernel spans are the default; spans received from
// instrumented applications are app spans. When a queue is full, app spans
// and error spans are kept before low-value kernel spans.
enum class SpanSource : std::uint8_t {
  kKernel = 0,
  kApp = 1,
};

// OTLP AnyValue. Kernel spans use the four scalar alternatives; app spans
// received over OTLP may also carry bytes, arrays and key-value lists
// (recursive) and empty values, and are exported exactly as received.
struct Attribute;
struct AttributeValue;

// AnyValue.bytes_value: raw bytes (a std::string would be a string_value).
struct BytesValue {
  std::string data;
  friend bool operator==(const BytesValue&, const BytesValue&) = default;
};
using ArrayValue = std::vector<AttributeValue>;
using KeyValueList = std::vector<Attribute>;
// AnyValue with no value set (OTLP: an empty value) is std::monostate.
using AttributeValueVariant = std::variant<std::string, bool, std::int64_t, double, BytesValue,
                                           ArrayValue, KeyValueList, std::monostate>;

// A std::variant (std::visit, std::get_if, std::holds_alternative work on it)
// made a class so it can hold arrays of itself. Converts from each
// alternative, so Attribute{"k", std::string(...)} and
// Attribute{"k", std::int64_t{...}} build as before.
struct AttributeValue : AttributeValueVariant {
  using AttributeValueVariant::AttributeValueVariant;
  AttributeValue() = default;

  const AttributeValueVariant& variant() const noexcept { return *this; }

  // Defined below Attribute: comparing the variant compares key-value lists,
  // which needs Attribute complete (clang instantiates it where it is
  // written, g++ later).
  friend bool operator==(const AttributeValue& a, const AttributeValue& b);
};

struct Attribute {
  std::string key;
  AttributeValue value;

  friend bool operator==(const Attribute&, const Attribute&) = default;
};

inline bool operator==(const AttributeValue& a, const AttributeValue& b) {
  return a.variant() == b.variant();
}

using Attributes = std::vector<Attribute>;

// A value as text for people and for text-only formats (console, Zipkin
// tags): strings as they are, numbers and booleans as JSON writes them, bytes
// in base64, arrays and key-value lists as JSON, an empty value as "".
std::string AttributeValueText(const AttributeValue& value);

// Approximate heap and inline bytes of attributes (recursive), for queue bounds.
std::size_t ApproximateBytes(const Attributes& attrs) noexcept;

// Returns the attribute's value, or nullptr when absent.
const AttributeValue* FindAttribute(const Attributes& attrs, std::string_view key) noexcept;

struct SpanEvent {
  std::string name;
  std::uint64_t time_unix_nano = 0;
  Attributes attributes;
  std::uint32_t dropped_attributes_count = 0;
};

// A link to another span (app spans received over OTLP may carry them).
struct SpanLink {
  TraceId trace_id{};
  SpanId span_id{};
  std::string trace_state;
  Attributes attributes;
  std::uint32_t flags = 0;  // as OTLP Span.Link.flags
  std::uint32_t dropped_attributes_count = 0;
};

// Immutable once built and shared by every span of one observed process, so
// the batcher can group spans by resource pointer.
struct Resource {
  Attributes attributes;
  std::uint32_t dropped_attributes_count = 0;
  // OTLP ResourceSpans.schema_url of the resource's spans.
  std::string schema_url;
};

struct InstrumentationScope {
  std::string name;
  std::string version;
  Attributes attributes;
  std::uint32_t dropped_attributes_count = 0;
  // OTLP ScopeSpans.schema_url of the scope's spans.
  std::string schema_url;
};

// The scope kspan's own kernel spans are reported under.
std::shared_ptr<const InstrumentationScope> KernelScope();

struct Span {
  TraceId trace_id{};
  SpanId span_id{};
  SpanId parent_span_id{};  // all zero: a root span
  std::string trace_state;
  // OTLP Span.flags: W3C trace flags in bits 0-7, parent is-remote in bits
  // 8-9. Copied as received for app spans; 0 is valid for kernel spans.
  std::uint32_t flags = 0;

  std::string name;
  SpanKind kind = SpanKind::kInternal;
  std::uint64_t start_unix_nano = 0;
  std::uint64_t end_unix_nano = 0;

  Attributes attributes;
  std::vector<SpanEvent> events;
  std::vector<SpanLink> links;
  // As received for app spans (what the sending SDK had to drop).
  std::uint32_t dropped_attributes_count = 0;
  std::uint32_t dropped_events_count = 0;
  std::uint32_t dropped_links_count = 0;

  StatusCode status_code = StatusCode::kUnset;
  std::string status_message;

  std::shared_ptr<const Resource> resource;
  std::shared_ptr<const InstrumentationScope> scope;

  SpanSource source = SpanSource::kKernel;

  // Kept before the others when a queue must drop: app spans and errors.
  bool HighPriority() const noexcept {
    return source == SpanSource::kApp || status_code == StatusCode::kError;
  }

  // Approximate in-memory size of the span itself (its strings,
  // attributes, events, links), used to bound queues by bytes. Without its
  // resource and scope: those are shared by many spans and counted once per
  // batch or queue that holds them (ApproximateBatchBytes).
  std::size_t ApproximateBytes() const noexcept;
};

// Approximate in-memory size of a resource or a scope (attributes, strings,
// the shared_ptr's control block).
std::size_t ApproximateBytes(const Resource& resource) noexcept;
std::size_t ApproximateBytes(const InstrumentationScope& scope) noexcept;

// What a batch of spans holds in memory: every span's ApproximateBytes()
// plus each distinct resource and scope object once, however many of the
// spans share it (kernel spans share one per process; an OTLP request one
// per ResourceSpans). A resource that is as large as the request (an app
// can send a 3 MiB attribute) is counted, as it must be for byte bounds.
std::size_t ApproximateBatchBytes(std::span<const Span> spans);

}  // namespace kspan
