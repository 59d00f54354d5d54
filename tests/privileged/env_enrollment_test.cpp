// Enrollment from the environment on the running kernel: the process
// family's exec hook reads a new image's environment, puts a process that
// exports OpenTelemetry data on the shared allow-list before it runs, and
// the exit of its last thread takes it off. The syscall family, sharing the
// filter maps, then records the process at full level from its first
// syscall, with no help from userspace.
#include <bpf/bpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/privileged/privileged.h"
#include "userspace/capture_filter.h"
#include "userspace/event_decoder.h"
#include "userspace/pin_directory.h"
#include "userspace/process_capture.h"
#include "userspace/ring_reader.h"
#include "userspace/syscall_capture.h"

namespace kspan {
namespace {

using namespace std::chrono_literals;

// Generous: the vm-tests run this under software emulation.
constexpr auto kWait = 20s;

// The variables an SDK exports with (the agent's default mask).
constexpr std::uint32_t kSenderBits = KSPAN_OTEL_ENV_ENDPOINT | KSPAN_OTEL_ENV_TRACES_ENDPOINT |
                                      KSPAN_OTEL_ENV_SERVICE_NAME | KSPAN_OTEL_ENV_TRACES_EXPORTER;

class Collector : public KernelEventHandler {
 public:
  void OnTcpConnect(const kspan_tcp_connect_event&) noexcept override {}
  void OnProcess(const kspan_proc_event& e) noexcept override {
    std::lock_guard lock(mu_);
    procs_.push_back(e);
    cv_.notify_all();
  }
  void OnSyscall(const kspan_syscall_event& e, std::string_view) noexcept override {
    std::lock_guard lock(mu_);
    syscalls_.push_back(e);
    cv_.notify_all();
  }

  // The `nth` (from 0) record of `kind` for `pid`.
  std::optional<kspan_proc_event> WaitProcess(std::uint32_t pid, std::uint32_t kind,
                                              std::size_t nth = 0) {
    std::unique_lock lock(mu_);
    std::optional<kspan_proc_event> found;
    cv_.wait_for(lock, kWait, [&] {
      std::size_t seen = 0;
      for (const auto& e : procs_) {
        if (e.pid == pid && e.kind == kind && seen++ == nth) {
          found = e;
          return true;
        }
      }
      return false;
    });
    return found;
  }

  std::optional<kspan_syscall_event> WaitSyscall(
      const std::function<bool(const kspan_syscall_event&)>& match) {
    std::unique_lock lock(mu_);
    std::optional<kspan_syscall_event> found;
    cv_.wait_for(lock, kWait, [&] {
      for (const auto& e : syscalls_) {
        if (match(e)) {
          found = e;
          return true;
        }
      }
      return false;
    });
    return found;
  }

  std::vector<kspan_syscall_event> SyscallsOf(std::uint32_t pid) {
    std::lock_guard lock(mu_);
    std::vector<kspan_syscall_event> out;
    for (const auto& e : syscalls_) {
      if (e.pid == pid) out.push_back(e);
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<kspan_proc_event> procs_;
  std::vector<kspan_syscall_event> syscalls_;
};

// `/bin/sh -c script` exec'd with exactly `env`, its stdin a pipe this side
// writes to (what the script's `read`s wait for). `preload` is in the pipe
// before the exec.
class ShellChild {
 public:
  ShellChild(const std::string& script, const std::vector<std::string>& env,
             const std::string& preload = "") {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return;
    if (!preload.empty() && write(p[1], preload.data(), preload.size()) !=
                                static_cast<ssize_t>(preload.size())) {
      close(p[0]);
      close(p[1]);
      return;
    }
    // Built before fork(): the child only calls async-signal-safe functions.
    std::vector<char*> argv = {const_cast<char*>("sh"), const_cast<char*>("-c"),
                               const_cast<char*>(script.c_str()), nullptr};
    std::vector<char*> envp;
    for (const auto& v : env) envp.push_back(const_cast<char*>(v.c_str()));
    envp.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      if (dup2(p[0], 0) != 0) _exit(126);
      execve("/bin/sh", argv.data(), envp.data());
      _exit(127);
    }
    close(p[0]);
    in_ = p[1];
  }
  ~ShellChild() { Finish(); }

  std::uint32_t pid() const { return pid_ > 0 ? static_cast<std::uint32_t>(pid_) : 0; }
  bool Send(const std::string& line) {
    return in_ >= 0 && write(in_, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  }
  // Closes its stdin (every `read` fails, the script ends) and reaps it;
  // true when it exited 0.
  bool Finish() {
    if (in_ >= 0) close(in_);
    in_ = -1;
    if (pid_ <= 0) return false;
    int status = 0;
    const bool reaped = waitpid(pid_, &status, 0) == pid_;
    pid_ = -1;
    return reaped && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }

 private:
  pid_t pid_ = -1;
  int in_ = -1;
};

// True once `pid` sleeps waiting for its stdin (from /proc/<pid>/stat and
// /proc/<pid>/syscall: in read(0, ...), or in poll, as busybox's `read`
// does first), within kWait.
bool WaitBlockedReadingStdin(std::uint32_t pid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream stat(proc + "/stat");
    std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const auto paren = all.rfind(')');
    std::ifstream sc(proc + "/syscall");
    std::string nr, fd;
    sc >> nr >> fd;
    const bool reading = nr == std::to_string(SYS_read) && fd == "0x0";
    const bool polling = nr == std::to_string(SYS_poll) || nr == std::to_string(SYS_ppoll) ||
                         nr == std::to_string(SYS_select) || nr == std::to_string(SYS_pselect6);
    if (paren != std::string::npos && paren + 2 < all.size() && all[paren + 2] == 'S' &&
        (reading || polling)) {
      return true;
    }
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

std::vector<std::string> Filler(int n) {
  std::vector<std::string> env;
  for (int i = 0; i < n; ++i) env.push_back("KSPAN_TEST_FILLER_" + std::to_string(i) + "=x");
  return env;
}

class EnvEnrollment : public ::testing::Test {
 protected:
  // The process and syscall families on one set of filter maps; syscalls
  // of processes not selected are not recorded (no slow threshold).
  void StartCapture(std::uint32_t mask, bool start_reader = true) {
    auto pins = PinDirectory::Create(::kspan::testing::TestPinDir());
    ASSERT_TRUE(pins.ok()) << pins.status();
    pins_.emplace(std::move(*pins));
    ProcessCaptureOptions popts;
    popts.pin_dir = pins_->path();
    process_ = std::make_unique<ProcessCapture>(popts);
    ASSERT_TRUE(process_->Start().ok());
    ::kspan::testing::ReportVariant("process", "tracepoint");
    SyscallCaptureOptions sopts;
    sopts.pin_dir = pins_->path();
    sopts.ring_buffer_bytes = 1 << 20;
    sopts.wakeup_bytes = 0;
    sopts.class_min = {0ns, 0ns, 0ns, 20ms};
    syscalls_ = std::make_unique<SyscallCapture>(sopts);
    absl::Status started = syscalls_->Start();
    ASSERT_TRUE(started.ok()) << started;
    auto filter = CaptureFilter::Open(pins_->path());
    ASSERT_TRUE(filter.ok()) << filter.status();
    filter_.emplace(std::move(*filter));
    ASSERT_TRUE(filter_->SetSlowThreshold(0ns).ok());
    ASSERT_TRUE(filter_->SetEnvironmentEnrollment(mask).ok());
    allow_fd_ = bpf_obj_get(pins_->PathOf("kspan_pid_allow").c_str());
    ASSERT_GE(allow_fd_, 0) << std::strerror(errno);
    ASSERT_TRUE(reader_.Add(process_->ring_fd(), "kspan_proc_ring", &decoder_).ok());
    ASSERT_TRUE(reader_.Add(syscalls_->ring_fd(), "kspan_sys_ring", &decoder_).ok());
    ASSERT_TRUE(reader_.AddPerCpu(syscalls_->record_rings(), syscalls_->bell_fd(), &decoder_).ok());
    if (start_reader) StartReader();
  }
  void StartReader() { ASSERT_TRUE(reader_.Start(10ms).ok()); }

  void TearDown() override {
    if (syscalls_) syscalls_->Detach();
    if (process_) process_->Detach();
    reader_.Stop();
    if (allow_fd_ >= 0) close(allow_fd_);
    filter_.reset();
    syscalls_.reset();
    process_.reset();
    pins_.reset();
  }

  // kspan_pid_allow's value for `pid`, read from the map itself; 0 = none.
  int AllowValue(std::uint32_t pid) const {
    std::uint8_t v = 0;
    if (bpf_map_lookup_elem(allow_fd_, &pid, &v) != 0) return 0;
    return v;
  }

  ProcessStats Stats() const { return process_->ReadStats(); }

  MetricsRegistry metrics_;
  Collector collector_;
  EventDecoder decoder_{collector_, metrics_};
  RingReader reader_;
  std::optional<PinDirectory> pins_;
  std::unique_ptr<ProcessCapture> process_;
  std::unique_ptr<SyscallCapture> syscalls_;
  std::optional<CaptureFilter> filter_;
  int allow_fd_ = -1;
};

// The child's first read of its stdin (a line already waiting in the pipe,
// so it never waits for this process) is recorded at full level although
// nothing in userspace selected the child: the ring reader is not even
// started until the child has read that line and waits for the next.
TEST_F(EnvEnrollment, SenderIsTracedFromItsFirstSyscallAndLeavesAtExit) {
  KSPAN_REQUIRE_BPF();
  StartCapture(kSenderBits, /*start_reader=*/false);
  if (HasFatalFailure()) return;
  ShellChild child("read first; read second", {"OTEL_SERVICE_NAME=checkout", "PATH=/usr/bin:/bin"},
                   "go\n");
  ASSERT_GT(child.pid(), 0u);
  ASSERT_TRUE(WaitBlockedReadingStdin(child.pid())) << "the child never waited for its second line";
  EXPECT_EQ(AllowValue(child.pid()), KSPAN_ALLOW_ENVIRONMENT);
  EXPECT_EQ(filter_->ReadConfig().pid_allow_count, 0u) << "the kernel's entry is not the agent's";
  StartReader();

  auto exec = collector_.WaitProcess(child.pid(), KSPAN_PROC_EXEC);
  ASSERT_TRUE(exec.has_value()) << "no exec record";
  EXPECT_EQ(exec->otel_env, static_cast<std::uint32_t>(KSPAN_OTEL_ENV_SERVICE_NAME));
  EXPECT_EQ(exec->flags, static_cast<std::uint32_t>(KSPAN_PROC_F_ENROLLED));
  EXPECT_EQ(AllowValue(child.pid()), KSPAN_ALLOW_ENVIRONMENT);

  // Every shell reads its first line from fd 0 with read(2).
  auto first_read = collector_.WaitSyscall([&](const kspan_syscall_event& e) {
    return e.pid == child.pid() && e.nr == SYS_read && e.fd == 0;
  });
  ASSERT_TRUE(first_read.has_value()) << "the child's first read of its stdin was not recorded";
  EXPECT_EQ(first_read->trace_level, KSPAN_TRACE_FULL);
  EXPECT_GE(first_read->start_ns, exec->ts_ns);
  EXPECT_GE(static_cast<std::int64_t>(first_read->ret), 1) << "not a read of the waiting line";
  for (const auto& e : collector_.SyscallsOf(child.pid())) {
    EXPECT_EQ(e.trace_level, KSPAN_TRACE_FULL) << "syscall " << e.nr;
    EXPECT_GE(e.start_ns, exec->ts_ns) << "syscall " << e.nr << " recorded before the exec";
  }
  EXPECT_GE(Stats()[KSPAN_PROC_STAT_ENV_ENROLLED], 1u);

  // The exit hook runs before the parent learns of the exit.
  ASSERT_TRUE(child.Send("done\n"));
  const std::uint32_t pid = child.pid();
  ASSERT_TRUE(child.Finish());
  EXPECT_EQ(AllowValue(pid), 0) << "the entry outlived the process";
  auto exit = collector_.WaitProcess(pid, KSPAN_PROC_EXIT);
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->otel_env, 0u);
  EXPECT_EQ(exit->flags, 0u);
}

// Each variable name sets its own bit; other OTEL_ variables set OTHER,
// which the sender mask leaves out; empty values and look-alikes set none.
TEST_F(EnvEnrollment, BitsPerVariableAndOnlyMaskedOnesEnroll) {
  KSPAN_REQUIRE_BPF();
  StartCapture(kSenderBits);
  if (HasFatalFailure()) return;
  struct Case {
    std::vector<std::string> env;
    std::uint32_t bits;
  };
  const std::vector<Case> cases = {
      {{"PATH=/usr/bin:/bin", "HOME=/"}, 0},
      {{}, 0},
      {{"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318"}, KSPAN_OTEL_ENV_ENDPOINT},
      {{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:4318/v1/traces"},
       KSPAN_OTEL_ENV_TRACES_ENDPOINT},
      {{"OTEL_TRACES_EXPORTER=otlp"}, KSPAN_OTEL_ENV_TRACES_EXPORTER},
      {{"OTEL_SERVICE_NAME=s"}, KSPAN_OTEL_ENV_SERVICE_NAME},
      {{"OTEL_RESOURCE_ATTRIBUTES=a=b", "OTEL_SERVICE_NAMESPACE=x", "XOTEL_SERVICE_NAME=y",
        "OTEL_SERVICE_NAME=", "OTEL_EXPORTER_OTLP_ENDPOINT=", "OTEL_SERVICE_NAM=z"},
       KSPAN_OTEL_ENV_OTHER},
      {{"A=1", "OTEL_EXPORTER_OTLP_ENDPOINT=e", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=t",
        "OTEL_SERVICE_NAME=n", "OTEL_TRACES_EXPORTER=x", "OTEL_LOGS_EXPORTER=none"},
       KSPAN_OTEL_ENV_ENDPOINT | KSPAN_OTEL_ENV_TRACES_ENDPOINT | KSPAN_OTEL_ENV_SERVICE_NAME |
           KSPAN_OTEL_ENV_TRACES_EXPORTER | KSPAN_OTEL_ENV_OTHER},
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    ShellChild child("read line", cases[i].env);
    ASSERT_GT(child.pid(), 0u);
    auto exec = collector_.WaitProcess(child.pid(), KSPAN_PROC_EXEC);
    ASSERT_TRUE(exec.has_value());
    EXPECT_EQ(exec->otel_env, cases[i].bits);
    const bool sender = (cases[i].bits & kSenderBits) != 0;
    EXPECT_EQ(exec->flags, sender ? static_cast<std::uint32_t>(KSPAN_PROC_F_ENROLLED) : 0u);
    EXPECT_EQ(AllowValue(child.pid()), sender ? KSPAN_ALLOW_ENVIRONMENT : 0);
    child.Finish();
  }
}

TEST_F(EnvEnrollment, OffRecordsNoBitsAndEnrollsNothing) {
  KSPAN_REQUIRE_BPF();
  StartCapture(0);
  if (HasFatalFailure()) return;
  ShellChild child("read line", {"OTEL_SERVICE_NAME=checkout", "OTEL_EXPORTER_OTLP_ENDPOINT=x"});
  ASSERT_GT(child.pid(), 0u);
  auto exec = collector_.WaitProcess(child.pid(), KSPAN_PROC_EXEC);
  ASSERT_TRUE(exec.has_value());
  EXPECT_EQ(exec->otel_env, 0u);
  EXPECT_EQ(exec->flags, 0u);
  EXPECT_EQ(AllowValue(child.pid()), 0);
  child.Finish();
  const auto st = Stats();
  EXPECT_EQ(st[KSPAN_PROC_STAT_ENV_ENROLLED], 0u);
  EXPECT_EQ(st[KSPAN_PROC_STAT_ENV_UNREADABLE], 0u);
}

// The scan's bounds (bpf/process.h): the first KSPAN_PROC_ENV_MAX_VARS
// variables within KSPAN_PROC_ENV_MAX_BYTES; long variables take several
// reads; a variable past a bound is not seen, and TRUNCATED says so.
TEST_F(EnvEnrollment, ScanBoundsAreExactAndTruncationIsReported) {
  KSPAN_REQUIRE_BPF();
  StartCapture(kSenderBits);
  if (HasFatalFailure()) return;
  const std::string service = "OTEL_SERVICE_NAME=checkout";
  auto with_last = [&](std::vector<std::string> env) {
    env.push_back(service);
    return env;
  };
  struct Case {
    std::string name;
    std::vector<std::string> env;
    std::uint32_t bits;
  };
  std::vector<Case> cases;
  cases.push_back({"last of the first 256 variables",
                   with_last(Filler(KSPAN_PROC_ENV_MAX_VARS - 1)), KSPAN_OTEL_ENV_SERVICE_NAME});
  cases.push_back({"variable 301 of 301", with_last(Filler(300)), KSPAN_OTEL_ENV_TRUNCATED});
  // Lengths around the 512-byte read: strlen 510, 511 (the read is full
  // and the NUL is the next read's only byte), 512, and 3000.
  std::vector<std::string> long_vars;
  for (std::size_t len : {510u, 511u, 512u, 3000u}) long_vars.push_back("L=" + std::string(len - 2, 'v'));
  cases.push_back({"after long variables", with_last(long_vars), KSPAN_OTEL_ENV_SERVICE_NAME});
  cases.push_back({"after empty strings", with_last({"", "E=", ""}), KSPAN_OTEL_ENV_SERVICE_NAME});
  // Whole variables end on the 64 KiB bound: the next one is past it.
  std::vector<std::string> block;
  for (int i = 0; i < 32; ++i) block.push_back("B=" + std::string(2048 - 3, 'b'));  // 2048 bytes with NUL
  ASSERT_EQ(block.size() * 2048, static_cast<std::size_t>(KSPAN_PROC_ENV_MAX_BYTES));
  cases.push_back({"past the byte bound", with_last(block), KSPAN_OTEL_ENV_TRUNCATED});
  block.pop_back();
  cases.push_back({"last before the byte bound", with_last(block), KSPAN_OTEL_ENV_SERVICE_NAME});

  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    ShellChild child("read line", c.env);
    ASSERT_GT(child.pid(), 0u);
    auto exec = collector_.WaitProcess(child.pid(), KSPAN_PROC_EXEC);
    ASSERT_TRUE(exec.has_value());
    EXPECT_EQ(exec->otel_env, c.bits);
    const bool sender = (c.bits & kSenderBits) != 0;
    EXPECT_EQ(AllowValue(child.pid()), sender ? KSPAN_ALLOW_ENVIRONMENT : 0);
    child.Finish();
  }
  EXPECT_EQ(Stats()[KSPAN_PROC_STAT_ENV_UNREADABLE], 0u);

  // A mask with TRUNCATED enrolls what the scan could not see to the end.
  ASSERT_TRUE(filter_->SetEnvironmentEnrollment(kSenderBits | KSPAN_OTEL_ENV_TRUNCATED).ok());
  ShellChild child("read line", with_last(Filler(300)));
  auto exec = collector_.WaitProcess(child.pid(), KSPAN_PROC_EXEC);
  ASSERT_TRUE(exec.has_value());
  EXPECT_EQ(exec->otel_env, static_cast<std::uint32_t>(KSPAN_OTEL_ENV_TRUNCATED));
  EXPECT_EQ(exec->flags, static_cast<std::uint32_t>(KSPAN_PROC_F_ENROLLED));
  EXPECT_EQ(AllowValue(child.pid()), KSPAN_ALLOW_ENVIRONMENT);
}

// An exec whose new environment no longer matches ends the enrollment the
// previous image's environment made.
TEST_F(EnvEnrollment, ExecWithoutTheVariablesEndsTheEnrollment) {
  KSPAN_REQUIRE_BPF();
  StartCapture(kSenderBits);
  if (HasFatalFailure()) return;
  ShellChild child("read a; unset OTEL_SERVICE_NAME; exec /bin/sh -c 'read b'",
                   {"OTEL_SERVICE_NAME=checkout"});
  ASSERT_GT(child.pid(), 0u);
  auto first = collector_.WaitProcess(child.pid(), KSPAN_PROC_EXEC, 0);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->flags, static_cast<std::uint32_t>(KSPAN_PROC_F_ENROLLED));
  EXPECT_EQ(AllowValue(child.pid()), KSPAN_ALLOW_ENVIRONMENT);
  ASSERT_TRUE(child.Send("next\n"));
  auto second = collector_.WaitProcess(child.pid(), KSPAN_PROC_EXEC, 1);
  ASSERT_TRUE(second.has_value()) << "no second exec";
  EXPECT_EQ(second->otel_env, 0u);
  EXPECT_EQ(second->flags, 0u);
  EXPECT_EQ(AllowValue(child.pid()), 0);
}

// The agent's entries and the kernel's: AllowPid takes an environment entry
// over (counted, and the exit hook leaves it); RemoveAllowedPid leaves an
// environment entry alone; RemoveEnvironmentPid removes only those.
TEST_F(EnvEnrollment, AgentAndKernelEntriesKeepTheirOwners) {
  KSPAN_REQUIRE_BPF();
  StartCapture(kSenderBits);
  if (HasFatalFailure()) return;
  ShellChild child("read line", {"OTEL_SERVICE_NAME=checkout"});
  ASSERT_GT(child.pid(), 0u);
  ASSERT_TRUE(collector_.WaitProcess(child.pid(), KSPAN_PROC_EXEC).has_value());
  const std::uint32_t pid = child.pid();
  ASSERT_EQ(AllowValue(pid), KSPAN_ALLOW_ENVIRONMENT);
  EXPECT_EQ(filter_->AllowSource(pid), KSPAN_ALLOW_ENVIRONMENT);

  ASSERT_TRUE(filter_->RemoveAllowedPid(pid).ok());
  EXPECT_EQ(AllowValue(pid), KSPAN_ALLOW_ENVIRONMENT) << "the agent removed the kernel's entry";
  EXPECT_EQ(filter_->ReadConfig().pid_allow_count, 0u);

  ASSERT_TRUE(filter_->AllowPid(pid).ok());
  EXPECT_EQ(AllowValue(pid), KSPAN_ALLOW_USERSPACE);
  EXPECT_EQ(filter_->ReadConfig().pid_allow_count, 1u);
  ASSERT_TRUE(filter_->AllowPid(pid).ok());  // already the agent's: no change
  EXPECT_EQ(filter_->ReadConfig().pid_allow_count, 1u);
  ASSERT_TRUE(filter_->RemoveEnvironmentPid(pid).ok());
  EXPECT_EQ(AllowValue(pid), KSPAN_ALLOW_USERSPACE) << "an agent's entry removed as the kernel's";

  // The exit hook leaves the agent's entry to the agent.
  child.Finish();
  EXPECT_EQ(AllowValue(pid), KSPAN_ALLOW_USERSPACE);
  ASSERT_TRUE(filter_->RemoveAllowedPid(pid).ok());
  EXPECT_EQ(AllowValue(pid), 0);
  EXPECT_EQ(filter_->ReadConfig().pid_allow_count, 0u);

  // The start-up scan's entry: the kernel's kind, not counted, and gone
  // with RemoveEnvironmentPid.
  ShellChild other("read line", {"PATH=/bin"});
  ASSERT_TRUE(collector_.WaitProcess(other.pid(), KSPAN_PROC_EXEC).has_value());
  ASSERT_EQ(AllowValue(other.pid()), 0);
  const std::uint32_t generation = filter_->ReadConfig().generation;
  ASSERT_TRUE(filter_->AllowPidFromEnvironment(other.pid()).ok());
  EXPECT_EQ(AllowValue(other.pid()), KSPAN_ALLOW_ENVIRONMENT);
  EXPECT_EQ(filter_->ReadConfig().pid_allow_count, 0u);
  EXPECT_NE(filter_->ReadConfig().generation, generation) << "cached trace levels not refreshed";
  ASSERT_TRUE(filter_->RemoveEnvironmentPid(other.pid()).ok());
  EXPECT_EQ(AllowValue(other.pid()), 0);
}

// The entry goes with the process's last thread, not with its leader: a
// leader that exits alone (pthread_exit() in main) leaves the process, and
// its capture, to its other threads. (A forked copy of this test, entered on the list as
// the start-up scan would; the exit hook treats it as any entry of the
// kernel's.)
TEST_F(EnvEnrollment, EntryGoesWithTheLastThreadNotTheLeader) {
  KSPAN_REQUIRE_BPF();
  StartCapture(kSenderBits);
  if (HasFatalFailure()) return;
  int leader_go[2], thread_go[2];
  ASSERT_EQ(pipe2(leader_go, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(thread_go, O_CLOEXEC), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::thread([fd = thread_go[0]] {
      char c;
      _exit(read(fd, &c, 1) == 1 ? 0 : 3);
    }).detach();
    char c;
    if (read(leader_go[0], &c, 1) != 1) _exit(2);
    // What pthread_exit() ends with, without unwinding through gtest.
    syscall(SYS_exit, 0);
  }
  close(leader_go[0]);
  close(thread_go[0]);
  const auto tgid = static_cast<std::uint32_t>(pid);
  ASSERT_TRUE(filter_->AllowPidFromEnvironment(tgid).ok());
  ASSERT_EQ(AllowValue(tgid), KSPAN_ALLOW_ENVIRONMENT);

  ASSERT_EQ(write(leader_go[1], "g", 1), 1);
  // The leader's exit is the process's exit record.
  ASSERT_TRUE(collector_.WaitProcess(tgid, KSPAN_PROC_EXIT).has_value()) << "the leader did not exit";
  EXPECT_EQ(AllowValue(tgid), KSPAN_ALLOW_ENVIRONMENT) << "the entry went with the leader";

  ASSERT_EQ(write(thread_go[1], "g", 1), 1);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(AllowValue(tgid), 0) << "the entry outlived the last thread";
  close(leader_go[1]);
  close(thread_go[1]);
}

}  // namespace
}  // namespace kspan
