#include "exporter/file_store_sender.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "exporter/otlp_json.h"
#include "exporter/otlp_transform.h"
#include "nlohmann/json.hpp"
#include "tests/exporter/test_spans.h"

namespace kspan {
namespace {

namespace fs = std::filesystem;

class FileStoreSenderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kspan-file-store-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static std::vector<std::string> Lines(const fs::path& p) {
    std::ifstream in(p);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }
  static SpanBatch Batch(int n, int first) {
    static const auto resource = testing::MakeResource("curl", 1234);
    SpanBatch b;
    for (int i = 0; i < n; ++i) b.spans.push_back(testing::MakeSpan(first + i, resource));
    return b;
  }

  fs::path dir_;
};

TEST_F(FileStoreSenderTest, WritesOneValidOtlpJsonRequestPerLine) {
  const fs::path path = dir_ / "nested" / "spans.jsonl";
  auto sender = FileStoreSender::Create({.path = path.string(), .max_bytes = 0});
  ASSERT_TRUE(sender.ok()) << sender.status();
  const auto far = SpanSender::Clock::now() + std::chrono::seconds(5);
  EXPECT_EQ((*sender)->Send(Batch(2, 0), far).outcome, ExportResult::Outcome::kSuccess);
  EXPECT_EQ((*sender)->Send(Batch(3, 10), far).outcome, ExportResult::Outcome::kSuccess);

  // Readable while the sender is open: each batch is written through.
  const auto lines = Lines(path);
  ASSERT_EQ(lines.size(), 2u);
  const auto doc = nlohmann::json::parse(lines[1]);
  const auto& spans = doc.at("resourceSpans").at(0).at("scopeSpans").at(0).at("spans");
  ASSERT_EQ(spans.size(), 3u);
  EXPECT_EQ(spans.at(0).at("traceId"), ToHex(testing::MakeTraceId(10)));
  EXPECT_EQ(spans.at(0).at("kind"), 3);

  otlp::ExportTraceServiceRequest decoded;
  ASSERT_TRUE(FromOtlpJson(lines[0], decoded).ok());
  EXPECT_EQ(decoded.SerializeAsString(), ToExportRequest(Batch(2, 0).spans).SerializeAsString());
}

TEST_F(FileStoreSenderTest, AppendsAcrossRestarts) {
  const fs::path path = dir_ / "spans.jsonl";
  const auto far = SpanSender::Clock::now() + std::chrono::seconds(5);
  for (int run = 0; run < 2; ++run) {
    auto sender = FileStoreSender::Create({.path = path.string(), .max_bytes = 0});
    ASSERT_TRUE(sender.ok());
    (*sender)->Send(Batch(1, run), far);
  }
  EXPECT_EQ(Lines(path).size(), 2u);
}

TEST_F(FileStoreSenderTest, RotatesAboveMaxBytes) {
  const fs::path path = dir_ / "spans.jsonl";
  const auto far = SpanSender::Clock::now() + std::chrono::seconds(5);
  const std::size_t line_size = ToOtlpJson(ToExportRequest(Batch(1, 0).spans)).size() + 1;
  // Room for two lines per file.
  auto sender = FileStoreSender::Create({.path = path.string(), .max_bytes = 2 * line_size + 10});
  ASSERT_TRUE(sender.ok());
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ((*sender)->Send(Batch(1, i), far).outcome, ExportResult::Outcome::kSuccess);
  }
  // Lines 0-1 -> rotated away by 2-3, which are in .1; line 4 is current.
  const auto current = Lines(path);
  const auto previous = Lines(path.string() + ".1");
  ASSERT_EQ(current.size(), 1u);
  ASSERT_EQ(previous.size(), 2u);
  EXPECT_LE(fs::file_size(path.string() + ".1"), 2 * line_size + 10);
  EXPECT_EQ(nlohmann::json::parse(current[0])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"],
            "connect-4");
  EXPECT_EQ(nlohmann::json::parse(previous[0])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"],
            "connect-2");
}

TEST_F(FileStoreSenderTest, UnwritablePathIsAnError) {
  fs::create_directories(dir_);
  std::ofstream(dir_ / "file") << "x";
  // A regular file where a directory should be.
  auto sender = FileStoreSender::Create({.path = (dir_ / "file" / "spans.jsonl").string()});
  EXPECT_FALSE(sender.ok());
  EXPECT_FALSE(FileStoreSender::Create({.path = ""}).ok());
}

}  // namespace
}  // namespace kspan
