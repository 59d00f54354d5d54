// Encoding is a reflection walk rather than protobuf's JsonUtil because
// JsonUtil writes every bytes field as base64 and has no hook for the hex ids
// OTLP requires; rewriting its output would mean parsing it again and knowing
// every place an id can appear. The walk is generic over the descriptors, so
// it follows the protos as they grow. Decoding reuses JsonUtil after turning
// the hex ids back into base64.
#include "exporter/otlp_json.h"

#include <cmath>
#include <string_view>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
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

// Keys that hold ids in OTLP/JSON.
bool IsIdKey(std::string_view key) {
  return key == "traceId" || key == "spanId" || key == "parentSpanId";
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

// Rewrites hex ids to base64 in place so JsonUtil can parse them.
absl::Status HexIdsToBase64(Json& node) {
  if (node.is_array()) {
    for (auto& element : node) {
      if (auto s = HexIdsToBase64(element); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (!node.is_object()) return absl::OkStatus();
  for (auto it = node.begin(); it != node.end(); ++it) {
    if (IsIdKey(it.key()) && it.value().is_string()) {
      const auto& hex = it.value().get_ref<const std::string&>();
      const bool is_hex = hex.size() % 2 == 0 &&
                          hex.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos;
      if (!is_hex) return absl::InvalidArgumentError(absl::StrCat("invalid hex id in \"", it.key(), "\""));
      it.value() = absl::Base64Escape(absl::HexStringToBytes(hex));
    } else if (auto s = HexIdsToBase64(it.value()); !s.ok()) {
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

absl::Status FromOtlpJson(std::string_view json, Message& message) {
  Json doc = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return absl::InvalidArgumentError("OTLP/JSON: not valid JSON");
  if (auto s = HexIdsToBase64(doc); !s.ok()) return s;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  const auto status =
      google::protobuf::util::JsonStringToMessage(doc.dump(), &message, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("OTLP/JSON: ", status.ToString()));
  }
  return absl::OkStatus();
}

}  // namespace kspan
