// The HTTP transport of the OTLP/HTTP and Zipkin senders: libcurl, one easy
// handle per sender so its connection (and TLS session) is reused from one
// request to the next. TLS and mTLS, server name override, compression,
// timeouts, cancellation; the OTLP/HTTP retry table applied to the answer.
#pragma once

#include <curl/curl.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "exporter/export_config.h"
#include "exporter/otlp_options.h"
#include "exporter/sender.h"

namespace kspan {

struct HttpClientOptions {
  std::string url;  // the full URL requests are POSTed to
  std::vector<std::pair<std::string, std::string>> headers;  // auth included
  std::chrono::milliseconds timeout{10000};
  std::string compression = "none";  // none | gzip | zstd
  std::string ca_file;
  TlsOptions tls;
  // A larger answer is not read further (the transfer is aborted, or the
  // inflating stops): Response::body_problem says so.
  std::size_t max_response_bytes = kMaxResponseBytes;
};

class HttpClient {
 public:
  using Clock = std::chrono::steady_clock;

  struct Response {
    long status = 0;            // HTTP status; 0 when no answer came
    CURLcode error = CURLE_OK;  // transport error
    std::string error_message;
    // As the server meant it: a gzip, deflate or zstd body is inflated
    // here (content_encoding keeps saying what it was sent as).
    std::string body;
    std::string content_type;
    std::string content_encoding;
    std::string retry_after;
    // Why `body` is empty although the server sent one: over
    // max_response_bytes (as sent or inflated), or in an encoding that
    // would not decode. The status still counts.
    enum class BodyProblem { kNone, kTooLarge, kUndecodable };
    BodyProblem body_problem = BodyProblem::kNone;
  };

  // Fails on a URL that is not http(s), unknown compression, unreadable files.
  static absl::StatusOr<std::unique_ptr<HttpClient>> Create(const HttpClientOptions& options);
  // The client of an HTTP destination (OTLP/HTTP, Zipkin): POSTs to `url`
  // with the destination's headers and auth (credentials from `env`),
  // timeout, compression and TLS.
  static absl::StatusOr<std::unique_ptr<HttpClient>> ForDestination(const NetworkOptions& options,
                                                                    std::string url,
                                                                    const EnvLookup& env);
  // A destination's endpoint as a URL: a scheme-less one is https://, or
  // http:// with `insecure`.
  static std::string EndpointUrl(const NetworkOptions& options);
  ~HttpClient();

  Response Post(std::string_view body, std::string_view content_type, Clock::time_point deadline);
  // Aborts a Post() in flight on another thread.
  void Cancel() noexcept { cancel_.store(true); }

  const std::string& url() const { return options_.url; }

 private:
  explicit HttpClient(HttpClientOptions options) : options_(std::move(options)) {}
  absl::Status Init();

  HttpClientOptions options_;
  CURL* curl_ = nullptr;
  curl_slist* header_list_ = nullptr;  // fixed headers, built once
  curl_slist* connect_to_ = nullptr;
  std::atomic<bool> cancel_{false};
};

// The OTLP/HTTP outcome of a response: 2xx success (the caller reads partial
// success from the body), 429/502/503/504 and connection failures retryable
// (with Retry-After), everything else permanent. `message` is the server's
// error message when the caller could decode one (raw: it is escaped here,
// as the body is when there is no message).
ExportResult ClassifyHttpResponse(const HttpClient::Response& response, std::string message);

// Global libcurl initialisation, once per process (thread-safe).
void EnsureCurlInitialized();

}  // namespace kspan
