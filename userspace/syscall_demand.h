// When the syscall family's enter and exit programs should be attached.
//
// While attached they put every syscall of every process on the kernel's
// syscall tracing path (some 200 ns per syscall on the benchmark VM, for
// processes kspan does not trace too), so the agent attaches them only while
// some process needs them: one is selected (pid, comm prefix, cgroup),
// enrolled (it exports spans, or its environment says it does), or the
// host-wide slow-syscall threshold is set where no sched_switch watch can
// take it over. This is the decision alone, a state machine without I/O:
// the agent feeds it what it reads from the filter maps and applies its
// answer to SyscallCapture.
//
// Attach at once when wanted; detach only once unwanted for `linger`, so a
// host where enrolled processes come and go every few seconds does not pay
// an attach and a detach (each walks every thread of the host to set or
// clear its syscall-tracing flag) per process.
#pragma once

#include <chrono>
#include <optional>

namespace kspan {

class SyscallDemand {
 public:
  enum class Action { kNone, kAttach, kDetach };
  using Clock = std::chrono::steady_clock;

  SyscallDemand(bool attached, Clock::duration linger) : attached_(attached), linger_(linger) {}

  // What to do now that the hooks are `wanted` (or not).
  Action Update(bool wanted, Clock::time_point now);
  // Records whether the hooks are attached after the caller applied an
  // action (an attach the kernel refused leaves them detached, and the next
  // Update asks again).
  void Set(bool attached) { attached_ = attached; }
  bool attached() const { return attached_; }

 private:
  bool attached_;
  Clock::duration linger_;
  std::optional<Clock::time_point> unwanted_since_;
};

}  // namespace kspan
