// Pids across pid namespaces: what a sender names in its own namespace is
// found on the host, and nothing outside that namespace is ever found.
#include "userspace/pid_namespace.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/userspace/fake_proc.h"

namespace kspan {
namespace {

using ::kspan::testing::FakeProc;
using namespace std::chrono_literals;

TEST(ParseNsPid, ReadsEveryLevelOfTheLine) {
  EXPECT_EQ(ParseNsPid("Name:\tbash\nNSpid:\t4242\nPPid:\t1\n"), (std::vector<std::uint32_t>{4242}));
  EXPECT_EQ(ParseNsPid("NSpid:\t11128\t1\n"), (std::vector<std::uint32_t>{11128, 1}));
  EXPECT_EQ(ParseNsPid("Tgid:\t9\nNSpid:\t9\t5\t1"), (std::vector<std::uint32_t>{9, 5, 1}));
}

TEST(ParseNsPid, RefusesWhatIsNotAPidList) {
  EXPECT_TRUE(ParseNsPid("Name:\tbash\nPid:\t1\n").empty());  // kernels before 4.1
  EXPECT_TRUE(ParseNsPid("NSpid:\tabc\n").empty());
  EXPECT_TRUE(ParseNsPid("NSpid:\t12x\t1\n").empty());
  EXPECT_TRUE(ParseNsPid("NSpid:\t0\n").empty());
  EXPECT_TRUE(ParseNsPid("NSpid:\t99999999999\n").empty());
  EXPECT_TRUE(ParseNsPid("XNSpid:\t5\n").empty());
  std::string deep = "NSpid:";
  for (int i = 0; i < 40; ++i) deep += "\t7";
  EXPECT_TRUE(ParseNsPid(deep).empty());
}

TEST(PidNamespaceInode, ReadsTheNamespaceOfARealProcess) {
  const auto ns = PidNamespaceInode("/proc", static_cast<std::uint32_t>(getpid()));
  ASSERT_TRUE(ns.has_value());
  struct stat st {};
  ASSERT_EQ(stat("/proc/self/ns/pid", &st), 0);
  EXPECT_EQ(*ns, st.st_ino);
  EXPECT_EQ(PidNamespaceInode("/proc", 0), std::nullopt);
}

// kspan (pid 100) in namespace 1; container A (namespace 2): its init is
// host pid 200 and its app host pid 201 (pid 7 inside); container B
// (namespace 3): host pid 300, pid 1 inside.
class PidTranslatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    proc_.Link("self", "100");
    proc_.Process(100, 1, "100");
    proc_.Process(150, 1, "150");
    proc_.Process(200, 2, "200\t1");
    proc_.Process(201, 2, "201\t7");
    proc_.Process(300, 3, "300\t1");
  }
  FakeProc proc_;
  std::chrono::steady_clock::time_point now_ = std::chrono::steady_clock::time_point() + 1h;
  PidTranslator pids_{proc_.root(), [this] { return now_; }};
};

TEST_F(PidTranslatorTest, ASenderNamingItselfIsItself) {
  EXPECT_EQ(pids_.HostPid(200, 1), 200u);
  EXPECT_EQ(pids_.HostPid(201, 7), 201u);
  EXPECT_EQ(pids_.HostPid(300, 1), 300u);
  EXPECT_EQ(pids_.HostPid(150, 150), 150u);
}

TEST_F(PidTranslatorTest, AClaimIsTranslatedThroughTheSendersNamespace) {
  // Container A's app names its init: host pid 200, not the host's pid 1.
  EXPECT_EQ(pids_.HostPid(201, 1), 200u);
  EXPECT_EQ(pids_.HostPid(200, 7), 201u);
  // A host process names another host process.
  EXPECT_EQ(pids_.HostPid(150, 200), 200u);
}

TEST_F(PidTranslatorTest, NothingOutsideTheSendersNamespaceIsFound) {
  // Host pids and other containers' processes are not in container A.
  EXPECT_EQ(pids_.HostPid(201, 150), std::nullopt);
  EXPECT_EQ(pids_.HostPid(201, 300), std::nullopt);
  EXPECT_EQ(pids_.HostPid(300, 7), std::nullopt);
  // No such host process; senders that are gone; pid 0.
  EXPECT_EQ(pids_.HostPid(150, 4242), std::nullopt);
  EXPECT_EQ(pids_.HostPid(999, 1), std::nullopt);
  EXPECT_EQ(pids_.HostPid(200, 0), std::nullopt);
  EXPECT_EQ(pids_.HostPid(0, 1), std::nullopt);
}

TEST_F(PidTranslatorTest, ARememberedAnswerIsCheckedAgainBeforeUse) {
  ASSERT_EQ(pids_.HostPid(200, 7), 201u);
  // The process exits and its host pid goes to a process of another
  // namespace: the remembered answer must not be trusted.
  proc_.Remove(201);
  proc_.Process(201, 3, "201\t7");
  EXPECT_EQ(pids_.HostPid(200, 7), std::nullopt);
  // A new pid 7 in container A is found by a new scan.
  proc_.Process(250, 2, "250\t7");
  now_ += 20s;
  EXPECT_EQ(pids_.HostPid(200, 7), 250u);
}

TEST(PidTranslator, OnThisHostThisProcessIsItself) {
  PidTranslator pids;
  const auto self = static_cast<std::uint32_t>(getpid());
  EXPECT_EQ(pids.HostPid(self, self), self);
  // A host process (kspan's namespace) may name another live one.
  const auto parent = static_cast<std::uint32_t>(getppid());
  EXPECT_EQ(pids.HostPid(self, parent), parent);
}

}  // namespace
}  // namespace kspan
