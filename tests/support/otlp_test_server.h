// A real OTLP/gRPC trace receiver for tests: an in-process gRPC server on
// 127.0.0.1 (ephemeral port; another local address when asked, e.g. a
// container bridge's gateway) that records what it accepts and answers as
// scripted (error statuses, partial success, delays).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.grpc.pb.h"

namespace kspan::testing {

namespace otlp_proto {
using ExportTraceServiceRequest = opentelemetry::proto::collector::trace::v1::ExportTraceServiceRequest;
using Span = opentelemetry::proto::trace::v1::Span;
using Resource = opentelemetry::proto::resource::v1::Resource;
using InstrumentationScope = opentelemetry::proto::common::v1::InstrumentationScope;
using AnyValue = opentelemetry::proto::common::v1::AnyValue;
}  // namespace otlp_proto

// One span as received, with the resource and scope it was sent under.
struct ReceivedSpan {
  otlp_proto::Span span;
  otlp_proto::Resource resource;
  otlp_proto::InstrumentationScope scope;

  std::string trace_id_hex() const;
  std::string span_id_hex() const;
  std::string parent_span_id_hex() const;  // "" for a root span
  // A span attribute, else a resource attribute; nullptr when absent.
  const otlp_proto::AnyValue* Attribute(std::string_view key) const;
  const otlp_proto::AnyValue* ResourceAttribute(std::string_view key) const;
};

// What the server answers to one Export call.
struct ScriptedResponse {
  grpc::Status status = grpc::Status::OK;
  // With an OK status: partial_success.rejected_spans / error_message.
  std::int64_t rejected_spans = 0;
  std::string error_message;
  // Before answering (the call's deadline/cancellation still applies).
  std::chrono::milliseconds delay{0};
};

class OtlpTestServer {
 public:
  // Listens on `bind_address`:`port` (0 = ephemeral; an IPv4 or IPv6
  // address). Aborts the test binary if the server cannot start (tests
  // cannot continue anyway).
  explicit OtlpTestServer(int port = 0, std::string bind_address = "127.0.0.1");
  // With TLS (grpc::SslServerCredentials; mTLS when it requires a client
  // certificate).
  OtlpTestServer(int port, std::shared_ptr<grpc::ServerCredentials> credentials,
                 std::string bind_address = "127.0.0.1");
  ~OtlpTestServer();  // Shutdown()

  OtlpTestServer(const OtlpTestServer&) = delete;
  OtlpTestServer& operator=(const OtlpTestServer&) = delete;

  int port() const { return port_; }
  const std::string& bind_address() const { return bind_address_; }
  // "http://127.0.0.1:PORT" (the bind address, bracketed when IPv6), as
  // OTEL_EXPORTER_OTLP_ENDPOINT would read.
  std::string endpoint() const;

  // Answers, in order, for the next Export calls; afterwards OK.
  void PushResponse(ScriptedResponse response);
  void PushStatus(grpc::Status status) { PushResponse({std::move(status)}); }
  // Delay applied to every call without a scripted response.
  void SetDefaultDelay(std::chrono::milliseconds delay);

  // For load runs: every span of a request answered OK is passed to `tap`
  // (called on the server's threads, one request at a time) and the request
  // is not kept, so requests() and spans() stay empty and memory does not
  // grow with millions of spans. WaitForSpanCount still counts them.
  void SetSpanTap(std::function<void(const otlp_proto::Span&)> tap);

  // Requests answered with OK (including partial success), in arrival order.
  std::vector<otlp_proto::ExportTraceServiceRequest> requests() const;
  // Spans of those requests, flattened (rejected ones included: the server
  // cannot know which spans a partial success refers to).
  std::vector<ReceivedSpan> spans() const;
  // Every Export call, whatever it was answered.
  int export_calls() const;
  // Client metadata of the latest call (lower-case keys).
  std::multimap<std::string, std::string> last_metadata() const;

  // Waits until `done(spans())` is true, at most `timeout`. Returns the
  // final verdict.
  bool WaitForSpans(const std::function<bool(const std::vector<ReceivedSpan>&)>& done,
                     std::chrono::milliseconds timeout) const;
  bool WaitForSpanCount(std::size_t n, std::chrono::milliseconds timeout) const;
  bool WaitForExportCalls(int n, std::chrono::milliseconds timeout) const;

  // Stops listening; calls in progress are cancelled. Idempotent.
  void Shutdown();

 private:
  class Service;

  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string bind_address_;
  int port_ = 0;
};

// `address` as the host part of a URL: IPv6 addresses in brackets.
std::string HostForUrl(const std::string& address);

}  // namespace kspan::testing
