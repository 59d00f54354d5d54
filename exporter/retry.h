// Retry policy of the OTLP specification: which failures may be retried, and
// the exponential backoff with jitter between attempts.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/random/random.h"
#include "exporter/export_config.h"
#include "grpcpp/support/status_code_enum.h"

namespace kspan {

// The OTLP/gRPC retry table: CANCELLED, DEADLINE_EXCEEDED, ABORTED,
// OUT_OF_RANGE, UNAVAILABLE and DATA_LOSS are retryable; RESOURCE_EXHAUSTED
// only when the server sent RetryInfo (it can recover); all others never.
bool IsRetryableGrpcCode(grpc::StatusCode code, bool server_sent_retry_info) noexcept;

// The OTLP/HTTP retry table: 429, 502, 503 and 504 are retryable; every
// other 4xx and 5xx never is. (Connection failures are retryable too; the
// sender decides those from the transport error.)
bool IsRetryableHttpStatus(long status) noexcept;

// The longest wait a server's RetryInfo or Retry-After is followed for;
// longer requests are cut to this. Without a bound, a hostile or broken
// answer (a RetryInfo of 10,000 years) overflows the clock arithmetic, which
// turns the wait negative: the batch is retried at once, in a loop.
inline constexpr std::chrono::milliseconds kMaxServerRetryDelay = std::chrono::hours(1);

// A delay a server asked for, within [0, kMaxServerRetryDelay].
std::chrono::milliseconds ClampServerDelay(std::chrono::milliseconds delay) noexcept;

// google.rpc.RetryInfo.retry_delay (a protobuf Duration, any values a peer
// sent) as a clamped delay. Never overflows.
std::chrono::milliseconds ServerDelayFromDuration(std::int64_t seconds, std::int32_t nanos) noexcept;

// An HTTP Retry-After value (RFC 9110): delay-seconds or an HTTP-date,
// relative to `now`, clamped (ClampServerDelay). A date in the past means
// "now" (0); nullopt when the value is neither.
std::optional<std::chrono::milliseconds> ParseRetryAfter(
    std::string_view value, std::chrono::system_clock::time_point now);

// "UNAVAILABLE" etc., for logs and results.
std::string_view GrpcCodeName(grpc::StatusCode code) noexcept;

// Delays between attempts at one batch: initial_backoff * multiplier^n,
// capped at max_backoff, each randomized by +-20% so that many agents
// recovering from the same outage do not retry in lockstep.
class Backoff {
 public:
  explicit Backoff(const RetryOptions& options);

  // The delay before the next attempt; grows on every call.
  std::chrono::milliseconds Next();
  void Reset() noexcept { attempts_ = 0; }
  int attempts() const noexcept { return attempts_; }

 private:
  RetryOptions options_;
  int attempts_ = 0;
  absl::BitGen rng_;
};

}  // namespace kspan
