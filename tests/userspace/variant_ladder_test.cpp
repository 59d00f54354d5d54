#include "userspace/variant_ladder.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kspan {
namespace {

// A loader's view of the ladder: which candidates ran their stages, which
// were destroyed, and what the log line is given.
struct Loader {
  std::vector<absl::Status> outcomes;  // what stages(i) returns
  std::vector<std::size_t> tried;
  int destroyed = 0;

  absl::StatusOr<std::size_t> Climb(VariantLadder& ladder, std::vector<std::size_t> skipped = {}) {
    return ladder.Climb(
        outcomes.size(),
        [&](std::size_t i) {
          for (auto s : skipped) {
            if (s == i) return true;
          }
          return false;
        },
        [&](std::size_t i) {
          tried.push_back(i);
          return outcomes[i];
        },
        [&] { ++destroyed; }, [](std::size_t i) { return "v" + std::to_string(i); });
  }
};

TEST(VariantLadder, TakesTheFirstThatLoadsAndKeepsWhyTheOthersWereRefused) {
  VariantLadder ladder;
  ladder.NotTried("v9: the kernel has no such hook");
  Loader l{{absl::InternalError("verifier said no"), absl::OkStatus(), absl::OkStatus()}};
  auto taken = l.Climb(ladder);
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ(*taken, 1u);
  EXPECT_EQ(l.tried, (std::vector<std::size_t>{0, 1}));
  EXPECT_EQ(l.destroyed, 1);  // the refused one, not the one taken
  EXPECT_TRUE(ladder.any_refused());
  EXPECT_EQ(ladder.refused(), "v9: the kernel has no such hook; v0: verifier said no");
}

TEST(VariantLadder, SkippedCandidatesAreNotTried) {
  VariantLadder ladder;
  Loader l{{absl::OkStatus(), absl::InternalError("refused"), absl::OkStatus()}};
  auto taken = l.Climb(ladder, {0});
  ASSERT_TRUE(taken.ok());
  EXPECT_EQ(*taken, 2u);
  EXPECT_EQ(l.tried, (std::vector<std::size_t>{1, 2}));
  EXPECT_EQ(ladder.refused(), "v1: refused");
}

TEST(VariantLadder, AConfigurationErrorStopsTheLadder) {
  VariantLadder ladder;
  Loader l{{absl::InvalidArgumentError("no pin directory"), absl::OkStatus()}};
  auto taken = l.Climb(ladder);
  ASSERT_FALSE(taken.ok());
  EXPECT_EQ(taken.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(l.tried, (std::vector<std::size_t>{0}));
  EXPECT_EQ(l.destroyed, 0);
}

TEST(VariantLadder, EveryCandidateRefusedGivesTheLastRefusal) {
  VariantLadder ladder;
  Loader l{{absl::InternalError("a"), absl::PermissionDeniedError("b")}};
  auto taken = l.Climb(ladder);
  ASSERT_FALSE(taken.ok());
  EXPECT_EQ(taken.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(l.destroyed, 2);
  EXPECT_EQ(ladder.refused(), "v0: a; v1: b");
  VariantLadder none;
  Loader empty;
  EXPECT_EQ(empty.Climb(none).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(none.any_refused());
}

}  // namespace
}  // namespace kspan
