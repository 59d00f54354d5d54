#include "userspace/config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "exporter/otlp_options.h"
#include "exporter/status_macros.h"
#include "userspace/http_capture.h"
#include "userspace/syscall_capture.h"

namespace kspan {
namespace {

// Walks the YAML tree, turning every problem into "<origin>:<line>: <key>: <why>".
class ConfigReader {
 public:
  explicit ConfigReader(std::string origin) : origin_(std::move(origin)) {}

  absl::Status Error(const YAML::Node& node, const std::string& key, const std::string& why) const {
    std::string where = origin_;
    if (node.IsDefined() && node.Mark().line >= 0) {
      absl::StrAppend(&where, ":", node.Mark().line + 1);
    }
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", key, ": ", why));
  }

  // Every key of `map` must be in `known`.
  absl::Status CheckKeys(const YAML::Node& map, const std::string& prefix,
                         const std::set<std::string>& known) const {
    if (!map.IsMap()) return Error(map, prefix.empty() ? "(top level)" : prefix, "must be a mapping");
    for (const auto& kv : map) {
      const std::string key = kv.first.as<std::string>();
      if (!known.contains(key)) {
        return Error(kv.first, Join(prefix, key),
                     absl::StrCat("unknown key (known: ", absl::StrJoin(known, ", "), ")"));
      }
    }
    return absl::OkStatus();
  }

  static std::string Join(const std::string& prefix, const std::string& key) {
    return prefix.empty() ? key : absl::StrCat(prefix, ".", key);
  }

  absl::Status String(const YAML::Node& n, const std::string& key, std::string* out) const {
    if (!n) return absl::OkStatus();
    if (!n.IsScalar()) return Error(n, key, "must be a string");
    *out = n.as<std::string>();
    return absl::OkStatus();
  }

  absl::Status Bool(const YAML::Node& n, const std::string& key, bool* out) const {
    if (!n) return absl::OkStatus();
    bool v = false;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) {
      return Error(n, key, "must be true or false");
    }
    *out = v;
    return absl::OkStatus();
  }

  absl::Status Count(const YAML::Node& n, const std::string& key, std::size_t min,
                     std::size_t* out) const {
    if (!n) return absl::OkStatus();
    std::uint64_t v = 0;
    if (!n.IsScalar() || !absl::SimpleAtoi(n.as<std::string>(), &v)) {
      return Error(n, key, "must be a whole number");
    }
    if (v < min) return Error(n, key, absl::StrCat("must be at least ", min));
    *out = static_cast<std::size_t>(v);
    return absl::OkStatus();
  }

  // 4194304, "4MiB", "64KiB", "1GiB".
  absl::Status Bytes(const YAML::Node& n, const std::string& key, std::size_t* out) const {
    if (!n) return absl::OkStatus();
    if (!n.IsScalar()) return Error(n, key, "must be a size such as 4MiB");
    std::string s = n.as<std::string>();
    std::uint64_t mult = 1;
    for (auto [suffix, m] : {std::pair{"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30}}) {
      if (absl::EndsWith(s, suffix)) {
        s.resize(s.size() - 3);
        mult = m;
        break;
      }
    }
    std::uint64_t v = 0;
    if (!absl::SimpleAtoi(s, &v)) return Error(n, key, "must be a size such as 4MiB or 65536");
    // 17179869184GiB would wrap to 0, which several keys read as "no bound".
    if (v > std::numeric_limits<std::size_t>::max() / mult) {
      return Error(n, key, "is too large");
    }
    *out = static_cast<std::size_t>(v * mult);
    return absl::OkStatus();
  }

  // A list of process ids.
  absl::Status Pids(const YAML::Node& n, const std::string& key,
                    std::vector<std::uint32_t>* out) const {
    if (!n) return absl::OkStatus();
    if (!n.IsSequence()) return Error(n, key, "must be a list of process ids");
    for (const auto& item : n) {
      std::uint32_t pid = 0;
      if (!item.IsScalar() || !absl::SimpleAtoi(item.as<std::string>(), &pid) || pid == 0) {
        return Error(item, key, "must be a list of process ids");
      }
      out->push_back(pid);
    }
    return absl::OkStatus();
  }

  absl::Status Strings(const YAML::Node& n, const std::string& key,
                       std::vector<std::string>* out) const {
    if (!n) return absl::OkStatus();
    if (!n.IsSequence()) return Error(n, key, "must be a list of strings");
    for (const auto& item : n) {
      if (!item.IsScalar()) return Error(item, key, "must be a list of strings");
      out->push_back(item.as<std::string>());
    }
    return absl::OkStatus();
  }

  // "100ms", "5s", "1m"; a bare number is milliseconds.
  absl::Status Duration(const YAML::Node& n, const std::string& key,
                        std::chrono::milliseconds* out) const {
    if (!n) return absl::OkStatus();
    if (!n.IsScalar()) return Error(n, key, "must be a duration such as 500ms or 5s");
    std::string s = n.as<std::string>();
    // A year at most (kMaxSettingDuration): a larger value turned negative
    // in the int64 arithmetic of deadlines (now + timeout), or infinite.
    const std::string too_long = "is too long (at most 8760h, a year)";
    std::uint64_t ms = 0;
    if (s.find_first_not_of("0123456789") == std::string::npos && !s.empty()) {
      if (!absl::SimpleAtoi(s, &ms) || ms > static_cast<std::uint64_t>(kMaxSettingDuration.count())) {
        return Error(n, key, too_long);
      }
      *out = std::chrono::milliseconds(ms);
      return absl::OkStatus();
    }
    absl::Duration d;
    if (!absl::ParseDuration(s, &d) || d < absl::ZeroDuration()) {
      return Error(n, key, "must be a duration such as 500ms or 5s");
    }
    if (d > absl::Milliseconds(kMaxSettingDuration.count())) return Error(n, key, too_long);
    *out = std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
    return absl::OkStatus();
  }

 private:
  std::string origin_;
};

// The export keys added with OTLP/HTTP, Zipkin, TLS, auth, the disk queue,
// the circuit breaker and the dead-letter store.
absl::Status ReadExportExtras(const ConfigReader& r, const YAML::Node& n, const std::string& key,
                              DestinationConfig* d) {
  auto& g = d->otlp_grpc;
  if (const auto& p = n["protocol"]; p) {
    KSPAN_RETURN_IF_ERROR(r.String(p, key + ".protocol", &g.protocol));
    const bool ok = d->type == DestinationType::kOtlpHttp
                        ? (g.protocol == "http/protobuf" || g.protocol == "http/json")
                        : d->type == DestinationType::kOtlpGrpc && g.protocol == "grpc";
    if (!ok) {
      return r.Error(p, key + ".protocol",
                     d->type == DestinationType::kOtlpHttp
                         ? "must be http/protobuf or http/json"
                         : "only for otlp_http (http/protobuf or http/json) and otlp_grpc (grpc)");
    }
  }
  if (const auto& t = n["tls"]; t) {
    const std::string tk = key + ".tls";
    KSPAN_RETURN_IF_ERROR(r.CheckKeys(
        t, tk, {"ca_file", "cert_file", "key_file", "server_name", "insecure_skip_verify"}));
    KSPAN_RETURN_IF_ERROR(r.String(t["ca_file"], tk + ".ca_file", &g.certificate_file));
    KSPAN_RETURN_IF_ERROR(r.String(t["cert_file"], tk + ".cert_file", &g.tls.cert_file));
    KSPAN_RETURN_IF_ERROR(r.String(t["key_file"], tk + ".key_file", &g.tls.key_file));
    KSPAN_RETURN_IF_ERROR(r.String(t["server_name"], tk + ".server_name", &g.tls.server_name));
    KSPAN_RETURN_IF_ERROR(r.Bool(t["insecure_skip_verify"], tk + ".insecure_skip_verify",
                                 &g.tls.insecure_skip_verify));
    if (g.tls.cert_file.empty() != g.tls.key_file.empty()) {
      return r.Error(t, tk, "cert_file and key_file must be given together");
    }
    if (g.tls.insecure_skip_verify && d->type == DestinationType::kOtlpGrpc) {
      return r.Error(t["insecure_skip_verify"], tk + ".insecure_skip_verify",
                     "is not supported for otlp_grpc; give the CA with ca_file");
    }
  }
  if (const auto& a = n["auth"]; a) {
    const std::string ak = key + ".auth";
    KSPAN_RETURN_IF_ERROR(r.CheckKeys(a, ak,
                                      {"bearer_token_file", "bearer_token_env", "basic_username",
                                       "basic_password_file", "basic_password_env"}));
    auto& au = g.auth;
    KSPAN_RETURN_IF_ERROR(r.String(a["bearer_token_file"], ak + ".bearer_token_file", &au.bearer_token_file));
    KSPAN_RETURN_IF_ERROR(r.String(a["bearer_token_env"], ak + ".bearer_token_env", &au.bearer_token_env));
    KSPAN_RETURN_IF_ERROR(r.String(a["basic_username"], ak + ".basic_username", &au.basic_username));
    KSPAN_RETURN_IF_ERROR(r.String(a["basic_password_file"], ak + ".basic_password_file", &au.basic_password_file));
    KSPAN_RETURN_IF_ERROR(r.String(a["basic_password_env"], ak + ".basic_password_env", &au.basic_password_env));
    const bool bearer = !au.bearer_token_file.empty() || !au.bearer_token_env.empty();
    const bool basic = !au.basic_username.empty();
    if (bearer && basic) return r.Error(a, ak, "choose a bearer token or basic auth, not both");
    if (basic && au.basic_password_file.empty() && au.basic_password_env.empty()) {
      return r.Error(a, ak, "basic_username needs basic_password_file or basic_password_env");
    }
  }
  if (const auto& q = n["queue"]; q) {
    const std::string qk = key + ".queue";
    KSPAN_RETURN_IF_ERROR(r.CheckKeys(q, qk, {"max_batches", "max_spans", "max_bytes", "disk"}));
    KSPAN_RETURN_IF_ERROR(r.Count(q["max_batches"], qk + ".max_batches", 1, &d->max_queued_batches));
    KSPAN_RETURN_IF_ERROR(r.Count(q["max_spans"], qk + ".max_spans", 0, &d->queue.max_spans));
    KSPAN_RETURN_IF_ERROR(r.Bytes(q["max_bytes"], qk + ".max_bytes", &d->queue.max_bytes));
    if (const auto& dk = q["disk"]; dk) {
      const std::string k = qk + ".disk";
      KSPAN_RETURN_IF_ERROR(r.CheckKeys(dk, k, {"enabled", "path", "max_bytes", "fsync"}));
      auto& disk = d->queue.disk;
      disk.enabled = true;  // a disk section turns it on unless it says otherwise
      KSPAN_RETURN_IF_ERROR(r.Bool(dk["enabled"], k + ".enabled", &disk.enabled));
      KSPAN_RETURN_IF_ERROR(r.String(dk["path"], k + ".path", &disk.path));
      KSPAN_RETURN_IF_ERROR(r.Bytes(dk["max_bytes"], k + ".max_bytes", &disk.max_bytes));
      std::string fsync = "normal";
      KSPAN_RETURN_IF_ERROR(r.String(dk["fsync"], k + ".fsync", &fsync));
      if (fsync == "full") {
        disk.fsync = FsyncPolicy::kFull;
      } else if (fsync == "normal") {
        disk.fsync = FsyncPolicy::kNormal;
      } else if (fsync == "off") {
        disk.fsync = FsyncPolicy::kOff;
      } else {
        return r.Error(dk["fsync"], k + ".fsync", "must be full, normal or off");
      }
    }
  }
  KSPAN_RETURN_IF_ERROR(r.Count(n["max_in_flight"], key + ".max_in_flight", 1, &d->max_in_flight));
  if (d->max_in_flight > 64) return r.Error(n["max_in_flight"], key + ".max_in_flight", "must be 1 to 64");
  if (const auto& cb = n["circuit_breaker"]; cb) {
    const std::string ck = key + ".circuit_breaker";
    KSPAN_RETURN_IF_ERROR(r.CheckKeys(cb, ck, {"enabled", "failure_threshold", "open_duration"}));
    auto& c = d->circuit_breaker;
    KSPAN_RETURN_IF_ERROR(r.Bool(cb["enabled"], ck + ".enabled", &c.enabled));
    std::size_t threshold = static_cast<std::size_t>(c.failure_threshold);
    KSPAN_RETURN_IF_ERROR(r.Count(cb["failure_threshold"], ck + ".failure_threshold", 1, &threshold));
    c.failure_threshold = static_cast<int>(threshold > 1000000 ? 1000000 : threshold);
    KSPAN_RETURN_IF_ERROR(r.Duration(cb["open_duration"], ck + ".open_duration", &c.open_duration));
  }
  if (const auto& dl = n["dead_letter"]; dl) {
    const std::string k = key + ".dead_letter";
    KSPAN_RETURN_IF_ERROR(r.CheckKeys(dl, k, {"enabled", "path", "max_bytes"}));
    KSPAN_RETURN_IF_ERROR(r.Bool(dl["enabled"], k + ".enabled", &d->dead_letter.enabled));
    KSPAN_RETURN_IF_ERROR(r.String(dl["path"], k + ".path", &d->dead_letter.path));
    KSPAN_RETURN_IF_ERROR(r.Bytes(dl["max_bytes"], k + ".max_bytes", &d->dead_letter.max_bytes));
  }
  return absl::OkStatus();
}

absl::Status ReadDestination(const ConfigReader& r, const YAML::Node& n, const std::string& key,
                             DestinationConfig* d) {
  KSPAN_RETURN_IF_ERROR(r.CheckKeys(
      n, key,
      {"name", "type", "endpoint", "insecure", "headers", "timeout", "compression",
       "certificate", "path", "max_file_bytes", "stderr", "retry", "max_queued_batches",
       "protocol", "tls", "auth", "queue", "max_in_flight", "circuit_breaker", "dead_letter"}));
  KSPAN_RETURN_IF_ERROR(r.String(n["name"], key + ".name", &d->name));
  std::string type;
  KSPAN_RETURN_IF_ERROR(r.String(n["type"], key + ".type", &type));
  if (type == "otlp_grpc") {
    d->type = DestinationType::kOtlpGrpc;
  } else if (type == "otlp_http") {
    d->type = DestinationType::kOtlpHttp;
    d->otlp_grpc.protocol = "http/protobuf";
    d->otlp_grpc.endpoint = "http://localhost:4318";
  } else if (type == "zipkin") {
    d->type = DestinationType::kZipkin;
    d->otlp_grpc.endpoint = "http://localhost:9411/api/v2/spans";
  } else if (type == "file") {
    d->type = DestinationType::kFile;
  } else if (type == "console") {
    d->type = DestinationType::kConsole;
  } else {
    return r.Error(n["type"].IsDefined() ? n["type"] : n, key + ".type",
                   type.empty() ? "is required (otlp_grpc, otlp_http, zipkin, file or console)"
                                : absl::StrCat("unknown type '", type,
                                               "' (otlp_grpc, otlp_http, zipkin, file or console)"));
  }
  auto& g = d->otlp_grpc;
  KSPAN_RETURN_IF_ERROR(r.String(n["endpoint"], key + ".endpoint", &g.endpoint));
  KSPAN_RETURN_IF_ERROR(r.Bool(n["insecure"], key + ".insecure", &g.insecure));
  KSPAN_RETURN_IF_ERROR(r.Duration(n["timeout"], key + ".timeout", &g.timeout));
  KSPAN_RETURN_IF_ERROR(r.String(n["compression"], key + ".compression", &g.compression));
  if (g.compression != "none" && g.compression != "gzip" &&
      !(g.compression == "zstd" && d->type != DestinationType::kOtlpGrpc)) {
    return r.Error(n["compression"], key + ".compression",
                   d->type == DestinationType::kOtlpGrpc ? "must be none or gzip"
                                                         : "must be none, gzip or zstd");
  }
  KSPAN_RETURN_IF_ERROR(ReadExportExtras(r, n, key, d));
  KSPAN_RETURN_IF_ERROR(r.String(n["certificate"], key + ".certificate", &g.certificate_file));
  if (const auto& h = n["headers"]; h) {
    if (!h.IsMap()) return r.Error(h, key + ".headers", "must be a mapping of name: value");
    for (const auto& kv : h) {
      if (!kv.first.IsScalar() || !kv.second.IsScalar()) {
        return r.Error(kv.first, key + ".headers", "must be a mapping of name: value");
      }
      std::string name = absl::AsciiStrToLower(kv.first.as<std::string>());
      std::string value = kv.second.as<std::string>();
      // HTTP's rules here, with the line; gRPC's stricter ones in Validate,
      // once the environment may have changed the transport.
      if (auto s = ValidateHeader(name, value, false); !s.ok()) {
        return r.Error(kv.first, key + ".headers", std::string(s.message()));
      }
      g.headers.emplace_back(std::move(name), std::move(value));
    }
  }
  KSPAN_RETURN_IF_ERROR(r.String(n["path"], key + ".path", &d->file.path));
  KSPAN_RETURN_IF_ERROR(r.Bytes(n["max_file_bytes"], key + ".max_file_bytes", &d->file.max_bytes));
  KSPAN_RETURN_IF_ERROR(r.Bool(n["stderr"], key + ".stderr", &d->console.to_stderr));
  KSPAN_RETURN_IF_ERROR(
      r.Count(n["max_queued_batches"], key + ".max_queued_batches", 1, &d->max_queued_batches));
  if (const auto& rt = n["retry"]; rt) {
    const std::string rk = key + ".retry";
    KSPAN_RETURN_IF_ERROR(
        r.CheckKeys(rt, rk, {"initial_backoff", "max_backoff", "multiplier", "max_elapsed"}));
    KSPAN_RETURN_IF_ERROR(r.Duration(rt["initial_backoff"], rk + ".initial_backoff",
                                     &d->retry.initial_backoff));
    KSPAN_RETURN_IF_ERROR(r.Duration(rt["max_backoff"], rk + ".max_backoff", &d->retry.max_backoff));
    KSPAN_RETURN_IF_ERROR(r.Duration(rt["max_elapsed"], rk + ".max_elapsed", &d->retry.max_elapsed));
    if (const auto& m = rt["multiplier"]; m) {
      double v = 0;
      if (!m.IsScalar() || !absl::SimpleAtod(m.as<std::string>(), &v) || !std::isfinite(v) ||
          v < 1.0) {
        return r.Error(m, rk + ".multiplier", "must be a finite number >= 1");
      }
      d->retry.multiplier = v;
    }
  }
  return absl::OkStatus();
}

// receiver.limits, named after the OpenTelemetry SDK limits they mirror.
absl::Status ReadSpanLimits(const ConfigReader& r, const YAML::Node& n, SpanLimits* l) {
  if (!n) return absl::OkStatus();
  const std::string k = "receiver.limits";
  KSPAN_RETURN_IF_ERROR(r.CheckKeys(
      n, k,
      {"attribute_count_limit", "attribute_value_length_limit", "span_attribute_count_limit",
       "span_event_count_limit", "span_link_count_limit", "event_attribute_count_limit",
       "link_attribute_count_limit", "max_value_depth"}));
  // Counts: 0 keeps none, as in the SDKs; a million is far beyond any
  // request's size anyway.
  for (auto [key, out] : {std::pair{"attribute_count_limit", &l->attribute_count},
                          {"span_attribute_count_limit", &l->span_attribute_count},
                          {"span_event_count_limit", &l->span_event_count},
                          {"span_link_count_limit", &l->span_link_count},
                          {"event_attribute_count_limit", &l->event_attribute_count},
                          {"link_attribute_count_limit", &l->link_attribute_count}}) {
    std::size_t v = *out;
    KSPAN_RETURN_IF_ERROR(r.Count(n[key], k + "." + key, 0, &v));
    if (v > 1'000'000) return r.Error(n[key], k + "." + key, "must be at most 1000000");
    *out = static_cast<std::uint32_t>(v);
  }
  KSPAN_RETURN_IF_ERROR(r.Bytes(n["attribute_value_length_limit"], k + ".attribute_value_length_limit",
                                &l->attribute_value_length));
  if (l->attribute_value_length < 1 || l->attribute_value_length > (1u << 30)) {
    return r.Error(n["attribute_value_length_limit"], k + ".attribute_value_length_limit",
                   "must be 1 byte to 1GiB");
  }
  std::size_t depth = l->value_depth;
  KSPAN_RETURN_IF_ERROR(r.Count(n["max_value_depth"], k + ".max_value_depth", 0, &depth));
  // Each level costs the decoder a stack frame or two.
  if (depth > 64) return r.Error(n["max_value_depth"], k + ".max_value_depth", "must be at most 64");
  l->value_depth = static_cast<std::uint32_t>(depth);
  return absl::OkStatus();
}

absl::Status ReadReceiver(const ConfigReader& r, const YAML::Node& n, AgentConfig::Receiver* rc) {
  if (!n) return absl::OkStatus();
  KSPAN_RETURN_IF_ERROR(r.CheckKeys(
      n, "receiver", {"grpc", "http", "max_request_bytes", "max_in_flight_bytes", "request_timeout", "limits"}));
  KSPAN_RETURN_IF_ERROR(ReadSpanLimits(r, n["limits"], &rc->span_limits));
  for (const char* transport : {"grpc", "http"}) {
    const auto& t = n[transport];
    if (!t) continue;
    const std::string key = absl::StrCat("receiver.", transport);
    const bool grpc = std::string_view(transport) == "grpc";
    KSPAN_RETURN_IF_ERROR(r.CheckKeys(t, key, {"enabled", "endpoint"}));
    KSPAN_RETURN_IF_ERROR(
        r.Bool(t["enabled"], key + ".enabled", grpc ? &rc->grpc_enabled : &rc->http_enabled));
    KSPAN_RETURN_IF_ERROR(r.String(t["endpoint"], key + ".endpoint",
                                   grpc ? &rc->grpc_endpoint : &rc->http_endpoint));
  }
  KSPAN_RETURN_IF_ERROR(
      r.Bytes(n["max_request_bytes"], "receiver.max_request_bytes", &rc->max_request_bytes));
  if (rc->max_request_bytes < 1024) {
    return r.Error(n["max_request_bytes"], "receiver.max_request_bytes", "must be at least 1KiB");
  }
  KSPAN_RETURN_IF_ERROR(
      r.Bytes(n["max_in_flight_bytes"], "receiver.max_in_flight_bytes", &rc->max_in_flight_bytes));
  // A gzip request at the size limit holds its wire bytes and what they inflate to.
  if (rc->max_in_flight_bytes / 2 < rc->max_request_bytes) {
    return r.Error(n["max_in_flight_bytes"] ? n["max_in_flight_bytes"] : n["max_request_bytes"],
                   "receiver.max_in_flight_bytes", "must be at least twice receiver.max_request_bytes");
  }
  KSPAN_RETURN_IF_ERROR(r.Duration(n["request_timeout"], "receiver.request_timeout", &rc->request_timeout));
  if (rc->request_timeout < std::chrono::milliseconds(100)) {
    return r.Error(n["request_timeout"], "receiver.request_timeout", "must be at least 100ms");
  }
  return absl::OkStatus();
}

absl::Status ReadCorrelation(const ConfigReader& r, const YAML::Node& n,
                             AgentConfig::Correlation* cc) {
  if (!n) return absl::OkStatus();
  KSPAN_RETURN_IF_ERROR(r.CheckKeys(n, "correlation",
                                    {"enabled", "join_window", "unmatched", "clock_tolerance",
                                     "max_pending_spans", "enroll_senders", "enrollment_linger",
                                     "enroll_from_environment"}));
  KSPAN_RETURN_IF_ERROR(r.Bool(n["enabled"], "correlation.enabled", &cc->enabled));
  KSPAN_RETURN_IF_ERROR(r.Duration(n["join_window"], "correlation.join_window", &cc->join_window));
  if (const auto& u = n["unmatched"]; u) {
    std::string v;
    KSPAN_RETURN_IF_ERROR(r.String(u, "correlation.unmatched", &v));
    if (v != "export" && v != "drop") {
      return r.Error(u, "correlation.unmatched", "must be export or drop");
    }
    cc->export_unmatched = v == "export";
  }
  KSPAN_RETURN_IF_ERROR(
      r.Duration(n["clock_tolerance"], "correlation.clock_tolerance", &cc->clock_tolerance));
  KSPAN_RETURN_IF_ERROR(r.Count(n["max_pending_spans"], "correlation.max_pending_spans", 1,
                                &cc->max_pending_spans));
  KSPAN_RETURN_IF_ERROR(
      r.Bool(n["enroll_senders"], "correlation.enroll_senders", &cc->enroll_senders));
  KSPAN_RETURN_IF_ERROR(r.Duration(n["enrollment_linger"], "correlation.enrollment_linger",
                                   &cc->enrollment_linger));
  if (const auto& m = n["enroll_from_environment"]; m) {
    std::string v;
    KSPAN_RETURN_IF_ERROR(r.String(m, "correlation.enroll_from_environment", &v));
    const auto mode = ParseEnvironmentEnrollMode(v);
    if (!mode) {
      return r.Error(m, "correlation.enroll_from_environment", "must be receiver, any or off");
    }
    cc->enroll_from_environment = *mode;
  }
  return absl::OkStatus();
}

absl::Status ReadResource(const ConfigReader& r, const YAML::Node& n,
                          AgentConfig::ResourceSettings* rs) {
  if (!n) return absl::OkStatus();
  KSPAN_RETURN_IF_ERROR(r.CheckKeys(n, "resource", {"attributes", "host_service_name", "host_root"}));
  if (const auto& a = n["attributes"]; a) {
    if (!a.IsMap()) return r.Error(a, "resource.attributes", "must be a mapping of key: value");
    for (const auto& kv : a) {
      const std::string key = kv.first.as<std::string>();
      if (key.empty()) return r.Error(kv.first, "resource.attributes", "an attribute key is empty");
      if (!kv.second.IsScalar()) {
        return r.Error(kv.second, absl::StrCat("resource.attributes.", key), "must be a string");
      }
      // Per process in kspan's resources; the file's names the host's own.
      if (key == "service.name") {
        rs->host_service_name = kv.second.as<std::string>();
        continue;
      }
      rs->attributes.emplace_back(key, kv.second.as<std::string>());
    }
  }
  KSPAN_RETURN_IF_ERROR(
      r.String(n["host_service_name"], "resource.host_service_name", &rs->host_service_name));
  if (rs->host_service_name.empty()) {
    return r.Error(n["host_service_name"], "resource.host_service_name", "is empty");
  }
  KSPAN_RETURN_IF_ERROR(r.String(n["host_root"], "resource.host_root", &rs->host_root));
  if (rs->host_root.empty() || rs->host_root.front() != '/') {
    return r.Error(n["host_root"], "resource.host_root", "must be an absolute path");
  }
  return absl::OkStatus();
}

absl::Status ReadFile(const ConfigReader& r, const YAML::Node& root, AgentConfig* c) {
  if (!root || root.IsNull()) return absl::OkStatus();  // empty file: all defaults
  KSPAN_RETURN_IF_ERROR(r.CheckKeys(
      root, "", {"log_level", "state_dir", "admin", "bpf", "capture", "receiver", "correlation",
                 "resource", "security", "batch", "destinations"}));
  KSPAN_RETURN_IF_ERROR(r.String(root["log_level"], "log_level", &c->log_level));
  KSPAN_RETURN_IF_ERROR(r.String(root["state_dir"], "state_dir", &c->state_dir));
  if (const auto& a = root["admin"]; a) {
    KSPAN_RETURN_IF_ERROR(r.CheckKeys(a, "admin", {"listen"}));
    KSPAN_RETURN_IF_ERROR(r.String(a["listen"], "admin.listen", &c->admin_listen));
  }
  if (const auto& b = root["bpf"]; b) {
    KSPAN_RETURN_IF_ERROR(r.CheckKeys(b, "bpf", {"pin_path", "btf"}));
    KSPAN_RETURN_IF_ERROR(r.String(b["pin_path"], "bpf.pin_path", &c->bpf.pin_path));
    KSPAN_RETURN_IF_ERROR(r.String(b["btf"], "bpf.btf", &c->bpf.btf));
  }
  if (const auto& cap = root["capture"]; cap) {
    KSPAN_RETURN_IF_ERROR(r.CheckKeys(cap, "capture",
                                      {"ring_buffer_bytes", "wakeup_bytes", "poll_interval", "tcp",
                                       "processes", "slow_threshold", "slow_watch",
                                       "slow_scan_interval", "syscalls", "dns", "http"}));
    KSPAN_RETURN_IF_ERROR(r.Bool(cap["dns"], "capture.dns", &c->capture.dns));
    if (const auto& h = cap["http"]; h) {
      auto& http = c->capture.http;
      KSPAN_RETURN_IF_ERROR(r.CheckKeys(h, "capture.http",
                                        {"enabled", "response_idle", "response_timeout",
                                         "max_connections", "keep_query",
                                         "root_spans_per_second", "variant"}));
      KSPAN_RETURN_IF_ERROR(r.Bool(h["enabled"], "capture.http.enabled", &http.enabled));
      KSPAN_RETURN_IF_ERROR(
          r.Duration(h["response_idle"], "capture.http.response_idle", &http.response_idle));
      KSPAN_RETURN_IF_ERROR(r.Duration(h["response_timeout"], "capture.http.response_timeout",
                                       &http.response_timeout));
      KSPAN_RETURN_IF_ERROR(r.Count(h["max_connections"], "capture.http.max_connections", 1,
                                    &http.max_connections));
      KSPAN_RETURN_IF_ERROR(r.Bool(h["keep_query"], "capture.http.keep_query", &http.keep_query));
      KSPAN_RETURN_IF_ERROR(r.Count(h["root_spans_per_second"],
                                    "capture.http.root_spans_per_second", 0,
                                    &http.root_spans_per_second));
      if (http.root_spans_per_second > 1'000'000'000) {
        return r.Error(h["root_spans_per_second"], "capture.http.root_spans_per_second",
                       "at most 1000000000 (0: every request)");
      }
      KSPAN_RETURN_IF_ERROR(r.String(h["variant"], "capture.http.variant", &http.variant));
      if (http.variant != "auto" && !ParseHttpVariant(http.variant)) {
        return r.Error(h["variant"], "capture.http.variant", "auto, tp_btf or tracepoint");
      }
    }
    KSPAN_RETURN_IF_ERROR(r.Bytes(cap["ring_buffer_bytes"], "capture.ring_buffer_bytes",
                                  &c->capture.ring_buffer_bytes));
    KSPAN_RETURN_IF_ERROR(
        r.Bytes(cap["wakeup_bytes"], "capture.wakeup_bytes", &c->capture.wakeup_bytes));
    KSPAN_RETURN_IF_ERROR(
        r.Duration(cap["poll_interval"], "capture.poll_interval", &c->capture.poll_interval));
    KSPAN_RETURN_IF_ERROR(
        r.Duration(cap["slow_threshold"], "capture.slow_threshold", &c->capture.slow_threshold));
    KSPAN_RETURN_IF_ERROR(
        r.String(cap["slow_watch"], "capture.slow_watch", &c->capture.slow_watch));
    if (!ParseSlowWatch(c->capture.slow_watch)) {
      return r.Error(cap["slow_watch"], "capture.slow_watch", "scan or sched_switch");
    }
    KSPAN_RETURN_IF_ERROR(r.Duration(cap["slow_scan_interval"], "capture.slow_scan_interval",
                                     &c->capture.slow_scan_interval));
    if (c->capture.slow_scan_interval > c->capture.slow_threshold) {
      return r.Error(cap["slow_scan_interval"], "capture.slow_scan_interval",
                     "at most capture.slow_threshold (a wait that long could fall between two "
                     "scans; 0: the threshold)");
    }
    if (const auto& t = cap["tcp"]; t) {
      KSPAN_RETURN_IF_ERROR(r.CheckKeys(t, "capture.tcp", {"enabled", "scope", "variant"}));
      KSPAN_RETURN_IF_ERROR(r.Bool(t["enabled"], "capture.tcp.enabled", &c->capture.tcp.enabled));
      std::string scope = "all";
      KSPAN_RETURN_IF_ERROR(r.String(t["scope"], "capture.tcp.scope", &scope));
      if (scope != "all" && scope != "selected") {
        return r.Error(t["scope"], "capture.tcp.scope", "must be all or selected");
      }
      c->capture.tcp.selected_only = scope == "selected";
      KSPAN_RETURN_IF_ERROR(r.String(t["variant"], "capture.tcp.variant", &c->capture.tcp.variant));
      static const std::set<std::string> kVariants = {"auto", "tp_btf", "raw_tp", "tracepoint"};
      if (!kVariants.contains(c->capture.tcp.variant)) {
        return r.Error(t["variant"], "capture.tcp.variant",
                       "must be auto, tp_btf, raw_tp or tracepoint");
      }
    }
    if (const auto& sc = cap["syscalls"]; sc) {
      auto& sys = c->capture.syscalls;
      KSPAN_RETURN_IF_ERROR(
          r.CheckKeys(sc, "capture.syscalls", {"enabled", "variant", "attach", "names", "min_duration"}));
      KSPAN_RETURN_IF_ERROR(r.Bool(sc["enabled"], "capture.syscalls.enabled", &sys.enabled));
      std::string attach = sys.attach_always ? "always" : "on_demand";
      KSPAN_RETURN_IF_ERROR(r.String(sc["attach"], "capture.syscalls.attach", &attach));
      if (attach != "on_demand" && attach != "always") {
        return r.Error(sc["attach"], "capture.syscalls.attach", "must be on_demand or always");
      }
      sys.attach_always = attach == "always";
      KSPAN_RETURN_IF_ERROR(r.String(sc["variant"], "capture.syscalls.variant", &sys.variant));
      if (sys.variant != "auto" && !ParseSyscallVariant(sys.variant)) {
        return r.Error(sc["variant"], "capture.syscalls.variant",
                       "must be auto, tp_btf, raw_tp or tracepoint");
      }
      KSPAN_RETURN_IF_ERROR(r.Strings(sc["names"], "capture.syscalls.names", &sys.names));
      if (auto s = SyscallCapture::ValidateSyscallNames(sys.names); !s.ok()) {
        return r.Error(sc["names"], "capture.syscalls.names", std::string(s.message()));
      }
      if (const auto& m = sc["min_duration"]; m) {
        const std::string mk = "capture.syscalls.min_duration";
        KSPAN_RETURN_IF_ERROR(r.CheckKeys(m, mk, {"file_io", "socket_io", "wait", "other"}));
        KSPAN_RETURN_IF_ERROR(r.Duration(m["file_io"], mk + ".file_io", &sys.file_io_min));
        KSPAN_RETURN_IF_ERROR(r.Duration(m["socket_io"], mk + ".socket_io", &sys.socket_io_min));
        KSPAN_RETURN_IF_ERROR(r.Duration(m["wait"], mk + ".wait", &sys.wait_min));
        KSPAN_RETURN_IF_ERROR(r.Duration(m["other"], mk + ".other", &sys.other_min));
      }
    }
    if (const auto& p = cap["processes"]; p) {
      auto& procs = c->capture.processes;
      KSPAN_RETURN_IF_ERROR(
          r.CheckKeys(p, "capture.processes", {"pids", "comms", "cgroups", "deny_pids"}));
      KSPAN_RETURN_IF_ERROR(r.Pids(p["pids"], "capture.processes.pids", &procs.pids));
      KSPAN_RETURN_IF_ERROR(r.Pids(p["deny_pids"], "capture.processes.deny_pids", &procs.deny_pids));
      KSPAN_RETURN_IF_ERROR(r.Strings(p["comms"], "capture.processes.comms", &procs.comms));
      KSPAN_RETURN_IF_ERROR(r.Strings(p["cgroups"], "capture.processes.cgroups", &procs.cgroups));
      for (const auto& comm : procs.comms) {
        if (comm.empty() || comm.size() > 15) {
          return r.Error(p["comms"], "capture.processes.comms",
                         absl::StrCat("'", comm, "': a comm prefix is 1 to 15 bytes"));
        }
      }
    }
  }
  KSPAN_RETURN_IF_ERROR(ReadReceiver(r, root["receiver"], &c->receiver));
  KSPAN_RETURN_IF_ERROR(ReadCorrelation(r, root["correlation"], &c->correlation));
  KSPAN_RETURN_IF_ERROR(ReadResource(r, root["resource"], &c->resource));
  if (const auto& sec = root["security"]; sec) {
    KSPAN_RETURN_IF_ERROR(r.CheckKeys(sec, "security", {"drop_capabilities"}));
    KSPAN_RETURN_IF_ERROR(r.Bool(sec["drop_capabilities"], "security.drop_capabilities",
                                 &c->security.drop_capabilities));
  }
  if (const auto& b = root["batch"]; b) {
    KSPAN_RETURN_IF_ERROR(r.CheckKeys(
        b, "batch", {"max_queue_size", "max_queue_bytes", "max_export_batch_size", "schedule_delay"}));
    auto& bo = c->exporter.batch;
    KSPAN_RETURN_IF_ERROR(r.Count(b["max_queue_size"], "batch.max_queue_size", 1, &bo.max_queue_size));
    KSPAN_RETURN_IF_ERROR(r.Bytes(b["max_queue_bytes"], "batch.max_queue_bytes", &bo.max_queue_bytes));
    if (bo.max_queue_bytes < (64u << 10)) {
      return r.Error(b["max_queue_bytes"], "batch.max_queue_bytes", "must be at least 64KiB");
    }
    KSPAN_RETURN_IF_ERROR(r.Count(b["max_export_batch_size"], "batch.max_export_batch_size", 1,
                                  &bo.max_export_batch_size));
    KSPAN_RETURN_IF_ERROR(
        r.Duration(b["schedule_delay"], "batch.schedule_delay", &bo.schedule_delay));
  }
  if (const auto& ds = root["destinations"]; ds) {
    if (!ds.IsSequence()) return r.Error(ds, "destinations", "must be a list");
    for (std::size_t i = 0; i < ds.size(); ++i) {
      DestinationConfig d;
      KSPAN_RETURN_IF_ERROR(ReadDestination(r, ds[i], absl::StrCat("destinations[", i, "]"), &d));
      c->exporter.destinations.push_back(std::move(d));
    }
  }
  return absl::OkStatus();
}

DestinationConfig* FindDestination(AgentConfig* c, const std::string& name) {
  for (auto& d : c->exporter.destinations) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

// The destination the OTEL_EXPORTER_OTLP_* variables and --otlp-endpoint
// configure: the one named "otlp", created when an endpoint is given.
DestinationConfig* OtlpDestination(AgentConfig* c, bool create) {
  if (auto* d = FindDestination(c, "otlp")) return d;
  if (!create) return nullptr;
  DestinationConfig d;
  d.name = "otlp";
  d.type = DestinationType::kOtlpGrpc;
  c->exporter.destinations.push_back(std::move(d));
  return &c->exporter.destinations.back();
}

absl::Status ApplyEnvironment(const GetEnv& getenv, AgentConfig* c) {
  auto set = [&](const char* var, std::string* out) {
    if (const char* v = getenv(var); v != nullptr && *v != '\0') *out = v;
  };
  set("KSPAN_LOG_LEVEL", &c->log_level);
  set("KSPAN_STATE_DIR", &c->state_dir);
  set("KSPAN_ADMIN_LISTEN", &c->admin_listen);
  set("KSPAN_BTF", &c->bpf.btf);
  set("KSPAN_PIN_PATH", &c->bpf.pin_path);
  set("KSPAN_HOST_ROOT", &c->resource.host_root);

  // The OpenTelemetry resource variables, as every SDK reads them: the
  // agent's own attributes, added to the resources of its kernel spans.
  if (const char* v = getenv("OTEL_RESOURCE_ATTRIBUTES"); v != nullptr && *v != '\0') {
    auto pairs = ParseOtlpHeaders(v);
    if (!pairs.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("OTEL_RESOURCE_ATTRIBUTES: ", pairs.status().message()));
    }
    auto& attrs = c->resource.attributes;
    for (auto& [k, val] : *pairs) {
      if (k == "service.name") {
        if (!val.empty()) c->resource.host_service_name = val;
        continue;
      }
      // A named reference: clang 14 cannot capture a structured binding.
      const std::string& key = k;
      std::erase_if(attrs, [&key](const auto& a) { return a.first == key; });
      attrs.emplace_back(std::move(k), std::move(val));
    }
  }
  set("OTEL_SERVICE_NAME", &c->resource.host_service_name);

  auto has = [&](const char* var) {
    const char* v = getenv(var);
    return v != nullptr && *v != '\0';
  };
  const bool endpoint_set =
      has("OTEL_EXPORTER_OTLP_ENDPOINT") || has("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  if (auto* d = OtlpDestination(c, endpoint_set)) {
    auto options = OtlpGrpcOptionsFromEnv(getenv, d->otlp_grpc);
    if (!options.ok()) return options.status();
    d->otlp_grpc = std::move(*options);
  }
  return absl::OkStatus();
}

absl::Status ApplyFlags(const FlagOverrides& f, AgentConfig* c) {
  if (f.log_level) c->log_level = *f.log_level;
  if (f.state_dir) c->state_dir = *f.state_dir;
  if (f.admin_listen) c->admin_listen = *f.admin_listen;
  if (f.btf) c->bpf.btf = *f.btf;
  auto& procs = c->capture.processes;
  procs.pids.insert(procs.pids.end(), f.pids.begin(), f.pids.end());
  procs.cgroups.insert(procs.cgroups.end(), f.cgroups.begin(), f.cgroups.end());
  for (const auto& comm : f.comms) {
    if (comm.empty() || comm.size() > 15) {
      return absl::InvalidArgumentError(
          absl::StrCat("--comm: '", comm, "': a comm prefix is 1 to 15 bytes"));
    }
    procs.comms.push_back(comm);
  }
  auto receiver = [](const std::optional<std::string>& flag, const char* name, bool* enabled,
                     std::string* endpoint) -> absl::Status {
    if (!flag) return absl::OkStatus();
    if (flag->empty()) return absl::InvalidArgumentError(absl::StrCat(name, ": is empty"));
    *enabled = *flag != "off";
    if (*enabled) *endpoint = *flag;
    return absl::OkStatus();
  };
  KSPAN_RETURN_IF_ERROR(receiver(f.receiver_grpc, "--receiver-grpc", &c->receiver.grpc_enabled,
                                 &c->receiver.grpc_endpoint));
  KSPAN_RETURN_IF_ERROR(receiver(f.receiver_http, "--receiver-http", &c->receiver.http_enabled,
                                 &c->receiver.http_endpoint));
  if (f.otlp_endpoint) {
    if (f.otlp_endpoint->empty()) return absl::InvalidArgumentError("--otlp-endpoint: is empty");
    OtlpDestination(c, true)->otlp_grpc.endpoint = *f.otlp_endpoint;
  }
  return absl::OkStatus();
}

void FillDefaults(const FlagOverrides& f, AgentConfig* c) {
  auto& ds = c->exporter.destinations;
  if (ds.empty()) {
    c->embedded_default = true;
    DestinationConfig file;
    file.name = "local";
    file.type = DestinationType::kFile;
    ds.push_back(std::move(file));
    if (!f.console.has_value() || *f.console) {
      DestinationConfig console;
      console.name = "console";
      console.type = DestinationType::kConsole;
      ds.push_back(std::move(console));
    }
  } else if (f.console.value_or(false) && FindDestination(c, "console") == nullptr) {
    DestinationConfig console;
    console.name = "console";
    console.type = DestinationType::kConsole;
    ds.push_back(std::move(console));
  }
  if (f.console.has_value() && !*f.console) {
    std::erase_if(ds, [](const DestinationConfig& d) { return d.type == DestinationType::kConsole; });
  }
  int unnamed = 0;
  for (auto& d : ds) {
    if (d.name.empty()) d.name = absl::StrCat("destination", unnamed++);
    if (d.type == DestinationType::kFile && d.file.path.empty()) {
      d.file.path = c->state_dir + "/spans/" + d.name + ".jsonl";
    }
    // OTEL_EXPORTER_OTLP_PROTOCOL=http/* turns the env destination into OTLP/HTTP.
    if (d.type == DestinationType::kOtlpGrpc && absl::StartsWith(d.otlp_grpc.protocol, "http/")) {
      d.type = DestinationType::kOtlpHttp;
    }
    if (d.queue.disk.enabled && d.queue.disk.path.empty()) {
      d.queue.disk.path = c->state_dir + "/queue/" + d.name + ".db";
    }
    // Network destinations keep what they give up on (dead letters) by default.
    if (IsNetworkDestination(d) && d.dead_letter.enabled && d.dead_letter.path.empty()) {
      d.dead_letter.path = c->state_dir + "/dlq/" + d.name + ".db";
    }
  }
}

absl::Status Validate(const std::string& origin, const AgentConfig& c) {
  static const std::set<std::string> kLevels = {"trace", "debug", "info", "warn", "error", "off"};
  if (!kLevels.contains(c.log_level)) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": log_level: '", c.log_level, "' is not one of trace, debug, info, warn, error, off"));
  }
  if (c.state_dir.empty()) return absl::InvalidArgumentError(origin + ": state_dir: is empty");
  if (c.capture.ring_buffer_bytes < 4096 || c.capture.ring_buffer_bytes > (1ull << 30)) {
    return absl::InvalidArgumentError(
        origin + ": capture.ring_buffer_bytes: must be between 4KiB and 1GiB");
  }
  if (c.capture.wakeup_bytes >= c.capture.ring_buffer_bytes) {
    return absl::InvalidArgumentError(
        origin + ": capture.wakeup_bytes: must be smaller than capture.ring_buffer_bytes");
  }
  if (c.capture.poll_interval.count() < 1 || c.capture.poll_interval.count() > 10000) {
    return absl::InvalidArgumentError(origin + ": capture.poll_interval: must be 1ms to 10s");
  }
  if (c.resource.host_root.empty() || c.resource.host_root.front() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": resource.host_root: '", c.resource.host_root, "' is not an absolute path"));
  }
  std::set<std::string> names;
  for (const auto& d : c.exporter.destinations) {
    if (!names.insert(d.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": destinations: name '", d.name, "' is used twice"));
    }
    if (IsNetworkDestination(d) && d.otlp_grpc.endpoint.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": destinations '", d.name, "': endpoint is required"));
    }
    if (d.type == DestinationType::kOtlpGrpc) {
      for (const auto& [name, value] : d.otlp_grpc.headers) {
        if (auto s = ValidateHeader(name, value, true); !s.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat(origin, ": destinations '", d.name, "': headers: ", s.message()));
        }
      }
    }
    if (d.type == DestinationType::kOtlpGrpc && d.otlp_grpc.compression == "zstd") {
      return absl::InvalidArgumentError(absl::StrCat(
          origin, ": destinations '", d.name, "': compression zstd is for HTTP destinations only"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AgentConfig> ParseConfig(const std::string& yaml, const std::string& origin,
                                        const FlagOverrides& flags, const GetEnv& getenv) {
  AgentConfig c;
  ConfigReader reader(origin);
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ":", e.mark.line + 1, ": not valid YAML: ", e.msg));
  }
  try {
    KSPAN_RETURN_IF_ERROR(ReadFile(reader, root, &c));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ":", e.mark.line + 1, ": ", e.msg));
  }
  KSPAN_RETURN_IF_ERROR(ApplyEnvironment(getenv, &c));
  KSPAN_RETURN_IF_ERROR(ApplyFlags(flags, &c));
  FillDefaults(flags, &c);
  KSPAN_RETURN_IF_ERROR(Validate(origin, c));
  return c;
}

absl::StatusOr<AgentConfig> LoadConfig(const std::string& path, const FlagOverrides& flags,
                                       const GetEnv& getenv) {
  if (path.empty()) return ParseConfig("", "(defaults)", flags, getenv);
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read the config file"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseConfig(ss.str(), path, flags, getenv);
}

}  // namespace kspan
