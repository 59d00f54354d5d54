// OTLP/HTTP and Zipkin senders against a real in-process HTTP server that
// misbehaves on request: every retryable and non-retryable status,
// Retry-After (seconds and HTTP-date, the wait measured), partial success,
// compression, JSON, a slow backend, a connection dropped mid-request.
#include "exporter/otlp_http_sender.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "exporter/compression.h"
#include "exporter/destination_queue.h"
#include "exporter/export_metrics.h"
#include "exporter/retry.h"
#include "exporter/zipkin_sender.h"
#include "nlohmann/json.hpp"
#include "tests/exporter/test_spans.h"
#include "tests/support/otlp_http_test_server.h"

namespace kspan {
namespace {

using std::chrono::milliseconds;
using testing::HttpScriptedResponse;
using testing::MakeSpan;
using testing::OtlpHttpTestServer;

SpanBatch Batch(int n) {
  SpanBatch b;
  for (int i = 0; i < n; ++i) b.spans.push_back(MakeSpan(i + 1));
  return b;
}

std::unique_ptr<OtlpHttpSender> Sender(const std::string& url, const std::string& protocol,
                                       const std::string& compression = "none",
                                       milliseconds timeout = milliseconds(5000)) {
  OtlpGrpcOptions o;
  o.endpoint = url;
  o.protocol = protocol;
  o.compression = compression;
  o.timeout = timeout;
  auto s = OtlpHttpSender::Create(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return *std::move(s);
}

auto Far() { return std::chrono::steady_clock::now() + std::chrono::seconds(10); }

TEST(OtlpHttpSenderTest, PostsProtobufToV1Traces) {
  OtlpHttpTestServer server;
  auto sender = Sender(server.base_url(), "http/protobuf");
  const auto r = sender->Send(Batch(3), Far());
  EXPECT_EQ(r.outcome, ExportResult::Outcome::kSuccess) << r.code << r.message;
  const auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].path, "/v1/traces");
  EXPECT_EQ(reqs[0].content_type, "application/x-protobuf");
  ASSERT_TRUE(reqs[0].otlp.has_value());
  EXPECT_EQ(server.spans().size(), 3u);
}

TEST(OtlpHttpSenderTest, PostsJsonWithHexIdsAndStringInt64) {
  OtlpHttpTestServer server;
  auto sender = Sender(server.base_url(), "http/json");
  ASSERT_EQ(sender->Send(Batch(1), Far()).outcome, ExportResult::Outcome::kSuccess);
  const auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].content_type, "application/json");
  const auto j = nlohmann::json::parse(reqs[0].body);
  const auto& span = j["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
  EXPECT_EQ(span["traceId"], ToHex(testing::MakeTraceId(1)));
  EXPECT_TRUE(span["startTimeUnixNano"].is_string());
  EXPECT_TRUE(span["kind"].is_number_integer());
  ASSERT_EQ(server.spans().size(), 1u);
}

TEST(OtlpHttpSenderTest, GzipAndZstdBodies) {
  OtlpHttpTestServer server;
  for (const char* c : {"gzip", "zstd"}) {
    auto sender = Sender(server.base_url(), "http/protobuf", c);
    ASSERT_EQ(sender->Send(Batch(2), Far()).outcome, ExportResult::Outcome::kSuccess) << c;
  }
  const auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].content_encoding, "gzip");
  EXPECT_EQ(reqs[1].content_encoding, "zstd");
  EXPECT_TRUE(reqs[0].otlp.has_value());
  EXPECT_TRUE(reqs[1].otlp.has_value());
  EXPECT_EQ(server.spans().size(), 4u);
}

TEST(OtlpHttpSenderTest, RetryTableOfTheSpecification) {
  OtlpHttpTestServer server;
  auto sender = Sender(server.base_url(), "http/protobuf");
  for (int status : {429, 502, 503, 504}) {
    server.PushResponse({.status = status, .status_message = "busy"});
    const auto r = sender->Send(Batch(1), Far());
    EXPECT_EQ(r.outcome, ExportResult::Outcome::kRetryable) << status;
    EXPECT_EQ(r.code, "HTTP " + std::to_string(status));
    EXPECT_EQ(r.message, "busy");  // decoded from the google.rpc.Status body
  }
  for (int status : {400, 401, 403, 404, 405, 408, 413, 415, 500, 501, 505}) {
    server.PushResponse({.status = status});
    EXPECT_EQ(sender->Send(Batch(1), Far()).outcome, ExportResult::Outcome::kPermanent) << status;
  }
}

TEST(OtlpHttpSenderTest, PartialSuccessIsSuccessWithRejectedCount) {
  OtlpHttpTestServer server;
  for (const char* protocol : {"http/protobuf", "http/json"}) {
    auto sender = Sender(server.base_url(), protocol);
    server.PushResponse({.rejected_spans = 2, .error_message = "2 spans too old"});
    const auto r = sender->Send(Batch(5), Far());
    EXPECT_EQ(r.outcome, ExportResult::Outcome::kSuccess);
    EXPECT_EQ(r.rejected_spans, 2) << protocol;
    EXPECT_EQ(r.message, "2 spans too old");
  }
}

TEST(OtlpHttpSenderTest, ConnectionRefusedIsRetryable) {
  int port = 0;
  {
    OtlpHttpTestServer server;
    port = server.port();
  }
  auto sender = Sender("http://127.0.0.1:" + std::to_string(port), "http/protobuf");
  const auto r = sender->Send(Batch(1), Far());
  EXPECT_EQ(r.outcome, ExportResult::Outcome::kRetryable);
}

TEST(OtlpHttpSenderTest, SlowBackendTimesOutRetryable) {
  OtlpHttpTestServer server;
  server.SetDefaultDelay(milliseconds(1500));
  auto sender = Sender(server.base_url(), "http/protobuf", "none", milliseconds(200));
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = sender->Send(Batch(1), Far());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(1200));
  EXPECT_EQ(r.outcome, ExportResult::Outcome::kRetryable);
  EXPECT_EQ(r.code, "TIMEOUT");
}

// A raw TCP server that reads part of the request and closes the socket.
TEST(OtlpHttpSenderTest, ConnectionDroppedMidRequestIsRetryable) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  listen(fd, 4);
  std::thread t([fd] {
    const int c = accept(fd, nullptr, nullptr);
    char buf[64];
    (void)!read(c, buf, sizeof(buf));  // part of the request only
    close(c);
  });
  auto sender = Sender("http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)), "http/protobuf");
  const auto r = sender->Send(Batch(200), Far());
  t.join();
  close(fd);
  EXPECT_EQ(r.outcome, ExportResult::Outcome::kRetryable) << r.code;
}

TEST(RetryAfterTest, SecondsAndHttpDate) {
  const auto now = std::chrono::system_clock::from_time_t(1'700'000'000);
  EXPECT_EQ(ParseRetryAfter("3", now), milliseconds(3000));
  EXPECT_EQ(ParseRetryAfter(" 120 ", now), milliseconds(120000));
  // 1700000000 = Tue, 14 Nov 2023 22:13:20 GMT
  EXPECT_EQ(ParseRetryAfter("Tue, 14 Nov 2023 22:13:25 GMT", now), milliseconds(5000));
  EXPECT_EQ(ParseRetryAfter("Tuesday, 14-Nov-23 22:13:30 GMT", now), milliseconds(10000));
  EXPECT_EQ(ParseRetryAfter("Tue, 14 Nov 2023 22:00:00 GMT", now), milliseconds(0));
  EXPECT_FALSE(ParseRetryAfter("soon", now).has_value());
  EXPECT_FALSE(ParseRetryAfter("-1", now).has_value());
}

// Through the queue: the batch waits what Retry-After says, even beyond
// max_backoff, and is then delivered. The wait is measured.
class HttpRetryAfterTest : public ::testing::TestWithParam<bool> {};

TEST_P(HttpRetryAfterTest, BatchWaitsRetryAfterBeyondTheBackoffCap) {
  const bool as_date = GetParam();
  OtlpHttpTestServer server;
  std::string value = "2";
  if (as_date) {
    // An HTTP-date 2 s ahead (whole seconds: the wait is 1-2 s).
    const std::time_t t = std::time(nullptr) + 2;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[64];
    std::strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    value = buf;
  }
  server.PushResponse({.status = 429, .headers = {{"Retry-After", value}}});
  MetricsRegistry metrics;
  DestinationQueue::Options o;
  o.name = "http";
  o.retry = {.initial_backoff = milliseconds(10), .max_backoff = milliseconds(50),
             .multiplier = 2, .max_elapsed = milliseconds(60000)};
  DestinationQueue q(o, Sender(server.base_url(), "http/protobuf"), metrics);
  auto b = std::make_shared<SpanBatch>(Batch(2));
  ASSERT_TRUE(q.Enqueue(b));
  ASSERT_TRUE(server.WaitForSpanCount(2, milliseconds(5000)));
  const auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 2u);
  const auto waited = reqs[1].at - reqs[0].at;
  EXPECT_GE(waited, as_date ? milliseconds(900) : milliseconds(1950));
  EXPECT_LT(waited, milliseconds(3500));
  q.BeginShutdown(std::chrono::steady_clock::now() + milliseconds(1000));
  q.Join();
  EXPECT_EQ(metrics.CounterValue(metric::kSpansExported, {{"destination", "http"}}), 2u);
}

INSTANTIATE_TEST_SUITE_P(SecondsOrDate, HttpRetryAfterTest, ::testing::Bool());

TEST(ZipkinSenderTest, PostsZipkinV2Json) {
  OtlpHttpTestServer server;
  OtlpGrpcOptions o;
  o.endpoint = server.base_url();
  auto sender = ZipkinSender::Create(o);
  ASSERT_TRUE(sender.ok()) << sender.status();
  SpanBatch b = Batch(1);
  b.spans[0].parent_span_id = testing::MakeSpanId(9);
  b.spans[0].status_code = StatusCode::kError;
  b.spans[0].status_message = "ECONNREFUSED";
  b.spans[0].events.push_back({"retransmit", b.spans[0].start_unix_nano + 5000, {}});
  ASSERT_EQ((*sender)->Send(b, Far()).outcome, ExportResult::Outcome::kSuccess);
  const auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].path, "/api/v2/spans");
  EXPECT_EQ(reqs[0].content_type, "application/json");
  const auto j = nlohmann::json::parse(reqs[0].body);
  ASSERT_TRUE(j.is_array());
  const auto& z = j[0];
  const Span& s = b.spans[0];
  EXPECT_EQ(z["traceId"], ToHex(s.trace_id));
  EXPECT_EQ(z["traceId"].get<std::string>().size(), 32u);
  EXPECT_EQ(z["id"], ToHex(s.span_id));
  EXPECT_EQ(z["parentId"], ToHex(s.parent_span_id));
  EXPECT_EQ(z["kind"], "CLIENT");
  EXPECT_EQ(z["name"], s.name);
  EXPECT_EQ(z["timestamp"], s.start_unix_nano / 1000);
  EXPECT_EQ(z["duration"], 231u);
  EXPECT_EQ(z["localEndpoint"]["serviceName"], "curl");
  EXPECT_EQ(z["remoteEndpoint"]["ipv4"], "127.0.0.1");
  EXPECT_EQ(z["remoteEndpoint"]["port"], 8080);
  EXPECT_EQ(z["tags"]["network.peer.port"], "8080");  // tags are strings
  EXPECT_EQ(z["tags"]["error"], "ECONNREFUSED");
  EXPECT_EQ(z["annotations"][0]["value"], "retransmit");
  EXPECT_EQ(z["annotations"][0]["timestamp"], s.start_unix_nano / 1000 + 5);
}

TEST(ZipkinSenderTest, RetryTableAppliesToo) {
  OtlpHttpTestServer server;
  OtlpGrpcOptions o;
  o.endpoint = server.base_url();
  auto sender = ZipkinSender::Create(o);
  ASSERT_TRUE(sender.ok());
  server.PushResponse({.status = 503});
  EXPECT_EQ((*sender)->Send(Batch(1), Far()).outcome, ExportResult::Outcome::kRetryable);
  server.PushResponse({.status = 400});
  EXPECT_EQ((*sender)->Send(Batch(1), Far()).outcome, ExportResult::Outcome::kPermanent);
}

TEST(CompressionTest, RoundTrips) {
  const std::string data(10000, 'x');
  auto g = GzipCompress(data);
  ASSERT_TRUE(g.ok());
  EXPECT_LT(g->size(), data.size());
  EXPECT_EQ(*GzipDecompress(*g), data);
  auto z = ZstdCompress(data);
  ASSERT_TRUE(z.ok());
  EXPECT_EQ(*ZstdDecompress(*z), data);
}

// Found by the compression fuzzer: a zstd frame that inflates to exactly
// the decoder's 64 KiB output buffer (or a multiple) read as truncated.
TEST(CompressionTest, ZstdFramesOfExactlyTheBufferSizeRoundTrip) {
  for (std::size_t n : {65535u, 65536u, 65537u, 131072u, 0u}) {
    SCOPED_TRACE(n);
    const std::string data(n, '\0');
    auto z = ZstdCompress(data);
    ASSERT_TRUE(z.ok());
    auto back = ZstdDecompress(*z);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, data);
  }
  // The fuzzer's input: two frames, an RLE block of 65536 zeros and an
  // empty one.
  const std::string two_frames("\x28\xb5\x2f\xfd\x00\x40\x03\x00\x08\x00"
                               "\x28\xb5\x2f\xfd\x00\x40\x03\x00\x00\x00",
                               20);
  auto out = ZstdDecompress(two_frames);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, std::string(65536, '\0'));
  // Truncated and empty input are still refused.
  auto z = ZstdCompress(std::string(10000, 'x'));
  ASSERT_TRUE(z.ok());
  EXPECT_FALSE(ZstdDecompress(std::string_view(*z).substr(0, z->size() - 3)).ok());
  EXPECT_FALSE(ZstdDecompress("").ok());
}

}  // namespace
}  // namespace kspan
