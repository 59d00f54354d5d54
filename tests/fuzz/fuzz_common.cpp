#include "tests/fuzz/fuzz_common.h"

#include <spdlog/spdlog.h>

#include "exporter/console_sender.h"
#include "exporter/otlp_json.h"
#include "exporter/otlp_json_writer.h"
#include "exporter/otlp_transform.h"
#include "exporter/otlp_wire.h"
#include "exporter/zipkin_sender.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/util/field_comparator.h"
#include "google/protobuf/util/message_differencer.h"

namespace kspan::fuzz {

void QuietLogs() {
  spdlog::set_level(spdlog::level::off);
  google::protobuf::SetLogHandler(nullptr);  // "invalid UTF-8" on every such input
}

void CheckEncoders(std::span<const Span> spans) {
  const otlp::ExportTraceServiceRequest request = ToExportRequest(spans);
  const std::string proto = request.SerializeAsString();
  FUZZ_CHECK(EncodeExportRequest(spans) == proto);

  const std::string json = EncodeOtlpJson(spans);
  otlp::ExportTraceServiceRequest from_json;
  FUZZ_CHECK(FromOtlpJson(json, from_json).ok());
  // NaN is written as "NaN" and reads back as the canonical NaN, whatever
  // payload bits the sender's NaN had.
  google::protobuf::util::DefaultFieldComparator comparator;
  comparator.set_treat_nan_as_equal(true);
  google::protobuf::util::MessageDifferencer differencer;
  differencer.set_field_comparator(&comparator);
  FUZZ_CHECK(differencer.Compare(request, from_json));

  (void)ToZipkinJson(spans);
  for (const Span& s : spans) (void)FormatConsoleLine(s);
}

}  // namespace kspan::fuzz

namespace kspan::fuzz {
namespace {

void CheckValue(const AttributeValue& v, const SpanLimits& limits, std::uint32_t depth);

void CheckAttributes(const Attributes& attrs, std::uint32_t max_count, const SpanLimits& limits,
                     std::uint32_t depth) {
  FUZZ_CHECK(attrs.size() <= max_count);
  for (const Attribute& a : attrs) CheckValue(a.value, limits, depth);
}

// `depth`: arrays and key-value lists around the value.
void CheckValue(const AttributeValue& v, const SpanLimits& limits, std::uint32_t depth) {
  if (const auto* s = std::get_if<std::string>(&v)) FUZZ_CHECK(s->size() <= limits.attribute_value_length);
  if (const auto* b = std::get_if<BytesValue>(&v)) FUZZ_CHECK(b->data.size() <= limits.attribute_value_length);
  if (const auto* array = std::get_if<ArrayValue>(&v)) {
    FUZZ_CHECK(depth < limits.value_depth);
    FUZZ_CHECK(array->size() <= limits.attribute_count);
    for (const AttributeValue& e : *array) CheckValue(e, limits, depth + 1);
  }
  if (const auto* list = std::get_if<KeyValueList>(&v)) {
    FUZZ_CHECK(depth < limits.value_depth);
    CheckAttributes(*list, limits.attribute_count, limits, depth + 1);
  }
}

}  // namespace

SpanLimits TightLimits() {
  return SpanLimits{.attribute_count = 3,
                    .attribute_value_length = 8,
                    .span_attribute_count = 2,
                    .span_event_count = 2,
                    .span_link_count = 1,
                    .event_attribute_count = 1,
                    .link_attribute_count = 1,
                    .value_depth = 2};
}

void CheckWithinLimits(const DecodedSpans& decoded, const SpanLimits& limits, std::size_t request_bytes) {
  FUZZ_CHECK(decoded.invalid_spans >= 0);
  FUZZ_CHECK(decoded.decoded_bytes <= MaxDecodedBytes(request_bytes));
  for (const Span& s : decoded.spans) {
    FUZZ_CHECK(s.source == SpanSource::kApp);
    FUZZ_CHECK(IsValid(s.trace_id) && IsValid(s.span_id));
    CheckAttributes(s.attributes, limits.span_attribute_count, limits, 0);
    FUZZ_CHECK(s.events.size() <= limits.span_event_count);
    for (const SpanEvent& e : s.events) CheckAttributes(e.attributes, limits.event_attribute_count, limits, 0);
    FUZZ_CHECK(s.links.size() <= limits.span_link_count);
    for (const SpanLink& l : s.links) CheckAttributes(l.attributes, limits.link_attribute_count, limits, 0);
    if (s.resource) CheckAttributes(s.resource->attributes, limits.attribute_count, limits, 0);
    if (s.scope) CheckAttributes(s.scope->attributes, limits.attribute_count, limits, 0);
  }
}

absl::StatusOr<DecodedSpans> DecodeProtobufEveryWay(std::string_view body, int block) {
  auto decoded = DecodeExportRequest(body, OtlpEncoding::kProtobuf);

  google::protobuf::io::ArrayInputStream stream(body.data(), static_cast<int>(body.size()), block);
  auto streamed = DecodeExportRequest(stream, body.size());
  FUZZ_CHECK(decoded.ok() == streamed.ok());
  if (decoded.ok()) {
    FUZZ_CHECK(streamed->invalid_spans == decoded->invalid_spans);
    FUZZ_CHECK(streamed->decoded_bytes == decoded->decoded_bytes);
    FUZZ_CHECK(EncodeExportRequest(streamed->spans) == EncodeExportRequest(decoded->spans));
  }

  const SpanLimits tight = TightLimits();
  auto limited = DecodeExportRequest(body, OtlpEncoding::kProtobuf, tight);
  if (limited.ok()) CheckWithinLimits(*limited, tight, body.size());
  if (decoded.ok()) {
    CheckWithinLimits(*decoded, SpanLimits{}, body.size());
    // Limits drop parts of spans, never spans: less to build, never more.
    FUZZ_CHECK(limited.ok());
    FUZZ_CHECK(limited->spans.size() == decoded->spans.size());
    FUZZ_CHECK(limited->invalid_spans == decoded->invalid_spans);
    FUZZ_CHECK(limited->decoded_bytes <= decoded->decoded_bytes);
  }
  return decoded;
}

}  // namespace kspan::fuzz
