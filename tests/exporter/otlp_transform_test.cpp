#include "exporter/otlp_transform.h"

#include <gtest/gtest.h>

#include "tests/exporter/test_spans.h"

namespace kspan {
namespace {

using testing::MakeResource;
using testing::MakeSpan;
namespace trace = opentelemetry::proto::trace::v1;

std::string Bytes(const auto& id) { return std::string(reinterpret_cast<const char*>(id.data()), id.size()); }

// Every check runs on what a receiver would see: serialized, then parsed.
otlp::ExportTraceServiceRequest OverTheWire(const std::vector<Span>& spans) {
  const auto request = ToExportRequest(spans);
  std::string wire;
  EXPECT_TRUE(request.SerializeToString(&wire));
  otlp::ExportTraceServiceRequest parsed;
  EXPECT_TRUE(parsed.ParseFromString(wire));
  return parsed;
}

TEST(OtlpTransformTest, IdsTimesNameKindAndStatus) {
  Span s = MakeSpan(1);
  s.parent_span_id = testing::MakeSpanId(99);
  s.trace_state = "vendor=1";
  s.flags = 0x301;
  s.kind = SpanKind::kServer;
  s.status_code = StatusCode::kError;
  s.status_message = "connection refused";
  const auto req = OverTheWire({s});
  ASSERT_EQ(req.resource_spans_size(), 1);
  ASSERT_EQ(req.resource_spans(0).scope_spans_size(), 1);
  const auto& out = req.resource_spans(0).scope_spans(0).spans(0);
  EXPECT_EQ(out.trace_id(), Bytes(s.trace_id));
  EXPECT_EQ(out.trace_id().size(), 16u);
  EXPECT_EQ(out.span_id(), Bytes(s.span_id));
  EXPECT_EQ(out.parent_span_id(), Bytes(s.parent_span_id));
  EXPECT_EQ(out.trace_state(), "vendor=1");
  EXPECT_EQ(out.flags(), 0x301u);
  EXPECT_EQ(out.name(), "connect-1");
  EXPECT_EQ(out.kind(), trace::Span::SPAN_KIND_SERVER);
  EXPECT_EQ(out.start_time_unix_nano(), s.start_unix_nano);
  EXPECT_EQ(out.end_time_unix_nano(), s.end_unix_nano);
  EXPECT_EQ(out.status().code(), trace::Status::STATUS_CODE_ERROR);
  EXPECT_EQ(out.status().message(), "connection refused");
}

TEST(OtlpTransformTest, EveryKindAndStatusMapsToItsWireValue) {
  for (int k = 0; k <= 5; ++k) {
    Span s = MakeSpan(1);
    s.kind = static_cast<SpanKind>(k);
    EXPECT_EQ(static_cast<int>(OverTheWire({s}).resource_spans(0).scope_spans(0).spans(0).kind()), k);
  }
  Span ok = MakeSpan(1);
  ok.status_code = StatusCode::kOk;
  ok.status_message = "ignored without an error";
  const auto ok_req = OverTheWire({ok});
  const auto& st = ok_req.resource_spans(0).scope_spans(0).spans(0).status();
  EXPECT_EQ(st.code(), trace::Status::STATUS_CODE_OK);
  EXPECT_EQ(st.message(), "");
  Span unset = MakeSpan(1);
  unset.status_code = StatusCode::kUnset;
  EXPECT_FALSE(OverTheWire({unset}).resource_spans(0).scope_spans(0).spans(0).has_status());
}

TEST(OtlpTransformTest, RootSpanHasNoParentId) {
  const auto req = OverTheWire({MakeSpan(1)});
  EXPECT_TRUE(req.resource_spans(0).scope_spans(0).spans(0).parent_span_id().empty());
}

TEST(OtlpTransformTest, AttributesKeepTheirTypes) {
  Span s = MakeSpan(1);
  s.attributes = {{"str", std::string("v")},
                  {"yes", true},
                  {"int", std::int64_t{-5'000'000'000}},
                  {"dbl", 0.25}};
  const auto req = OverTheWire({s});
  const auto& attrs = req.resource_spans(0).scope_spans(0).spans(0).attributes();
  ASSERT_EQ(attrs.size(), 4);
  EXPECT_EQ(attrs[0].key(), "str");
  EXPECT_EQ(attrs[0].value().string_value(), "v");
  EXPECT_TRUE(attrs[1].value().has_bool_value());
  EXPECT_TRUE(attrs[1].value().bool_value());
  EXPECT_EQ(attrs[2].value().int_value(), -5'000'000'000);
  EXPECT_TRUE(attrs[3].value().has_double_value());
  EXPECT_DOUBLE_EQ(attrs[3].value().double_value(), 0.25);
}

TEST(OtlpTransformTest, EventsAndLinks) {
  Span s = MakeSpan(1);
  s.events.push_back({"tcp.retransmit", s.start_unix_nano + 10, {{"tcp.seq", std::int64_t{42}}}});
  SpanLink link;
  link.trace_id = testing::MakeTraceId(7);
  link.span_id = testing::MakeSpanId(7);
  link.flags = 1;
  link.attributes = {{"l", true}};
  s.links.push_back(link);
  const auto req = OverTheWire({s});
  const auto& out = req.resource_spans(0).scope_spans(0).spans(0);
  ASSERT_EQ(out.events_size(), 1);
  EXPECT_EQ(out.events(0).name(), "tcp.retransmit");
  EXPECT_EQ(out.events(0).time_unix_nano(), s.start_unix_nano + 10);
  EXPECT_EQ(out.events(0).attributes(0).value().int_value(), 42);
  ASSERT_EQ(out.links_size(), 1);
  EXPECT_EQ(out.links(0).trace_id(), Bytes(link.trace_id));
  EXPECT_EQ(out.links(0).span_id(), Bytes(link.span_id));
  EXPECT_EQ(out.links(0).flags(), 1u);
}

TEST(OtlpTransformTest, GroupsByResourceThenScopeInFirstSeenOrder) {
  auto curl = MakeResource("curl", 1);
  auto nginx = MakeResource("nginx", 2);
  auto app_scope = std::make_shared<const InstrumentationScope>(InstrumentationScope{"app", "2.0"});
  std::vector<Span> spans = {MakeSpan(1, curl), MakeSpan(2, nginx), MakeSpan(3, curl),
                             MakeSpan(4, nginx), MakeSpan(5, curl)};
  spans[4].scope = app_scope;
  const auto req = OverTheWire(spans);
  ASSERT_EQ(req.resource_spans_size(), 2);
  const auto& r0 = req.resource_spans(0);
  const auto& r1 = req.resource_spans(1);
  EXPECT_EQ(r0.resource().attributes(0).value().string_value(), "curl");
  EXPECT_EQ(r0.resource().attributes(1).value().int_value(), 1);
  EXPECT_EQ(r1.resource().attributes(0).value().string_value(), "nginx");
  ASSERT_EQ(r0.scope_spans_size(), 2);
  EXPECT_EQ(r0.scope_spans(0).scope().name(), "kspan");
  EXPECT_EQ(r0.scope_spans(0).scope().version(), KSPAN_VERSION);
  EXPECT_EQ(r0.scope_spans(0).spans_size(), 2);
  EXPECT_EQ(r0.scope_spans(0).spans(0).name(), "connect-1");
  EXPECT_EQ(r0.scope_spans(0).spans(1).name(), "connect-3");
  EXPECT_EQ(r0.scope_spans(1).scope().name(), "app");
  EXPECT_EQ(r0.scope_spans(1).spans(0).name(), "connect-5");
  ASSERT_EQ(r1.scope_spans_size(), 1);
  EXPECT_EQ(r1.scope_spans(0).spans_size(), 2);
}

TEST(OtlpTransformTest, SpanWithoutResourceOrScopeStillExports) {
  Span s = MakeSpan(1);
  s.resource = nullptr;
  s.scope = nullptr;
  const auto req = OverTheWire({s});
  ASSERT_EQ(req.resource_spans_size(), 1);
  EXPECT_EQ(req.resource_spans(0).resource().attributes_size(), 0);
  EXPECT_EQ(req.resource_spans(0).scope_spans(0).spans_size(), 1);
}

TEST(OtlpTransformTest, InvalidUtf8IsReplacedNotSent) {
  EXPECT_EQ(SanitizeUtf8("ok \xC3\xA9"), "ok \xC3\xA9");
  EXPECT_EQ(SanitizeUtf8("a\xFF" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(SanitizeUtf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong
  Span s = MakeSpan(1);
  s.name = "GET /\xFE";
  s.attributes = {{"url", std::string("/a\x80")}};
  const auto req = OverTheWire({s});
  const auto& out = req.resource_spans(0).scope_spans(0).spans(0);
  EXPECT_EQ(out.name(), "GET /\xEF\xBF\xBD");
  EXPECT_EQ(out.attributes(0).value().string_value(), "/a\xEF\xBF\xBD");
}

}  // namespace
}  // namespace kspan
