// OtlpGrpcOptions from the OTEL_EXPORTER_OTLP_* environment variables of the
// OTLP exporter specification. For each option the signal-specific
// OTEL_EXPORTER_OTLP_TRACES_<X> wins over OTEL_EXPORTER_OTLP_<X>; an unset or
// empty variable leaves the given default alone.
//
//   _ENDPOINT     http(s)://host:port or host:port
//   _INSECURE     true|false (only for an endpoint without scheme)
//   _HEADERS      k1=v1,k2=v2 (W3C baggage style, values percent-decoded)
//   _TIMEOUT      milliseconds
//   _COMPRESSION  gzip|none
//   _CERTIFICATE  CA bundle file for TLS
//   _CLIENT_CERTIFICATE, _CLIENT_KEY  client certificate and key (mTLS)
//   _PROTOCOL     grpc | http/protobuf | http/json (selects the transport)
//
// For OTLP/HTTP, OTEL_EXPORTER_OTLP_ENDPOINT is a base URL ("/v1/traces" is
// appended) while OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as is.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "exporter/export_config.h"

namespace kspan {

// getenv-like: nullptr when unset. Injected so tests never touch the
// process environment.
using EnvLookup = std::function<const char*(const char* name)>;

// Reads the real environment.
EnvLookup ProcessEnv();

// Errors name the variable and say what is wrong with its value.
absl::StatusOr<OtlpGrpcOptions> OtlpGrpcOptionsFromEnv(const EnvLookup& env,
                                                       OtlpGrpcOptions defaults = {});

// Refuses a header that would break, or smuggle something into, an HTTP
// request or gRPC metadata: a name that is not an RFC 9110 token, a value
// with CR, LF, NUL or another control character (libcurl sends header lines
// as given: "v\r\nX-Injected: 1" would be a second header). With `grpc`
// also what gRPC metadata refuses: a name with characters other than
// [0-9A-Za-z_.-], a value outside printable ASCII (keys ending in "-bin"
// carry bytes). Errors quote neither name nor value: either may be a secret.
absl::Status ValidateHeader(std::string_view name, std::string_view value, bool grpc);

// "k1=v1,k2=v2" -> pairs; values (and keys) percent-decoded, whitespace
// around items trimmed.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseOtlpHeaders(
    std::string_view text);

}  // namespace kspan
