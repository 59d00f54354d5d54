// What `kspan dlq list` and `kspan dlq replay` print: a collector's code and
// message are its own words, and a hostile or broken collector chooses them.
#include "exporter/dlq_commands.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "exporter/dead_letter_store.h"
#include "exporter/otlp_transform.h"
#include "exporter/terminal_text.h"
#include "tests/exporter/test_spans.h"
#include "tests/support/otlp_http_test_server.h"

namespace kspan {
namespace {

// The message a collector could send: it ends the listing's line and starts
// one that looks like another dead letter, clears the screen, sets the
// window title and uses an 8-bit CSI and bytes that are not UTF-8.
const std::string kHostile =
    "quota\r\n2     2024-01-01T00:00:00Z  backend  1  10  permanent_error  HTTP 400  forged"
    "\x1b[2J\x1b]0;owned\x07\x9b" "31m\xff";
// The same as valid UTF-8 (a google.rpc.Status message must be): U+009B
// is the C1 form of CSI.
const std::string kHostileUtf8 =
    "quota\r\n2     2024-01-01T00:00:00Z  backend  1  10  permanent_error  HTTP 400  forged"
    "\x1b[2J\x1b]0;owned\x07\xc2\x9b" "31m";

class Capture {
 public:
  Capture() : out_(open_memstream(&buf_, &len_)) {}
  ~Capture() {
    if (out_) std::fclose(out_);
    std::free(buf_);
  }
  std::FILE* out() { return out_; }
  std::string text() {
    std::fflush(out_);
    return std::string(buf_, len_);
  }

 private:
  char* buf_ = nullptr;
  std::size_t len_ = 0;
  std::FILE* out_;
};

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    const auto nl = text.find('\n', start);
    lines.push_back(text.substr(start, nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  return lines;
}

void ExpectPrintable(const std::string& line) {
  for (unsigned char c : line) {
    EXPECT_FALSE(c < 0x20 || c == 0x7F) << "raw control byte " << int(c) << " in " << line;
  }
  EXPECT_TRUE(IsTerminalSafe(line)) << line;
}

class DlqCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("kspan-dlqcmd-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    d_.name = "backend";
    d_.type = DestinationType::kOtlpHttp;
    d_.otlp_grpc.endpoint = server_.base_url();
    d_.otlp_grpc.protocol = "http/protobuf";
    d_.dead_letter = {.enabled = true, .path = (dir_ / "dlq.db").string(), .max_bytes = 1 << 20};
    config_.destinations.push_back(d_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void Store(const std::string& code, const std::string& message) {
    auto store = DeadLetterStore::Open(d_.dead_letter.path, d_.dead_letter.max_bytes);
    ASSERT_TRUE(store.ok()) << store.status();
    std::vector<Span> spans = {testing::MakeSpan(1)};
    ASSERT_TRUE((*store)
                    ->Put({.destination = "backend", .reason = "permanent_error", .code = code,
                           .message = message, .spans = 1},
                          ToExportRequest(spans).SerializeAsString())
                    .ok());
  }

  std::filesystem::path dir_;
  testing::OtlpHttpTestServer server_;
  DestinationConfig d_;
  ExportConfig config_;
};

TEST_F(DlqCommandsTest, ListPrintsAStoredMessageEscapedOnItsOwnLine) {
  Store("HTTP 400\x1b[0m", kHostile);
  Capture c;
  ASSERT_TRUE(DlqList(config_, c.out()).ok());
  const auto lines = Lines(c.text());
  // Header, the one dead letter, the count.
  ASSERT_EQ(lines.size(), 3u) << c.text();
  EXPECT_EQ(lines[2], "1 dead letter(s)");
  for (const auto& line : lines) ExpectPrintable(line);
  EXPECT_NE(lines[1].find("quota\\x0d\\x0a2     2024"), std::string::npos) << lines[1];
  EXPECT_NE(lines[1].find("HTTP 400\\x1b[0m"), std::string::npos) << lines[1];
}

TEST_F(DlqCommandsTest, ReplayPrintsTheCollectorsAnswerEscaped) {
  Store("HTTP 400", "bad");
  server_.PushResponse({.status = 400, .status_message = kHostileUtf8});
  Capture c;
  auto summary = DlqReplay(config_, "", c.out(), ProcessEnv());
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->batches_failed, 1u);
  const auto lines = Lines(c.text());
  // The refusal and the summary.
  ASSERT_EQ(lines.size(), 2u) << c.text();
  for (const auto& line : lines) ExpectPrintable(line);
  EXPECT_NE(lines[0].find("refused again"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("quota\\x0d\\x0a2     2024"), std::string::npos) << lines[0];
  EXPECT_EQ(lines[1].rfind("replayed 0 batch(es)", 0), 0u) << lines[1];
}

}  // namespace
}  // namespace kspan
