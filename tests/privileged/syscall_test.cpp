// The syscall programs on the running kernel, every attach variant: enable
// capture for this process, make the real syscall, assert each record field
// and the span built from it; processes outside the filter produce nothing.
#include <arpa/inet.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/privileged/privileged.h"
#include "userspace/capture_filter.h"
#include "userspace/clock_sync.h"
#include "userspace/event_decoder.h"
#include "userspace/kernel_features.h"
#include "userspace/percpu_ring.h"
#include "userspace/pin_directory.h"
#include "userspace/ring_reader.h"
#include "userspace/syscall_capture.h"
#include "userspace/syscall_spans.h"

namespace kspan {
namespace {

using namespace std::chrono_literals;
using ::kspan::testing::CurrentTid;

struct Record {
  kspan_syscall_event e;
  std::string path;
  bool has_tail;
};

class SyscallCollector : public KernelEventHandler {
 public:
  void OnTcpConnect(const kspan_tcp_connect_event&) noexcept override {}
  void OnSyscall(const kspan_syscall_event& e, std::string_view path) noexcept override {
    std::lock_guard lock(mu_);
    records_.push_back({e, std::string(path), false});
    cv_.notify_all();
  }

  std::optional<Record> WaitFor(const std::function<bool(const Record&)>& match,
                                std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mu_);
    std::optional<Record> found;
    cv_.wait_for(lock, timeout, [&] {
      for (const auto& r : records_) {
        if (match(r)) {
          found = r;
          return true;
        }
      }
      return false;
    });
    return found;
  }

  std::size_t Count(const std::function<bool(const Record&)>& match) {
    std::lock_guard lock(mu_);
    return CountLocked(match);
  }

  // Waits until at least `n` records match; returns whether they did.
  bool WaitForCount(const std::function<bool(const Record&)>& match, std::size_t n,
                    std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return CountLocked(match) >= n; });
  }

 private:
  std::size_t CountLocked(const std::function<bool(const Record&)>& match) {
    std::size_t n = 0;
    for (const auto& r : records_) n += match(r);
    return n;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Record> records_;
};

std::uint64_t MonoNow() { return MonotonicNowNs(); }

std::int64_t Ret(const kspan_syscall_event& e) { return static_cast<std::int64_t>(e.ret); }

std::string Addr(const kspan_syscall_event& e, const std::uint8_t* a) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(e.family, a, buf, sizeof(buf));
  return buf;
}

const AttributeValue* Attr(const Span& s, std::string_view key) {
  return FindAttribute(s.attributes, key);
}

template <typename T>
T AttrAs(const Span& s, std::string_view key) {
  const AttributeValue* v = Attr(s, key);
  EXPECT_NE(v, nullptr) << "missing attribute " << key;
  if (v == nullptr || !std::holds_alternative<T>(*v)) return T{};
  return std::get<T>(*v);
}

void SleepFor(std::chrono::nanoseconds d) {
  struct timespec ts {
    static_cast<time_t>(d.count() / 1'000'000'000), static_cast<long>(d.count() % 1'000'000'000)
  };
  nanosleep(&ts, nullptr);
}

using Child = ::kspan::testing::ChildProcess;

// In a child process: a pipe read that blocks `d` until a grandchild
// writes. Returns the pipe's read end (still open); exits the child on an
// error.
int BlockInPipeRead(std::chrono::nanoseconds d) {
  int p[2];
  if (pipe(p) != 0) _exit(2);
  pid_t writer = fork();
  if (writer == 0) {
    SleepFor(d);
    (void)!write(p[1], "w", 1);
    _exit(0);
  }
  close(p[1]);
  char c;
  if (read(p[0], &c, 1) != 1) _exit(3);
  waitpid(writer, nullptr, 0);
  return p[0];
}

// Keeps the calling thread on the CPU it runs on, for tests whose figures
// depend on one CPU's record ring; the old affinity comes back at the end.
class PinnedToThisCpu {
 public:
  PinnedToThisCpu() {
    saved_ok_ = sched_getaffinity(0, sizeof(saved_), &saved_) == 0;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    pinned_ = sched_setaffinity(0, sizeof(one), &one) == 0;
  }
  ~PinnedToThisCpu() {
    if (saved_ok_) (void)sched_setaffinity(0, sizeof(saved_), &saved_);
  }
  bool ok() const { return pinned_; }

 private:
  cpu_set_t saved_{};
  bool saved_ok_ = false;
  bool pinned_ = false;
};

// A slow-only child's blocked read timed by the slow-syscall watch (below).
void ExpectWaitTimedExactly(SyscallCollector& collector, bool exit_at_once);

class SyscallSpans : public ::testing::TestWithParam<SyscallVariant> {
 protected:
  // Starts capture in the forced variant, this process fully traced, every
  // class recorded from 0 ns except waits (20 ms: the ring reader's own
  // epoll_wait timeouts stay out).
  // `ring_bytes` and `start_reader` are for the overload test.
  // `direct_walk` false: tp_btf takes its probe-read exit (what kernels
  // before 6.2 run) on this kernel too. `wakeup_bytes` and `poll_timeout`
  // are for the wakeup test (0: the kernel's wakeup on every record).
  void StartCapture(std::size_t ring_bytes = 1 << 20, bool start_reader = true,
                    bool direct_walk = true, std::uint64_t wakeup_bytes = 0,
                    std::chrono::milliseconds poll_timeout = 10ms) {
    auto pins = PinDirectory::Create(::kspan::testing::TestPinDir());
    ASSERT_TRUE(pins.ok()) << pins.status();
    pins_.emplace(std::move(*pins));
    SyscallCaptureOptions opts;
    opts.ring_buffer_bytes = ring_bytes;
    expect_no_loss_ = start_reader;
    opts.wakeup_bytes = wakeup_bytes;
    opts.pin_dir = pins_->path();
    opts.force_variant = GetParam();
    opts.direct_walk = direct_walk;
    opts.class_min = {0ns, 0ns, 0ns, 20ms};
    opts.slow_watch = slow_watch_;
    opts.slow_scan_interval = slow_scan_interval_;
    capture_ = std::make_unique<SyscallCapture>(opts);
    absl::Status started = capture_->Start();
    if (!started.ok()) {
      // All three variants are tracepoints of raw_syscalls: every supported
      // kernel (5.10+ with BTF) must take each of them.
      if (::kspan::testing::BpfRequired()) FAIL() << started;
      GTEST_SKIP() << "variant refused by this kernel: " << started;
    }
    ASSERT_EQ(capture_->variant(), SyscallVariantName(GetParam()));
    capture_->StartScan();
    ::kspan::testing::ReportVariant("syscalls.forced", capture_->variant());
    if (GetParam() == SyscallVariant::kTpBtf) {
      ::kspan::testing::ReportVariant("syscalls.tp_btf_exit",
                                      capture_->direct_walk() ? "direct_btf" : "probe_read");
    }
    auto filter = CaptureFilter::Open(pins_->path());
    ASSERT_TRUE(filter.ok()) << filter.status();
    filter_.emplace(std::move(*filter));
    ASSERT_TRUE(filter_->SetSlowThreshold(0ns).ok());
    ASSERT_TRUE(filter_->AllowPid(static_cast<std::uint32_t>(getpid())).ok());
    ASSERT_TRUE(reader_.Add(capture_->ring_fd(), "kspan_sys_ring", &decoder_).ok());
    ASSERT_TRUE(
        reader_.AddPerCpu(capture_->record_rings(), capture_->bell_fd(), &decoder_).ok());
    if (start_reader) {
      ASSERT_TRUE(reader_.Start(poll_timeout).ok());
    }
  }

  void TearDown() override {
    if (capture_) capture_->Detach();
    reader_.Stop();
    if (capture_) {
      const SyscallStats st = capture_->ReadStats();
      if (expect_no_loss_) {
        EXPECT_EQ(st[KSPAN_SYS_STAT_RING_FULL], 0u);
      }
      EXPECT_EQ(st[KSPAN_SYS_STAT_ENTER_NO_SLOT], 0u);
    }
    filter_.reset();
    capture_.reset();
    pins_.reset();
  }

  // ExpectWaitTimedExactly with watch `want`, the hooks detached. The
  // watches run beside the tp_btf hooks only; with the other variants, and
  // on kernels without bpf_task_pt_regs, the hooks time slow-only processes.
  void ExpectWatchTimesTheWaitItself(SlowWatch want) {
    // Before capture: reading kernel BTF is thousands of traced reads.
    const bool watches = KernelHasBpfHelper("BPF_FUNC_task_pt_regs");
    slow_watch_ = want;
    slow_scan_interval_ = 50ms;
    StartCapture();
    if (IsSkipped() || HasFatalFailure()) return;
    if (!watches || GetParam() != SyscallVariant::kTpBtf) {
      EXPECT_EQ(capture_->slow_watch_taken(), SlowWatch::kHooks);
      return;
    }
    ASSERT_EQ(capture_->slow_watch_taken(), want) << capture_->slow_watch();
    ::kspan::testing::ReportVariant("syscalls.slow_watch", std::string(SlowWatchName(want)));
    ASSERT_TRUE(filter_->SetSlowThreshold(50ms).ok());
    ASSERT_TRUE(capture_->SetHooksAttached(false).ok());
    ExpectWaitTimedExactly(collector_, false);
    ExpectWaitTimedExactly(collector_, true);
    if (want == SlowWatch::kScan) {
      EXPECT_GT(capture_->scan_stats().scans, 0u);
      EXPECT_EQ(capture_->scan_stats().failures, 0u);
    }
  }

  Span SpanOf(const Record& r) {
    return BuildSyscallSpan(r.e, r.path, clock_, resources_, ids_);
  }

  // Fields every record of this thread carries.
  static void ExpectCommon(const kspan_syscall_event& e, long nr, std::uint64_t before,
                           std::uint64_t after) {
    EXPECT_EQ(e.type, static_cast<std::uint32_t>(KSPAN_EVENT_SYSCALL));
    EXPECT_EQ(e.pid, static_cast<std::uint32_t>(getpid()));
    EXPECT_EQ(e.tid, static_cast<std::uint32_t>(CurrentTid()));
    EXPECT_EQ(e.nr, nr);
    EXPECT_EQ(e.trace_level, KSPAN_TRACE_FULL);
    // The kernel's interval lies inside the one measured around the call.
    EXPECT_GE(e.start_ns, before);
    EXPECT_LE(e.end_ns, after);
    EXPECT_LE(e.start_ns, e.end_ns);
    EXPECT_EQ(std::string(e.comm, strnlen(e.comm, sizeof(e.comm))), "kspan_privilege");
  }

  // Records of this thread for syscall `nr` (on `fd`, when given) that
  // started at or after `since` (an fd number is reused).
  static auto Mine(long nr, int fd = -2, std::uint64_t since = 0) {
    const auto tid = static_cast<std::uint32_t>(CurrentTid());
    return [=](const Record& r) {
      return r.e.tid == tid && r.e.nr == nr &&
             (fd == -2 || r.e.fd == static_cast<std::uint32_t>(fd)) && r.e.start_ns >= since;
    };
  }

  bool expect_no_loss_ = true;
  // The slow-syscall watch StartCapture asks for.
  SlowWatch slow_watch_ = SlowWatch::kScan;
  // The tests' threshold is 50 ms: a pass every 50 ms keeps the scan's
  // cost low in the emulated kernels of the VM matrix.
  std::chrono::nanoseconds slow_scan_interval_ = 50ms;
  MetricsRegistry metrics_;
  SyscallCollector collector_;
  EventDecoder decoder_{collector_, metrics_};
  RingReader reader_;
  std::optional<PinDirectory> pins_;
  std::optional<CaptureFilter> filter_;
  std::unique_ptr<SyscallCapture> capture_;
  ClockSync clock_;
  ProcessResources resources_;
  IdGenerator ids_;
};

TEST_P(SyscallSpans, RegularFileOpenWriteFsyncClose) {
  KSPAN_REQUIRE_BPF();
  StartCapture();
  if (IsSkipped() || HasFatalFailure()) return;
  char path[] = "/tmp/kspan-syscall-XXXXXX";
  int tmp = mkstemp(path);
  ASSERT_GE(tmp, 0);
  close(tmp);

  std::uint64_t b0 = MonoNow();
  int fd = static_cast<int>(syscall(SYS_openat, AT_FDCWD, path, O_WRONLY | O_CLOEXEC));
  std::uint64_t a0 = MonoNow();
  ASSERT_GE(fd, 0);
  std::uint64_t b1 = MonoNow();
  ASSERT_EQ(write(fd, "hello", 5), 5);
  std::uint64_t a1 = MonoNow();
  std::uint64_t b2 = MonoNow();
  ASSERT_EQ(fsync(fd), 0);
  std::uint64_t a2 = MonoNow();
  std::uint64_t b3 = MonoNow();
  ASSERT_EQ(close(fd), 0);
  std::uint64_t a3 = MonoNow();

  auto op = collector_.WaitFor(Mine(SYS_openat, fd, b0));
  ASSERT_TRUE(op.has_value()) << "no openat record";
  ExpectCommon(op->e, SYS_openat, b0, a0);
  EXPECT_EQ(Ret(op->e), fd);
  EXPECT_EQ(op->e.fd_kind, KSPAN_FD_FILE);
  EXPECT_EQ(op->e.path_source, KSPAN_PATH_OPENAT);
  EXPECT_EQ(op->path, path);
  EXPECT_EQ(op->e.syscall_class, KSPAN_SYSCALL_CLASS_FILE_IO);
  EXPECT_EQ(AttrAs<std::string>(SpanOf(*op), "file.path"), path);

  auto wr = collector_.WaitFor(Mine(SYS_write, fd, b1));
  ASSERT_TRUE(wr.has_value()) << "no write record";
  ExpectCommon(wr->e, SYS_write, b1, a1);
  EXPECT_EQ(Ret(wr->e), 5);
  EXPECT_EQ(wr->e.args[2], 5u);
  EXPECT_EQ(wr->e.fd_kind, KSPAN_FD_FILE);
  EXPECT_EQ(wr->e.syscall_class, KSPAN_SYSCALL_CLASS_FILE_IO);
  EXPECT_EQ(wr->e.path_source, KSPAN_PATH_OPENAT);
  EXPECT_EQ(wr->path, path);
  EXPECT_EQ(wr->e.family, 0);
  Span s = SpanOf(*wr);
  EXPECT_EQ(s.name, "syscall write");
  EXPECT_EQ(s.kind, SpanKind::kInternal);
  EXPECT_EQ(s.status_code, StatusCode::kUnset);
  EXPECT_EQ(AttrAs<std::string>(s, "file.path"), path);
  EXPECT_EQ(AttrAs<std::string>(s, "kspan.fd.kind"), "file");
  EXPECT_EQ(AttrAs<std::int64_t>(s, "kspan.syscall.fd"), fd);
  EXPECT_EQ(AttrAs<std::int64_t>(s, "kspan.syscall.bytes"), 5);
  EXPECT_EQ(AttrAs<std::int64_t>(s, "process.pid"), getpid());
  EXPECT_EQ(AttrAs<std::int64_t>(s, "thread.id"), CurrentTid());

  auto sync = collector_.WaitFor(Mine(SYS_fsync, fd, b2));
  ASSERT_TRUE(sync.has_value()) << "no fsync record";
  ExpectCommon(sync->e, SYS_fsync, b2, a2);
  EXPECT_EQ(Ret(sync->e), 0);
  EXPECT_EQ(sync->e.fd_kind, KSPAN_FD_FILE);
  EXPECT_EQ(sync->path, path);

  auto cl = collector_.WaitFor(Mine(SYS_close, fd, b3));
  ASSERT_TRUE(cl.has_value()) << "no close record";
  ExpectCommon(cl->e, SYS_close, b3, a3);
  EXPECT_EQ(Ret(cl->e), 0);
  EXPECT_EQ(cl->e.fd_kind, KSPAN_FD_FILE);  // resolved at enter: the fd is gone at exit
  EXPECT_EQ(cl->path, path);

  // The fd number reused for another file carries that file's path.
  char path2[] = "/tmp/kspan-syscall-XXXXXX";
  int fd2 = mkstemp(path2);
  ASSERT_GE(fd2, 0);
  char buf[8];
  // Since now: building spans above read this process's /proc files, maybe
  // through the same fd number.
  const std::uint64_t b4 = MonoNow();
  ASSERT_EQ(read(fd2, buf, 1), 0);
  auto rd = collector_.WaitFor(Mine(SYS_read, fd2, b4));
  ASSERT_TRUE(rd.has_value());
  EXPECT_EQ(rd->path, path2);
  EXPECT_EQ(Ret(rd->e), 0);
  close(fd2);
  unlink(path2);
  unlink(path);
}

TEST_P(SyscallSpans, DentryNameWhenOpenedBeforeCapture) {
  KSPAN_REQUIRE_BPF();
  char path[] = "/tmp/kspan-dentry-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "abc", 3), 3);
  StartCapture();
  if (IsSkipped() || HasFatalFailure()) return;
  char buf[4];
  ASSERT_EQ(pread(fd, buf, 2, 0), 2);
  auto r = collector_.WaitFor(Mine(SYS_pread64, fd));
  ASSERT_TRUE(r.has_value());
  const std::string name = std::string(path).substr(5);  // without "/tmp/"
  EXPECT_EQ(r->e.fd_kind, KSPAN_FD_FILE);
  EXPECT_EQ(r->e.path_source, KSPAN_PATH_DENTRY);
  EXPECT_EQ(r->path, name);
  EXPECT_EQ(Ret(r->e), 2);
  EXPECT_EQ(AttrAs<std::string>(SpanOf(*r), "file.name"), name);
  EXPECT_EQ(Attr(SpanOf(*r), "file.path"), nullptr);
  close(fd);
  unlink(path);
}

TEST_P(SyscallSpans, TcpSocketWriteReadAddressesPortsBytes) {
  KSPAN_REQUIRE_BPF();
  StartCapture();
  if (IsSkipped() || HasFatalFailure()) return;
  ::kspan::testing::Listener server(AF_INET);
  ASSERT_GT(server.port(), 0);
  auto c = ::kspan::testing::ConnectLoopback(AF_INET, server.port());
  ASSERT_EQ(c.err, 0);
  std::uint64_t ba = MonoNow();
  int s = accept(server.fd(), nullptr, nullptr);
  std::uint64_t aa = MonoNow();
  ASSERT_GE(s, 0);

  // write on a socket is socket I/O: recorded even with file I/O at 1 s.
  ASSERT_TRUE(capture_->SetClassMinDuration(KSPAN_SYSCALL_CLASS_FILE_IO, 1s).ok());
  std::uint64_t bw = MonoNow();
  ASSERT_EQ(write(c.fd, "ping!", 5), 5);
  std::uint64_t aw = MonoNow();
  char buf[16];
  std::uint64_t br = MonoNow();
  ASSERT_EQ(read(s, buf, sizeof(buf)), 5);
  std::uint64_t ar = MonoNow();

  auto wr = collector_.WaitFor(Mine(SYS_write, c.fd));
  ASSERT_TRUE(wr.has_value()) << "no write record";
  ExpectCommon(wr->e, SYS_write, bw, aw);
  EXPECT_EQ(wr->e.fd_kind, KSPAN_FD_SOCKET);
  EXPECT_EQ(wr->e.syscall_class, KSPAN_SYSCALL_CLASS_SOCKET_IO);
  EXPECT_EQ(wr->e.family, AF_INET);
  EXPECT_EQ(wr->e.protocol, IPPROTO_TCP);
  EXPECT_EQ(wr->e.sock_type, SOCK_STREAM);
  EXPECT_EQ(Addr(wr->e, wr->e.saddr), "127.0.0.1");
  EXPECT_EQ(Addr(wr->e, wr->e.daddr), "127.0.0.1");
  EXPECT_EQ(wr->e.sport, c.local_port);
  EXPECT_EQ(wr->e.dport, server.port());
  EXPECT_EQ(Ret(wr->e), 5);
  EXPECT_TRUE(wr->path.empty());
  Span ws = SpanOf(*wr);
  EXPECT_EQ(ws.name, "syscall write");
  EXPECT_EQ(AttrAs<std::string>(ws, "network.transport"), "tcp");
  EXPECT_EQ(AttrAs<std::string>(ws, "network.type"), "ipv4");
  EXPECT_EQ(AttrAs<std::string>(ws, "network.peer.address"), "127.0.0.1");
  EXPECT_EQ(AttrAs<std::int64_t>(ws, "network.peer.port"), server.port());
  EXPECT_EQ(AttrAs<std::string>(ws, "network.local.address"), "127.0.0.1");
  EXPECT_EQ(AttrAs<std::int64_t>(ws, "network.local.port"), c.local_port);
  EXPECT_EQ(AttrAs<std::string>(ws, "kspan.fd.kind"), "socket");
  EXPECT_EQ(AttrAs<std::int64_t>(ws, "kspan.syscall.bytes"), 5);

  auto rd = collector_.WaitFor(Mine(SYS_read, s));
  ASSERT_TRUE(rd.has_value()) << "no read record";
  ExpectCommon(rd->e, SYS_read, br, ar);
  EXPECT_EQ(rd->e.fd_kind, KSPAN_FD_SOCKET);
  EXPECT_EQ(rd->e.sport, server.port());
  EXPECT_EQ(rd->e.dport, c.local_port);
  EXPECT_EQ(Ret(rd->e), 5);
  EXPECT_EQ(rd->e.args[2], sizeof(buf));

  // accept: the new connection's fd and its peer.
  auto ac = collector_.WaitFor([&](const Record& r) {  // glibc may use either
    return Mine(SYS_accept, s)(r) || Mine(SYS_accept4, s)(r);
  });
  ASSERT_TRUE(ac.has_value()) << "no accept record";
  const Record& a = *ac;
  ExpectCommon(a.e, a.e.nr, ba, aa);
  EXPECT_EQ(Ret(a.e), s);
  EXPECT_EQ(a.e.fd_kind, KSPAN_FD_SOCKET);
  EXPECT_EQ(a.e.dport, c.local_port);

  auto cn = collector_.WaitFor(Mine(SYS_connect, c.fd));
  ASSERT_TRUE(cn.has_value()) << "no connect record";
  EXPECT_EQ(Ret(cn->e), 0);
  EXPECT_EQ(cn->e.dport, server.port());
  close(s);
  close(c.fd);
}

// The socket fields of an IPv6 and an IPv4 connection, with the exit the
// loader prefers (direct BTF loads on tp_btf where the kernel allows) and
// with the probe-read exit.
void ExpectSocketWrite(const Record& r, int family, const char* addr, std::uint16_t sport,
                       std::uint16_t dport) {
  EXPECT_EQ(r.e.fd_kind, KSPAN_FD_SOCKET);
  EXPECT_EQ(r.e.family, family);
  EXPECT_EQ(r.e.protocol, IPPROTO_TCP);
  EXPECT_EQ(r.e.sock_type, SOCK_STREAM);
  EXPECT_EQ(Addr(r.e, r.e.saddr), addr);
  EXPECT_EQ(Addr(r.e, r.e.daddr), addr);
  EXPECT_EQ(r.e.sport, sport);
  EXPECT_EQ(r.e.dport, dport);
  EXPECT_EQ(Ret(r.e), 3);
  EXPECT_EQ(std::string(r.e.comm, strnlen(r.e.comm, sizeof(r.e.comm))), "kspan_privilege");
}

class SyscallSocketFields : public SyscallSpans {
 protected:
  void Run(bool direct_walk) {
    StartCapture(1 << 20, true, direct_walk);
    if (IsSkipped() || HasFatalFailure()) return;
    if (!direct_walk) {
      EXPECT_FALSE(capture_->direct_walk());
    }
    for (int family : {AF_INET6, AF_INET}) {
      ::kspan::testing::Listener server(family);
      ASSERT_GT(server.port(), 0);
      auto c = ::kspan::testing::ConnectLoopback(family, server.port());
      ASSERT_EQ(c.err, 0);
      int s = accept(server.fd(), nullptr, nullptr);
      ASSERT_GE(s, 0);
      const std::uint64_t before = MonoNow();  // the fd number is reused per family
      ASSERT_EQ(write(c.fd, "abc", 3), 3);
      auto wr = collector_.WaitFor(Mine(SYS_write, c.fd, before));
      ASSERT_TRUE(wr.has_value()) << "no write record, family " << family;
      ExpectSocketWrite(*wr, family, family == AF_INET6 ? "::1" : "127.0.0.1", c.local_port,
                        server.port());
      close(s);
      close(c.fd);
    }
  }
};

TEST_P(SyscallSocketFields, PreferredExit) {
  KSPAN_REQUIRE_BPF();
  Run(/*direct_walk=*/true);
}

TEST_P(SyscallSocketFields, ProbeReadExit) {
  KSPAN_REQUIRE_BPF();
  Run(/*direct_walk=*/false);
}

TEST_P(SyscallSpans, FailingSyscallCarriesErrno) {
  KSPAN_REQUIRE_BPF();
  StartCapture();
  if (IsSkipped() || HasFatalFailure()) return;
  constexpr int kBadFd = 987;
  char buf[4];
  std::uint64_t before = MonoNow();
  ASSERT_EQ(read(kBadFd, buf, 1), -1);
  ASSERT_EQ(errno, EBADF);
  std::uint64_t after = MonoNow();
  auto r = collector_.WaitFor(Mine(SYS_read, kBadFd));
  ASSERT_TRUE(r.has_value());
  ExpectCommon(r->e, SYS_read, before, after);
  EXPECT_EQ(Ret(r->e), -EBADF);
  EXPECT_EQ(r->e.fd_kind, KSPAN_FD_NONE);
  Span s = SpanOf(*r);
  EXPECT_EQ(s.status_code, StatusCode::kError);
  EXPECT_EQ(AttrAs<std::string>(s, "error.type"), "EBADF");
  EXPECT_EQ(AttrAs<std::int64_t>(s, "kspan.syscall.fd"), kBadFd);
  EXPECT_EQ(Attr(s, "kspan.fd.kind"), nullptr);
  EXPECT_EQ(Attr(s, "kspan.syscall.bytes"), nullptr);
}

TEST_P(SyscallSpans, SlowNanosleepAndFutexWaitAboveThreshold) {
  KSPAN_REQUIRE_BPF();
  StartCapture();
  if (IsSkipped() || HasFatalFailure()) return;
  // Waits: 20 ms minimum. A 1 ms sleep stays out, a 60 ms one is recorded.
  SleepFor(1ms);
  std::uint64_t b = MonoNow();
  SleepFor(60ms);
  std::uint64_t a = MonoNow();
  // Since b: on a loaded emulated machine the 1 ms sleep can itself last
  // over 20 ms, and is then rightly recorded too.
  auto sl = collector_.WaitFor([&](const Record& r) {
    return Mine(SYS_nanosleep, -2, b)(r) || Mine(SYS_clock_nanosleep, -2, b)(r);
  });
  ASSERT_TRUE(sl.has_value()) << "no sleep record";
  ExpectCommon(sl->e, sl->e.nr, b, a);
  EXPECT_GE(sl->e.end_ns - sl->e.start_ns, 60'000'000u);
  EXPECT_EQ(sl->e.syscall_class, KSPAN_SYSCALL_CLASS_WAIT);
  EXPECT_EQ(Ret(sl->e), 0);
  EXPECT_EQ(collector_.Count([&](const Record& r) {
              return (Mine(SYS_nanosleep)(r) || Mine(SYS_clock_nanosleep)(r)) &&
                     r.e.end_ns - r.e.start_ns < 20'000'000;
            }),
            0u);

  // futex: a timed-out FUTEX_WAIT of 60 ms is recorded; a FUTEX_WAKE never
  // is (only waits), even with the minimum at 0.
  alignas(4) static std::uint32_t word = 0;
  const auto on_word = [&](const Record& r) {
    return Mine(SYS_futex)(r) && r.e.args[0] == reinterpret_cast<std::uint64_t>(&word);
  };
  struct timespec ts {0, 60'000'000};
  b = MonoNow();
  ASSERT_EQ(syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, &ts, nullptr, 0), -1);
  ASSERT_EQ(errno, ETIMEDOUT);
  a = MonoNow();
  auto fw = collector_.WaitFor(on_word);
  ASSERT_TRUE(fw.has_value()) << "no futex record";
  ExpectCommon(fw->e, SYS_futex, b, a);
  EXPECT_GE(fw->e.end_ns - fw->e.start_ns, 60'000'000u);
  EXPECT_EQ(Ret(fw->e), -ETIMEDOUT);
  EXPECT_EQ(fw->e.args[1], static_cast<std::uint64_t>(FUTEX_WAIT_PRIVATE));
  Span s = SpanOf(*fw);
  EXPECT_EQ(s.name, "syscall futex");
  EXPECT_EQ(AttrAs<std::string>(s, "kspan.futex.op"), "FUTEX_WAIT");
  EXPECT_EQ(AttrAs<std::string>(s, "kspan.wait.outcome"), "timed_out");
  EXPECT_EQ(s.status_code, StatusCode::kUnset);

  ASSERT_TRUE(capture_->SetSyscallMinDuration("futex", 0ns).ok());
  ASSERT_GE(syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0), 0);
  struct timespec short_ts {0, 1'000'000};
  ASSERT_EQ(syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, &short_ts, nullptr, 0), -1);
  ASSERT_TRUE(collector_.WaitFor([&](const Record& r) {
                return on_word(r) && r.e.end_ns - r.e.start_ns < 20'000'000;
              }).has_value())
      << "a 1 ms futex wait was not recorded with the minimum at 0";
  EXPECT_EQ(collector_.Count([&](const Record& r) {
              return on_word(r) && (r.e.args[1] & FUTEX_CMD_MASK) == FUTEX_WAKE;
            }),
            0u);
}

// A futex call other than a wait takes no slot at its enter, so its exit is
// not one that lost its enter: a thousand FUTEX_WAKEs of a traced process
// leave the unpaired-exit count where it was. (Other processes on the host
// may add a few of their own: one per thread that was inside a syscall when
// capture started.)
TEST_P(SyscallSpans, FutexWakesAreNotUnpairedExits) {
  KSPAN_REQUIRE_BPF();
  StartCapture();
  if (IsSkipped() || HasFatalFailure()) return;
  int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  ASSERT_EQ(write(fd, "y", 1), 1);
  ASSERT_TRUE(collector_.WaitFor(Mine(SYS_write, fd)).has_value()) << "capture is not live";
  close(fd);
  alignas(4) static std::uint32_t word = 0;
  const std::uint64_t before = capture_->ReadStats()[KSPAN_SYS_STAT_EXIT_NO_ENTER];
  for (int i = 0; i < 1000; ++i) {
    ASSERT_GE(syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0), 0);
  }
  const std::uint64_t after = capture_->ReadStats()[KSPAN_SYS_STAT_EXIT_NO_ENTER];
  EXPECT_LT(after - before, 100u) << "FUTEX_WAKE exits counted as unpaired";
}

TEST_P(SyscallSpans, ProcessOutsideTheFilterProducesNothing) {
  KSPAN_REQUIRE_BPF();
  StartCapture();
  if (IsSkipped() || HasFatalFailure()) return;
  Child child([] {
    int fd = open("/dev/null", O_WRONLY);
    for (int i = 0; i < 10; ++i) (void)!write(fd, "x", 1);
    SleepFor(100ms);
    close(fd);
  });
  ASSERT_TRUE(child.RunAndWait());
  // Capture is live: this process's next write is seen.
  int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  ASSERT_EQ(write(fd, "y", 1), 1);
  ASSERT_TRUE(collector_.WaitFor(Mine(SYS_write, fd)).has_value());
  close(fd);
  EXPECT_EQ(collector_.Count([&](const Record& r) { return r.e.pid == child.pid(); }), 0u);
}

TEST_P(SyscallSpans, SlowOnlyProcessRecordsOnlySlowSyscalls) {
  KSPAN_REQUIRE_BPF();
  StartCapture();
  if (IsSkipped() || HasFatalFailure()) return;
  ASSERT_TRUE(filter_->SetSlowThreshold(50ms).ok());
  // The child (not selected: slow-only) does fast writes, a pipe read that
  // blocks 100 ms until a grandchild writes, then sleeps 100 ms: the stuck
  // read is recorded, the fast writes are not, and neither is the idle sleep
  // (waits are not recorded for slow-only processes).
  Child child([] {
    int fd = open("/dev/null", O_WRONLY);
    for (int i = 0; i < 10; ++i) (void)!write(fd, "x", 1);
    const int read_end = BlockInPipeRead(100ms);
    SleepFor(100ms);
    close(read_end);
    close(fd);
  });
  ASSERT_TRUE(child.RunAndWait());
  auto slow = collector_.WaitFor(
      [&](const Record& r) { return r.e.pid == child.pid() && r.e.nr == SYS_read; });
  ASSERT_TRUE(slow.has_value()) << "the slow-only child's blocked pipe read was not recorded";
  EXPECT_EQ(slow->e.trace_level, KSPAN_TRACE_SLOW_ONLY);
  EXPECT_EQ(slow->e.fd_kind, KSPAN_FD_PIPE);
  if (capture_->slow_watch_off_cpu()) {
    // Seen on sched_switch: the wait off the CPU, before the read returned.
    EXPECT_EQ(slow->e.flags, KSPAN_SYSCALL_EV_OFF_CPU);
    EXPECT_EQ(slow->e.fd, slow->e.args[0]);
  } else {
    EXPECT_EQ(slow->e.flags, 0);
    EXPECT_EQ(Ret(slow->e), 1);
  }
  EXPECT_GE(slow->e.end_ns - slow->e.start_ns, 50'000'000u);
  EXPECT_LT(slow->e.end_ns - slow->e.start_ns, 5'000'000'000u);
  EXPECT_EQ(std::string(slow->e.comm, strnlen(slow->e.comm, sizeof(slow->e.comm))),
            "kspan_privilege");
  EXPECT_EQ(AttrAs<bool>(SpanOf(*slow), "kspan.syscall.slow_only"), true);
  // A marker of this (fully traced) process, written after the child's
  // exit: once it is read, so is everything the child wrote to the ring.
  int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  ASSERT_EQ(write(fd, "m", 1), 1);
  ASSERT_TRUE(collector_.WaitFor(Mine(SYS_write, fd)).has_value());
  close(fd);
  EXPECT_EQ(collector_.Count([&](const Record& r) {
              return r.e.pid == child.pid() && r.e.end_ns - r.e.start_ns < 50'000'000;
            }),
            0u);
  EXPECT_EQ(collector_.Count([&](const Record& r) {
              return r.e.pid == child.pid() && r.e.nr == SYS_write;
            }),
            0u);
  EXPECT_EQ(collector_.Count([&](const Record& r) {
              return r.e.pid == child.pid() &&
                     (r.e.nr == SYS_nanosleep || r.e.nr == SYS_clock_nanosleep ||
                      r.e.syscall_class == KSPAN_SYSCALL_CLASS_WAIT);
            }),
            0u)
      << "an idle sleep of a slow-only process was recorded";
  // A fully traced process still has its waits recorded (20 ms minimum).
  SleepFor(60ms);
  EXPECT_TRUE(collector_.WaitFor([&](const Record& r) {
                return Mine(SYS_nanosleep)(r) || Mine(SYS_clock_nanosleep)(r);
              }).has_value())
      << "a traced process's 60 ms sleep was not recorded";
}

// The watch's figures are the scheduler's, not the moments it happened to
// look: a process that is not selected blocks in a pipe read that a writer
// ends at a known time, and the record starts when the read blocked and
// ends when the write woke it (within 20 ms even on a loaded machine; a
// fraction of a ms here), whether the watch finds the wait over while the
// process lives on or only as it exits right after. The scan runs every
// 50 ms here, so a record timed by its passes would be off by up to that.
// The state letter of /proc/<pid>/stat (R, S, D...), or 0.
char ProcessState(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  const auto paren = line.rfind(") ");
  return paren == std::string::npos || paren + 2 >= line.size() ? 0 : line[paren + 2];
}

void ExpectWaitTimedExactly(SyscallCollector& collector, bool exit_at_once) {
  struct Times {
    std::uint64_t blocked = 0;  // the child, just before read()
    std::uint64_t seen = 0;     // the writer, once /proc says it is asleep in read()
    std::uint64_t written = 0;  // the writer, just before write()
  };
  void* shared = mmap(nullptr, sizeof(Times), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                      -1, 0);
  ASSERT_NE(shared, MAP_FAILED);
  auto* times = new (shared) Times;
  Child child([times, exit_at_once] {
    int p[2];
    if (pipe(p) != 0) _exit(2);
    const pid_t reader = getpid();
    const std::string syscall_file = "/proc/" + std::to_string(reader) + "/syscall";
    const pid_t writer = fork();
    if (writer == 0) {
      // A loaded machine may run the child late: the wait starts when it
      // is asleep in read() (syscall 0, state S), whenever that is. Not
      // only syscall 0: a thread preempted inside read() before it slept
      // shows that too, in state R, and its wait starts later.
      for (int i = 0; i < 5000 && times->seen == 0; ++i) {
        std::ifstream in(syscall_file);
        std::string nr;
        if (in >> nr && nr == "0" && ProcessState(reader) == 'S') {
          times->seen = MonotonicNowNs();
        }
        if (times->seen == 0) SleepFor(1ms);
      }
      SleepFor(120ms);
      times->written = MonotonicNowNs();
      (void)!write(p[1], "w", 1);
      _exit(0);
    }
    char c;
    times->blocked = MonotonicNowNs();
    if (read(p[0], &c, 1) != 1) _exit(3);
    if (exit_at_once) _exit(0);  // the writer is reaped by init
    waitpid(writer, nullptr, 0);
    SleepFor(150ms);  // long enough for the scan's next pass
    _exit(0);
  });
  ASSERT_TRUE(child.RunAndWait());
  auto slow = collector.WaitFor(
      [&](const Record& r) { return r.e.pid == child.pid() && r.e.nr == SYS_read; });
  const Times t = *times;
  munmap(shared, sizeof(Times));
  ASSERT_TRUE(slow.has_value()) << "the blocked read was not recorded (exit at once: "
                                << exit_at_once << ")";
  EXPECT_EQ(slow->e.flags, KSPAN_SYSCALL_EV_OFF_CPU);
  EXPECT_EQ(slow->e.fd_kind, KSPAN_FD_PIPE);
  ASSERT_NE(t.seen, 0u) << "the child never blocked in read()";
  // Back on a CPU (sched_switch) can wait for one on a loaded machine.
  constexpr std::uint64_t kSlack = 20'000'000;
  EXPECT_GE(slow->e.start_ns, t.blocked) << "exit at once: " << exit_at_once;
  EXPECT_LE(slow->e.start_ns, t.seen) << "exit at once: " << exit_at_once;
  EXPECT_GE(slow->e.end_ns, t.written) << "exit at once: " << exit_at_once;
  EXPECT_LE(slow->e.end_ns, t.written + kSlack) << "exit at once: " << exit_at_once;
}

TEST_P(SyscallSpans, SlowWatchByScanTimesTheWaitItself) {
  KSPAN_REQUIRE_BPF();
  ExpectWatchTimesTheWaitItself(SlowWatch::kScan);
}

TEST_P(SyscallSpans, SlowWatchOnSwitchTimesTheWaitItself) {
  KSPAN_REQUIRE_BPF();
  ExpectWatchTimesTheWaitItself(SlowWatch::kSwitch);
}

// The agent detaches the enter and exit programs while no process is
// selected (capture.syscalls.attach: on_demand): nothing of a selected
// process is recorded while they are off, everything again once they are
// back, and, where the slow-syscall watch runs on sched_switch, the blocked
// syscalls of processes that are not selected are recorded all along.
TEST_P(SyscallSpans, HooksDetachedAndAttachedAgain) {
  KSPAN_REQUIRE_BPF();
  StartCapture();
  if (IsSkipped() || HasFatalFailure()) return;
  ASSERT_TRUE(capture_->hooks_attached());
  if (!capture_->hooks_detachable()) {
    // The classic tracepoint variant: attaching again would need
    // CAP_PERFMON, which the agent drops.
    ASSERT_EQ(GetParam(), SyscallVariant::kTracepoint);
    EXPECT_EQ(capture_->SetHooksAttached(false).code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_TRUE(capture_->hooks_attached());
    return;
  }
  ASSERT_TRUE(filter_->SetSlowThreshold(50ms).ok());
  ASSERT_TRUE(capture_->SetHooksAttached(false).ok());
  EXPECT_FALSE(capture_->hooks_attached());
  const std::uint64_t detached_at = MonotonicNowNs();
  int unseen = open("/dev/null", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(unseen, 0);
  for (int i = 0; i < 10; ++i) ASSERT_EQ(write(unseen, "u", 1), 1);
  // A process that is not selected blocks 100 ms in a pipe read.
  Child child([] { close(BlockInPipeRead(100ms)); });
  ASSERT_TRUE(child.RunAndWait());
  const auto blocked = [&](const Record& r) { return r.e.pid == child.pid() && r.e.nr == SYS_read; };
  if (capture_->slow_watch_off_cpu()) {
    auto slow = collector_.WaitFor(blocked);
    ASSERT_TRUE(slow.has_value()) << "a blocked read was not seen with the hooks detached";
    EXPECT_EQ(slow->e.flags, KSPAN_SYSCALL_EV_OFF_CPU);
    EXPECT_EQ(slow->e.trace_level, KSPAN_TRACE_SLOW_ONLY);
    EXPECT_EQ(slow->e.fd_kind, KSPAN_FD_PIPE);
    EXPECT_GE(slow->e.start_ns, detached_at);
    EXPECT_GE(slow->e.end_ns - slow->e.start_ns, 50'000'000u);
  }
  ASSERT_TRUE(capture_->SetHooksAttached(true).ok());
  EXPECT_TRUE(capture_->hooks_attached());
  int seen = open("/dev/null", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(seen, 0);
  ASSERT_EQ(write(seen, "s", 1), 1);
  ASSERT_TRUE(collector_.WaitFor(Mine(SYS_write, seen, detached_at)).has_value())
      << "a write after attaching again was not recorded";
  // What other CPUs' rings still held is drained within a few polls.
  SleepFor(200ms);
  EXPECT_EQ(collector_.Count(Mine(SYS_write, unseen, detached_at)), 0u)
      << "writes while the hooks were detached were recorded";
  if (!capture_->slow_watch_off_cpu()) {
    EXPECT_EQ(collector_.Count(blocked), 0u);
  }
  close(unseen);
  close(seen);
}

TEST_P(SyscallSpans, SyscallSetAndThresholdsChangeWithoutReload) {
  KSPAN_REQUIRE_BPF();
  StartCapture();
  if (IsSkipped() || HasFatalFailure()) return;
  int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(capture_->EnableSyscall("write", false).ok());
  ASSERT_EQ(pwrite(fd, "a", 1, 0), 1);  // a marker that is still recorded
  ASSERT_EQ(write(fd, "a", 1), 1);
  ASSERT_EQ(pwrite(fd, "b", 1, 0), 1);
  ASSERT_TRUE(collector_.WaitForCount(Mine(SYS_pwrite64, fd), 2));
  EXPECT_EQ(collector_.Count(Mine(SYS_write, fd)), 0u);

  ASSERT_TRUE(capture_->EnableSyscall("write", true).ok());
  ASSERT_EQ(write(fd, "a", 1), 1);
  EXPECT_TRUE(collector_.WaitFor(Mine(SYS_write, fd)).has_value());

  // File I/O minimum raised to 1 s: a fast write is no longer recorded.
  ASSERT_TRUE(capture_->SetClassMinDuration(KSPAN_SYSCALL_CLASS_FILE_IO, 1s).ok());
  const auto before = collector_.Count(Mine(SYS_write, fd));
  ASSERT_EQ(write(fd, "a", 1), 1);
  ASSERT_TRUE(capture_->SetClassMinDuration(KSPAN_SYSCALL_CLASS_FILE_IO, 0ns).ok());
  ASSERT_EQ(pwrite(fd, "c", 1, 0), 1);
  ASSERT_TRUE(collector_.WaitForCount(Mine(SYS_pwrite64, fd), 3));
  EXPECT_EQ(collector_.Count(Mine(SYS_write, fd)), before);
  EXPECT_EQ(capture_->SetSyscalls({"read", "nosuchcall"}).code(),
            absl::StatusCode::kInvalidArgument);
  const SyscallStats st = capture_->ReadStats();
  EXPECT_GT(st[KSPAN_SYS_STAT_EMITTED], 0u);
  EXPECT_GT(st[KSPAN_SYS_STAT_BELOW_THRESHOLD], 0u);
  close(fd);
}

// Which thread runs comes from the context-switch program's per-CPU entry
// on tp_btf: two threads handing a token back and forth over pipes on one
// CPU switch at every hand-over, and each record still names the thread that
// made the call, never the other one.
TEST_P(SyscallSpans, ThreadsSwitchingOnOneCpuKeepTheirOwnIds) {
  KSPAN_REQUIRE_BPF();
  StartCapture();
  if (IsSkipped() || HasFatalFailure()) return;
  PinnedToThisCpu pin;  // the thread below inherits the one CPU
  ASSERT_TRUE(pin.ok());
  int ab[2], ba[2];
  ASSERT_EQ(pipe2(ab, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(ba, O_CLOEXEC), 0);
  constexpr int kRounds = 300;
  const std::uint64_t since = MonoNow();
  std::atomic<pid_t> other_tid{0};
  std::thread other([&] {
    other_tid = static_cast<pid_t>(CurrentTid());
    char c;
    for (int i = 0; i < kRounds; ++i) {
      if (read(ab[0], &c, 1) != 1 || write(ba[1], &c, 1) != 1) return;
    }
  });
  char c = 't';
  for (int i = 0; i < kRounds; ++i) {
    ASSERT_EQ(write(ab[1], &c, 1), 1);
    ASSERT_EQ(read(ba[0], &c, 1), 1);
  }
  other.join();
  const auto me = static_cast<std::uint32_t>(CurrentTid());
  const auto them = static_cast<std::uint32_t>(other_tid.load());
  auto on = [&](long nr, int fd) {
    return [=](const Record& r) {
      return r.e.nr == nr && r.e.fd == static_cast<std::uint32_t>(fd) && r.e.start_ns >= since &&
             r.e.pid == static_cast<std::uint32_t>(getpid());
    };
  };
  auto by = [](auto match, std::uint32_t tid) {
    return [=](const Record& r) { return match(r) && r.e.tid == tid; };
  };
  EXPECT_TRUE(collector_.WaitForCount(by(on(SYS_write, ab[1]), me), kRounds));
  EXPECT_TRUE(collector_.WaitForCount(by(on(SYS_read, ba[0]), me), kRounds));
  EXPECT_TRUE(collector_.WaitForCount(by(on(SYS_read, ab[0]), them), kRounds));
  EXPECT_TRUE(collector_.WaitForCount(by(on(SYS_write, ba[1]), them), kRounds));
  // Exactly kRounds each, all by the right thread.
  EXPECT_EQ(collector_.Count(on(SYS_write, ab[1])), static_cast<std::size_t>(kRounds));
  EXPECT_EQ(collector_.Count(on(SYS_read, ba[0])), static_cast<std::size_t>(kRounds));
  EXPECT_EQ(collector_.Count(on(SYS_read, ab[0])), static_cast<std::size_t>(kRounds));
  EXPECT_EQ(collector_.Count(on(SYS_write, ba[1])), static_cast<std::size_t>(kRounds));
  for (int fd : {ab[0], ab[1], ba[0], ba[1]}) close(fd);
}

// A syscall that blocks leaves its CPU before its exit: tp_btf keeps a
// running syscall in its CPU's kspan_sys_cur entry and parks it in the
// thread's in-flight slot when the thread is switched out, and the exit may
// then run on another CPU. A read() entered on one CPU, blocked, moved to a
// second CPU and woken there is still exactly one record, with its thread,
// fd, byte count and whole duration.
TEST_P(SyscallSpans, SyscallBlockedOnOneCpuEndsOnAnother) {
  KSPAN_REQUIRE_BPF();
  cpu_set_t allowed;
  ASSERT_EQ(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE && cpus.size() < 2; ++c) {
    if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  }
  if (cpus.size() < 2) {
    if (::kspan::testing::BpfRequired()) FAIL() << "needs two CPUs";
    GTEST_SKIP() << "needs two CPUs";
  }
  StartCapture();
  if (IsSkipped() || HasFatalFailure()) return;
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  const auto on_cpu = [](int cpu) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    return one;
  };
  std::atomic<pid_t> tid{0};
  std::atomic<int> cpu_at_enter{-1}, cpu_at_exit{-1};
  std::atomic<ssize_t> got{0};
  const std::uint64_t before = MonoNow();
  std::thread blocked([&] {
    const cpu_set_t first = on_cpu(cpus[0]);
    const bool pinned = sched_setaffinity(0, sizeof(first), &first) == 0;
    cpu_at_enter = sched_getcpu();
    tid = static_cast<pid_t>(CurrentTid());
    if (!pinned) return;
    char c;
    got = read(p[0], &c, 1);
    cpu_at_exit = sched_getcpu();
  });
  // A failed assertion below must not leave the thread blocked and joinable
  // (std::terminate): wake it and join it on the way out.
  struct Unblock {
    int fd;
    std::thread& thread;
    ~Unblock() {
      if (thread.joinable()) {
        (void)!write(fd, "x", 1);
        thread.join();
      }
    }
  } unblock{p[1], blocked};
  while (tid.load() == 0) std::this_thread::sleep_for(1ms);
  // Blocked in read() once the kernel says so (/proc/.../syscall starts
  // with the number of the syscall a blocked thread is in, read is 0).
  const std::string in_syscall = "/proc/self/task/" + std::to_string(tid.load()) + "/syscall";
  bool blocked_in_read = false;
  for (int i = 0; i < 5000 && !blocked_in_read; ++i) {
    std::ifstream f(in_syscall);
    std::string nr;
    blocked_in_read = (f >> nr) && nr == "0";
    if (!blocked_in_read) std::this_thread::sleep_for(1ms);
  }
  ASSERT_TRUE(blocked_in_read) << "the thread never blocked in read()";
  const std::uint64_t moved = MonoNow();
  const cpu_set_t second = on_cpu(cpus[1]);
  ASSERT_EQ(sched_setaffinity(tid.load(), sizeof(second), &second), 0);
  std::this_thread::sleep_for(20ms);
  const std::uint64_t written = MonoNow();
  ASSERT_EQ(write(p[1], "x", 1), 1);
  blocked.join();
  const std::uint64_t after = MonoNow();
  ASSERT_EQ(got.load(), 1);
  EXPECT_EQ(cpu_at_enter.load(), cpus[0]);
  EXPECT_EQ(cpu_at_exit.load(), cpus[1]);
  const auto t = static_cast<std::uint32_t>(tid.load());
  const auto mine = [&](const Record& r) {
    return r.e.tid == t && r.e.nr == SYS_read && r.e.fd == static_cast<std::uint32_t>(p[0]);
  };
  auto r = collector_.WaitFor(mine);
  ASSERT_TRUE(r.has_value()) << "no record of the read() that changed CPU";
  EXPECT_EQ(r->e.pid, static_cast<std::uint32_t>(getpid()));
  EXPECT_EQ(Ret(r->e), 1);
  EXPECT_EQ(r->e.fd_kind, KSPAN_FD_PIPE);
  EXPECT_EQ(r->e.trace_level, KSPAN_TRACE_FULL);
  // Entered before the move, ended after the write that woke it.
  EXPECT_GE(r->e.start_ns, before);
  EXPECT_LE(r->e.start_ns, moved);
  EXPECT_GE(r->e.end_ns, written);
  EXPECT_LE(r->e.end_ns, after);
  EXPECT_EQ(collector_.Count(mine), 1u);
  close(p[0]);
  close(p[1]);
}

// Overload: the smallest record rings (1024 records a CPU), nobody draining,
// fill up; every record is either in a ring or counted as lost, none
// vanishes.
TEST_P(SyscallSpans, FullRingLossIsCountedExactly) {
  KSPAN_REQUIRE_BPF();
  StartCapture(static_cast<std::size_t>(sysconf(_SC_PAGESIZE)), /*start_reader=*/false);
  if (IsSkipped() || HasFatalFailure()) return;
  EXPECT_EQ(capture_->record_rings().slots_per_cpu, 1024u);
  PinnedToThisCpu pin;  // one CPU's ring overflows whatever the CPU count
  ASSERT_TRUE(pin.ok());
  int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  constexpr int kWrites = 3000;
  for (int i = 0; i < kWrites; ++i) ASSERT_EQ(write(fd, "z", 1), 1);
  close(fd);
  capture_->Detach();  // nothing more is written to the ring
  const SyscallStats st = capture_->ReadStats();
  EXPECT_GT(st[KSPAN_SYS_STAT_RING_FULL], 0u);
  EXPECT_GE(st[KSPAN_SYS_STAT_EMITTED] + st[KSPAN_SYS_STAT_RING_FULL],
            static_cast<std::uint64_t>(kWrites));
  // Drain: exactly the emitted records are there.
  while (reader_.PollOnce(50ms) > 0) {
  }
  EXPECT_EQ(reader_.records_read(), st[KSPAN_SYS_STAT_EMITTED]);
  EXPECT_EQ(decoder_.decoded(), st[KSPAN_SYS_STAT_EMITTED]);
  EXPECT_EQ(decoder_.errors(), 0u);
}

// With a wakeup size the programs ring the reader's doorbell once per that
// many bytes of records on a CPU, not per record, and the reader drains a
// CPU that keeps writing on a timer: a reader whose poll timeout is long
// still gets a stream of records promptly, all but those written since the
// last doorbell.
TEST_P(SyscallSpans, RecordsArriveLongBeforeThePollTimeout) {
  KSPAN_REQUIRE_BPF();
  constexpr auto kPollTimeout = 3s;
  StartCapture(1 << 20, /*start_reader=*/true, /*direct_walk=*/true,
               /*wakeup_bytes=*/16 << 10, kPollTimeout);
  if (IsSkipped() || HasFatalFailure()) return;
  // 16 KiB of 136-byte records, rounded down to a power of two.
  EXPECT_EQ(SyscallCapture::RecordRingSizesFor(1 << 20, 16 << 10, 2).bell_every, 64u);
  EXPECT_EQ(capture_->record_rings().bell_every, 64u);
  PinnedToThisCpu pin;  // one CPU's doorbells, whatever the CPU count
  ASSERT_TRUE(pin.ok());
  SleepFor(50ms);  // the reader asleep in its first poll of an empty ring
  int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const std::uint64_t since = MonoNow();
  constexpr int kWrites = 1000;
  for (int i = 0; i < kWrites; ++i) ASSERT_EQ(write(fd, "w", 1), 1);
  const auto written = std::chrono::steady_clock::now();
  // Everything up to this CPU's last doorbell (at most 63 records after it)
  // arrives long before the poll timeout would deliver it.
  constexpr std::size_t kBeforeLastBell = kWrites - 63;
  EXPECT_TRUE(collector_.WaitForCount(Mine(SYS_write, fd, since), kBeforeLastBell, 1s));
  EXPECT_LT(std::chrono::steady_clock::now() - written, kPollTimeout / 2);
  EXPECT_GE(reader_.doorbells(), 1u);
  close(fd);
}

// The programs ring the doorbell where the reader asked (bell_at, in
// kspan_sys_pos) and every bell_every records past it, never before it:
// the doorbells are counted on kspan_sys_bell itself against this CPU's head.
TEST_P(SyscallSpans, DoorbellRungAtBellAtThenEveryBellEvery) {
  KSPAN_REQUIRE_BPF();
  StartCapture(1 << 20, /*start_reader=*/false, /*direct_walk=*/true, /*wakeup_bytes=*/16 << 10);
  if (IsSkipped() || HasFatalFailure()) return;
  const PerCpuRingSpec spec = capture_->record_rings();
  ASSERT_EQ(spec.bell_every, 64u);
  ASSERT_GE(spec.slots_per_cpu, 1024u);  // room for every record below: no drain
  PinnedToThisCpu pin;
  ASSERT_TRUE(pin.ok());
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  const std::size_t len = (spec.cpus * sizeof(kspan_percpu_pos) + page - 1) / page * page;
  void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, spec.positions_fd, 0);
  ASSERT_NE(m, MAP_FAILED) << std::strerror(errno);
  kspan_percpu_pos* pos = static_cast<kspan_percpu_pos*>(m) + sched_getcpu();
  std::uint64_t bells = 0;
  ring_buffer* rb = ring_buffer__new(
      capture_->bell_fd(),
      [](void* ctx, void*, std::size_t) {
        ++*static_cast<std::uint64_t*>(ctx);
        return 0;
      },
      &bells, nullptr);
  ASSERT_NE(rb, nullptr) << std::strerror(errno);
  int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto head = [&] { return __atomic_load_n(&pos->head, __ATOMIC_ACQUIRE); };

  // Far ahead: no doorbell at all.
  ring_buffer__consume(rb);
  bells = 0;
  __atomic_store_n(&pos->bell_at, head() + 100000, __ATOMIC_RELAXED);
  for (int i = 0; i < 200; ++i) ASSERT_EQ(write(fd, "b", 1), 1);
  ring_buffer__consume(rb);
  EXPECT_EQ(bells, 0u);

  // Ten records ahead: a doorbell there, then one every 64 records.
  const std::uint64_t at = head() + 10;
  __atomic_store_n(&pos->bell_at, at, __ATOMIC_RELAXED);
  for (int i = 0; i < 300; ++i) ASSERT_EQ(write(fd, "b", 1), 1);
  const std::uint64_t end = head();
  ring_buffer__consume(rb);
  ASSERT_GE(end, at + 256);
  EXPECT_EQ(bells, (end - at) / 64 + 1);
  ring_buffer__free(rb);
  close(fd);
  munmap(m, len);
}

INSTANTIATE_TEST_SUITE_P(Syscall, SyscallSpans, ::testing::ValuesIn(kSyscallVariants),
                         [](const ::testing::TestParamInfo<SyscallVariant>& p) {
                           return std::string(SyscallVariantName(p.param));
                         });

INSTANTIATE_TEST_SUITE_P(Syscall, SyscallSocketFields, ::testing::ValuesIn(kSyscallVariants),
                         [](const ::testing::TestParamInfo<SyscallVariant>& p) {
                           return std::string(SyscallVariantName(p.param));
                         });

// Without a forced variant the loader takes the first the kernel accepts.
TEST(SyscallCaptureAuto, TakesAVariantAndReportsIt) {
  KSPAN_REQUIRE_BPF();
  auto pins = PinDirectory::Create(::kspan::testing::TestPinDir());
  ASSERT_TRUE(pins.ok()) << pins.status();
  SyscallCaptureOptions opts;
  opts.pin_dir = pins->path();
  opts.ring_buffer_bytes = 64 << 10;
  SyscallCapture capture(opts);
  ASSERT_TRUE(capture.Start().ok());
  ::kspan::testing::ReportVariant("syscalls", capture.variant());
  EXPECT_TRUE(ParseSyscallVariant(capture.variant()).has_value()) << capture.variant();
  EXPECT_GE(capture.ring_fd(), 0);
  EXPECT_EQ(capture.EnabledSyscalls().size(), 28u);
  struct stat st {};
  EXPECT_EQ(stat(pins->PathOf("kspan_sys_stats").c_str(), &st), 0) << "stats map not pinned";
  EXPECT_EQ(stat(pins->PathOf("kspan_sys_cfg").c_str(), &st), 0) << "config map not pinned";
}

}  // namespace
}  // namespace kspan
