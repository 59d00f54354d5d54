#include "exporter/otlp_options.h"

#include <cstdlib>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace kspan {
namespace {

struct EnvValue {
  std::string name;  // the variable it came from, for error messages
  std::string value;
};

// Signal-specific first, then the generic variable; empty counts as unset.
std::optional<EnvValue> Lookup(const EnvLookup& env, absl::string_view suffix) {
  for (const std::string& name : {absl::StrCat("OTEL_EXPORTER_OTLP_TRACES_", suffix),
                                 absl::StrCat("OTEL_EXPORTER_OTLP_", suffix)}) {
    const char* v = env(name.c_str());
    if (v == nullptr) continue;
    std::string value(absl::StripAsciiWhitespace(v));
    if (!value.empty()) return EnvValue{name, std::move(value)};
  }
  return std::nullopt;
}

absl::Status Invalid(const EnvValue& v, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(v.name, "='", v.value, "': ", why));
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decoding (RFC 3986), hand-written: absl has none, and libcurl's
// curl_easy_unescape would add a dependency and accept invalid escapes.
absl::StatusOr<std::string> PercentDecode(absl::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) {
      return absl::InvalidArgumentError("truncated percent escape");
    }
    const int hi = HexDigit(in[i + 1]);
    const int lo = HexDigit(in[i + 2]);
    if (hi < 0 || lo < 0) return absl::InvalidArgumentError("invalid percent escape");
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

}  // namespace

absl::Status ValidateHeader(std::string_view name, std::string_view value, bool grpc) {
  if (name.empty()) return absl::InvalidArgumentError("a header name is empty");
  static constexpr std::string_view kTokenPunctuation = "!#$%&'*+-.^_`|~";
  for (const char c : name) {
    const bool alnum = absl::ascii_isalnum(static_cast<unsigned char>(c));
    const bool ok = grpc ? alnum || c == '-' || c == '_' || c == '.'
                         : alnum || kTokenPunctuation.find(c) != std::string_view::npos;
    if (!ok) {
      return absl::InvalidArgumentError(grpc ? "a header name has a character gRPC metadata does not "
                                               "allow (only 0-9 A-Z a-z - _ .)"
                                             : "a header name is not an HTTP token");
    }
  }
  const bool binary = grpc && absl::EndsWithIgnoreCase(absl::string_view(name.data(), name.size()), "-bin");
  if (binary) return absl::OkStatus();
  for (const char ch : value) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\t') || c == 0x7F) {
      return absl::InvalidArgumentError(
          "a header value contains CR, LF, NUL or another control character");
    }
    if (grpc && (c < 0x20 || c > 0x7E)) {
      return absl::InvalidArgumentError(
          "a header value has a byte outside printable ASCII, which gRPC metadata does not allow");
    }
  }
  return absl::OkStatus();
}

EnvLookup ProcessEnv() {
  return [](const char* name) -> const char* { return std::getenv(name); };
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseOtlpHeaders(
    std::string_view text) {
  std::vector<std::pair<std::string, std::string>> headers;
  int position = 0;
  // absl::string_view: Debian's abseil is built without std::string_view.
  for (absl::string_view item : absl::StrSplit(absl::string_view(text.data(), text.size()), ',')) {
    ++position;
    item = absl::StripAsciiWhitespace(item);
    if (item.empty()) continue;  // tolerate "a=b," and ",,"
    const auto eq = item.find('=');
    // Errors give the item's position, never its text: it may be a secret.
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("item ", position, " has no '='"));
    }
    auto key = PercentDecode(absl::StripAsciiWhitespace(item.substr(0, eq)));
    auto value = PercentDecode(absl::StripAsciiWhitespace(item.substr(eq + 1)));
    if (!key.ok() || !value.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("item ", position, ": ", (key.ok() ? value : key).status().message()));
    }
    if (key->empty()) return absl::InvalidArgumentError(absl::StrCat("item ", position, " has an empty name"));
    headers.emplace_back(*std::move(key), *std::move(value));
  }
  return headers;
}

absl::StatusOr<OtlpGrpcOptions> OtlpGrpcOptionsFromEnv(const EnvLookup& env,
                                                       OtlpGrpcOptions options) {
  if (auto v = Lookup(env, "PROTOCOL")) {
    const std::string protocol = absl::AsciiStrToLower(v->value);
    if (protocol != "grpc" && protocol != "http/protobuf" && protocol != "http/json") {
      return Invalid(*v, "expected grpc, http/protobuf or http/json");
    }
    options.protocol = protocol;
  }

  if (auto v = Lookup(env, "ENDPOINT")) {
    const bool has_scheme = v->value.find("://") != std::string::npos;
    if (has_scheme && !absl::StartsWithIgnoreCase(v->value, "http://") &&
        !absl::StartsWithIgnoreCase(v->value, "https://")) {
      return Invalid(*v, "the scheme must be http or https");
    }
    absl::string_view rest = v->value;
    if (has_scheme) rest.remove_prefix(rest.find("://") + 3);
    if (rest.empty() || rest.front() == '/' || rest.front() == ':') {
      return Invalid(*v, "no host");
    }
    options.endpoint = v->value;
    // OTLP/HTTP: the signal-specific variable is the URL to POST to; the
    // generic one is a base URL that gets "/v1/traces".
    options.endpoint_is_full_url = absl::StartsWith(v->name, "OTEL_EXPORTER_OTLP_TRACES_");
  }

  if (auto v = Lookup(env, "INSECURE")) {
    const std::string b = absl::AsciiStrToLower(v->value);
    if (b == "true") {
      options.insecure = true;
    } else if (b == "false") {
      options.insecure = false;
    } else {
      return Invalid(*v, "expected true or false");
    }
  }

  if (auto v = Lookup(env, "HEADERS")) {
    auto headers = ParseOtlpHeaders(v->value);
    // The value may hold credentials: name the variable, not its content.
    if (!headers.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(v->name, ": ", headers.status().message()));
    }
    // A percent-escape can decode to CR LF: checked after decoding. Which
    // transport the headers go to is not known yet; the gRPC rules are
    // checked once it is (config validation, sender creation).
    for (std::size_t i = 0; i < headers->size(); ++i) {
      const auto& [key, value] = (*headers)[i];
      if (auto s = ValidateHeader(key, value, false); !s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(v->name, ": header ", i + 1, ": ", s.message()));
      }
    }
    // Variables win over configured headers of the same name; others stay.
    for (auto& [key, value] : *headers) {
      bool replaced = false;
      for (auto& existing : options.headers) {
        if (absl::EqualsIgnoreCase(existing.first, key)) {
          existing.second = value;
          replaced = true;
        }
      }
      if (!replaced) options.headers.emplace_back(key, value);
    }
  }

  if (auto v = Lookup(env, "TIMEOUT")) {
    std::int64_t ms = 0;
    if (!absl::SimpleAtoi(v->value, &ms) || ms < 0) {
      return Invalid(*v, "expected a non-negative number of milliseconds");
    }
    if (ms > kMaxSettingDuration.count()) {
      return Invalid(*v, absl::StrCat("at most ", kMaxSettingDuration.count(), " (a year)"));
    }
    options.timeout = std::chrono::milliseconds(ms);
  }

  if (auto v = Lookup(env, "COMPRESSION")) {
    const std::string c = absl::AsciiStrToLower(v->value);
    if (c != "gzip" && c != "none") return Invalid(*v, "expected gzip or none");
    options.compression = c;
  }

  if (auto v = Lookup(env, "CERTIFICATE")) options.certificate_file = v->value;
  if (auto v = Lookup(env, "CLIENT_CERTIFICATE")) options.tls.cert_file = v->value;
  if (auto v = Lookup(env, "CLIENT_KEY")) options.tls.key_file = v->value;

  return options;
}

}  // namespace kspan
