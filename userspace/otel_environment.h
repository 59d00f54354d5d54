// Whether a process's environment shows it exports traces to this kspan.
//
// The exec hook (bpf/process.bpf.c) sees only which OpenTelemetry variables
// an environment holds; this rule reads their values, from
// /proc/<pid>/environ, and decides whether the process is a sender of
// kspan's receiver before it has sent anything (userspace/enrollment.h).
//
// correlation.enroll_from_environment:
//   receiver  (default) the SDK is not disabled (OTEL_SDK_DISABLED), its
//             trace exporter is OTLP (OTEL_TRACES_EXPORTER unset or listing
//             otlp), and either its traces endpoint
//             (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else
//             OTEL_EXPORTER_OTLP_ENDPOINT) names one of kspan's receiver
//             ports, on a host name or an address of this host (in a
//             container the host is a bridge gateway or a name; an address
//             of another machine is another collector), or no endpoint is set, the process sets
//             OTEL_SERVICE_NAME or OTEL_TRACES_EXPORTER, and kspan listens
//             on the SDK's default port for its protocol (4318 http/protobuf
//             and http/json, 4317 grpc; either when no protocol is set,
//             since the SDKs' defaults differ).
//   any       any of OTEL_EXPORTER_OTLP_ENDPOINT,
//             OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_SERVICE_NAME or
//             OTEL_TRACES_EXPORTER is set, unless the SDK is disabled or the
//             trace exporter is "none".
//   off       never.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace kspan {

enum class EnvironmentEnrollMode { kReceiver, kAny, kOff };

// "receiver" | "any" | "off"; nullopt for anything else.
std::optional<EnvironmentEnrollMode> ParseEnvironmentEnrollMode(std::string_view text);
std::string_view EnvironmentEnrollModeName(EnvironmentEnrollMode mode);

// The values of the variables the rule reads (empty: unset; an empty value
// counts as unset, as the OpenTelemetry specification says).
struct OtelEnvironment {
  std::string sdk_disabled;     // OTEL_SDK_DISABLED
  std::string traces_exporter;  // OTEL_TRACES_EXPORTER
  std::string endpoint;         // OTEL_EXPORTER_OTLP_ENDPOINT
  std::string traces_endpoint;  // OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
  std::string protocol;         // OTEL_EXPORTER_OTLP_PROTOCOL
  std::string traces_protocol;  // OTEL_EXPORTER_OTLP_TRACES_PROTOCOL
  // OTEL_SERVICE_NAME, else service.name of OTEL_RESOURCE_ATTRIBUTES.
  std::string service_name;
  bool service_name_set = false;  // OTEL_SERVICE_NAME itself
};

// Reads a NUL-separated environment block (as /proc/<pid>/environ). The
// first definition of a variable counts, as getenv(3) finds it. Nothing
// else of the environment is kept.
OtelEnvironment ParseOtelEnvironment(std::string_view environ);

// The host and TCP port an OTLP endpoint URL names (host without IPv6
// brackets); nullopt when it names none (a unix socket, a malformed URL).
struct OtlpEndpoint {
  std::string host;
  int port = 0;
};
std::optional<OtlpEndpoint> ParseOtlpEndpoint(std::string_view url);

// Whether `host` is an IP address literal (v4 or v6, no brackets).
bool IsIpLiteral(std::string_view host);
// Whether the IP address literal `ip` is one this host answers on: loopback,
// the unspecified address, or an address of one of its interfaces (a
// container bridge's gateway included). Reads the interfaces each call.
bool IsAddressOfThisHost(const std::string& ip);

// The TCP port an OTLP endpoint URL names ("http://collector:4318/v1/traces",
// "https://otel.example.com" -> 443, "localhost:4317", "[::1]:4317");
// nullopt when it names none (a unix socket, a malformed URL).
std::optional<int> OtlpEndpointPort(std::string_view url);

struct EnvironmentRule {
  EnvironmentEnrollMode mode = EnvironmentEnrollMode::kReceiver;
  int grpc_port = 0;  // kspan's receiver ports; 0: that receiver is off
  int http_port = 0;
  // An endpoint whose host is an IP address literal names this agent only
  // if this says the address is one of this host's (IsAddressOfThisHost);
  // unset, any address is. Host names are not resolved (in a container they
  // resolve in the container's own view, e.g. host.containers.internal):
  // the port decides for them.
  std::function<bool(const std::string& ip)> is_host_address;
};

struct EnvironmentVerdict {
  bool exports_here = false;
  // Why, for logs and `kspan status`: "OTEL_EXPORTER_OTLP_ENDPOINT names
  // receiver port 4318". Names variables and ports, never their values.
  std::string reason;
  std::string service_name;  // from the environment, may be empty
};

EnvironmentVerdict JudgeEnvironment(const OtelEnvironment& env, const EnvironmentRule& rule);

}  // namespace kspan
