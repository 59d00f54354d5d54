// OTLP/gRPC transport: one channel per destination (connections reused),
// TraceService/Export per batch, the OTLP/gRPC status table mapped to
// retryable or permanent, partial success reported.
//
// The request is encoded straight from the span model into one gRPC slice
// (exporter/otlp_wire.h) and sent through grpc::GenericStub as bytes: no
// protobuf message objects on the hot path.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "exporter/export_config.h"
#include "exporter/otlp_options.h"
#include "exporter/otlp_wire.h"
#include "exporter/sender.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.grpc.pb.h"

namespace kspan {

struct GrpcTarget {
  std::string target;  // what grpc::CreateChannel takes, e.g. "collector:4317"
  bool tls = false;
};

// http://host:port => plaintext; https://host:port => TLS; anything else
// (host:port, dns:///..., unix:...) is a gRPC target whose security follows
// `insecure`. Errors on an empty endpoint or another URL scheme.
absl::StatusOr<GrpcTarget> ParseGrpcEndpoint(const std::string& endpoint, bool insecure);

class OtlpGrpcSender final : public SpanSender {
 public:
  // Fails on a bad endpoint, compression name or unreadable CA/certificate/
  // key/secret file. `env` resolves auth secrets given by variable name.
  static absl::StatusOr<std::unique_ptr<OtlpGrpcSender>> Create(const OtlpGrpcOptions& options,
                                                                const EnvLookup& env = ProcessEnv());

  // For tests: any channel (for one, an in-process server's).
  OtlpGrpcSender(const OtlpGrpcOptions& options, std::shared_ptr<grpc::ChannelInterface> channel);
  ~OtlpGrpcSender() override;

  ExportResult Send(const SpanBatch& batch, Clock::time_point deadline) override;
  void Cancel() noexcept override;

 private:
  OtlpGrpcOptions options_;  // headers already lower-cased
  grpc::GenericStub stub_;
  grpc::CompletionQueue cq_;  // this sender's calls (one at a time)
  ExportRequestEncoder encoder_;

  std::mutex mu_;
  grpc::ClientContext* in_flight_ = nullptr;  // guarded by mu_
};

}  // namespace kspan
