#include "exporter/zipkin_sender.h"

#include <arpa/inet.h>

#include <variant>

#include "absl/strings/str_cat.h"
#include "exporter/auth.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace kspan {
namespace {

// Zipkin tags are strings: arrays and key-value lists become JSON text,
// bytes base64 (AttributeValueText).
std::string TagValue(const AttributeValue& v) {
  if (const auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  if (const auto* i = std::get_if<std::int64_t>(&v)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&v)) return nlohmann::json(*d).dump();
  return AttributeValueText(v);
}

const char* ZipkinKind(SpanKind k) {
  switch (k) {
    case SpanKind::kClient: return "CLIENT";
    case SpanKind::kServer: return "SERVER";
    case SpanKind::kProducer: return "PRODUCER";
    case SpanKind::kConsumer: return "CONSUMER";
    default: return nullptr;  // internal: no kind
  }
}

std::string ServiceName(const Span& s) {
  if (s.resource) {
    if (const auto* v = FindAttribute(s.resource->attributes, "service.name")) {
      if (const auto* str = std::get_if<std::string>(v)) return *str;
    }
  }
  return "unknown_service";
}

// remoteEndpoint from the semantic-convention peer attributes.
nlohmann::json RemoteEndpoint(const Span& s) {
  nlohmann::json ep = nlohmann::json::object();
  for (const char* key : {"network.peer.address", "server.address"}) {
    const auto* v = FindAttribute(s.attributes, key);
    const auto* addr = v ? std::get_if<std::string>(v) : nullptr;
    if (addr == nullptr) continue;
    unsigned char buf[16];
    if (inet_pton(AF_INET, addr->c_str(), buf) == 1) {
      ep["ipv4"] = *addr;
    } else if (inet_pton(AF_INET6, addr->c_str(), buf) == 1) {
      ep["ipv6"] = *addr;
    } else {
      continue;
    }
    break;
  }
  for (const char* key : {"network.peer.port", "server.port"}) {
    const auto* v = FindAttribute(s.attributes, key);
    if (const auto* port = v ? std::get_if<std::int64_t>(v) : nullptr) {
      ep["port"] = *port;
      break;
    }
  }
  return ep;
}

}  // namespace

std::string ToZipkinJson(std::span<const Span> spans) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& s : spans) {
    nlohmann::json z;
    z["traceId"] = ToHex(s.trace_id);
    z["id"] = ToHex(s.span_id);
    if (IsValid(s.parent_span_id)) z["parentId"] = ToHex(s.parent_span_id);
    z["name"] = s.name;
    if (const char* kind = ZipkinKind(s.kind)) z["kind"] = kind;
    z["timestamp"] = s.start_unix_nano / 1000;
    // Zipkin reads 0 as "unknown": a sub-microsecond span lasts 1 µs.
    const std::uint64_t d =
        s.end_unix_nano > s.start_unix_nano ? (s.end_unix_nano - s.start_unix_nano) / 1000 : 0;
    z["duration"] = std::max<std::uint64_t>(d, 1);
    z["localEndpoint"] = {{"serviceName", ServiceName(s)}};
    if (auto remote = RemoteEndpoint(s); !remote.empty()) z["remoteEndpoint"] = remote;
    nlohmann::json tags = nlohmann::json::object();
    for (const auto& a : s.attributes) tags[a.key] = TagValue(a.value);
    if (s.scope) {
      tags["otel.scope.name"] = s.scope->name;
      if (!s.scope->version.empty()) tags["otel.scope.version"] = s.scope->version;
    }
    if (s.status_code == StatusCode::kError) {
      tags["otel.status_code"] = "ERROR";
      tags["error"] = s.status_message;
    } else if (s.status_code == StatusCode::kOk) {
      tags["otel.status_code"] = "OK";
    }
    if (!tags.empty()) z["tags"] = std::move(tags);
    if (!s.events.empty()) {
      nlohmann::json ann = nlohmann::json::array();
      for (const auto& e : s.events) {
        ann.push_back({{"timestamp", e.time_unix_nano / 1000}, {"value", e.name}});
      }
      z["annotations"] = std::move(ann);
    }
    out.push_back(std::move(z));
  }
  // Replace invalid UTF-8 rather than throw: captured names can hold any bytes.
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<std::unique_ptr<ZipkinSender>> ZipkinSender::Create(const OtlpGrpcOptions& options,
                                                                   const EnvLookup& env) {
  std::string url = HttpClient::EndpointUrl(options);
  const auto scheme = url.find("://");
  const auto slash = url.find('/', scheme + 3);
  if (slash == std::string::npos || slash + 1 >= url.size()) {
    if (!url.empty() && url.back() == '/') url.pop_back();
    url += "/api/v2/spans";
  }
  auto client = HttpClient::ForDestination(options, url, env);
  if (!client.ok()) return client.status();
  spdlog::info("Zipkin exporter: {}", url);
  return std::unique_ptr<ZipkinSender>(new ZipkinSender(*std::move(client)));
}

ExportResult ZipkinSender::Send(const SpanBatch& batch, Clock::time_point deadline) {
  auto r = client_->Post(ToZipkinJson(batch.spans), "application/json", deadline);
  return ClassifyHttpResponse(r, "");
}

}  // namespace kspan
