#include "userspace/otlp_receiver.h"

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "exporter/compression.h"
#include "exporter/otlp_decode.h"
#include "exporter/status_macros.h"
#include "grpc/byte_buffer.h"
#include "grpc/slice.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.grpc.pb.h"
#include "spdlog/spdlog.h"
#include "userspace/grpc_byte_buffer_peer.h"
#include "userspace/http_server.h"
#include "userspace/memory_budget.h"
#include "userspace/protobuf_log.h"

namespace kspan {

std::string_view TransportName(ReceiverTransport transport) {
  return transport == ReceiverTransport::kGrpc ? "grpc" : "http";
}

AppSpanSink PipelineSink(ExportPipeline& pipeline) {
  return [&pipeline](std::vector<Span>&& spans, const ReceiverPeer&) {
    switch (pipeline.SubmitBatch(std::move(spans))) {
      case SubmitResult::kAccepted: return SinkResult{};
      case SubmitResult::kQueueFull: return SinkResult{0, "kspan's export queue (memory or disk) is full", true};
      case SubmitResult::kShutdown: break;
    }
    return SinkResult{0, "kspan is shutting down", true};
  };
}

namespace {

namespace metric_name {
constexpr std::string_view kRequests = "kspan_receiver_requests_total";
constexpr std::string_view kSpansReceived = "kspan_receiver_spans_received_total";
constexpr std::string_view kSpansAccepted = "kspan_receiver_spans_accepted_total";
constexpr std::string_view kSpansRejected = "kspan_receiver_spans_rejected_total";
constexpr std::string_view kRequestBytes = "kspan_receiver_request_bytes_total";
constexpr std::string_view kDecodeErrors = "kspan_receiver_decode_errors_total";
constexpr std::string_view kRefused = "kspan_receiver_refused_total";
constexpr std::string_view kInFlightBytes = "kspan_receiver_in_flight_bytes";
constexpr std::string_view kLimited = "kspan_receiver_limited_total";
}  // namespace metric_name

// Why a request or connection was refused before its spans were decoded
// (the "reason" label of kspan_receiver_refused_total).
enum class Refusal { kMemory, kSlowClient, kHeaderTooLarge, kMalformedHttp, kConnections, kCount };
constexpr std::array<std::string_view, static_cast<std::size_t>(Refusal::kCount)> kRefusalNames = {
    "memory", "slow_client", "header_too_large", "malformed_http", "connections"};

// How a request was answered (the "outcome" label).
enum class Outcome {
  kSuccess,
  kPartialSuccess,
  kInvalid,
  kTooLarge,
  kUnsupportedMediaType,
  kUnavailable,
  kMethodNotAllowed,
  kInternalError,
  kCount,
};

constexpr std::array<std::string_view, static_cast<std::size_t>(Outcome::kCount)> kOutcomeNames = {
    "success", "partial_success", "invalid", "too_large", "unsupported_media_type",
    "unavailable", "method_not_allowed", "internal_error"};

// Counters of one transport, looked up once.
struct TransportMetrics {
  TransportMetrics(MetricsRegistry& m, ReceiverTransport t) {
    const std::string name(TransportName(t));
    for (std::size_t i = 0; i < kOutcomeNames.size(); ++i) {
      requests[i] = &m.GetCounter(metric_name::kRequests, "OTLP requests received, by transport and outcome.",
                                  {{"transport", name}, {"outcome", std::string(kOutcomeNames[i])}});
    }
    spans_received = &m.GetCounter(metric_name::kSpansReceived,
                                   "Spans in well-formed OTLP requests received.", {{"transport", name}});
    spans_accepted = &m.GetCounter(metric_name::kSpansAccepted,
                                   "Received spans handed to the export pipeline.", {{"transport", name}});
    spans_rejected_invalid = &m.GetCounter(metric_name::kSpansRejected, "Received spans refused, by reason.",
                                           {{"transport", name}, {"reason", "invalid"}});
    spans_rejected_sink = &m.GetCounter(metric_name::kSpansRejected, "Received spans refused, by reason.",
                                        {{"transport", name}, {"reason", "refused"}});
    spans_rejected_retry = &m.GetCounter(metric_name::kSpansRejected, "Received spans refused, by reason.",
                                         {{"transport", name}, {"reason", "unavailable"}});
    request_bytes = &m.GetCounter(metric_name::kRequestBytes,
                                  "Bytes of OTLP request payloads received (as sent, before decompression).",
                                  {{"transport", name}});
    decode_errors = &m.GetCounter(metric_name::kDecodeErrors,
                                  "OTLP requests whose payload could not be decoded.", {{"transport", name}});
    for (std::size_t i = 0; i < kRefusalNames.size(); ++i) {
      refused[i] = &m.GetCounter(metric_name::kRefused,
                                 "OTLP requests or connections refused to bound kspan's memory, threads and "
                                 "time, by transport and reason.",
                                 {{"transport", name}, {"reason", std::string(kRefusalNames[i])}});
    }
    const auto limited = [&](const char* item) {
      return &m.GetCounter(metric_name::kLimited,
                           "Parts of received spans the receiver's span limits dropped (attributes, "
                           "events, links) or cut (values).",
                           {{"transport", name}, {"item", item}});
    };
    limited_attributes = limited("attribute");
    limited_events = limited("event");
    limited_links = limited("link");
    limited_values = limited("truncated_value");
  }

  void CountLimited(const LimitCounts& c) {
    limited_attributes->Add(c.attributes);
    limited_events->Add(c.events);
    limited_links->Add(c.links);
    limited_values->Add(c.truncated_values);
  }

  void Count(Outcome o) { requests[static_cast<std::size_t>(o)]->Add(); }
  void Refused(Refusal r) { refused[static_cast<std::size_t>(r)]->Add(); }

  std::array<Counter*, static_cast<std::size_t>(Outcome::kCount)> requests{};
  std::array<Counter*, static_cast<std::size_t>(Refusal::kCount)> refused{};
  Counter* spans_received;
  Counter* spans_accepted;
  Counter* spans_rejected_invalid;
  Counter* spans_rejected_sink;
  Counter* spans_rejected_retry;
  Counter* request_bytes;
  Counter* decode_errors;
  Counter* limited_attributes;
  Counter* limited_events;
  Counter* limited_links;
  Counter* limited_values;
};

// The answer to a well-formed request.
struct Verdict {
  bool retry_later = false;
  std::int64_t rejected = 0;
  std::string message;
};

// Common to both transports: spans to the sink, counted.
Verdict Admit(DecodedSpans decoded, const ReceiverPeer& peer, const AppSpanSink& sink, TransportMetrics& m) {
  const auto valid = static_cast<std::int64_t>(decoded.spans.size());
  m.CountLimited(decoded.limited);
  m.spans_received->Add(static_cast<std::uint64_t>(valid + decoded.invalid_spans));
  m.spans_rejected_invalid->Add(static_cast<std::uint64_t>(decoded.invalid_spans));
  Verdict v;
  v.rejected = decoded.invalid_spans;
  v.message = std::move(decoded.invalid_message);
  if (valid == 0) return v;
  SinkResult r;
  try {
    r = sink(std::move(decoded.spans), peer);
  } catch (const std::exception& e) {
    r = SinkResult{0, absl::StrCat("kspan could not take the spans: ", e.what()), true};
  }
  if (r.retry_later) {
    m.spans_rejected_retry->Add(static_cast<std::uint64_t>(valid));
    return Verdict{true, 0, r.message.empty() ? std::string("kspan is overloaded") : std::move(r.message)};
  }
  const std::int64_t refused = std::clamp<std::int64_t>(r.rejected_spans, 0, valid);
  m.spans_rejected_sink->Add(static_cast<std::uint64_t>(refused));
  m.spans_accepted->Add(static_cast<std::uint64_t>(valid - refused));
  v.rejected += refused;
  if (!r.message.empty()) v.message = v.message.empty() ? std::move(r.message) : absl::StrCat(v.message, "; ", r.message);
  return v;
}

// %XX escapes decoded (gRPC writes "ipv6:%5B::1%5D:5555").
std::string PercentDecode(const std::string& in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    int hi = 0;
    int lo = 0;
    const auto hex = [](char c, int* v) {
      if (c >= '0' && c <= '9') *v = c - '0';
      else if (c >= 'a' && c <= 'f') *v = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') *v = c - 'A' + 10;
      else return false;
      return true;
    };
    if (in[i] == '%' && i + 2 < in.size() && hex(in[i + 1], &hi) && hex(in[i + 2], &lo)) {
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += in[i];
    }
  }
  return out;
}

// gRPC's peer() form: "ipv4:127.0.0.1:5555", "ipv6:[::1]:5555" (brackets
// percent-encoded by some gRPC versions), "unix:/path".
ReceiverPeer PeerFromGrpc(const std::string& encoded) {
  const std::string peer = PercentDecode(encoded);
  ReceiverPeer p;
  p.transport = ReceiverTransport::kGrpc;
  p.family = AF_UNSPEC;
  std::string rest;
  if (absl::StartsWith(peer, "ipv4:")) {
    p.family = AF_INET;
    rest = peer.substr(5);
  } else if (absl::StartsWith(peer, "ipv6:")) {
    p.family = AF_INET6;
    rest = peer.substr(5);
  } else {
    if (absl::StartsWith(peer, "unix:")) p.family = AF_UNIX;
    return p;
  }
  if (auto hp = SplitHostPort(rest); hp.ok()) {
    p.address = hp->first;
    p.port = static_cast<std::uint16_t>(hp->second);
  }
  return p;
}

// What the size limit and the memory budget say about `more` bytes on top
// of `have`: OK, ResourceExhausted (over max_request_bytes: 413 /
// RESOURCE_EXHAUSTED) or Unavailable (the budget is spent: retryable).
absl::Status MayHold(std::size_t have, std::size_t more, std::size_t limit, BudgetLease& lease) {
  if (more > limit || have > limit - more) {
    return absl::ResourceExhaustedError(absl::StrCat("request larger than ", limit, " bytes (decompressed)"));
  }
  if (!lease.Grow(more)) return absl::UnavailableError("kspan holds as many requests as it may: retry later");
  return absl::OkStatus();
}

// --- OTLP/gRPC ------------------------------------------------------------

using TraceService = opentelemetry::proto::collector::trace::v1::TraceService;

// The callback API with raw bytes: kspan parses the request itself so a
// malformed payload is answered INVALID_ARGUMENT, as OTLP requires (a typed
// service would answer gRPC's own deserialization error), and inflates a
// compressed one itself, within bounds (gRPC's decompression is off: in
// gRPC 1.51 it inflates a message whole before checking its size).
class GrpcTraceService final : public TraceService::WithRawCallbackMethod_Export<TraceService::Service> {
 public:
  GrpcTraceService(const OtlpReceiverOptions& options, const AppSpanSink& sink, TransportMetrics& metrics,
                   MemoryBudget& budget)
      : options_(options), sink_(sink), metrics_(metrics), budget_(budget) {}

  grpc::ServerUnaryReactor* Export(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(Handle(context, request, response));
    return reactor;
  }

 private:
  grpc::Status Unavailable(std::string_view message) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, std::string(message),
                        EncodeRetryInfoStatus(grpc::StatusCode::UNAVAILABLE, message, options_.retry_after.count()));
  }

  grpc::Status Handle(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                      grpc::ByteBuffer* response) {
    const std::size_t wire = request->Length();
    metrics_.request_bytes->Add(wire);
    // gRPC holds the request already; taking it from the budget keeps what
    // kspan adds to it (inflating, decoding) within the budget.
    BudgetLease lease(budget_);
    if (!lease.Grow(wire)) {
      metrics_.Refused(Refusal::kMemory);
      metrics_.Count(Outcome::kUnavailable);
      return Unavailable("kspan holds as many requests as it may: retry later");
    }
    // Decoded from the request's slices (or what they inflate to) straight
    // into spans, within the span limits and the decode budget
    // (exporter/otlp_decode.h).
    absl::StatusOr<DecodedSpans> decoded;
    grpc::ByteBuffer copy(*request);  // shares the slices; the readers take a non-const buffer
    grpc_byte_buffer* raw = grpc::internal::GrpcByteBufferPeer(&copy).c_buffer();
    if (raw != nullptr && raw->type == GRPC_BB_RAW && raw->data.raw.compression != GRPC_COMPRESS_NONE) {
      std::string inflated;
      GzipInflater inflater;
      const auto grow = [&](std::size_t more) { return MayHold(inflated.size(), more, options_.max_request_bytes, lease); };
      absl::Status s;
      const grpc_slice_buffer& slices = raw->data.raw.slice_buffer;
      for (std::size_t i = 0; i < slices.count && s.ok(); ++i) {
        const grpc_slice& slice = slices.slices[i];
        s = inflater.Feed(std::string_view(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(slice)),
                                           GRPC_SLICE_LENGTH(slice)),
                          &inflated, grow);
      }
      if (s.ok() && !inflater.finished()) s = absl::InvalidArgumentError("truncated compressed message");
      if (absl::IsResourceExhausted(s)) {
        metrics_.Count(Outcome::kTooLarge);
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, std::string(s.message()));
      }
      if (absl::IsUnavailable(s)) {
        metrics_.Refused(Refusal::kMemory);
        metrics_.Count(Outcome::kUnavailable);
        return Unavailable(std::string(s.message()));
      }
      if (s.ok()) {
        decoded = DecodeExportRequest(inflated, OtlpEncoding::kProtobuf, options_.span_limits);
      } else {
        decoded = absl::InvalidArgumentError("not a valid gzip-compressed ExportTraceServiceRequest");
      }
    } else {
      grpc::ProtoBufferReader reader(&copy);
      decoded = DecodeExportRequest(reader, wire, options_.span_limits);
    }
    if (!decoded.ok()) {
      metrics_.decode_errors->Add();
      metrics_.Count(Outcome::kInvalid);
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(decoded.status().message()));
    }
    Verdict v = Admit(*std::move(decoded), PeerFromGrpc(context->peer()), sink_, metrics_);
    if (v.retry_later) {
      metrics_.Count(Outcome::kUnavailable);
      return Unavailable(v.message);
    }
    metrics_.Count(v.rejected > 0 ? Outcome::kPartialSuccess : Outcome::kSuccess);
    grpc::Slice slice(EncodeExportResponse(v.rejected, v.message, OtlpEncoding::kProtobuf));
    *response = grpc::ByteBuffer(&slice, 1);
    return grpc::Status::OK;
  }

  const OtlpReceiverOptions& options_;
  const AppSpanSink& sink_;
  TransportMetrics& metrics_;
  MemoryBudget& budget_;
};

// --- OTLP/HTTP ------------------------------------------------------------

constexpr std::string_view kProtobufType = "application/x-protobuf";
constexpr std::string_view kJsonType = "application/json";

// The media type without parameters, lower case ("application/json; charset=utf-8").
std::string MediaType(const std::string& content_type) {
  return absl::AsciiStrToLower(absl::StripAsciiWhitespace(content_type.substr(0, content_type.find(';'))));
}

// google.rpc.Code values are gRPC's status codes.
grpc::StatusCode RpcCodeOf(int http_status) {
  switch (http_status) {
    case 400:
    case 431: return grpc::StatusCode::INVALID_ARGUMENT;
    case 404: return grpc::StatusCode::NOT_FOUND;
    case 413: return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case 503: return grpc::StatusCode::UNAVAILABLE;
    case 405:
    case 415: return grpc::StatusCode::UNIMPLEMENTED;
    default: return grpc::StatusCode::INTERNAL;
  }
}

HttpAnswer Body(int http_status, std::string body, OtlpEncoding encoding, bool gzip) {
  HttpAnswer a;
  a.status = http_status;
  if (gzip) {
    if (auto z = GzipCompress(body); z.ok()) {
      body = *std::move(z);
      a.headers.emplace_back("Content-Encoding", "gzip");
    }
  }
  a.body = std::move(body);
  a.content_type = std::string(encoding == OtlpEncoding::kJson ? kJsonType : kProtobufType);
  return a;
}

// An error answer: a google.rpc.Status in the request's encoding.
HttpAnswer Error(int http_status, OtlpEncoding encoding, bool gzip, std::string_view message) {
  return Body(http_status, EncodeRpcStatus(RpcCodeOf(http_status), message, encoding), encoding, gzip);
}

class HttpTraceServer;

// One POST /v1/traces body, read as it arrives: inflated (gzip) and taken
// from the memory budget piece by piece, so neither a chunked body nor a
// gzip bomb is ever held beyond max_request_bytes or the budget.
class OtlpHttpBody final : public HttpBodyReader {
 public:
  OtlpHttpBody(HttpTraceServer& server, const HttpRequestHead& head, std::unique_ptr<BudgetLease> lease,
               OtlpEncoding encoding, bool gzip);
  bool Consume(std::string_view piece) override;
  HttpAnswer Finish(HttpBodyEnd end) override;

 private:
  HttpTraceServer& server_;
  std::unique_ptr<BudgetLease> lease_;
  const OtlpEncoding encoding_;
  const bool gzip_;
  const bool length_declared_;  // the lease holds the whole declared body already
  ReceiverPeer peer_;
  std::string body_;
  GzipInflater inflater_;
  absl::Status stopped_;  // why Consume refused more
};

class HttpTraceServer {
 public:
  HttpTraceServer(const OtlpReceiverOptions& options, const AppSpanSink& sink, TransportMetrics& metrics,
                  MemoryBudget& budget)
      : options_(options), sink_(sink), metrics_(metrics), budget_(budget) {}

  absl::Status Bind(const std::string& address) {
    HttpServerOptions o;
    o.name = "OTLP/HTTP";
    o.max_header_bytes = options_.http_max_header_bytes;
    o.max_body_bytes = options_.max_request_bytes;
    o.request_timeout = options_.request_timeout;
    o.max_connections = options_.http_max_connections;
    o.threads = options_.http_threads;
    o.handler = [this](const HttpRequestHead& head) { return Route(head); };
    o.error_answer = [](int status, std::string_view message) {
      return Error(status, OtlpEncoding::kProtobuf, false, message);
    };
    o.on_refused = [this](HttpRefusal r) {
      switch (r) {
        case HttpRefusal::kHeaderTooLarge: metrics_.Refused(Refusal::kHeaderTooLarge); break;
        case HttpRefusal::kMalformed: metrics_.Refused(Refusal::kMalformedHttp); break;
        case HttpRefusal::kSlowClient: metrics_.Refused(Refusal::kSlowClient); break;
        case HttpRefusal::kTooManyConnections: metrics_.Refused(Refusal::kConnections); break;
      }
    };
    auto server = HttpServer::Start(address, std::move(o));
    if (!server.ok()) {
      return absl::Status(server.status().code(),
                          absl::StrCat("OTLP/HTTP receiver: ", std::string(server.status().message())));
    }
    server_ = *std::move(server);
    return absl::OkStatus();
  }

  int port() const { return server_ ? server_->port() : 0; }
  void Stop() {
    if (server_) server_->Stop();
  }

  const OtlpReceiverOptions& options() const { return options_; }
  TransportMetrics& metrics() { return metrics_; }
  const AppSpanSink& sink() const { return sink_; }

 private:
  HttpDecision Route(const HttpRequestHead& head) {
    HttpDecision d;
    if (head.path != "/v1/traces") {
      d.answer = Error(404, OtlpEncoding::kProtobuf, false, "not found: OTLP traces are POSTed to /v1/traces");
      return d;
    }
    if (head.method != "POST") {
      metrics_.Count(Outcome::kMethodNotAllowed);
      d.answer = Error(405, OtlpEncoding::kProtobuf, false, "only POST is allowed on /v1/traces");
      d.answer->headers.emplace_back("Allow", "POST");
      return d;
    }
    const std::string type = MediaType(head.Header("Content-Type"));
    const OtlpEncoding encoding = type == kJsonType ? OtlpEncoding::kJson : OtlpEncoding::kProtobuf;
    const std::string content_encoding =
        absl::AsciiStrToLower(absl::StripAsciiWhitespace(head.Header("Content-Encoding")));
    const bool gzip = content_encoding == "gzip";
    if (type != kJsonType && type != kProtobufType) {
      metrics_.Count(Outcome::kUnsupportedMediaType);
      d.answer = Error(415, OtlpEncoding::kProtobuf, false,
                       absl::StrCat("unsupported content type '", type,
                                    "': use application/x-protobuf or application/json"));
      return d;
    }
    if (!gzip && !content_encoding.empty() && content_encoding != "identity") {
      metrics_.Count(Outcome::kUnsupportedMediaType);
      d.answer = Error(415, encoding, false, absl::StrCat("unsupported content encoding '", content_encoding, "'"));
      return d;
    }
    const std::size_t limit = options_.max_request_bytes;
    if (head.content_length && *head.content_length > limit) {
      // Refused before a byte of it is read: nothing is counted as received.
      metrics_.Count(Outcome::kTooLarge);
      d.answer = Error(413, encoding, gzip, absl::StrCat("request larger than ", limit, " bytes"));
      return d;
    }
    auto lease = std::make_unique<BudgetLease>(budget_);
    if (head.content_length && !lease->Grow(static_cast<std::size_t>(*head.content_length))) {
      metrics_.Refused(Refusal::kMemory);
      d.answer = Overloaded(encoding, gzip, "kspan holds as many requests as it may: retry later");
      return d;
    }
    d.body = std::make_unique<OtlpHttpBody>(*this, head, std::move(lease), encoding, gzip);
    return d;
  }

 public:
  HttpAnswer Overloaded(OtlpEncoding encoding, bool gzip, std::string_view message) {
    metrics_.Count(Outcome::kUnavailable);
    HttpAnswer a = Error(503, encoding, gzip, message);
    const auto seconds = std::max<std::int64_t>(1, (options_.retry_after.count() + 999) / 1000);
    a.headers.emplace_back("Retry-After", std::to_string(seconds));
    return a;
  }

 private:
  const OtlpReceiverOptions& options_;
  const AppSpanSink& sink_;
  TransportMetrics& metrics_;
  MemoryBudget& budget_;
  std::unique_ptr<HttpServer> server_;
};

OtlpHttpBody::OtlpHttpBody(HttpTraceServer& server, const HttpRequestHead& head, std::unique_ptr<BudgetLease> lease,
                           OtlpEncoding encoding, bool gzip)
    : server_(server),
      lease_(std::move(lease)),
      encoding_(encoding),
      gzip_(gzip),
      length_declared_(head.content_length.has_value()) {
  peer_.transport = ReceiverTransport::kHttp;
  peer_.address = head.remote_address;
  peer_.port = head.remote_port;
  peer_.family = head.remote_address.find(':') != std::string::npos ? AF_INET6
                 : head.remote_address.empty()                     ? AF_UNSPEC
                                                                   : AF_INET;
  if (length_declared_ && !gzip_) body_.reserve(static_cast<std::size_t>(head.content_length.value_or(0)));
}

bool OtlpHttpBody::Consume(std::string_view piece) {
  // What arrived, not what the client declared.
  server_.metrics().request_bytes->Add(piece.size());
  if (!length_declared_ && !lease_->Grow(piece.size())) {
    stopped_ = absl::UnavailableError("kspan holds as many requests as it may: retry later");
    return false;
  }
  if (!gzip_) {
    body_.append(piece);
    return true;
  }
  stopped_ = inflater_.Feed(piece, &body_, [this](std::size_t more) {
    return MayHold(body_.size(), more, server_.options().max_request_bytes, *lease_);
  });
  return stopped_.ok();
}

HttpAnswer OtlpHttpBody::Finish(HttpBodyEnd end) {
  TransportMetrics& m = server_.metrics();
  const std::size_t limit = server_.options().max_request_bytes;
  if (end == HttpBodyEnd::kTooLarge || (end == HttpBodyEnd::kStopped && absl::IsResourceExhausted(stopped_))) {
    m.Count(Outcome::kTooLarge);
    return Error(413, encoding_, gzip_, absl::StrCat("request larger than ", limit, " bytes", gzip_ ? " (decompressed)" : ""));
  }
  if (end == HttpBodyEnd::kStopped && absl::IsUnavailable(stopped_)) {
    m.Refused(Refusal::kMemory);
    return server_.Overloaded(encoding_, gzip_, std::string(stopped_.message()));
  }
  if (end == HttpBodyEnd::kTimedOut) {
    // The connection is closed without an answer (the client sees a network
    // error, which OTLP clients retry).
    m.Refused(Refusal::kSlowClient);
    return HttpAnswer{};
  }
  if (end != HttpBodyEnd::kComplete || (gzip_ && !inflater_.finished())) {
    m.decode_errors->Add();
    m.Count(Outcome::kInvalid);
    return Error(400, encoding_, gzip_,
                 gzip_ ? "request body is not valid gzip" : "request body could not be read");
  }
  auto decoded = DecodeExportRequest(body_, encoding_, server_.options().span_limits);
  if (!decoded.ok()) {
    m.decode_errors->Add();
    m.Count(Outcome::kInvalid);
    return Error(400, encoding_, gzip_, std::string(decoded.status().message()));
  }
  Verdict v = Admit(*std::move(decoded), peer_, server_.sink(), m);
  if (v.retry_later) return server_.Overloaded(encoding_, gzip_, v.message);
  m.Count(v.rejected > 0 ? Outcome::kPartialSuccess : Outcome::kSuccess);
  return Body(200, EncodeExportResponse(v.rejected, v.message, encoding_), encoding_, gzip_);
}

}  // namespace

class OtlpReceiver::Impl {
 public:
  Impl(const OtlpReceiverOptions& options, AppSpanSink sink, MetricsRegistry& metrics)
      : options_(options),
        sink_(std::move(sink)),
        metrics_(metrics),
        grpc_metrics_(metrics, ReceiverTransport::kGrpc),
        http_metrics_(metrics, ReceiverTransport::kHttp),
        budget_(options.max_in_flight_bytes) {
    metrics.AddCallbackGauge(metric_name::kInFlightBytes,
                             "Bytes that OTLP requests in flight hold (as sent, and inflated), both transports "
                             "(bounded by receiver.max_in_flight_bytes).",
                             {}, [this] { return static_cast<double>(budget_.used()); }, this);
  }

  ~Impl() { metrics_.RemoveCallbacks(this); }

  absl::Status Start() {
    // Requests with invalid UTF-8 would otherwise each write a line to stderr.
    RouteProtobufLogsToSpdlog();
    if (options_.grpc_enabled) {
      auto hp = SplitHostPort(options_.grpc_address);
      if (!hp.ok()) return absl::InvalidArgumentError(absl::StrCat("OTLP/gRPC receiver: ", hp.status().message()));
      grpc_service_ = std::make_unique<GrpcTraceService>(options_, sink_, grpc_metrics_, budget_);
      grpc::ServerBuilder builder;
      builder.AddListeningPort(options_.grpc_address, grpc::InsecureServerCredentials(), &grpc_port_);
      builder.RegisterService(grpc_service_.get());
      // gRPC sets SO_REUSEPORT by default: a port in use must be an error.
      builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
      // gRPC answers RESOURCE_EXHAUSTED above this wire size itself, before
      // kspan sees the call (so those are not in kspan's counts).
      builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<std::size_t>(options_.max_request_bytes, INT32_MAX)));
      // gRPC 1.51 inflates a compressed message whole and only then checks
      // its size: the handler inflates instead, within bounds.
      builder.AddChannelArgument(GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION, 0);
      builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, std::max(1, options_.grpc_max_concurrent_streams));
      grpc::ResourceQuota quota("kspan_otlp_receiver");
      quota.Resize(options_.grpc_memory_bytes);
      quota.SetMaxThreads(std::max(2, options_.grpc_max_threads));
      builder.SetResourceQuota(quota);
      grpc_server_ = builder.BuildAndStart();
      if (grpc_server_ == nullptr || grpc_port_ == 0) {
        return absl::UnavailableError(absl::StrCat("OTLP/gRPC receiver: cannot listen on ", options_.grpc_address));
      }
      spdlog::info("OTLP receiver: gRPC on {} (port {})", options_.grpc_address, grpc_port_);
    }
    if (options_.http_enabled) {
      http_ = std::make_unique<HttpTraceServer>(options_, sink_, http_metrics_, budget_);
      KSPAN_RETURN_IF_ERROR(http_->Bind(options_.http_address));
      spdlog::info("OTLP receiver: HTTP on {} (port {})", options_.http_address, http_->port());
    }
    return absl::OkStatus();
  }

  void Shutdown() {
    std::lock_guard lock(mu_);
    if (http_) {
      http_->Stop();  // waits for no client
      http_.reset();
    }
    if (grpc_server_) {
      // Calls still receiving from a client are cancelled at the deadline;
      // handlers themselves never block.
      grpc_server_->Shutdown(std::chrono::system_clock::now() + kGrpcShutdownGrace);
      grpc_server_->Wait();
      grpc_server_.reset();
    }
  }

  int grpc_port() const { return options_.grpc_enabled ? grpc_port_ : 0; }
  int http_port() const { return http_ ? http_->port() : 0; }

 private:
  static constexpr std::chrono::milliseconds kGrpcShutdownGrace{500};

  const OtlpReceiverOptions options_;
  const AppSpanSink sink_;
  MetricsRegistry& metrics_;
  TransportMetrics grpc_metrics_;
  TransportMetrics http_metrics_;
  MemoryBudget budget_;
  std::mutex mu_;
  std::unique_ptr<GrpcTraceService> grpc_service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  int grpc_port_ = 0;
  std::unique_ptr<HttpTraceServer> http_;
};

OtlpReceiver::OtlpReceiver(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

OtlpReceiver::~OtlpReceiver() { Shutdown(); }

absl::StatusOr<std::unique_ptr<OtlpReceiver>> OtlpReceiver::Start(const OtlpReceiverOptions& options,
                                                                  AppSpanSink sink, MetricsRegistry& metrics) {
  if (!sink) return absl::InvalidArgumentError("OTLP receiver: no sink");
  if (options.max_request_bytes == 0) return absl::InvalidArgumentError("OTLP receiver: max_request_bytes is 0");
  // A gzip request at the size limit holds its wire bytes and what they inflate to.
  if (options.max_in_flight_bytes / 2 < options.max_request_bytes) {
    return absl::InvalidArgumentError("OTLP receiver: max_in_flight_bytes must be at least twice max_request_bytes");
  }
  auto impl = std::make_unique<Impl>(options, std::move(sink), metrics);
  if (auto s = impl->Start(); !s.ok()) {
    impl->Shutdown();
    return s;
  }
  return std::unique_ptr<OtlpReceiver>(new OtlpReceiver(std::move(impl)));
}

void OtlpReceiver::Shutdown() {
  if (impl_) impl_->Shutdown();
}

int OtlpReceiver::grpc_port() const { return impl_->grpc_port(); }
int OtlpReceiver::http_port() const { return impl_->http_port(); }

}  // namespace kspan
