#include "exporter/otlp_http_sender.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "exporter/auth.h"
#include "exporter/otlp_json.h"
#include "exporter/otlp_json_writer.h"
#include "exporter/otlp_transform.h"
#include "exporter/terminal_text.h"
#include "google/protobuf/arena.h"
#include "google/rpc/status.pb.h"
#include "spdlog/spdlog.h"

namespace kspan {
namespace {

bool HasPath(const std::string& url) {
  const auto scheme = url.find("://");
  const auto slash = url.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  return slash != std::string::npos && slash + 1 < url.size();
}

}  // namespace

std::string OtlpHttpTracesUrl(const OtlpGrpcOptions& o) {
  if (o.endpoint_is_full_url || HasPath(o.endpoint)) return o.endpoint;
  std::string base = o.endpoint;
  if (!base.empty() && base.back() == '/') base.pop_back();
  return base + "/v1/traces";
}

absl::StatusOr<std::unique_ptr<OtlpHttpSender>> OtlpHttpSender::Create(
    const OtlpGrpcOptions& options, const EnvLookup& env) {
  const bool json = options.protocol == "http/json";
  if (!json && options.protocol != "http/protobuf") {
    return absl::InvalidArgumentError(absl::StrCat(
        "OTLP/HTTP protocol '", options.protocol, "': expected http/protobuf or http/json"));
  }
  // A scheme-less endpoint: plaintext only when `insecure` says so.
  OtlpGrpcOptions with_scheme = options;
  with_scheme.endpoint = HttpClient::EndpointUrl(options);
  auto client = HttpClient::ForDestination(options, OtlpHttpTracesUrl(with_scheme), env);
  if (!client.ok()) return client.status();
  const std::string compression = options.compression.empty() ? "none" : options.compression;
  spdlog::info("OTLP/HTTP exporter: {} ({}{})", (*client)->url(), json ? "json" : "protobuf",
               compression == "none" ? "" : ", " + compression);
  return std::unique_ptr<OtlpHttpSender>(new OtlpHttpSender(json, *std::move(client)));
}

ExportResult OtlpHttpSender::Send(const SpanBatch& batch, Clock::time_point deadline) {
  std::string body;
  if (json_) {
    OtlpJsonEncoder().Encode(batch.spans, body);
  } else {
    google::protobuf::Arena arena;
    auto* request = google::protobuf::Arena::CreateMessage<otlp::ExportTraceServiceRequest>(&arena);
    AppendToExportRequest(batch.spans, *request);
    body = request->SerializeAsString();
  }
  auto r = client_->Post(body, json_ ? "application/json" : "application/x-protobuf", deadline);

  // The client inflated a compressed answer (within its bound).
  const std::string& response_body = r.body;
  const bool json_body = (absl::AsciiStrToLower(r.content_type).find("json") != std::string::npos) ||
                         (r.content_type.empty() && json_);

  if (r.error == CURLE_OK && r.status >= 200 && r.status < 300) {
    ExportResult result = ClassifyHttpResponse(r, "");
    if (result.response_issue != ExportResult::ResponseIssue::kNone) return result;
    otlp::ExportTraceServiceResponse response;
    // An empty body is an empty message (also for JSON: nothing to say).
    const bool parsed = response_body.empty() ||
                        (json_body ? FromOtlpJson(response_body, response).ok()
                                   : response.ParseFromString(response_body));
    if (!parsed) {
      // The collector took the spans (2xx); only its answer is unusable.
      result.response_issue = ExportResult::ResponseIssue::kUnreadable;
      return result;
    }
    if (response.has_partial_success()) {
      result.rejected_spans = response.partial_success().rejected_spans();
      result.message = EscapePeerText(response.partial_success().error_message());
    }
    return result;
  }
  // A failed request may carry a google.rpc.Status with a message.
  std::string message;
  if (r.error == CURLE_OK && !response_body.empty()) {
    google::rpc::Status status;
    const bool parsed =
        json_body ? FromOtlpJson(response_body, status).ok() : status.ParseFromString(response_body);
    if (parsed) message = status.message();
  }
  return ClassifyHttpResponse(r, std::move(message));
}

}  // namespace kspan
