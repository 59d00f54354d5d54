// Kernel events -> kspan spans: names, semantic-convention attributes, status,
// Unix times, fresh W3C ids and the process's resource.
#pragma once

#include <functional>
#include <string>

#include "exporter/self_metrics.h"
#include "exporter/span.h"
#include "userspace/clock_sync.h"
#include "userspace/event_decoder.h"
#include "userspace/id_generator.h"
#include "userspace/process_resources.h"

namespace kspan {

using SpanConsumer = std::function<void(Span&&)>;

class SpanAssembler final : public KernelEventHandler {
 public:
  SpanAssembler(ClockSync& clock, ProcessResources& resources, MetricsRegistry& metrics,
                SpanConsumer consumer);

  void OnTcpConnect(const kspan_tcp_connect_event& event) noexcept override;

  // Exposed for tests: the span for one event, without handing it on.
  Span BuildTcpConnect(const kspan_tcp_connect_event& event);

 private:
  ClockSync& clock_;
  ProcessResources& resources_;
  IdGenerator ids_;
  SpanConsumer consumer_;
  Counter& assembled_;
};

// "127.0.0.1", "::1": the textual address of a family/bytes pair.
std::string FormatAddress(std::uint16_t family, const std::uint8_t* addr);

// "ECONNREFUSED" and a human reason ("connection refused") for an errno.
std::string ErrnoName(int err);

}  // namespace kspan
