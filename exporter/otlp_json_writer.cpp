// Hand-written rather than nlohmann::json because building a DOM per span
// (one heap node per field and value) and then serializing it was more than
// half of the agent's CPU when the file store wrote spans under load; here
// every byte is appended once to a reused string.
#include "exporter/otlp_json_writer.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

#include "absl/strings/escaping.h"
#include "exporter/otlp_transform.h"

namespace kspan {
namespace {

// Bytes a JSON string must escape: control characters, '"' and '\'.
constexpr std::array<bool, 256> MakeEscapeTable() {
  std::array<bool, 256> t{};
  for (int c = 0; c < 0x20; ++c) t[static_cast<std::size_t>(c)] = true;
  t['"'] = true;
  t['\\'] = true;
  return t;
}
constexpr std::array<bool, 256> kNeedsEscape = MakeEscapeTable();

constexpr char kHex[] = "0123456789abcdef";

class Writer {
 public:
  Writer(std::string& out, std::string& scratch) : out_(out), scratch_(scratch) {}

  void Raw(std::string_view s) { out_.append(s); }
  void Char(char c) { out_.push_back(c); }

  // `"key":`, preceded by a comma unless it is the object's first member.
  void Key(std::string_view quoted_key, bool& first) {
    if (!first) out_.push_back(',');
    first = false;
    out_.append(quoted_key);
    out_.push_back(':');
  }

  // A JSON string of valid UTF-8 (invalid sequences become U+FFFD, exactly
  // as SanitizeUtf8 replaces them for the protobuf encodings). Escapes as
  // nlohmann does: the short forms where JSON has them, other control
  // characters as \u00xx, everything else (DEL and non-ASCII included) as is.
  void String(std::string_view s) {
    if (!IsAscii(s)) {
      scratch_ = SanitizeUtf8(s);
      s = scratch_;
    }
    out_.push_back('"');
    std::size_t run = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
      const auto c = static_cast<unsigned char>(s[i]);
      if (!kNeedsEscape[c]) continue;
      out_.append(s.data() + run, i - run);
      run = i + 1;
      switch (c) {
        case '"': out_.append("\\\""); break;
        case '\\': out_.append("\\\\"); break;
        case '\b': out_.append("\\b"); break;
        case '\f': out_.append("\\f"); break;
        case '\n': out_.append("\\n"); break;
        case '\r': out_.append("\\r"); break;
        case '\t': out_.append("\\t"); break;
        default: {
          const char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
          out_.append(esc, sizeof(esc));
        }
      }
    }
    out_.append(s.data() + run, s.size() - run);
    out_.push_back('"');
  }

  template <std::size_t N>
  void HexId(const std::array<std::uint8_t, N>& id) {
    char buf[2 * N + 2];
    buf[0] = '"';
    for (std::size_t i = 0; i < N; ++i) {
      buf[1 + 2 * i] = kHex[id[i] >> 4];
      buf[2 + 2 * i] = kHex[id[i] & 0xF];
    }
    buf[2 * N + 1] = '"';
    out_.append(buf, sizeof(buf));
  }

  void Base64(std::string_view bytes) {
    absl::Base64Escape(absl::string_view(bytes.data(), bytes.size()), &scratch_);  // standard alphabet, padded
    out_.push_back('"');
    out_.append(scratch_);
    out_.push_back('"');
  }

  // uint32/int32 fields and enums: JSON numbers.
  template <typename T>
  void Number(T v) {
    char buf[24];
    const auto r = std::to_chars(buf, buf + sizeof(buf), v);
    out_.append(buf, static_cast<std::size_t>(r.ptr - buf));
  }

  // 64-bit integers: decimal strings (proto3 JSON).
  template <typename T>
  void QuotedNumber(T v) {
    char buf[24];
    buf[0] = '"';
    const auto r = std::to_chars(buf + 1, buf + sizeof(buf) - 1, v);
    *r.ptr = '"';
    out_.append(buf, static_cast<std::size_t>(r.ptr + 1 - buf));
  }

  // proto3 JSON: non-finite values as strings. Finite values in nlohmann's
  // layout (fixed point for 1e-4 <= |v| < 1e15 with at least one decimal,
  // otherwise d.ddde+XX) from the shortest round-trip digits.
  void Double(double v) {
    if (std::isnan(v)) return Raw("\"NaN\"");
    if (std::isinf(v)) return Raw(v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
    if (std::signbit(v)) {
      out_.push_back('-');
      v = -v;
    }
    if (v == 0) return Raw("0.0");
    // Scientific form "d[.ddd]e(+|-)xx": the digits and the exponent.
    char sci[40];
    const auto r = std::to_chars(sci, sci + sizeof(sci), v, std::chars_format::scientific);
    const std::string_view text(sci, static_cast<std::size_t>(r.ptr - sci));
    const std::size_t e_pos = text.find('e');
    char digits[24];
    int k = 0;
    for (std::size_t i = 0; i < e_pos; ++i) {
      if (text[i] != '.') digits[k++] = text[i];
    }
    int exponent = 0;
    const char* exp_begin = text.data() + e_pos + 1;
    if (*exp_begin == '+') ++exp_begin;
    std::from_chars(exp_begin, text.data() + text.size(), exponent);
    const int n = exponent + 1;  // position of the decimal point in `digits`
    constexpr int kMinExp = -4;
    constexpr int kMaxExp = 15;
    const std::string_view d(digits, static_cast<std::size_t>(k));
    if (k <= n && n <= kMaxExp) {
      out_.append(d);
      out_.append(static_cast<std::size_t>(n - k), '0');
      out_.append(".0");
    } else if (0 < n && n <= kMaxExp) {
      out_.append(d.substr(0, static_cast<std::size_t>(n)));
      out_.push_back('.');
      out_.append(d.substr(static_cast<std::size_t>(n)));
    } else if (kMinExp < n && n <= 0) {
      out_.append("0.");
      out_.append(static_cast<std::size_t>(-n), '0');
      out_.append(d);
    } else {
      out_.push_back(d[0]);
      if (k > 1) {
        out_.push_back('.');
        out_.append(d.substr(1));
      }
      out_.push_back('e');
      int e = n - 1;
      out_.push_back(e < 0 ? '-' : '+');
      e = e < 0 ? -e : e;
      if (e < 10) out_.push_back('0');
      Number(e);
    }
  }

  void Bool(bool b) { Raw(b ? "true" : "false"); }

  // --- OTLP messages, fields in field-number order ----------------------

  void AnyValue(const AttributeValue& value) {
    Char('{');
    std::visit(
        [this](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          // A set oneof member is always written, even when empty or zero.
          if constexpr (std::is_same_v<T, std::string>) {
            Raw("\"stringValue\":");
            String(v);
          } else if constexpr (std::is_same_v<T, bool>) {
            Raw("\"boolValue\":");
            Bool(v);
          } else if constexpr (std::is_same_v<T, std::int64_t>) {
            Raw("\"intValue\":");
            QuotedNumber(v);
          } else if constexpr (std::is_same_v<T, double>) {
            Raw("\"doubleValue\":");
            Double(v);
          } else if constexpr (std::is_same_v<T, ArrayValue>) {
            Raw("\"arrayValue\":{");
            if (!v.empty()) {
              Raw("\"values\":[");
              for (std::size_t i = 0; i < v.size(); ++i) {
                if (i > 0) Char(',');
                AnyValue(v[i]);
              }
              Char(']');
            }
            Char('}');
          } else if constexpr (std::is_same_v<T, KeyValueList>) {
            Raw("\"kvlistValue\":{");
            if (!v.empty()) {
              Raw("\"values\":");
              KeyValues(v);
            }
            Char('}');
          } else if constexpr (std::is_same_v<T, BytesValue>) {
            Raw("\"bytesValue\":");
            Base64(v.data);
          } else {
            static_assert(std::is_same_v<T, std::monostate>);  // an empty AnyValue: {}
          }
        },
        value.variant());
    Char('}');
  }

  // A non-empty array of KeyValue.
  void KeyValues(const Attributes& attrs) {
    Char('[');
    for (std::size_t i = 0; i < attrs.size(); ++i) {
      if (i > 0) Char(',');
      Char('{');
      if (!attrs[i].key.empty()) {
        Raw("\"key\":");
        String(attrs[i].key);
        Char(',');
      }
      Raw("\"value\":");
      AnyValue(attrs[i].value);
      Char('}');
    }
    Char(']');
  }

  void AttributesField(const Attributes& attrs, bool& first) {
    if (attrs.empty()) return;
    Key("\"attributes\"", first);
    KeyValues(attrs);
  }

  void StringField(std::string_view quoted_key, std::string_view s, bool& first) {
    if (s.empty()) return;
    Key(quoted_key, first);
    String(s);
  }

  template <typename T>
  void NumberField(std::string_view quoted_key, T v, bool& first) {
    if (v == 0) return;
    Key(quoted_key, first);
    Number(v);
  }

  void Fixed64Field(std::string_view quoted_key, std::uint64_t v, bool& first) {
    if (v == 0) return;
    Key(quoted_key, first);
    QuotedNumber(v);
  }

  void Resource(const kspan::Resource& r) {
    Char('{');
    bool first = true;
    AttributesField(r.attributes, first);
    NumberField("\"droppedAttributesCount\"", r.dropped_attributes_count, first);
    Char('}');
  }

  void Scope(const InstrumentationScope& s) {
    Char('{');
    bool first = true;
    StringField("\"name\"", s.name, first);
    StringField("\"version\"", s.version, first);
    AttributesField(s.attributes, first);
    NumberField("\"droppedAttributesCount\"", s.dropped_attributes_count, first);
    Char('}');
  }

  void Event(const SpanEvent& e) {
    Char('{');
    bool first = true;
    Fixed64Field("\"timeUnixNano\"", e.time_unix_nano, first);
    StringField("\"name\"", e.name, first);
    AttributesField(e.attributes, first);
    NumberField("\"droppedAttributesCount\"", e.dropped_attributes_count, first);
    Char('}');
  }

  void Link(const SpanLink& l) {
    Raw("{\"traceId\":");
    HexId(l.trace_id);
    Raw(",\"spanId\":");
    HexId(l.span_id);
    bool first = false;
    StringField("\"traceState\"", l.trace_state, first);
    AttributesField(l.attributes, first);
    NumberField("\"droppedAttributesCount\"", l.dropped_attributes_count, first);
    NumberField("\"flags\"", l.flags, first);
    Char('}');
  }

  void Span(const kspan::Span& s) {
    // Ids are always 16 and 8 bytes, so always present.
    Raw("{\"traceId\":");
    HexId(s.trace_id);
    Raw(",\"spanId\":");
    HexId(s.span_id);
    bool first = false;
    StringField("\"traceState\"", s.trace_state, first);
    // Root spans carry no parentSpanId at all, not sixteen zeros.
    if (IsValid(s.parent_span_id)) {
      Raw(",\"parentSpanId\":");
      HexId(s.parent_span_id);
    }
    StringField("\"name\"", s.name, first);
    NumberField("\"kind\"", static_cast<int>(s.kind), first);
    Fixed64Field("\"startTimeUnixNano\"", s.start_unix_nano, first);
    Fixed64Field("\"endTimeUnixNano\"", s.end_unix_nano, first);
    AttributesField(s.attributes, first);
    NumberField("\"droppedAttributesCount\"", s.dropped_attributes_count, first);
    if (!s.events.empty()) {
      Raw(",\"events\":[");
      for (std::size_t i = 0; i < s.events.size(); ++i) {
        if (i > 0) Char(',');
        Event(s.events[i]);
      }
      Char(']');
    }
    NumberField("\"droppedEventsCount\"", s.dropped_events_count, first);
    if (!s.links.empty()) {
      Raw(",\"links\":[");
      for (std::size_t i = 0; i < s.links.size(); ++i) {
        if (i > 0) Char(',');
        Link(s.links[i]);
      }
      Char(']');
    }
    NumberField("\"droppedLinksCount\"", s.dropped_links_count, first);
    // As otlp_transform: a Status when there is a code or a message; the
    // message only with an error, or as an app span's SDK sent it.
    if (s.status_code != StatusCode::kUnset || !s.status_message.empty()) {
      Raw(",\"status\":{");
      bool status_first = true;
      if (s.status_code == StatusCode::kError || s.source == SpanSource::kApp) {
        StringField("\"message\"", s.status_message, status_first);
      }
      NumberField("\"code\"", static_cast<int>(s.status_code), status_first);
      Char('}');
    }
    NumberField("\"flags\"", s.flags, first);
    Char('}');
  }

 private:
  std::string& out_;
  std::string& scratch_;
};

}  // namespace

void OtlpJsonEncoder::Encode(std::span<const Span> spans, std::string& out) {
  out.clear();
  grouping_.Group(spans);
  const std::size_t n = spans.size();
  const auto& resources = grouping_.resources();
  const auto& scopes = grouping_.scopes();
  const auto& scope_order = grouping_.scope_order();
  const auto& order = grouping_.order();

  Writer w(out, scratch_);
  if (n == 0) {
    w.Raw("{}");
    return;
  }
  w.Raw("{\"resourceSpans\":[");
  std::size_t k = 0;  // position in scope_order
  for (std::uint32_t r = 0; r < resources.size(); ++r) {
    const Resource* resource = resources[r];
    if (r > 0) w.Char(',');
    w.Char('{');
    if (resource != nullptr) {
      w.Raw("\"resource\":");
      w.Resource(*resource);
      w.Char(',');
    }
    w.Raw("\"scopeSpans\":[");
    for (bool first_scope = true; k < scope_order.size() && scopes[scope_order[k]].resource_group == r; ++k) {
      const SpanGrouping::ScopeGroup& sg = scopes[scope_order[k]];
      if (!first_scope) w.Char(',');
      first_scope = false;
      w.Char('{');
      if (sg.scope != nullptr) {
        w.Raw("\"scope\":");
        w.Scope(*sg.scope);
        w.Char(',');
      }
      w.Raw("\"spans\":[");
      for (std::uint32_t j = sg.first; j < sg.first + sg.span_count; ++j) {
        if (j > sg.first) w.Char(',');
        w.Span(spans[order[j]]);
      }
      w.Char(']');
      if (sg.scope != nullptr && !sg.scope->schema_url.empty()) {
        w.Raw(",\"schemaUrl\":");
        w.String(sg.scope->schema_url);
      }
      w.Char('}');
    }
    w.Char(']');
    if (resource != nullptr && !resource->schema_url.empty()) {
      w.Raw(",\"schemaUrl\":");
      w.String(resource->schema_url);
    }
    w.Char('}');
  }
  w.Raw("]}");
}

std::string EncodeOtlpJson(std::span<const Span> spans) {
  std::string out;
  OtlpJsonEncoder().Encode(spans, out);
  return out;
}

}  // namespace kspan
