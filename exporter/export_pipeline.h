// The one shared export path: Submit() -> Batcher -> a queue per destination
// -> a sender per destination (retry, backoff), every span counted.
//
// For every destination, at any time:
//   accepted = exported + dropped(by reason) + queued/in flight
// and after Shutdown() nothing is in flight.
#pragma once

#include <chrono>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "exporter/batcher.h"
#include "exporter/export_config.h"
#include "exporter/otlp_options.h"
#include "exporter/sender.h"
#include "exporter/self_metrics.h"
#include "exporter/span.h"

namespace kspan {

// The sender for one destination (one per request in flight), also used by
// `kspan dlq replay`.
absl::StatusOr<std::unique_ptr<SpanSender>> MakeSpanSender(const DestinationConfig& d,
                                                          const EnvLookup& env);

class ExportPipeline {
 public:
  virtual ~ExportPipeline() = default;

  static absl::StatusOr<std::unique_ptr<ExportPipeline>> Create(const ExportConfig& config,
                                                                MetricsRegistry& metrics);

  // Never blocks on the network. Returns false when the span was dropped
  // because the batcher's queue is full; the drop is counted.
  virtual bool Submit(Span span) noexcept = 0;

  // Admission for a whole request (the OTLP receiver): every span queued or
  // none (see Batcher::SubmitBatch). Never blocks.
  virtual SubmitResult SubmitBatch(std::vector<Span>&& spans) noexcept = 0;

  // Exports what is queued, waiting at most `deadline`, then stops the
  // senders. Whatever could not be delivered is counted as dropped
  // (reason "shutdown"). Idempotent.
  virtual void Shutdown(std::chrono::milliseconds deadline) = 0;
};

}  // namespace kspan
