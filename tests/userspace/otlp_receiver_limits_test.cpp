// The receiver under attack, with the real in-process servers: what a
// client can make kspan hold (memory, threads, time) is bounded, every
// refusal is an answer OTLP defines and is counted, and other clients are
// served meanwhile. Each attack's bytes are generated as they are sent, so
// the test itself holds little and the process's peak RSS (VmHWM, reset
// through /proc/self/clear_refs) measures what the receiver kept.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "exporter/otlp_transform.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "httplib.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.grpc.pb.h"
#include "userspace/grpc_byte_buffer_peer.h"
#include "tests/support/grpc_raw_export.h"
#include "tests/support/process_memory.h"
#include "tests/support/raw_client.h"
#include "userspace/otlp_receiver.h"
#include "userspace/protobuf_log.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"

namespace kspan {
namespace {

using testing::ChunkedFlood;
using testing::PeakRss;
using testing::RawClient;
using testing::WaitFor;
using opentelemetry::proto::collector::trace::v1::TraceService;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr std::size_t kMiB = 1024 * 1024;

// A gzip stream of `n` zero bytes, made in pieces (about n/1000 bytes).
std::string MakeGzipBomb(std::size_t n) {
  z_stream z{};
  deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY);
  const std::string zeros(kMiB, '\0');
  std::string out;
  char buf[64 * 1024];
  for (std::size_t done = 0; done < n; done += zeros.size()) {
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(zeros.data()));
    z.avail_in = static_cast<uInt>(zeros.size());
    const int flush = done + zeros.size() >= n ? Z_FINISH : Z_NO_FLUSH;
    do {
      z.next_out = reinterpret_cast<Bytef*>(buf);
      z.avail_out = sizeof(buf);
      deflate(&z, flush);
      out.append(buf, sizeof(buf) - z.avail_out);
    } while (z.avail_out == 0);
  }
  deflateEnd(&z);
  return out;
}

// 256 MiB of zeros in about 250 KiB, made once.
const std::string& GzipBomb() {
  static const std::string bomb = MakeGzipBomb(256 * kMiB);
  return bomb;
}

Span AppSpan(int i) {
  static const auto resource =
      std::make_shared<const Resource>(Resource{{{"service.name", std::string("checkout")}}, 0, ""});
  Span s;
  s.trace_id.fill(0x11);
  s.trace_id[15] = static_cast<std::uint8_t>(i + 1);
  s.span_id.fill(0x22);
  s.span_id[7] = static_cast<std::uint8_t>(i + 1);
  s.name = "GET /item";
  s.start_unix_nano = 1'700'000'000'000'000'000ULL;
  s.end_unix_nano = s.start_unix_nano + 1000;
  s.source = SpanSource::kApp;
  s.resource = resource;
  return s;
}

otlp::ExportTraceServiceRequest OneSpanRequest(int i) {
  const std::vector<Span> spans = {AppSpan(i)};
  return ToExportRequest(spans);
}

std::string GoodRequest() { return OneSpanRequest(1).SerializeAsString(); }

class OtlpReceiverLimitsTest : public ::testing::Test {
 protected:
  void StartReceiver(OtlpReceiverOptions options = {}) {
    options.grpc_address = "127.0.0.1:0";
    options.http_address = "127.0.0.1:0";
    auto r = OtlpReceiver::Start(
        options, [this](std::vector<Span>&& spans, const ReceiverPeer&) {
          accepted_ += static_cast<int>(spans.size());
          return SinkResult{};
        },
        metrics_);
    ASSERT_TRUE(r.ok()) << r.status();
    receiver_ = *std::move(r);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(receiver_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
  }

  // A normal OTLP/HTTP request on a fresh connection: its status, or -1.
  int HttpPost(std::string body = GoodRequest()) {
    httplib::Client c("127.0.0.1", receiver_->http_port());
    c.set_read_timeout(10, 0);
    auto res = c.Post("/v1/traces", body, "application/x-protobuf");
    return res ? res->status : -1;
  }

  grpc::Status GrpcExport() {
    auto stub = TraceService::NewStub(channel_);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    otlp::ExportTraceServiceResponse response;
    return stub->Export(&context, OneSpanRequest(2), &response);
  }

  // Any bytes as a unary Export call; `compression` marks them as already
  // compressed with that algorithm (gRPC sends them as they are).
  grpc::Status GrpcRaw(const std::string& bytes, grpc_compression_algorithm compression = GRPC_COMPRESS_NONE) {
    grpc::GenericStub stub(channel_);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request;
    if (compression != GRPC_COMPRESS_NONE) {
      context.set_compression_algorithm(compression);  // grpc-encoding
      grpc_slice raw = grpc_slice_from_copied_buffer(bytes.data(), bytes.size());
      grpc::internal::GrpcByteBufferPeer(&request).set_buffer(grpc_raw_compressed_byte_buffer_create(&raw, 1, compression));
      grpc_slice_unref(raw);
    } else {
      request = grpc::ByteBuffer(&slice, 1);
    }
    return testing::RawExport(stub, context, request);
  }

  std::uint64_t Requests(std::string_view transport, std::string_view outcome) {
    return metrics_.CounterValue("kspan_receiver_requests_total",
                                 {{"transport", std::string(transport)}, {"outcome", std::string(outcome)}});
  }
  std::uint64_t Refused(std::string_view transport, std::string_view reason) {
    return metrics_.CounterValue("kspan_receiver_refused_total",
                                 {{"transport", std::string(transport)}, {"reason", std::string(reason)}});
  }
  double InFlightBytes() {
    std::istringstream in(metrics_.RenderPrometheus());
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("kspan_receiver_in_flight_bytes ", 0) == 0) return std::stod(line.substr(31));
    }
    return -1;
  }

  MetricsRegistry metrics_;
  std::ostringstream log_;
  std::atomic<int> accepted_{0};
  std::unique_ptr<OtlpReceiver> receiver_;
  std::shared_ptr<grpc::Channel> channel_;
};

// --- OTLP/HTTP ------------------------------------------------------------

// Before: httplib read a chunked body to an unknown path whole before its
// 404 (1 GiB to /v1/logs: RSS +2 GiB). Now the 404 comes after the head and
// the body is never stored; the same goes for /v1/traces past the limit.
TEST_F(OtlpReceiverLimitsTest, HttpChunkedFloodIsNotStored) {
  OtlpReceiverOptions options;
  options.max_request_bytes = 1 * kMiB;
  StartReceiver(options);
  constexpr std::size_t kFlood = 256 * kMiB;
  for (const std::string path : {"/v1/logs", "/v1/traces"}) {
    PeakRss rss;
    RawClient c(receiver_->http_port());
    ASSERT_TRUE(c.connected());
    c.StartReading();
    ChunkedFlood(c,
                 "POST " + path +
                     " HTTP/1.1\r\nHost: kspan\r\nContent-Type: application/x-protobuf\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n",
                 kFlood);
    const std::string answer = c.WaitClosed(milliseconds(10000));
    EXPECT_EQ(answer.rfind(path == "/v1/logs" ? "HTTP/1.1 404" : "HTTP/1.1 413", 0), 0u) << path << ": " << answer;
    // The server stopped reading (after a bounded lingering drain).
    EXPECT_LT(c.sent(), 64 * kMiB) << path;
    EXPECT_RSS_LT(rss.growth_mib(), 24) << path << " (peak RSS growth, MiB; reset: " << rss.reset() << ")";
    std::printf("chunked flood to %s: %zu MiB sent before the server closed, peak RSS +%lld MiB\n", path.c_str(),
                c.sent() / kMiB, static_cast<long long>(rss.growth_mib()));
  }
  EXPECT_EQ(Requests("http", "too_large"), 1u);
  EXPECT_EQ(HttpPost(), 200);
}

// A declared Content-Length over the limit is answered before any of it is
// read, and nothing of it is counted as received.
TEST_F(OtlpReceiverLimitsTest, HttpDeclaredLengthOverTheLimitIsRefusedUnread) {
  OtlpReceiverOptions options;
  options.max_request_bytes = 1 * kMiB;
  StartReceiver(options);
  RawClient c(receiver_->http_port());
  c.StartReading();
  ASSERT_TRUE(c.Send("POST /v1/traces HTTP/1.1\r\nHost: kspan\r\nContent-Type: application/x-protobuf\r\n"
                     "Content-Length: 1073741824\r\n\r\n"));
  const std::string answer = c.WaitClosed(milliseconds(10000));
  EXPECT_EQ(answer.rfind("HTTP/1.1 413", 0), 0u) << answer;
  EXPECT_EQ(Requests("http", "too_large"), 1u);
  EXPECT_EQ(metrics_.CounterValue("kspan_receiver_request_bytes_total", {{"transport", "http"}}), 0u);
}

// Before: a declared Content-Length was added to request_bytes_total
// whatever arrived. Now only bytes read count.
TEST_F(OtlpReceiverLimitsTest, HttpContentLengthLieIsNotCounted) {
  StartReceiver();
  RawClient c(receiver_->http_port());
  c.StartReading();
  ASSERT_TRUE(c.Send("POST /v1/traces HTTP/1.1\r\nHost: kspan\r\nContent-Type: application/x-protobuf\r\n"
                     "Content-Length: 1000000\r\n\r\n0123456789"));
  c.CloseWrite();
  const std::string answer = c.WaitClosed(milliseconds(10000));
  EXPECT_EQ(answer.rfind("HTTP/1.1 400", 0), 0u) << answer;
  EXPECT_EQ(metrics_.CounterValue("kspan_receiver_request_bytes_total", {{"transport", "http"}}), 10u);
  EXPECT_EQ(Requests("http", "invalid"), 1u);
  // What the request had taken of the memory budget is back.
  EXPECT_TRUE(WaitFor([&] { return InFlightBytes() == 0; }, milliseconds(5000))) << InFlightBytes();
}

// Before: 500 MiB of header lines cost the admin server 527 MiB (httplib
// keeps every header line, and one line without a newline grows without
// bound). Now the head is bounded in bytes, so in count too: 431, closed.
TEST_F(OtlpReceiverLimitsTest, HttpHeaderFloodIsRefused) {
  StartReceiver();
  constexpr std::size_t kFlood = 256 * kMiB;
  const std::string line = "X-Flood: " + std::string(1000, 'a') + "\r\n";
  const std::string endless(64 * 1024, 'a');
  for (const bool newlines : {true, false}) {
    PeakRss rss;
    RawClient c(receiver_->http_port());
    c.StartReading();
    ASSERT_TRUE(c.Send(newlines ? "POST /v1/traces HTTP/1.1\r\n" : "POST /v1/traces HTTP/1.1\r\nX-Flood: "));
    while (c.sent() < kFlood && c.Send(newlines ? line : endless)) {
    }
    const std::string answer = c.WaitClosed(milliseconds(10000));
    EXPECT_EQ(answer.rfind("HTTP/1.1 431", 0), 0u) << answer.substr(0, 200);
    EXPECT_LT(c.sent(), 64 * kMiB);
    EXPECT_RSS_LT(rss.growth_mib(), 24) << "peak RSS growth, MiB";
    std::printf("header flood (%s): %zu MiB sent, peak RSS +%lld MiB\n", newlines ? "lines" : "one line",
                c.sent() / kMiB, static_cast<long long>(rss.growth_mib()));
  }
  EXPECT_EQ(Refused("http", "header_too_large"), 2u);
  EXPECT_EQ(HttpPost(), 200);
}

// Before: 16 connections trickling a byte every 10 s took every HTTP thread
// (a normal POST waited and failed) and held shutdown for a minute. Now a
// request must arrive whole within request_timeout, trickling clients hold
// no thread, and Shutdown() waits for none of them.
TEST_F(OtlpReceiverLimitsTest, SlowClientsNeitherStarveOthersNorHoldShutdown) {
  OtlpReceiverOptions options;
  options.request_timeout = milliseconds(1500);
  options.http_threads = 2;
  StartReceiver(options);
  const std::string head = "POST /v1/traces HTTP/1.1\r\nHost: kspan\r\nContent-Type: application/x-protobuf\r\n";
  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<RawClient>> slow;
  const auto trickle = [&](std::string text) {
    return std::thread([&, text] {
      for (std::size_t i = 0; !stop; ++i) {
        for (auto& c : slow) c->Send(std::string_view(&text[i % text.size()], 1));
        std::this_thread::sleep_for(milliseconds(100));
      }
    });
  };
  for (int i = 0; i < 32; ++i) slow.push_back(std::make_unique<RawClient>(receiver_->http_port()));
  std::thread trickler = trickle(head);

  // Others are served at once meanwhile, on both transports.
  std::this_thread::sleep_for(milliseconds(300));
  for (int i = 0; i < 5; ++i) {
    const auto t0 = steady_clock::now();
    EXPECT_EQ(HttpPost(), 200);
    EXPECT_LT(steady_clock::now() - t0, milliseconds(1000));
  }
  EXPECT_TRUE(GrpcExport().ok());
  // Each trickling head is cut off at its deadline, whatever it still sends.
  EXPECT_TRUE(WaitFor([&] { return Refused("http", "slow_client") >= 32; }, milliseconds(10000)))
      << Refused("http", "slow_client");
  stop = true;
  trickler.join();
  slow.clear();

  // Trickling bodies now, and shutdown in the middle of them.
  stop = false;
  for (int i = 0; i < 32; ++i) {
    slow.push_back(std::make_unique<RawClient>(receiver_->http_port()));
    slow.back()->Send(head + "Content-Length: 100000\r\n\r\n");
  }
  std::thread body_trickler = trickle("x");
  std::this_thread::sleep_for(milliseconds(500));
  const auto t0 = steady_clock::now();
  receiver_->Shutdown();
  const auto took = steady_clock::now() - t0;
  EXPECT_LT(took, milliseconds(2000)) << std::chrono::duration_cast<milliseconds>(took).count() << " ms";
  stop = true;
  body_trickler.join();
}

// Connections beyond http_max_connections are answered 503 + Retry-After
// at once and counted; a freed slot is taken again.
TEST_F(OtlpReceiverLimitsTest, ConnectionsBeyondTheCapAreRefusedRetryable) {
  OtlpReceiverOptions options;
  options.http_max_connections = 4;
  StartReceiver(options);
  std::vector<std::unique_ptr<RawClient>> idle;
  for (int i = 0; i < 4; ++i) idle.push_back(std::make_unique<RawClient>(receiver_->http_port()));
  RawClient extra(receiver_->http_port());
  extra.StartReading();
  const std::string answer = extra.WaitClosed(milliseconds(10000));
  EXPECT_EQ(answer.rfind("HTTP/1.1 503", 0), 0u) << answer;
  EXPECT_NE(answer.find("Retry-After: 1"), std::string::npos) << answer;
  EXPECT_EQ(Refused("http", "connections"), 1u);
  idle.pop_back();
  EXPECT_TRUE(WaitFor([&] { return HttpPost() == 200; }, milliseconds(5000)));
}

// The memory budget is shared by both transports: requests beyond it are
// refused as retryable (503 + Retry-After, UNAVAILABLE + RetryInfo) and
// counted, and the budget comes back when the requests holding it end.
TEST_F(OtlpReceiverLimitsTest, RequestsBeyondTheMemoryBudgetAreRefusedRetryable) {
  OtlpReceiverOptions options;
  options.max_request_bytes = 1 * kMiB;
  options.max_in_flight_bytes = 2 * kMiB;
  options.retry_after = milliseconds(2000);
  StartReceiver(options);
  // Two requests that declare 1 MiB and send it slowly hold the budget.
  std::vector<std::unique_ptr<RawClient>> holders;
  for (int i = 0; i < 2; ++i) {
    holders.push_back(std::make_unique<RawClient>(receiver_->http_port()));
    ASSERT_TRUE(holders.back()->Send(
        "POST /v1/traces HTTP/1.1\r\nHost: kspan\r\nContent-Type: application/x-protobuf\r\n"
        "Content-Length: 1048576\r\n\r\nx"));
  }
  ASSERT_TRUE(WaitFor([&] { return InFlightBytes() == 2.0 * kMiB; }, milliseconds(5000))) << InFlightBytes();

  httplib::Client http("127.0.0.1", receiver_->http_port());
  auto res = http.Post("/v1/traces", GoodRequest(), "application/x-protobuf");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->get_header_value("Retry-After"), "2");
  google::rpc::Status http_status;
  ASSERT_TRUE(http_status.ParseFromString(res->body));
  EXPECT_EQ(http_status.code(), grpc::StatusCode::UNAVAILABLE);

  const grpc::Status s = GrpcExport();
  ASSERT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(s.error_details()));
  ASSERT_EQ(details.details_size(), 1);
  google::rpc::RetryInfo retry;
  ASSERT_TRUE(details.details(0).UnpackTo(&retry));
  EXPECT_EQ(retry.retry_delay().seconds(), 2);

  EXPECT_EQ(Refused("http", "memory"), 1u);
  EXPECT_EQ(Refused("grpc", "memory"), 1u);
  EXPECT_EQ(Requests("http", "unavailable"), 1u);
  EXPECT_EQ(Requests("grpc", "unavailable"), 1u);
  EXPECT_EQ(accepted_.load(), 0);

  holders.clear();
  ASSERT_TRUE(WaitFor([&] { return InFlightBytes() == 0; }, milliseconds(5000))) << InFlightBytes();
  EXPECT_EQ(HttpPost(), 200);
  EXPECT_TRUE(GrpcExport().ok());
}

// OTLP/HTTP gzip bombs (with a length and chunked) stop at the limit.
TEST_F(OtlpReceiverLimitsTest, HttpGzipBombStopsAtTheLimit) {
  StartReceiver();
  const std::string& bomb = GzipBomb();
  ASSERT_LT(bomb.size(), 1 * kMiB);
  for (const bool chunked : {false, true}) {
    PeakRss rss;
    RawClient c(receiver_->http_port());
    c.StartReading();
    const std::string head = "POST /v1/traces HTTP/1.1\r\nHost: kspan\r\nContent-Type: application/x-protobuf\r\n"
                             "Content-Encoding: gzip\r\n";
    if (chunked) {
      char size_line[32];
      std::snprintf(size_line, sizeof(size_line), "%zx\r\n", bomb.size());
      c.Send(head + "Transfer-Encoding: chunked\r\n\r\n" + size_line + bomb + "\r\n0\r\n\r\n");
    } else {
      c.Send(head + "Content-Length: " + std::to_string(bomb.size()) + "\r\n\r\n" + bomb);
    }
    const std::string answer = c.WaitClosed(milliseconds(10000));
    EXPECT_EQ(answer.rfind("HTTP/1.1 413", 0), 0u) << answer.substr(0, 200);
    EXPECT_RSS_LT(rss.growth_mib(), 24) << "peak RSS growth, MiB";
    std::printf("HTTP gzip bomb (256 MiB in %zu KiB, %s): peak RSS +%lld MiB\n", bomb.size() / 1024,
                chunked ? "chunked" : "with a length", static_cast<long long>(rss.growth_mib()));
  }
  EXPECT_EQ(Requests("http", "too_large"), 2u);
  EXPECT_EQ(HttpPost(), 200);
}

// --- OTLP/gRPC ------------------------------------------------------------

// Before: gRPC 1.51 inflated a compressed message whole before its size
// check (1 MB inflating to 1 GiB: RSS 62 -> 1392 MiB; N at once: N GiB).
// Now kspan inflates it within max_request_bytes and the budget, answers
// RESOURCE_EXHAUSTED, and counts it.
TEST_F(OtlpReceiverLimitsTest, GrpcGzipBombStopsAtTheLimitAlsoInParallel) {
  StartReceiver();
  const std::string& bomb = GzipBomb();
  ASSERT_TRUE(GrpcExport().ok());  // channel and server warmed up before measuring
  PeakRss rss;
  const grpc::Status s = GrpcRaw(bomb, GRPC_COMPRESS_GZIP);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  std::vector<std::thread> threads;
  std::atomic<int> exhausted{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      if (GrpcRaw(bomb, GRPC_COMPRESS_GZIP).error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) ++exhausted;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(exhausted.load(), 4);
  EXPECT_RSS_LT(rss.growth_mib(), 48) << "peak RSS growth, MiB";
  std::printf("gRPC gzip bomb (256 MiB in %zu KiB), 1 then 4 at once: peak RSS +%lld MiB\n", bomb.size() / 1024,
              static_cast<long long>(rss.growth_mib()));
  EXPECT_EQ(Requests("grpc", "too_large"), 5u);
  // A compressed request within the limit is still taken, and not-gzip
  // marked as gzip is INVALID_ARGUMENT.
  std::string small;
  {
    z_stream z{};
    deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    const std::string plain = GoodRequest();
    small.resize(deflateBound(&z, plain.size()));
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(plain.data()));
    z.avail_in = static_cast<uInt>(plain.size());
    z.next_out = reinterpret_cast<Bytef*>(small.data());
    z.avail_out = static_cast<uInt>(small.size());
    deflate(&z, Z_FINISH);
    small.resize(z.total_out);
    deflateEnd(&z);
  }
  EXPECT_TRUE(GrpcRaw(small, GRPC_COMPRESS_GZIP).ok());
  EXPECT_EQ(GrpcRaw("not gzip", GRPC_COMPRESS_GZIP).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(GrpcExport().ok());
}

// gRPC 1.51 checks a message's size only once all of it has arrived (with no
// quota, 256 MiB to a 4 MiB limit: RSS +251 MiB, then RESOURCE_EXHAUSTED).
// The receiver's resource quota bounds what it buffers before that: with a
// 16 MiB quota the same message is refused with the process about 16 MiB
// larger at its peak.
TEST_F(OtlpReceiverLimitsTest, GrpcOversizeMessageIsBoundedByTheResourceQuota) {
  OtlpReceiverOptions options;
  options.grpc_memory_bytes = 16 * kMiB;
  StartReceiver(options);
  ASSERT_TRUE(GrpcExport().ok());
  // 256 MiB sent from one 1 MiB buffer: the test holds 1 MiB.
  const std::string piece(kMiB, 'a');
  std::vector<grpc::Slice> slices;
  for (int i = 0; i < 256; ++i) slices.emplace_back(piece.data(), piece.size(), grpc::Slice::STATIC_SLICE);
  grpc::ByteBuffer request(slices.data(), slices.size());
  PeakRss rss;
  grpc::GenericStub stub(channel_);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  const grpc::Status status = testing::RawExport(stub, context, request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_RSS_LT(rss.growth_mib(), 40) << "peak RSS growth, MiB";
  std::printf("gRPC 256 MiB message, 16 MiB quota: peak RSS +%lld MiB (%s)\n",
              static_cast<long long>(rss.growth_mib()), status.error_message().c_str());
  EXPECT_TRUE(GrpcExport().ok());
}

// Before: libprotobuf wrote one ERROR line to stderr for every request with
// invalid UTF-8 in a string, at whatever rate a client sent them. Now its
// lines go to spdlog, at most one per interval, the rest counted.
TEST_F(OtlpReceiverLimitsTest, InvalidUtf8RequestsDoNotFloodTheLog) {
  StartReceiver();
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log_);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  // What libprotobuf would write by itself goes to fd 2.
  std::fflush(stderr);
  char path[] = "/tmp/kspan-stderr-XXXXXX";
  const int capture = mkstemp(path);
  const int saved = dup(2);
  dup2(capture, 2);

  std::string bytes = OneSpanRequest(3).SerializeAsString();
  const auto at = bytes.find("GET /item");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 4, "\xff\xfe\xfd\xfc");
  int refused = 0;
  for (int i = 0; i < 50; ++i) refused += HttpPost(bytes) == 400 ? 1 : 0;
  refused += GrpcRaw(bytes).error_code() == grpc::StatusCode::INVALID_ARGUMENT ? 1 : 0;

  std::fflush(stderr);
  dup2(saved, 2);
  close(saved);
  std::ifstream in(path);
  const std::string written((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  close(capture);
  unlink(path);
  spdlog::set_default_logger(previous);

  EXPECT_EQ(refused, 51);
  EXPECT_EQ(written.find("UTF-8"), std::string::npos) << written.substr(0, 300);
  std::size_t lines = 0;
  for (std::size_t p = log_.str().find("UTF-8"); p != std::string::npos; p = log_.str().find("UTF-8", p + 1)) ++lines;
  EXPECT_LE(lines, 1u) << log_.str();

}

// The receiver's own decoder checks UTF-8 without logging; whatever
// libprotobuf itself still logs (a parse elsewhere, the disk queue's rows)
// goes through the same rate limit: 50 invalid-UTF-8 parses, one line.
TEST(ProtobufLogTest, LibprotobufLinesGoToTheLogAtMostOncePerInterval) {
  RouteProtobufLogsToSpdlog();
  std::ostringstream log;
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(
      std::make_shared<spdlog::logger>("capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(log)));
  std::string bytes = OneSpanRequest(3).SerializeAsString();
  const auto at = bytes.find("GET /item");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 4, "\xff\xfe\xfd\xfc");
  const std::uint64_t suppressed_before = ProtobufLogLinesSuppressed();
  int refused = 0;
  for (int i = 0; i < 50; ++i) {
    otlp::ExportTraceServiceRequest request;
    refused += request.ParseFromString(bytes) ? 0 : 1;
  }
  spdlog::set_default_logger(previous);
  EXPECT_EQ(refused, 50);
  std::size_t lines = 0;
  for (std::size_t p = log.str().find("UTF-8"); p != std::string::npos; p = log.str().find("UTF-8", p + 1)) ++lines;
  EXPECT_LE(lines, 1u) << log.str();
  EXPECT_GE(ProtobufLogLinesSuppressed() - suppressed_before + lines, 50u);
}

}  // namespace
}  // namespace kspan
