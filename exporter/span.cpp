#include "exporter/span.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "nlohmann/json.hpp"

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

namespace {

nlohmann::json ValueJson(const AttributeValue& value) {
  return std::visit(
      [](const auto& v) -> nlohmann::json {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, BytesValue>) {
          return absl::Base64Escape(v.data);
        } else if constexpr (std::is_same_v<T, ArrayValue>) {
          nlohmann::json a = nlohmann::json::array();
          for (const auto& e : v) a.push_back(ValueJson(e));
          return a;
        } else if constexpr (std::is_same_v<T, KeyValueList>) {
          nlohmann::json o = nlohmann::json::object();
          for (const auto& kv : v) o[kv.key] = ValueJson(kv.value);
          return o;
        } else if constexpr (std::is_same_v<T, std::monostate>) {
          return nullptr;
        } else {
          return v;
        }
      },
      value.variant());
}

std::size_t ValueBytes(const AttributeValue& v) noexcept {
  if (const auto* s = std::get_if<std::string>(&v)) return s->size();
  if (const auto* b = std::get_if<BytesValue>(&v)) return b->data.size();
  if (const auto* a = std::get_if<ArrayValue>(&v)) {
    std::size_t n = 0;
    for (const auto& e : *a) n += sizeof(AttributeValue) + ValueBytes(e);
    return n;
  }
  if (const auto* kv = std::get_if<KeyValueList>(&v)) return ApproximateBytes(*kv);
  return 0;
}

}  // namespace

std::string AttributeValueText(const AttributeValue& value) {
  if (const auto* s = std::get_if<std::string>(&value)) return *s;
  if (std::holds_alternative<std::monostate>(value)) return {};
  const nlohmann::json j = ValueJson(value);
  if (j.is_string()) return j.get<std::string>();
  // Invalid UTF-8 in nested strings is replaced rather than thrown on.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::size_t ApproximateBytes(const Attributes& attrs) noexcept {
  std::size_t b = 0;
  for (const auto& a : attrs) b += sizeof(Attribute) + a.key.size() + ValueBytes(a.value);
  return b;
}

namespace {
// make_shared's control block (two counts and a vtable pointer) beside
// the object.
constexpr std::size_t kSharedControlBytes = 16;
}  // namespace

std::size_t ApproximateBytes(const Resource& r) noexcept {
  return sizeof(Resource) + kSharedControlBytes + kspan::ApproximateBytes(r.attributes) +
         r.schema_url.size();
}

std::size_t ApproximateBytes(const InstrumentationScope& s) noexcept {
  return sizeof(InstrumentationScope) + kSharedControlBytes + s.name.size() + s.version.size() +
         kspan::ApproximateBytes(s.attributes) + s.schema_url.size();
}

std::size_t ApproximateBatchBytes(std::span<const Span> spans) {
  std::size_t n = 0;
  absl::flat_hash_set<const void*> seen;
  for (const auto& s : spans) {
    n += s.ApproximateBytes();
    if (s.resource && seen.insert(s.resource.get()).second) n += ApproximateBytes(*s.resource);
    if (s.scope && seen.insert(s.scope.get()).second) n += ApproximateBytes(*s.scope);
  }
  return n;
}

std::size_t Span::ApproximateBytes() const noexcept {
  std::size_t n = sizeof(Span) + name.size() + trace_state.size() + status_message.size();
  n += kspan::ApproximateBytes(attributes);
  for (const auto& e : events) n += sizeof(SpanEvent) + e.name.size() + kspan::ApproximateBytes(e.attributes);
  for (const auto& l : links) {
    n += sizeof(SpanLink) + l.trace_state.size() + kspan::ApproximateBytes(l.attributes);
  }
  return n;
}

}  // namespace kspan
