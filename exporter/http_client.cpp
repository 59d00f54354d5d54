#include "exporter/http_client.h"

#include <algorithm>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "exporter/auth.h"
#include "exporter/compression.h"
#include "exporter/retry.h"
#include "exporter/status_macros.h"
#include "exporter/terminal_text.h"

namespace kspan {
namespace {

// Where the body of one transfer goes, and its bound.
struct BodySink {
  HttpClient::Response* response;
  std::size_t max;
  bool too_large = false;
};

size_t WriteBody(char* data, size_t size, size_t n, void* user) {
  auto* sink = static_cast<BodySink*>(user);
  const size_t len = size * n;
  if (len > sink->max - sink->response->body.size()) {
    // Returning less than given aborts the transfer (CURLE_WRITE_ERROR):
    // a body of any size costs at most `max` bytes and no more time.
    sink->too_large = true;
    return 0;
  }
  sink->response->body.append(data, len);
  return len;
}

// Inflates a compressed answer within the bound; on failure the body is
// dropped and the problem recorded.
void DecodeBody(HttpClient::Response& r, std::size_t max) {
  const std::string encoding =
      absl::AsciiStrToLower(absl::StripAsciiWhitespace(r.content_encoding));
  if (encoding.empty() || encoding == "identity" || r.body.empty()) return;
  absl::StatusOr<std::string> decoded;
  if (encoding == "gzip" || encoding == "x-gzip" || encoding == "deflate") {
    decoded = GzipDecompress(r.body, max);  // zlib detects gzip and zlib headers
  } else if (encoding == "zstd") {
    decoded = ZstdDecompress(r.body, max);
  } else {
    decoded = absl::InvalidArgumentError("unknown content encoding");
  }
  r.body.clear();
  r.body.shrink_to_fit();
  if (decoded.ok()) {
    r.body = *std::move(decoded);
  } else {
    r.body_problem = decoded.status().code() == absl::StatusCode::kResourceExhausted
                         ? HttpClient::Response::BodyProblem::kTooLarge
                         : HttpClient::Response::BodyProblem::kUndecodable;
  }
}

size_t ReadHeader(char* data, size_t size, size_t n, void* user) {
  auto* r = static_cast<HttpClient::Response*>(user);
  const absl::string_view line(data, size * n);
  const auto colon = line.find(':');
  if (colon != absl::string_view::npos) {
    const absl::string_view name = absl::StripAsciiWhitespace(line.substr(0, colon));
    const std::string value(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    if (absl::EqualsIgnoreCase(name, "retry-after")) r->retry_after = value;
    if (absl::EqualsIgnoreCase(name, "content-type")) r->content_type = value;
    if (absl::EqualsIgnoreCase(name, "content-encoding")) r->content_encoding = value;
  }
  return size * n;
}

int Progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<std::atomic<bool>*>(user)->load() ? 1 : 0;  // non-zero aborts
}

bool PermanentTransportError(CURLcode c) {
  switch (c) {
    // Configuration errors: retrying cannot help.
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CIPHER:
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return true;
    default:
      // Refused, reset, timed out, dropped mid-request, DNS: connection
      // failures, retryable per the specification.
      return false;
  }
}

}  // namespace

void EnsureCurlInitialized() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string HttpClient::EndpointUrl(const NetworkOptions& options) {
  if (options.endpoint.find("://") != std::string::npos) return options.endpoint;
  return absl::StrCat(options.insecure ? "http://" : "https://", options.endpoint);
}

absl::StatusOr<std::unique_ptr<HttpClient>> HttpClient::ForDestination(
    const NetworkOptions& options, std::string url, const EnvLookup& env) {
  auto headers = HeadersWithAuth(options.headers, options.auth, env);
  if (!headers.ok()) return headers.status();
  HttpClientOptions h;
  h.url = std::move(url);
  h.headers = *std::move(headers);
  h.timeout = options.timeout;
  h.compression = options.compression.empty() ? "none" : options.compression;
  h.ca_file = options.certificate_file;
  h.tls = options.tls;
  return Create(h);
}

absl::StatusOr<std::unique_ptr<HttpClient>> HttpClient::Create(const HttpClientOptions& options) {
  if (!absl::StartsWithIgnoreCase(options.url, "http://") &&
      !absl::StartsWithIgnoreCase(options.url, "https://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint '", options.url, "': the scheme must be http or https"));
  }
  if (options.compression != "none" && options.compression != "gzip" &&
      options.compression != "zstd" && !options.compression.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("compression '", options.compression, "': expected none, gzip or zstd"));
  }
  EnsureCurlInitialized();
  std::unique_ptr<HttpClient> c(new HttpClient(options));
  KSPAN_RETURN_IF_ERROR(c->Init());
  return c;
}

absl::Status HttpClient::Init() {
  curl_ = curl_easy_init();
  if (curl_ == nullptr) return absl::InternalError("curl_easy_init failed");
  CURLU* u = curl_url();
  if (curl_url_set(u, CURLUPART_URL, options_.url.c_str(), 0) != CURLUE_OK) {
    curl_url_cleanup(u);
    return absl::InvalidArgumentError(absl::StrCat("endpoint '", options_.url, "' is not a URL"));
  }
  char* host = nullptr;
  char* port = nullptr;
  curl_url_get(u, CURLUPART_HOST, &host, 0);
  curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
  std::string url = options_.url;
  if (!options_.tls.server_name.empty() && host != nullptr && port != nullptr) {
    // Verify (and send SNI for) server_name while connecting to the
    // configured address: the URL names the server, CONNECT_TO says where.
    curl_url_set(u, CURLUPART_HOST, options_.tls.server_name.c_str(), 0);
    char* rewritten = nullptr;
    curl_url_get(u, CURLUPART_URL, &rewritten, 0);
    url = rewritten;
    curl_free(rewritten);
    connect_to_ = curl_slist_append(
        nullptr, absl::StrCat(options_.tls.server_name, ":", port, ":", host, ":", port).c_str());
    curl_easy_setopt(curl_, CURLOPT_CONNECT_TO, connect_to_);
  }
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);

  curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl_, CURLOPT_POST, 1L);
  curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl_, CURLOPT_USERAGENT, "kspan/" KSPAN_VERSION);
  curl_easy_setopt(curl_, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, WriteBody);
  curl_easy_setopt(curl_, CURLOPT_HEADERFUNCTION, ReadHeader);
  curl_easy_setopt(curl_, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(curl_, CURLOPT_XFERINFOFUNCTION, Progress);
  curl_easy_setopt(curl_, CURLOPT_XFERINFODATA, &cancel_);
  // Redirects are not followed: a collector does not redirect, and
  // following one could carry credentials elsewhere.
  curl_easy_setopt(curl_, CURLOPT_FOLLOWLOCATION, 0L);
  if (!options_.ca_file.empty()) curl_easy_setopt(curl_, CURLOPT_CAINFO, options_.ca_file.c_str());
  if (!options_.tls.cert_file.empty()) {
    curl_easy_setopt(curl_, CURLOPT_SSLCERT, options_.tls.cert_file.c_str());
  }
  if (!options_.tls.key_file.empty()) {
    curl_easy_setopt(curl_, CURLOPT_SSLKEY, options_.tls.key_file.c_str());
  }
  if (options_.tls.insecure_skip_verify) {
    curl_easy_setopt(curl_, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(curl_, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  for (const auto& [k, v] : options_.headers) {
    header_list_ = curl_slist_append(header_list_, absl::StrCat(k, ": ", v).c_str());
  }
  // No "Expect: 100-continue" round trip for large bodies.
  header_list_ = curl_slist_append(header_list_, "Expect:");
  if (options_.compression == "gzip") {
    header_list_ = curl_slist_append(header_list_, "Content-Encoding: gzip");
  } else if (options_.compression == "zstd") {
    header_list_ = curl_slist_append(header_list_, "Content-Encoding: zstd");
  }
  return absl::OkStatus();
}

HttpClient::~HttpClient() {
  if (curl_ != nullptr) curl_easy_cleanup(curl_);
  curl_slist_free_all(header_list_);
  curl_slist_free_all(connect_to_);
}

HttpClient::Response HttpClient::Post(std::string_view body, std::string_view content_type,
                                      Clock::time_point deadline) {
  Response r;
  std::string compressed;
  if (options_.compression == "gzip" || options_.compression == "zstd") {
    auto c = options_.compression == "gzip" ? GzipCompress(body) : ZstdCompress(body);
    if (!c.ok()) {
      r.error = CURLE_ABORTED_BY_CALLBACK;
      r.error_message = std::string(c.status().message());
      return r;
    }
    compressed = *std::move(c);
    body = compressed;
  }
  const auto now = Clock::now();
  auto until = deadline;
  if (options_.timeout.count() > 0) until = std::min(until, now + options_.timeout);
  long timeout_ms = 0;  // 0 = none
  if (until != Clock::time_point::max()) {
    timeout_ms = std::max<long>(
        1, static_cast<long>(
               std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count()));
  }
  curl_slist* headers = curl_slist_append(nullptr, ("Content-Type: " + std::string(content_type)).c_str());
  for (auto* h = header_list_; h != nullptr; h = h->next) headers = curl_slist_append(headers, h->data);

  cancel_.store(false);
  curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(curl_, CURLOPT_TIMEOUT_MS, timeout_ms);
  BodySink sink{&r, options_.max_response_bytes};
  curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(curl_, CURLOPT_HEADERDATA, &r);
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl_, CURLOPT_ERRORBUFFER, errbuf);
  r.error = curl_easy_perform(curl_);
  if (r.error == CURLE_WRITE_ERROR && sink.too_large) {
    // The status line and headers were read: the answer stands, its body
    // is what was refused.
    r.error = CURLE_OK;
    r.body.clear();
    r.body.shrink_to_fit();
    r.body_problem = Response::BodyProblem::kTooLarge;
  }
  if (r.error == CURLE_OK) {
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &r.status);
    DecodeBody(r, options_.max_response_bytes);
  } else {
    r.error_message = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(r.error);
  }
  curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, nullptr);
  curl_easy_setopt(curl_, CURLOPT_ERRORBUFFER, nullptr);
  curl_slist_free_all(headers);
  return r;
}

ExportResult ClassifyHttpResponse(const HttpClient::Response& r, std::string message) {
  if (r.error != CURLE_OK) {
    std::string code = absl::StrCat("CURL_", static_cast<int>(r.error));
    if (r.error == CURLE_OPERATION_TIMEDOUT) code = "TIMEOUT";
    if (r.error == CURLE_COULDNT_CONNECT) code = "CONNECTION_REFUSED";
    if (r.error == CURLE_ABORTED_BY_CALLBACK) code = "CANCELLED";
    // libcurl's message can quote what the server sent (a status line).
    std::string detail = EscapePeerText(r.error_message);
    if (PermanentTransportError(r.error)) return ExportResult::Permanent(code, std::move(detail));
    return ExportResult::Retryable(code, std::move(detail));
  }
  std::string code = absl::StrCat("HTTP ", r.status);
  if (r.status >= 200 && r.status < 300) {
    ExportResult ok = ExportResult::Success();
    if (r.body_problem == HttpClient::Response::BodyProblem::kTooLarge) {
      ok.response_issue = ExportResult::ResponseIssue::kTooLarge;
    } else if (r.body_problem == HttpClient::Response::BodyProblem::kUndecodable) {
      ok.response_issue = ExportResult::ResponseIssue::kUnreadable;
    }
    return ok;
  }
  if (message.empty() && r.body_problem == HttpClient::Response::BodyProblem::kTooLarge) {
    message = "(the answer's body was larger than the bound and was not read)";
  }
  // The collector's words (or, without a decodable message, its body),
  // escaped and bounded before they reach a log line or a dead letter.
  message = EscapePeerText(message.empty() ? std::string_view(r.body).substr(0, kMaxPeerTextBytes)
                                           : std::string_view(message));
  if (IsRetryableHttpStatus(r.status)) {
    ExportResult result = ExportResult::Retryable(std::move(code), std::move(message));
    if (!r.retry_after.empty()) {
      result.retry_after = ParseRetryAfter(r.retry_after, std::chrono::system_clock::now());
    }
    return result;
  }
  return ExportResult::Permanent(std::move(code), std::move(message));
}

}  // namespace kspan
