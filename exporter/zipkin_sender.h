// Zipkin v2 transport: POST /api/v2/spans with a JSON list of Zipkin v2
// spans (hex ids, microsecond timestamp and duration, kind, localEndpoint
// serviceName, remoteEndpoint from the peer attributes, string tags), mapped
// as the OpenTelemetry specification's Zipkin exporter section describes.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "exporter/export_config.h"
#include "exporter/http_client.h"
#include "exporter/otlp_options.h"
#include "exporter/sender.h"

namespace kspan {

// The JSON body for `spans` (a list of Zipkin v2 spans).
std::string ToZipkinJson(std::span<const Span> spans);

class ZipkinSender final : public SpanSender {
 public:
  // `endpoint` without a path gets "/api/v2/spans".
  static absl::StatusOr<std::unique_ptr<ZipkinSender>> Create(const OtlpGrpcOptions& options,
                                                              const EnvLookup& env = ProcessEnv());
  ExportResult Send(const SpanBatch& batch, Clock::time_point deadline) override;
  void Cancel() noexcept override { client_->Cancel(); }

 private:
  explicit ZipkinSender(std::unique_ptr<HttpClient> client) : client_(std::move(client)) {}
  std::unique_ptr<HttpClient> client_;
};

}  // namespace kspan
