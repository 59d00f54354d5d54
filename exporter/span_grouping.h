// Spans grouped as an OTLP ExportTraceServiceRequest carries them: by
// resource pointer, then scope pointer, in order of first appearance (as
// otlp_transform's ToExportRequest does). Shared by the direct encoders
// (otlp_wire.h, otlp_json_writer.h); keep one per encoder: its buffers are
// reused from one batch to the next.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "exporter/span.h"

namespace kspan {

class SpanGrouping {
 public:
  struct ScopeGroup {
    std::uint32_t resource_group;  // index into resources()
    const InstrumentationScope* scope;
    std::uint32_t span_count;
    std::uint32_t first;  // first position in order()
  };

  void Group(std::span<const Span> spans);

  const std::vector<const Resource*>& resources() const { return resources_; }
  const std::vector<ScopeGroup>& scopes() const { return scopes_; }
  // Scope groups by resource group (stable: first appearance within each).
  const std::vector<std::uint32_t>& scope_order() const { return scope_order_; }
  // The scope group of span `i`.
  std::uint32_t group_of(std::size_t i) const { return span_group_[i]; }
  // Span indices, scope group after scope group in scope_order() (stable:
  // batch order within each).
  const std::vector<std::uint32_t>& order() const { return order_; }

 private:
  std::vector<const Resource*> resources_;
  std::vector<ScopeGroup> scopes_;
  std::vector<std::uint32_t> scope_order_;
  std::vector<std::uint32_t> span_group_;
  std::vector<std::uint32_t> order_;
  std::vector<std::uint32_t> cursor_;  // scratch for ordering
};

}  // namespace kspan
