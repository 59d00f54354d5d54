// `kspan dlq list` and `kspan dlq replay` as a user runs them: the real
// binary, the same config file as `kspan run -c`, a real OTLP/HTTP receiver.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "exporter/dead_letter_store.h"
#include "exporter/otlp_transform.h"
#include "tests/exporter/test_spans.h"
#include "tests/support/otlp_http_test_server.h"

namespace kspan {
namespace {

struct Run {
  int status;
  std::string out;
};

Run Kspan(const std::string& args) {
  const std::string cmd = std::string(KSPAN_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof(buf), p) != nullptr) out += buf;
  const int rc = pclose(p);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

TEST(DlqCli, ListAndReplayThroughTheConfiguredDestination) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("kspan-dlq-e2e-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  testing::OtlpHttpTestServer server;
  const std::string token_file = (dir / "token").string();
  std::ofstream(token_file) << "s3cret\n";
  const std::string config = (dir / "kspan.yaml").string();
  std::ofstream(config) << "state_dir: " << dir.string() << "\n"
                        << "destinations:\n"
                        << "  - name: backend\n"
                        << "    type: otlp_http\n"
                        << "    endpoint: " << server.base_url() << "\n"
                        << "    auth: {bearer_token_file: " << token_file << "}\n";
  // What the agent would have stored: the default path for 'backend'.
  {
    auto store = DeadLetterStore::Open((dir / "dlq" / "backend.db").string(), 1 << 20);
    ASSERT_TRUE(store.ok()) << store.status();
    std::vector<Span> spans = {testing::MakeSpan(1), testing::MakeSpan(2), testing::MakeSpan(3)};
    ASSERT_TRUE((*store)
                    ->Put({.destination = "backend", .reason = "permanent_error",
                           .code = "HTTP 400", .message = "bad tenant", .spans = 3},
                          ToExportRequest(spans).SerializeAsString())
                    .ok());
  }
  auto list = Kspan("dlq list -c " + config);
  EXPECT_EQ(list.status, 0) << list.out;
  EXPECT_NE(list.out.find("backend"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("bad tenant"), std::string::npos);
  EXPECT_NE(list.out.find("1 dead letter(s)"), std::string::npos);

  server.PushResponse({.status = 503});  // still down: kept, exit status 3
  auto again = Kspan("dlq replay -c " + config + " --destination backend");
  EXPECT_EQ(again.status, 3) << again.out;
  auto replay = Kspan("dlq replay -c " + config);
  EXPECT_EQ(replay.status, 0) << replay.out;
  EXPECT_EQ(server.spans().size(), 3u);
  const auto reqs = server.requests();
  ASSERT_FALSE(reqs.empty());
  EXPECT_EQ(reqs.back().headers.find("authorization")->second, "Bearer s3cret");
  // The secret never appears in what kspan prints.
  EXPECT_EQ(replay.out.find("s3cret"), std::string::npos);
  EXPECT_NE(Kspan("dlq list -c " + config).out.find("0 dead letter(s)"), std::string::npos);
  EXPECT_EQ(Kspan("dlq replay -c " + config + " --destination nope").status, 1);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kspan
