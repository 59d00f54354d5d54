#include "userspace/syscall_demand.h"

namespace kspan {

SyscallDemand::Action SyscallDemand::Update(bool wanted, Clock::time_point now) {
  if (wanted) {
    unwanted_since_.reset();
    return attached_ ? Action::kNone : Action::kAttach;
  }
  if (!attached_) return Action::kNone;
  if (!unwanted_since_) unwanted_since_ = now;
  return now - *unwanted_since_ >= linger_ ? Action::kDetach : Action::kNone;
}

}  // namespace kspan
