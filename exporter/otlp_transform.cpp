#include "exporter/otlp_transform.h"

#include <algorithm>
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

void SetString(std::string_view in, std::string* out) {
  if (IsValidUtf8(in)) {
    out->assign(in.data(), in.size());
  } else {
    *out = SanitizeUtf8(in);
  }
}

template <typename RepeatedKeyValue>
void SetAttributes(const Attributes& attrs, RepeatedKeyValue* out);

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
        } else if constexpr (std::is_same_v<T, double>) {
          out->set_double_value(v);
        } else if constexpr (std::is_same_v<T, BytesValue>) {
          out->set_bytes_value(v.data);
        } else if constexpr (std::is_same_v<T, ArrayValue>) {
          auto* array = out->mutable_array_value();
          array->mutable_values()->Reserve(static_cast<int>(v.size()));
          for (const auto& e : v) SetValue(e, array->add_values());
        } else if constexpr (std::is_same_v<T, KeyValueList>) {
          SetAttributes(v, out->mutable_kvlist_value()->mutable_values());
        } else {
          static_assert(std::is_same_v<T, std::monostate>);  // an empty AnyValue
        }
      },
      value.variant());
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
  out->set_dropped_attributes_count(span.dropped_attributes_count);
  out->set_dropped_events_count(span.dropped_events_count);
  out->set_dropped_links_count(span.dropped_links_count);

  out->mutable_events()->Reserve(static_cast<int>(span.events.size()));
  for (const auto& e : span.events) {
    auto* event = out->add_events();
    event->set_time_unix_nano(e.time_unix_nano);
    SetString(e.name, event->mutable_name());
    SetAttributes(e.attributes, event->mutable_attributes());
    event->set_dropped_attributes_count(e.dropped_attributes_count);
  }
  out->mutable_links()->Reserve(static_cast<int>(span.links.size()));
  for (const auto& l : span.links) {
    auto* link = out->add_links();
    SetId(l.trace_id, link->mutable_trace_id());
    SetId(l.span_id, link->mutable_span_id());
    if (!l.trace_state.empty()) SetString(l.trace_state, link->mutable_trace_state());
    SetAttributes(l.attributes, link->mutable_attributes());
    link->set_flags(l.flags);
    link->set_dropped_attributes_count(l.dropped_attributes_count);
  }

  if (span.status_code != StatusCode::kUnset || !span.status_message.empty()) {
    auto* status = out->mutable_status();
    status->set_code(static_cast<trace::Status::StatusCode>(span.status_code));
    // The specification allows a description only with an error status;
    // app spans keep whatever their SDK sent.
    if (span.status_code == StatusCode::kError || span.source == SpanSource::kApp) SetString(span.status_message, status->mutable_message());
  }
}

}  // namespace

bool IsValidUtf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = Utf8SequenceLength(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::size_t Utf8PrefixLength(std::string_view s, std::size_t max) {
  const std::string_view head = s.substr(0, std::min(s.size(), max));
  std::size_t i = 0;
  while (i < head.size()) {
    std::size_t n = Utf8SequenceLength(head, i);
    if (n == 0) {
      // A lead byte whose character runs past the cut: the prefix ends
      // before it. Anything else invalid is left for a validator to refuse.
      const auto c = static_cast<unsigned char>(head[i]);
      const std::size_t need = c >= 0xF0 && c <= 0xF4   ? 4
                               : c >= 0xE0 && c <= 0xEF ? 3
                               : c >= 0xC2 && c <= 0xDF ? 2
                                                        : 1;
      if (i + need > head.size()) return i;
      n = 1;
    }
    i += n;
  }
  return i;
}

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
        auto* r = rit->second->mutable_resource();
        SetAttributes(resource->attributes, r->mutable_attributes());
        r->set_dropped_attributes_count(resource->dropped_attributes_count);
        if (!resource->schema_url.empty()) SetString(resource->schema_url, rit->second->mutable_schema_url());
      }
    }
    const InstrumentationScope* scope = span.scope.get();
    auto [sit, new_scope] = scopes.try_emplace(ScopeKey{resource, scope}, nullptr);
    if (new_scope) {
      sit->second = rit->second->add_scope_spans();
      if (scope != nullptr) {
        auto* sc = sit->second->mutable_scope();
        SetString(scope->name, sc->mutable_name());
        SetString(scope->version, sc->mutable_version());
        SetAttributes(scope->attributes, sc->mutable_attributes());
        sc->set_dropped_attributes_count(scope->dropped_attributes_count);
        if (!scope->schema_url.empty()) SetString(scope->schema_url, sit->second->mutable_schema_url());
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

template <typename RepeatedKeyValue>
Attributes FromKeyValues(const RepeatedKeyValue& in);

AttributeValue FromAnyValue(const common_in::AnyValue& v) {
  switch (v.value_case()) {
    case common_in::AnyValue::kBoolValue: return v.bool_value();
    case common_in::AnyValue::kIntValue: return std::int64_t{v.int_value()};
    case common_in::AnyValue::kDoubleValue: return v.double_value();
    case common_in::AnyValue::kStringValue: return v.string_value();
    case common_in::AnyValue::kBytesValue: return BytesValue{v.bytes_value()};
    case common_in::AnyValue::kArrayValue: {
      ArrayValue array;
      array.reserve(static_cast<std::size_t>(v.array_value().values_size()));
      for (const auto& e : v.array_value().values()) array.push_back(FromAnyValue(e));
      return array;
    }
    case common_in::AnyValue::kKvlistValue: return FromKeyValues(v.kvlist_value().values());
    case common_in::AnyValue::VALUE_NOT_SET: break;
  }
  return std::monostate{};
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
  return FromExportRequest(request, std::nullopt);
}

std::vector<Span> FromExportRequest(const otlp::ExportTraceServiceRequest& request,
                                    std::optional<SpanSource> source) {
  std::vector<Span> out;
  std::size_t total = 0;
  for (const auto& rs : request.resource_spans()) {
    for (const auto& ss : rs.scope_spans()) total += static_cast<std::size_t>(ss.spans_size());
  }
  out.reserve(total);
  const auto kernel_scope = KernelScope();
  for (const auto& rs : request.resource_spans()) {
    std::shared_ptr<const Resource> resource;
    if (rs.has_resource() || !rs.schema_url().empty()) {
      resource = std::make_shared<const Resource>(Resource{FromKeyValues(rs.resource().attributes()),
                                                           rs.resource().dropped_attributes_count(),
                                                           rs.schema_url()});
    }
    for (const auto& ss : rs.scope_spans()) {
      const auto& sc = ss.scope();
      const bool kernel = !source.has_value() && sc.name() == kernel_scope->name &&
                          sc.version() == kernel_scope->version && sc.attributes_size() == 0 &&
                          ss.schema_url().empty();
      std::shared_ptr<const InstrumentationScope> scope;
      if (kernel) {
        scope = kernel_scope;
      } else if (ss.has_scope() || !ss.schema_url().empty()) {
        scope = std::make_shared<const InstrumentationScope>(
            InstrumentationScope{sc.name(), sc.version(), FromKeyValues(sc.attributes()),
                                 sc.dropped_attributes_count(), ss.schema_url()});
      }
      const SpanSource span_source = source.value_or(kernel ? SpanSource::kKernel : SpanSource::kApp);
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
        s.dropped_attributes_count = in.dropped_attributes_count();
        s.events.reserve(static_cast<std::size_t>(in.events_size()));
        for (const auto& e : in.events()) {
          s.events.push_back({e.name(), e.time_unix_nano(), FromKeyValues(e.attributes()),
                              e.dropped_attributes_count()});
        }
        s.dropped_events_count = in.dropped_events_count();
        s.links.reserve(static_cast<std::size_t>(in.links_size()));
        for (const auto& l : in.links()) {
          SpanLink link;
          GetId(l.trace_id(), &link.trace_id);
          GetId(l.span_id(), &link.span_id);
          link.trace_state = l.trace_state();
          link.attributes = FromKeyValues(l.attributes());
          link.flags = l.flags();
          link.dropped_attributes_count = l.dropped_attributes_count();
          s.links.push_back(std::move(link));
        }
        s.dropped_links_count = in.dropped_links_count();
        s.status_code = static_cast<StatusCode>(in.status().code());
        s.status_message = in.status().message();
        s.resource = resource;
        s.scope = scope;
        s.source = span_source;
        out.push_back(std::move(s));
      }
    }
  }
  return out;
}

}  // namespace kspan
