// Automatic enrollment: a process that sends its own spans to kspan's
// receiver gets full syscall and HTTP capture (it joins the in-kernel
// allow-list), and leaves it again some time after it stops sending. An
// instrumented application thus gets its kernel children with no
// configuration.
//
// Which process sent a request is decided from the kernel's view of the
// connection (userspace/sender_identity.h): only a sender whose spans are its
// own is enrolled, never a pid that a payload names.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "exporter/self_metrics.h"

namespace kspan {

class Enrollment {
 public:
  // Adds or removes a pid from the in-kernel allow-list.
  using AllowFn = std::function<absl::Status(std::uint32_t pid, bool allow)>;
  using SteadyClock = std::function<std::chrono::steady_clock::time_point()>;
  // What the log says a process is ("checkout-api, container 3f2a..."); may
  // be empty.
  using Describe = std::function<std::string(std::uint32_t pid)>;

  // `configured` pids are selected by config: never removed. kspan itself
  // (`self`) is never enrolled.
  Enrollment(AllowFn allow, std::chrono::seconds linger, std::uint32_t self,
             std::set<std::uint32_t> configured, MetricsRegistry& metrics,
             SteadyClock now = std::chrono::steady_clock::now, Describe describe = {});
  ~Enrollment();

  // The process sent spans now (any thread).
  void Seen(std::uint32_t pid);
  // Removes processes that have not sent for `linger`, and exited ones.
  void Expire();
  std::vector<std::uint32_t> Enrolled() const;

 private:
  AllowFn allow_;
  const std::chrono::seconds linger_;
  const std::uint32_t self_;
  const std::set<std::uint32_t> configured_;
  SteadyClock now_;
  Describe describe_;
  MetricsRegistry& metrics_;
  mutable std::mutex mu_;
  std::map<std::uint32_t, std::chrono::steady_clock::time_point> last_seen_;
  Counter& enrolled_total_;
  Counter& left_total_;
  Counter& failed_total_;
};

}  // namespace kspan
