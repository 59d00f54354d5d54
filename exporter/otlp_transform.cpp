#include "exporter/otlp_transform.h"

#include <cstring>
#include <utility>
#include <variant>

#include "absl/container/flat_hash_map.h"

namespace kspan {
namespace {

namespace common = opentelemetry::proto::common::v1;
namespace trace = opentelemetry::proto::trace::v1;

// Length of the valid UTF-8 sequence starting at s[i], 0 if invalid
// (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF).
// Hand-written: protobuf 3.21 has no public UTF-8 validator and absl none.
std::size_t Utf8SequenceLength(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const auto cont = [&](std::size_t k) { return i + k < s.size() && (b(k) & 0xC0) == 0x80; };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xE0 && b(1) < 0xA0) return 0;  // overlong
    if (c == 0xED && b(1) > 0x9F) return 0;  // surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xF0 && b(1) < 0x90) return 0;  // overlong
    if (c == 0xF4 && b(1) > 0x8F) return 0;  // > U+10FFFF
    return 4;
  }
  return 0;
}

bool IsValidUtf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = Utf8SequenceLength(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

void SetString(std::string_view in, std::string* out) {
  if (IsValidUtf8(in)) {
    out->assign(in.data(), in.size());
  } else {
    *out = SanitizeUtf8(in);
  }
}

void SetValue(const AttributeValue& value, common::AnyValue* out) {
  std::visit(
      [out](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          SetString(v, out->mutable_string_value());
        } else if constexpr (std::is_same_v<T, bool>) {
          out->set_bool_value(v);
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          out->set_int_value(v);
        } else {
          static_assert(std::is_same_v<T, double>);
          out->set_double_value(v);
        }
      },
      value);
}

template <typename RepeatedKeyValue>
void SetAttributes(const Attributes& attrs, RepeatedKeyValue* out) {
  out->Reserve(static_cast<int>(attrs.size()));
  for (const auto& a : attrs) {
    auto* kv = out->Add();
    SetString(a.key, kv->mutable_key());
    SetValue(a.value, kv->mutable_value());
  }
}

template <std::size_t N>
void SetId(const std::array<std::uint8_t, N>& id, std::string* out) {
  out->assign(reinterpret_cast<const char*>(id.data()), N);
}

void SetSpan(const Span& span, trace::Span* out) {
  SetId(span.trace_id, out->mutable_trace_id());
  SetId(span.span_id, out->mutable_span_id());
  // Root spans carry no parent_span_id at all, not eight zero bytes.
  if (IsValid(span.parent_span_id)) SetId(span.parent_span_id, out->mutable_parent_span_id());
  if (!span.trace_state.empty()) SetString(span.trace_state, out->mutable_trace_state());
  out->set_flags(span.flags);
  SetString(span.name, out->mutable_name());
  // The model's enum values are the wire values (see span.h).
  out->set_kind(static_cast<trace::Span::SpanKind>(span.kind));
  out->set_start_time_unix_nano(span.start_unix_nano);
  out->set_end_time_unix_nano(span.end_unix_nano);
  SetAttributes(span.attributes, out->mutable_attributes());

  out->mutable_events()->Reserve(static_cast<int>(span.events.size()));
  for (const auto& e : span.events) {
    auto* event = out->add_events();
    event->set_time_unix_nano(e.time_unix_nano);
    SetString(e.name, event->mutable_name());
    SetAttributes(e.attributes, event->mutable_attributes());
  }
  out->mutable_links()->Reserve(static_cast<int>(span.links.size()));
  for (const auto& l : span.links) {
    auto* link = out->add_links();
    SetId(l.trace_id, link->mutable_trace_id());
    SetId(l.span_id, link->mutable_span_id());
    if (!l.trace_state.empty()) SetString(l.trace_state, link->mutable_trace_state());
    SetAttributes(l.attributes, link->mutable_attributes());
    link->set_flags(l.flags);
  }

  if (span.status_code != StatusCode::kUnset || !span.status_message.empty()) {
    auto* status = out->mutable_status();
    status->set_code(static_cast<trace::Status::StatusCode>(span.status_code));
    // The specification allows a description only with an error status.
    if (span.status_code == StatusCode::kError) SetString(span.status_message, status->mutable_message());
  }
}

}  // namespace

std::string SanitizeUtf8(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size();) {
    const std::size_t n = Utf8SequenceLength(in, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
      ++i;
    } else {
      out.append(in.substr(i, n));
      i += n;
    }
  }
  return out;
}

void AppendToExportRequest(std::span<const Span> spans, otlp::ExportTraceServiceRequest& request) {
  using ScopeKey = std::pair<const Resource*, const InstrumentationScope*>;
  absl::flat_hash_map<const Resource*, trace::ResourceSpans*> resources;
  absl::flat_hash_map<ScopeKey, trace::ScopeSpans*> scopes;

  for (const Span& span : spans) {
    const Resource* resource = span.resource.get();
    auto [rit, new_resource] = resources.try_emplace(resource, nullptr);
    if (new_resource) {
      rit->second = request.add_resource_spans();
      if (resource != nullptr) {
        SetAttributes(resource->attributes, rit->second->mutable_resource()->mutable_attributes());
      }
    }
    const InstrumentationScope* scope = span.scope.get();
    auto [sit, new_scope] = scopes.try_emplace(ScopeKey{resource, scope}, nullptr);
    if (new_scope) {
      sit->second = rit->second->add_scope_spans();
      if (scope != nullptr) {
        SetString(scope->name, sit->second->mutable_scope()->mutable_name());
        SetString(scope->version, sit->second->mutable_scope()->mutable_version());
      }
    }
    SetSpan(span, sit->second->add_spans());
  }
}

otlp::ExportTraceServiceRequest ToExportRequest(std::span<const Span> spans) {
  otlp::ExportTraceServiceRequest request;
  AppendToExportRequest(spans, request);
  return request;
}

}  // namespace kspan

namespace kspan {
namespace {

namespace common_in = opentelemetry::proto::common::v1;

AttributeValue FromAnyValue(const common_in::AnyValue& v) {
  switch (v.value_case()) {
    case common_in::AnyValue::kBoolValue: return v.bool_value();
    case common_in::AnyValue::kIntValue: return std::int64_t{v.int_value()};
    case common_in::AnyValue::kDoubleValue: return v.double_value();
    case common_in::AnyValue::kStringValue: return v.string_value();
    default:
      // Arrays, maps and bytes have no place in the span model; keep them
      // readable rather than lose the attribute.
      return v.ShortDebugString();
  }
}

template <typename RepeatedKeyValue>
Attributes FromKeyValues(const RepeatedKeyValue& in) {
  Attributes out;
  out.reserve(static_cast<std::size_t>(in.size()));
  for (const auto& kv : in) out.push_back({kv.key(), FromAnyValue(kv.value())});
  return out;
}

template <std::size_t N>
void GetId(const std::string& in, std::array<std::uint8_t, N>* out) {
  out->fill(0);
  if (in.size() == N) std::memcpy(out->data(), in.data(), N);
}

}  // namespace

std::vector<Span> FromExportRequest(const otlp::ExportTraceServiceRequest& request) {
  std::vector<Span> out;
  const auto kernel_scope = KernelScope();
  for (const auto& rs : request.resource_spans()) {
    auto resource = std::make_shared<const Resource>(
        Resource{FromKeyValues(rs.resource().attributes())});
    for (const auto& ss : rs.scope_spans()) {
      const bool kernel =
          ss.scope().name() == kernel_scope->name && ss.scope().version() == kernel_scope->version;
      std::shared_ptr<const InstrumentationScope> scope =
          kernel ? kernel_scope
                 : std::make_shared<const InstrumentationScope>(
                       InstrumentationScope{ss.scope().name(), ss.scope().version()});
      for (const auto& in : ss.spans()) {
        Span s;
        GetId(in.trace_id(), &s.trace_id);
        GetId(in.span_id(), &s.span_id);
        GetId(in.parent_span_id(), &s.parent_span_id);
        s.trace_state = in.trace_state();
        s.flags = in.flags();
        s.name = in.name();
        s.kind = static_cast<SpanKind>(in.kind());
        s.start_unix_nano = in.start_time_unix_nano();
        s.end_unix_nano = in.end_time_unix_nano();
        s.attributes = FromKeyValues(in.attributes());
        for (const auto& e : in.events()) {
          s.events.push_back({e.name(), e.time_unix_nano(), FromKeyValues(e.attributes())});
        }
        for (const auto& l : in.links()) {
          SpanLink link;
          GetId(l.trace_id(), &link.trace_id);
          GetId(l.span_id(), &link.span_id);
          link.trace_state = l.trace_state();
          link.attributes = FromKeyValues(l.attributes());
          link.flags = l.flags();
          s.links.push_back(std::move(link));
        }
        s.status_code = static_cast<StatusCode>(in.status().code());
        s.status_message = in.status().message();
        s.resource = resource;
        s.scope = scope;
        s.source = kernel ? SpanSource::kKernel : SpanSource::kApp;
        out.push_back(std::move(s));
      }
    }
  }
  return out;
}

}  // namespace kspan
