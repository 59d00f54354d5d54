// The OTLP/gRPC sender and the destination policy against a real gRPC
// server (tests/support/otlp_test_server).
#include "exporter/otlp_grpc_sender.h"

#include <gtest/gtest.h>

#include "exporter/export_metrics.h"
#include "exporter/export_pipeline.h"
#include "google/protobuf/duration.pb.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "tests/exporter/test_spans.h"
#include "tests/support/otlp_test_server.h"

namespace kspan {
namespace {

using std::chrono::milliseconds;
using testing::MakeSpan;
using testing::OtlpTestServer;
using testing::ReceivedSpan;

constexpr auto kWait = milliseconds(10'000);

SpanBatch MakeBatch(int n) {
  SpanBatch b;
  for (int i = 0; i < n; ++i) b.spans.push_back(MakeSpan(i));
  return b;
}

SpanSender::Clock::time_point Far() { return SpanSender::Clock::now() + std::chrono::seconds(30); }

std::unique_ptr<OtlpGrpcSender> MakeSender(const std::string& endpoint,
                                           std::function<void(OtlpGrpcOptions&)> edit = {}) {
  OtlpGrpcOptions o;
  o.endpoint = endpoint;
  o.timeout = milliseconds(5000);
  if (edit) edit(o);
  auto sender = OtlpGrpcSender::Create(o);
  EXPECT_TRUE(sender.ok()) << sender.status();
  return sender.ok() ? *std::move(sender) : nullptr;
}

TEST(GrpcEndpointTest, SchemesAndBareTargets) {
  auto http = ParseGrpcEndpoint("http://collector:4317", false);
  ASSERT_TRUE(http.ok());
  EXPECT_EQ(http->target, "collector:4317");
  EXPECT_FALSE(http->tls);
  auto https = ParseGrpcEndpoint("HTTPS://collector:4317/", true);
  ASSERT_TRUE(https.ok());
  EXPECT_EQ(https->target, "collector:4317");
  EXPECT_TRUE(https->tls) << "https wins over insecure";
  auto bare_secure = ParseGrpcEndpoint("collector:4317", false);
  ASSERT_TRUE(bare_secure.ok());
  EXPECT_TRUE(bare_secure->tls);
  auto bare_insecure = ParseGrpcEndpoint("collector:4317", true);
  ASSERT_TRUE(bare_insecure.ok());
  EXPECT_FALSE(bare_insecure->tls);
  auto dns = ParseGrpcEndpoint("dns:///collector:4317", true);
  ASSERT_TRUE(dns.ok());
  EXPECT_EQ(dns->target, "dns:///collector:4317");
  EXPECT_FALSE(ParseGrpcEndpoint("", true).ok());
  EXPECT_FALSE(ParseGrpcEndpoint("ftp://collector:4317", true).ok());
  EXPECT_FALSE(ParseGrpcEndpoint("http://", true).ok());
}

TEST(OtlpGrpcSenderTest, CreateRejectsBadOptions) {
  OtlpGrpcOptions o;
  o.compression = "brotli";
  EXPECT_FALSE(OtlpGrpcSender::Create(o).ok());
  o = {};
  o.endpoint = "https://collector:4317";
  o.certificate_file = "/nonexistent/ca.pem";
  auto s = OtlpGrpcSender::Create(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("/nonexistent/ca.pem"), std::string::npos);
}

TEST(OtlpGrpcSenderTest, DeliversSpansWithHeadersAndGzip) {
  OtlpTestServer server;
  auto sender = MakeSender(server.endpoint(), [](OtlpGrpcOptions& o) {
    o.headers = {{"Authorization", "Bearer t0ken"}, {"x-tenant", "a b"}};
    o.compression = "gzip";
  });
  ASSERT_NE(sender, nullptr);
  const auto result = sender->Send(MakeBatch(3), Far());
  EXPECT_EQ(result.outcome, ExportResult::Outcome::kSuccess) << result.code << " " << result.message;
  EXPECT_EQ(result.rejected_spans, 0);
  const auto spans = server.spans();
  ASSERT_EQ(spans.size(), 3u);
  EXPECT_EQ(spans[0].span.name(), "connect-0");
  EXPECT_EQ(spans[0].trace_id_hex(), ToHex(testing::MakeTraceId(0)));
  ASSERT_NE(spans[0].ResourceAttribute("service.name"), nullptr);
  EXPECT_EQ(spans[0].ResourceAttribute("service.name")->string_value(), "curl");
  EXPECT_EQ(spans[2].scope.name(), "kspan");
  const auto md = server.last_metadata();
  ASSERT_EQ(md.count("authorization"), 1u);
  EXPECT_EQ(md.find("authorization")->second, "Bearer t0ken");
  EXPECT_EQ(md.find("x-tenant")->second, "a b");
  EXPECT_NE(md.find("user-agent")->second.find("kspan/"), std::string::npos);
  // The connection is reused for the next batch.
  EXPECT_EQ(sender->Send(MakeBatch(1), Far()).outcome, ExportResult::Outcome::kSuccess);
  EXPECT_EQ(server.export_calls(), 2);
}

TEST(OtlpGrpcSenderTest, MapsStatusesToRetryableOrPermanent) {
  OtlpTestServer server;
  auto sender = MakeSender(server.endpoint());
  ASSERT_NE(sender, nullptr);
  server.PushStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "try later"));
  server.PushStatus(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad span"));
  server.PushStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "too big"));
  auto r = sender->Send(MakeBatch(1), Far());
  EXPECT_EQ(r.outcome, ExportResult::Outcome::kRetryable);
  EXPECT_EQ(r.code, "UNAVAILABLE");
  EXPECT_EQ(r.message, "try later");
  r = sender->Send(MakeBatch(1), Far());
  EXPECT_EQ(r.outcome, ExportResult::Outcome::kPermanent);
  EXPECT_EQ(r.code, "INVALID_ARGUMENT");
  r = sender->Send(MakeBatch(1), Far());
  EXPECT_EQ(r.outcome, ExportResult::Outcome::kPermanent) << "no RetryInfo: not retryable";
  EXPECT_TRUE(server.spans().empty());
}

TEST(OtlpGrpcSenderTest, ResourceExhaustedWithRetryInfoIsRetryableAfterTheDelay) {
  OtlpTestServer server;
  auto sender = MakeSender(server.endpoint());
  ASSERT_NE(sender, nullptr);
  google::rpc::RetryInfo info;
  info.mutable_retry_delay()->set_seconds(2);
  info.mutable_retry_delay()->set_nanos(500'000'000);
  google::rpc::Status details;
  details.set_code(static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
  details.set_message("throttled");
  details.add_details()->PackFrom(info);
  server.PushStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "throttled",
                                 details.SerializeAsString()));
  const auto r = sender->Send(MakeBatch(1), Far());
  EXPECT_EQ(r.outcome, ExportResult::Outcome::kRetryable);
  ASSERT_TRUE(r.retry_after.has_value());
  EXPECT_EQ(*r.retry_after, milliseconds(2500));
}

TEST(OtlpGrpcSenderTest, ReportsPartialSuccess) {
  OtlpTestServer server;
  auto sender = MakeSender(server.endpoint());
  ASSERT_NE(sender, nullptr);
  server.PushResponse({.status = grpc::Status::OK, .rejected_spans = 2, .error_message = "old"});
  const auto r = sender->Send(MakeBatch(5), Far());
  EXPECT_EQ(r.outcome, ExportResult::Outcome::kSuccess);
  EXPECT_EQ(r.rejected_spans, 2);
  EXPECT_EQ(r.message, "old");
}

TEST(OtlpGrpcSenderTest, TimeoutIsRetryableDeadlineExceeded) {
  OtlpTestServer server;
  server.SetDefaultDelay(milliseconds(2000));
  auto sender = MakeSender(server.endpoint(), [](OtlpGrpcOptions& o) { o.timeout = milliseconds(100); });
  ASSERT_NE(sender, nullptr);
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = sender->Send(MakeBatch(1), Far());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(1500));
  EXPECT_EQ(r.outcome, ExportResult::Outcome::kRetryable);
  EXPECT_EQ(r.code, "DEADLINE_EXCEEDED");
}

TEST(OtlpGrpcSenderTest, CancelAbortsTheCallInFlight) {
  OtlpTestServer server;
  server.SetDefaultDelay(milliseconds(5000));
  auto sender = MakeSender(server.endpoint());
  ASSERT_NE(sender, nullptr);
  std::thread canceller([&] {
    server.WaitForExportCalls(1, kWait);
    std::this_thread::sleep_for(milliseconds(20));
    sender->Cancel();
  });
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = sender->Send(MakeBatch(1), Far());
  canceller.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(3000));
  EXPECT_EQ(r.code, "CANCELLED");
}

// Policy and transport together, through the public pipeline.
class GrpcPipelineTest : public ::testing::Test {
 protected:
  ExportConfig Config(const std::string& endpoint) {
    ExportConfig c;
    c.batch = {.max_export_batch_size = 10, .schedule_delay = milliseconds(10),
               .max_queue_size = 1000};
    DestinationConfig d;
    d.name = "collector";
    d.type = DestinationType::kOtlpGrpc;
    d.otlp_grpc.endpoint = endpoint;
    d.otlp_grpc.timeout = milliseconds(2000);
    d.retry = {.initial_backoff = milliseconds(10), .max_backoff = milliseconds(40),
               .multiplier = 2.0, .max_elapsed = milliseconds(10'000)};
    d.max_queued_batches = 100;
    c.destinations.push_back(d);
    return c;
  }
  std::unique_ptr<ExportPipeline> Start(const ExportConfig& c) {
    auto p = ExportPipeline::Create(c, metrics_);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *std::move(p) : nullptr;
  }
  DestinationAccounting Accounting() { return ReadAccounting(metrics_, "collector"); }

  MetricsRegistry metrics_;
};

TEST_F(GrpcPipelineTest, UnavailableThenSuccessIsRetriedAndExportedOnce) {
  OtlpTestServer server;
  server.PushStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "starting"));
  server.PushStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "starting"));
  auto p = Start(Config(server.endpoint()));
  ASSERT_NE(p, nullptr);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(p->Submit(MakeSpan(i)));
  ASSERT_TRUE(server.WaitForSpanCount(5, kWait));
  p->Shutdown(milliseconds(5000));
  EXPECT_EQ(server.spans().size(), 5u) << "delivered exactly once";
  EXPECT_EQ(server.export_calls(), 3);
  const auto a = Accounting();
  EXPECT_EQ(a.exported, 5u);
  EXPECT_EQ(a.dropped_total(), 0u);
  EXPECT_TRUE(a.Balanced());
  EXPECT_EQ(metrics_.CounterValue(metric::kRetries, {{"destination", "collector"}}), 2u);
  EXPECT_EQ(metrics_.CounterValue(metric::kBatches,
                                  {{"destination", "collector"}, {"outcome", "retryable_error"}}),
            2u);
}

TEST_F(GrpcPipelineTest, InvalidArgumentIsDroppedWithoutRetry) {
  OtlpTestServer server;
  server.PushStatus(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad"));
  auto p = Start(Config(server.endpoint()));
  ASSERT_NE(p, nullptr);
  for (int i = 0; i < 4; ++i) p->Submit(MakeSpan(i));
  ASSERT_TRUE(server.WaitForExportCalls(1, kWait));
  p->Shutdown(milliseconds(5000));
  EXPECT_EQ(server.export_calls(), 1);
  const auto a = Accounting();
  EXPECT_EQ(a.dropped.at("permanent_error"), 4u);
  EXPECT_EQ(a.exported, 0u);
  EXPECT_TRUE(a.Balanced());
  EXPECT_EQ(metrics_.CounterValue(metric::kRetries, {{"destination", "collector"}}), 0u);
}

TEST_F(GrpcPipelineTest, PartialSuccessIsCountedNotRetried) {
  OtlpTestServer server;
  server.PushResponse({.status = grpc::Status::OK, .rejected_spans = 3, .error_message = "3 bad"});
  auto p = Start(Config(server.endpoint()));
  ASSERT_NE(p, nullptr);
  for (int i = 0; i < 10; ++i) p->Submit(MakeSpan(i));  // one full batch
  ASSERT_TRUE(server.WaitForSpanCount(10, kWait));
  p->Shutdown(milliseconds(5000));
  EXPECT_EQ(server.export_calls(), 1);
  const auto a = Accounting();
  EXPECT_EQ(a.exported, 7u);
  EXPECT_EQ(a.dropped.at("rejected_by_backend"), 3u);
  EXPECT_TRUE(a.Balanced());
}

TEST_F(GrpcPipelineTest, UnreachableEndpointNeverBlocksSubmitAndAccountsForEverySpan) {
  int dead_port = 0;
  {
    OtlpTestServer gone;
    dead_port = gone.port();
  }
  auto config = Config("http://127.0.0.1:" + std::to_string(dead_port));
  config.batch.max_queue_size = 50;
  config.destinations[0].max_queued_batches = 3;
  config.destinations[0].retry.max_elapsed = milliseconds(0);  // retry while there is room
  auto p = Start(config);
  ASSERT_NE(p, nullptr);

  const auto t0 = std::chrono::steady_clock::now();
  int accepted = 0;
  for (int i = 0; i < 2000; ++i) accepted += p->Submit(MakeSpan(i)) ? 1 : 0;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(2000))
      << "Submit must not wait for the network";
  EXPECT_GT(accepted, 0);

  // The sender keeps failing and retrying meanwhile.
  const auto failures = [&] {
    return metrics_.CounterValue(metric::kBatches,
                                 {{"destination", "collector"}, {"outcome", "retryable_error"}});
  };
  for (auto until = std::chrono::steady_clock::now() + kWait;
       failures() < 2 && std::chrono::steady_clock::now() < until;) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_GE(failures(), 2u);
  p->Shutdown(milliseconds(200));

  const auto a = Accounting();
  EXPECT_EQ(a.submitted, 2000u);
  EXPECT_EQ(a.exported, 0u);
  EXPECT_GT(a.batcher_dropped + a.dropped.at("destination_queue_full"), 0u);
  EXPECT_GT(a.dropped.at("shutdown") + a.dropped.at("retry_exhausted"), 0u);
  EXPECT_TRUE(a.Balanced()) << "submitted " << a.submitted << " batcher_dropped "
                            << a.batcher_dropped << " exported " << a.exported << " dropped "
                            << a.dropped_total();
}

TEST_F(GrpcPipelineTest, ShutdownDeadlineBoundsASlowServer) {
  OtlpTestServer server;
  server.SetDefaultDelay(milliseconds(5000));
  auto p = Start(Config(server.endpoint()));
  ASSERT_NE(p, nullptr);
  for (int i = 0; i < 25; ++i) p->Submit(MakeSpan(i));
  ASSERT_TRUE(server.WaitForExportCalls(1, kWait));
  const auto t0 = std::chrono::steady_clock::now();
  p->Shutdown(milliseconds(150));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(2000));
  const auto a = Accounting();
  EXPECT_EQ(a.exported, 0u);
  EXPECT_EQ(a.dropped.at("shutdown"), 25u);
  EXPECT_TRUE(a.Balanced());
}

}  // namespace
}  // namespace kspan
