// `kspan dlq list` and `kspan dlq replay [--destination D]`: the dead-letter
// stores of the configured destinations, listed or sent again through the
// same senders the agent uses (same endpoint, TLS, auth, compression).
#pragma once

#include <cstdio>
#include <string>

#include "absl/status/statusor.h"
#include "exporter/export_config.h"
#include "exporter/otlp_options.h"

namespace kspan {

struct DlqReplaySummary {
  std::size_t batches_sent = 0;
  std::size_t spans_sent = 0;
  std::size_t spans_rejected = 0;  // partial success: not kept (never retried)
  std::size_t batches_failed = 0;  // still in the store
};

// One line per dead letter: id, time, destination, spans, bytes, reason, code, message.
absl::Status DlqList(const ExportConfig& config, std::FILE* out);

// Sends every dead letter of `destination` (all destinations when empty),
// oldest first; removes each one the destination accepted. A batch that
// fails again stays (reported); a permanent failure does not stop the rest.
absl::StatusOr<DlqReplaySummary> DlqReplay(const ExportConfig& config,
                                           const std::string& destination, std::FILE* out,
                                           const EnvLookup& env);

}  // namespace kspan
