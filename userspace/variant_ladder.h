// The variant ladder every capture family loads by: candidates (attach
// variants, and within one the optional programs) tried in order, each
// through the loader's stages (open, configure, load, attach); a refused
// one is destroyed and the next tried, and why it was refused is kept for
// the one log line that names the candidate taken. A refusal with
// InvalidArgument is the configuration's fault, not the kernel's: the
// ladder stops there.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_join.h"
#include "exporter/status_macros.h"

namespace kspan {

class VariantLadder {
 public:
  // A candidate left out before any attempt (the kernel cannot have it),
  // reported with the refusals.
  void NotTried(std::string reason) { refused_.push_back(std::move(reason)); }

  // Tries candidates 0..count-1 in order: `skip(i)` passes one over (one
  // like it was refused already), `stages(i)` runs the loader's stages for
  // it, `destroy()` undoes a refused one, and the refusal is kept as
  // "<label(i)>: <message>". The index of the candidate taken, or the last
  // refusal (or NotFound when every candidate was skipped).
  absl::StatusOr<std::size_t> Climb(std::size_t count, absl::FunctionRef<bool(std::size_t)> skip,
                                    absl::FunctionRef<absl::Status(std::size_t)> stages,
                                    absl::FunctionRef<void()> destroy,
                                    absl::FunctionRef<std::string(std::size_t)> label) {
    absl::Status last = absl::NotFoundError("no variant to try");
    for (std::size_t i = 0; i < count; ++i) {
      if (skip(i)) continue;
      last = stages(i);
      if (last.ok()) return i;
      if (last.code() == absl::StatusCode::kInvalidArgument) return last;
      refused_.push_back(label(i) + ": " + std::string(last.message()));
      destroy();
    }
    return last;
  }

  // Climb over every candidate with the usual stages of `loader`: Open,
  // Configure, Load and Attach, after `choose(i)` has set which candidate
  // they load.
  template <typename Loader>
  absl::StatusOr<std::size_t> ClimbStages(std::size_t count, Loader& loader,
                                          absl::FunctionRef<void(std::size_t)> choose,
                                          absl::FunctionRef<void()> destroy,
                                          absl::FunctionRef<std::string(std::size_t)> label) {
    return Climb(
        count, [](std::size_t) { return false; },
        [&](std::size_t i) -> absl::Status {
          choose(i);
          KSPAN_RETURN_IF_ERROR(loader.Open());
          KSPAN_RETURN_IF_ERROR(loader.Configure());
          KSPAN_RETURN_IF_ERROR(loader.Load());
          return loader.Attach();
        },
        destroy, label);
  }

  bool any_refused() const { return !refused_.empty(); }
  // The refusals so far, "; "-separated.
  std::string refused() const { return absl::StrJoin(refused_, "; "); }

 private:
  std::vector<std::string> refused_;
};

}  // namespace kspan
