#include "exporter/console_sender.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <ctime>

#include "exporter/terminal_text.h"
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

// Span names and attributes come from apps and from the wire (a kernel HTTP
// span's url.path is whatever request target a remote client sent): none of
// their bytes reaches the terminal raw, and none starts a line of its own.
TEST_F(ConsoleSenderTest, UntrustedTextCannotForgeLinesOrDriveTheTerminal) {
  const std::string forged = "\r\n22:13:20.999 connect 10.0.0.1:22 sshd[1/1] 0.001ms OK";
  Span s = ConnectSpan();
  s.name = "GET /a\r\n22:13:20.999 fake 1.000ms OK\x1b[2J\x1b]0;title\x07";
  s.status_code = StatusCode::kError;
  s.status_message = "bad\x9b" "31m\xc2\x9b" "0m\nnext";
  s.attributes = {{"network.peer.address", std::string("10.0.0.1\n") + forged},
                  {"network.peer.port", std::string("80\r")},
                  {"thread.id", std::int64_t{7}}};
  s.resource = std::make_shared<const Resource>(Resource{
      {{"service.name", std::string("svc\x1b[31m\xff\xfe")}, {"process.pid", std::int64_t{42}}}});

  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  ConsoleSender sender(f);
  SpanBatch b;
  b.spans = {s};
  ASSERT_EQ(sender.Send(b, SpanSender::Clock::now()).outcome, ExportResult::Outcome::kSuccess);
  std::rewind(f);
  char buf[2048] = {};
  const auto n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  const std::string text(buf, n);
  ASSERT_FALSE(text.empty());
  // One line: the only newline is the one that ends it.
  EXPECT_EQ(text.find('\n'), text.size() - 1) << text;
  const std::string line = text.substr(0, text.size() - 1);
  for (unsigned char c : line) {
    EXPECT_FALSE(c < 0x20 || c == 0x7F) << "raw control byte " << int(c) << " in " << line;
  }
  EXPECT_TRUE(IsTerminalSafe(line)) << line;
  EXPECT_NE(line.find("GET /a\\x0d\\x0a22:13:20.999 fake"), std::string::npos) << line;
  EXPECT_NE(line.find("svc\\x1b[31m\\xff\\xfe[42/7]"), std::string::npos) << line;
  EXPECT_NE(line.find("(bad\\x9b31m\\xc2\\x9b0m\\x0anext)"), std::string::npos) << line;
}

}  // namespace
}  // namespace kspan
