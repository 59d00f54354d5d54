#include "exporter/private_files.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "exporter/dead_letter_store.h"
#include "exporter/file_store_sender.h"
#include "tests/exporter/test_spans.h"

namespace kspan {
namespace {

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

class PrivateFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() /
            ("kspan-private-" + std::to_string(::getpid())))
               .string();
    std::filesystem::remove_all(dir_);
    // As an older version, under the usual umask, left them.
    saved_umask_ = umask(022);
  }
  void TearDown() override {
    umask(saved_umask_);
    std::filesystem::remove_all(dir_);
  }
  void MakeDir(const std::string& rel, mode_t mode) {
    ASSERT_TRUE(std::filesystem::create_directories(dir_ + "/" + rel)) << rel;
    ASSERT_EQ(chmod((dir_ + "/" + rel).c_str(), mode), 0);
  }
  void MakeFile(const std::string& rel, mode_t mode) {
    std::ofstream(dir_ + "/" + rel) << "spans";
    ASSERT_EQ(chmod((dir_ + "/" + rel).c_str(), mode), 0);
  }
  std::string dir_;
  mode_t saved_umask_ = 022;
};

TEST_F(PrivateFilesTest, TreeLoosenedByAnOlderVersionBecomesOwnerOnly) {
  MakeDir("state/spans", 0755);
  MakeDir("state/queue", 0755);
  MakeDir("state/dlq", 0775);
  ASSERT_EQ(chmod((dir_ + "/state").c_str(), 0755), 0);
  MakeFile("state/spans/local.jsonl", 0644);
  MakeFile("state/spans/local.jsonl.1", 0644);
  MakeFile("state/queue/otlp.db", 0644);
  MakeFile("state/queue/otlp.db-wal", 0644);
  MakeFile("state/queue/otlp.db-shm", 0666);
  MakeFile("state/dlq/otlp.db", 0600);  // already private: not listed
  MakeFile("state/dlq/run.sh", 0755);   // the owner's execute bit stays

  const TightenResult r = MakeTreeOwnerOnly(dir_ + "/state");
  EXPECT_TRUE(r.errors.empty()) << r.errors.front();
  std::set<std::string> listed;
  for (const auto& t : r.tightened) {
    listed.insert(t.path.substr(dir_.size() + 1));
    EXPECT_EQ(t.now, t.was & 0700) << t.path;
  }
  EXPECT_EQ(listed, (std::set<std::string>{"state", "state/spans", "state/queue", "state/dlq",
                                           "state/spans/local.jsonl", "state/spans/local.jsonl.1",
                                           "state/queue/otlp.db", "state/queue/otlp.db-wal",
                                           "state/queue/otlp.db-shm", "state/dlq/run.sh"}));
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir_ + "/state")) {
    EXPECT_EQ(ModeOf(e.path().string()) & 077, 0u) << e.path();
  }
  EXPECT_EQ(ModeOf(dir_ + "/state"), 0700u);
  EXPECT_EQ(ModeOf(dir_ + "/state/dlq/run.sh"), 0700u);
  // Nothing left to do the second time.
  EXPECT_TRUE(MakeTreeOwnerOnly(dir_ + "/state").tightened.empty());
}

TEST_F(PrivateFilesTest, LinksBelowTheRootAreNotFollowed) {
  MakeDir("state", 0700);
  MakeDir("elsewhere", 0755);
  MakeFile("elsewhere/shared.conf", 0644);
  std::filesystem::create_symlink(dir_ + "/elsewhere/shared.conf", dir_ + "/state/link");
  std::filesystem::create_directory_symlink(dir_ + "/elsewhere", dir_ + "/state/dirlink");
  const TightenResult r = MakeTreeOwnerOnly(dir_ + "/state");
  EXPECT_TRUE(r.tightened.empty());
  EXPECT_EQ(ModeOf(dir_ + "/elsewhere/shared.conf"), 0644u);
  EXPECT_EQ(ModeOf(dir_ + "/elsewhere"), 0755u);
}

TEST_F(PrivateFilesTest, MissingRootIsNothingToDo) {
  const TightenResult r = MakeTreeOwnerOnly(dir_ + "/nope");
  EXPECT_TRUE(r.tightened.empty());
  EXPECT_TRUE(r.errors.empty());
  EXPECT_TRUE(MakeFileOwnerOnly(dir_ + "/nope.db").tightened.empty());
}

TEST_F(PrivateFilesTest, OneFileOutsideTheStateDirectory) {
  MakeDir("log", 0755);
  MakeFile("log/spans.jsonl", 0644);
  const TightenResult r = MakeFileOwnerOnly(dir_ + "/log/spans.jsonl");
  ASSERT_EQ(r.tightened.size(), 1u);
  EXPECT_EQ(ModeOf(dir_ + "/log/spans.jsonl"), 0600u);
  EXPECT_EQ(ModeOf(dir_ + "/log"), 0755u) << "a shared directory is left as it is";
}

// New files are private whatever the umask: the stores create them so.
TEST_F(PrivateFilesTest, StoresCreatePrivateFilesUnderAPermissiveUmask) {
  umask(0);
  {
    FileStoreOptions fo;
    fo.path = dir_ + "/state/spans/local.jsonl";
    auto file = FileStoreSender::Create(fo);
    ASSERT_TRUE(file.ok()) << file.status();
    SpanBatch b;
    b.spans = {testing::MakeSpan(1)};
    ASSERT_EQ((*file)->Send(b, SpanSender::Clock::now()).outcome, ExportResult::Outcome::kSuccess);
    auto dlq = DeadLetterStore::Open(dir_ + "/state/dlq/otlp.db", 1 << 20);
    ASSERT_TRUE(dlq.ok()) << dlq.status();
    ASSERT_TRUE((*dlq)->Put({.destination = "otlp", .reason = "permanent_error", .spans = 1}, "x").ok());
    // While open, SQLite's -wal and -shm exist beside the database.
    ASSERT_TRUE(std::filesystem::exists(dir_ + "/state/dlq/otlp.db-wal"));
    ASSERT_TRUE(std::filesystem::exists(dir_ + "/state/dlq/otlp.db-shm"));
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir_ + "/state")) {
      const mode_t m = ModeOf(e.path().string());
      EXPECT_EQ(m, e.is_directory() ? 0700u : 0600u) << e.path() << " " << std::oct << m;
    }
  }
}

}  // namespace
}  // namespace kspan
