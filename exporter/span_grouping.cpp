#include "exporter/span_grouping.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"

namespace kspan {

void SpanGrouping::Group(std::span<const Span> spans) {
  resources_.clear();
  scopes_.clear();
  const std::size_t n = spans.size();
  span_group_.resize(n);

  // Consecutive spans usually share resource and scope: the previous span's
  // group is checked before the maps.
  using ScopeKey = std::pair<const Resource*, const InstrumentationScope*>;
  absl::flat_hash_map<const Resource*, std::uint32_t> resource_index;
  absl::flat_hash_map<ScopeKey, std::uint32_t> scope_index;
  const Resource* last_resource = nullptr;
  const InstrumentationScope* last_scope = nullptr;
  std::uint32_t last_group = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const Resource* resource = spans[i].resource.get();
    const InstrumentationScope* scope = spans[i].scope.get();
    if (i == 0 || resource != last_resource || scope != last_scope) {
      auto [rit, new_resource] =
          resource_index.try_emplace(resource, static_cast<std::uint32_t>(resources_.size()));
      if (new_resource) resources_.push_back(resource);
      auto [sit, new_scope] = scope_index.try_emplace(ScopeKey{resource, scope},
                                                      static_cast<std::uint32_t>(scopes_.size()));
      if (new_scope) scopes_.push_back({rit->second, scope, 0, 0});
      last_resource = resource;
      last_scope = scope;
      last_group = sit->second;
    }
    span_group_[i] = last_group;
    ++scopes_[last_group].span_count;
  }

  scope_order_.resize(scopes_.size());
  for (std::uint32_t g = 0; g < scopes_.size(); ++g) scope_order_[g] = g;
  std::stable_sort(scope_order_.begin(), scope_order_.end(), [this](std::uint32_t a, std::uint32_t b) {
    return scopes_[a].resource_group < scopes_[b].resource_group;
  });
  std::uint32_t position = 0;
  for (const std::uint32_t g : scope_order_) {
    scopes_[g].first = position;
    position += scopes_[g].span_count;
  }
  order_.resize(n);
  cursor_.resize(scopes_.size());
  for (std::uint32_t g = 0; g < scopes_.size(); ++g) cursor_[g] = scopes_[g].first;
  for (std::size_t i = 0; i < n; ++i) order_[cursor_[span_group_[i]]++] = static_cast<std::uint32_t>(i);
}

}  // namespace kspan
