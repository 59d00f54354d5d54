// The exporter against a hostile collector (tests/support/hostile_collector.h):
// real OTLP/gRPC and OTLP/HTTP servers in this process that answer what no
// honest collector would. Each test is one attack of issue #18 and asserts
// the bound that stops it and the metric that counts it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <limits>
#include <thread>
#include <sstream>

#include "exporter/compression.h"
#include "exporter/destination_queue.h"
#include "exporter/dlq_commands.h"
#include "exporter/export_metrics.h"
#include "exporter/otlp_grpc_sender.h"
#include "exporter/otlp_http_sender.h"
#include "exporter/otlp_transform.h"
#include "exporter/terminal_text.h"
#include "exporter/retry.h"
#include "exporter/zipkin_sender.h"
#include "google/rpc/status.pb.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"
#include "tests/exporter/test_spans.h"
#include "tests/support/hostile_collector.h"
#include "tests/support/process_memory.h"

namespace kspan {
namespace {

using std::chrono::milliseconds;
using testing::HostileGrpcAnswer;
using testing::HostileGrpcCollector;
using testing::HostileHttpAnswer;
using testing::HostileHttpCollector;

auto Far() { return std::chrono::steady_clock::now() + std::chrono::seconds(10); }

SpanBatch Batch(int n) {
  SpanBatch b;
  for (int i = 0; i < n; ++i) b.spans.push_back(testing::MakeSpan(i + 1));
  return b;
}

OtlpGrpcOptions Options(const std::string& endpoint, const std::string& protocol) {
  OtlpGrpcOptions o;
  o.endpoint = endpoint;
  o.protocol = protocol;
  o.timeout = milliseconds(5000);
  return o;
}

std::unique_ptr<SpanSender> GrpcSender(const HostileGrpcCollector& c) {
  auto s = OtlpGrpcSender::Create(Options(c.endpoint(), "grpc"));
  EXPECT_TRUE(s.ok()) << s.status();
  return *std::move(s);
}

std::unique_ptr<SpanSender> HttpSender(const HostileHttpCollector& c,
                                       const std::string& protocol = "http/protobuf") {
  auto s = OtlpHttpSender::Create(Options(c.base_url(), protocol));
  EXPECT_TRUE(s.ok()) << s.status();
  return *std::move(s);
}

// What a hostile collector writes into its error messages: a terminal reset
// and cursor home, a CSI as the single C1 code point U+009B, a bidi override,
// and a newline followed by a forged `kspan dlq list` row; then padding
// (gRPC itself refuses status messages over its 8 KiB metadata limit).
std::string Poison(std::size_t padding = 20000) {
  return "\x1b[2J\x1b[H" "bad tenant \xC2\x9B" "31m red \xE2\x80\xAE" "desrever\n"
         "99     2024-01-01T00:00:00Z backend            1         1 permanent_error  HTTP 400 "
         "forged row\r\n" +
         std::string(padding, 'A');
}

// No byte that a terminal acts on: C0 controls, DEL, and the C1 / bidi code
// points' UTF-8 forms.
void ExpectInert(const std::string& text) {
  for (unsigned char c : text) {
    EXPECT_FALSE(c < 0x20 || c == 0x7F) << "control byte " << static_cast<int>(c) << " in: " << text;
  }
  EXPECT_EQ(text.find("\xC2\x9B"), std::string::npos) << text;
  EXPECT_EQ(text.find("\xE2\x80\xAE"), std::string::npos) << text;
}

TEST(PeerTextTest, EscapesWhatATerminalWouldActOnAndBoundsTheLength) {
  EXPECT_EQ(EscapePeerText("plain text, é ü 日本"), "plain text, é ü 日本");
  EXPECT_EQ(EscapePeerText("a\x1b[2Jb\nc\r\td\\"), "a\\x1b[2Jb\\x0ac\\x0d\\x09d\\\\");
  EXPECT_EQ(EscapePeerText("\xC2\x9B" "1m \xE2\x80\xAE x \xE2\x80\xA8"), "\\xc2\\x9b1m \\xe2\\x80\\xae x \\xe2\\x80\\xa8");
  EXPECT_EQ(EscapePeerText(std::string("\xFF\xC3", 2)), "\\xff\\xc3");  // invalid UTF-8
  EXPECT_EQ(EscapePeerText("back\\slash", 100, Backslashes::kKeep), "back\\slash");
  const std::string cut = EscapePeerText(std::string(1000, 'x') + "\n", 16);
  EXPECT_EQ(cut, "xxxxxxxxxxxxx...");
  EXPECT_EQ(EscapePeerText("exactly 16 bytes", 16), "exactly 16 bytes");
  // Escapes are never split by the cut.
  EXPECT_EQ(EscapePeerText("ab\x1b\x1b\x1b", 9), "ab\\x1b...");
  ExpectInert(EscapePeerText(Poison()));
  EXPECT_LE(EscapePeerText(Poison()).size(), kMaxPeerTextBytes);
}

TEST(CollectorAttackTest, GrpcStatusAndPartialSuccessMessagesAreEscapedAndBounded) {
  HostileGrpcCollector collector;
  auto sender = GrpcSender(collector);
  collector.Push({.code = grpc::StatusCode::INVALID_ARGUMENT, .message = Poison(2000)});
  auto r = sender->Send(Batch(1), Far());
  EXPECT_EQ(r.outcome, ExportResult::Outcome::kPermanent);
  ExpectInert(r.message);
  EXPECT_LE(r.message.size(), kMaxPeerTextBytes);
  EXPECT_NE(r.message.find("\\x1b[2J"), std::string::npos) << r.message;

  otlp::ExportTraceServiceResponse partial;
  partial.mutable_partial_success()->set_rejected_spans(1);
  partial.mutable_partial_success()->set_error_message(Poison());
  collector.Push({.body = partial.SerializeAsString()});
  r = sender->Send(Batch(2), Far());
  EXPECT_EQ(r.outcome, ExportResult::Outcome::kSuccess);
  EXPECT_EQ(r.rejected_spans, 1);
  ExpectInert(r.message);
  EXPECT_LE(r.message.size(), kMaxPeerTextBytes);
}

TEST(CollectorAttackTest, HttpErrorBodiesAndStatusMessagesAreEscapedAndBounded) {
  HostileHttpCollector collector;
  google::rpc::Status status;
  status.set_code(3);
  status.set_message(Poison());
  // A google.rpc.Status as OTLP/HTTP says, then the same text as a plain
  // body (no message to decode: the body itself is quoted).
  collector.Push({.status = 400, .body = status.SerializeAsString()});
  collector.Push({.status = 400, .content_type = "text/plain", .body = Poison()});
  auto http = HttpSender(collector);
  for (int i = 0; i < 2; ++i) {
    const auto r = http->Send(Batch(1), Far());
    EXPECT_EQ(r.outcome, ExportResult::Outcome::kPermanent);
    ExpectInert(r.message);
    EXPECT_LE(r.message.size(), kMaxPeerTextBytes);
    EXPECT_NE(r.message.find("bad tenant"), std::string::npos) << r.message;
  }
  OtlpGrpcOptions zo = Options(collector.base_url() + "/api/v2/spans", "");
  auto zipkin = ZipkinSender::Create(zo);
  ASSERT_TRUE(zipkin.ok()) << zipkin.status();
  const auto r = (*zipkin)->Send(Batch(1), Far());
  ExpectInert(r.message);
  EXPECT_LE(r.message.size(), kMaxPeerTextBytes);
}

// The attack as reported: a collector's 400 cleared the screen of whoever
// ran `kspan dlq list` and forged a row in it. Through the real queue, the
// real dead-letter store and the real listing, with the log captured.
TEST(CollectorAttackTest, DeadLetterListingAndLogsShowOneInertRowPerBatch) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("kspan-attack-dlq-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ostringstream log;
  auto previous = spdlog::default_logger();
  auto capture = std::make_shared<spdlog::logger>(
      "capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(log));
  capture->set_level(spdlog::level::debug);
  spdlog::set_default_logger(capture);

  HostileHttpCollector collector;
  google::rpc::Status status;
  status.set_code(3);
  status.set_message(Poison());
  collector.Push({.status = 400, .body = status.SerializeAsString()});
  DestinationConfig d;
  d.name = "backend";
  d.type = DestinationType::kOtlpHttp;
  d.dead_letter.path = (dir / "backend.db").string();
  {
    MetricsRegistry metrics;
    DestinationQueue::Options o;
    o.name = d.name;
    o.dead_letter = d.dead_letter;
    DestinationQueue queue(o, HttpSender(collector), metrics);
    ASSERT_TRUE(queue.Enqueue(std::make_shared<SpanBatch>(Batch(3))));
    queue.BeginShutdown(Far());
    queue.Join();
    EXPECT_EQ(metrics.CounterTotal(metric::kDeadLettered), 3u);
  }
  spdlog::set_default_logger(previous);

  ExportConfig config;
  config.destinations.push_back(d);
  std::FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  ASSERT_TRUE(DlqList(config, out).ok());
  std::rewind(out);
  std::string listing;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof(buf), out)) > 0;) listing.append(buf, n);
  std::fclose(out);
  // Header, one row, the total: nothing forged.
  EXPECT_EQ(std::count(listing.begin(), listing.end(), '\n'), 3) << listing;
  std::string no_newlines = listing;
  std::erase(no_newlines, '\n');
  ExpectInert(no_newlines);
  EXPECT_NE(listing.find("\\x1b[2J"), std::string::npos) << listing;
  EXPECT_NE(listing.find("1 dead letter(s)"), std::string::npos) << listing;

  std::string logged = log.str();
  EXPECT_NE(logged.find("bad tenant"), std::string::npos) << logged;
  std::erase(logged, '\n');
  ExpectInert(logged);
  std::filesystem::remove_all(dir);
}


// --- answers larger than any bound ---------------------------------------

constexpr std::size_t kMiB = 1 << 20;
// What one send may add to the process's peak memory while the collector
// answers with hundreds of MiB: the 1 MiB body bound, the request, libcurl's
// and the test's own buffers, with room for the allocator on a shared VM.
constexpr std::size_t kPeakCeiling = 48 * kMiB;
// Inflated size of the bombs: small enough that the unbounded inflating
// this test guards against stays survivable, large enough to tell apart.
constexpr std::size_t kBombMiB = 256;

std::uint64_t BadResponses(const MetricsRegistry& m, const std::string& reason) {
  return m.CounterValue(metric::kBadResponses, {{"destination", "d"}, {"reason", reason}});
}

// Sends one batch through a real queue to the collector and returns the
// growth of the peak memory it cost.
std::size_t PeakGrowthOfOneExport(std::unique_ptr<SpanSender> sender, MetricsRegistry& metrics) {
  DestinationQueue::Options o;
  o.name = "d";
  testing::ResetPeakMemory();
  const auto before = testing::ReadMemory();
  {
    DestinationQueue queue(o, std::move(sender), metrics);
    EXPECT_TRUE(queue.Enqueue(std::make_shared<SpanBatch>(Batch(4))));
    queue.BeginShutdown(Far());
    queue.Join();
  }
  return testing::PeakGrowthSince(before);
}

TEST(CollectorAttackTest, GzipAndZstdBombsInAnOkAnswerAreBoundedAndCounted) {
  const std::string gzip = testing::GzipBomb(kBombMiB);
  const std::string zstd = testing::ZstdBomb(kBombMiB);
  ASSERT_LT(gzip.size(), kBombMiB * 2048);  // about 1 KiB per MiB
  for (const auto& [encoding, bomb] : {std::pair{"gzip", &gzip}, {"zstd", &zstd}}) {
    // The bombs really are what they claim.
    auto full = encoding == std::string("gzip") ? GzipDecompress(*bomb, 2 * kMiB)
                                                : ZstdDecompress(*bomb, 2 * kMiB);
    EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted) << encoding;

    HostileHttpCollector collector;
    collector.Push({.status = 200, .headers = {{"Content-Encoding", encoding}}, .body = *bomb});
    MetricsRegistry metrics;
    const std::size_t growth = PeakGrowthOfOneExport(HttpSender(collector), metrics);
    EXPECT_LT(growth, kPeakCeiling) << encoding << ": " << growth / kMiB << " MiB";
    // Delivered once (a 2xx), not retried, not dead-lettered: the answer's
    // body is what was refused, and that is counted.
    EXPECT_EQ(collector.calls(), 1) << encoding;
    EXPECT_EQ(metrics.CounterTotal(metric::kSpansExported), 4u) << encoding;
    EXPECT_EQ(BadResponses(metrics, "too_large"), 1u) << encoding;
  }
}

TEST(CollectorAttackTest, HugeAndBombedBodiesOnEverySenderAndStatus) {
  const std::string gzip = testing::GzipBomb(kBombMiB);
  HostileHttpCollector collector;
  // A plain body of 256 MiB: the transfer stops at the bound.
  collector.Push({.status = 200, .zero_bytes = kBombMiB * kMiB});
  MetricsRegistry metrics;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_LT(PeakGrowthOfOneExport(HttpSender(collector), metrics), kPeakCeiling);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(metrics.CounterTotal(metric::kSpansExported), 4u);
  EXPECT_EQ(BadResponses(metrics, "too_large"), 1u);

  // A retryable error whose body is a bomb: still retryable, message bounded.
  collector.Push({.status = 503, .headers = {{"Content-Encoding", "gzip"}}, .body = gzip});
  auto http = HttpSender(collector, "http/json");
  testing::ResetPeakMemory();
  auto before = testing::ReadMemory();
  auto r = http->Send(Batch(1), Far());
  EXPECT_RSS_LT(testing::PeakGrowthSince(before), kPeakCeiling);
  EXPECT_EQ(r.outcome, ExportResult::Outcome::kRetryable);
  EXPECT_LE(r.message.size(), kMaxPeerTextBytes);

  // Zipkin reads no answer at all, but its client bounds it the same way.
  collector.Push({.status = 202, .headers = {{"Content-Encoding", "gzip"}}, .body = gzip});
  auto zipkin = ZipkinSender::Create(Options(collector.base_url() + "/api/v2/spans", ""));
  ASSERT_TRUE(zipkin.ok());
  testing::ResetPeakMemory();
  before = testing::ReadMemory();
  r = (*zipkin)->Send(Batch(1), Far());
  EXPECT_RSS_LT(testing::PeakGrowthSince(before), kPeakCeiling);
  EXPECT_EQ(r.outcome, ExportResult::Outcome::kSuccess);
  EXPECT_EQ(r.response_issue, ExportResult::ResponseIssue::kTooLarge);

  // A body in an encoding nothing decodes: unreadable, still a success.
  collector.Push({.status = 200, .headers = {{"Content-Encoding", "br"}}, .body = "\x01\x02"});
  r = HttpSender(collector)->Send(Batch(1), Far());
  EXPECT_EQ(r.outcome, ExportResult::Outcome::kSuccess);
  EXPECT_EQ(r.response_issue, ExportResult::ResponseIssue::kUnreadable);
}

TEST(CollectorAttackTest, HonestCompressedAnswersStillRead) {
  HostileHttpCollector collector;
  otlp::ExportTraceServiceResponse partial;
  partial.mutable_partial_success()->set_rejected_spans(2);
  partial.mutable_partial_success()->set_error_message("2 too old");
  auto gz = GzipCompress(partial.SerializeAsString());
  auto zs = ZstdCompress(partial.SerializeAsString());
  ASSERT_TRUE(gz.ok() && zs.ok());
  collector.Push({.status = 200, .headers = {{"Content-Encoding", "gzip"}}, .body = *gz});
  collector.Push({.status = 200, .headers = {{"Content-Encoding", "zstd"}}, .body = *zs});
  auto http = HttpSender(collector);
  for (int i = 0; i < 2; ++i) {
    const auto r = http->Send(Batch(3), Far());
    EXPECT_EQ(r.outcome, ExportResult::Outcome::kSuccess);
    EXPECT_EQ(r.rejected_spans, 2);
    EXPECT_EQ(r.message, "2 too old");
    EXPECT_EQ(r.response_issue, ExportResult::ResponseIssue::kNone);
  }
}


TEST(CollectorAttackTest, HttpOkWithGarbageIsASuccessCounted) {
  HostileHttpCollector collector;
  collector.Push({.status = 200, .body = std::string("\x0a\xff\xff\xff\x0f garbage", 13)});
  MetricsRegistry metrics;
  EXPECT_LT(PeakGrowthOfOneExport(HttpSender(collector), metrics), kPeakCeiling);
  EXPECT_EQ(collector.calls(), 1);
  EXPECT_EQ(metrics.CounterTotal(metric::kSpansExported), 4u);
  EXPECT_EQ(BadResponses(metrics, "unreadable"), 1u);
}

// --- an OK whose body does not parse ------------------------------------

TEST(CollectorAttackTest, GrpcOkWithGarbageIsASuccessCountedNeverADeadLetter) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("kspan-attack-ok-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  HostileGrpcCollector collector;
  // Not an ExportTraceServiceResponse: a truncated length-delimited field.
  collector.Push({.body = std::string("\x0a\xff\xff\xff\x0f garbage", 13)});
  MetricsRegistry metrics;
  DestinationQueue::Options o;
  o.name = "d";
  o.dead_letter = {.enabled = true, .path = (dir / "d.db").string(), .max_bytes = 1 << 20};
  {
    DestinationQueue queue(o, GrpcSender(collector), metrics);
    ASSERT_TRUE(queue.Enqueue(std::make_shared<SpanBatch>(Batch(4))));
    queue.BeginShutdown(Far());
    queue.Join();
  }
  EXPECT_EQ(collector.calls(), 1);  // not resent
  EXPECT_EQ(metrics.CounterTotal(metric::kSpansExported), 4u);
  EXPECT_EQ(metrics.CounterTotal(metric::kDeadLettered), 0u);
  EXPECT_EQ(metrics.CounterTotal(metric::kSpansDropped), 0u);
  EXPECT_EQ(BadResponses(metrics, "unreadable"), 1u);
  std::filesystem::remove_all(dir);
}

TEST(CollectorAttackTest, GrpcOkWithAnAnswerOverTheBoundIsASuccessCounted) {
  HostileGrpcCollector collector;
  collector.Push({.body = std::string(5 * kMiB, 'x')});  // gRPC refuses it above 1 MiB
  MetricsRegistry metrics;
  DestinationQueue::Options o;
  o.name = "d";
  {
    DestinationQueue queue(o, GrpcSender(collector), metrics);
    ASSERT_TRUE(queue.Enqueue(std::make_shared<SpanBatch>(Batch(4))));
    queue.BeginShutdown(Far());
    queue.Join();
  }
  EXPECT_EQ(collector.calls(), 1);
  EXPECT_EQ(metrics.CounterTotal(metric::kSpansExported), 4u);
  EXPECT_EQ(metrics.CounterTotal(metric::kSpansDropped), 0u);
  EXPECT_EQ(BadResponses(metrics, "too_large"), 1u);
}

// --- absurd RetryInfo and Retry-After -------------------------------------

// The largest Duration protobuf allows (10,000 years) and beyond.
constexpr std::int64_t kDurationMaxSeconds = 315'576'000'000;

TEST(CollectorAttackTest, AbsurdRetryInfoIsClampedNotAnImmediateRetryLoop) {
  HostileGrpcCollector collector;
  for (std::int64_t seconds : {kDurationMaxSeconds, std::numeric_limits<std::int64_t>::max()}) {
    collector.Push({.code = grpc::StatusCode::UNAVAILABLE, .message = "later",
                    .details = testing::RetryInfoDetails(seconds, 999'999'999)});
    const auto r = GrpcSender(collector)->Send(Batch(1), Far());
    EXPECT_EQ(r.outcome, ExportResult::Outcome::kRetryable);
    ASSERT_TRUE(r.retry_after.has_value());
    EXPECT_EQ(*r.retry_after, kMaxServerRetryDelay) << seconds;
  }
  collector.Push({.code = grpc::StatusCode::UNAVAILABLE,
                  .details = testing::RetryInfoDetails(-kDurationMaxSeconds, -5)});
  EXPECT_EQ(GrpcSender(collector)->Send(Batch(1), Far()).retry_after, milliseconds(0));

  // Through the queue, retrying for ever (max_elapsed 0) with no breaker:
  // the collector keeps asking for 10,000 years. With the overflow the wait
  // came out negative and the queue resent at once, in a loop.
  collector.Push({.code = grpc::StatusCode::RESOURCE_EXHAUSTED, .message = "quota",
                  .details = testing::RetryInfoDetails(kDurationMaxSeconds)});
  const int before = collector.calls();
  MetricsRegistry metrics;
  DestinationQueue::Options o;
  o.name = "d";
  o.retry.max_elapsed = milliseconds(0);
  {
    DestinationQueue queue(o, GrpcSender(collector), metrics);
    ASSERT_TRUE(queue.Enqueue(std::make_shared<SpanBatch>(Batch(2))));
    std::this_thread::sleep_for(milliseconds(1500));
    EXPECT_EQ(collector.calls() - before, 1) << "retried without waiting";
    queue.BeginShutdown(std::chrono::steady_clock::now());
    queue.Join();
  }
  EXPECT_EQ(metrics.CounterValue(metric::kSpansDropped, {{"destination", "d"}, {"reason", "shutdown"}}),
            2u);
}

TEST(CollectorAttackTest, AbsurdRetryAfterIsClamped) {
  HostileHttpCollector collector;
  for (const char* value : {"99999999999999999999999", "315576000000",
                            "Fri, 31 Dec 9999 23:59:59 GMT"}) {
    collector.Push({.status = 429, .headers = {{"Retry-After", value}}});
    const auto r = HttpSender(collector)->Send(Batch(1), Far());
    EXPECT_EQ(r.outcome, ExportResult::Outcome::kRetryable) << value;
    ASSERT_TRUE(r.retry_after.has_value()) << value;
    EXPECT_EQ(*r.retry_after, kMaxServerRetryDelay) << value;
  }
}

}  // namespace
}  // namespace kspan
