#include "exporter/retry.h"

#include <gtest/gtest.h>

#include <limits>
#include <map>
#include <set>

namespace kspan {
namespace {

using std::chrono::milliseconds;

TEST(RetryTest, ClassifiesEveryGrpcCodeAsTheOtlpSpecificationSays) {
  // The table of the OTLP specification, "OTLP/gRPC Response".
  const std::map<grpc::StatusCode, bool> table = {
      {grpc::StatusCode::OK, false},
      {grpc::StatusCode::CANCELLED, true},
      {grpc::StatusCode::UNKNOWN, false},
      {grpc::StatusCode::INVALID_ARGUMENT, false},
      {grpc::StatusCode::DEADLINE_EXCEEDED, true},
      {grpc::StatusCode::NOT_FOUND, false},
      {grpc::StatusCode::ALREADY_EXISTS, false},
      {grpc::StatusCode::PERMISSION_DENIED, false},
      {grpc::StatusCode::UNAUTHENTICATED, false},
      {grpc::StatusCode::RESOURCE_EXHAUSTED, false},
      {grpc::StatusCode::FAILED_PRECONDITION, false},
      {grpc::StatusCode::ABORTED, true},
      {grpc::StatusCode::OUT_OF_RANGE, true},
      {grpc::StatusCode::UNIMPLEMENTED, false},
      {grpc::StatusCode::INTERNAL, false},
      {grpc::StatusCode::UNAVAILABLE, true},
      {grpc::StatusCode::DATA_LOSS, true},
  };
  ASSERT_EQ(table.size(), 17u);
  for (const auto& [code, retryable] : table) {
    EXPECT_EQ(IsRetryableGrpcCode(code, false), retryable) << GrpcCodeName(code);
    EXPECT_NE(GrpcCodeName(code), "UNKNOWN_CODE");
  }
}

TEST(RetryTest, ResourceExhaustedIsRetryableOnlyWithRetryInfo) {
  EXPECT_FALSE(IsRetryableGrpcCode(grpc::StatusCode::RESOURCE_EXHAUSTED, false));
  EXPECT_TRUE(IsRetryableGrpcCode(grpc::StatusCode::RESOURCE_EXHAUSTED, true));
  // RetryInfo does not make a permanent error retryable.
  EXPECT_FALSE(IsRetryableGrpcCode(grpc::StatusCode::INVALID_ARGUMENT, true));
}

TEST(RetryTest, BackoffGrowsExponentiallyWithJitterUpToTheCap) {
  RetryOptions options{.initial_backoff = milliseconds(100), .max_backoff = milliseconds(1000),
                       .multiplier = 2.0, .max_elapsed = milliseconds(0)};
  for (int round = 0; round < 20; ++round) {
    Backoff backoff(options);
    const double expected[] = {100, 200, 400, 800, 1000, 1000};
    for (double e : expected) {
      const auto d = backoff.Next().count();
      EXPECT_GE(d, static_cast<long>(e * 0.8) - 1);
      EXPECT_LE(d, std::min<long>(static_cast<long>(e * 1.2) + 1, 1000));
    }
    EXPECT_EQ(backoff.attempts(), 6);
    backoff.Reset();
    EXPECT_LE(backoff.Next().count(), 121);
  }
}

TEST(RetryTest, BackoffIsJittered) {
  RetryOptions options{.initial_backoff = milliseconds(1000), .max_backoff = milliseconds(10000),
                       .multiplier = 1.5, .max_elapsed = milliseconds(0)};
  std::set<long> firsts;
  for (int i = 0; i < 50; ++i) firsts.insert(Backoff(options).Next().count());
  EXPECT_GT(firsts.size(), 5u) << "delays must not be in lockstep";
}


TEST(RetryTest, ServerDelaysAreClampedWithoutOverflow) {
  using std::chrono::hours;
  EXPECT_EQ(ServerDelayFromDuration(2, 500'000'000), milliseconds(2500));
  EXPECT_EQ(ServerDelayFromDuration(0, 0), milliseconds(0));
  EXPECT_EQ(ServerDelayFromDuration(-1, 0), milliseconds(0));
  EXPECT_EQ(ServerDelayFromDuration(0, -1), milliseconds(0));
  EXPECT_EQ(ServerDelayFromDuration(3599, 2'000'000'000), milliseconds(3599 * 1000 + 999));
  EXPECT_EQ(ServerDelayFromDuration(315'576'000'000, 0), kMaxServerRetryDelay);
  EXPECT_EQ(ServerDelayFromDuration(std::numeric_limits<std::int64_t>::max(), 0), kMaxServerRetryDelay);
  EXPECT_EQ(ClampServerDelay(milliseconds(-5)), milliseconds(0));
  EXPECT_EQ(ClampServerDelay(hours(24 * 365)), kMaxServerRetryDelay);

  const auto now = std::chrono::system_clock::now();
  EXPECT_EQ(ParseRetryAfter("7", now), milliseconds(7000));
  EXPECT_EQ(ParseRetryAfter(" 0 ", now), milliseconds(0));
  EXPECT_EQ(ParseRetryAfter("-5", now), std::nullopt);
  EXPECT_EQ(ParseRetryAfter("soon", now), std::nullopt);
  EXPECT_EQ(ParseRetryAfter("31536000", now), kMaxServerRetryDelay);
  EXPECT_EQ(ParseRetryAfter("184467440737095516160", now), kMaxServerRetryDelay);
  EXPECT_EQ(ParseRetryAfter("Fri, 31 Dec 9999 23:59:59 GMT", now), kMaxServerRetryDelay);
  EXPECT_EQ(ParseRetryAfter("Thu, 01 Jan 1970 00:00:01 GMT", now), milliseconds(0));
}

}  // namespace
}  // namespace kspan
