// bpf.pin_path is where kspan removes "stale pins" at start and everything
// it pinned at stop: it must be a directory of kspan's own on bpffs, and
// nothing but kspan's pins is ever removed.
#include "userspace/pin_directory.h"

#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/privileged/privileged.h"

namespace kspan {
namespace {

bool Exists(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0;
}

// Pins a new BPF map (of nobody in particular) at `path`.
void PinMap(const std::string& path) {
  const int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "foreign", 4, 4, 1, nullptr);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_EQ(bpf_obj_pin(fd, path.c_str()), 0) << path << ": " << std::strerror(errno);
  close(fd);
}

class PinDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::kspan::testing::TestPinDir() + "-pins";
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

// The finding: pointed at an ordinary directory, start-up removed the
// user's files there as "stale pins" and stop removed the directory.
TEST_F(PinDirectoryTest, DirectoryNotOnBpffsIsRefusedAndLeftAlone) {
  KSPAN_REQUIRE_BPF();
  char tmpl[] = "/tmp/kspan-pinpath-XXXXXX";
  const std::string tmp = mkdtemp(tmpl);
  const std::string pins = tmp + "/pins";
  ASSERT_TRUE(std::filesystem::create_directory(pins));
  std::ofstream(pins + "/notes.txt") << "mine";
  std::ofstream(pins + "/kspan_cfg") << "a file that happens to have a pin's name";

  for (const std::string& path : {pins, pins + "/", tmp + "/not-yet"}) {
    SCOPED_TRACE(path);
    auto created = PinDirectory::Create(path);
    ASSERT_FALSE(created.ok());
    const std::string why(created.status().message());
    EXPECT_NE(why.find("bpf.pin_path"), std::string::npos) << why;
    EXPECT_NE(why.find("not on bpffs"), std::string::npos) << why;
  }
  EXPECT_TRUE(Exists(pins + "/notes.txt"));
  EXPECT_TRUE(Exists(pins + "/kspan_cfg"));
  EXPECT_FALSE(Exists(tmp + "/not-yet"));
  std::filesystem::remove_all(tmp);
}

// /sys/fs/bpf itself holds other tools' pins.
TEST_F(PinDirectoryTest, TheBpffsMountItselfIsRefused) {
  KSPAN_REQUIRE_BPF();
  const std::string other = dir_ + "-other-tool";
  PinMap(other);
  for (const std::string path : {"/sys/fs/bpf", "/sys/fs/bpf/", "/sys/fs/bpf/."}) {
    SCOPED_TRACE(path);
    auto created = PinDirectory::Create(path);
    ASSERT_FALSE(created.ok());
    const std::string why(created.status().message());
    EXPECT_NE(why.find("bpf.pin_path"), std::string::npos) << why;
    EXPECT_NE(why.find("bpffs mount itself"), std::string::npos) << why;
  }
  EXPECT_TRUE(Exists(other)) << "another tool's pin was removed";
  unlink(other.c_str());
}

TEST_F(PinDirectoryTest, DirectoryWithForeignPinsIsRefusedAndLeftAlone) {
  KSPAN_REQUIRE_BPF();
  ASSERT_EQ(mkdir(dir_.c_str(), 0700), 0) << std::strerror(errno);
  PinMap(dir_ + "/other_tool_map");
  PinMap(dir_ + "/kspan_cfg");  // a stale pin of kspan's
  auto created = PinDirectory::Create(dir_);
  ASSERT_FALSE(created.ok());
  const std::string why(created.status().message());
  EXPECT_NE(why.find("bpf.pin_path"), std::string::npos) << why;
  EXPECT_NE(why.find("other_tool_map"), std::string::npos) << why;
  EXPECT_EQ(why.find("kspan_cfg"), std::string::npos) << "kspan's own pin is not foreign: " << why;
  EXPECT_TRUE(Exists(dir_ + "/other_tool_map"));
  EXPECT_TRUE(Exists(dir_ + "/kspan_cfg"));

  // Without the foreign pin the directory is kspan's: the stale pin goes.
  ASSERT_EQ(unlink((dir_ + "/other_tool_map").c_str()), 0);
  {
    auto pins = PinDirectory::Create(dir_);
    ASSERT_TRUE(pins.ok()) << pins.status();
    EXPECT_FALSE(Exists(dir_ + "/kspan_cfg"));
    EXPECT_TRUE(Exists(dir_));
  }
  EXPECT_FALSE(Exists(dir_)) << "removed on a clean exit";
}

// Something another tool pins into kspan's directory while it runs is not
// removed at exit (nor is the directory then).
TEST_F(PinDirectoryTest, StopRemovesOnlyKspansPins) {
  KSPAN_REQUIRE_BPF();
  {
    auto pins = PinDirectory::Create(dir_);
    ASSERT_TRUE(pins.ok()) << pins.status();
    PinMap(dir_ + "/kspan_pid_allow");
    PinMap(dir_ + "/added_by_someone");
  }
  EXPECT_FALSE(Exists(dir_ + "/kspan_pid_allow"));
  EXPECT_TRUE(Exists(dir_ + "/added_by_someone"));
}

TEST_F(PinDirectoryTest, PinOrFileWhereTheDirectoryShouldBeIsRefused) {
  KSPAN_REQUIRE_BPF();
  PinMap(dir_);
  auto created = PinDirectory::Create(dir_);
  ASSERT_FALSE(created.ok());
  EXPECT_NE(std::string(created.status().message()).find("not a directory"), std::string::npos)
      << created.status();
  EXPECT_TRUE(Exists(dir_));
  unlink(dir_.c_str());
}

}  // namespace
}  // namespace kspan
