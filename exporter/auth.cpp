#include "exporter/auth.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kspan {
namespace {

// Errors name the file or variable, never its content.
absl::StatusOr<std::string> Secret(const std::string& file, const std::string& var,
                                   const EnvLookup& env, const char* what) {
  if (!file.empty()) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat(what, ": cannot read ", file));
    std::ostringstream s;
    s << in.rdbuf();
    // A trailing newline from `echo token > file` is not part of the secret.
    std::string v(absl::StripTrailingAsciiWhitespace(s.str()));
    if (v.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": ", file, " is empty"));
    return v;
  }
  if (!var.empty()) {
    const char* v = env(var.c_str());
    if (v == nullptr || *v == '\0') {
      return absl::InvalidArgumentError(absl::StrCat(what, ": variable ", var, " is not set"));
    }
    return std::string(v);
  }
  return std::string();
}

}  // namespace

absl::StatusOr<std::string> AuthorizationHeader(const AuthOptions& auth, const EnvLookup& env) {
  const bool bearer = !auth.bearer_token_file.empty() || !auth.bearer_token_env.empty();
  if (bearer && !auth.basic_username.empty()) {
    return absl::InvalidArgumentError("auth: choose a bearer token or basic auth, not both");
  }
  if (bearer) {
    auto token = Secret(auth.bearer_token_file, auth.bearer_token_env, env, "auth bearer token");
    if (!token.ok()) return token.status();
    return absl::StrCat("Bearer ", *token);
  }
  if (!auth.basic_username.empty()) {
    auto password =
        Secret(auth.basic_password_file, auth.basic_password_env, env, "auth basic password");
    if (!password.ok()) return password.status();
    return absl::StrCat("Basic ", absl::Base64Escape(absl::StrCat(auth.basic_username, ":",
                                                                  *password)));
  }
  return std::string();
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> HeadersWithAuth(
    std::vector<std::pair<std::string, std::string>> headers, const AuthOptions& auth,
    const EnvLookup& env, bool grpc) {
  auto value = AuthorizationHeader(auth, env);
  if (!value.ok()) return value.status();
  // A secret file with "token\r\nX-Other: 1" must not become two headers.
  if (auto s = ValidateHeader("authorization", *value, grpc); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("auth: ", s.message()));
  }
  // The others once more, now that the transport is known: configuration
  // checks them too, but `kspan dlq replay` and tests build senders directly.
  for (const auto& [name, v] : headers) {
    if (auto s = ValidateHeader(name, v, grpc); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("headers: ", s.message()));
    }
  }
  if (value->empty()) return headers;
  std::erase_if(headers, [](const auto& h) { return absl::EqualsIgnoreCase(h.first, "authorization"); });
  headers.emplace_back("authorization", *std::move(value));
  return headers;
}

}  // namespace kspan
