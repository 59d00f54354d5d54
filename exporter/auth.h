// Credentials for the network destinations, read once when the sender is
// created: a bearer token or basic auth, from a file or an environment
// variable. The values never appear in logs or error messages.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "exporter/export_config.h"
#include "exporter/otlp_options.h"

namespace kspan {

// The `authorization` header for `auth` ("" when none is configured).
absl::StatusOr<std::string> AuthorizationHeader(const AuthOptions& auth, const EnvLookup& env);

// `headers` with the authorization header added (replacing one given),
// every header checked for the transport (ValidateHeader; `grpc`: gRPC
// metadata rules) so that no value can inject a header line.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> HeadersWithAuth(
    std::vector<std::pair<std::string, std::string>> headers, const AuthOptions& auth,
    const EnvLookup& env, bool grpc = false);

}  // namespace kspan
