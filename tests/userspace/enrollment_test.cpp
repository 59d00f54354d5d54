// Enrollment: a process that sends its own spans joins the allow-list and
// leaves it after it stops (or exits); configured processes and kspan itself
// are left alone.
#include "userspace/enrollment.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vector>

namespace kspan {
namespace {

using namespace std::chrono_literals;

class EnrollmentTest : public ::testing::Test {
 protected:
  std::unique_ptr<Enrollment> Make(std::set<std::uint32_t> configured = {}) {
    return std::make_unique<Enrollment>(
        [this](std::uint32_t pid, bool allow) {
          calls_.push_back({pid, allow});
          return absl::OkStatus();
        },
        60s, /*self=*/777777, std::move(configured), metrics_, [this] { return now_; });
  }
  MetricsRegistry metrics_;
  std::chrono::steady_clock::time_point now_{std::chrono::seconds(5000)};
  std::vector<std::pair<std::uint32_t, bool>> calls_;
};

TEST_F(EnrollmentTest, SenderJoinsOnceAndLeavesAfterLinger) {
  auto e = Make();
  const auto me = static_cast<std::uint32_t>(getpid());  // a live process
  e->Seen(me);
  e->Seen(me);
  ASSERT_EQ(calls_.size(), 1u);
  EXPECT_EQ(calls_[0], std::make_pair(me, true));
  EXPECT_EQ(e->Enrolled(), std::vector<std::uint32_t>{me});
  now_ += 59s;
  e->Seen(me);  // still sending: the linger restarts
  now_ += 59s;
  e->Expire();
  EXPECT_EQ(calls_.size(), 1u);
  now_ += 2s;
  e->Expire();
  ASSERT_EQ(calls_.size(), 2u);
  EXPECT_EQ(calls_[1], std::make_pair(me, false));
  EXPECT_TRUE(e->Enrolled().empty());
  EXPECT_EQ(metrics_.CounterTotal("kspan_enrollment_joined_total"), 1u);
  EXPECT_EQ(metrics_.CounterTotal("kspan_enrollment_left_total"), 1u);
}

TEST_F(EnrollmentTest, ExitedProcessLeavesAtOnce) {
  auto e = Make();
  pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  waitpid(child, nullptr, 0);
  e->Seen(static_cast<std::uint32_t>(child));
  e->Expire();
  EXPECT_TRUE(e->Enrolled().empty());
  ASSERT_EQ(calls_.size(), 2u);
  EXPECT_FALSE(calls_[1].second);
}

TEST_F(EnrollmentTest, ConfiguredProcessesAndKspanItselfAreLeftAlone) {
  auto e = Make({4242});
  e->Seen(4242);
  e->Seen(777777);
  e->Seen(0);
  EXPECT_TRUE(calls_.empty());
}

TEST_F(EnrollmentTest, RefusedEnrollmentIsCountedAndRetriedOnTheNextRequest) {
  int refusals = 1;
  Enrollment e(
      [&](std::uint32_t, bool) {
        return refusals-- > 0 ? absl::ResourceExhaustedError("allow-list full") : absl::OkStatus();
      },
      60s, 1, {}, metrics_, [this] { return now_; });
  const auto me = static_cast<std::uint32_t>(getpid());
  e.Seen(me);
  EXPECT_TRUE(e.Enrolled().empty());
  EXPECT_EQ(metrics_.CounterTotal("kspan_enrollment_failed_total"), 1u);
  e.Seen(me);
  EXPECT_EQ(e.Enrolled(), std::vector<std::uint32_t>{me});
}

TEST_F(EnrollmentTest, EnrolledProcessesLeaveWhenKspanStops) {
  {
    auto e = Make();
    e->Seen(static_cast<std::uint32_t>(getpid()));
  }
  ASSERT_EQ(calls_.size(), 2u);
  EXPECT_FALSE(calls_[1].second);
}

}  // namespace
}  // namespace kspan
