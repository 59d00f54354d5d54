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
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "httplib.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace kspan {

std::string_view TransportName(ReceiverTransport transport) {
  return transport == ReceiverTransport::kGrpc ? "grpc" : "http";
}

AppSpanSink PipelineSink(ExportPipeline& pipeline) {
  return [&pipeline](std::vector<Span>&& spans, const ReceiverPeer&) {
    switch (pipeline.SubmitBatch(std::move(spans))) {
      case SubmitResult::kAccepted: return SinkResult{};
      case SubmitResult::kQueueFull: return SinkResult{0, "kspan's export queue is full", true};
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
constexpr std::string_view kLimited = "kspan_receiver_limited_total";
}  // namespace metric_name

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

  std::array<Counter*, static_cast<std::size_t>(Outcome::kCount)> requests{};
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

// "host:port" or "[v6]:port" -> host (without brackets), port.
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError(absl::StrCat("no port in '", address, "'"));
  std::string host = address.substr(0, colon);
  int port = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad port in '", address, "'"));
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) return absl::InvalidArgumentError(absl::StrCat("no host in '", address, "'"));
  return std::make_pair(std::move(host), port);
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

// --- OTLP/gRPC ------------------------------------------------------------

using TraceService = opentelemetry::proto::collector::trace::v1::TraceService;

// The callback API with raw bytes: kspan parses the request itself so a
// malformed payload is answered INVALID_ARGUMENT, as OTLP requires (a typed
// service would answer gRPC's own deserialization error).
class GrpcTraceService final : public TraceService::WithRawCallbackMethod_Export<TraceService::Service> {
 public:
  GrpcTraceService(const AppSpanSink& sink, TransportMetrics& metrics, std::chrono::milliseconds retry_after,
                   const SpanLimits& limits)
      : sink_(sink), metrics_(metrics), retry_after_(retry_after), limits_(limits) {}

  grpc::ServerUnaryReactor* Export(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(Handle(context, request, response));
    return reactor;
  }

 private:
  grpc::Status Handle(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                      grpc::ByteBuffer* response) {
    metrics_.request_bytes->Add(request->Length());
    // Decoded from the request's slices straight into spans, within the
    // span limits and the decode budget (exporter/otlp_decode.h).
    absl::StatusOr<DecodedSpans> decoded;
    {
      grpc::ByteBuffer copy(*request);  // the reader takes a non-const buffer; slices are shared
      grpc::ProtoBufferReader reader(&copy);
      decoded = DecodeExportRequest(reader, request->Length(), limits_);
    }
    if (!decoded.ok()) {
      metrics_.decode_errors->Add();
      metrics_.Count(Outcome::kInvalid);
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(decoded.status().message()));
    }
    Verdict v = Admit(*std::move(decoded), PeerFromGrpc(context->peer()), sink_, metrics_);
    if (v.retry_later) {
      metrics_.Count(Outcome::kUnavailable);
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, v.message,
                          EncodeRetryInfoStatus(grpc::StatusCode::UNAVAILABLE, v.message, retry_after_.count()));
    }
    metrics_.Count(v.rejected > 0 ? Outcome::kPartialSuccess : Outcome::kSuccess);
    grpc::Slice slice(EncodeExportResponse(v.rejected, v.message, OtlpEncoding::kProtobuf));
    *response = grpc::ByteBuffer(&slice, 1);
    return grpc::Status::OK;
  }

  const AppSpanSink& sink_;
  TransportMetrics& metrics_;
  const std::chrono::milliseconds retry_after_;
  const SpanLimits limits_;
};

// --- OTLP/HTTP ------------------------------------------------------------

constexpr std::string_view kProtobufType = "application/x-protobuf";
constexpr std::string_view kJsonType = "application/json";

// The media type without parameters, lower case ("application/json; charset=utf-8").
std::string MediaType(const std::string& content_type) {
  return absl::AsciiStrToLower(absl::StripAsciiWhitespace(content_type.substr(0, content_type.find(';'))));
}

class HttpTraceServer {
 public:
  HttpTraceServer(const OtlpReceiverOptions& options, const AppSpanSink& sink, TransportMetrics& metrics)
      : options_(options), sink_(sink), metrics_(metrics) {
    const int threads = std::max(1, options.http_threads);
    server_.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    // httplib refuses a larger Content-Length with 413 before the handler
    // reads anything; the handler bounds chunked and decompressed bodies.
    server_.set_payload_max_length(options.max_request_bytes);
    server_.set_keep_alive_max_count(10000);
    server_.set_keep_alive_timeout(5);
    // Answers go out as headers and body in two writes: without this, Nagle
    // holds the body until the client's delayed ACK (40 ms per request).
    server_.set_tcp_nodelay(true);
    // httplib's default also sets SO_REUSEPORT, which would let a second
    // kspan (or anything else) silently share the port; bind exclusively.
    server_.set_socket_options([](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    server_.set_read_timeout(30, 0);
    server_.Post("/v1/traces", [this](const httplib::Request& req, httplib::Response& res,
                                      const httplib::ContentReader& reader) { Handle(req, res, reader); });
    const auto not_allowed = [this](const httplib::Request&, httplib::Response& res) {
      metrics_.Count(Outcome::kMethodNotAllowed);
      res.set_header("Allow", "POST");
      Error(res, 405, OtlpEncoding::kProtobuf, false, "only POST is allowed on /v1/traces");
    };
    server_.Get("/v1/traces", not_allowed);
    server_.Put("/v1/traces", not_allowed);
    server_.Patch("/v1/traces", not_allowed);
    server_.Delete("/v1/traces", not_allowed);
    server_.Options("/v1/traces", not_allowed);
    // Every 4xx/5xx carries a google.rpc.Status, httplib's own ones too
    // (unknown paths, a body over the limit refused before the handler).
    server_.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return;
      const grpc::StatusCode code = res.status == 404   ? grpc::StatusCode::NOT_FOUND
                                    : res.status == 413 ? grpc::StatusCode::RESOURCE_EXHAUSTED
                                                        : grpc::StatusCode::INVALID_ARGUMENT;
      res.set_content(EncodeRpcStatus(code, absl::StrCat("HTTP ", res.status), OtlpEncoding::kProtobuf),
                      std::string(kProtobufType));
    });
  }

  absl::Status Bind(const std::string& address) {
    auto hp = SplitHostPort(address);
    if (!hp.ok()) return absl::InvalidArgumentError(absl::StrCat("OTLP/HTTP receiver: ", hp.status().message()));
    const auto& [host, port] = *hp;
    if (port == 0) {
      port_ = server_.bind_to_any_port(host);
      if (port_ < 0) port_ = 0;
    } else if (server_.bind_to_port(host, port)) {
      port_ = port;
    }
    if (port_ == 0) return absl::UnavailableError(absl::StrCat("OTLP/HTTP receiver: cannot listen on ", address));
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    return absl::OkStatus();
  }

  int port() const { return port_; }

  void Stop() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  // An error answer: a google.rpc.Status in the request's encoding.
  void Error(httplib::Response& res, int http_status, OtlpEncoding encoding, bool gzip, std::string_view message) {
    // google.rpc.Code values are gRPC's status codes.
    const grpc::StatusCode code = http_status == 400   ? grpc::StatusCode::INVALID_ARGUMENT
                                  : http_status == 413 ? grpc::StatusCode::RESOURCE_EXHAUSTED
                                  : http_status == 503 ? grpc::StatusCode::UNAVAILABLE
                                  : http_status == 405 || http_status == 415 ? grpc::StatusCode::UNIMPLEMENTED
                                                                              : grpc::StatusCode::INTERNAL;
    res.status = http_status;
    Body(res, EncodeRpcStatus(code, message, encoding), encoding, gzip);
  }

  void Body(httplib::Response& res, std::string body, OtlpEncoding encoding, bool gzip) {
    if (gzip) {
      if (auto z = GzipCompress(body); z.ok()) {
        body = *std::move(z);
        res.set_header("Content-Encoding", "gzip");
      }
    }
    res.set_content(std::move(body), std::string(encoding == OtlpEncoding::kJson ? kJsonType : kProtobufType));
  }

  void Handle(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    const std::string type = MediaType(req.get_header_value("Content-Type"));
    const OtlpEncoding encoding = type == kJsonType ? OtlpEncoding::kJson : OtlpEncoding::kProtobuf;
    const std::string content_encoding =
        absl::AsciiStrToLower(absl::StripAsciiWhitespace(req.get_header_value("Content-Encoding")));
    const bool gzip = content_encoding == "gzip";
    if (type != kJsonType && type != kProtobufType) {
      metrics_.Count(Outcome::kUnsupportedMediaType);
      // The body is not read: the connection cannot be reused.
      res.set_header("Connection", "close");
      Error(res, 415, OtlpEncoding::kProtobuf, false,
            absl::StrCat("unsupported content type '", type, "': use application/x-protobuf or application/json"));
      return;
    }
    if (!gzip && !content_encoding.empty() && content_encoding != "identity") {
      metrics_.Count(Outcome::kUnsupportedMediaType);
      res.set_header("Connection", "close");
      Error(res, 415, encoding, false, absl::StrCat("unsupported content encoding '", content_encoding, "'"));
      return;
    }

    // httplib decompresses gzip as it reads, in small chunks: stopping at
    // the limit bounds the memory a gzip bomb can take.
    const std::size_t limit = options_.max_request_bytes;
    std::string body;
    bool too_large = false;
    const bool read = reader([&](const char* data, std::size_t n) {
      if (n > limit - body.size()) {
        too_large = true;
        return false;
      }
      body.append(data, n);
      return true;
    });
    const std::uint64_t declared = req.get_header_value<std::uint64_t>("Content-Length");
    metrics_.request_bytes->Add(declared != 0 ? declared : body.size());
    if (too_large || declared > limit) {
      metrics_.Count(Outcome::kTooLarge);
      res.set_header("Connection", "close");
      Error(res, 413, encoding, gzip,
            absl::StrCat("request larger than ", limit, " bytes", gzip ? " (decompressed)" : ""));
      return;
    }
    if (!read) {
      metrics_.decode_errors->Add();
      metrics_.Count(Outcome::kInvalid);
      res.set_header("Connection", "close");
      Error(res, 400, encoding, gzip, gzip ? "request body is not valid gzip" : "request body could not be read");
      return;
    }
    auto decoded = DecodeExportRequest(body, encoding, options_.span_limits);
    if (!decoded.ok()) {
      metrics_.decode_errors->Add();
      metrics_.Count(Outcome::kInvalid);
      Error(res, 400, encoding, gzip, std::string(decoded.status().message()));
      return;
    }
    ReceiverPeer peer;
    peer.transport = ReceiverTransport::kHttp;
    peer.address = req.remote_addr;
    peer.port = static_cast<std::uint16_t>(req.remote_port);
    peer.family = req.remote_addr.find(':') != std::string::npos ? AF_INET6
                  : req.remote_addr.empty()                      ? AF_UNSPEC
                                                                 : AF_INET;
    Verdict v = Admit(*std::move(decoded), peer, sink_, metrics_);
    if (v.retry_later) {
      metrics_.Count(Outcome::kUnavailable);
      const auto seconds = std::max<std::int64_t>(1, (options_.retry_after.count() + 999) / 1000);
      res.set_header("Retry-After", std::to_string(seconds));
      Error(res, 503, encoding, gzip, v.message);
      return;
    }
    metrics_.Count(v.rejected > 0 ? Outcome::kPartialSuccess : Outcome::kSuccess);
    res.status = 200;
    Body(res, EncodeExportResponse(v.rejected, v.message, encoding), encoding, gzip);
  }

  const OtlpReceiverOptions options_;
  const AppSpanSink& sink_;
  TransportMetrics& metrics_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

}  // namespace

class OtlpReceiver::Impl {
 public:
  Impl(const OtlpReceiverOptions& options, AppSpanSink sink, MetricsRegistry& metrics)
      : options_(options),
        sink_(std::move(sink)),
        grpc_metrics_(metrics, ReceiverTransport::kGrpc),
        http_metrics_(metrics, ReceiverTransport::kHttp) {}

  absl::Status Start() {
    if (options_.grpc_enabled) {
      auto hp = SplitHostPort(options_.grpc_address);
      if (!hp.ok()) return absl::InvalidArgumentError(absl::StrCat("OTLP/gRPC receiver: ", hp.status().message()));
      grpc_service_ =
          std::make_unique<GrpcTraceService>(sink_, grpc_metrics_, options_.retry_after, options_.span_limits);
      grpc::ServerBuilder builder;
      builder.AddListeningPort(options_.grpc_address, grpc::InsecureServerCredentials(), &grpc_port_);
      builder.RegisterService(grpc_service_.get());
      // gRPC answers RESOURCE_EXHAUSTED above this, checked after
      // decompression too.
      // gRPC sets SO_REUSEPORT by default: a port in use must be an error.
      builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
      builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<std::size_t>(options_.max_request_bytes, INT32_MAX)));
      grpc_server_ = builder.BuildAndStart();
      if (grpc_server_ == nullptr || grpc_port_ == 0) {
        return absl::UnavailableError(absl::StrCat("OTLP/gRPC receiver: cannot listen on ", options_.grpc_address));
      }
      spdlog::info("OTLP receiver: gRPC on {} (port {})", options_.grpc_address, grpc_port_);
    }
    if (options_.http_enabled) {
      http_ = std::make_unique<HttpTraceServer>(options_, sink_, http_metrics_);
      if (auto s = http_->Bind(options_.http_address); !s.ok()) return s;
      spdlog::info("OTLP receiver: HTTP on {} (port {})", options_.http_address, http_->port());
    }
    return absl::OkStatus();
  }

  void Shutdown() {
    std::lock_guard lock(mu_);
    if (grpc_server_) {
      grpc_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
      grpc_server_->Wait();
      grpc_server_.reset();
    }
    if (http_) {
      http_->Stop();
      http_.reset();
    }
  }

  int grpc_port() const { return options_.grpc_enabled ? grpc_port_ : 0; }
  int http_port() const { return http_ ? http_->port() : 0; }

 private:
  const OtlpReceiverOptions options_;
  const AppSpanSink sink_;
  TransportMetrics grpc_metrics_;
  TransportMetrics http_metrics_;
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
