#include "exporter/otlp_grpc_sender.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "exporter/auth.h"
#include "exporter/otlp_transform.h"
#include "exporter/terminal_text.h"
#include "exporter/retry.h"
#include "grpc/slice.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "spdlog/spdlog.h"

namespace kspan {
namespace {

// The full method name, as TraceService's generated stub calls it.
const std::string kExportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read certificate file ", path));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The server's RetryInfo, if it put one in grpc-status-details-bin (the OTLP
// throttling signal; it also makes RESOURCE_EXHAUSTED retryable).
std::optional<std::chrono::milliseconds> RetryDelay(const grpc::Status& status) {
  if (status.error_details().empty()) return std::nullopt;
  google::rpc::Status details;
  if (!details.ParseFromString(status.error_details())) return std::nullopt;
  for (const auto& any : details.details()) {
    google::rpc::RetryInfo info;
    if (any.Is<google::rpc::RetryInfo>() && any.UnpackTo(&info)) {
      return ServerDelayFromDuration(info.retry_delay().seconds(), info.retry_delay().nanos());
    }
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<GrpcTarget> ParseGrpcEndpoint(const std::string& endpoint, bool insecure) {
  // absl::string_view: Debian's abseil is built without std::string_view.
  absl::string_view e = endpoint;
  if (e.empty()) return absl::InvalidArgumentError("OTLP endpoint is empty");
  GrpcTarget t;
  auto strip_path = [](absl::string_view hostport) {
    // gRPC has no path; a trailing "/" (common in URLs) is dropped.
    return std::string(hostport.substr(0, hostport.find('/')));
  };
  if (absl::StartsWithIgnoreCase(e, "http://")) {
    t.target = strip_path(e.substr(7));
    t.tls = false;
  } else if (absl::StartsWithIgnoreCase(e, "https://")) {
    t.target = strip_path(e.substr(8));
    t.tls = true;
  } else if (const auto pos = e.find("://");
             pos != absl::string_view::npos && pos > 0 &&
             e.substr(0, pos).find_first_of(":/") == absl::string_view::npos &&
             !absl::StartsWith(e, "dns:") && !absl::StartsWith(e, "unix:") &&
             !absl::StartsWith(e, "ipv4:") && !absl::StartsWith(e, "ipv6:")) {
    return absl::InvalidArgumentError(
        absl::StrCat("OTLP endpoint '", endpoint, "': scheme must be http or https"));
  } else {
    t.target = endpoint;
    t.tls = !insecure;
  }
  if (t.target.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("OTLP endpoint '", endpoint, "' has no host"));
  }
  return t;
}

absl::StatusOr<std::unique_ptr<OtlpGrpcSender>> OtlpGrpcSender::Create(
    const OtlpGrpcOptions& options, const EnvLookup& env) {
  auto target = ParseGrpcEndpoint(options.endpoint, options.insecure);
  if (!target.ok()) return target.status();

  grpc::ChannelArguments args;
  args.SetUserAgentPrefix(absl::StrCat("kspan/", KSPAN_VERSION));
  // An ExportTraceServiceResponse is a few hundred bytes: a larger answer is
  // refused by gRPC before it is held (Send() counts it, see there).
  args.SetMaxReceiveMessageSize(static_cast<int>(kMaxResponseBytes));
  if (options.compression == "gzip") {
    args.SetCompressionAlgorithm(GRPC_COMPRESS_GZIP);
  } else if (options.compression != "none" && !options.compression.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("OTLP compression '", options.compression, "': expected gzip or none"));
  }

  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (target->tls) {
    grpc::SslCredentialsOptions ssl;
    if (!options.certificate_file.empty()) {
      auto pem = ReadFile(options.certificate_file);
      if (!pem.ok()) return pem.status();
      ssl.pem_root_certs = *std::move(pem);
    }
    // mTLS: the client certificate chain and its key, both or neither.
    if (options.tls.cert_file.empty() != options.tls.key_file.empty()) {
      return absl::InvalidArgumentError("TLS client certificate and key must be given together");
    }
    if (!options.tls.cert_file.empty()) {
      auto cert = ReadFile(options.tls.cert_file);
      if (!cert.ok()) return cert.status();
      auto key = ReadFile(options.tls.key_file);
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *std::move(cert);
      ssl.pem_private_key = *std::move(key);
    }
    if (!options.tls.server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls.server_name);
    }
    if (options.tls.insecure_skip_verify) {
      return absl::InvalidArgumentError(
          "tls.insecure_skip_verify is not supported for OTLP/gRPC; give the CA with tls.ca_file");
    }
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  auto headers = HeadersWithAuth(options.headers, options.auth, env, /*grpc=*/true);
  if (!headers.ok()) return headers.status();
  OtlpGrpcOptions with_auth = options;
  with_auth.headers = *std::move(headers);
  auto channel = grpc::CreateCustomChannel(target->target, credentials, args);
  spdlog::info("OTLP/gRPC exporter: {} ({}{})", target->target, target->tls ? "TLS" : "plaintext",
               options.compression == "gzip" ? ", gzip" : "");
  return std::make_unique<OtlpGrpcSender>(with_auth, std::move(channel));
}

OtlpGrpcSender::OtlpGrpcSender(const OtlpGrpcOptions& options,
                               std::shared_ptr<grpc::ChannelInterface> channel)
    : options_(options), stub_(std::move(channel)) {
  // gRPC rejects metadata keys with upper-case letters; HTTP header names
  // are case-insensitive, so lower-casing keeps their meaning.
  for (auto& [key, value] : options_.headers) absl::AsciiStrToLower(&key);
}

OtlpGrpcSender::~OtlpGrpcSender() {
  cq_.Shutdown();
  void* tag;
  bool ok;
  while (cq_.Next(&tag, &ok)) {
  }
}

ExportResult OtlpGrpcSender::Send(const SpanBatch& batch, Clock::time_point deadline) {
  // The request is encoded straight into one slice that gRPC takes over:
  // no protobuf message objects, no copy of the bytes.
  grpc::ByteBuffer request;
  {
    grpc_slice bytes = grpc_slice_malloc(encoder_.Plan(batch.spans));
    encoder_.Write(GRPC_SLICE_START_PTR(bytes));
    grpc::Slice slice(bytes, grpc::Slice::STEAL_REF);
    request = grpc::ByteBuffer(&slice, 1);
  }

  grpc::ClientContext context;
  const auto now = Clock::now();
  const auto timeout_at = options_.timeout.count() > 0 ? now + options_.timeout : deadline;
  const auto until = std::min(deadline, timeout_at);
  if (until != Clock::time_point::max()) {
    // ClientContext takes a system_clock deadline.
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::duration_cast<std::chrono::system_clock::duration>(until - now));
  }
  for (const auto& [key, value] : options_.headers) context.AddMetadata(key, value);

  {
    std::lock_guard lock(mu_);
    in_flight_ = &context;
  }
  grpc::ByteBuffer response_bytes;
  grpc::Status status;
  if (auto call = stub_.PrepareUnaryCall(&context, kExportMethod, request, &cq_); call != nullptr) {
    call->StartCall();
    call->Finish(&response_bytes, &status, &response_bytes);
    // This sender's only call: the next event is its completion.
    void* tag = nullptr;
    bool ok = false;
    if (!cq_.Next(&tag, &ok)) status = grpc::Status(grpc::StatusCode::CANCELLED, "sender shut down");
  } else {
    status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "cannot start the call");
  }
  {
    std::lock_guard lock(mu_);
    in_flight_ = nullptr;
  }

  if (status.ok()) {
    std::vector<grpc::Slice> slices;
    std::string bytes;
    otlp::ExportTraceServiceResponse response;
    if (response_bytes.Dump(&slices).ok()) {
      for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    if (!response.ParseFromString(bytes)) {
      // The collector said OK: it took the spans, only its answer is
      // unusable. Failing the batch (as the generated stub would, with
      // INTERNAL) would dead-letter, or resend, spans already accepted.
      ExportResult result = ExportResult::Success();
      result.response_issue = ExportResult::ResponseIssue::kUnreadable;
      return result;
    }
    ExportResult result = ExportResult::Success();
    if (response.has_partial_success()) {
      result.rejected_spans = response.partial_success().rejected_spans();
      result.message = EscapePeerText(response.partial_success().error_message());
    }
    return result;
  }
  if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
      absl::StartsWith(status.error_message(), "Received message larger than max")) {
    // gRPC's own refusal of an answer over SetMaxReceiveMessageSize: only a
    // server answering OK sends a message, so the spans were accepted. As
    // RESOURCE_EXHAUSTED without RetryInfo it would be a permanent error:
    // accepted spans dead-lettered.
    ExportResult result = ExportResult::Success();
    result.response_issue = ExportResult::ResponseIssue::kTooLarge;
    return result;
  }
  const auto retry_after = RetryDelay(status);
  std::string code(GrpcCodeName(status.error_code()));
  if (IsRetryableGrpcCode(status.error_code(), retry_after.has_value())) {
    ExportResult result = ExportResult::Retryable(std::move(code), EscapePeerText(status.error_message()));
    result.retry_after = retry_after;
    return result;
  }
  return ExportResult::Permanent(std::move(code), EscapePeerText(status.error_message()));
}

void OtlpGrpcSender::Cancel() noexcept {
  std::lock_guard lock(mu_);
  if (in_flight_ != nullptr) in_flight_->TryCancel();
}

}  // namespace kspan
