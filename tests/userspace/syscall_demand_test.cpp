// When the syscall enter and exit programs are attached: at once when a
// process needs them, detached only after nothing has for the linger.
#include "userspace/syscall_demand.h"

#include <gtest/gtest.h>

namespace kspan {
namespace {

using namespace std::chrono_literals;
using Action = SyscallDemand::Action;

const SyscallDemand::Clock::time_point t0{};

TEST(SyscallDemand, AttachesAtOnceWhenWanted) {
  SyscallDemand d(/*attached=*/false, 30s);
  EXPECT_EQ(d.Update(false, t0), Action::kNone);
  EXPECT_EQ(d.Update(true, t0 + 1s), Action::kAttach);
  d.Set(true);
  EXPECT_TRUE(d.attached());
  EXPECT_EQ(d.Update(true, t0 + 2s), Action::kNone);
}

TEST(SyscallDemand, DetachesOnlyAfterUnwantedForTheLinger) {
  SyscallDemand d(/*attached=*/true, 30s);
  EXPECT_EQ(d.Update(false, t0), Action::kNone);
  EXPECT_EQ(d.Update(false, t0 + 29s), Action::kNone);
  EXPECT_EQ(d.Update(false, t0 + 30s), Action::kDetach);
  d.Set(false);
  EXPECT_EQ(d.Update(false, t0 + 31s), Action::kNone);
}

TEST(SyscallDemand, WantedAgainRestartsTheLinger) {
  SyscallDemand d(/*attached=*/true, 30s);
  EXPECT_EQ(d.Update(false, t0), Action::kNone);
  EXPECT_EQ(d.Update(true, t0 + 20s), Action::kNone);  // still attached: nothing to do
  EXPECT_EQ(d.Update(false, t0 + 25s), Action::kNone);
  EXPECT_EQ(d.Update(false, t0 + 50s), Action::kNone);  // 25 s unwanted, not 50
  EXPECT_EQ(d.Update(false, t0 + 55s), Action::kDetach);
}

TEST(SyscallDemand, RefusedAttachIsAskedForAgain) {
  SyscallDemand d(/*attached=*/false, 30s);
  EXPECT_EQ(d.Update(true, t0), Action::kAttach);
  d.Set(false);  // the kernel refused
  EXPECT_EQ(d.Update(true, t0 + 1s), Action::kAttach);
}

TEST(SyscallDemand, ZeroLingerDetachesOnTheFirstUnwantedUpdate) {
  SyscallDemand d(/*attached=*/true, 0s);
  EXPECT_EQ(d.Update(false, t0), Action::kDetach);
}

}  // namespace
}  // namespace kspan
