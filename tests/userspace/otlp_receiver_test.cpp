// The OTLP receiver with real servers on ephemeral ports and real clients (a
// gRPC stub, a raw gRPC call, cpp-httplib's client): every answer the OTLP
// specification defines, on both transports, protobuf, JSON and gzip;
// malformed requests among good ones; and overload through the real export
// pipeline to a real OTLP/gRPC backend, where nothing answered with success
// may be lost.
#include "userspace/otlp_receiver.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "exporter/compression.h"
#include "exporter/otlp_json.h"
#include "exporter/otlp_transform.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "httplib.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.grpc.pb.h"
#include "tests/support/grpc_raw_export.h"
#include "tests/support/otlp_test_server.h"
#include "tests/support/process_memory.h"

namespace kspan {
namespace {

using opentelemetry::proto::collector::trace::v1::TraceService;
using std::chrono::milliseconds;

// Records what the receiver hands over; answers as `answer` says.
struct RecordingSink {
  std::mutex mu;
  std::vector<Span> spans;
  std::vector<ReceiverPeer> peers;
  std::function<SinkResult(std::size_t)> answer = [](std::size_t) { return SinkResult{}; };

  AppSpanSink Sink() {
    return [this](std::vector<Span>&& in, const ReceiverPeer& peer) {
      std::lock_guard lock(mu);
      SinkResult r = answer(in.size());
      if (!r.retry_later) {
        for (auto& s : in) spans.push_back(std::move(s));
        peers.push_back(peer);
      }
      return r;
    };
  }
  std::size_t count() {
    std::lock_guard lock(mu);
    return spans.size();
  }
};

Span AppSpan(int i, std::size_t attribute_bytes = 10) {
  static const auto resource = std::make_shared<const Resource>(
      Resource{{{"service.name", std::string("checkout")}}, 0, "https://opentelemetry.io/schemas/1.21.0"});
  static const auto scope = std::make_shared<const InstrumentationScope>(InstrumentationScope{"app.lib", "2.0"});
  Span s;
  s.trace_id.fill(0x11);
  s.trace_id[15] = static_cast<std::uint8_t>(i);
  s.trace_id[14] = static_cast<std::uint8_t>(i >> 8);
  s.span_id.fill(0x22);
  s.span_id[7] = static_cast<std::uint8_t>(i);
  s.span_id[6] = static_cast<std::uint8_t>(i >> 8);
  s.name = "GET /item/" + std::to_string(i);
  s.kind = SpanKind::kServer;
  s.start_unix_nano = 1'700'000'000'000'000'000ULL;
  s.end_unix_nano = s.start_unix_nano + 1000;
  s.attributes = {{"payload", std::string(attribute_bytes, 'a')},
                  {"list", ArrayValue{AttributeValue(std::int64_t{1}), AttributeValue(std::string("x"))}}};
  s.source = SpanSource::kApp;
  s.resource = resource;
  s.scope = scope;
  return s;
}

otlp::ExportTraceServiceRequest Request(int n, int first = 0, std::size_t attribute_bytes = 10) {
  std::vector<Span> spans;
  for (int i = 0; i < n; ++i) spans.push_back(AppSpan(first + i, attribute_bytes));
  return ToExportRequest(spans);
}

class OtlpReceiverTest : public ::testing::Test {
 protected:
  void StartReceiver(OtlpReceiverOptions options = {}) {
    options.grpc_address = "127.0.0.1:0";
    options.http_address = "127.0.0.1:0";
    auto r = OtlpReceiver::Start(options, sink_.Sink(), metrics_);
    ASSERT_TRUE(r.ok()) << r.status();
    receiver_ = *std::move(r);
    ASSERT_GT(receiver_->grpc_port(), 0);
    ASSERT_GT(receiver_->http_port(), 0);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(receiver_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = TraceService::NewStub(channel_);
  }

  grpc::Status GrpcExport(const otlp::ExportTraceServiceRequest& request, otlp::ExportTraceServiceResponse* response,
                          bool gzip = false) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (gzip) context.set_compression_algorithm(GRPC_COMPRESS_GZIP);
    return stub_->Export(&context, request, response);
  }

  // Any bytes as the Export request.
  grpc::Status GrpcRaw(const std::string& bytes) {
    grpc::GenericStub stub(channel_);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1);
    return testing::RawExport(stub, context, request);
  }

  httplib::Client Http() {
    httplib::Client c("127.0.0.1", receiver_->http_port());
    c.set_decompress(false);  // see the bytes as sent
    c.set_read_timeout(10, 0);
    return c;
  }

  std::uint64_t Requests(std::string_view transport, std::string_view outcome) {
    return metrics_.CounterValue("kspan_receiver_requests_total",
                                 {{"transport", std::string(transport)}, {"outcome", std::string(outcome)}});
  }

  MetricsRegistry metrics_;
  RecordingSink sink_;
  std::unique_ptr<OtlpReceiver> receiver_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<TraceService::Stub> stub_;
};

google::rpc::Status ParseStatus(const std::string& body, bool json) {
  google::rpc::Status status;
  const bool ok = json ? FromOtlpJson(body, status).ok() : status.ParseFromString(body);
  EXPECT_TRUE(ok) << "not a google.rpc.Status: " << body;
  return status;
}

// --- OTLP/gRPC ------------------------------------------------------------

TEST_F(OtlpReceiverTest, GrpcSuccessHandsAppSpansToTheSink) {
  StartReceiver();
  otlp::ExportTraceServiceResponse response;
  const auto request = Request(3);
  ASSERT_TRUE(GrpcExport(request, &response).ok());
  EXPECT_FALSE(response.has_partial_success());
  ASSERT_EQ(sink_.count(), 3u);
  for (const auto& s : sink_.spans) EXPECT_EQ(s.source, SpanSource::kApp);
  EXPECT_EQ(ToExportRequest(sink_.spans).SerializeAsString(), request.SerializeAsString());
  ASSERT_EQ(sink_.peers.size(), 1u);
  EXPECT_EQ(sink_.peers[0].transport, ReceiverTransport::kGrpc);
  EXPECT_EQ(sink_.peers[0].address, "127.0.0.1");
  EXPECT_EQ(sink_.peers[0].family, AF_INET);
  EXPECT_NE(sink_.peers[0].port, 0);
  EXPECT_EQ(Requests("grpc", "success"), 1u);
  EXPECT_EQ(metrics_.CounterValue("kspan_receiver_spans_accepted_total", {{"transport", "grpc"}}), 3u);
  EXPECT_GT(metrics_.CounterValue("kspan_receiver_request_bytes_total", {{"transport", "grpc"}}), 0u);
}

TEST_F(OtlpReceiverTest, GrpcGzipRequestIsAccepted) {
  StartReceiver();
  otlp::ExportTraceServiceResponse response;
  ASSERT_TRUE(GrpcExport(Request(50, 0, 1000), &response, /*gzip=*/true).ok());
  EXPECT_EQ(sink_.count(), 50u);
}

TEST_F(OtlpReceiverTest, GrpcPartialSuccessCountsInvalidAndSinkRefusedSpans) {
  StartReceiver();
  sink_.answer = [](std::size_t) { return SinkResult{1, "one span too old", false}; };
  auto request = Request(4);
  request.mutable_resource_spans(0)->mutable_scope_spans(0)->mutable_spans(1)->set_span_id("bad");
  otlp::ExportTraceServiceResponse response;
  ASSERT_TRUE(GrpcExport(request, &response).ok());
  ASSERT_TRUE(response.has_partial_success());
  EXPECT_EQ(response.partial_success().rejected_spans(), 2);
  EXPECT_NE(response.partial_success().error_message().find("invalid span_id"), std::string::npos);
  EXPECT_NE(response.partial_success().error_message().find("one span too old"), std::string::npos);
  EXPECT_EQ(Requests("grpc", "partial_success"), 1u);
}

TEST_F(OtlpReceiverTest, GrpcMalformedPayloadIsInvalidArgument) {
  StartReceiver();
  const grpc::Status status = GrpcRaw("\x0a\xff\xff\xff\x0f garbage");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_EQ(metrics_.CounterValue("kspan_receiver_decode_errors_total", {{"transport", "grpc"}}), 1u);
  // The same channel still works.
  otlp::ExportTraceServiceResponse response;
  EXPECT_TRUE(GrpcExport(Request(1), &response).ok());
  EXPECT_EQ(sink_.count(), 1u);
}

TEST_F(OtlpReceiverTest, GrpcOverTheSizeLimitIsResourceExhaustedAlsoWhenCompressed) {
  OtlpReceiverOptions options;
  options.max_request_bytes = 64 * 1024;
  StartReceiver(options);
  otlp::ExportTraceServiceResponse response;
  EXPECT_EQ(GrpcExport(Request(1, 0, 100 * 1024), &response).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // 1 MiB of 'a' compresses to a few KiB: the decompressed size counts.
  EXPECT_EQ(GrpcExport(Request(1, 0, 1024 * 1024), &response, /*gzip=*/true).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(sink_.count(), 0u);
  EXPECT_TRUE(GrpcExport(Request(2), &response).ok());
}

TEST_F(OtlpReceiverTest, GrpcFullQueueIsUnavailableWithRetryInfo) {
  OtlpReceiverOptions options;
  options.retry_after = milliseconds(2500);
  StartReceiver(options);
  sink_.answer = [](std::size_t) { return SinkResult{0, "queue full", true}; };
  otlp::ExportTraceServiceResponse response;
  const grpc::Status status = GrpcExport(Request(5), &response);
  ASSERT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(status.error_details()));
  EXPECT_EQ(details.code(), grpc::StatusCode::UNAVAILABLE);
  ASSERT_EQ(details.details_size(), 1);
  google::rpc::RetryInfo retry;
  ASSERT_TRUE(details.details(0).UnpackTo(&retry));
  EXPECT_EQ(retry.retry_delay().seconds(), 2);
  EXPECT_EQ(retry.retry_delay().nanos(), 500'000'000);
  EXPECT_EQ(Requests("grpc", "unavailable"), 1u);
}

// --- OTLP/HTTP ------------------------------------------------------------

TEST_F(OtlpReceiverTest, HttpProtobufSuccess) {
  StartReceiver();
  auto client = Http();
  const auto request = Request(3);
  auto res = client.Post("/v1/traces", request.SerializeAsString(), "application/x-protobuf");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/x-protobuf");
  otlp::ExportTraceServiceResponse response;
  ASSERT_TRUE(response.ParseFromString(res->body));
  EXPECT_FALSE(response.has_partial_success());
  ASSERT_EQ(sink_.count(), 3u);
  EXPECT_EQ(ToExportRequest(sink_.spans).SerializeAsString(), request.SerializeAsString());
  EXPECT_EQ(sink_.peers[0].transport, ReceiverTransport::kHttp);
  EXPECT_EQ(sink_.peers[0].address, "127.0.0.1");
  EXPECT_EQ(sink_.peers[0].family, AF_INET);
  EXPECT_NE(sink_.peers[0].port, 0);
  EXPECT_EQ(Requests("http", "success"), 1u);
}

TEST_F(OtlpReceiverTest, HttpJsonSuccessAnswersJson) {
  StartReceiver();
  auto client = Http();
  const auto request = Request(2);
  auto res = client.Post("/v1/traces", ToOtlpJson(request), "application/json; charset=utf-8");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
  EXPECT_EQ(res->body, "{}");
  ASSERT_EQ(sink_.count(), 2u);
  EXPECT_EQ(ToExportRequest(sink_.spans).SerializeAsString(), request.SerializeAsString());
}

TEST_F(OtlpReceiverTest, HttpGzipRequestGetsAGzipAnswer) {
  StartReceiver();
  auto client = Http();
  for (const bool json : {false, true}) {
    auto request = Request(3);
    request.mutable_resource_spans(0)->mutable_scope_spans(0)->mutable_spans(0)->set_trace_id("");
    const std::string plain = json ? ToOtlpJson(request) : request.SerializeAsString();
    auto body = GzipCompress(plain);
    ASSERT_TRUE(body.ok());
    auto res = client.Post("/v1/traces", {{"Content-Encoding", "gzip"}}, *body,
                           json ? "application/json" : "application/x-protobuf");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(res->get_header_value("Content-Encoding"), "gzip");
    auto answer = GzipDecompress(res->body);
    ASSERT_TRUE(answer.ok());
    otlp::ExportTraceServiceResponse response;
    ASSERT_TRUE(json ? FromOtlpJson(*answer, response).ok() : response.ParseFromString(*answer));
    EXPECT_EQ(response.partial_success().rejected_spans(), 1) << "json=" << json;
  }
  EXPECT_EQ(sink_.count(), 4u);
}

TEST_F(OtlpReceiverTest, HttpMalformedPayloadIs400WithAStatus) {
  StartReceiver();
  auto client = Http();
  auto res = client.Post("/v1/traces", std::string("\x0a\xff\xff\xff\x0f"), "application/x-protobuf");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(ParseStatus(res->body, false).code(), grpc::StatusCode::INVALID_ARGUMENT);
  res = client.Post("/v1/traces", "{\"resourceSpans\": [", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
  EXPECT_FALSE(ParseStatus(res->body, true).message().empty());
  // Not gzip although it says so.
  res = client.Post("/v1/traces", {{"Content-Encoding", "gzip"}}, "not gzip at all", "application/x-protobuf");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(metrics_.CounterValue("kspan_receiver_decode_errors_total", {{"transport", "http"}}), 3u);
  EXPECT_EQ(sink_.count(), 0u);
}

TEST_F(OtlpReceiverTest, HttpOverTheSizeLimitIs413AndAGzipBombIsStopped) {
  OtlpReceiverOptions options;
  options.max_request_bytes = 1024 * 1024;
  StartReceiver(options);
  auto client = Http();
  auto res = client.Post("/v1/traces", Request(1, 0, 2 * 1024 * 1024).SerializeAsString(), "application/x-protobuf");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 413);
  EXPECT_EQ(ParseStatus(res->body, false).code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // 64 MiB of zeros in about 64 KiB of gzip: refused once 1 MiB is inflated.
  auto bomb = GzipCompress(std::string(64u << 20, '\0'));
  ASSERT_TRUE(bomb.ok());
  ASSERT_LT(bomb->size(), options.max_request_bytes);
  auto client2 = Http();
  res = client2.Post("/v1/traces", {{"Content-Encoding", "gzip"}}, *bomb, "application/x-protobuf");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 413);
  EXPECT_EQ(Requests("http", "too_large"), 2u);
  // Still serving.
  auto client3 = Http();
  res = client3.Post("/v1/traces", Request(1).SerializeAsString(), "application/x-protobuf");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST_F(OtlpReceiverTest, HttpWrongContentTypeMethodAndPath) {
  StartReceiver();
  auto client = Http();
  auto res = client.Post("/v1/traces", "hello", "text/plain");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 415);
  ParseStatus(res->body, false);
  auto client2 = Http();
  res = client2.Get("/v1/traces");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 405);
  EXPECT_EQ(res->get_header_value("Allow"), "POST");
  res = client2.Post("/v1/metrics", Request(1).SerializeAsString(), "application/x-protobuf");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  EXPECT_EQ(sink_.count(), 0u);
}

TEST_F(OtlpReceiverTest, HttpFullQueueIs503WithRetryAfter) {
  OtlpReceiverOptions options;
  options.retry_after = milliseconds(1500);
  StartReceiver(options);
  sink_.answer = [](std::size_t) { return SinkResult{0, "queue full", true}; };
  auto client = Http();
  auto res = client.Post("/v1/traces", ToOtlpJson(Request(2)), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->get_header_value("Retry-After"), "2");
  EXPECT_EQ(ParseStatus(res->body, true).code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Requests("http", "unavailable"), 1u);
}

TEST_F(OtlpReceiverTest, MalformedRequestsDoNotDisturbConcurrentGoodOnes) {
  StartReceiver();
  constexpr int kThreads = 4;
  constexpr int kRequests = 40;
  std::atomic<int> good_ok{0}, bad_refused{0}, unexpected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto client = Http();
      for (int i = 0; i < kRequests; ++i) {
        const bool bad = i % 5 == 2;
        if (t % 2 == 0) {  // gRPC
          otlp::ExportTraceServiceResponse response;
          const grpc::Status s = bad ? GrpcRaw("\xff\xff\xff") : GrpcExport(Request(10), &response);
          if (bad && s.error_code() == grpc::StatusCode::INVALID_ARGUMENT) ++bad_refused;
          else if (!bad && s.ok() && !response.has_partial_success()) ++good_ok;
          else ++unexpected;
        } else {  // HTTP
          auto res = client.Post("/v1/traces", bad ? std::string("{\"resourceSpans\":") : ToOtlpJson(Request(10)),
                                 "application/json");
          if (res && bad && res->status == 400) ++bad_refused;
          else if (res && !bad && res->status == 200 && res->body == "{}") ++good_ok;
          else ++unexpected;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_EQ(bad_refused.load(), kThreads * kRequests / 5);
  EXPECT_EQ(good_ok.load(), kThreads * kRequests * 4 / 5);
  EXPECT_EQ(sink_.count(), static_cast<std::size_t>(good_ok.load()) * 10);
}


// --- span limits and the decode budget ---------------------------------

// One span with two million empty attributes: 4 MB on the wire, which cost
// 246 MiB of memory when the request was parsed into protobuf messages
// first; eight at once, 605 MiB.
std::string EmptyAttributesRequest(std::size_t attributes) {
  auto field = [](std::uint32_t number, const std::string& bytes) {
    std::string out;
    for (std::uint64_t v : {std::uint64_t{number << 3 | 2}, std::uint64_t{bytes.size()}}) {
      while (v >= 0x80) {
        out.push_back(static_cast<char>((v & 0x7F) | 0x80));
        v >>= 7;
      }
      out.push_back(static_cast<char>(v));
    }
    return out + bytes;
  };
  std::string span = field(1, std::string(16, '\x11')) + field(2, std::string(8, '\x22')) + field(5, "attack");
  for (std::size_t i = 0; i < attributes; ++i) span.append("\x4a\x00", 2);
  return field(1, field(2, field(2, span)));
}

TEST_F(OtlpReceiverTest, SpanLimitsApplyWhileDecodingOnBothTransports) {
  OtlpReceiverOptions options;
  options.span_limits.span_attribute_count = 100;
  StartReceiver(options);
  const std::size_t n = 2'000'000;
  const std::string body = EmptyAttributesRequest(n);
  ASSERT_LT(body.size(), options.max_request_bytes);

  testing::ResetPeakMemory();
  const auto before = testing::ReadMemory();
  const grpc::Status status = GrpcRaw(body);
  ASSERT_TRUE(status.ok()) << status.error_message();
  auto res = Http().Post("/v1/traces", body, "application/x-protobuf");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  // Both requests, with gRPC's and httplib's own copies of the 4 MB: was
  // about 500 MiB.
  EXPECT_RSS_LT(testing::PeakGrowthSince(before), 64u << 20);

  ASSERT_EQ(sink_.count(), 2u);
  for (const Span& s : sink_.spans) {
    EXPECT_EQ(s.attributes.size(), 100u);
    EXPECT_EQ(s.dropped_attributes_count, n - 100);
  }
  for (const char* transport : {"grpc", "http"}) {
    EXPECT_EQ(metrics_.CounterValue("kspan_receiver_limited_total",
                                    {{"transport", transport}, {"item", "attribute"}}),
              n - 100)
        << transport;
    EXPECT_EQ(Requests(transport, "success"), 1u) << transport;
  }
}

TEST_F(OtlpReceiverTest, ARequestOverTheDecodeBudgetIsRefusedAsInvalid) {
  StartReceiver();
  // 400 attributes a span (within the limits), 2 bytes each on the wire
  // and about 90 in memory: over 16 times the request. Requests
  // concatenated are one request (repeated resource_spans).
  const std::string one = EmptyAttributesRequest(400);
  std::string request;
  for (int i = 0; i < 4000; ++i) request += one;
  ASSERT_LT(request.size(), 4u << 20);
  const grpc::Status status = GrpcRaw(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("request refused"), std::string::npos) << status.error_message();
  auto res = Http().Post("/v1/traces", request, "application/x-protobuf");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_NE(ParseStatus(res->body, false).message().find("request refused"), std::string::npos);
  EXPECT_EQ(sink_.count(), 0u);
  EXPECT_EQ(metrics_.CounterValue("kspan_receiver_decode_errors_total", {{"transport", "grpc"}}), 1u);
  EXPECT_EQ(metrics_.CounterValue("kspan_receiver_decode_errors_total", {{"transport", "http"}}), 1u);
}

TEST(OtlpReceiverAddressTest, Ipv6LoopbackAndBadAddresses) {
  MetricsRegistry metrics;
  RecordingSink sink;
  OtlpReceiverOptions options;
  options.grpc_address = "[::1]:0";
  options.http_address = "[::1]:0";
  auto receiver = OtlpReceiver::Start(options, sink.Sink(), metrics);
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  auto stub = TraceService::NewStub(grpc::CreateChannel(
      "[::1]:" + std::to_string((*receiver)->grpc_port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  otlp::ExportTraceServiceResponse response;
  ASSERT_TRUE(stub->Export(&context, Request(1), &response).ok());
  httplib::Client http("::1", (*receiver)->http_port());
  auto res = http.Post("/v1/traces", Request(1).SerializeAsString(), "application/x-protobuf");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  ASSERT_EQ(sink.peers.size(), 2u);
  for (const auto& peer : sink.peers) {
    EXPECT_EQ(peer.address, "::1");
    EXPECT_EQ(peer.family, AF_INET6);
    EXPECT_NE(peer.port, 0);
  }

  // A port already taken, and addresses that do not parse, are errors.
  OtlpReceiverOptions taken;
  taken.grpc_enabled = false;
  taken.http_address = "[::1]:" + std::to_string((*receiver)->http_port());
  EXPECT_FALSE(OtlpReceiver::Start(taken, sink.Sink(), metrics).ok());
  taken.grpc_enabled = true;
  taken.http_enabled = false;
  taken.grpc_address = "[::1]:" + std::to_string((*receiver)->grpc_port());
  EXPECT_FALSE(OtlpReceiver::Start(taken, sink.Sink(), metrics).ok());
  OtlpReceiverOptions bad;
  bad.grpc_address = "no-port";
  EXPECT_EQ(OtlpReceiver::Start(bad, sink.Sink(), metrics).status().code(), absl::StatusCode::kInvalidArgument);
}

// Spans sent as OTLP/JSON over HTTP leave through the real pipeline's
// OTLP/gRPC sender as they came: span, resource and scope equal.
TEST(OtlpReceiverPipelineTest, AppSpansReachTheBackendUnchanged) {
  testing::OtlpTestServer backend;
  MetricsRegistry metrics;
  ExportConfig config;
  config.batch = {.max_export_batch_size = 512, .schedule_delay = milliseconds(20), .max_queue_size = 1000};
  DestinationConfig d;
  d.name = "backend";
  d.type = DestinationType::kOtlpGrpc;
  d.otlp_grpc.endpoint = backend.endpoint();
  config.destinations.push_back(d);
  auto pipeline = ExportPipeline::Create(config, metrics);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  OtlpReceiverOptions options;
  options.grpc_enabled = false;
  options.http_address = "127.0.0.1:0";
  auto receiver = OtlpReceiver::Start(options, PipelineSink(**pipeline), metrics);
  ASSERT_TRUE(receiver.ok()) << receiver.status();

  auto request = Request(3);
  auto* span = request.mutable_resource_spans(0)->mutable_scope_spans(0)->mutable_spans(1);
  span->set_trace_state("congo=t61rcWkgMzE");
  span->set_flags(0x301);
  span->set_dropped_attributes_count(4);
  span->mutable_status()->set_code(opentelemetry::proto::trace::v1::Status::STATUS_CODE_OK);
  span->mutable_status()->set_message("kept although not an error");
  auto* kv = span->add_attributes();
  kv->set_key("headers");
  auto* list = kv->mutable_value()->mutable_kvlist_value();
  auto* entry = list->add_values();
  entry->set_key("accept");
  entry->mutable_value()->mutable_array_value()->add_values()->set_bytes_value(std::string("\x00\xff", 2));
  request.mutable_resource_spans(0)->mutable_scope_spans(0)->mutable_scope()->set_dropped_attributes_count(2);

  httplib::Client http("127.0.0.1", (*receiver)->http_port());
  auto res = http.Post("/v1/traces", ToOtlpJson(request), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  ASSERT_TRUE(backend.WaitForSpanCount(3, std::chrono::seconds(10)));
  (*receiver)->Shutdown();
  (*pipeline)->Shutdown(std::chrono::seconds(5));

  const auto received = backend.spans();
  ASSERT_EQ(received.size(), 3u);
  const auto& rs = request.resource_spans(0);
  for (int i = 0; i < 3; ++i) {
    using google::protobuf::util::MessageDifferencer;
    EXPECT_TRUE(MessageDifferencer::Equals(received[static_cast<std::size_t>(i)].span,
                                           rs.scope_spans(0).spans(i)))
        << received[static_cast<std::size_t>(i)].span.DebugString();
    EXPECT_TRUE(MessageDifferencer::Equals(received[static_cast<std::size_t>(i)].resource, rs.resource()));
    EXPECT_TRUE(MessageDifferencer::Equals(received[static_cast<std::size_t>(i)].scope, rs.scope_spans(0).scope()));
  }
  ASSERT_EQ(backend.requests().size(), 1u);
  EXPECT_EQ(backend.requests()[0].resource_spans(0).schema_url(), rs.schema_url());
}

// A tiny batcher queue that is cut only every 50 ms, flooded over both
// transports: some requests are refused as retryable, and every span of
// every request answered with success reaches the real OTLP backend.
TEST(OtlpReceiverOverloadTest, RefusesWhenFullAndLosesNothingAccepted) {
  testing::OtlpTestServer backend;
  MetricsRegistry metrics;
  ExportConfig config;
  config.batch = {.max_export_batch_size = 4096, .schedule_delay = milliseconds(50), .max_queue_size = 64};
  DestinationConfig d;
  d.name = "backend";
  d.type = DestinationType::kOtlpGrpc;
  d.otlp_grpc.endpoint = backend.endpoint();
  d.max_queued_batches = 100000;
  d.queue.max_bytes = 0;
  config.destinations.push_back(d);
  auto pipeline = ExportPipeline::Create(config, metrics);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();

  OtlpReceiverOptions options;
  options.grpc_address = "127.0.0.1:0";
  options.http_address = "127.0.0.1:0";
  auto receiver = OtlpReceiver::Start(options, PipelineSink(**pipeline), metrics);
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  const int grpc_port = (*receiver)->grpc_port();
  const int http_port = (*receiver)->http_port();

  std::atomic<int> accepted_spans{0}, refused{0}, unexpected{0};
  std::vector<std::thread> threads;
  const auto until = std::chrono::steady_clock::now() + milliseconds(1500);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_port), grpc::InsecureChannelCredentials());
      auto stub = TraceService::NewStub(channel);
      httplib::Client http("127.0.0.1", http_port);
      for (int i = 0; std::chrono::steady_clock::now() < until; ++i) {
        const auto request = Request(8, (t * 100000 + i * 8) % 60000);
        if (t % 2 == 0) {
          grpc::ClientContext context;
          otlp::ExportTraceServiceResponse response;
          const grpc::Status s = stub->Export(&context, request, &response);
          if (s.ok()) {
            accepted_spans += 8;
          } else if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
            google::rpc::Status details;
            google::rpc::RetryInfo retry;
            if (details.ParseFromString(s.error_details()) && details.details_size() == 1 &&
                details.details(0).UnpackTo(&retry)) {
              ++refused;
            } else {
              ++unexpected;
            }
          } else {
            ++unexpected;
          }
        } else {
          auto res = http.Post("/v1/traces", request.SerializeAsString(), "application/x-protobuf");
          if (res && res->status == 200) {
            accepted_spans += 8;
          } else if (res && res->status == 503 && res->has_header("Retry-After")) {
            ++refused;
          } else {
            ++unexpected;
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  (*receiver)->Shutdown();
  (*pipeline)->Shutdown(std::chrono::seconds(20));

  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_GT(refused.load(), 0) << "the queue never filled";
  EXPECT_GT(accepted_spans.load(), 0);
  EXPECT_EQ(backend.spans().size(), static_cast<std::size_t>(accepted_spans.load()));
  EXPECT_EQ(metrics.CounterTotal("kspan_exporter_spans_exported_total"),
            static_cast<std::uint64_t>(accepted_spans.load()));
  std::printf("overload: %d spans accepted and delivered, %d requests refused as retryable\n",
              accepted_spans.load(), refused.load());
}

}  // namespace
}  // namespace kspan
