#include "exporter/otlp_json.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>

#include "absl/strings/escaping.h"
#include "exporter/otlp_transform.h"
#include "google/protobuf/util/message_differencer.h"
#include "nlohmann/json.hpp"
#include "tests/exporter/test_spans.h"

namespace kspan {
namespace {

using nlohmann::json;
using testing::MakeSpan;

otlp::ExportTraceServiceRequest SampleRequest() {
  const auto resource = testing::MakeResource("curl", 1234);
  Span s = MakeSpan(0xA0, resource);
  s.parent_span_id = testing::MakeSpanId(0xC0);
  s.kind = SpanKind::kServer;
  s.attributes = {{"str", std::string("quote\" and \\ and \n")},
                  {"yes", true},
                  {"big", std::int64_t{-9'007'199'254'740'993}},
                  {"dbl", 1.5}};
  s.events.push_back({"ev", s.start_unix_nano + 1, {}});
  s.status_code = StatusCode::kError;
  s.status_message = "boom";
  return ToExportRequest(std::vector<Span>{s, MakeSpan(2, resource)});
}

TEST(OtlpJsonTest, FollowsTheOtlpJsonEncoding) {
  const auto request = SampleRequest();
  const std::string text = ToOtlpJson(request);
  EXPECT_EQ(text.find('\n'), std::string::npos) << "one request per line";
  const json doc = json::parse(text);

  const json& rs = doc.at("resourceSpans").at(0);
  EXPECT_EQ(rs.at("resource").at("attributes").at(0).at("key"), "service.name");
  // int64 as a decimal string
  EXPECT_EQ(rs.at("resource").at("attributes").at(1).at("value").at("intValue"), "1234");
  const json& scope_spans = rs.at("scopeSpans").at(0);
  EXPECT_EQ(scope_spans.at("scope").at("name"), "kspan");
  const json& span = scope_spans.at("spans").at(0);

  // ids: lower-case hex, not base64
  EXPECT_EQ(span.at("traceId"), ToHex(testing::MakeTraceId(0xA0)));
  EXPECT_EQ(span.at("traceId"), "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
  EXPECT_EQ(span.at("spanId"), ToHex(testing::MakeSpanId(0xA0)));
  EXPECT_EQ(span.at("parentSpanId"), ToHex(testing::MakeSpanId(0xC0)));
  // enums as integers
  EXPECT_EQ(span.at("kind"), 2);
  EXPECT_EQ(span.at("status").at("code"), 2);
  EXPECT_EQ(span.at("status").at("message"), "boom");
  // fixed64 as decimal strings
  EXPECT_EQ(span.at("startTimeUnixNano"), std::to_string(request.resource_spans(0).scope_spans(0).spans(0).start_time_unix_nano()));
  EXPECT_TRUE(span.at("endTimeUnixNano").is_string());
  EXPECT_EQ(span.at("events").at(0).at("timeUnixNano"),
            std::to_string(request.resource_spans(0).scope_spans(0).spans(0).start_time_unix_nano() + 1));
  // attribute value types
  const json& attrs = span.at("attributes");
  EXPECT_EQ(attrs.at(0).at("value").at("stringValue"), "quote\" and \\ and \n");
  EXPECT_EQ(attrs.at(1).at("value").at("boolValue"), true);
  EXPECT_EQ(attrs.at(2).at("value").at("intValue"), "-9007199254740993");
  EXPECT_EQ(attrs.at(3).at("value").at("doubleValue"), 1.5);
  // lowerCamelCase only; defaults omitted
  EXPECT_THAT(text, ::testing::Not(::testing::HasSubstr("start_time_unix_nano")));
  EXPECT_THAT(text, ::testing::Not(::testing::HasSubstr("droppedAttributesCount")));
  // the second span is a root: no parentSpanId key at all
  EXPECT_FALSE(scope_spans.at("spans").at(1).contains("parentSpanId"));
}

TEST(OtlpJsonTest, RoundTripsThroughTheDecoder) {
  const auto request = SampleRequest();
  otlp::ExportTraceServiceRequest decoded;
  ASSERT_TRUE(FromOtlpJson(ToOtlpJson(request), decoded).ok());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(request, decoded))
      << decoded.DebugString();
}

TEST(OtlpJsonTest, DecodesTheSpecificationExample) {
  // From the OTLP specification's examples: upper-case hex, enum as int,
  // times as strings, plus an unknown field that must be ignored.
  const std::string text = R"({"resourceSpans":[{"resource":{"attributes":[{"key":"service.name",
    "value":{"stringValue":"my.service"}}]},"scopeSpans":[{"scope":{"name":"my.library",
    "version":"1.0.0"},"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C",
    "spanId":"EEE19B7EC3C1B174","parentSpanId":"EEE19B7EC3C1B173","name":"I'm a server span",
    "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,"kind":2,
    "someFutureField":{"x":1}}]}]}]})";
  otlp::ExportTraceServiceRequest request;
  const auto status = FromOtlpJson(text, request);
  ASSERT_TRUE(status.ok()) << status;
  const auto& span = request.resource_spans(0).scope_spans(0).spans(0);
  EXPECT_EQ(absl::BytesToHexString(span.trace_id()), "5b8efff798038103d269b633813fc60c");
  EXPECT_EQ(absl::BytesToHexString(span.parent_span_id()), "eee19b7ec3c1b173");
  EXPECT_EQ(span.kind(), opentelemetry::proto::trace::v1::Span::SPAN_KIND_SERVER);
  EXPECT_EQ(span.start_time_unix_nano(), 1544712660000000000ull);
  EXPECT_EQ(span.end_time_unix_nano(), 1544712661000000000ull);
}

TEST(OtlpJsonTest, RejectsBadInput) {
  otlp::ExportTraceServiceRequest request;
  EXPECT_FALSE(FromOtlpJson("{not json", request).ok());
  EXPECT_FALSE(FromOtlpJson(R"({"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]})",
                            request).ok());
  EXPECT_FALSE(FromOtlpJson(R"({"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"soon"}]}]}]})",
                            request).ok());
}

TEST(OtlpJsonTest, NonFiniteDoublesAreStrings) {
  opentelemetry::proto::common::v1::AnyValue v;
  v.set_double_value(std::numeric_limits<double>::infinity());
  EXPECT_EQ(ToOtlpJson(v), R"({"doubleValue":"Infinity"})");
  v.set_double_value(std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(ToOtlpJson(v), R"({"doubleValue":"NaN"})");
  // A oneof member at its default value is still present.
  v.set_int_value(0);
  EXPECT_EQ(ToOtlpJson(v), R"({"intValue":"0"})");
}

}  // namespace
}  // namespace kspan
