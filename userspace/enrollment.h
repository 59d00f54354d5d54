// Automatic enrollment: a process that sends its spans to kspan gets full
// syscall and HTTP capture (it joins the in-kernel allow-list), and its
// kernel spans wait in the correlator's join window. An instrumented
// application thus gets its kernel children with no configuration.
//
// Why a process is enrolled (one or more of):
//   configured   selected by config (capture.processes.pids): always.
//   environment  its environment says it exports traces to kspan's receiver
//                (userspace/otel_environment.h). The exec hook enrolls it
//                in the kernel from the variables' names alone, so capture
//                is on from its first instruction; the rule here reads their
//                values from /proc/<pid>/environ and takes it off again when
//                they name another collector. Holds while the process lives.
//                Processes that were running when kspan started are found by
//                a scan of /proc at start-up.
//   export       it sent spans to the receiver; ends `linger` after it last
//                sent.
//
// Which process sent a request is decided from the kernel's view of the
// connection (userspace/sender_identity.h): only a sender whose spans are its
// own is enrolled, never a pid that a payload names.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "exporter/self_metrics.h"
#include "userspace/otel_environment.h"

namespace kspan {

enum class EnrollReason { kConfigured, kEnvironment, kExport };
std::string_view EnrollReasonName(EnrollReason reason);

struct EnrolledProcess {
  std::uint32_t pid = 0;
  std::vector<EnrollReason> reasons;  // the longest-lasting first
  std::string service;                // from its environment, when known
  std::string detail;                 // the environment rule's reason
};

class Enrollment {
 public:
  // Adds or removes a pid from the in-kernel allow-list.
  using AllowFn = std::function<absl::Status(std::uint32_t pid, bool allow)>;
  using SteadyClock = std::function<std::chrono::steady_clock::time_point()>;
  // What the log says a process is ("checkout-api, container 3f2a..."); may
  // be empty.
  using Describe = std::function<std::string(std::uint32_t pid)>;
  // /proc/<pid>/environ; nullopt when it cannot be read.
  using ReadEnviron = std::function<std::optional<std::string>(std::uint32_t pid)>;
  // Whether the environment of a process that exec'd makes it a sender.
  using Verdict = std::function<void(std::uint32_t pid, bool sender)>;

  // Enrollment from the environment: the rule, the allow-list entries the
  // kernel makes from the environment (CaptureFilter::AllowPidFromEnvironment
  // and RemoveEnvironmentPid), and who hears the verdicts (the correlator).
  struct Environment {
    EnvironmentRule rule;
    AllowFn allow;
    ReadEnviron read;
    Verdict on_verdict;
  };

  // `allow` manages the agent's own allow-list entries (export). `configured`
  // pids are selected by config: never removed. kspan itself (`self`) is
  // never enrolled.
  Enrollment(AllowFn allow, std::chrono::seconds linger, std::uint32_t self,
             std::set<std::uint32_t> configured, MetricsRegistry& metrics,
             SteadyClock now = std::chrono::steady_clock::now, Describe describe = {});
  ~Enrollment();

  // The process sent spans now (any thread).
  void Seen(std::uint32_t pid);
  // Removes processes that have not sent for `linger` (unless their
  // environment keeps them), and exited ones.
  void Expire();
  // Processes enrolled automatically (export or environment), sorted.
  std::vector<std::uint32_t> Enrolled() const;
  // Every enrolled process with its reasons, configured ones included.
  std::vector<EnrolledProcess> List() const;

  // Turns on enrollment from the environment (after the receiver's ports
  // are known). Exec records are judged from then on.
  void EnableEnvironment(Environment environment);
  // Records from the process family (the ring reader's thread): queued for
  // a worker thread, which reads /proc. `otel_env` and `flags` as in
  // struct kspan_proc_event. Dropped (and counted) when the queue is full;
  // the kernel's own entry then stays as it made it.
  void PostExec(std::uint32_t pid, std::uint32_t otel_env, std::uint32_t flags);
  void PostExit(std::uint32_t pid);
  // Queues a scan of the processes running now (start-up).
  void PostScan(std::vector<std::uint32_t> pids);
  // Waits until the worker has handled everything queued so far.
  void Drain();

  // The worker's steps, synchronous (tests call them directly).
  void OnExec(std::uint32_t pid, std::uint32_t otel_env, std::uint32_t flags);
  void OnExit(std::uint32_t pid);
  void Scan(const std::vector<std::uint32_t>& pids);

 private:
  struct Entry {
    std::optional<std::chrono::steady_clock::time_point> last_export;
    bool environment = false;
    bool agent_entry = false;  // `allow_` put it on the allow-list
    std::string service;
    std::string detail;
  };
  struct Job {
    enum Kind { kExec, kExit, kScan } kind;
    std::uint32_t pid = 0;
    std::uint32_t otel_env = 0;
    std::uint32_t flags = 0;
    std::vector<std::uint32_t> pids;
  };

  // Judges `environ` (nullopt: unreadable) and records the outcome.
  // `kernel_enrolled`: the kernel put the pid on the allow-list already.
  bool Judge(std::uint32_t pid, const std::optional<std::string>& environ, bool kernel_enrolled,
             bool at_start);
  void Post(Job job);
  void Work();
  void Leave(std::uint32_t pid, Entry& e, const char* why);

  AllowFn allow_;
  const std::chrono::seconds linger_;
  const std::uint32_t self_;
  const std::set<std::uint32_t> configured_;
  SteadyClock now_;
  Describe describe_;
  MetricsRegistry& metrics_;
  mutable std::mutex mu_;
  std::map<std::uint32_t, Entry> entries_;
  std::optional<Environment> environment_;  // set once, before the worker starts
  Counter& enrolled_total_;
  Counter& left_total_;
  Counter& failed_total_;
  Counter& export_enrolled_total_;
  Counter& environment_enrolled_total_;
  Counter& environment_rejected_total_;
  Counter& environment_unreadable_total_;
  Counter& queue_full_total_;

  // The worker: exec and exit records and the start-up scan, in order.
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<Job> queue_;
  std::size_t busy_ = 0;  // jobs taken and not finished
  bool stopping_ = false;
  std::thread worker_;
};

// The pids of the processes under `proc_root` (numeric directories).
std::vector<std::uint32_t> ListProcesses(const std::string& proc_root = "/proc");

}  // namespace kspan
