#include "exporter/span.h"

#include <algorithm>

#include "absl/strings/escaping.h"

namespace kspan {
namespace {

template <std::size_t N>
bool AnyNonZero(const std::array<std::uint8_t, N>& id) noexcept {
  return std::any_of(id.begin(), id.end(), [](std::uint8_t b) { return b != 0; });
}

template <std::size_t N>
std::string Hex(const std::array<std::uint8_t, N>& id) {
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(id.data()), id.size()));
}

}  // namespace

bool IsValid(const TraceId& id) noexcept { return AnyNonZero(id); }
bool IsValid(const SpanId& id) noexcept { return AnyNonZero(id); }
std::string ToHex(const TraceId& id) { return Hex(id); }
std::string ToHex(const SpanId& id) { return Hex(id); }

const AttributeValue* FindAttribute(const Attributes& attrs, std::string_view key) noexcept {
  for (const auto& a : attrs) {
    if (a.key == key) return &a.value;
  }
  return nullptr;
}

std::shared_ptr<const InstrumentationScope> KernelScope() {
  static const auto scope = std::make_shared<const InstrumentationScope>(
      InstrumentationScope{"kspan", KSPAN_VERSION});
  return scope;
}

std::size_t Span::ApproximateBytes() const noexcept {
  std::size_t n = sizeof(Span) + name.size() + trace_state.size() + status_message.size();
  auto attrs_bytes = [](const Attributes& attrs) {
    std::size_t b = 0;
    for (const auto& a : attrs) {
      b += sizeof(Attribute) + a.key.size();
      if (const auto* s = std::get_if<std::string>(&a.value)) b += s->size();
    }
    return b;
  };
  n += attrs_bytes(attributes);
  for (const auto& e : events) n += sizeof(SpanEvent) + e.name.size() + attrs_bytes(e.attributes);
  for (const auto& l : links) n += sizeof(SpanLink) + l.trace_state.size() + attrs_bytes(l.attributes);
  return n;
}

}  // namespace kspan
