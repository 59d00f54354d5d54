// Random W3C trace and span ids for kernel spans, drawn once before a span is
// queued so a retried export resends the same ids.
#pragma once

#include "absl/random/random.h"
#include "exporter/span.h"

namespace kspan {

// Not thread-safe: one per producing thread. absl::BitGen is seeded from the
// OS entropy source, so ids from different hosts and restarts don't collide.
class IdGenerator {
 public:
  TraceId NewTraceId();
  SpanId NewSpanId();

 private:
  absl::BitGen gen_;
};

}  // namespace kspan
