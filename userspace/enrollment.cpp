#include "userspace/enrollment.h"

#include <unistd.h>

#include "spdlog/spdlog.h"

namespace kspan {

Enrollment::Enrollment(AllowFn allow, std::chrono::seconds linger, std::uint32_t self,
                       std::set<std::uint32_t> configured, MetricsRegistry& metrics,
                       SteadyClock now, Describe describe)
    : allow_(std::move(allow)),
      linger_(linger),
      self_(self),
      configured_(std::move(configured)),
      now_(std::move(now)),
      describe_(std::move(describe)),
      metrics_(metrics),
      enrolled_total_(metrics.GetCounter(
          "kspan_enrollment_joined_total",
          "Processes enrolled for full capture because they sent spans to the receiver.")),
      left_total_(metrics.GetCounter(
          "kspan_enrollment_left_total",
          "Enrolled processes removed after they stopped sending or exited.")),
      failed_total_(metrics.GetCounter("kspan_enrollment_failed_total",
                                       "Enrollments the in-kernel allow-list refused.")) {
  metrics.AddCallbackGauge(
      "kspan_enrollment_processes", "Processes enrolled by the spans they send.", {},
      [this] {
        std::lock_guard lock(mu_);
        return static_cast<double>(last_seen_.size());
      },
      this);
}

Enrollment::~Enrollment() {
  metrics_.RemoveCallbacks(this);
  std::lock_guard lock(mu_);
  for (const auto& [pid, seen] : last_seen_) {
    (void)seen;
    (void)allow_(pid, false);
  }
  last_seen_.clear();
}

void Enrollment::Seen(std::uint32_t pid) {
  if (pid == 0 || pid == self_ || configured_.contains(pid)) return;
  std::lock_guard lock(mu_);
  auto [it, inserted] = last_seen_.try_emplace(pid, now_());
  if (!inserted) {
    it->second = now_();
    return;
  }
  if (absl::Status s = allow_(pid, true); !s.ok()) {
    failed_total_.Add();
    last_seen_.erase(it);
    spdlog::warn("enrollment: cannot select process {} for capture: {}", pid, s.ToString());
    return;
  }
  enrolled_total_.Add();
  const std::string what = describe_ ? describe_(pid) : std::string();
  spdlog::info("enrollment: process {}{}{}{} sends its spans: syscall and HTTP capture on", pid,
               what.empty() ? "" : " (", what, what.empty() ? "" : ")");
}

void Enrollment::Expire() {
  std::lock_guard lock(mu_);
  const auto now = now_();
  for (auto it = last_seen_.begin(); it != last_seen_.end();) {
    const bool gone = access(("/proc/" + std::to_string(it->first)).c_str(), F_OK) != 0;
    if (!gone && now - it->second < linger_) {
      ++it;
      continue;
    }
    (void)allow_(it->first, false);
    left_total_.Add();
    spdlog::info("enrollment: process {} {}: capture back to the default", it->first,
                 gone ? "exited" : "stopped sending spans");
    it = last_seen_.erase(it);
  }
}

std::vector<std::uint32_t> Enrollment::Enrolled() const {
  std::lock_guard lock(mu_);
  std::vector<std::uint32_t> out;
  for (const auto& [pid, seen] : last_seen_) out.push_back(pid);
  return out;
}

}  // namespace kspan
