#include "exporter/retry.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <curl/curl.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"

namespace kspan {

bool IsRetryableGrpcCode(grpc::StatusCode code, bool server_sent_retry_info) noexcept {
  switch (code) {
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DATA_LOSS:
      return true;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return server_sent_retry_info;
    default:
      return false;
  }
}

bool IsRetryableHttpStatus(long status) noexcept {
  return status == 429 || status == 502 || status == 503 || status == 504;
}

std::chrono::milliseconds ClampServerDelay(std::chrono::milliseconds delay) noexcept {
  return std::clamp(delay, std::chrono::milliseconds(0), kMaxServerRetryDelay);
}

std::chrono::milliseconds ServerDelayFromDuration(std::int64_t seconds, std::int32_t nanos) noexcept {
  // Compared in seconds before any multiplication: the fields hold whatever
  // the peer sent (TimeUtil::DurationToMilliseconds would overflow).
  const std::int64_t max_seconds =
      std::chrono::duration_cast<std::chrono::seconds>(kMaxServerRetryDelay).count();
  if (seconds < 0 || (seconds == 0 && nanos <= 0)) return std::chrono::milliseconds(0);
  if (seconds >= max_seconds) return kMaxServerRetryDelay;
  const std::int64_t ms = seconds * 1000 + std::clamp<std::int32_t>(nanos, 0, 999'999'999) / 1'000'000;
  return ClampServerDelay(std::chrono::milliseconds(ms));
}

std::optional<std::chrono::milliseconds> ParseRetryAfter(
    std::string_view value, std::chrono::system_clock::time_point now) {
  const std::string v(absl::StripAsciiWhitespace(absl::string_view(value.data(), value.size())));
  if (v.empty()) return std::nullopt;
  const std::int64_t max_seconds =
      std::chrono::duration_cast<std::chrono::seconds>(kMaxServerRetryDelay).count();
  std::uint64_t seconds = 0;
  if (v.find_first_not_of("0123456789") == std::string::npos) {
    // delay-seconds; more digits than fit are still "a long time".
    if (!absl::SimpleAtoi(v, &seconds)) return kMaxServerRetryDelay;
    if (seconds >= static_cast<std::uint64_t>(max_seconds)) return kMaxServerRetryDelay;
    return std::chrono::milliseconds(static_cast<std::int64_t>(seconds) * 1000);
  }
  // HTTP-date (IMF-fixdate, and the obsolete RFC 850 and asctime forms):
  // libcurl's date parser handles all three. The difference is taken in
  // whole seconds first: a date in the year 9999 does not fit the clock's
  // nanoseconds.
  const time_t when = curl_getdate(v.c_str(), nullptr);
  if (when == -1) return std::nullopt;
  const time_t now_s = std::chrono::system_clock::to_time_t(now);
  if (when < now_s) return std::chrono::milliseconds(0);
  if (when - now_s >= max_seconds) return kMaxServerRetryDelay;
  const auto delta = std::chrono::system_clock::from_time_t(when) - now;
  if (delta <= std::chrono::system_clock::duration::zero()) return std::chrono::milliseconds(0);
  return ClampServerDelay(std::chrono::ceil<std::chrono::milliseconds>(delta));
}

std::string_view GrpcCodeName(grpc::StatusCode code) noexcept {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    default: return "UNKNOWN_CODE";
  }
}

Backoff::Backoff(const RetryOptions& options) : options_(options) {}

std::chrono::milliseconds Backoff::Next() {
  const double initial = static_cast<double>(std::max<std::int64_t>(options_.initial_backoff.count(), 0));
  const double cap = static_cast<double>(std::max<std::int64_t>(options_.max_backoff.count(), 0));
  const double multiplier = std::max(options_.multiplier, 1.0);
  // Cap the exponent so pow() cannot overflow after many attempts.
  const double base =
      std::min(cap, initial * std::pow(multiplier, std::min(attempts_, 64)));
  ++attempts_;
  const double jittered = base * absl::Uniform(rng_, 0.8, 1.2);
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(std::min(jittered, cap))));
}

}  // namespace kspan
