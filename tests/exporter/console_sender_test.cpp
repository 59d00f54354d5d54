#include "exporter/console_sender.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <ctime>

#include "tests/exporter/test_spans.h"

namespace kspan {
namespace {

class ConsoleSenderTest : public ::testing::Test {
 protected:
  // Lines show local time; pin the zone so the expectation is fixed.
  void SetUp() override {
    const char* tz = std::getenv("TZ");
    saved_tz_ = tz ? std::optional<std::string>(tz) : std::nullopt;
    ::setenv("TZ", "UTC", 1);
    ::tzset();
  }
  void TearDown() override {
    if (saved_tz_) ::setenv("TZ", saved_tz_->c_str(), 1); else ::unsetenv("TZ");
    ::tzset();
  }
  std::optional<std::string> saved_tz_;
};

Span ConnectSpan() {
  Span s;
  s.name = "connect";
  // 2023-11-14 22:13:20.345 UTC
  s.start_unix_nano = 1'700'000'000'345'000'000ull;
  s.end_unix_nano = s.start_unix_nano + 231'000;
  s.attributes = {{"network.peer.address", std::string("127.0.0.1")},
                  {"network.peer.port", std::int64_t{8080}},
                  {"thread.id", std::int64_t{1235}}};
  s.resource = std::make_shared<const Resource>(
      Resource{{{"service.name", std::string("curl")}, {"process.pid", std::int64_t{1234}}}});
  s.status_code = StatusCode::kOk;
  return s;
}

TEST_F(ConsoleSenderTest, OneReadableLinePerSpan) {
  EXPECT_EQ(FormatConsoleLine(ConnectSpan()),
            "22:13:20.345 connect 127.0.0.1:8080 curl[1234/1235] 0.231ms OK");
}

TEST_F(ConsoleSenderTest, ErrorsIpv6AndMissingAttributes) {
  Span s = ConnectSpan();
  s.status_code = StatusCode::kError;
  s.status_message = "ECONNREFUSED";
  s.attributes = {{"network.peer.address", std::string("::1")},
                  {"network.peer.port", std::int64_t{443}}};
  EXPECT_EQ(FormatConsoleLine(s),
            "22:13:20.345 connect [::1]:443 curl[1234] 0.231ms ERROR (ECONNREFUSED)");
  Span bare;
  bare.name = "write";
  bare.start_unix_nano = 1'700'000'000'000'000'000ull;
  bare.end_unix_nano = bare.start_unix_nano + 1'500'000;
  EXPECT_EQ(FormatConsoleLine(bare), "22:13:20.000 write 1.500ms -");
}

TEST_F(ConsoleSenderTest, SendWritesEveryLine) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  ConsoleSender sender(f);
  SpanBatch b;
  b.spans = {ConnectSpan(), ConnectSpan()};
  EXPECT_EQ(sender.Send(b, SpanSender::Clock::now()).outcome, ExportResult::Outcome::kSuccess);
  std::rewind(f);
  char buf[512] = {};
  const auto n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  const std::string text(buf, n);
  const std::string line = "22:13:20.345 connect 127.0.0.1:8080 curl[1234/1235] 0.231ms OK\n";
  EXPECT_EQ(text, line + line);
}

}  // namespace
}  // namespace kspan
