// Encoding and decoding are reflection walks rather than protobuf's JsonUtil
// because JsonUtil reads and writes every bytes field as base64 and has no
// hook for the hex ids OTLP requires, and because JsonUtil's parser (through
// a type resolver and an object writer) decodes about twenty times slower
// than parsing with nlohmann and setting fields by reflection, which matters
// for the OTLP/HTTP receiver. The walks are generic over the descriptors, so
// they follow the protos as they grow.
#include "exporter/otlp_json.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>
#include <type_traits>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "exporter/status_macros.h"
#include "google/protobuf/descriptor.h"
#include "nlohmann/json.hpp"

namespace kspan {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using Json = nlohmann::ordered_json;

// Bytes fields holding ids, by proto field name, in every OTLP message.
bool IsIdField(const FieldDescriptor* field) {
  const auto& n = field->name();
  return n == "trace_id" || n == "span_id" || n == "parent_span_id";
}

Json FloatingToJson(double v) {
  // proto3 JSON: non-finite numbers are strings.
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return v;
}

Json MessageToJson(const Message& message);

Json ValueToJson(const Message& message, const Reflection* r, const FieldDescriptor* field,
                 int index) {
  const bool repeated = field->is_repeated();
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return repeated ? r->GetRepeatedInt32(message, field, index) : r->GetInt32(message, field);
    case FieldDescriptor::CPPTYPE_UINT32:
      return repeated ? r->GetRepeatedUInt32(message, field, index) : r->GetUInt32(message, field);
    case FieldDescriptor::CPPTYPE_INT64:
      return std::to_string(repeated ? r->GetRepeatedInt64(message, field, index)
                                     : r->GetInt64(message, field));
    case FieldDescriptor::CPPTYPE_UINT64:
      return std::to_string(repeated ? r->GetRepeatedUInt64(message, field, index)
                                     : r->GetUInt64(message, field));
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return FloatingToJson(repeated ? r->GetRepeatedDouble(message, field, index)
                                     : r->GetDouble(message, field));
    case FieldDescriptor::CPPTYPE_FLOAT:
      return FloatingToJson(repeated ? r->GetRepeatedFloat(message, field, index)
                                     : r->GetFloat(message, field));
    case FieldDescriptor::CPPTYPE_BOOL:
      return repeated ? r->GetRepeatedBool(message, field, index) : r->GetBool(message, field);
    case FieldDescriptor::CPPTYPE_ENUM:
      return repeated ? r->GetRepeatedEnumValue(message, field, index)
                      : r->GetEnumValue(message, field);
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string scratch;
      const std::string& s = repeated ? r->GetRepeatedStringReference(message, field, index, &scratch)
                                      : r->GetStringReference(message, field, &scratch);
      if (field->type() == FieldDescriptor::TYPE_BYTES) {
        return IsIdField(field) ? absl::BytesToHexString(s) : absl::Base64Escape(s);
      }
      return s;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return MessageToJson(repeated ? r->GetRepeatedMessage(message, field, index)
                                    : r->GetMessage(message, field));
  }
  return nullptr;
}

Json MessageToJson(const Message& message) {
  Json out = Json::object();
  const Reflection* r = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  // ListFields yields exactly the fields proto3 JSON prints: set oneof
  // members, present messages, non-empty repeated and non-default scalars,
  // in field-number order.
  r->ListFields(message, &fields);
  for (const FieldDescriptor* field : fields) {
    if (field->is_map()) continue;  // OTLP trace messages have no maps
    if (field->is_repeated()) {
      Json array = Json::array();
      const int n = r->FieldSize(message, field);
      for (int i = 0; i < n; ++i) array.push_back(ValueToJson(message, r, field, i));
      out[field->json_name()] = std::move(array);
    } else {
      out[field->json_name()] = ValueToJson(message, r, field, -1);
    }
  }
  return out;
}

// --- decoding ---------------------------------------------------------

// Unordered objects: faster to build than ordered_json, and field order does
// not matter when reading.
using InJson = nlohmann::json;

absl::Status Bad(const FieldDescriptor* field, const char* what) {
  return absl::InvalidArgumentError(absl::StrCat("OTLP/JSON: field \"", field->json_name(), "\": ", what));
}

// proto3 JSON integers: a number or a decimal string.
template <typename T>
absl::Status ToInteger(const InJson& v, const FieldDescriptor* field, T* out) {
  if (v.is_number_integer()) {
    if constexpr (std::is_signed_v<T>) {
      if (v.is_number_unsigned()) {
        const auto u = v.get<std::uint64_t>();
        if (u > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) return Bad(field, "out of range");
        *out = static_cast<T>(u);
        return absl::OkStatus();
      }
      const auto i = v.get<std::int64_t>();
      if (i < std::numeric_limits<T>::min() || i > std::numeric_limits<T>::max()) return Bad(field, "out of range");
      *out = static_cast<T>(i);
    } else {
      if (!v.is_number_unsigned()) return Bad(field, "negative");
      const auto u = v.get<std::uint64_t>();
      if (u > std::numeric_limits<T>::max()) return Bad(field, "out of range");
      *out = static_cast<T>(u);
    }
    return absl::OkStatus();
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (d != std::floor(d) || d < static_cast<double>(std::numeric_limits<T>::min()) ||
        d > static_cast<double>(std::numeric_limits<T>::max())) {
      return Bad(field, "not an integer");
    }
    *out = static_cast<T>(d);
    return absl::OkStatus();
  }
  if (v.is_string()) {
    const auto& str = v.get_ref<const std::string&>();
    const bool ok = std::is_signed_v<T> ? absl::SimpleAtoi(str, out) : (str.empty() || str[0] != '-') && absl::SimpleAtoi(str, out);
    if (!ok) return Bad(field, "not an integer");
    return absl::OkStatus();
  }
  return Bad(field, "not an integer");
}

absl::Status ToDouble(const InJson& v, const FieldDescriptor* field, double* out) {
  if (v.is_number()) {
    *out = v.get<double>();
    return absl::OkStatus();
  }
  if (v.is_string()) {
    const auto& str = v.get_ref<const std::string&>();
    if (str == "NaN") *out = std::numeric_limits<double>::quiet_NaN();
    else if (str == "Infinity") *out = std::numeric_limits<double>::infinity();
    else if (str == "-Infinity") *out = -std::numeric_limits<double>::infinity();
    else if (!absl::SimpleAtod(str, out)) return Bad(field, "not a number");
    return absl::OkStatus();
  }
  return Bad(field, "not a number");
}

absl::Status JsonToMessage(const InJson& json, Message& message, int depth);

// One value of `field` (an element when repeated) into `message`.
absl::Status SetFromJson(const InJson& v, Message& message, const FieldDescriptor* field, int depth) {
  const Reflection* r = message.GetReflection();
  const bool rep = field->is_repeated();
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: {
      std::int32_t x = 0;
      KSPAN_RETURN_IF_ERROR(ToInteger(v, field, &x));
      rep ? r->AddInt32(&message, field, x) : r->SetInt32(&message, field, x);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_UINT32: {
      std::uint32_t x = 0;
      KSPAN_RETURN_IF_ERROR(ToInteger(v, field, &x));
      rep ? r->AddUInt32(&message, field, x) : r->SetUInt32(&message, field, x);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      std::int64_t x = 0;
      KSPAN_RETURN_IF_ERROR(ToInteger(v, field, &x));
      rep ? r->AddInt64(&message, field, x) : r->SetInt64(&message, field, x);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      std::uint64_t x = 0;
      KSPAN_RETURN_IF_ERROR(ToInteger(v, field, &x));
      rep ? r->AddUInt64(&message, field, x) : r->SetUInt64(&message, field, x);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT: {
      double x = 0;
      KSPAN_RETURN_IF_ERROR(ToDouble(v, field, &x));
      if (field->cpp_type() == FieldDescriptor::CPPTYPE_FLOAT) {
        rep ? r->AddFloat(&message, field, static_cast<float>(x)) : r->SetFloat(&message, field, static_cast<float>(x));
      } else {
        rep ? r->AddDouble(&message, field, x) : r->SetDouble(&message, field, x);
      }
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      if (!v.is_boolean()) return Bad(field, "not a boolean");
      rep ? r->AddBool(&message, field, v.get<bool>()) : r->SetBool(&message, field, v.get<bool>());
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      int x = 0;
      if (v.is_string()) {
        // Names are accepted too; an unknown name is ignored like an
        // unknown field.
        const auto* e = field->enum_type()->FindValueByName(v.get_ref<const std::string&>());
        if (e == nullptr) return absl::OkStatus();
        x = e->number();
      } else if (auto s = ToInteger(v, field, &x); !s.ok()) {
        return s;
      }
      rep ? r->AddEnumValue(&message, field, x) : r->SetEnumValue(&message, field, x);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      if (!v.is_string()) return Bad(field, "not a string");
      const auto& str = v.get_ref<const std::string&>();
      std::string bytes;
      if (field->type() == FieldDescriptor::TYPE_BYTES) {
        if (IsIdField(field)) {
          // OTLP: ids are hex, not base64 (either case).
          if (str.size() % 2 != 0 || str.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
            return Bad(field, "invalid hex id");
          }
          bytes = absl::HexStringToBytes(str);
        } else if (!absl::Base64Unescape(str, &bytes) && !absl::WebSafeBase64Unescape(str, &bytes)) {
          return Bad(field, "invalid base64");
        }
      } else {
        bytes = str;
      }
      rep ? r->AddString(&message, field, std::move(bytes)) : r->SetString(&message, field, std::move(bytes));
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_MESSAGE: {
      Message* sub = rep ? r->AddMessage(&message, field) : r->MutableMessage(&message, field);
      return JsonToMessage(v, *sub, depth + 1);
    }
  }
  return Bad(field, "unsupported type");
}

absl::Status JsonToMessage(const InJson& json, Message& message, int depth) {
  // Nesting is bounded (arrays of key-value lists of arrays...), as
  // protobuf's own parser bounds it.
  if (depth > 100) return absl::InvalidArgumentError("OTLP/JSON: nested too deeply");
  if (!json.is_object()) return absl::InvalidArgumentError("OTLP/JSON: expected an object");
  const auto* descriptor = message.GetDescriptor();
  for (auto it = json.begin(); it != json.end(); ++it) {
    // lowerCamelCase as OTLP writes it; the proto field name is accepted too.
    const FieldDescriptor* field = descriptor->FindFieldByCamelcaseName(it.key());
    if (field == nullptr) field = descriptor->FindFieldByName(it.key());
    if (field == nullptr || field->is_map()) continue;  // unknown: ignored, as OTLP requires
    const InJson& v = it.value();
    if (v.is_null()) continue;
    if (field->is_repeated()) {
      if (!v.is_array()) return Bad(field, "expected an array");
      for (const auto& element : v) {
        KSPAN_RETURN_IF_ERROR(SetFromJson(element, message, field, depth));
      }
    } else if (auto s = SetFromJson(v, message, field, depth); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string ToOtlpJson(const Message& message) {
  // Invalid UTF-8 cannot come from a parsed proto3 message; replacing rather
  // than throwing keeps a hand-built message from aborting the export.
  return MessageToJson(message).dump(-1, ' ', false, Json::error_handler_t::replace);
}

absl::Status FromOtlpJson(std::string_view json, Message& message, std::size_t max_bytes) {
  // Approximate bytes of each parsed value in nlohmann's document (a value
  // is 16 bytes; an object a std::map with a node per member; an array a
  // std::vector), counted as the parser reports them; past the bound every
  // value is discarded and the document refused.
  std::size_t used = 0;
  bool over = false;
  const InJson::parser_callback_t count = [&](int, InJson::parse_event_t event, InJson& parsed) {
    if (over) return false;
    switch (event) {
      case InJson::parse_event_t::object_start: used += 64; break;
      case InJson::parse_event_t::array_start: used += 40; break;
      case InJson::parse_event_t::key:
        used += 80 + (parsed.is_string() ? parsed.get_ref<const std::string&>().size() : 0);
        break;
      case InJson::parse_event_t::value:
        used += 16 + (parsed.is_string() ? parsed.get_ref<const std::string&>().size() : 0);
        break;
      default: break;
    }
    over = used > max_bytes;
    return !over;
  };
  InJson doc = InJson::parse(json.begin(), json.end(), count, /*allow_exceptions=*/false);
  if (over) {
    return absl::InvalidArgumentError(absl::StrCat(
        "OTLP/JSON: request refused: its document would take more than ", max_bytes,
        " bytes of memory"));
  }
  if (doc.is_discarded()) return absl::InvalidArgumentError("OTLP/JSON: not valid JSON");
  message.Clear();
  return JsonToMessage(doc, message, 0);
}

absl::Status FromOtlpJson(std::string_view json, Message& message) {
  InJson doc = InJson::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return absl::InvalidArgumentError("OTLP/JSON: not valid JSON");
  message.Clear();
  return JsonToMessage(doc, message, 0);
}

}  // namespace kspan
