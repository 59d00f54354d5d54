// OTLP/HTTP transport: POST <endpoint>/v1/traces with a binary protobuf
// (application/x-protobuf) or OTLP/JSON (application/json) body, the
// OTLP/HTTP retry table, partial success read from the response body.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "exporter/export_config.h"
#include "exporter/http_client.h"
#include "exporter/otlp_options.h"
#include "exporter/sender.h"

namespace kspan {

// The URL to POST to: `endpoint` as is when it is the full URL, else with
// "/v1/traces" appended (the OTEL_EXPORTER_OTLP_ENDPOINT rule).
std::string OtlpHttpTracesUrl(const OtlpGrpcOptions& options);

class OtlpHttpSender final : public SpanSender {
 public:
  // protocol: "http/protobuf" or "http/json".
  static absl::StatusOr<std::unique_ptr<OtlpHttpSender>> Create(const OtlpGrpcOptions& options,
                                                                const EnvLookup& env = ProcessEnv());

  ExportResult Send(const SpanBatch& batch, Clock::time_point deadline) override;
  void Cancel() noexcept override { client_->Cancel(); }

 private:
  OtlpHttpSender(bool json, std::unique_ptr<HttpClient> client)
      : json_(json), client_(std::move(client)) {}
  bool json_;
  std::unique_ptr<HttpClient> client_;
};

}  // namespace kspan
