#include "exporter/otlp_decode.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "exporter/otlp_json.h"
#include "google/protobuf/arena.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace kspan {
namespace {

bool NonZero(const std::string& id) {
  return std::any_of(id.begin(), id.end(), [](char c) { return c != 0; });
}

// Why a received span cannot be exported, or "" when it can. OTLP requires
// 16-byte trace ids and 8-byte span ids, neither all zero (the W3C invalid
// ids); an empty parent id marks a root span.
std::string InvalidReason(const opentelemetry::proto::trace::v1::Span& s) {
  if (s.trace_id().size() != 16 || !NonZero(s.trace_id())) return "invalid trace_id";
  if (s.span_id().size() != 8 || !NonZero(s.span_id())) return "invalid span_id";
  if (!s.parent_span_id().empty() && s.parent_span_id().size() != 8) return "invalid parent_span_id";
  for (const auto& l : s.links()) {
    if (l.trace_id().size() != 16 || l.span_id().size() != 8) return "invalid link id";
  }
  return {};
}

}  // namespace

DecodedSpans SpansFromRequest(const otlp::ExportTraceServiceRequest& request) {
  DecodedSpans out;
  out.spans = FromExportRequest(request, SpanSource::kApp);
  // FromExportRequest keeps request order, so a second walk lines up.
  std::vector<bool> keep;
  std::size_t i = 0;
  for (const auto& rs : request.resource_spans()) {
    for (const auto& ss : rs.scope_spans()) {
      for (const auto& s : ss.spans()) {
        std::string reason = InvalidReason(s);
        if (!reason.empty()) {
          if (keep.empty()) keep.assign(out.spans.size(), true);
          keep[i] = false;
          if (out.invalid_spans++ == 0) out.invalid_message = std::move(reason);
        }
        ++i;
      }
    }
  }
  if (out.invalid_spans > 0) {
    std::size_t k = 0;
    std::size_t j = 0;
    for (auto& s : out.spans) {
      if (keep[j++]) out.spans[k++] = std::move(s);
    }
    out.spans.resize(k);
    out.invalid_message = absl::StrCat(out.invalid_spans, " span(s) refused: ", out.invalid_message);
  }
  return out;
}

absl::StatusOr<DecodedSpans> DecodeExportRequest(std::string_view body, OtlpEncoding encoding) {
  google::protobuf::Arena arena;
  auto* request = google::protobuf::Arena::CreateMessage<otlp::ExportTraceServiceRequest>(&arena);
  if (encoding == OtlpEncoding::kJson) {
    if (auto s = FromOtlpJson(body, *request); !s.ok()) return s;
  } else if (body.size() > static_cast<std::size_t>(INT32_MAX) ||
             !request->ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    return absl::InvalidArgumentError("not a valid protobuf ExportTraceServiceRequest");
  }
  return SpansFromRequest(*request);
}

std::string EncodeExportResponse(std::int64_t rejected_spans, std::string_view message,
                                 OtlpEncoding encoding) {
  otlp::ExportTraceServiceResponse response;
  if (rejected_spans > 0 || !message.empty()) {
    response.mutable_partial_success()->set_rejected_spans(rejected_spans);
    response.mutable_partial_success()->set_error_message(SanitizeUtf8(message));
  }
  return encoding == OtlpEncoding::kJson ? ToOtlpJson(response) : response.SerializeAsString();
}

std::string EncodeRpcStatus(int code, std::string_view message, OtlpEncoding encoding) {
  google::rpc::Status status;
  status.set_code(code);
  status.set_message(SanitizeUtf8(message));
  return encoding == OtlpEncoding::kJson ? ToOtlpJson(status) : status.SerializeAsString();
}

std::string EncodeRetryInfoStatus(int code, std::string_view message, std::int64_t retry_delay_ms) {
  google::rpc::Status status;
  status.set_code(code);
  status.set_message(SanitizeUtf8(message));
  google::rpc::RetryInfo retry;
  retry.mutable_retry_delay()->set_seconds(retry_delay_ms / 1000);
  retry.mutable_retry_delay()->set_nanos(static_cast<std::int32_t>((retry_delay_ms % 1000) * 1'000'000));
  status.add_details()->PackFrom(retry);
  return status.SerializeAsString();
}

}  // namespace kspan
