#include "userspace/otel_environment.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "userspace/process_resources.h"

namespace kspan {
namespace {

constexpr int kSdkGrpcPort = 4317;
constexpr int kSdkHttpPort = 4318;
// Longest variable value kept: an endpoint URL, a protocol, a list of
// exporters. Longer ones are cut (and then fail to parse, as they should).
constexpr std::size_t kMaxValue = 2048;

std::string Lower(std::string_view v) {
  return absl::AsciiStrToLower(absl::string_view(v.data(), v.size()));
}

std::string_view Trim(std::string_view v) {
  const absl::string_view t = absl::StripAsciiWhitespace(absl::string_view(v.data(), v.size()));
  return std::string_view(t.data(), t.size());
}

// Which OTLP transports an SDK with this environment uses for traces.
struct Transports {
  bool grpc = false;
  bool http = false;
};

// OTEL_TRACES_EXPORTER: unset means otlp. Python names its two OTLP
// exporters otlp_proto_grpc and otlp_proto_http, which fix the transport.
struct ExporterChoice {
  bool otlp = false;
  bool none = false;
  Transports fixed;  // set by a transport-specific exporter name
};

ExporterChoice ReadExporters(const std::string& value) {
  ExporterChoice c;
  if (value.empty()) {
    c.otlp = true;
    return c;
  }
  for (absl::string_view item : absl::StrSplit(value, ',')) {
    const std::string name = Lower(Trim(std::string_view(item.data(), item.size())));
    if (name == "otlp") {
      c.otlp = true;
    } else if (name == "otlp_proto_grpc") {
      c.otlp = true;
      c.fixed.grpc = true;
    } else if (name == "otlp_proto_http") {
      c.otlp = true;
      c.fixed.http = true;
    } else if (name == "none") {
      c.none = true;
    }
  }
  return c;
}

Transports TransportsOf(const OtelEnvironment& env, const ExporterChoice& exporters) {
  if (exporters.fixed.grpc || exporters.fixed.http) return exporters.fixed;
  const std::string protocol =
      Lower(Trim(env.traces_protocol.empty() ? env.protocol : env.traces_protocol));
  if (protocol == "grpc") return {.grpc = true, .http = false};
  if (protocol == "http/protobuf" || protocol == "http/json") return {.grpc = false, .http = true};
  // Unset (or unknown): the SDKs differ. The specification and the Node and
  // Java (2.x) SDKs default to http/protobuf; Python's and .NET's OTLP
  // exporters to grpc.
  return {.grpc = true, .http = true};
}

bool IsTrue(const std::string& value) { return Lower(Trim(value)) == "true"; }

}  // namespace

std::optional<EnvironmentEnrollMode> ParseEnvironmentEnrollMode(std::string_view text) {
  if (text == "receiver") return EnvironmentEnrollMode::kReceiver;
  if (text == "any") return EnvironmentEnrollMode::kAny;
  if (text == "off") return EnvironmentEnrollMode::kOff;
  return std::nullopt;
}

std::string_view EnvironmentEnrollModeName(EnvironmentEnrollMode mode) {
  switch (mode) {
    case EnvironmentEnrollMode::kReceiver:
      return "receiver";
    case EnvironmentEnrollMode::kAny:
      return "any";
    case EnvironmentEnrollMode::kOff:
      return "off";
  }
  return "off";
}

OtelEnvironment ParseOtelEnvironment(std::string_view environ) {
  OtelEnvironment env;
  struct Variable {
    std::string_view name;  // with the '='
    std::string* value;
    bool seen = false;
  };
  Variable vars[] = {
      {"OTEL_SDK_DISABLED=", &env.sdk_disabled},
      {"OTEL_TRACES_EXPORTER=", &env.traces_exporter},
      {"OTEL_EXPORTER_OTLP_ENDPOINT=", &env.endpoint},
      {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=", &env.traces_endpoint},
      {"OTEL_EXPORTER_OTLP_PROTOCOL=", &env.protocol},
      {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=", &env.traces_protocol},
  };
  for (absl::string_view entry : absl::StrSplit(absl::string_view(environ.data(), environ.size()), '\0')) {
    if (!absl::StartsWith(entry, "OTEL_")) continue;
    const std::string_view e(entry.data(), entry.size());
    for (Variable& v : vars) {
      if (v.seen || !e.starts_with(v.name)) continue;
      v.seen = true;
      *v.value = std::string(Trim(e.substr(v.name.size()).substr(0, kMaxValue)));
    }
    if (e.starts_with("OTEL_SERVICE_NAME=") && !Trim(e.substr(18)).empty()) {
      env.service_name_set = true;
    }
  }
  // The same name the process's resource gets (process_resources.h).
  env.service_name = ServiceNameFromEnviron(environ);
  return env;
}

std::optional<OtlpEndpoint> ParseOtlpEndpoint(std::string_view url) {
  // libcurl's URL parser: schemes, userinfo, bracketed IPv6 hosts, default
  // ports, and "host:port" without a scheme (which the Go SDK accepts for
  // gRPC), as a well-tested library reads them.
  const std::string text(Trim(url));
  if (text.empty()) return std::nullopt;
  std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> u(curl_url(), &curl_url_cleanup);
  if (!u) return std::nullopt;
  if (curl_url_set(u.get(), CURLUPART_URL, text.c_str(),
                   CURLU_NON_SUPPORT_SCHEME | CURLU_GUESS_SCHEME) != CURLUE_OK) {
    return std::nullopt;
  }
  char* scheme = nullptr;
  if (curl_url_get(u.get(), CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) return std::nullopt;
  const bool unix_socket = Lower(scheme) == "unix";
  curl_free(scheme);
  if (unix_socket) return std::nullopt;
  OtlpEndpoint e;
  char* host = nullptr;
  if (curl_url_get(u.get(), CURLUPART_HOST, &host, 0) != CURLUE_OK) return std::nullopt;
  e.host = host;
  curl_free(host);
  if (e.host.size() >= 2 && e.host.front() == '[' && e.host.back() == ']') {
    e.host = e.host.substr(1, e.host.size() - 2);
  }
  if (const auto zone = e.host.find('%'); zone != std::string::npos) e.host.resize(zone);
  char* port = nullptr;
  if (curl_url_get(u.get(), CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
    return std::nullopt;
  }
  const bool ok = absl::SimpleAtoi(port, &e.port) && e.port > 0 && e.port <= 65535;
  curl_free(port);
  return ok ? std::optional<OtlpEndpoint>(std::move(e)) : std::nullopt;
}

std::optional<int> OtlpEndpointPort(std::string_view url) {
  auto e = ParseOtlpEndpoint(url);
  return e ? std::optional<int>(e->port) : std::nullopt;
}

bool IsIpLiteral(std::string_view host) {
  const std::string h(host);
  in6_addr a6{};
  in_addr a4{};
  return inet_pton(AF_INET, h.c_str(), &a4) == 1 || inet_pton(AF_INET6, h.c_str(), &a6) == 1;
}

bool IsAddressOfThisHost(const std::string& ip) {
  in_addr a4{};
  in6_addr a6{};
  const bool v4 = inet_pton(AF_INET, ip.c_str(), &a4) == 1;
  if (!v4 && inet_pton(AF_INET6, ip.c_str(), &a6) != 1) return false;
  if (v4 && ((ntohl(a4.s_addr) >> 24) == 127 || a4.s_addr == INADDR_ANY)) return true;
  if (!v4 && (IN6_IS_ADDR_LOOPBACK(&a6) || IN6_IS_ADDR_UNSPECIFIED(&a6))) return true;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return false;
  bool found = false;
  for (const ifaddrs* i = list; i != nullptr && !found; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    if (v4 && i->ifa_addr->sa_family == AF_INET) {
      found = reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr == a4.s_addr;
    } else if (!v4 && i->ifa_addr->sa_family == AF_INET6) {
      const in6_addr& x = reinterpret_cast<const sockaddr_in6*>(i->ifa_addr)->sin6_addr;
      found = IN6_ARE_ADDR_EQUAL(&x, &a6);
    }
  }
  freeifaddrs(list);
  return found;
}

EnvironmentVerdict JudgeEnvironment(const OtelEnvironment& env, const EnvironmentRule& rule) {
  EnvironmentVerdict v;
  v.service_name = env.service_name;
  auto no = [&v](std::string reason) {
    v.reason = std::move(reason);
    return v;
  };
  auto yes = [&v](std::string reason) {
    v.exports_here = true;
    v.reason = std::move(reason);
    return v;
  };
  if (rule.mode == EnvironmentEnrollMode::kOff) return no("correlation.enroll_from_environment is off");
  const bool any_variable = !env.endpoint.empty() || !env.traces_endpoint.empty() ||
                            env.service_name_set || !env.traces_exporter.empty();
  if (!any_variable) return no("no OpenTelemetry exporter variables");
  if (IsTrue(env.sdk_disabled)) return no("OTEL_SDK_DISABLED is true");
  const ExporterChoice exporters = ReadExporters(env.traces_exporter);
  if (exporters.none && !exporters.otlp) return no("OTEL_TRACES_EXPORTER is none");
  if (rule.mode == EnvironmentEnrollMode::kAny) {
    return yes("OpenTelemetry variables set (enroll_from_environment: any)");
  }
  if (!exporters.otlp) return no("OTEL_TRACES_EXPORTER does not list otlp");
  if (rule.grpc_port <= 0 && rule.http_port <= 0) return no("kspan's OTLP receiver is off");
  auto is_receiver = [&rule](int port) {
    return port > 0 && (port == rule.grpc_port || port == rule.http_port);
  };

  const bool traces = !env.traces_endpoint.empty();
  if (traces || !env.endpoint.empty()) {
    const char* name = traces ? "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" : "OTEL_EXPORTER_OTLP_ENDPOINT";
    const auto endpoint = ParseOtlpEndpoint(traces ? env.traces_endpoint : env.endpoint);
    if (!endpoint) return no(absl::StrCat(name, " names no TCP port"));
    const int port = endpoint->port;
    if (!is_receiver(port)) return no(absl::StrCat(name, " names port ", port, ", not a receiver port"));
    if (rule.is_host_address && IsIpLiteral(endpoint->host) && !rule.is_host_address(endpoint->host)) {
      return no(absl::StrCat(name, " names port ", port, " on an address of another host"));
    }
    return yes(absl::StrCat(name, " names receiver port ", port));
  }
  // No endpoint: the SDK sends to localhost on its default port. Only a
  // process that configures OpenTelemetry at all counts (a variable such as
  // OTEL_RESOURCE_ATTRIBUTES alone is also read by programs that do not
  // export).
  if (!env.service_name_set && env.traces_exporter.empty()) {
    return no("no endpoint, and neither OTEL_SERVICE_NAME nor OTEL_TRACES_EXPORTER");
  }
  const Transports t = TransportsOf(env, exporters);
  if (t.http && is_receiver(kSdkHttpPort)) {
    return yes(absl::StrCat("no endpoint: the SDK default port ", kSdkHttpPort,
                            " (http/protobuf) is a receiver port"));
  }
  if (t.grpc && is_receiver(kSdkGrpcPort)) {
    return yes(absl::StrCat("no endpoint: the SDK default port ", kSdkGrpcPort,
                            " (grpc) is a receiver port"));
  }
  return no("no endpoint, and kspan's receiver is not on the SDK default port");
}

}  // namespace kspan
