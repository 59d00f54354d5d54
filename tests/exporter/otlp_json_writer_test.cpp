// The direct OTLP/JSON encoder against the reference path
// ToOtlpJson(ToExportRequest(spans)): its text must be valid JSON, parse
// (FromOtlpJson) into exactly the message ToExportRequest() builds, and, for
// doubles whose Grisu2 digits are the shortest, be the very same text.
#include "exporter/otlp_json_writer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "exporter/otlp_json.h"
#include "exporter/otlp_transform.h"
#include "google/protobuf/util/field_comparator.h"
#include "google/protobuf/util/message_differencer.h"
#include "nlohmann/json.hpp"
#include "tests/exporter/test_spans.h"

namespace kspan {
namespace {

using google::protobuf::util::DefaultFieldComparator;
using google::protobuf::util::MessageDifferencer;
using testing::MakeResource;
using testing::MakeSpan;
using testing::MakeSpanId;
using testing::MakeTraceId;

bool IsLowerHex(const std::string& s, std::size_t length) {
  return s.size() == length && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// Every id in the document (traceId, spanId, parentSpanId at any depth) is
// lower-case hex of the right length; returns how many were seen.
int CheckIds(const nlohmann::json& j) {
  int seen = 0;
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() == "traceId") {
        EXPECT_TRUE(it->is_string() && IsLowerHex(it->get<std::string>(), 32)) << it->dump();
        ++seen;
      } else if (it.key() == "spanId" || it.key() == "parentSpanId") {
        EXPECT_TRUE(it->is_string() && IsLowerHex(it->get<std::string>(), 16)) << it->dump();
        ++seen;
      } else {
        seen += CheckIds(*it);
      }
    }
  } else if (j.is_array()) {
    for (const auto& e : j) seen += CheckIds(e);
  }
  return seen;
}

// Checks one batch; `encoder` and `out` may be reused from earlier batches.
// `same_text`: also require the reference path's exact text.
void ExpectSameAsReference(const std::vector<Span>& spans, OtlpJsonEncoder& encoder, std::string& out,
                           bool same_text = true) {
  const otlp::ExportTraceServiceRequest expected = ToExportRequest(spans);
  encoder.Encode(spans, out);

  const auto doc = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(doc.is_discarded()) << "not JSON: " << out.substr(0, 2000);
  EXPECT_EQ(out.find('\n'), std::string::npos);
  std::size_t ids = 0;
  for (const Span& s : spans) ids += 2 + (IsValid(s.parent_span_id) ? 1 : 0) + 2 * s.links.size();
  EXPECT_EQ(static_cast<std::size_t>(CheckIds(doc)), ids);

  otlp::ExportTraceServiceRequest parsed;
  const auto status = FromOtlpJson(out, parsed);
  ASSERT_TRUE(status.ok()) << status;
  DefaultFieldComparator comparator;
  comparator.set_treat_nan_as_equal(true);
  MessageDifferencer differencer;
  differencer.set_field_comparator(&comparator);
  std::string diff;
  differencer.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differencer.Compare(expected, parsed)) << diff;

  if (same_text) {
    const std::string reference = ToOtlpJson(expected);
    EXPECT_EQ(out.size(), reference.size());
    EXPECT_TRUE(out == reference) << "new:       " << out.substr(0, 3000) << "\nreference: "
                                  << reference.substr(0, 3000);
  }
}

void ExpectSameAsReference(const std::vector<Span>& spans, bool same_text = true) {
  OtlpJsonEncoder encoder;
  std::string out = "stale content is replaced";
  ExpectSameAsReference(spans, encoder, out, same_text);
  if (same_text) {
    EXPECT_EQ(EncodeOtlpJson(spans), ToOtlpJson(ToExportRequest(spans)));
  }
}

const std::string kValid = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xE4\xB8\xAD\xE6\x96\x87";
const std::string kInvalid = "a\xFF" "b \xC0\xAF \xED\xA0\x80 \xF4\x90\x80\x80 trunc\xE2\x82";

std::string AllControlCharacters() {
  std::string s;
  for (int c = 0; c < 0x20; ++c) s.push_back(static_cast<char>(c));
  return s + "\x7F \"quoted\" back\\slash /slash";
}

// A value of every kind, nested.
AttributeValue RichValue(int depth) {
  if (depth == 0) return std::string("leaf");
  ArrayValue array = {std::string("s"),
                      std::string(),
                      true,
                      std::int64_t{-7},
                      2.5,
                      std::numeric_limits<double>::quiet_NaN(),
                      BytesValue{std::string("\x00\xFF\x80 bytes", 9)},
                      BytesValue{},
                      std::monostate{},
                      ArrayValue{},
                      KeyValueList{},
                      RichValue(depth - 1)};
  KeyValueList kv = {{"array", array},
                     {"", std::string("empty key")},
                     {kInvalid, kValid},
                     {"ctl" + AllControlCharacters(), AllControlCharacters()},
                     {"nested", RichValue(depth - 1)},
                     {"empty", std::monostate{}}};
  return kv;
}

Attributes EveryAttributeType() {
  return {{"str", std::string("v")},
          {"empty.string", std::string()},
          {"", std::string("empty key")},
          {"", std::int64_t{0}},
          {"true", true},
          {"false", false},
          {"zero", std::int64_t{0}},
          {"negative", std::int64_t{-5'000'000'000}},
          {"min", std::numeric_limits<std::int64_t>::min()},
          {"max", std::numeric_limits<std::int64_t>::max()},
          {"dbl", 0.25},
          {"dbl.zero", 0.0},
          {"dbl.negative.zero", -0.0},
          {"dbl.integral", 3.0},
          {"dbl.tenth", 0.1},
          {"dbl.big", 1e300},
          {"dbl.small", 1.5e-7},
          {"dbl.1e15", 1e15},
          {"dbl.1e14", 123456789012345.0},
          {"dbl.1e-4", 0.0001},
          {"dbl.1e-5", 0.00001},
          {"dbl.fraction", -123456.789},
          {"dbl.nan", std::numeric_limits<double>::quiet_NaN()},
          {"dbl.inf", std::numeric_limits<double>::infinity()},
          {"dbl.-inf", -std::numeric_limits<double>::infinity()},
          {"dbl.min", std::numeric_limits<double>::denorm_min()},
          {"dbl.max", std::numeric_limits<double>::max()},
          {"dbl.lowest", std::numeric_limits<double>::lowest()},
          {"bytes", BytesValue{std::string("\x00\x01\x80", 3)}},
          {"bytes.empty", BytesValue{}},
          {"array", ArrayValue{std::int64_t{1}, std::string("two"), 3.5}},
          {"array.empty", ArrayValue{}},
          {"kvlist.empty", KeyValueList{}},
          {"empty.value", std::monostate{}},
          {"rich", RichValue(3)}};
}

TEST(OtlpJsonWriterTest, EmptyBatchIsAnEmptyObject) {
  ExpectSameAsReference({});
  EXPECT_EQ(EncodeOtlpJson({}), "{}");
}

TEST(OtlpJsonWriterTest, OneKernelSpan) { ExpectSameAsReference({MakeSpan(1)}); }

TEST(OtlpJsonWriterTest, IdsParentTraceStateFlagsKindTimesAndStatus) {
  Span s = MakeSpan(1);
  s.parent_span_id = MakeSpanId(0xA0);  // hex digits a-f
  s.trace_id = MakeTraceId(0xF0);
  s.trace_state = "vendor=a,other=b";
  s.flags = 0x301;
  s.dropped_attributes_count = 3;
  s.dropped_events_count = 4;
  s.dropped_links_count = 5;
  Span root = MakeSpan(2);
  Span ok_with_message = MakeSpan(3);  // message dropped without an error
  ok_with_message.status_message = "ignored";
  Span unset_with_message = MakeSpan(4);  // an empty Status present
  unset_with_message.status_code = StatusCode::kUnset;
  unset_with_message.status_message = "ignored";
  Span app_unset_with_message = unset_with_message;  // an app span keeps it
  app_unset_with_message.source = SpanSource::kApp;
  Span error = MakeSpan(5);
  error.status_code = StatusCode::kError;
  error.status_message = "connection refused";
  Span no_status_no_times = MakeSpan(6);
  no_status_no_times.status_code = StatusCode::kUnset;
  no_status_no_times.start_unix_nano = 0;
  no_status_no_times.end_unix_nano = std::numeric_limits<std::uint64_t>::max();
  no_status_no_times.name.clear();
  std::vector<Span> spans = {s, root, ok_with_message, unset_with_message, app_unset_with_message, error,
                             no_status_no_times};
  for (int k = 0; k <= 6; ++k) {
    Span kind = MakeSpan(10 + k);
    kind.kind = static_cast<SpanKind>(k);  // 6: out of the enum, kept as a number
    spans.push_back(kind);
  }
  ExpectSameAsReference(spans);
}

TEST(OtlpJsonWriterTest, EveryAttributeTypeNestedValuesAndNonFiniteDoubles) {
  Span s = MakeSpan(1);
  s.attributes = EveryAttributeType();
  ExpectSameAsReference({s});
}

TEST(OtlpJsonWriterTest, EventsAndLinks) {
  Span s = MakeSpan(1);
  s.events = {{"retransmit", 1'700'000'000'000'000'123ull, {{"tcp.seq", std::int64_t{42}}, {"fast", true}}, 2},
              {"", 0, {}},
              {"no attributes", 5, {}}};
  SpanLink full;
  full.trace_id = MakeTraceId(7);
  full.span_id = MakeSpanId(7);
  full.trace_state = "k=v";
  full.flags = 0x101;
  full.dropped_attributes_count = 9;
  full.attributes = {{"link.kind", std::string("follows")}, {"weight", 0.5}, {"rich", RichValue(2)}};
  SpanLink bare;  // all-zero ids still go out as ids
  s.links = {full, bare};
  ExpectSameAsReference({s});
}

TEST(OtlpJsonWriterTest, ResourcesAndScopesGroupedInFirstSeenOrder) {
  const auto curl = MakeResource("curl", 1);
  const auto nginx = std::make_shared<const Resource>(
      Resource{{{"service.name", std::string("nginx")}}, 2, "https://opentelemetry.io/schemas/1.26.0"});
  const auto empty_resource = std::make_shared<const Resource>();
  const auto app = std::make_shared<const InstrumentationScope>(InstrumentationScope{
      "app", "1.2.3", {{"scope.attr", std::int64_t{1}}}, 4, "https://opentelemetry.io/schemas/1.21.0"});
  const auto unnamed = std::make_shared<const InstrumentationScope>();
  // A second scope equal in value but not in identity: a group of its own.
  const auto app_copy = std::make_shared<const InstrumentationScope>(*app);

  std::vector<Span> spans;
  const std::vector<std::shared_ptr<const Resource>> resources = {curl, nginx, nullptr, empty_resource};
  const std::vector<std::shared_ptr<const InstrumentationScope>> scopes = {KernelScope(), app, nullptr,
                                                                          unnamed, app_copy};
  for (int i = 0; i < 60; ++i) {
    Span s = MakeSpan(i);
    s.resource = resources[static_cast<std::size_t>((i * 7) % 4)];
    s.scope = scopes[static_cast<std::size_t>((i * 3 + i / 5) % 5)];
    spans.push_back(std::move(s));
  }
  ExpectSameAsReference(spans);
}

TEST(OtlpJsonWriterTest, Utf8ValidInvalidAndControlCharactersEverywhere) {
  const std::string ctl = AllControlCharacters();
  auto resource = std::make_shared<const Resource>(
      Resource{{{kValid, kInvalid}, {kInvalid, kValid}, {ctl, ctl}}, 0, kInvalid + ctl});
  auto scope = std::make_shared<const InstrumentationScope>(
      InstrumentationScope{kInvalid + ctl, kValid, {{kInvalid, kInvalid}}, 0, kValid + kInvalid});
  Span s = MakeSpan(1, resource);
  s.scope = scope;
  s.name = kInvalid + ctl;
  s.trace_state = kInvalid;
  s.status_code = StatusCode::kError;
  s.status_message = kInvalid + kValid + ctl;
  s.attributes = {{kValid, kValid}, {kInvalid, kInvalid}, {ctl, ctl}, {"bytes", BytesValue{kInvalid}}};
  s.events = {{kInvalid + ctl, 1, {{kInvalid, kValid}}}};
  SpanLink l;
  l.trace_state = kValid + ctl;
  l.attributes = {{kValid, kInvalid}};
  s.links = {l};
  Span t = MakeSpan(2, resource);
  t.scope = scope;
  t.name = kValid;
  // Every single byte value, alone and in a run.
  std::string all_bytes;
  for (int c = 0; c < 256; ++c) {
    all_bytes.push_back(static_cast<char>(c));
    t.attributes.push_back({"b" + std::to_string(c), std::string(1, static_cast<char>(c))});
  }
  t.attributes.push_back({"all", all_bytes});
  ExpectSameAsReference({s, t});
}

TEST(OtlpJsonWriterTest, EverySpanFieldSetAcrossResourcesAndScopes) {
  std::vector<Span> spans;
  for (int r = 0; r < 3; ++r) {
    auto resource = std::make_shared<const Resource>(
        Resource{EveryAttributeType(), static_cast<std::uint32_t>(r), "schema-r" + std::to_string(r)});
    for (int sc = 0; sc < 2; ++sc) {
      auto scope = std::make_shared<const InstrumentationScope>(InstrumentationScope{
          "scope" + std::to_string(sc), "v" + std::to_string(sc), EveryAttributeType(), 7, "schema-s"});
      for (int i = 0; i < 3; ++i) {
        Span s = MakeSpan(r * 10 + sc * 3 + i, resource);
        s.scope = scope;
        s.parent_span_id = MakeSpanId(static_cast<std::uint8_t>(200 + i));
        s.trace_state = "a=b";
        s.flags = 0x101;
        s.kind = SpanKind::kServer;
        s.attributes = EveryAttributeType();
        s.events = {{"ev", 12345, EveryAttributeType(), 1}};
        SpanLink link;
        link.trace_id = MakeTraceId(static_cast<std::uint8_t>(i));
        link.span_id = MakeSpanId(static_cast<std::uint8_t>(i));
        link.trace_state = "c=d";
        link.attributes = EveryAttributeType();
        link.flags = 1;
        link.dropped_attributes_count = 2;
        s.links = {link, link};
        s.dropped_attributes_count = 1;
        s.dropped_events_count = 2;
        s.dropped_links_count = 3;
        s.status_code = StatusCode::kError;
        s.status_message = "failed";
        s.source = SpanSource::kApp;
        spans.push_back(std::move(s));
      }
    }
  }
  // Interleave resources and scopes.
  std::mt19937 rng(7);
  std::shuffle(spans.begin(), spans.end(), rng);
  ExpectSameAsReference(spans);
}

TEST(OtlpJsonWriterTest, LongStrings) {
  Span s = MakeSpan(1);
  s.name = std::string(200, 'n');
  s.attributes = {{std::string(300, 'k'), std::string(70'000, 'v') + "\n" + kValid + std::string(5'000, 'w')}};
  s.events = {{std::string(20'000, 'e'), 9, {{"x", std::string(130, '"')}}}};
  ExpectSameAsReference({s});
}

// Many varied spans, several batches through one reused encoder and string;
// random doubles are compared by value only.
TEST(OtlpJsonWriterTest, LargeRandomBatchesThroughOneEncoder) {
  std::mt19937_64 rng(12345);
  auto pick = [&](std::uint64_t n) { return rng() % n; };
  const std::vector<std::string> strings = {"",        "a",    "connect", "caf\xC3\xA9", "bad\xFF",
                                            "tab\there", "q\"", "10.0.0.7", "\xE2\x82"};
  std::vector<std::shared_ptr<const Resource>> resources = {nullptr};
  for (int r = 0; r < 5; ++r) resources.push_back(MakeResource("svc" + std::to_string(r), r));
  std::vector<std::shared_ptr<const InstrumentationScope>> scopes = {nullptr, KernelScope()};
  for (int c = 0; c < 3; ++c) {
    scopes.push_back(std::make_shared<const InstrumentationScope>(
        InstrumentationScope{"lib" + std::to_string(c), strings[static_cast<std::size_t>(c)]}));
  }
  auto random_value = [&]() -> AttributeValue {
    switch (pick(6)) {
      case 0: return strings[pick(strings.size())];
      case 1: return pick(2) == 1;
      case 2: return static_cast<std::int64_t>(rng());
      case 3: {
        double d;
        const std::uint64_t bits = rng();
        std::memcpy(&d, &bits, sizeof(d));  // any double, NaNs and infinities included
        return d;
      }
      case 4: return BytesValue{strings[pick(strings.size())]};
      default: return ArrayValue{strings[pick(strings.size())], std::int64_t{1}};
    }
  };
  OtlpJsonEncoder encoder;
  std::string out;
  for (int batch = 0; batch < 8; ++batch) {
    std::vector<Span> spans;
    const std::size_t n = batch == 3 ? 0 : 1 + pick(300);
    for (std::size_t i = 0; i < n; ++i) {
      Span s = MakeSpan(static_cast<int>(i), resources[pick(resources.size())]);
      s.scope = scopes[pick(scopes.size())];
      s.name = strings[pick(strings.size())];
      if (pick(2) == 1) s.parent_span_id = MakeSpanId(static_cast<std::uint8_t>(pick(256)));
      s.flags = static_cast<std::uint32_t>(pick(0x400));
      s.status_code = static_cast<StatusCode>(pick(3));
      s.status_message = strings[pick(strings.size())];
      s.source = pick(2) == 1 ? SpanSource::kApp : SpanSource::kKernel;
      for (std::size_t a = pick(6); a > 0; --a) s.attributes.push_back({strings[pick(strings.size())], random_value()});
      if (pick(4) == 0) s.events.push_back({"e", rng(), {{"k", random_value()}}});
      if (pick(4) == 0) s.links.push_back({MakeTraceId(1), MakeSpanId(2), "", {{"k", random_value()}}, 1, 0});
      spans.push_back(std::move(s));
    }
    SCOPED_TRACE("batch " + std::to_string(batch));
    ExpectSameAsReference(spans, encoder, out, /*same_text=*/false);
  }
}

}  // namespace
}  // namespace kspan
