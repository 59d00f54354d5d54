#include "exporter/span.h"

#include <gtest/gtest.h>

#include "tests/exporter/test_spans.h"

namespace kspan {
namespace {

TEST(SpanTest, AllZeroIdsAreInvalid) {
  EXPECT_FALSE(IsValid(TraceId{}));
  EXPECT_FALSE(IsValid(SpanId{}));
  TraceId t{};
  t[15] = 1;
  SpanId s{};
  s[0] = 0x80;
  EXPECT_TRUE(IsValid(t));
  EXPECT_TRUE(IsValid(s));
}

TEST(SpanTest, HexIsLowerCaseAndFullWidth) {
  TraceId t{};
  t[0] = 0xAB;
  t[15] = 0x0F;
  EXPECT_EQ(ToHex(t), "ab00000000000000000000000000000f");
  SpanId s = {0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0x01, 0x02, 0x03};
  EXPECT_EQ(ToHex(s), "deadbeef00010203");
}

TEST(SpanTest, FindAttributeReturnsTypedValueOrNull) {
  Attributes attrs = {{"a", std::string("x")}, {"b", std::int64_t{7}}};
  ASSERT_NE(FindAttribute(attrs, "b"), nullptr);
  EXPECT_EQ(std::get<std::int64_t>(*FindAttribute(attrs, "b")), 7);
  EXPECT_EQ(FindAttribute(attrs, "c"), nullptr);
}

TEST(SpanTest, KernelScopeIsSharedAndVersioned) {
  EXPECT_EQ(KernelScope().get(), KernelScope().get());
  EXPECT_EQ(KernelScope()->name, "kspan");
  EXPECT_EQ(KernelScope()->version, KSPAN_VERSION);
}

TEST(SpanTest, ApproximateBytesGrowsWithContent) {
  Span small = testing::MakeSpan(1);
  Span big = small;
  big.attributes.push_back({"http.url", std::string(1000, 'x')});
  big.events.push_back({"retransmit", 1, {{"k", std::string(100, 'y')}}});
  big.links.push_back({});
  EXPECT_GT(big.ApproximateBytes(), small.ApproximateBytes() + 1100);
}


TEST(SpanTest, BatchBytesCountEachSharedResourceAndScopeOnce) {
  // A process's resource is shared by its kernel spans; an app's 3 MiB
  // resource attribute arrives with one span.
  const auto small = testing::MakeResource("curl", 1);
  const auto big = std::make_shared<const Resource>(
      Resource{{{"blob", std::string(3 << 20, 'x')}}});
  std::vector<Span> spans;
  for (int i = 0; i < 100; ++i) spans.push_back(testing::MakeSpan(i, small));
  std::size_t own = 0;
  for (const auto& s : spans) own += s.ApproximateBytes();
  EXPECT_EQ(ApproximateBatchBytes(spans),
            own + ApproximateBytes(*small) + ApproximateBytes(*KernelScope()));

  spans.push_back(testing::MakeSpan(100, big));
  const std::size_t with_big = ApproximateBatchBytes(spans);
  EXPECT_GE(with_big, own + (3u << 20));
  EXPECT_LT(with_big, own + (3u << 20) + 4096);
  // The span's own size leaves the resource out: shared, it is counted by
  // whatever holds the spans.
  EXPECT_LT(spans.back().ApproximateBytes(), 1024u);
  EXPECT_GE(ApproximateBytes(*big), 3u << 20);
}

}  // namespace
}  // namespace kspan
