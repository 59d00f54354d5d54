#include "exporter/otlp_wire.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include "exporter/otlp_transform.h"
#include "google/protobuf/io/coded_stream.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb.h"
#include "opentelemetry/proto/common/v1/common.pb.h"
#include "opentelemetry/proto/resource/v1/resource.pb.h"
#include "opentelemetry/proto/trace/v1/trace.pb.h"

namespace kspan {
namespace {

using google::protobuf::io::CodedOutputStream;
namespace collector = opentelemetry::proto::collector::trace::v1;
namespace common = opentelemetry::proto::common::v1;
namespace resource_pb = opentelemetry::proto::resource::v1;
namespace trace = opentelemetry::proto::trace::v1;

// The wire types of the protobuf encoding (protobuf.dev/programming-guides/encoding).
enum WireType : std::uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

constexpr std::uint32_t Tag(int field, WireType type) {
  return (static_cast<std::uint32_t>(field) << 3) | type;
}

std::size_t TagSize(int field) { return CodedOutputStream::VarintSize32(Tag(field, kVarint)); }

// Size of a length-delimited field whose body is `body` bytes.
std::size_t LengthField(int field, std::size_t body) {
  return TagSize(field) + CodedOutputStream::VarintSize32(static_cast<std::uint32_t>(body)) + body;
}

std::uint8_t* WriteLengthHeader(int field, std::size_t body, std::uint8_t* p) {
  p = CodedOutputStream::WriteTagToArray(Tag(field, kLengthDelimited), p);
  return CodedOutputStream::WriteVarint32ToArray(static_cast<std::uint32_t>(body), p);
}

// A string as it goes on the wire: as is when ASCII (the common case, no
// copy), otherwise through SanitizeUtf8, which returns valid UTF-8
// unchanged and replaces invalid sequences exactly as the transform does.
// Not copyable: `view` may point into `fixed`.
class WireString {
 public:
  explicit WireString(std::string_view s) : view_(s) {
    if (!IsAscii(s)) {
      fixed_ = SanitizeUtf8(s);
      view_ = fixed_;
    }
  }
  WireString(const WireString&) = delete;
  WireString& operator=(const WireString&) = delete;

  std::size_t size() const { return view_.size(); }
  bool empty() const { return view_.empty(); }

  // A string field; proto3 leaves empty strings out unless `always` (oneof).
  std::size_t FieldSize(int field, bool always = false) const {
    return (empty() && !always) ? 0 : LengthField(field, size());
  }
  std::uint8_t* WriteField(int field, std::uint8_t* p, bool always = false) const {
    if (empty() && !always) return p;
    p = WriteLengthHeader(field, size(), p);
    return CodedOutputStream::WriteRawToArray(view_.data(), static_cast<int>(size()), p);
  }

 private:
  std::string_view view_;
  std::string fixed_;
};

template <std::size_t N>
std::size_t IdFieldSize(int field) {
  return LengthField(field, N);
}

template <std::size_t N>
std::uint8_t* WriteId(int field, const std::array<std::uint8_t, N>& id, std::uint8_t* p) {
  p = WriteLengthHeader(field, N, p);
  return CodedOutputStream::WriteRawToArray(id.data(), static_cast<int>(N), p);
}

std::size_t Fixed64FieldSize(int field, std::uint64_t v) { return v == 0 ? 0 : TagSize(field) + 8; }
std::uint8_t* WriteFixed64Field(int field, std::uint64_t v, std::uint8_t* p) {
  if (v == 0) return p;
  p = CodedOutputStream::WriteTagToArray(Tag(field, kFixed64), p);
  return CodedOutputStream::WriteLittleEndian64ToArray(v, p);
}

std::size_t Fixed32FieldSize(int field, std::uint32_t v) { return v == 0 ? 0 : TagSize(field) + 4; }
std::uint8_t* WriteFixed32Field(int field, std::uint32_t v, std::uint8_t* p) {
  if (v == 0) return p;
  p = CodedOutputStream::WriteTagToArray(Tag(field, kFixed32), p);
  return CodedOutputStream::WriteLittleEndian32ToArray(v, p);
}

// Enums are int32 varints (negative values sign-extended to ten bytes).
std::size_t EnumFieldSize(int field, int v) {
  return v == 0 ? 0 : TagSize(field) + CodedOutputStream::VarintSize32SignExtended(v);
}
std::uint8_t* WriteEnumField(int field, int v, std::uint8_t* p) {
  if (v == 0) return p;
  p = CodedOutputStream::WriteTagToArray(Tag(field, kVarint), p);
  return CodedOutputStream::WriteVarint32SignExtendedToArray(v, p);
}

// --- AnyValue / KeyValue -------------------------------------------------

using AnyValuePb = common::AnyValue;
using KeyValuePb = common::KeyValue;

std::uint64_t DoubleBits(double d) {
  std::uint64_t bits;
  std::memcpy(&bits, &d, sizeof(bits));
  return bits;
}

std::size_t Varint32FieldSize(int field, std::uint32_t v) {
  return v == 0 ? 0 : TagSize(field) + CodedOutputStream::VarintSize32(v);
}
std::uint8_t* WriteVarint32Field(int field, std::uint32_t v, std::uint8_t* p) {
  if (v == 0) return p;
  p = CodedOutputStream::WriteTagToArray(Tag(field, kVarint), p);
  return CodedOutputStream::WriteVarint32ToArray(v, p);
}

using ArrayValuePb = common::ArrayValue;
using KeyValueListPb = common::KeyValueList;

std::size_t KeyValueSize(const Attribute& a);
std::uint8_t* WriteKeyValue(int field, const Attribute& a, std::uint8_t* p);

// The AnyValue message body. Every set oneof member goes out, even when
// empty or zero; std::monostate is an AnyValue with nothing set.
std::size_t AnyValueSize(const AttributeValue& value) {
  if (const auto* s = std::get_if<std::string>(&value)) {
    return WireString(*s).FieldSize(AnyValuePb::kStringValueFieldNumber, /*always=*/true);
  }
  if (std::holds_alternative<bool>(value)) return TagSize(AnyValuePb::kBoolValueFieldNumber) + 1;
  if (const auto* i = std::get_if<std::int64_t>(&value)) {
    return TagSize(AnyValuePb::kIntValueFieldNumber) +
           CodedOutputStream::VarintSize64(static_cast<std::uint64_t>(*i));
  }
  if (std::holds_alternative<double>(value)) return TagSize(AnyValuePb::kDoubleValueFieldNumber) + 8;
  if (const auto* b = std::get_if<BytesValue>(&value)) {
    return LengthField(AnyValuePb::kBytesValueFieldNumber, b->data.size());
  }
  if (const auto* array = std::get_if<ArrayValue>(&value)) {
    std::size_t body = 0;
    for (const auto& e : *array) body += LengthField(ArrayValuePb::kValuesFieldNumber, AnyValueSize(e));
    return LengthField(AnyValuePb::kArrayValueFieldNumber, body);
  }
  if (const auto* kvlist = std::get_if<KeyValueList>(&value)) {
    std::size_t body = 0;
    for (const auto& kv : *kvlist) body += LengthField(KeyValueListPb::kValuesFieldNumber, KeyValueSize(kv));
    return LengthField(AnyValuePb::kKvlistValueFieldNumber, body);
  }
  return 0;  // std::monostate
}

// Writes the AnyValue as a length-delimited field `field`.
std::uint8_t* WriteAnyValue(int field, const AttributeValue& value, std::uint8_t* p) {
  p = WriteLengthHeader(field, AnyValueSize(value), p);
  if (const auto* s = std::get_if<std::string>(&value)) {
    return WireString(*s).WriteField(AnyValuePb::kStringValueFieldNumber, p, /*always=*/true);
  }
  if (const auto* b = std::get_if<bool>(&value)) {
    p = CodedOutputStream::WriteTagToArray(Tag(AnyValuePb::kBoolValueFieldNumber, kVarint), p);
    return CodedOutputStream::WriteVarint32ToArray(*b ? 1 : 0, p);
  }
  if (const auto* i = std::get_if<std::int64_t>(&value)) {
    p = CodedOutputStream::WriteTagToArray(Tag(AnyValuePb::kIntValueFieldNumber, kVarint), p);
    return CodedOutputStream::WriteVarint64ToArray(static_cast<std::uint64_t>(*i), p);
  }
  if (const auto* d = std::get_if<double>(&value)) {
    p = CodedOutputStream::WriteTagToArray(Tag(AnyValuePb::kDoubleValueFieldNumber, kFixed64), p);
    return CodedOutputStream::WriteLittleEndian64ToArray(DoubleBits(*d), p);
  }
  if (const auto* b = std::get_if<BytesValue>(&value)) {
    // Bytes go out as they are: no UTF-8 sanitizing.
    p = WriteLengthHeader(AnyValuePb::kBytesValueFieldNumber, b->data.size(), p);
    return CodedOutputStream::WriteRawToArray(b->data.data(), static_cast<int>(b->data.size()), p);
  }
  if (const auto* array = std::get_if<ArrayValue>(&value)) {
    std::size_t body = 0;
    for (const auto& e : *array) body += LengthField(ArrayValuePb::kValuesFieldNumber, AnyValueSize(e));
    p = WriteLengthHeader(AnyValuePb::kArrayValueFieldNumber, body, p);
    for (const auto& e : *array) p = WriteAnyValue(ArrayValuePb::kValuesFieldNumber, e, p);
    return p;
  }
  if (const auto* kvlist = std::get_if<KeyValueList>(&value)) {
    std::size_t body = 0;
    for (const auto& kv : *kvlist) body += LengthField(KeyValueListPb::kValuesFieldNumber, KeyValueSize(kv));
    p = WriteLengthHeader(AnyValuePb::kKvlistValueFieldNumber, body, p);
    for (const auto& kv : *kvlist) p = WriteKeyValue(KeyValueListPb::kValuesFieldNumber, kv, p);
    return p;
  }
  return p;  // std::monostate
}

// KeyValue body: key (left out when empty), then value (always present:
// the transform always sets it).
std::size_t KeyValueSize(const Attribute& a) {
  return WireString(a.key).FieldSize(KeyValuePb::kKeyFieldNumber) +
         LengthField(KeyValuePb::kValueFieldNumber, AnyValueSize(a.value));
}

std::uint8_t* WriteKeyValue(int field, const Attribute& a, std::uint8_t* p) {
  const WireString key(a.key);
  const std::size_t body =
      key.FieldSize(KeyValuePb::kKeyFieldNumber) + LengthField(KeyValuePb::kValueFieldNumber, AnyValueSize(a.value));
  p = WriteLengthHeader(field, body, p);
  p = key.WriteField(KeyValuePb::kKeyFieldNumber, p);
  return WriteAnyValue(KeyValuePb::kValueFieldNumber, a.value, p);
}

std::size_t AttributesSize(int field, const Attributes& attrs) {
  std::size_t n = 0;
  for (const auto& a : attrs) n += LengthField(field, KeyValueSize(a));
  return n;
}

std::uint8_t* WriteAttributes(int field, const Attributes& attrs, std::uint8_t* p) {
  for (const auto& a : attrs) p = WriteKeyValue(field, a, p);
  return p;
}

// --- Span and its parts --------------------------------------------------

using SpanPb = trace::Span;
using EventPb = trace::Span::Event;
using LinkPb = trace::Span::Link;
using StatusPb = trace::Status;

std::size_t EventSize(const SpanEvent& e) {
  return Fixed64FieldSize(EventPb::kTimeUnixNanoFieldNumber, e.time_unix_nano) +
         WireString(e.name).FieldSize(EventPb::kNameFieldNumber) +
         AttributesSize(EventPb::kAttributesFieldNumber, e.attributes) +
         Varint32FieldSize(EventPb::kDroppedAttributesCountFieldNumber, e.dropped_attributes_count);
}

std::uint8_t* WriteEvent(const SpanEvent& e, std::uint8_t* p) {
  p = WriteLengthHeader(SpanPb::kEventsFieldNumber, EventSize(e), p);
  p = WriteFixed64Field(EventPb::kTimeUnixNanoFieldNumber, e.time_unix_nano, p);
  p = WireString(e.name).WriteField(EventPb::kNameFieldNumber, p);
  p = WriteAttributes(EventPb::kAttributesFieldNumber, e.attributes, p);
  return WriteVarint32Field(EventPb::kDroppedAttributesCountFieldNumber, e.dropped_attributes_count, p);
}

std::size_t LinkSize(const SpanLink& l) {
  return IdFieldSize<16>(LinkPb::kTraceIdFieldNumber) + IdFieldSize<8>(LinkPb::kSpanIdFieldNumber) +
         WireString(l.trace_state).FieldSize(LinkPb::kTraceStateFieldNumber) +
         AttributesSize(LinkPb::kAttributesFieldNumber, l.attributes) +
         Varint32FieldSize(LinkPb::kDroppedAttributesCountFieldNumber, l.dropped_attributes_count) +
         Fixed32FieldSize(LinkPb::kFlagsFieldNumber, l.flags);
}

std::uint8_t* WriteLink(const SpanLink& l, std::uint8_t* p) {
  p = WriteLengthHeader(SpanPb::kLinksFieldNumber, LinkSize(l), p);
  p = WriteId(LinkPb::kTraceIdFieldNumber, l.trace_id, p);
  p = WriteId(LinkPb::kSpanIdFieldNumber, l.span_id, p);
  p = WireString(l.trace_state).WriteField(LinkPb::kTraceStateFieldNumber, p);
  p = WriteAttributes(LinkPb::kAttributesFieldNumber, l.attributes, p);
  p = WriteVarint32Field(LinkPb::kDroppedAttributesCountFieldNumber, l.dropped_attributes_count, p);
  return WriteFixed32Field(LinkPb::kFlagsFieldNumber, l.flags, p);
}

// Present when there is a code or a message; the message only goes out with
// an error status (the specification allows it only there), except that app
// spans keep whatever their SDK sent.
bool HasStatus(const Span& s) { return s.status_code != StatusCode::kUnset || !s.status_message.empty(); }

std::string_view StatusMessage(const Span& s) {
  return s.status_code == StatusCode::kError || s.source == SpanSource::kApp
             ? std::string_view(s.status_message)
             : std::string_view();
}

std::size_t StatusSize(const Span& s) {
  return WireString(StatusMessage(s)).FieldSize(StatusPb::kMessageFieldNumber) +
         EnumFieldSize(StatusPb::kCodeFieldNumber, static_cast<int>(s.status_code));
}

// Fields in field-number order, as protobuf itself serializes them.
std::size_t SpanSize(const Span& s) {
  std::size_t n = IdFieldSize<16>(SpanPb::kTraceIdFieldNumber) + IdFieldSize<8>(SpanPb::kSpanIdFieldNumber);
  n += WireString(s.trace_state).FieldSize(SpanPb::kTraceStateFieldNumber);
  if (IsValid(s.parent_span_id)) n += IdFieldSize<8>(SpanPb::kParentSpanIdFieldNumber);
  n += WireString(s.name).FieldSize(SpanPb::kNameFieldNumber);
  n += EnumFieldSize(SpanPb::kKindFieldNumber, static_cast<int>(s.kind));
  n += Fixed64FieldSize(SpanPb::kStartTimeUnixNanoFieldNumber, s.start_unix_nano);
  n += Fixed64FieldSize(SpanPb::kEndTimeUnixNanoFieldNumber, s.end_unix_nano);
  n += AttributesSize(SpanPb::kAttributesFieldNumber, s.attributes);
  n += Varint32FieldSize(SpanPb::kDroppedAttributesCountFieldNumber, s.dropped_attributes_count);
  for (const auto& e : s.events) n += LengthField(SpanPb::kEventsFieldNumber, EventSize(e));
  n += Varint32FieldSize(SpanPb::kDroppedEventsCountFieldNumber, s.dropped_events_count);
  for (const auto& l : s.links) n += LengthField(SpanPb::kLinksFieldNumber, LinkSize(l));
  n += Varint32FieldSize(SpanPb::kDroppedLinksCountFieldNumber, s.dropped_links_count);
  if (HasStatus(s)) n += LengthField(SpanPb::kStatusFieldNumber, StatusSize(s));
  n += Fixed32FieldSize(SpanPb::kFlagsFieldNumber, s.flags);
  return n;
}

std::uint8_t* WriteSpanBody(const Span& s, std::uint8_t* p) {
  p = WriteId(SpanPb::kTraceIdFieldNumber, s.trace_id, p);
  p = WriteId(SpanPb::kSpanIdFieldNumber, s.span_id, p);
  p = WireString(s.trace_state).WriteField(SpanPb::kTraceStateFieldNumber, p);
  // Root spans carry no parent_span_id at all, not eight zero bytes.
  if (IsValid(s.parent_span_id)) p = WriteId(SpanPb::kParentSpanIdFieldNumber, s.parent_span_id, p);
  p = WireString(s.name).WriteField(SpanPb::kNameFieldNumber, p);
  p = WriteEnumField(SpanPb::kKindFieldNumber, static_cast<int>(s.kind), p);
  p = WriteFixed64Field(SpanPb::kStartTimeUnixNanoFieldNumber, s.start_unix_nano, p);
  p = WriteFixed64Field(SpanPb::kEndTimeUnixNanoFieldNumber, s.end_unix_nano, p);
  p = WriteAttributes(SpanPb::kAttributesFieldNumber, s.attributes, p);
  p = WriteVarint32Field(SpanPb::kDroppedAttributesCountFieldNumber, s.dropped_attributes_count, p);
  for (const auto& e : s.events) p = WriteEvent(e, p);
  p = WriteVarint32Field(SpanPb::kDroppedEventsCountFieldNumber, s.dropped_events_count, p);
  for (const auto& l : s.links) p = WriteLink(l, p);
  p = WriteVarint32Field(SpanPb::kDroppedLinksCountFieldNumber, s.dropped_links_count, p);
  if (HasStatus(s)) {
    p = WriteLengthHeader(SpanPb::kStatusFieldNumber, StatusSize(s), p);
    p = WireString(StatusMessage(s)).WriteField(StatusPb::kMessageFieldNumber, p);
    p = WriteEnumField(StatusPb::kCodeFieldNumber, static_cast<int>(s.status_code), p);
  }
  return WriteFixed32Field(SpanPb::kFlagsFieldNumber, s.flags, p);
}

// --- Resource and scope --------------------------------------------------

using RequestPb = collector::ExportTraceServiceRequest;
using ResourceSpansPb = trace::ResourceSpans;
using ScopeSpansPb = trace::ScopeSpans;
using ResourcePb = resource_pb::Resource;
using ScopePb = common::InstrumentationScope;

std::size_t ResourceSize(const Resource& r) {
  return AttributesSize(ResourcePb::kAttributesFieldNumber, r.attributes) +
         Varint32FieldSize(ResourcePb::kDroppedAttributesCountFieldNumber, r.dropped_attributes_count);
}

std::uint8_t* WriteResource(const Resource& r, std::uint8_t* p) {
  p = WriteLengthHeader(ResourceSpansPb::kResourceFieldNumber, ResourceSize(r), p);
  p = WriteAttributes(ResourcePb::kAttributesFieldNumber, r.attributes, p);
  return WriteVarint32Field(ResourcePb::kDroppedAttributesCountFieldNumber, r.dropped_attributes_count, p);
}

std::size_t ScopeSize(const InstrumentationScope& s) {
  return WireString(s.name).FieldSize(ScopePb::kNameFieldNumber) +
         WireString(s.version).FieldSize(ScopePb::kVersionFieldNumber) +
         AttributesSize(ScopePb::kAttributesFieldNumber, s.attributes) +
         Varint32FieldSize(ScopePb::kDroppedAttributesCountFieldNumber, s.dropped_attributes_count);
}

std::uint8_t* WriteScope(const InstrumentationScope& s, std::uint8_t* p) {
  p = WriteLengthHeader(ScopeSpansPb::kScopeFieldNumber, ScopeSize(s), p);
  p = WireString(s.name).WriteField(ScopePb::kNameFieldNumber, p);
  p = WireString(s.version).WriteField(ScopePb::kVersionFieldNumber, p);
  p = WriteAttributes(ScopePb::kAttributesFieldNumber, s.attributes, p);
  return WriteVarint32Field(ScopePb::kDroppedAttributesCountFieldNumber, s.dropped_attributes_count, p);
}

}  // namespace

std::size_t ExportRequestEncoder::Plan(std::span<const Span> spans) {
  spans_ = spans;
  grouping_.Group(spans);
  const auto& scopes = grouping_.scopes();
  const auto& resources = grouping_.resources();
  const std::size_t n = spans.size();
  span_bytes_.resize(n);
  scope_bytes_.assign(scopes.size(), 0);
  resource_bytes_.assign(resources.size(), 0);

  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t body = SpanSize(spans[i]);
    span_bytes_[i] = static_cast<std::uint32_t>(body);
    scope_bytes_[grouping_.group_of(i)] += LengthField(ScopeSpansPb::kSpansFieldNumber, body);
  }
  for (std::size_t g = 0; g < scopes.size(); ++g) {
    const InstrumentationScope* scope = scopes[g].scope;
    if (scope != nullptr) {
      scope_bytes_[g] += LengthField(ScopeSpansPb::kScopeFieldNumber, ScopeSize(*scope)) +
                         WireString(scope->schema_url).FieldSize(ScopeSpansPb::kSchemaUrlFieldNumber);
    }
    resource_bytes_[scopes[g].resource_group] +=
        LengthField(ResourceSpansPb::kScopeSpansFieldNumber, scope_bytes_[g]);
  }
  total_bytes_ = 0;
  for (std::size_t r = 0; r < resources.size(); ++r) {
    const Resource* resource = resources[r];
    if (resource != nullptr) {
      resource_bytes_[r] +=
          LengthField(ResourceSpansPb::kResourceFieldNumber, ResourceSize(*resource)) +
          WireString(resource->schema_url).FieldSize(ResourceSpansPb::kSchemaUrlFieldNumber);
    }
    total_bytes_ += LengthField(RequestPb::kResourceSpansFieldNumber, resource_bytes_[r]);
  }
  return total_bytes_;
}

void ExportRequestEncoder::Write(std::uint8_t* out) const {
  const auto& resources = grouping_.resources();
  const auto& scopes = grouping_.scopes();
  const auto& scope_order = grouping_.scope_order();
  const auto& order = grouping_.order();
  std::uint8_t* p = out;
  std::size_t k = 0;  // position in scope_order
  for (std::uint32_t r = 0; r < resources.size(); ++r) {
    const Resource* resource = resources[r];
    p = WriteLengthHeader(RequestPb::kResourceSpansFieldNumber, resource_bytes_[r], p);
    if (resource != nullptr) p = WriteResource(*resource, p);
    for (; k < scope_order.size() && scopes[scope_order[k]].resource_group == r; ++k) {
      const std::uint32_t g = scope_order[k];
      const SpanGrouping::ScopeGroup& sg = scopes[g];
      p = WriteLengthHeader(ResourceSpansPb::kScopeSpansFieldNumber, scope_bytes_[g], p);
      if (sg.scope != nullptr) p = WriteScope(*sg.scope, p);
      for (std::uint32_t j = sg.first; j < sg.first + sg.span_count; ++j) {
        const std::uint32_t i = order[j];
        p = WriteLengthHeader(ScopeSpansPb::kSpansFieldNumber, span_bytes_[i], p);
        p = WriteSpanBody(spans_[i], p);
      }
      // Field 3 after the spans, in field-number order.
      if (sg.scope != nullptr) {
        p = WireString(sg.scope->schema_url).WriteField(ScopeSpansPb::kSchemaUrlFieldNumber, p);
      }
    }
    if (resource != nullptr) {
      p = WireString(resource->schema_url).WriteField(ResourceSpansPb::kSchemaUrlFieldNumber, p);
    }
  }
  assert(p == out + total_bytes_);
  (void)p;
}
std::string EncodeExportRequest(std::span<const Span> spans) {
  ExportRequestEncoder encoder;
  std::string out(encoder.Plan(spans), '\0');
  encoder.Write(reinterpret_cast<std::uint8_t*>(out.data()));
  return out;
}

}  // namespace kspan
