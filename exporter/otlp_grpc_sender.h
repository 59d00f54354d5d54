// OTLP/gRPC transport: one channel per destination (connections reused),
// TraceService/Export per batch, the OTLP/gRPC status table mapped to
// retryable or permanent, partial success reported.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "exporter/export_config.h"
#include "exporter/otlp_options.h"
#include "exporter/sender.h"
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
  using Stub = opentelemetry::proto::collector::trace::v1::TraceService::StubInterface;

  // Fails on a bad endpoint, compression name or unreadable CA/certificate/
  // key/secret file. `env` resolves auth secrets given by variable name.
  static absl::StatusOr<std::unique_ptr<OtlpGrpcSender>> Create(const OtlpGrpcOptions& options,
                                                                const EnvLookup& env = ProcessEnv());

  // For tests: any stub (a fake, or one on an in-process channel).
  OtlpGrpcSender(const OtlpGrpcOptions& options, std::unique_ptr<Stub> stub);

  ExportResult Send(const SpanBatch& batch, Clock::time_point deadline) override;
  void Cancel() noexcept override;

 private:
  static constexpr std::size_t kArenaBlockBytes = 4u << 20;
  OtlpGrpcOptions options_;  // headers already lower-cased
  std::unique_ptr<char[]> arena_block_{new char[kArenaBlockBytes]};
  std::unique_ptr<Stub> stub_;

  std::mutex mu_;
  grpc::ClientContext* in_flight_ = nullptr;  // guarded by mu_
};

}  // namespace kspan
