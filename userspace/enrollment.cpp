#include "userspace/enrollment.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>

#include "absl/strings/numbers.h"
#include "bpf/process.h"
#include "exporter/terminal_text.h"
#include "spdlog/spdlog.h"

namespace kspan {
namespace {

// Exec and exit records waiting for the worker. Execs of processes with
// OpenTelemetry variables are rare; a burst beyond this is dropped and
// counted (the kernel's own entry stays as the exec hook made it).
constexpr std::size_t kMaxQueued = 16384;

bool Gone(std::uint32_t pid) { return access(("/proc/" + std::to_string(pid)).c_str(), F_OK) != 0; }

// " (checkout, container 3f2a...)" or "".
std::string InParens(const std::string& what) { return what.empty() ? what : " (" + what + ")"; }

}  // namespace

std::string_view EnrollReasonName(EnrollReason reason) {
  switch (reason) {
    case EnrollReason::kConfigured:
      return "configured";
    case EnrollReason::kEnvironment:
      return "environment";
    case EnrollReason::kExport:
      return "export";
  }
  return "export";
}

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
                                       "Enrollments the in-kernel allow-list refused.")),
      export_enrolled_total_(metrics.GetCounter(
          "kspan_enrollment_enrolled_total", "Processes enrolled for full capture, by reason.",
          {{"reason", "export"}})),
      environment_enrolled_total_(metrics.GetCounter(
          "kspan_enrollment_enrolled_total", "Processes enrolled for full capture, by reason.",
          {{"reason", "environment"}})),
      environment_rejected_total_(metrics.GetCounter(
          "kspan_enrollment_environment_rejected_total",
          "Processes whose OpenTelemetry variables the exec hook saw but whose values do not "
          "name kspan's receiver (correlation.enroll_from_environment): not enrolled.")),
      environment_unreadable_total_(metrics.GetCounter(
          "kspan_enrollment_environment_unreadable_total",
          "Execs whose /proc/<pid>/environ could not be read (the process was gone): the "
          "kernel's view of the variables was kept.")),
      queue_full_total_(metrics.GetCounter(
          "kspan_enrollment_queue_full_total",
          "Exec and exit records not judged because the enrollment worker's queue was full.")) {
  metrics.GetCounter("kspan_enrollment_enrolled_total",
                     "Processes enrolled for full capture, by reason.", {{"reason", "configured"}})
      .Add(configured_.size());
  metrics.AddCallbackGauge(
      "kspan_enrollment_processes", "Processes enrolled by the spans they send.", {},
      [this] {
        std::lock_guard lock(mu_);
        return static_cast<double>(std::count_if(entries_.begin(), entries_.end(), [](const auto& kv) {
          return kv.second.last_export.has_value();
        }));
      },
      this);
  for (EnrollReason reason : {EnrollReason::kConfigured, EnrollReason::kEnvironment, EnrollReason::kExport}) {
    metrics.AddCallbackGauge(
        "kspan_enrollment_enrolled_processes",
        "Processes enrolled for full capture now, by reason (a process may have several).",
        {{"reason", std::string(EnrollReasonName(reason))}},
        [this, reason] {
          if (reason == EnrollReason::kConfigured) return static_cast<double>(configured_.size());
          std::lock_guard lock(mu_);
          return static_cast<double>(std::count_if(entries_.begin(), entries_.end(), [reason](const auto& kv) {
            return reason == EnrollReason::kEnvironment ? kv.second.environment
                                                        : kv.second.last_export.has_value();
          }));
        },
        this);
  }
}

Enrollment::~Enrollment() {
  {
    std::lock_guard lock(queue_mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  metrics_.RemoveCallbacks(this);
  std::lock_guard lock(mu_);
  for (const auto& [pid, e] : entries_) {
    if (e.agent_entry) (void)allow_(pid, false);
    if (e.environment && environment_) (void)environment_->allow(pid, false);
  }
  entries_.clear();
}

void Enrollment::Seen(std::uint32_t pid) {
  if (pid == 0 || pid == self_ || configured_.contains(pid)) return;
  std::lock_guard lock(mu_);
  auto [it, inserted] = entries_.try_emplace(pid);
  Entry& e = it->second;
  if (e.last_export) {
    e.last_export = now_();
    return;
  }
  // Enrolled from its environment: its capture is on already (the kernel's
  // entry stays until it exits).
  if (!e.environment) {
    if (absl::Status s = allow_(pid, true); !s.ok()) {
      failed_total_.Add();
      entries_.erase(it);
      spdlog::warn("enrollment: cannot select process {} for capture: {}", pid, s.ToString());
      return;
    }
    e.agent_entry = true;
  }
  e.last_export = now_();
  enrolled_total_.Add();
  export_enrolled_total_.Add();
  const std::string what = describe_ ? describe_(pid) : std::string();
  if (e.environment) {
    spdlog::debug("enrollment: process {}{} sends its spans (enrolled from its environment)", pid,
                  InParens(what));
  } else {
    spdlog::info("enrollment: process {}{} sends its spans: syscall and HTTP capture on", pid,
                 InParens(what));
  }
}

void Enrollment::Leave(std::uint32_t pid, Entry& e, const char* why) {
  if (e.agent_entry) (void)allow_(pid, false);
  if (e.environment && environment_) (void)environment_->allow(pid, false);
  left_total_.Add();
  spdlog::info("enrollment: process {} {}: capture back to the default", pid, why);
}

void Enrollment::Expire() {
  std::lock_guard lock(mu_);
  const auto now = now_();
  for (auto it = entries_.begin(); it != entries_.end();) {
    const std::uint32_t pid = it->first;
    Entry& e = it->second;
    if (Gone(pid)) {
      Leave(pid, e, "exited");
      it = entries_.erase(it);
      continue;
    }
    if (!e.last_export || now - *e.last_export < linger_) {
      ++it;
      continue;
    }
    e.last_export.reset();
    if (!e.environment) {
      Leave(pid, e, "stopped sending spans");
      it = entries_.erase(it);
      continue;
    }
    // Its environment keeps it: the agent's entry (if it made one) becomes
    // an environment entry again, which the exit hook removes.
    if (e.agent_entry) {
      (void)allow_(pid, false);
      e.agent_entry = false;
      if (absl::Status s = environment_->allow(pid, true); !s.ok()) {
        failed_total_.Add();
        spdlog::warn("enrollment: cannot keep process {} selected: {}", pid, s.ToString());
      }
    }
    ++it;
  }
}

std::vector<std::uint32_t> Enrollment::Enrolled() const {
  std::lock_guard lock(mu_);
  std::vector<std::uint32_t> out;
  for (const auto& [pid, e] : entries_) out.push_back(pid);
  return out;
}

std::vector<EnrolledProcess> Enrollment::List() const {
  std::vector<EnrolledProcess> out;
  std::lock_guard lock(mu_);
  for (std::uint32_t pid : configured_) {
    EnrolledProcess p{.pid = pid, .reasons = {EnrollReason::kConfigured}, .service = {}, .detail = {}};
    out.push_back(std::move(p));
  }
  for (const auto& [pid, e] : entries_) {
    EnrolledProcess p{.pid = pid, .reasons = {}, .service = e.service, .detail = e.detail};
    if (e.environment) p.reasons.push_back(EnrollReason::kEnvironment);
    if (e.last_export) p.reasons.push_back(EnrollReason::kExport);
    out.push_back(std::move(p));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.pid < b.pid; });
  return out;
}

void Enrollment::EnableEnvironment(Environment environment) {
  {
    std::lock_guard lock(mu_);
    environment_ = std::move(environment);
  }
  std::lock_guard lock(queue_mu_);
  if (!worker_.joinable()) worker_ = std::thread([this] { Work(); });
}

void Enrollment::PostExec(std::uint32_t pid, std::uint32_t otel_env, std::uint32_t flags) {
  if (otel_env == 0 && (flags & KSPAN_PROC_F_ENROLLED) == 0) {
    // Most execs: only one that replaces an enrolled image matters.
    std::lock_guard lock(mu_);
    auto it = entries_.find(pid);
    if (it == entries_.end() || !it->second.environment) return;
  }
  Post(Job{.kind = Job::kExec, .pid = pid, .otel_env = otel_env, .flags = flags, .pids = {}});
}

void Enrollment::PostExit(std::uint32_t pid) {
  bool known = false;
  {
    std::lock_guard lock(mu_);
    known = entries_.contains(pid);
  }
  {
    // Most exits: of a process never enrolled, with no exec of it still to
    // be judged (nothing queued or in hand).
    std::lock_guard lock(queue_mu_);
    if (!known && queue_.empty() && busy_ == 0) return;
  }
  Post(Job{.kind = Job::kExit, .pid = pid, .otel_env = 0, .flags = 0, .pids = {}});
}

void Enrollment::PostScan(std::vector<std::uint32_t> pids) {
  Post(Job{.kind = Job::kScan, .pid = 0, .otel_env = 0, .flags = 0, .pids = std::move(pids)});
}

void Enrollment::Post(Job job) {
  {
    std::lock_guard lock(queue_mu_);
    if (!worker_.joinable()) return;  // enrollment from the environment is off
    if (queue_.size() >= kMaxQueued) {
      queue_full_total_.Add();
      return;
    }
    queue_.push_back(std::move(job));
  }
  queue_cv_.notify_all();
}

void Enrollment::Drain() {
  std::unique_lock lock(queue_mu_);
  queue_cv_.wait(lock, [this] { return stopping_ || (queue_.empty() && busy_ == 0); });
}

void Enrollment::Work() {
  std::unique_lock lock(queue_mu_);
  while (true) {
    queue_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    Job job = std::move(queue_.front());
    queue_.pop_front();
    ++busy_;
    lock.unlock();
    switch (job.kind) {
      case Job::kExec:
        OnExec(job.pid, job.otel_env, job.flags);
        break;
      case Job::kExit:
        OnExit(job.pid);
        break;
      case Job::kScan:
        Scan(job.pids);
        break;
    }
    lock.lock();
    --busy_;
    if (queue_.empty() && busy_ == 0) queue_cv_.notify_all();
  }
}

void Enrollment::OnExec(std::uint32_t pid, std::uint32_t otel_env, std::uint32_t flags) {
  if (!environment_ || pid == 0 || pid == self_ || configured_.contains(pid)) return;
  const bool kernel_enrolled = (flags & KSPAN_PROC_F_ENROLLED) != 0;
  if (otel_env == 0 && !kernel_enrolled) {
    // A new image without OpenTelemetry variables: what the old one's
    // environment said no longer holds.
    std::lock_guard lock(mu_);
    auto it = entries_.find(pid);
    if (it == entries_.end() || !it->second.environment) return;
    it->second.environment = false;
    (void)environment_->allow(pid, false);
    if (!it->second.last_export) entries_.erase(it);
    if (environment_->on_verdict) environment_->on_verdict(pid, false);
    return;
  }
  Judge(pid, environment_->read(pid), kernel_enrolled, false);
}

bool Enrollment::Judge(std::uint32_t pid, const std::optional<std::string>& environ,
                       bool kernel_enrolled, bool at_start) {
  EnvironmentVerdict v;
  // A process that exited before its environment was read (or a zombie's,
  // which reads empty): the kernel's scan of the variables stands.
  if (!environ || environ->empty()) {
    if (at_start) return false;
    environment_unreadable_total_.Add();
    v.exports_here = kernel_enrolled;
    v.reason = "its environment could not be read (it exited): the exec hook's view of its variables stands";
  } else {
    v = JudgeEnvironment(ParseOtelEnvironment(*environ), environment_->rule);
  }
  bool sender = v.exports_here;
  {
    std::lock_guard lock(mu_);
    if (sender) {
      // The exec hook enrolls on the variables' names; the start-up scan
      // and `any` may enroll where it did not.
      if (!kernel_enrolled) {
        if (absl::Status s = environment_->allow(pid, true); !s.ok()) {
          failed_total_.Add();
          spdlog::warn("enrollment: cannot select process {} for capture: {}", pid, s.ToString());
          sender = false;
        }
      }
    } else if (kernel_enrolled) {
      environment_rejected_total_.Add();
      (void)environment_->allow(pid, false);
    }
    if (sender) {
      Entry& e = entries_[pid];
      const bool was = e.environment;
      e.environment = true;
      e.service = v.service_name;
      e.detail = v.reason;
      if (!was) environment_enrolled_total_.Add();
    } else if (auto it = entries_.find(pid); it != entries_.end() && it->second.environment) {
      it->second.environment = false;
      if (!it->second.last_export) entries_.erase(it);
    }
  }
  if (sender) {
    std::string what = describe_ ? describe_(pid) : std::string();
    if (what.empty()) what = EscapeForTerminal(v.service_name);
    spdlog::info("enrollment: process {}{} exports to kspan ({}): syscall and HTTP capture on{}", pid,
                 InParens(what), v.reason, at_start ? "" : " from its start");
  } else if (kernel_enrolled) {
    spdlog::debug("enrollment: process {} not enrolled from its environment: {}", pid, v.reason);
  }
  // At start-up only the senders: nothing expected the others.
  if (environment_->on_verdict && (sender || !at_start)) environment_->on_verdict(pid, sender);
  return sender;
}

void Enrollment::OnExit(std::uint32_t pid) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(pid);
  if (it == entries_.end()) return;
  // The exit hook has removed the kernel's environment entry already.
  it->second.environment = false;
  Leave(pid, it->second, "exited");
  entries_.erase(it);
}

void Enrollment::Scan(const std::vector<std::uint32_t>& pids) {
  if (!environment_) return;
  std::size_t enrolled = 0;
  for (std::uint32_t pid : pids) {
    if (pid == 0 || pid == self_ || configured_.contains(pid)) continue;
    if (Judge(pid, environment_->read(pid), false, true)) ++enrolled;
  }
  spdlog::info("enrollment: {} of {} running process(es) export to kspan by their environment "
               "(correlation.enroll_from_environment: {})",
               enrolled, pids.size(), EnvironmentEnrollModeName(environment_->rule.mode));
}

std::vector<std::uint32_t> ListProcesses(const std::string& proc_root) {
  std::vector<std::uint32_t> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(proc_root, ec)) {
    std::uint32_t pid = 0;
    if (absl::SimpleAtoi(entry.path().filename().string(), &pid) && pid > 0) out.push_back(pid);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace kspan
