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

// Largest answer a sender reads, compressed and inflated alike (an HTTP
// body, a gRPC response message). An OTLP answer (a partial success, a
// google.rpc.Status) is a few hundred bytes; a proxy's error page a few
// kilobytes. A larger one is not read: ExportResult::ResponseIssue.
inline constexpr std::size_t kMaxResponseBytes = 1 << 20;

// What the batcher hands to every destination. Shared and immutable, so one
// batch fans out to all destinations without copies, and a retry resends
// exactly the same spans (same ids).
struct SpanBatch {
  std::vector<Span> spans;
  // ApproximateBatchBytes(spans): the spans with their distinct resources
  // and scopes, filled in by the batcher (0 = not computed; queues compute
  // it then).
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
  // Text from the peer is escaped and bounded (EscapePeerText) by the
  // sender: it goes to logs and to the dead-letter store as it is.
  std::string message;
  // The server's throttling hint (gRPC RetryInfo, HTTP Retry-After);
  // replaces the backoff, also when longer than its cap.
  std::optional<std::chrono::milliseconds> retry_after;

  // An answer that arrived but could not be read: larger than the sender's
  // bound (compressed or inflated), or not the message the protocol says.
  // The outcome stands on the status alone (an OK is a success: the
  // collector took the spans); the queue counts the issue.
  enum class ResponseIssue { kNone, kTooLarge, kUnreadable };
  ResponseIssue response_issue = ResponseIssue::kNone;

  static ExportResult Success() { return {}; }
  static ExportResult Retryable(std::string code, std::string message) {
    ExportResult r;
    r.outcome = Outcome::kRetryable;
    r.code = std::move(code);
    r.message = std::move(message);
    return r;
  }
  static ExportResult Permanent(std::string code, std::string message) {
    ExportResult r;
    r.outcome = Outcome::kPermanent;
    r.code = std::move(code);
    r.message = std::move(message);
    return r;
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
