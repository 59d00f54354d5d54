// The OTLP receiver: instrumented applications on the host send their spans
// to kspan over OTLP/gRPC (TraceService/Export, default 127.0.0.1:4317) and
// OTLP/HTTP (POST /v1/traces, default 127.0.0.1:4318, protobuf or JSON,
// optionally gzip). Received spans keep every field (exporter/otlp_decode.h)
// and go, as app spans, to a sink the agent supplies: normally the export
// pipeline, so they leave kspan unchanged through the same batcher as
// kernel spans.
//
// Answers follow the OTLP specification (opentelemetry.io/docs/specs/otlp):
//   success                 gRPC OK / HTTP 200, empty ExportTraceServiceResponse
//   some spans refused      OK / 200 with partial_success (rejected_spans, error_message)
//   malformed payload       INVALID_ARGUMENT / 400 (google.rpc.Status body)
//   over max_request_bytes  RESOURCE_EXHAUSTED / 413 (compressed or decompressed size)
//   over max_in_flight_bytes UNAVAILABLE with google.rpc.RetryInfo / 503 with Retry-After
//   other content type      415;  other method: 405;  other path: 404
//   sink full (retryable)   UNAVAILABLE with google.rpc.RetryInfo / 503 with Retry-After
// HTTP bodies use the request's content type and content encoding.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "exporter/export_pipeline.h"
#include "exporter/self_metrics.h"
#include "exporter/span.h"

namespace kspan {

enum class ReceiverTransport { kGrpc, kHttp };
std::string_view TransportName(ReceiverTransport transport);  // "grpc" | "http"

// The client that sent a request.
struct ReceiverPeer {
  std::string address;  // "127.0.0.1", "::1"; empty when not an IP peer
  std::uint16_t port = 0;
  int family = 0;  // AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC when unknown
  ReceiverTransport transport = ReceiverTransport::kGrpc;
};

// What the sink did with one request's spans.
struct SinkResult {
  // Spans the sink refused for good (reported in partial_success).
  std::int64_t rejected_spans = 0;
  std::string message;  // why, for partial_success.error_message / the error answer
  // Nothing was taken; the client should send the whole request again later
  // (503 + Retry-After / UNAVAILABLE + RetryInfo). rejected_spans is ignored.
  bool retry_later = false;
};

// Called on a receiver thread, possibly from several at once; must not
// block on the network (it may wait for a disk queue's commit, bounded).
// Gets only spans with valid ids, all SpanSource::kApp.
using AppSpanSink = std::function<SinkResult(std::vector<Span>&&, const ReceiverPeer&)>;

// Hands each request's spans to `pipeline` all or none
// (ExportPipeline::SubmitBatch): a full queue refuses the whole request as
// retryable, so a client retry never duplicates spans. Where destinations
// have disk queues, success is answered only once the spans are committed
// to them (at-least-once from acceptance, across kill -9); what cannot be
// committed is refused as retryable. `pipeline` must outlive the receiver.
AppSpanSink PipelineSink(ExportPipeline& pipeline);

struct OtlpReceiverOptions {
  bool grpc_enabled = true;
  std::string grpc_address = "127.0.0.1:4317";  // host:port, [v6]:port; port 0 = ephemeral
  bool http_enabled = true;
  std::string http_address = "127.0.0.1:4318";
  // Largest request accepted, checked on the wire size and, with gzip, on
  // the decompressed size while decompressing (before it is all in memory).
  std::size_t max_request_bytes = 4 * 1024 * 1024;
  // Bytes that all requests in flight may hold at once, both transports
  // together: what they were sent as plus what they inflate to. A request
  // that would pass it is refused as retryable (503 + Retry-After /
  // UNAVAILABLE + RetryInfo) and counted (refused_total{reason="memory"}).
  std::size_t max_in_flight_bytes = 64 * 1024 * 1024;
  // Suggested wait before a refused request is sent again (HTTP rounds up
  // to whole seconds).
  std::chrono::milliseconds retry_after{1000};
  // OTLP/HTTP: a whole request, head and body, must arrive within this from
  // when kspan starts waiting for it; later bytes do not extend it. An idle
  // keep-alive connection is closed after it too.
  std::chrono::milliseconds request_timeout{10000};
  // OTLP/HTTP threads. I/O is asynchronous: a thread is busy only while a
  // request is decoded, never while a client sends slowly.
  int http_threads = 4;
  // OTLP/HTTP connections open at once; more are answered 503.
  int http_max_connections = 256;
  // OTLP/HTTP request line and headers together.
  std::size_t http_max_header_bytes = 16 * 1024;
  // OTLP/gRPC: concurrent calls per connection (HTTP/2 streams).
  int grpc_max_concurrent_streams = 16;
  // OTLP/gRPC: gRPC's own resource quota (its transport buffers), and the
  // threads it may create for it.
  std::size_t grpc_memory_bytes = 64 * 1024 * 1024;
  int grpc_max_threads = 8;
  // Limits on the received spans, applied while decoding (what is over them
  // is dropped and counted in the spans' dropped_*_count fields and in
  // kspan_receiver_limited_total).
  SpanLimits span_limits;
};

class OtlpReceiver {
 public:
  // Binds and starts serving; an error when an enabled address cannot be
  // bound. Metrics (kspan_receiver_*) are registered in `metrics`, which
  // must outlive the receiver.
  static absl::StatusOr<std::unique_ptr<OtlpReceiver>> Start(const OtlpReceiverOptions& options,
                                                              AppSpanSink sink,
                                                              MetricsRegistry& metrics);
  ~OtlpReceiver();  // Shutdown()

  OtlpReceiver(const OtlpReceiver&) = delete;
  OtlpReceiver& operator=(const OtlpReceiver&) = delete;

  // Bound ports (the real ones when configured as 0); 0 when disabled.
  int grpc_port() const;
  int http_port() const;

  // Stops listening and ends every connection; waits for requests being
  // decoded or handed to the sink, never for a client (at most about a
  // second for gRPC calls in progress). Idempotent.
  void Shutdown();

  class Impl;

 private:
  explicit OtlpReceiver(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kspan
