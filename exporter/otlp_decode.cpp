#include "exporter/otlp_decode.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "exporter/otlp_json.h"
#include "exporter/status_macros.h"
#include "google/protobuf/arena.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace kspan {
namespace {

using google::protobuf::io::CodedInputStream;
using google::protobuf::internal::WireFormatLite;

// Protobuf wire types (the low three bits of a tag).
constexpr std::uint32_t kVarint = 0;
constexpr std::uint32_t kFixed64 = 1;
constexpr std::uint32_t kLengthDelimited = 2;
constexpr std::uint32_t kFixed32 = 5;

// What became of one value being decoded.
enum class Fate {
  kKept,
  kDropped,  // over a limit: skipped to its end, to be counted by its owner
  kError,    // malformed: the request is refused
};

std::uint32_t SaturatingAdd(std::uint32_t a, std::uint64_t b) {
  return static_cast<std::uint32_t>(
      std::min<std::uint64_t>(std::uint64_t{a} + b, std::numeric_limits<std::uint32_t>::max()));
}

// Reads the OTLP trace protos (opentelemetry/proto/trace/v1/trace.proto and
// common.proto, field numbers below) straight into the span model.
//
// Hand-written on CodedInputStream rather than protobuf's generated parser:
// that parser builds every message (one per attribute, kept or not) before
// any limit can be looked at. This reads each field once, skips what is over
// a limit without building it, and charges what it builds against a budget.
// It follows protobuf's rules: unknown fields and fields of an unexpected
// wire type are skipped, a repeated message field may come in any order
// and interleaved, a singular message field given twice is merged, a scalar
// given twice keeps the last value, and proto3 strings must be UTF-8.
class WireDecoder {
 public:
  WireDecoder(CodedInputStream& in, const SpanLimits& limits, std::size_t budget)
      : in_(in), limits_(limits), budget_(budget) {}

  absl::Status Decode(std::size_t size, DecodedSpans& out) {
    if (size > static_cast<std::size_t>(INT_MAX)) {
      return absl::InvalidArgumentError("request larger than 2 GiB");
    }
    const auto limit = in_.PushLimit(static_cast<int>(size));
    bool ok = true;
    for (;;) {
      std::uint32_t tag = 0;
      if (!NextTag(&tag)) {
        ok = false;
        break;
      }
      if (tag == 0) break;
      // ExportTraceServiceRequest.resource_spans = 1
      ok = tag == Tag(1, kLengthDelimited) ? ResourceSpans(out) : Skip(tag);
      if (!ok) break;
    }
    in_.PopLimit(limit);
    out.limited = limited_;
    out.decoded_bytes = used_;
    if (!ok) return absl::InvalidArgumentError(error_);
    if (out.invalid_spans > 0) {
      out.invalid_message = absl::StrCat(out.invalid_spans, " span(s) refused: ", out.invalid_message);
    }
    return absl::OkStatus();
  }

 private:
  static constexpr std::uint32_t Tag(std::uint32_t field, std::uint32_t wire_type) {
    return field << 3 | wire_type;
  }

  bool Fail(std::string_view why) {
    if (error_.empty()) error_ = std::string(why);
    return false;
  }
  bool Malformed() { return Fail("not a valid protobuf ExportTraceServiceRequest"); }

  // Everything decoded is charged here, as ApproximateBatchBytes counts it.
  bool Charge(std::size_t n) {
    used_ += n;
    if (used_ <= budget_) return true;
    return Fail(absl::StrCat("request refused: its spans would take more than ", budget_,
                             " bytes of memory (", kDecodeAmplification,
                             " times the request's size); send fewer or smaller attributes"));
  }

  // Appends a default element. A vector holds its capacity in memory, so
  // its growth is what is charged (doubling, as libstdc++ grows it).
  template <typename T>
  T* Append(std::vector<T>& v) {
    if (v.size() == v.capacity()) {
      const std::size_t capacity = std::max<std::size_t>(1, v.capacity() * 2);
      if (!Charge((capacity - v.capacity()) * sizeof(T))) return nullptr;
      v.reserve(capacity);
    }
    return &v.emplace_back();
  }

  // The next field's tag, 0 at the end of the current message. A tag of 0
  // in the data, a malformed varint or data ending before the message's
  // declared length is malformed.
  bool NextTag(std::uint32_t* tag) {
    const int before = in_.BytesUntilLimit();
    *tag = in_.ReadTag();
    if (*tag != 0) return (*tag >> 3) != 0 || Malformed();
    return (before == 0 && in_.BytesUntilLimit() == 0) || Malformed();
  }

  bool Skip(std::uint32_t tag) { return WireFormatLite::SkipField(&in_, tag) || Malformed(); }

  // Enters a length-delimited message; Leave() checks it ended where its
  // length said and restores the outer limit.
  bool Enter(CodedInputStream::Limit* outer) {
    std::uint32_t len = 0;
    if (!in_.ReadVarint32(&len) || len > static_cast<std::uint32_t>(INT_MAX) ||
        static_cast<int>(len) > in_.BytesUntilLimit()) {
      return Malformed();
    }
    *outer = in_.PushLimit(static_cast<int>(len));
    return true;
  }
  void Leave(CodedInputStream::Limit outer) { in_.PopLimit(outer); }
  // Skips what is left of the current message (a value over a limit).
  bool SkipRest() { return in_.Skip(in_.BytesUntilLimit()) || Malformed(); }
  // Skips a whole length-delimited field whose tag was read.
  bool SkipLengthDelimited() { return Skip(Tag(1, kLengthDelimited)); }

  // A string (UTF-8 checked, as proto3 requires) or bytes field, cut to
  // `max` bytes (0: whole) without reading the rest into memory.
  bool ReadBytes(std::string* out, std::size_t max, bool utf8) {
    std::uint32_t len = 0;
    if (!in_.ReadVarint32(&len) || len > static_cast<std::uint32_t>(INT_MAX) ||
        static_cast<int>(len) > in_.BytesUntilLimit()) {
      return Malformed();
    }
    const bool cut = max != 0 && len > max;
    const int keep = cut ? static_cast<int>(max) : static_cast<int>(len);
    if (!Charge(static_cast<std::size_t>(keep))) return false;
    if (!in_.ReadString(out, keep)) return Malformed();
    if (cut) {
      if (!in_.Skip(static_cast<int>(len) - keep)) return Malformed();
      ++limited_.truncated_values;
      if (utf8) out->resize(Utf8PrefixLength(*out, max));
    }
    if (utf8 && !IsValidUtf8(*out)) return Fail("invalid UTF-8 in a string field");
    return true;
  }
  bool ReadString(std::string* out) { return ReadBytes(out, 0, true); }

  // An id of N bytes; another length is remembered (the span is refused)
  // and its bytes skipped unread.
  template <std::size_t N>
  bool ReadId(std::array<std::uint8_t, N>* id, std::size_t* length) {
    std::uint32_t len = 0;
    if (!in_.ReadVarint32(&len) || len > static_cast<std::uint32_t>(INT_MAX) ||
        static_cast<int>(len) > in_.BytesUntilLimit()) {
      return Malformed();
    }
    *length = len;
    id->fill(0);
    if (len != N) return in_.Skip(static_cast<int>(len)) || Malformed();
    return in_.ReadRaw(id->data(), static_cast<int>(N)) || Malformed();
  }

  bool ReadVarint32(std::uint32_t* v) { return in_.ReadVarint32(v) || Malformed(); }
  bool ReadVarint64(std::uint64_t* v) { return in_.ReadVarint64(v) || Malformed(); }
  bool ReadFixed32(std::uint32_t* v) { return in_.ReadLittleEndian32(v) || Malformed(); }
  bool ReadFixed64(std::uint64_t* v) { return in_.ReadLittleEndian64(v) || Malformed(); }

  // --- values ---

  // AnyValue (common.proto): string_value = 1, bool_value = 2,
  // int_value = 3, double_value = 4, array_value = 5, kvlist_value = 6,
  // bytes_value = 7. `depth`: arrays and lists around it.
  Fate AnyValue(AttributeValue* v, std::uint32_t depth) {
    CodedInputStream::Limit outer;
    if (!Enter(&outer)) return Fate::kError;
    Fate fate = Fate::kKept;
    for (;;) {
      std::uint32_t tag = 0;
      if (!NextTag(&tag)) return Fate::kError;
      if (tag == 0) break;
      switch (tag) {
        case Tag(1, kLengthDelimited): {
          std::string s;
          if (!ReadBytes(&s, limits_.attribute_value_length, true)) return Fate::kError;
          *v = std::move(s);
          break;
        }
        case Tag(2, kVarint): {
          std::uint64_t x = 0;
          if (!ReadVarint64(&x)) return Fate::kError;
          *v = x != 0;
          break;
        }
        case Tag(3, kVarint): {
          std::uint64_t x = 0;
          if (!ReadVarint64(&x)) return Fate::kError;
          *v = static_cast<std::int64_t>(x);
          break;
        }
        case Tag(4, kFixed64): {
          std::uint64_t x = 0;
          if (!ReadFixed64(&x)) return Fate::kError;
          double d = 0;
          std::memcpy(&d, &x, sizeof(d));
          *v = d;
          break;
        }
        case Tag(5, kLengthDelimited):
        case Tag(6, kLengthDelimited): {
          if (depth >= limits_.value_depth) {
            fate = Fate::kDropped;
            break;
          }
          const bool array = tag == Tag(5, kLengthDelimited);
          // A second array (list) field merges into the first, as protobuf
          // merges a message field given twice.
          if (array && !std::holds_alternative<ArrayValue>(*v)) *v = ArrayValue{};
          if (!array && !std::holds_alternative<KeyValueList>(*v)) *v = KeyValueList{};
          fate = array ? Array(&std::get<ArrayValue>(*v), depth + 1)
                       : KeyValues(&std::get<KeyValueList>(*v), depth + 1);
          if (fate == Fate::kError) return fate;
          break;
        }
        case Tag(7, kLengthDelimited): {
          BytesValue b;
          if (!ReadBytes(&b.data, limits_.attribute_value_length, false)) return Fate::kError;
          *v = std::move(b);
          break;
        }
        default:
          if (!Skip(tag)) return Fate::kError;
      }
      if (fate == Fate::kDropped) break;
    }
    if (fate == Fate::kDropped && !SkipRest()) return Fate::kError;
    Leave(outer);
    return fate;
  }

  // ArrayValue: values = 1.
  Fate Array(ArrayValue* a, std::uint32_t depth) {
    CodedInputStream::Limit outer;
    if (!Enter(&outer)) return Fate::kError;
    Fate fate = Fate::kKept;
    for (;;) {
      std::uint32_t tag = 0;
      if (!NextTag(&tag)) return Fate::kError;
      if (tag == 0) break;
      if (tag != Tag(1, kLengthDelimited)) {
        if (!Skip(tag)) return Fate::kError;
        continue;
      }
      if (a->size() >= limits_.attribute_count) {
        fate = Fate::kDropped;
        break;
      }
      AttributeValue* element = Append(*a);
      if (element == nullptr) return Fate::kError;
      *element = std::monostate{};  // an AnyValue with nothing set
      fate = AnyValue(element, depth);
      if (fate != Fate::kKept) break;
    }
    if (fate == Fate::kError) return fate;
    if (fate == Fate::kDropped && !SkipRest()) return Fate::kError;
    Leave(outer);
    return fate;
  }

  // KeyValue: key = 1, value = 2.
  Fate KeyValue(Attribute* a, std::uint32_t depth) {
    CodedInputStream::Limit outer;
    if (!Enter(&outer)) return Fate::kError;
    a->value = std::monostate{};  // a KeyValue without value: an empty value
    Fate fate = Fate::kKept;
    for (;;) {
      std::uint32_t tag = 0;
      if (!NextTag(&tag)) return Fate::kError;
      if (tag == 0) break;
      if (tag == Tag(1, kLengthDelimited)) {
        if (!ReadString(&a->key)) return Fate::kError;
      } else if (tag == Tag(2, kLengthDelimited)) {
        fate = AnyValue(&a->value, depth);
        if (fate != Fate::kKept) break;
      } else if (!Skip(tag)) {
        return Fate::kError;
      }
    }
    if (fate == Fate::kError) return fate;
    if (fate == Fate::kDropped && !SkipRest()) return Fate::kError;
    Leave(outer);
    return fate;
  }

  // KeyValueList: values = 1 (a list nested in a value).
  Fate KeyValues(KeyValueList* list, std::uint32_t depth) {
    CodedInputStream::Limit outer;
    if (!Enter(&outer)) return Fate::kError;
    Fate fate = Fate::kKept;
    for (;;) {
      std::uint32_t tag = 0;
      if (!NextTag(&tag)) return Fate::kError;
      if (tag == 0) break;
      if (tag != Tag(1, kLengthDelimited)) {
        if (!Skip(tag)) return Fate::kError;
        continue;
      }
      if (list->size() >= limits_.attribute_count) {
        fate = Fate::kDropped;
        break;
      }
      kspan::Attribute* entry = Append(*list);
      if (entry == nullptr) return Fate::kError;
      fate = KeyValue(entry, depth);
      if (fate != Fate::kKept) break;
    }
    if (fate == Fate::kError) return fate;
    if (fate == Fate::kDropped && !SkipRest()) return Fate::kError;
    Leave(outer);
    return fate;
  }

  // One attribute (a KeyValue field of a span, event, link, resource or
  // scope) into `attrs`, unless there are `limit` already or its value is
  // over a limit: then it is skipped and counted in `dropped`.
  bool AddAttribute(Attributes* attrs, std::uint32_t limit, std::uint64_t* dropped) {
    if (attrs->size() >= limit) {
      ++*dropped;
      return SkipLengthDelimited();
    }
    kspan::Attribute* a = Append(*attrs);
    if (a == nullptr) return false;
    const Fate fate = KeyValue(a, 0);
    if (fate == Fate::kError) return false;
    if (fate == Fate::kDropped) {
      attrs->pop_back();
      ++*dropped;
    }
    return true;
  }

  // --- spans ---

  // Span.Event: time_unix_nano = 1, name = 2, attributes = 3,
  // dropped_attributes_count = 4.
  bool Event(SpanEvent* e) {
    CodedInputStream::Limit outer;
    if (!Enter(&outer)) return false;
    std::uint64_t dropped = 0;
    for (;;) {
      std::uint32_t tag = 0;
      if (!NextTag(&tag)) return false;
      if (tag == 0) break;
      bool ok = true;
      switch (tag) {
        case Tag(1, kFixed64): ok = ReadFixed64(&e->time_unix_nano); break;
        case Tag(2, kLengthDelimited): ok = ReadString(&e->name); break;
        case Tag(3, kLengthDelimited):
          ok = AddAttribute(&e->attributes, limits_.event_attribute_count, &dropped);
          break;
        case Tag(4, kVarint): ok = ReadVarint32(&e->dropped_attributes_count); break;
        default: ok = Skip(tag);
      }
      if (!ok) return false;
    }
    Leave(outer);
    e->dropped_attributes_count = SaturatingAdd(e->dropped_attributes_count, dropped);
    limited_.attributes += dropped;
    return true;
  }

  // Span.Link: trace_id = 1, span_id = 2, trace_state = 3, attributes = 4,
  // dropped_attributes_count = 5, flags = 6.
  bool Link(SpanLink* l, bool* valid_ids) {
    CodedInputStream::Limit outer;
    if (!Enter(&outer)) return false;
    std::uint64_t dropped = 0;
    std::size_t trace_len = 0, span_len = 0;
    for (;;) {
      std::uint32_t tag = 0;
      if (!NextTag(&tag)) return false;
      if (tag == 0) break;
      bool ok = true;
      switch (tag) {
        case Tag(1, kLengthDelimited): ok = ReadId(&l->trace_id, &trace_len); break;
        case Tag(2, kLengthDelimited): ok = ReadId(&l->span_id, &span_len); break;
        case Tag(3, kLengthDelimited): ok = ReadString(&l->trace_state); break;
        case Tag(4, kLengthDelimited):
          ok = AddAttribute(&l->attributes, limits_.link_attribute_count, &dropped);
          break;
        case Tag(5, kVarint): ok = ReadVarint32(&l->dropped_attributes_count); break;
        case Tag(6, kFixed32): ok = ReadFixed32(&l->flags); break;
        default: ok = Skip(tag);
      }
      if (!ok) return false;
    }
    Leave(outer);
    l->dropped_attributes_count = SaturatingAdd(l->dropped_attributes_count, dropped);
    limited_.attributes += dropped;
    *valid_ids = trace_len == 16 && span_len == 8;
    return true;
  }

  // A link dropped by the limit, read only for the lengths of its ids (the
  // last of each, as for a kept link), nothing built or charged.
  bool LinkIdsValid(bool* valid_ids) {
    CodedInputStream::Limit outer;
    if (!Enter(&outer)) return false;
    std::size_t trace_len = 0, span_len = 0;
    for (;;) {
      std::uint32_t tag = 0;
      if (!NextTag(&tag)) return false;
      if (tag == 0) break;
      if (tag == Tag(1, kLengthDelimited) || tag == Tag(2, kLengthDelimited)) {
        std::uint32_t len = 0;
        if (!in_.ReadVarint32(&len) || len > static_cast<std::uint32_t>(INT_MAX) ||
            static_cast<int>(len) > in_.BytesUntilLimit() || !in_.Skip(static_cast<int>(len))) {
          return Malformed();
        }
        (tag == Tag(1, kLengthDelimited) ? trace_len : span_len) = len;
      } else if (!Skip(tag)) {
        return false;
      }
    }
    Leave(outer);
    *valid_ids = trace_len == 16 && span_len == 8;
    return true;
  }

  // Status: message = 2, code = 3.
  bool StatusMessage(Span* s) {
    CodedInputStream::Limit outer;
    if (!Enter(&outer)) return false;
    for (;;) {
      std::uint32_t tag = 0;
      if (!NextTag(&tag)) return false;
      if (tag == 0) break;
      bool ok = true;
      if (tag == Tag(2, kLengthDelimited)) {
        ok = ReadString(&s->status_message);
      } else if (tag == Tag(3, kVarint)) {
        std::uint32_t code = 0;
        ok = ReadVarint32(&code);
        s->status_code = static_cast<StatusCode>(static_cast<std::int32_t>(code));
      } else {
        ok = Skip(tag);
      }
      if (!ok) return false;
    }
    Leave(outer);
    return true;
  }

  // Span (trace.proto): trace_id = 1, span_id = 2, trace_state = 3,
  // parent_span_id = 4, name = 5, kind = 6, start_time_unix_nano = 7,
  // end_time_unix_nano = 8, attributes = 9, dropped_attributes_count = 10,
  // events = 11, dropped_events_count = 12, links = 13,
  // dropped_links_count = 14, status = 15, flags = 16.
  bool SpanMessage(DecodedSpans& out) {
    CodedInputStream::Limit outer;
    if (!Enter(&outer)) return false;
    Span s;
    s.source = SpanSource::kApp;
    s.kind = SpanKind::kUnspecified;  // the proto default, not the model's
    std::size_t trace_len = 0, span_len = 0, parent_len = 0;
    bool links_valid = true;
    std::uint64_t dropped_attributes = 0, dropped_events = 0, dropped_links = 0;
    for (;;) {
      std::uint32_t tag = 0;
      if (!NextTag(&tag)) return false;
      if (tag == 0) break;
      bool ok = true;
      switch (tag) {
        case Tag(1, kLengthDelimited): ok = ReadId(&s.trace_id, &trace_len); break;
        case Tag(2, kLengthDelimited): ok = ReadId(&s.span_id, &span_len); break;
        case Tag(3, kLengthDelimited): ok = ReadString(&s.trace_state); break;
        case Tag(4, kLengthDelimited): ok = ReadId(&s.parent_span_id, &parent_len); break;
        case Tag(5, kLengthDelimited): ok = ReadString(&s.name); break;
        case Tag(6, kVarint): {
          std::uint32_t kind = 0;
          ok = ReadVarint32(&kind);
          s.kind = static_cast<SpanKind>(static_cast<std::int32_t>(kind));
          break;
        }
        case Tag(7, kFixed64): ok = ReadFixed64(&s.start_unix_nano); break;
        case Tag(8, kFixed64): ok = ReadFixed64(&s.end_unix_nano); break;
        case Tag(9, kLengthDelimited):
          ok = AddAttribute(&s.attributes, limits_.span_attribute_count, &dropped_attributes);
          break;
        case Tag(10, kVarint): ok = ReadVarint32(&s.dropped_attributes_count); break;
        case Tag(11, kLengthDelimited):
          if (s.events.size() >= limits_.span_event_count) {
            ++dropped_events;
            ok = SkipLengthDelimited();
          } else {
            SpanEvent* e = Append(s.events);
            ok = e != nullptr && Event(e);
          }
          break;
        case Tag(12, kVarint): ok = ReadVarint32(&s.dropped_events_count); break;
        case Tag(13, kLengthDelimited):
          if (s.links.size() >= limits_.span_link_count) {
            // Dropped, but its ids still decide the span, so that a limit
            // drops parts of spans and never a whole one.
            ++dropped_links;
            bool valid = true;
            ok = LinkIdsValid(&valid);
            links_valid = links_valid && valid;
          } else {
            bool valid = true;
            SpanLink* l = Append(s.links);
            ok = l != nullptr && Link(l, &valid);
            links_valid = links_valid && valid;
          }
          break;
        case Tag(14, kVarint): ok = ReadVarint32(&s.dropped_links_count); break;
        case Tag(15, kLengthDelimited): ok = StatusMessage(&s); break;
        case Tag(16, kFixed32): ok = ReadFixed32(&s.flags); break;
        default: ok = Skip(tag);
      }
      if (!ok) return false;
    }
    Leave(outer);
    // What an SDK dropped plus what kspan dropped, as an SDK would count it.
    s.dropped_attributes_count = SaturatingAdd(s.dropped_attributes_count, dropped_attributes);
    s.dropped_events_count = SaturatingAdd(s.dropped_events_count, dropped_events);
    s.dropped_links_count = SaturatingAdd(s.dropped_links_count, dropped_links);
    limited_.attributes += dropped_attributes;
    limited_.events += dropped_events;
    limited_.links += dropped_links;

    // OTLP requires 16-byte trace ids and 8-byte span ids, neither all zero
    // (the W3C invalid ids); an empty parent id marks a root span.
    const char* invalid = nullptr;
    if (trace_len != 16 || !IsValid(s.trace_id)) {
      invalid = "invalid trace_id";
    } else if (span_len != 8 || !IsValid(s.span_id)) {
      invalid = "invalid span_id";
    } else if (parent_len != 0 && parent_len != 8) {
      invalid = "invalid parent_span_id";
    } else if (!links_valid) {
      invalid = "invalid link id";
    }
    if (invalid != nullptr) {
      if (out.invalid_spans++ == 0) out.invalid_message = invalid;
      return true;
    }
    Span* slot = Append(out.spans);
    if (slot == nullptr) return false;
    *slot = std::move(s);
    return true;
  }

  // InstrumentationScope: name = 1, version = 2, attributes = 3,
  // dropped_attributes_count = 4. Merged into `scope` when given twice.
  bool Scope(InstrumentationScope* scope, std::uint64_t* dropped) {
    CodedInputStream::Limit outer;
    if (!Enter(&outer)) return false;
    for (;;) {
      std::uint32_t tag = 0;
      if (!NextTag(&tag)) return false;
      if (tag == 0) break;
      bool ok = true;
      switch (tag) {
        case Tag(1, kLengthDelimited): ok = ReadString(&scope->name); break;
        case Tag(2, kLengthDelimited): ok = ReadString(&scope->version); break;
        case Tag(3, kLengthDelimited):
          ok = AddAttribute(&scope->attributes, limits_.attribute_count, dropped);
          break;
        case Tag(4, kVarint): ok = ReadVarint32(&scope->dropped_attributes_count); break;
        default: ok = Skip(tag);
      }
      if (!ok) return false;
    }
    Leave(outer);
    return true;
  }

  // ScopeSpans: scope = 1, spans = 2, schema_url = 3. The scope may come
  // after the spans: it is given to them at the end.
  bool ScopeSpans(DecodedSpans& out) {
    CodedInputStream::Limit outer;
    if (!Enter(&outer)) return false;
    const std::size_t first = out.spans.size();
    InstrumentationScope scope;
    bool has_scope = false;
    std::uint64_t dropped = 0;
    for (;;) {
      std::uint32_t tag = 0;
      if (!NextTag(&tag)) return false;
      if (tag == 0) break;
      bool ok = true;
      switch (tag) {
        case Tag(1, kLengthDelimited):
          has_scope = true;
          ok = Scope(&scope, &dropped);
          break;
        case Tag(2, kLengthDelimited): ok = SpanMessage(out); break;
        case Tag(3, kLengthDelimited): ok = ReadString(&scope.schema_url); break;
        default: ok = Skip(tag);
      }
      if (!ok) return false;
    }
    Leave(outer);
    // As FromExportRequest: without scope and schema_url the spans have no
    // scope object, so they encode back to the same message.
    if (!has_scope && scope.schema_url.empty()) return true;
    scope.dropped_attributes_count = SaturatingAdd(scope.dropped_attributes_count, dropped);
    limited_.attributes += dropped;
    if (!Charge(sizeof(InstrumentationScope) + 16)) return false;
    auto shared = std::make_shared<const InstrumentationScope>(std::move(scope));
    for (std::size_t i = first; i < out.spans.size(); ++i) out.spans[i].scope = shared;
    return true;
  }

  // Resource: attributes = 1, dropped_attributes_count = 2.
  bool ResourceMessage(Resource* r, std::uint64_t* dropped) {
    CodedInputStream::Limit outer;
    if (!Enter(&outer)) return false;
    for (;;) {
      std::uint32_t tag = 0;
      if (!NextTag(&tag)) return false;
      if (tag == 0) break;
      bool ok = true;
      if (tag == Tag(1, kLengthDelimited)) {
        ok = AddAttribute(&r->attributes, limits_.attribute_count, dropped);
      } else if (tag == Tag(2, kVarint)) {
        ok = ReadVarint32(&r->dropped_attributes_count);
      } else {
        ok = Skip(tag);
      }
      if (!ok) return false;
    }
    Leave(outer);
    return true;
  }

  // ResourceSpans: resource = 1, scope_spans = 2, schema_url = 3.
  bool ResourceSpans(DecodedSpans& out) {
    CodedInputStream::Limit outer;
    if (!Enter(&outer)) return false;
    const std::size_t first = out.spans.size();
    Resource resource;
    bool has_resource = false;
    std::uint64_t dropped = 0;
    for (;;) {
      std::uint32_t tag = 0;
      if (!NextTag(&tag)) return false;
      if (tag == 0) break;
      bool ok = true;
      switch (tag) {
        case Tag(1, kLengthDelimited):
          has_resource = true;
          ok = ResourceMessage(&resource, &dropped);
          break;
        case Tag(2, kLengthDelimited): ok = ScopeSpans(out); break;
        case Tag(3, kLengthDelimited): ok = ReadString(&resource.schema_url); break;
        default: ok = Skip(tag);
      }
      if (!ok) return false;
    }
    Leave(outer);
    if (!has_resource && resource.schema_url.empty()) return true;
    resource.dropped_attributes_count = SaturatingAdd(resource.dropped_attributes_count, dropped);
    limited_.attributes += dropped;
    if (!Charge(sizeof(Resource) + 16)) return false;
    auto shared = std::make_shared<const Resource>(std::move(resource));
    for (std::size_t i = first; i < out.spans.size(); ++i) out.spans[i].resource = shared;
    return true;
  }

  CodedInputStream& in_;
  const SpanLimits& limits_;
  const std::size_t budget_;
  std::size_t used_ = 0;
  LimitCounts limited_;
  std::string error_;
};

absl::StatusOr<DecodedSpans> DecodeWire(CodedInputStream& in, std::size_t size, std::size_t budget,
                                        const SpanLimits& limits) {
  DecodedSpans out;
  WireDecoder decoder(in, limits, budget);
  KSPAN_RETURN_IF_ERROR(decoder.Decode(size, out));
  return out;
}

}  // namespace

std::size_t MaxDecodedBytes(std::size_t request_bytes) noexcept {
  if (request_bytes > (std::numeric_limits<std::size_t>::max() - kDecodeFloorBytes) / kDecodeAmplification) {
    return std::numeric_limits<std::size_t>::max();
  }
  return request_bytes * kDecodeAmplification + kDecodeFloorBytes;
}

absl::StatusOr<DecodedSpans> DecodeExportRequest(std::string_view body, OtlpEncoding encoding,
                                                 const SpanLimits& limits) {
  const std::size_t budget = MaxDecodedBytes(body.size());
  if (encoding == OtlpEncoding::kJson) {
    // JSON -> protobuf message -> protobuf bytes -> spans: the limits are
    // applied once, by the wire decoder. The JSON document and the message
    // are bounded by the same budget while they exist (FromOtlpJson), and
    // freed before the spans are built.
    std::string wire;
    {
      google::protobuf::Arena arena;
      auto* request = google::protobuf::Arena::CreateMessage<otlp::ExportTraceServiceRequest>(&arena);
      KSPAN_RETURN_IF_ERROR(FromOtlpJson(body, *request, budget));
      wire = request->SerializeAsString();
    }
    CodedInputStream in(reinterpret_cast<const std::uint8_t*>(wire.data()),
                        static_cast<int>(std::min<std::size_t>(wire.size(), INT_MAX)));
    return DecodeWire(in, wire.size(), budget, limits);
  }
  if (body.size() > static_cast<std::size_t>(INT_MAX)) {
    return absl::InvalidArgumentError("request larger than 2 GiB");
  }
  CodedInputStream in(reinterpret_cast<const std::uint8_t*>(body.data()), static_cast<int>(body.size()));
  return DecodeWire(in, body.size(), budget, limits);
}

absl::StatusOr<DecodedSpans> DecodeExportRequest(google::protobuf::io::ZeroCopyInputStream& stream,
                                                 std::size_t size, const SpanLimits& limits) {
  CodedInputStream in(&stream);
  return DecodeWire(in, size, MaxDecodedBytes(size), limits);
}

std::string EncodeExportResponse(std::int64_t rejected_spans, std::string_view message,
                                 OtlpEncoding encoding) {
  otlp::ExportTraceServiceResponse response;
  if (rejected_spans > 0 || !message.empty()) {
    response.mutable_partial_success()->set_rejected_spans(rejected_spans);
    response.mutable_partial_success()->set_error_message(SanitizeUtf8(message));
  }
  return encoding == OtlpEncoding::kJson ? ToOtlpJson(response) : response.SerializeAsString();
}

std::string EncodeRpcStatus(int code, std::string_view message, OtlpEncoding encoding) {
  google::rpc::Status status;
  status.set_code(code);
  status.set_message(SanitizeUtf8(message));
  return encoding == OtlpEncoding::kJson ? ToOtlpJson(status) : status.SerializeAsString();
}

std::string EncodeRetryInfoStatus(int code, std::string_view message, std::int64_t retry_delay_ms) {
  google::rpc::Status status;
  status.set_code(code);
  status.set_message(SanitizeUtf8(message));
  google::rpc::RetryInfo retry;
  retry.mutable_retry_delay()->set_seconds(retry_delay_ms / 1000);
  retry.mutable_retry_delay()->set_nanos(static_cast<std::int32_t>((retry_delay_ms % 1000) * 1'000'000));
  status.add_details()->PackFrom(retry);
  return status.SerializeAsString();
}

}  // namespace kspan
