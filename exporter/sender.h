// The transport seam: a destination's queue and retry policy talk to a
// SpanSender, so that policy is unit-tested with a fake and each transport
// (OTLP/gRPC, console, file store) stays a small class of its own.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "exporter/span.h"

namespace kspan {

// What the batcher hands to every destination. Shared and immutable, so one
// batch fans out to all destinations without copies, and a retry resends
// exactly the same spans (same ids).
struct SpanBatch {
  std::vector<Span> spans;
  // Sum of Span::ApproximateBytes(), filled in by the batcher (0 = not
  // computed; queues compute it then).
  std::size_t approx_bytes = 0;
};
using SharedSpanBatch = std::shared_ptr<const SpanBatch>;

struct ExportResult {
  enum class Outcome {
    kSuccess,    // delivered (possibly with rejected_spans > 0)
    kRetryable,  // transient: the same batch may be sent again
    kPermanent,  // must not be retried: the batch is dropped
  };

  Outcome outcome = Outcome::kSuccess;
  // Partial success: spans the backend refused although the request
  // succeeded. Never retried.
  std::int64_t rejected_spans = 0;
  // A short, payload-free code for logs, e.g. "UNAVAILABLE" or "ENOSPC".
  std::string code = "OK";
  // Error or partial-success message, for logs (never contains span data).
  std::string message;
  // The server's throttling hint (gRPC RetryInfo, HTTP Retry-After);
  // replaces the backoff, also when longer than its cap.
  std::optional<std::chrono::milliseconds> retry_after;

  static ExportResult Success() { return {}; }
  static ExportResult Retryable(std::string code, std::string message) {
    return {Outcome::kRetryable, 0, std::move(code), std::move(message), std::nullopt};
  }
  static ExportResult Permanent(std::string code, std::string message) {
    return {Outcome::kPermanent, 0, std::move(code), std::move(message), std::nullopt};
  }
};

class SpanSender {
 public:
  using Clock = std::chrono::steady_clock;

  virtual ~SpanSender() = default;

  // Delivers one batch, giving up by `deadline` at the latest (a transport
  // may also apply its own shorter per-request timeout). Called from one
  // thread at a time (a destination with N requests in flight has N
  // senders). An empty batch is a probe: an empty export request that tells
  // whether the destination answers (circuit breaker).
  virtual ExportResult Send(const SpanBatch& batch, Clock::time_point deadline) = 0;

  // Aborts a Send() in flight on another thread, used when shutdown's
  // deadline passes. Safe to call at any time, also when nothing is in
  // flight.
  virtual void Cancel() noexcept {}
};

}  // namespace kspan
