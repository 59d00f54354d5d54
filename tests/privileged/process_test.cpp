// The process family on the running kernel: a child that execs a known
// binary and exits, a thread that exits, and the order in which the ring
// reader delivers a process record and a later record of another ring.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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
#include "userspace/event_decoder.h"
#include "userspace/pin_directory.h"
#include "userspace/process_capture.h"
#include "userspace/ring_reader.h"
#include "userspace/tcp_capture.h"

namespace kspan {
namespace {

using namespace std::chrono_literals;

// Present on the host and, as a busybox applet, in the vm-tests guests.
constexpr char kTrue[] = "/bin/true";

std::uint64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

std::string Str(const char* s, std::size_t n) { return std::string(s, strnlen(s, n)); }

// The cgroup v2 id of this process (the inode of its cgroup directory), or
// nullopt when no cgroup2 hierarchy is mounted.
std::optional<std::uint64_t> OwnCgroupId() {
  std::ifstream mounts("/proc/self/mounts");
  std::string line;
  std::string root;
  while (std::getline(mounts, line)) {
    std::istringstream in(line);
    std::string dev, dir, type;
    in >> dev >> dir >> type;
    if (type == "cgroup2") {
      root = dir;
      break;
    }
  }
  if (root.empty()) return std::nullopt;
  std::ifstream cgroups("/proc/self/cgroup");
  while (std::getline(cgroups, line)) {
    if (line.rfind("0::", 0) != 0) continue;
    struct stat st {};
    if (stat((root + line.substr(3)).c_str(), &st) != 0) return std::nullopt;
    return static_cast<std::uint64_t>(st.st_ino);
  }
  return std::nullopt;
}

// Every decoded record, in delivery order, for the tests to look up.
class Recorder : public KernelEventHandler {
 public:
  struct Entry {
    bool is_process = false;
    kspan_proc_event process{};
    kspan_tcp_connect_event connect{};
  };

  void OnProcess(const kspan_proc_event& e) noexcept override {
    Entry entry;
    entry.is_process = true;
    entry.process = e;
    Add(entry);
  }
  void OnTcpConnect(const kspan_tcp_connect_event& e) noexcept override {
    Entry entry;
    entry.connect = e;
    Add(entry);
  }

  std::optional<kspan_proc_event> WaitProcess(std::uint32_t pid, std::uint32_t kind,
                                              std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    std::optional<kspan_proc_event> found;
    cv_.wait_for(lock, timeout, [&] {
      for (const auto& e : log_) {
        if (e.is_process && e.process.pid == pid && e.process.kind == kind) {
          found = e.process;
          return true;
        }
      }
      return false;
    });
    return found;
  }
  std::size_t CountProcess(std::uint32_t pid, std::uint32_t kind) {
    std::lock_guard lock(mu_);
    std::size_t n = 0;
    for (const auto& e : log_) n += e.is_process && e.process.pid == pid && e.process.kind == kind;
    return n;
  }
  std::size_t CountKind(std::uint32_t kind) {
    std::lock_guard lock(mu_);
    std::size_t n = 0;
    for (const auto& e : log_) n += e.is_process && e.process.kind == kind;
    return n;
  }
  std::vector<Entry> Log() {
    std::lock_guard lock(mu_);
    return log_;
  }

 private:
  void Add(const Entry& e) {
    std::lock_guard lock(mu_);
    log_.push_back(e);
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Entry> log_;
};

class ProcessCaptureTest : public ::testing::Test {
 protected:
  void StartCapture(std::uint32_t self_tgid = 0) {
    auto pins = PinDirectory::Create(::kspan::testing::TestPinDir());
    ASSERT_TRUE(pins.ok()) << pins.status();
    pins_.emplace(std::move(*pins));
    ProcessCaptureOptions opts;
    opts.self_tgid = self_tgid;
    opts.pin_dir = pins_->path();
    capture_ = std::make_unique<ProcessCapture>(opts);
    auto status = capture_->Start();
    ASSERT_TRUE(status.ok()) << status;
    ::kspan::testing::ReportVariant("process", "tracepoint");
    ASSERT_TRUE(reader_.Add(capture_->ring_fd(), "kspan_proc_ring", &decoder_).ok());
    ASSERT_TRUE(reader_.Start(10ms).ok());
  }

  void TearDown() override {
    if (capture_) capture_->Detach();
    reader_.Stop();
    capture_.reset();
    pins_.reset();
  }

  MetricsRegistry metrics_;
  Recorder recorder_;
  EventDecoder decoder_{recorder_, metrics_};
  RingReader reader_;
  std::optional<PinDirectory> pins_;
  std::unique_ptr<ProcessCapture> capture_;
};

// Forks a child that execs /bin/true; its pid, once it has exited 0.
pid_t RunTrue() {
  const pid_t child = fork();
  if (child == 0) {
    execl(kTrue, "true", static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  if (child < 0 || waitpid(child, &status, 0) != child) return -1;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? child : -1;
}

TEST_F(ProcessCaptureTest, ChildExecAndExitAreReported) {
  KSPAN_REQUIRE_BPF();
  StartCapture();
  const std::uint64_t before = MonotonicNs();
  const pid_t child = RunTrue();
  const std::uint64_t after = MonotonicNs();
  ASSERT_GT(child, 0) << kTrue << " did not run";
  const auto pid = static_cast<std::uint32_t>(child);

  auto exec = recorder_.WaitProcess(pid, KSPAN_PROC_EXEC, 5s);
  ASSERT_TRUE(exec.has_value()) << "no exec record for pid " << pid;
  EXPECT_EQ(exec->type, static_cast<std::uint32_t>(KSPAN_EVENT_PROCESS));
  EXPECT_EQ(exec->ppid, static_cast<std::uint32_t>(getpid()));
  EXPECT_EQ(Str(exec->filename, sizeof(exec->filename)), kTrue);
  EXPECT_EQ(Str(exec->comm, sizeof(exec->comm)), "true");  // the new image's
  EXPECT_GE(exec->ts_ns, before);
  EXPECT_LE(exec->ts_ns, after);
  EXPECT_NE(exec->cgroup_id, 0u);
  if (auto cgroup = OwnCgroupId()) {
    EXPECT_EQ(exec->cgroup_id, *cgroup);  // inherited from this process
  }

  // The exit tracepoint runs before the parent is told, so the record is
  // in the ring once waitpid() returned.
  auto exit = recorder_.WaitProcess(pid, KSPAN_PROC_EXIT, 5s);
  ASSERT_TRUE(exit.has_value()) << "no exit record for pid " << pid;
  EXPECT_EQ(exit->ppid, static_cast<std::uint32_t>(getpid()));
  EXPECT_EQ(Str(exit->comm, sizeof(exit->comm)), "true");
  EXPECT_EQ(exit->filename[0], '\0');
  EXPECT_GE(exit->ts_ns, exec->ts_ns);
  EXPECT_LE(exit->ts_ns, after);
  EXPECT_EQ(exit->cgroup_id, exec->cgroup_id);
  EXPECT_EQ(recorder_.CountProcess(pid, KSPAN_PROC_EXEC), 1u);
  EXPECT_EQ(recorder_.CountProcess(pid, KSPAN_PROC_EXIT), 1u);

  // Every record the kernel counted reached the reader, and no other: stop
  // the programs, drain, and compare (other processes on the host count too).
  capture_->Detach();
  reader_.Stop();
  const auto stats = capture_->ReadStats();
  EXPECT_EQ(stats[KSPAN_PROC_STAT_EXEC_EMITTED], recorder_.CountKind(KSPAN_PROC_EXEC));
  EXPECT_EQ(stats[KSPAN_PROC_STAT_EXIT_EMITTED], recorder_.CountKind(KSPAN_PROC_EXIT));
  EXPECT_GE(stats[KSPAN_PROC_STAT_EXEC_EMITTED], 1u);
  EXPECT_GE(stats[KSPAN_PROC_STAT_EXIT_EMITTED], 1u);
  EXPECT_EQ(stats[KSPAN_PROC_STAT_RING_FULL], 0u);
}

TEST_F(ProcessCaptureTest, ThreadExitIsNotAProcessExit) {
  KSPAN_REQUIRE_BPF();
  StartCapture();
  int tid = 0;
  std::thread([&tid] { tid = ::kspan::testing::CurrentTid(); }).join();
  ASSERT_GT(tid, 0);
  // join() returns when the thread's tid is cleared, before its exit
  // tracepoint; its /proc entry goes only after that.
  const std::string task = "/proc/self/task/" + std::to_string(tid);
  struct stat st {};
  for (int i = 0; i < 500 && stat(task.c_str(), &st) == 0; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_NE(stat(task.c_str(), &st), 0) << "thread " << tid << " still listed";

  // A process exit after it: once its record is here, the thread's would be.
  const pid_t child = RunTrue();
  ASSERT_GT(child, 0);
  ASSERT_TRUE(recorder_.WaitProcess(static_cast<std::uint32_t>(child), KSPAN_PROC_EXIT, 5s).has_value())
      << "capture saw no process exit at all";
  EXPECT_EQ(recorder_.CountProcess(static_cast<std::uint32_t>(getpid()), KSPAN_PROC_EXIT), 0u);
}

TEST_F(ProcessCaptureTest, KspanItselfIsNotReported) {
  KSPAN_REQUIRE_BPF();
  // A child that plays kspan: its pid is the loader's self_tgid.
  ::kspan::testing::ChildProcess self([] {
    execl(kTrue, "true", static_cast<char*>(nullptr));
    _exit(127);
  });
  StartCapture(self.pid());
  ASSERT_TRUE(self.RunAndWait());
  const pid_t other = RunTrue();
  ASSERT_GT(other, 0);
  ASSERT_TRUE(recorder_.WaitProcess(static_cast<std::uint32_t>(other), KSPAN_PROC_EXIT, 5s).has_value());
  EXPECT_EQ(recorder_.CountProcess(self.pid(), KSPAN_PROC_EXEC), 0u);
  EXPECT_EQ(recorder_.CountProcess(self.pid(), KSPAN_PROC_EXIT), 0u);
}

// Passes each record on, and after the first one runs `once` on the reader's
// thread, in the middle of that ring's drain.
class AfterFirstRecord : public EventSink {
 public:
  AfterFirstRecord(EventSink& next, std::function<void()> once) : next_(next), once_(std::move(once)) {}
  void OnEvent(std::span<const std::byte> record) noexcept override {
    next_.OnEvent(record);
    if (once_) {
      auto f = std::move(once_);
      once_ = nullptr;
      f();
    }
  }

 private:
  EventSink& next_;
  std::function<void()> once_;
};

// A process record is delivered before a record another ring received after
// it, even when both arrive while the reader is draining that other ring:
// the drain stops at where the ring was when it began.
TEST(ProcessRingOrder, ProcessRecordComesBeforeALaterRecordOfAnotherRing) {
  KSPAN_REQUIRE_BPF();
  auto pins = PinDirectory::Create(::kspan::testing::TestPinDir());
  ASSERT_TRUE(pins.ok()) << pins.status();
  ProcessCaptureOptions popts;
  popts.pin_dir = pins->path();
  ProcessCapture process(popts);
  ASSERT_TRUE(process.Start().ok());
  CaptureOptions topts;
  topts.pin_dir = pins->path();
  topts.ring_buffer_bytes = 256 << 10;
  topts.wakeup_bytes = 0;
  TcpCapture tcp(topts);
  ASSERT_TRUE(tcp.Start().ok());
  ::kspan::testing::ReportVariant("process", "tracepoint");

  MetricsRegistry metrics;
  Recorder recorder;
  EventDecoder decoder(recorder, metrics);
  ::kspan::testing::Listener server(AF_INET, 64);
  ASSERT_GT(server.port(), 0);
  pid_t child = -1;
  int second_port = 0;
  // While the TCP ring is drained: a process exits (a record on the process
  // ring, drained already), then this thread connects (a record on the TCP
  // ring, after it).
  AfterFirstRecord tcp_sink(decoder, [&] {
    child = fork();
    if (child == 0) _exit(0);
    waitpid(child, nullptr, 0);
    auto r = ::kspan::testing::ConnectLoopback(AF_INET, server.port());
    second_port = r.err == 0 ? r.local_port : -1;
    if (r.fd >= 0) close(r.fd);
  });
  RingReader reader;
  ASSERT_TRUE(reader.Add(process.ring_fd(), "kspan_proc_ring", &decoder).ok());
  ASSERT_TRUE(reader.Add(tcp.ring_fd(), "kspan_tcp_ring", &tcp_sink).ok());

  auto first = ::kspan::testing::ConnectLoopback(AF_INET, server.port());
  ASSERT_EQ(first.err, 0);
  close(first.fd);
  // The record of `first` (or any TCP record) starts the scene; then poll
  // until the child's exit and the second connect are both delivered.
  int exit_at = -1;
  int connect_at = -1;
  for (int i = 0; i < 200 && (exit_at < 0 || connect_at < 0); ++i) {
    ASSERT_GE(reader.PollOnce(50ms), 0);
    const auto log = recorder.Log();
    for (std::size_t k = 0; k < log.size(); ++k) {
      const auto& e = log[k];
      if (child > 0 && e.is_process && e.process.kind == KSPAN_PROC_EXIT &&
          e.process.pid == static_cast<std::uint32_t>(child) && exit_at < 0) {
        exit_at = static_cast<int>(k);
      }
      if (second_port > 0 && !e.is_process && e.connect.sport == second_port &&
          e.connect.dport == server.port() && connect_at < 0) {
        connect_at = static_cast<int>(k);
      }
    }
  }
  ASSERT_GT(child, 0) << "no TCP record started the scene";
  ASSERT_GT(second_port, 0);
  ASSERT_GE(exit_at, 0) << "no exit record for the child";
  ASSERT_GE(connect_at, 0) << "no connect record for the second connection";
  EXPECT_LT(exit_at, connect_at) << "the connect made after the exit was delivered first";
  tcp.Detach();
  process.Detach();
}

}  // namespace
}  // namespace kspan
