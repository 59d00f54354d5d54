// The direct wire encoder against the transform: for the same spans, its
// bytes must parse into exactly the message ToExportRequest() builds (and,
// fields being written in field-number order, be the very bytes protobuf
// serializes that message to).
#include "exporter/otlp_wire.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "exporter/otlp_transform.h"
#include "google/protobuf/util/message_differencer.h"
#include "tests/exporter/test_spans.h"

namespace kspan {
namespace {

using google::protobuf::util::MessageDifferencer;
using testing::MakeResource;
using testing::MakeSpan;
using testing::MakeSpanId;
using testing::MakeTraceId;

// Checks one batch; `encoder` may be reused from earlier batches.
void ExpectSameAsTransform(const std::vector<Span>& spans, ExportRequestEncoder& encoder) {
  const otlp::ExportTraceServiceRequest expected = ToExportRequest(spans);

  std::string wire(encoder.Plan(spans), '\0');
  encoder.Write(reinterpret_cast<std::uint8_t*>(wire.data()));

  otlp::ExportTraceServiceRequest parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire));
  std::string diff;
  MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differencer.Compare(expected, parsed)) << diff;
  EXPECT_TRUE(MessageDifferencer::Equals(expected, parsed));

  std::string serialized;
  ASSERT_TRUE(expected.SerializeToString(&serialized));
  EXPECT_EQ(wire.size(), serialized.size());
  EXPECT_TRUE(wire == serialized) << "bytes differ from protobuf's serialization";
}

void ExpectSameAsTransform(const std::vector<Span>& spans) {
  ExportRequestEncoder encoder;
  ExpectSameAsTransform(spans, encoder);
  EXPECT_EQ(EncodeExportRequest(spans), ToExportRequest(spans).SerializeAsString());
}

TEST(OtlpWireTest, EmptyBatchIsAnEmptyRequest) {
  EXPECT_EQ(EncodeExportRequest({}), "");
  ExpectSameAsTransform({});
}

TEST(OtlpWireTest, OneKernelSpan) { ExpectSameAsTransform({MakeSpan(1)}); }

TEST(OtlpWireTest, IdsParentTraceStateFlagsKindTimesAndStatus) {
  Span s = MakeSpan(1);
  s.parent_span_id = MakeSpanId(99);
  s.trace_state = "vendor=1,other=two";
  s.flags = 0x301;
  s.kind = SpanKind::kServer;
  s.status_code = StatusCode::kError;
  s.status_message = "connection refused";

  Span root = MakeSpan(2);  // all-zero parent: no parent_span_id field
  root.kind = SpanKind::kUnspecified;
  root.status_code = StatusCode::kUnset;
  root.flags = 0xFFFFFFFF;

  Span zero;  // every field at its default, no resource, no scope
  zero.kind = SpanKind::kUnspecified;

  Span ok_with_message = MakeSpan(3);  // message dropped without an error
  ok_with_message.status_code = StatusCode::kOk;
  ok_with_message.status_message = "ignored";

  Span unset_with_message = MakeSpan(4);  // empty Status message present
  unset_with_message.status_code = StatusCode::kUnset;
  unset_with_message.status_message = "ignored too";

  Span error_without_message = MakeSpan(5);
  error_without_message.status_code = StatusCode::kError;

  Span times = MakeSpan(6);
  times.start_unix_nano = 0;
  times.end_unix_nano = std::numeric_limits<std::uint64_t>::max();

  for (int k = 0; k <= 5; ++k) {
    Span kind = MakeSpan(10 + k);
    kind.kind = static_cast<SpanKind>(k);
    ExpectSameAsTransform({kind});
  }
  ExpectSameAsTransform({s, root, zero, ok_with_message, unset_with_message, error_without_message, times});
}

TEST(OtlpWireTest, EveryAttributeType) {
  Span s = MakeSpan(1);
  s.attributes = {{"str", std::string("v")},
                  {"empty.string", std::string()},
                  {"", std::string("empty key")},
                  {"", std::int64_t{0}},
                  {"true", true},
                  {"false", false},
                  {"zero", std::int64_t{0}},
                  {"one", std::int64_t{1}},
                  {"negative", std::int64_t{-5'000'000'000}},
                  {"min", std::numeric_limits<std::int64_t>::min()},
                  {"max", std::numeric_limits<std::int64_t>::max()},
                  {"dbl", 0.25},
                  {"dbl.zero", 0.0},
                  {"dbl.negative.zero", -0.0},
                  {"dbl.inf", std::numeric_limits<double>::infinity()},
                  {"dbl.min", std::numeric_limits<double>::denorm_min()},
                  {"dbl.lowest", std::numeric_limits<double>::lowest()}};
  ExpectSameAsTransform({s});
}

TEST(OtlpWireTest, EventsAndLinks) {
  Span s = MakeSpan(1);
  s.events = {{"retransmit", 1'700'000'000'000'000'123ull, {{"tcp.seq", std::int64_t{42}}, {"fast", true}}},
              {"", 0, {}},
              {"no attributes", 5, {}}};
  SpanLink full;
  full.trace_id = MakeTraceId(7);
  full.span_id = MakeSpanId(7);
  full.trace_state = "k=v";
  full.flags = 0x101;
  full.attributes = {{"link.kind", std::string("follows")}, {"weight", 0.5}};
  SpanLink bare;  // all-zero ids still go out as ids
  s.links = {full, bare};
  ExpectSameAsTransform({s});
}

TEST(OtlpWireTest, ResourcesAndScopesGroupedInFirstSeenOrder) {
  const auto curl = MakeResource("curl", 1);
  const auto nginx = MakeResource("nginx", 2);
  const auto empty_resource = std::make_shared<const Resource>();
  const auto app = std::make_shared<const InstrumentationScope>(InstrumentationScope{"app", "1.2.3"});
  const auto unnamed = std::make_shared<const InstrumentationScope>();
  // A second scope equal in value but not in identity: a group of its own.
  const auto app_copy = std::make_shared<const InstrumentationScope>(*app);

  std::vector<Span> spans;
  const std::vector<std::shared_ptr<const Resource>> resources = {curl, nginx, nullptr, empty_resource};
  const std::vector<std::shared_ptr<const InstrumentationScope>> scopes = {KernelScope(), app, nullptr,
                                                                          unnamed, app_copy};
  for (int i = 0; i < 60; ++i) {
    Span s = MakeSpan(i, resources[static_cast<std::size_t>((i * 7) % 4)]);
    s.resource = resources[static_cast<std::size_t>((i * 7) % 4)];
    s.scope = scopes[static_cast<std::size_t>((i * 3 + i / 5) % 5)];
    spans.push_back(std::move(s));
  }
  ExpectSameAsTransform(spans);
}

TEST(OtlpWireTest, Utf8ValidAndInvalidEverywhere) {
  const std::string valid = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xE4\xB8\xAD\xE6\x96\x87";
  const std::string invalid = "a\xFF" "b \xC0\xAF \xED\xA0\x80 \xF4\x90\x80\x80 trunc\xE2\x82";
  auto resource = std::make_shared<const Resource>(
      Resource{{{valid, invalid}, {invalid, valid}, {"r", std::int64_t{1}}}});
  auto scope = std::make_shared<const InstrumentationScope>(InstrumentationScope{invalid, valid});
  Span s = MakeSpan(1, resource);
  s.scope = scope;
  s.name = invalid;
  s.trace_state = invalid;
  s.status_code = StatusCode::kError;
  s.status_message = invalid + valid;
  s.attributes = {{valid, valid}, {invalid, invalid}, {"bytes", std::string("\x00\x01\x80", 3)}};
  s.events = {{invalid, 1, {{invalid, valid}}}};
  SpanLink l;
  l.trace_state = valid;
  l.attributes = {{valid, invalid}};
  s.links = {l};
  Span t = MakeSpan(2, resource);
  t.scope = scope;
  t.name = valid;
  ExpectSameAsTransform({s, t});
}

TEST(OtlpWireTest, LongStringsNeedMultiByteLengths) {
  Span s = MakeSpan(1);
  s.name = std::string(200, 'n');                   // two-byte length
  s.attributes = {{std::string(300, 'k'), std::string(70'000, 'v')}};  // three-byte lengths
  s.events = {{std::string(20'000, 'e'), 9, {{"x", std::string(130, 'y')}}}};
  ExpectSameAsTransform({s});
}

// Many varied spans, several batches through one reused encoder.
TEST(OtlpWireTest, LargeRandomBatchesThroughOneEncoder) {
  std::mt19937_64 rng(12345);
  auto pick = [&](std::uint64_t n) { return rng() % n; };
  const std::vector<std::string> strings = {"",         "a",       "connect",   "caf\xC3\xA9",
                                            "bad\xFF",  std::string(129, 'x'), "10.0.0.7",
                                            "\xE2\x82"};
  std::vector<std::shared_ptr<const Resource>> resources = {nullptr};
  for (int r = 0; r < 5; ++r) resources.push_back(MakeResource("svc" + std::to_string(r), r));
  std::vector<std::shared_ptr<const InstrumentationScope>> scopes = {nullptr, KernelScope()};
  scopes.push_back(std::make_shared<const InstrumentationScope>(InstrumentationScope{"s", "1"}));

  auto random_value = [&]() -> AttributeValue {
    switch (pick(4)) {
      case 0: return strings[pick(strings.size())];
      case 1: return pick(2) == 0;
      case 2: return static_cast<std::int64_t>(rng());
      default: return static_cast<double>(static_cast<std::int64_t>(rng())) / 7.0;
    }
  };
  auto random_attributes = [&](std::size_t max) {
    Attributes a(pick(max + 1));
    for (auto& kv : a) kv = {strings[pick(strings.size())], random_value()};
    return a;
  };

  ExportRequestEncoder encoder;
  for (const std::size_t batch_size : {1u, 2048u, 7u, 5000u, 0u, 300u}) {
    std::vector<Span> spans(batch_size);
    for (auto& s : spans) {
      for (auto& b : s.trace_id) b = static_cast<std::uint8_t>(rng());
      for (auto& b : s.span_id) b = static_cast<std::uint8_t>(rng());
      if (pick(2) == 0) {
        for (auto& b : s.parent_span_id) b = static_cast<std::uint8_t>(rng());
      }
      s.trace_state = pick(4) == 0 ? strings[pick(strings.size())] : "";
      s.flags = pick(3) == 0 ? static_cast<std::uint32_t>(rng()) : 0;
      s.name = strings[pick(strings.size())];
      s.kind = static_cast<SpanKind>(pick(6));
      s.start_unix_nano = rng();
      s.end_unix_nano = pick(8) == 0 ? 0 : rng();
      s.attributes = random_attributes(12);
      for (std::size_t e = pick(3); e > 0; --e) {
        s.events.push_back({strings[pick(strings.size())], rng(), random_attributes(3)});
      }
      for (std::size_t l = pick(3); l > 0; --l) {
        SpanLink link;
        for (auto& b : link.trace_id) b = static_cast<std::uint8_t>(rng());
        link.trace_state = strings[pick(strings.size())];
        link.attributes = random_attributes(2);
        link.flags = static_cast<std::uint32_t>(pick(512));
        s.links.push_back(std::move(link));
      }
      s.status_code = static_cast<StatusCode>(pick(3));
      s.status_message = strings[pick(strings.size())];
      s.resource = resources[pick(resources.size())];
      s.scope = scopes[pick(scopes.size())];
    }
    SCOPED_TRACE(batch_size);
    ExpectSameAsTransform(spans, encoder);
  }
}

}  // namespace
}  // namespace kspan
