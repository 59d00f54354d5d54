// Received app spans round-trip exactly: an ExportTraceServiceRequest with
// every field set, decoded to kspan's span model and encoded again by each of
// kspan's OTLP encoders (gRPC wire encoder, HTTP protobuf, HTTP JSON, the
// disk queue's serialization), parses to the same spans with the same
// resources and scopes.
#include "exporter/otlp_decode.h"

#include <gtest/gtest.h>

#include <atomic>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "exporter/batcher.h"
#include "exporter/otlp_json.h"
#include "exporter/otlp_transform.h"
#include "exporter/otlp_wire.h"
#include "exporter/self_metrics.h"
#include "google/protobuf/util/message_differencer.h"
#include "tests/support/process_memory.h"

namespace kspan {
namespace {

namespace common = opentelemetry::proto::common::v1;
namespace trace = opentelemetry::proto::trace::v1;
using google::protobuf::util::MessageDifferencer;

void Set(common::KeyValue* kv, const std::string& key, const std::string& value) {
  kv->set_key(key);
  kv->mutable_value()->set_string_value(value);
}

// Every AnyValue kind, nested: arrays of kvlists of arrays, bytes (not UTF-8),
// an empty value, negative and large numbers.
void AddRichAttributes(google::protobuf::RepeatedPtrField<common::KeyValue>* attrs, int seed) {
  Set(attrs->Add(), "str", "value-" + std::to_string(seed) + " \xC3\xA9");
  auto* b = attrs->Add();
  b->set_key("bool");
  b->mutable_value()->set_bool_value(seed % 2 == 0);
  auto* i = attrs->Add();
  i->set_key("int");
  i->mutable_value()->set_int_value(-9'000'000'000'000LL - seed);
  auto* d = attrs->Add();
  d->set_key("double");
  d->mutable_value()->set_double_value(-1.25e-300 * (seed + 1));
  auto* bytes = attrs->Add();
  bytes->set_key("bytes");
  bytes->mutable_value()->set_bytes_value(std::string("\x00\xFF\xFE\x80 raw", 8));
  auto* empty = attrs->Add();
  empty->set_key("empty");
  empty->mutable_value();  // an AnyValue with nothing set
  auto* array = attrs->Add();
  array->set_key("array");
  auto* values = array->mutable_value()->mutable_array_value();
  values->add_values()->set_string_value("");
  values->add_values()->set_int_value(0);
  values->add_values()->set_bool_value(false);
  values->add_values()->set_bytes_value("");
  auto* nested_kv = values->add_values()->mutable_kvlist_value();
  Set(nested_kv->add_values(), "inner", "x");
  auto* deeper = nested_kv->add_values();
  deeper->set_key("deeper");
  auto* deeper_array = deeper->mutable_value()->mutable_array_value();
  deeper_array->add_values()->set_double_value(3.5);
  deeper_array->add_values()->mutable_array_value();  // an empty array
  auto* kvlist = attrs->Add();
  kvlist->set_key("kvlist");
  auto* kvs = kvlist->mutable_value()->mutable_kvlist_value();
  Set(kvs->add_values(), "", "empty key");
  auto* kv_bytes = kvs->add_values();
  kv_bytes->set_key("b");
  kv_bytes->mutable_value()->set_bytes_value("\x01\x02");
  // (A KeyValue with no value at all goes out again with an empty value:
  // the same thing to OTLP, but not to MessageDifferencer, so not here.)
  auto* empty_list = attrs->Add();
  empty_list->set_key("empty_kvlist");
  empty_list->mutable_value()->mutable_kvlist_value();
}

std::string Id(int n, int seed) {
  std::string id(static_cast<std::size_t>(n), '\0');
  for (int k = 0; k < n; ++k) id[static_cast<std::size_t>(k)] = static_cast<char>(seed * 31 + k + 1);
  return id;
}

otlp::ExportTraceServiceRequest RichRequest() {
  otlp::ExportTraceServiceRequest request;
  int seed = 0;
  for (int r = 0; r < 2; ++r) {
    auto* rs = request.add_resource_spans();
    AddRichAttributes(rs->mutable_resource()->mutable_attributes(), r);
    Set(rs->mutable_resource()->add_attributes(), "service.name", "svc-" + std::to_string(r));
    rs->mutable_resource()->set_dropped_attributes_count(3 + r);
    rs->set_schema_url("https://opentelemetry.io/schemas/1.2" + std::to_string(r) + ".0");
    for (int sc = 0; sc < 2; ++sc) {
      auto* ss = rs->add_scope_spans();
      ss->mutable_scope()->set_name("lib-" + std::to_string(sc));
      ss->mutable_scope()->set_version("1." + std::to_string(sc));
      Set(ss->mutable_scope()->add_attributes(), "scope.attr", "s" + std::to_string(sc));
      ss->mutable_scope()->set_dropped_attributes_count(7);
      if (sc == 0) ss->set_schema_url("https://opentelemetry.io/schemas/1.21.0");
      for (int k = 0; k < 3; ++k, ++seed) {
        auto* s = ss->add_spans();
        s->set_trace_id(Id(16, seed));
        s->set_span_id(Id(8, seed));
        if (k > 0) s->set_parent_span_id(Id(8, seed - 1));
        s->set_trace_state("vendor=x" + std::to_string(seed) + ",other=y");
        s->set_flags(0x301);
        s->set_name("op-" + std::to_string(seed));
        s->set_kind(static_cast<trace::Span::SpanKind>(seed % 6));
        s->set_start_time_unix_nano(1'700'000'000'000'000'000ULL + static_cast<std::uint64_t>(seed));
        s->set_end_time_unix_nano(1'700'000'000'000'100'000ULL + static_cast<std::uint64_t>(seed));
        AddRichAttributes(s->mutable_attributes(), seed);
        s->set_dropped_attributes_count(11);
        for (int e = 0; e < 2; ++e) {
          auto* ev = s->add_events();
          ev->set_time_unix_nano(1'700'000'000'000'050'000ULL + static_cast<std::uint64_t>(e));
          ev->set_name("event-" + std::to_string(e));
          AddRichAttributes(ev->mutable_attributes(), e);
          ev->set_dropped_attributes_count(2);
        }
        s->set_dropped_events_count(5);
        auto* link = s->add_links();
        link->set_trace_id(Id(16, seed + 100));
        link->set_span_id(Id(8, seed + 100));
        link->set_trace_state("l=1");
        AddRichAttributes(link->mutable_attributes(), seed + 1);
        link->set_dropped_attributes_count(4);
        link->set_flags(0x101);
        s->set_dropped_links_count(6);
        // Every status code, with a message each time (kept as sent).
        s->mutable_status()->set_code(static_cast<trace::Status::StatusCode>(seed % 3));
        s->mutable_status()->set_message("status " + std::to_string(seed));
      }
    }
  }
  return request;
}

// One span with what it was sent under (ScopeSpans/ResourceSpans without
// their spans), so regrouping does not matter.
struct FlatSpan {
  trace::ResourceSpans resource;
  trace::ScopeSpans scope;
  trace::Span span;
};

std::vector<FlatSpan> Flatten(const otlp::ExportTraceServiceRequest& request) {
  std::vector<FlatSpan> out;
  for (const auto& rs : request.resource_spans()) {
    trace::ResourceSpans r = rs;
    r.clear_scope_spans();
    for (const auto& ss : rs.scope_spans()) {
      trace::ScopeSpans s = ss;
      s.clear_spans();
      for (const auto& span : ss.spans()) out.push_back({r, s, span});
    }
  }
  return out;
}

void ExpectSameSpans(const otlp::ExportTraceServiceRequest& expected,
                     const otlp::ExportTraceServiceRequest& actual, const std::string& what) {
  const auto e = Flatten(expected);
  const auto a = Flatten(actual);
  ASSERT_EQ(e.size(), a.size()) << what;
  for (std::size_t i = 0; i < e.size(); ++i) {
    std::string diff;
    MessageDifferencer d;
    d.ReportDifferencesToString(&diff);
    EXPECT_TRUE(d.Compare(e[i].span, a[i].span)) << what << " span " << i << ": " << diff;
    EXPECT_TRUE(d.Compare(e[i].scope, a[i].scope)) << what << " scope of span " << i << ": " << diff;
    EXPECT_TRUE(d.Compare(e[i].resource, a[i].resource)) << what << " resource of span " << i << ": " << diff;
  }
}

TEST(OtlpDecodeTest, RichRequestRoundTripsThroughEveryEncoder) {
  const otlp::ExportTraceServiceRequest input = RichRequest();
  auto decoded = DecodeExportRequest(input.SerializeAsString(), OtlpEncoding::kProtobuf);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->invalid_spans, 0);
  ASSERT_EQ(decoded->spans.size(), 12u);
  for (const auto& s : decoded->spans) EXPECT_EQ(s.source, SpanSource::kApp);
  const auto& spans = decoded->spans;

  // OTLP/gRPC: the sender's wire encoder.
  otlp::ExportTraceServiceRequest grpc_out;
  ASSERT_TRUE(grpc_out.ParseFromString(EncodeExportRequest(spans)));
  ExpectSameSpans(input, grpc_out, "grpc wire");

  // OTLP/HTTP protobuf: the transform, serialized.
  otlp::ExportTraceServiceRequest http_out;
  ASSERT_TRUE(http_out.ParseFromString(ToExportRequest(spans).SerializeAsString()));
  ExpectSameSpans(input, http_out, "http protobuf");
  EXPECT_EQ(EncodeExportRequest(spans), ToExportRequest(spans).SerializeAsString());

  // OTLP/HTTP JSON: what the HTTP JSON sender writes, parsed back.
  otlp::ExportTraceServiceRequest json_out;
  ASSERT_TRUE(FromOtlpJson(ToOtlpJson(ToExportRequest(spans)), json_out).ok());
  ExpectSameSpans(input, json_out, "http json");

  // Disk queue / dead letters: serialized, read back, exported again.
  const std::vector<Span> recovered = FromExportRequest(ToExportRequest(spans));
  for (const auto& s : recovered) EXPECT_EQ(s.source, SpanSource::kApp);
  otlp::ExportTraceServiceRequest disk_out;
  ASSERT_TRUE(disk_out.ParseFromString(EncodeExportRequest(recovered)));
  ExpectSameSpans(input, disk_out, "disk queue");
}

TEST(OtlpDecodeTest, JsonRequestDecodesLikeProtobuf) {
  const otlp::ExportTraceServiceRequest input = RichRequest();
  auto from_json = DecodeExportRequest(ToOtlpJson(input), OtlpEncoding::kJson);
  ASSERT_TRUE(from_json.ok()) << from_json.status();
  otlp::ExportTraceServiceRequest out;
  ASSERT_TRUE(out.ParseFromString(EncodeExportRequest(from_json->spans)));
  ExpectSameSpans(input, out, "json in");
}

TEST(OtlpDecodeTest, JsonFollowsTheOtlpRules) {
  // Hex ids, enums as integers, lowerCamelCase, 64-bit integers as strings
  // or numbers, unknown fields ignored.
  const std::string json = R"({"resourceSpans":[{"resource":{"attributes":[
      {"key":"service.name","value":{"stringValue":"checkout"}}]},
    "scopeSpans":[{"scope":{"name":"my.lib"},"spans":[{
      "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
      "parentSpanId":"eee19b7ec3c1b173","name":"GET /cart","kind":2,
      "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
      "attributes":[{"key":"n","value":{"intValue":"42"}},
                    {"key":"b","value":{"bytesValue":"AAEC"}}],
      "status":{"code":2,"message":"boom"},"unknownField":1}]}]}]})";
  auto decoded = DecodeExportRequest(json, OtlpEncoding::kJson);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->spans.size(), 1u);
  const Span& s = decoded->spans[0];
  EXPECT_EQ(ToHex(s.trace_id), "5b8efff798038103d269b633813fc60c");
  EXPECT_EQ(ToHex(s.span_id), "eee19b7ec3c1b174");
  EXPECT_EQ(ToHex(s.parent_span_id), "eee19b7ec3c1b173");
  EXPECT_EQ(s.kind, SpanKind::kServer);
  EXPECT_EQ(s.start_unix_nano, 1544712660000000000ULL);
  EXPECT_EQ(s.end_unix_nano, 1544712661000000000ULL);
  EXPECT_EQ(s.status_code, StatusCode::kError);
  EXPECT_EQ(s.status_message, "boom");
  ASSERT_EQ(s.attributes.size(), 2u);
  EXPECT_EQ(s.attributes[0].value, AttributeValue(std::int64_t{42}));
  EXPECT_EQ(s.attributes[1].value, AttributeValue(BytesValue{std::string("\x00\x01\x02", 3)}));
  ASSERT_NE(s.scope, nullptr);
  EXPECT_EQ(s.scope->name, "my.lib");
}

TEST(OtlpDecodeTest, JsonAcceptsWhatTheProto3MappingAllows) {
  // Proto field names as well as lowerCamelCase, enum names, integers as
  // numbers, nulls as defaults, URL-safe base64, upper-case hex.
  const std::string json = R"({"resource_spans":[{"scope_spans":[{"spans":[{
      "trace_id":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
      "kind":"SPAN_KIND_CLIENT","start_time_unix_nano":1544712660000000000,
      "droppedAttributesCount":3,"traceState":null,"flags":257,
      "attributes":[{"key":"b","value":{"bytesValue":"-_8"}},
                    {"key":"d","value":{"doubleValue":"-Infinity"}},
                    {"key":"i","value":{"intValue":-5}}]}]}]}]})";
  auto decoded = DecodeExportRequest(json, OtlpEncoding::kJson);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->spans.size(), 1u);
  const Span& s = decoded->spans[0];
  EXPECT_EQ(ToHex(s.trace_id), "5b8efff798038103d269b633813fc60c");
  EXPECT_EQ(s.kind, SpanKind::kClient);
  EXPECT_EQ(s.start_unix_nano, 1544712660000000000ULL);
  EXPECT_EQ(s.dropped_attributes_count, 3u);
  EXPECT_EQ(s.flags, 257u);
  EXPECT_TRUE(s.trace_state.empty());
  ASSERT_EQ(s.attributes.size(), 3u);
  EXPECT_EQ(s.attributes[0].value, AttributeValue(BytesValue{"\xfb\xff"}));
  EXPECT_EQ(s.attributes[1].value, AttributeValue(-std::numeric_limits<double>::infinity()));
  EXPECT_EQ(s.attributes[2].value, AttributeValue(std::int64_t{-5}));
  // Wrong JSON types are malformed.
  EXPECT_FALSE(DecodeExportRequest(R"({"resourceSpans":{}})", OtlpEncoding::kJson).ok());
  EXPECT_FALSE(DecodeExportRequest(R"({"resourceSpans":[{"scopeSpans":[{"spans":[{"flags":-1}]}]}]})",
                                   OtlpEncoding::kJson)
                   .ok());
  EXPECT_FALSE(DecodeExportRequest(R"({"resourceSpans":[{"scopeSpans":[{"spans":[{"name":5}]}]}]})",
                                   OtlpEncoding::kJson)
                   .ok());
  EXPECT_FALSE(DecodeExportRequest("[]", OtlpEncoding::kJson).ok());
}

TEST(OtlpDecodeTest, SpansWithInvalidIdsAreRefusedAndCounted) {
  otlp::ExportTraceServiceRequest request = RichRequest();
  auto* spans = request.mutable_resource_spans(0)->mutable_scope_spans(0)->mutable_spans();
  spans->Mutable(0)->set_trace_id(std::string(16, '\0'));  // all zero
  spans->Mutable(1)->set_span_id("short");
  auto decoded = DecodeExportRequest(request.SerializeAsString(), OtlpEncoding::kProtobuf);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->invalid_spans, 2);
  EXPECT_EQ(decoded->spans.size(), 10u);
  EXPECT_NE(decoded->invalid_message.find("2 span(s) refused"), std::string::npos) << decoded->invalid_message;
  // The kept spans are the others, in order.
  EXPECT_EQ(decoded->spans[0].name, "op-2");
}

TEST(OtlpDecodeTest, MalformedPayloadsAreInvalidArgument) {
  EXPECT_EQ(DecodeExportRequest("\x0a\xff\xff\xff", OtlpEncoding::kProtobuf).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeExportRequest("{\"resourceSpans\":[", OtlpEncoding::kJson).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeExportRequest(R"({"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]})",
                                OtlpEncoding::kJson)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // An empty body is an empty, valid request.
  auto empty = DecodeExportRequest("", OtlpEncoding::kProtobuf);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->spans.empty());
}

TEST(OtlpDecodeTest, ResponsesFollowTheSpecification) {
  otlp::ExportTraceServiceResponse ok;
  ASSERT_TRUE(ok.ParseFromString(EncodeExportResponse(0, "", OtlpEncoding::kProtobuf)));
  EXPECT_FALSE(ok.has_partial_success());
  EXPECT_EQ(EncodeExportResponse(0, "", OtlpEncoding::kJson), "{}");
  otlp::ExportTraceServiceResponse partial;
  ASSERT_TRUE(FromOtlpJson(EncodeExportResponse(3, "three bad", OtlpEncoding::kJson), partial).ok());
  EXPECT_EQ(partial.partial_success().rejected_spans(), 3);
  EXPECT_EQ(partial.partial_success().error_message(), "three bad");
}


// --- limits -------------------------------------------------------------

// Protobuf wire pieces, for requests no protobuf message would build fast
// (millions of fields) or at all (malformed ones).
std::string Varint(std::uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}
std::string Field(std::uint32_t field, const std::string& bytes) {
  return Varint(field << 3 | 2) + Varint(bytes.size()) + bytes;
}
std::string IdsOf(int seed) { return Field(1, Id(16, seed)) + Field(2, Id(8, seed)); }
// ExportTraceServiceRequest{resource_spans{scope_spans{spans...}}}.
std::string RequestOf(const std::string& spans) { return Field(1, Field(2, spans)); }


TEST(OtlpDecodeLimitsTest, WhatIsOverALimitIsDroppedAndCountedAsAnSdkWould) {
  SpanLimits limits;
  limits.attribute_count = 2;
  limits.attribute_value_length = 5;
  limits.span_attribute_count = 3;
  limits.span_event_count = 1;
  limits.span_link_count = 1;
  limits.event_attribute_count = 1;
  limits.link_attribute_count = 1;
  limits.value_depth = 2;

  otlp::ExportTraceServiceRequest request;
  auto* rs = request.add_resource_spans();
  for (int i = 0; i < 4; ++i) Set(rs->mutable_resource()->add_attributes(), "r" + std::to_string(i), "v");
  rs->mutable_resource()->set_dropped_attributes_count(1);
  auto* ss = rs->add_scope_spans();
  for (int i = 0; i < 3; ++i) Set(ss->mutable_scope()->add_attributes(), "s" + std::to_string(i), "v");
  auto* s = ss->add_spans();
  s->set_trace_id(Id(16, 1));
  s->set_span_id(Id(8, 1));
  Set(s->add_attributes(), "a", "h\xC3\xA9llo w\xC3\xB6rld");  // cut inside nothing: "h\xC3\xA9ll"
  auto* b = s->add_attributes();
  b->set_key("b");
  b->mutable_value()->set_bytes_value("0123456789");
  auto* deep = s->add_attributes();  // [[[1]]]: three levels, two allowed
  deep->set_key("deep");
  deep->mutable_value()->mutable_array_value()->add_values()->mutable_array_value()->add_values()
      ->mutable_array_value()->add_values()->set_int_value(1);
  auto* list = s->add_attributes();  // three entries, two allowed
  list->set_key("list");
  for (int i = 0; i < 3; ++i) list->mutable_value()->mutable_array_value()->add_values()->set_int_value(i);
  auto* nested = s->add_attributes();  // [["\xC3\xA9\xC3\xA9\xC3\xA9"]]: two levels, the string cut
  nested->set_key("nested");
  nested->mutable_value()->mutable_array_value()->add_values()->mutable_array_value()->add_values()
      ->set_string_value("\xC3\xA9\xC3\xA9\xC3\xA9");
  Set(s->add_attributes(), "d", "over the count");
  s->set_dropped_attributes_count(11);
  for (int e = 0; e < 3; ++e) {
    auto* ev = s->add_events();
    ev->set_name("e" + std::to_string(e));
    Set(ev->add_attributes(), "x", "1");
    Set(ev->add_attributes(), "y", "2");
    ev->set_dropped_attributes_count(2);
  }
  s->set_dropped_events_count(5);
  for (int l = 0; l < 2; ++l) {
    auto* link = s->add_links();
    link->set_trace_id(Id(16, 9));
    link->set_span_id(Id(8, 9));
    Set(link->add_attributes(), "x", "1");
    Set(link->add_attributes(), "y", "2");
  }
  s->set_dropped_links_count(6);

  auto decoded = DecodeExportRequest(request.SerializeAsString(), OtlpEncoding::kProtobuf, limits);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->spans.size(), 1u);
  const Span& span = decoded->spans[0];
  ASSERT_EQ(span.resource->attributes.size(), 2u);
  EXPECT_EQ(span.resource->dropped_attributes_count, 1u + 2);
  ASSERT_EQ(span.scope->attributes.size(), 2u);
  EXPECT_EQ(span.scope->dropped_attributes_count, 1u);
  ASSERT_EQ(span.attributes.size(), 3u);
  EXPECT_EQ(span.attributes[0].value, AttributeValue(std::string("h\xC3\xA9ll")));
  EXPECT_EQ(span.attributes[1].value, AttributeValue(BytesValue{"01234"}));
  EXPECT_EQ(span.attributes[2].key, "nested");
  EXPECT_EQ(span.attributes[2].value,
            AttributeValue(ArrayValue{AttributeValue(ArrayValue{AttributeValue(std::string("\xC3\xA9\xC3\xA9"))})}));
  EXPECT_EQ(span.dropped_attributes_count, 11u + 3);  // deep, list, d
  ASSERT_EQ(span.events.size(), 1u);
  EXPECT_EQ(span.events[0].name, "e0");
  EXPECT_EQ(span.events[0].attributes.size(), 1u);
  EXPECT_EQ(span.events[0].dropped_attributes_count, 2u + 1);
  EXPECT_EQ(span.dropped_events_count, 5u + 2);
  ASSERT_EQ(span.links.size(), 1u);
  EXPECT_EQ(span.links[0].attributes.size(), 1u);
  EXPECT_EQ(span.links[0].dropped_attributes_count, 1u);
  EXPECT_EQ(span.dropped_links_count, 6u + 1);
  EXPECT_EQ(decoded->limited.attributes, 2u + 1 + 3 + 1 + 1);
  EXPECT_EQ(decoded->limited.events, 2u);
  EXPECT_EQ(decoded->limited.links, 1u);
  EXPECT_EQ(decoded->limited.truncated_values, 3u);

  // The same through OTLP/JSON.
  auto json = DecodeExportRequest(ToOtlpJson(request), OtlpEncoding::kJson, limits);
  ASSERT_TRUE(json.ok()) << json.status();
  otlp::ExportTraceServiceRequest a, b2;
  ASSERT_TRUE(a.ParseFromString(EncodeExportRequest(decoded->spans)));
  ASSERT_TRUE(b2.ParseFromString(EncodeExportRequest(json->spans)));
  ExpectSameSpans(a, b2, "json with limits");
}

// A link with an invalid id refuses its span whether or not the link limit
// drops the link: limits drop parts of spans, never a whole span (found by
// the long fuzzing run: the limit used to drop such a link unread, keeping
// a span the default limits refused).
TEST(OtlpDecodeLimitsTest, ALinkOverTheLimitStillHasItsIdsChecked) {
  otlp::ExportTraceServiceRequest request = RichRequest();
  auto* span = request.mutable_resource_spans(0)->mutable_scope_spans(0)->mutable_spans(0);
  span->clear_links();
  auto* good = span->add_links();
  good->set_trace_id(std::string(16, '\x01'));
  good->set_span_id(std::string(8, '\x02'));
  auto* bad = span->add_links();
  bad->set_trace_id(std::string(15, '\x01'));  // one byte short
  bad->set_span_id(std::string(8, '\x02'));
  SpanLimits one_link;
  one_link.span_link_count = 1;
  const std::string body = request.SerializeAsString();
  auto all = DecodeExportRequest(body, OtlpEncoding::kProtobuf);
  auto limited = DecodeExportRequest(body, OtlpEncoding::kProtobuf, one_link);
  ASSERT_TRUE(all.ok() && limited.ok());
  EXPECT_EQ(all->invalid_spans, 1);
  EXPECT_EQ(limited->invalid_spans, 1);
  EXPECT_EQ(limited->spans.size(), all->spans.size());
  // A valid link over the limit is dropped and counted, its span kept.
  bad->set_trace_id(std::string(16, '\x01'));
  limited = DecodeExportRequest(request.SerializeAsString(), OtlpEncoding::kProtobuf, one_link);
  ASSERT_TRUE(limited.ok());
  EXPECT_EQ(limited->invalid_spans, 0);
  ASSERT_FALSE(limited->spans.empty());
  EXPECT_EQ(limited->spans[0].links.size(), 1u);
  EXPECT_EQ(limited->spans[0].dropped_links_count, span->dropped_links_count() + 1u);
}

TEST(OtlpDecodeLimitsTest, DefaultsKeepSdkSpansIntactAndChargeWhatIsBuilt) {
  // RichRequest round-trips (above) with the defaults; here the budget
  // accounting: what the decoder charged covers what the queues count.
  const std::string body = RichRequest().SerializeAsString();
  auto decoded = DecodeExportRequest(body, OtlpEncoding::kProtobuf);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->limited.attributes + decoded->limited.events + decoded->limited.links +
                decoded->limited.truncated_values,
            0u);
  const std::size_t counted = ApproximateBatchBytes(decoded->spans);
  EXPECT_GE(decoded->decoded_bytes, counted);
  EXPECT_LE(decoded->decoded_bytes, 2 * counted);
  EXPECT_LE(decoded->decoded_bytes, MaxDecodedBytes(body.size()));

  // 128 attributes, events and links of 128 attributes each: the SDKs'
  // default limits, all kept.
  otlp::ExportTraceServiceRequest sdk;
  auto* s = sdk.add_resource_spans()->add_scope_spans()->add_spans();
  s->set_trace_id(Id(16, 1));
  s->set_span_id(Id(8, 1));
  for (int i = 0; i < 128; ++i) {
    Set(s->add_attributes(), "k" + std::to_string(i), "v");
    auto* e = s->add_events();
    auto* l = s->add_links();
    l->set_trace_id(Id(16, 2));
    l->set_span_id(Id(8, 2));
    for (int j = 0; j < 128; ++j) {
      Set(e->add_attributes(), "k" + std::to_string(j), "v");
      Set(l->add_attributes(), "k" + std::to_string(j), "v");
    }
  }
  auto kept = DecodeExportRequest(sdk.SerializeAsString(), OtlpEncoding::kProtobuf);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->spans[0].attributes.size(), 128u);
  EXPECT_EQ(kept->spans[0].events.size(), 128u);
  EXPECT_EQ(kept->spans[0].links.size(), 128u);
  EXPECT_EQ(kept->limited.attributes, 0u);
}

TEST(OtlpDecodeLimitsTest, FollowsTheProtobufRulesAndRefusesMalformedBytes) {
  const std::string ids = IdsOf(1);
  // Unknown fields of every wire type (a group too) and a known field of the
  // wrong wire type are skipped, as protobuf skips them.
  const std::string unknown = Varint(99 << 3 | 0) + Varint(5) + Varint(98 << 3 | 1) + std::string(8, 'x') +
                              Varint(97 << 3 | 5) + std::string(4, 'x') + Field(96, "skip me") +
                              Varint(95 << 3 | 3) + Varint(1 << 3 | 0) + Varint(1) + Varint(95 << 3 | 4) +
                              Varint(5 << 3 | 0) + Varint(7);  // name as a varint
  auto ok = DecodeExportRequest(RequestOf(Field(2, ids + unknown + Field(5, "named"))),
                                OtlpEncoding::kProtobuf);
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->spans.size(), 1u);
  EXPECT_EQ(ok->spans[0].name, "named");
  // Scope and resource after the spans are still theirs.
  auto late = DecodeExportRequest(
      Field(1, Field(2, Field(2, ids) + Field(1, Field(1, "lib"))) + Field(1, Field(1, Field(1, "k")))),
      OtlpEncoding::kProtobuf);
  ASSERT_TRUE(late.ok()) << late.status();
  ASSERT_EQ(late->spans.size(), 1u);
  ASSERT_NE(late->spans[0].scope, nullptr);
  EXPECT_EQ(late->spans[0].scope->name, "lib");
  ASSERT_NE(late->spans[0].resource, nullptr);
  EXPECT_EQ(late->spans[0].resource->attributes.at(0).key, "k");

  for (const auto& [what, body] : std::vector<std::pair<std::string, std::string>>{
           {"a zero tag", RequestOf(Field(2, ids + std::string(1, '\0')))},
           {"a length beyond the end", RequestOf(Field(2, ids)).substr(0, 20)},
           {"a nested length beyond its message", RequestOf(Field(2, ids + Varint(5 << 3 | 2) + Varint(100) + "x"))},
           {"a malformed varint", RequestOf(Field(2, ids + Varint(6 << 3 | 0) + std::string(11, '\xff')))},
           {"invalid UTF-8 in a name", RequestOf(Field(2, ids + Field(5, "\xC3")))},
           {"invalid UTF-8 in a key", RequestOf(Field(2, ids + Field(9, Field(1, "\xFF"))))},
           {"an end-group without a start", RequestOf(Field(2, ids + Varint(7 << 3 | 4)))},
       }) {
    EXPECT_EQ(DecodeExportRequest(body, OtlpEncoding::kProtobuf).status().code(),
              absl::StatusCode::kInvalidArgument)
        << what;
    // protobuf agrees.
    otlp::ExportTraceServiceRequest m;
    EXPECT_FALSE(m.ParseFromString(body)) << what;
  }
}

// Whatever the bytes, the decoder and protobuf's parser agree on whether a
// request is well formed and, when it is, on its spans.
TEST(OtlpDecodeLimitsTest, AgreesWithProtobufOnMutatedRequests) {
  const std::string original = RichRequest().SerializeAsString();
  std::mt19937 rng(18);
  int both_ok = 0;
  for (int round = 0; round < 3000; ++round) {
    std::string body = original;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) body[rng() % body.size()] = static_cast<char>(rng());
    if (round % 7 == 0) body.resize(rng() % body.size());
    otlp::ExportTraceServiceRequest m;
    const bool proto_ok = m.ParseFromString(body);
    auto ours = DecodeExportRequest(body, OtlpEncoding::kProtobuf);
    ASSERT_EQ(ours.ok(), proto_ok) << "round " << round << ": " << ours.status();
    if (!proto_ok) continue;
    ++both_ok;
    // The spans protobuf's message gives, with kspan's validity rules.
    std::vector<Span> expected;
    for (const Span& s : FromExportRequest(m, SpanSource::kApp)) expected.push_back(s);
    std::size_t k = 0, invalid = 0;
    std::vector<Span> valid;
    for (const auto& rs : m.resource_spans()) {
      for (const auto& ss : rs.scope_spans()) {
        for (const auto& sp : ss.spans()) {
          bool bad = sp.trace_id().size() != 16 || !IsValid(expected[k].trace_id) ||
                     sp.span_id().size() != 8 || !IsValid(expected[k].span_id) ||
                     (!sp.parent_span_id().empty() && sp.parent_span_id().size() != 8);
          for (const auto& l : sp.links()) bad = bad || l.trace_id().size() != 16 || l.span_id().size() != 8;
          if (bad) {
            ++invalid;
          } else {
            valid.push_back(expected[k]);
          }
          ++k;
        }
      }
    }
    EXPECT_EQ(ours->invalid_spans, static_cast<std::int64_t>(invalid)) << "round " << round;
    EXPECT_EQ(EncodeExportRequest(ours->spans), EncodeExportRequest(valid)) << "round " << round;
  }
  EXPECT_GT(both_ok, 100);  // the comparison of spans did happen
}


// --- what an attack costs ------------------------------------------------

constexpr std::size_t kMiB = 1 << 20;

// 4 MB of empty attributes: each is two bytes on the wire ("J\0") and was
// about 120 bytes in memory through protobuf messages and the span model.
constexpr std::size_t kEmptyAttributes = 2'000'000;

TEST(OtlpDecodeAttackTest, TwoMillionEmptyAttributesInOneSpanCostAboutTheRequest) {
  std::string span = IdsOf(1) + Field(5, "attack");
  span.reserve(span.size() + 2 * kEmptyAttributes);
  for (std::size_t i = 0; i < kEmptyAttributes; ++i) span.append("\x4a\x00", 2);
  const std::string body = RequestOf(Field(2, span));
  ASSERT_GT(body.size(), 4'000'000u);

  testing::ResetPeakMemory();
  const auto before = testing::ReadMemory();
  auto decoded = DecodeExportRequest(body, OtlpEncoding::kProtobuf);
  const std::size_t growth = testing::PeakGrowthSince(before);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->spans.size(), 1u);
  EXPECT_EQ(decoded->spans[0].attributes.size(), 512u);
  EXPECT_EQ(decoded->spans[0].dropped_attributes_count, kEmptyAttributes - 512);
  EXPECT_EQ(decoded->limited.attributes, kEmptyAttributes - 512);
  // Was +246 MiB (60 times the request). The 512 attributes kept are 37 KiB.
  EXPECT_RSS_LT(growth, 8 * kMiB) << growth / kMiB << " MiB";

  // Eight such requests decoded at once (the receiver's threads).
  testing::ResetPeakMemory();
  const auto before8 = testing::ReadMemory();
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      auto d = DecodeExportRequest(body, OtlpEncoding::kProtobuf);
      if (d.ok() && d->spans.size() == 1) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 8);
  // Was +605 MiB.
  EXPECT_RSS_LT(testing::PeakGrowthSince(before8), 16 * kMiB);
}

TEST(OtlpDecodeAttackTest, EmptyAttributesSpreadWithinTheLimitsAreRefusedAtTheBudget) {
  // The same 4 MB as spans of 512 empty attributes each: every span within
  // the limits, the request 36 times its size in the span model.
  std::string span = IdsOf(1);
  for (int i = 0; i < 512; ++i) span.append("\x4a\x00", 2);
  const std::string one = Field(2, span);
  std::string spans;
  while (spans.size() < 4'000'000) spans += one;
  const std::string body = RequestOf(spans);

  testing::ResetPeakMemory();
  const auto before = testing::ReadMemory();
  auto decoded = DecodeExportRequest(body, OtlpEncoding::kProtobuf);
  const std::size_t growth = testing::PeakGrowthSince(before);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(decoded.status().message().find("request refused"), std::string::npos) << decoded.status();
  // The budget (16 times the request and 1 MiB: 65 MiB here), with room for
  // the allocator. Was +246 MiB.
  EXPECT_RSS_LT(growth, MaxDecodedBytes(body.size()) + 16 * kMiB) << growth / kMiB << " MiB";

  // The same as JSON ("{}" per attribute): refused while parsing the text.
  std::string json_span = R"({"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","attributes":[)";
  for (int i = 0; i < 512; ++i) json_span += i == 0 ? "{}" : ",{}";
  json_span += "]}";
  std::string json = R"({"resourceSpans":[{"scopeSpans":[{"spans":[)";
  while (json.size() < 4'000'000) json += json_span + ",";
  json.back() = ']';
  json += "}]}]}";
  testing::ResetPeakMemory();
  const auto before_json = testing::ReadMemory();
  auto from_json = DecodeExportRequest(json, OtlpEncoding::kJson);
  const std::size_t json_growth = testing::PeakGrowthSince(before_json);
  ASSERT_FALSE(from_json.ok());
  EXPECT_NE(from_json.status().message().find("request refused"), std::string::npos) << from_json.status();
  EXPECT_RSS_LT(json_growth, MaxDecodedBytes(json.size()) + 16 * kMiB) << json_growth / kMiB << " MiB";
}

TEST(SpanModelTest, ArrayAndKvlistValuesRenderAsJsonText) {
  const AttributeValue v = ArrayValue{AttributeValue(std::string("a")), AttributeValue(std::int64_t{1}),
                                      AttributeValue(KeyValueList{{"k", AttributeValue(true)}}),
                                      AttributeValue(BytesValue{"\x01"})};
  EXPECT_EQ(AttributeValueText(v), R"(["a",1,{"k":true},"AQ=="])");
  EXPECT_EQ(AttributeValueText(AttributeValue(std::string("plain"))), "plain");
  EXPECT_EQ(AttributeValueText(AttributeValue(std::monostate{})), "");
  // Kernel-style construction still compiles and compares.
  const Attribute a{"net.peer.port", std::int64_t{443}};
  EXPECT_EQ(a, (Attribute{"net.peer.port", std::int64_t{443}}));
  EXPECT_NE(ApproximateBytes(Attributes{{"k", v}}), 0u);
}

TEST(BatcherSubmitBatchTest, AcceptsAllOrNone) {
  MetricsRegistry metrics;
  std::mutex mu;
  std::size_t delivered = 0;
  BatchOptions options{.max_export_batch_size = 1000, .schedule_delay = std::chrono::seconds(60),
                       .max_queue_size = 10};
  Batcher batcher(options, metrics, [&](SharedSpanBatch b) {
    std::lock_guard lock(mu);
    delivered += b->spans.size();
  });
  std::vector<Span> six(6);
  EXPECT_EQ(batcher.SubmitBatch(std::move(six)), SubmitResult::kAccepted);
  EXPECT_TRUE(six.empty());
  std::vector<Span> five(5);
  five[0].name = "kept by the caller";
  EXPECT_EQ(batcher.SubmitBatch(std::move(five)), SubmitResult::kQueueFull);
  ASSERT_EQ(five.size(), 5u);  // untouched: nothing of it was queued
  EXPECT_EQ(five[0].name, "kept by the caller");
  EXPECT_EQ(batcher.queued_spans(), 6u);
  std::vector<Span> four(4);
  EXPECT_EQ(batcher.SubmitBatch(std::move(four)), SubmitResult::kAccepted);
  EXPECT_EQ(batcher.queued_spans(), 10u);
  batcher.Shutdown();
  std::vector<Span> late(1);
  EXPECT_EQ(batcher.SubmitBatch(std::move(late)), SubmitResult::kShutdown);
  EXPECT_EQ(delivered, 10u);
}

}  // namespace
}  // namespace kspan
