// Syscall records -> spans, and the decoder's syscall case, with synthetic
// records (no kernel).
#include "userspace/syscall_spans.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/futex.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "bpf/filter.h"
#include "userspace/event_decoder.h"
#include "userspace/syscall_capture.h"

namespace kspan {
namespace {

constexpr std::int64_t kOffset = 1'700'000'000'000'000'000;

class SyscallSpansTest : public ::testing::Test {
 protected:
  Span Build(const kspan_syscall_event& e, std::string_view path = {}) {
    return BuildSyscallSpan(e, path, clock_, resources_, ids_);
  }

  static kspan_syscall_event Base(std::uint16_t nr, std::int64_t ret) {
    kspan_syscall_event e{};
    e.type = KSPAN_EVENT_SYSCALL;
    e.pid = 4321;
    e.tid = 4325;
    e.nr = nr;
    e.syscall_class = KSPAN_SYSCALL_CLASS_FILE_IO;
    e.trace_level = KSPAN_TRACE_FULL;
    e.start_ns = 5'000'000;
    e.end_ns = 5'040'000;
    e.ret = static_cast<std::uint64_t>(ret);
    e.fd = KSPAN_SYSCALL_NO_FD;
    std::strcpy(e.comm, "postgres");
    return e;
  }

  static kspan_syscall_event TcpWrite() {
    kspan_syscall_event e = Base(SYS_write, 512);
    e.syscall_class = KSPAN_SYSCALL_CLASS_FILE_IO;
    e.args[0] = 7;
    e.args[2] = 1024;
    e.fd = 7;
    e.fd_kind = KSPAN_FD_SOCKET;
    e.family = AF_INET;
    e.sock_type = SOCK_STREAM;
    e.protocol = IPPROTO_TCP;
    e.sport = 5432;
    e.dport = 40100;
    inet_pton(AF_INET, "10.0.0.5", e.saddr);
    inet_pton(AF_INET, "10.0.0.9", e.daddr);
    return e;
  }

  template <typename T>
  static T Get(const Span& s, std::string_view key) {
    const AttributeValue* v = FindAttribute(s.attributes, key);
    EXPECT_NE(v, nullptr) << "missing " << key;
    if (v == nullptr || !std::holds_alternative<T>(*v)) return T{};
    return std::get<T>(*v);
  }
  static bool Has(const Span& s, std::string_view key) {
    return FindAttribute(s.attributes, key) != nullptr;
  }

  ClockSync clock_{std::chrono::hours(1), [] { return ClockSync::Sample{kOffset, 1}; }};
  ProcessResources resources_{
      ProcessResources::Options{.proc_root = "/nonexistent-proc", .host_name = "host-a", .max_entries = 16}};
  IdGenerator ids_;
};

TEST_F(SyscallSpansTest, SocketWriteCarriesNetworkAttributesAndBytes) {
  Span s = Build(TcpWrite());
  EXPECT_EQ(s.name, "syscall write");
  EXPECT_EQ(s.kind, SpanKind::kInternal);
  EXPECT_EQ(s.start_unix_nano, static_cast<std::uint64_t>(kOffset) + 5'000'000);
  EXPECT_EQ(s.end_unix_nano, static_cast<std::uint64_t>(kOffset) + 5'040'000);
  EXPECT_TRUE(IsValid(s.trace_id));
  EXPECT_TRUE(IsValid(s.span_id));
  EXPECT_EQ(s.status_code, StatusCode::kUnset);
  ASSERT_NE(s.resource, nullptr);
  EXPECT_EQ(Get<std::int64_t>(s, "process.pid"), 4321);
  EXPECT_EQ(Get<std::int64_t>(s, "thread.id"), 4325);
  EXPECT_EQ(Get<std::string>(s, "kspan.syscall.name"), "write");
  EXPECT_EQ(Get<std::int64_t>(s, "kspan.syscall.fd"), 7);
  EXPECT_EQ(Get<std::string>(s, "kspan.fd.kind"), "socket");
  EXPECT_EQ(Get<std::string>(s, "network.transport"), "tcp");
  EXPECT_EQ(Get<std::string>(s, "network.type"), "ipv4");
  EXPECT_EQ(Get<std::string>(s, "network.local.address"), "10.0.0.5");
  EXPECT_EQ(Get<std::int64_t>(s, "network.local.port"), 5432);
  EXPECT_EQ(Get<std::string>(s, "network.peer.address"), "10.0.0.9");
  EXPECT_EQ(Get<std::int64_t>(s, "network.peer.port"), 40100);
  EXPECT_EQ(Get<std::string>(s, "network.io.direction"), "transmit");
  EXPECT_EQ(Get<std::int64_t>(s, "kspan.syscall.bytes"), 512);
  EXPECT_EQ(Get<std::int64_t>(s, "kspan.syscall.bytes_requested"), 1024);
  EXPECT_FALSE(Has(s, "error.type"));
  EXPECT_FALSE(Has(s, "file.path"));
  EXPECT_FALSE(Has(s, "kspan.syscall.slow_only"));
}

TEST_F(SyscallSpansTest, Ipv6AndUnconnectedUdpHaveNoPeer) {
  kspan_syscall_event e = TcpWrite();
  e.nr = SYS_recvfrom;
  e.family = AF_INET6;
  e.protocol = IPPROTO_UDP;
  e.sock_type = SOCK_DGRAM;
  std::memset(e.saddr, 0, sizeof(e.saddr));
  std::memset(e.daddr, 0, sizeof(e.daddr));
  inet_pton(AF_INET6, "::1", e.saddr);
  e.dport = 0;
  Span s = Build(e);
  EXPECT_EQ(s.name, "syscall recvfrom");
  EXPECT_EQ(Get<std::string>(s, "network.transport"), "udp");
  EXPECT_EQ(Get<std::string>(s, "network.type"), "ipv6");
  EXPECT_EQ(Get<std::string>(s, "network.local.address"), "::1");
  EXPECT_EQ(Get<std::string>(s, "network.io.direction"), "receive");
  EXPECT_FALSE(Has(s, "network.peer.address"));
  EXPECT_FALSE(Has(s, "network.peer.port"));
}

TEST_F(SyscallSpansTest, FilePathFromOpenatAndNameFromDentry) {
  kspan_syscall_event e = Base(SYS_pwrite64, 4096);
  e.fd = 12;
  e.fd_kind = KSPAN_FD_FILE;
  e.args[2] = 4096;
  e.path_source = KSPAN_PATH_OPENAT;
  Span s = Build(e, "/var/lib/db/wal.log");
  EXPECT_EQ(Get<std::string>(s, "file.path"), "/var/lib/db/wal.log");
  EXPECT_EQ(Get<std::string>(s, "kspan.fd.kind"), "file");
  EXPECT_EQ(Get<std::int64_t>(s, "kspan.syscall.bytes"), 4096);
  EXPECT_FALSE(Has(s, "network.io.direction"));  // not a socket
  EXPECT_FALSE(Has(s, "network.transport"));

  e.path_source = KSPAN_PATH_DENTRY;
  Span d = Build(e, "wal.log");
  EXPECT_EQ(Get<std::string>(d, "file.name"), "wal.log");
  EXPECT_FALSE(Has(d, "file.path"));
}

TEST_F(SyscallSpansTest, NegativeReturnIsAnErrorWithItsErrnoName) {
  kspan_syscall_event e = Base(SYS_read, -EBADF);
  e.fd = 987;
  Span s = Build(e);
  EXPECT_EQ(s.status_code, StatusCode::kError);
  EXPECT_EQ(s.status_message, "read: Bad file descriptor");
  EXPECT_EQ(Get<std::string>(s, "error.type"), "EBADF");
  EXPECT_EQ(Get<std::int64_t>(s, "kspan.syscall.return"), -EBADF);
  EXPECT_EQ(Get<std::int64_t>(s, "kspan.syscall.fd"), 987);
  EXPECT_FALSE(Has(s, "kspan.fd.kind"));
  EXPECT_FALSE(Has(s, "kspan.syscall.bytes"));
}

TEST_F(SyscallSpansTest, ErrnoSymbols) {
  EXPECT_EQ(ErrnoSymbol(EAGAIN), "EAGAIN");
  EXPECT_EQ(ErrnoSymbol(ETIMEDOUT), "ETIMEDOUT");
  EXPECT_EQ(ErrnoSymbol(512), "ERESTARTSYS");
  EXPECT_EQ(ErrnoSymbol(516), "ERESTART_RESTARTBLOCK");
  EXPECT_EQ(ErrnoSymbol(4000), "errno 4000");
}

TEST_F(SyscallSpansTest, FutexWaitDetailsAndSlowOnlyMark) {
  kspan_syscall_event e = Base(SYS_futex, -ETIMEDOUT);
  e.syscall_class = KSPAN_SYSCALL_CLASS_WAIT;
  e.trace_level = KSPAN_TRACE_SLOW_ONLY;
  e.args[0] = 0x7f0012345678;
  e.args[1] = FUTEX_WAIT_BITSET_PRIVATE;
  Span s = Build(e);
  EXPECT_EQ(s.name, "syscall futex");
  EXPECT_EQ(Get<std::string>(s, "kspan.syscall.class"), "wait");
  EXPECT_EQ(Get<std::string>(s, "kspan.futex.op"), "FUTEX_WAIT_BITSET");
  EXPECT_EQ(Get<bool>(s, "kspan.futex.private"), true);
  EXPECT_EQ(Get<std::string>(s, "kspan.futex.uaddr"), "0x7f0012345678");
  EXPECT_EQ(Get<bool>(s, "kspan.syscall.slow_only"), true);
  // A wait that timed out is a normal outcome, not an error.
  EXPECT_EQ(Get<std::string>(s, "kspan.wait.outcome"), "timed_out");
  EXPECT_EQ(s.status_code, StatusCode::kUnset);
  EXPECT_FALSE(Has(s, "error.type"));
  EXPECT_FALSE(Has(s, "kspan.syscall.fd"));
}

TEST_F(SyscallSpansTest, OffCpuWaitHasNoReturnValueBytesOrError) {
  // The slow-syscall watch on context switches: a socket read that waited
  // off the CPU and had not returned when the record was written. Its ret
  // field is 0 and must not become "returned 0 bytes".
  kspan_syscall_event e = TcpWrite();
  e.nr = SYS_read;
  e.trace_level = KSPAN_TRACE_SLOW_ONLY;
  e.flags = KSPAN_SYSCALL_EV_OFF_CPU;
  e.ret = 0;
  Span s = Build(e);
  EXPECT_EQ(s.name, "syscall read");
  EXPECT_EQ(Get<bool>(s, "kspan.syscall.off_cpu"), true);
  EXPECT_EQ(Get<bool>(s, "kspan.syscall.slow_only"), true);
  EXPECT_FALSE(Has(s, "kspan.syscall.return"));
  EXPECT_FALSE(Has(s, "kspan.syscall.bytes"));
  EXPECT_EQ(Get<std::int64_t>(s, "kspan.syscall.bytes_requested"), 1024);
  EXPECT_EQ(Get<std::string>(s, "network.io.direction"), "receive");
  EXPECT_EQ(Get<std::string>(s, "network.peer.address"), "10.0.0.9");
  EXPECT_EQ(s.status_code, StatusCode::kUnset);
  // The same record with a negative ret (a bit pattern the kernel never
  // writes for these) still is no error.
  e.ret = static_cast<std::uint64_t>(-EBADF);
  Span bad = Build(e);
  EXPECT_EQ(bad.status_code, StatusCode::kUnset);
  EXPECT_FALSE(Has(bad, "error.type"));
  // Without the flag the same record is a read that returned 0 bytes.
  e.flags = 0;
  e.ret = 0;
  Span returned = Build(e);
  EXPECT_EQ(Get<std::int64_t>(returned, "kspan.syscall.return"), 0);
  EXPECT_EQ(Get<std::int64_t>(returned, "kspan.syscall.bytes"), 0);
  EXPECT_FALSE(Has(returned, "kspan.syscall.off_cpu"));
}

TEST_F(SyscallSpansTest, EpollWaitCarriesTimeoutAndReadyCount) {
  kspan_syscall_event e = Base(SYS_epoll_wait, 3);
  e.syscall_class = KSPAN_SYSCALL_CLASS_WAIT;
  e.fd = 5;
  e.fd_kind = KSPAN_FD_OTHER;
  e.args[2] = 64;
  e.args[3] = static_cast<std::uint64_t>(-1);  // infinite
  Span s = Build(e);
  EXPECT_EQ(Get<std::int64_t>(s, "kspan.wait.max_events"), 64);
  EXPECT_EQ(Get<std::int64_t>(s, "kspan.wait.timeout_ms"), -1);
  EXPECT_EQ(Get<std::int64_t>(s, "kspan.wait.ready"), 3);
  EXPECT_EQ(Get<std::string>(s, "kspan.fd.kind"), "other");
}

TEST_F(SyscallSpansTest, UnknownNumberIsNamedByNumber) {
  Span s = Build(Base(333, 0));
  EXPECT_EQ(s.name, "syscall syscall_333");
}

TEST(SyscallTable, DefaultSetAndNumbers) {
  std::size_t defaults = 0;
  for (const auto& s : KnownSyscalls()) {
    defaults += s.in_default_set;
    EXPECT_LT(s.nr, KSPAN_SYSCALL_NR_MAX);
    EXPECT_EQ(FindSyscall(s.name), &s);
    EXPECT_EQ(FindSyscallByNr(s.nr), &s);
  }
  EXPECT_EQ(defaults, 28u);
  // x86_64 numbers the BPF side indexes by.
  EXPECT_EQ(FindSyscall("read")->nr, 0);
  EXPECT_EQ(FindSyscall("write")->nr, 1);
  EXPECT_EQ(FindSyscall("close")->nr, 3);
  EXPECT_EQ(FindSyscall("futex")->nr, 202);
  EXPECT_EQ(FindSyscall("openat")->nr, 257);
  EXPECT_EQ(FindSyscall("futex")->flags, KSPAN_SYSCALL_F_FUTEX_WAIT);
  EXPECT_EQ(FindSyscall("close")->flags, KSPAN_SYSCALL_F_FD_AT_ENTER);
  EXPECT_EQ(FindSyscall("sendto")->syscall_class, KSPAN_SYSCALL_CLASS_SOCKET_IO);
  EXPECT_EQ(FindSyscall("nosuch"), nullptr);
  EXPECT_TRUE(SyscallCapture::ValidateSyscallNames({"read", "futex"}).ok());
  EXPECT_EQ(SyscallCapture::ValidateSyscallNames({"read", "fork"}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SyscallTable, VariantNamesRoundTrip) {
  for (auto v : kSyscallVariants) {
    EXPECT_EQ(ParseSyscallVariant(SyscallVariantName(v)), v);
  }
  EXPECT_EQ(kSyscallVariants[0], SyscallVariant::kTpBtf);
  EXPECT_FALSE(ParseSyscallVariant("kprobe").has_value());
}

class SyscallRecorder : public KernelEventHandler {
 public:
  void OnTcpConnect(const kspan_tcp_connect_event&) noexcept override {}
  void OnSyscall(const kspan_syscall_event& e, std::string_view path) noexcept override {
    events.push_back(e);
    paths.emplace_back(path);
  }
  std::vector<kspan_syscall_event> events;
  std::vector<std::string> paths;
};

std::span<const std::byte> Bytes(const void* p, std::size_t n) {
  return {static_cast<const std::byte*>(p), n};
}

TEST(SyscallDecoder, RecordsWithAndWithoutPath) {
  MetricsRegistry metrics;
  SyscallRecorder rec;
  EventDecoder decoder(rec, metrics);

  kspan_syscall_event e{};
  e.type = KSPAN_EVENT_SYSCALL;
  e.nr = SYS_sendto;
  e.pid = 77;
  decoder.OnEvent(Bytes(&e, sizeof(e)));

  kspan_syscall_path_event p{};
  p.ev = e;
  p.ev.nr = SYS_openat;
  p.ev.path_len = 8;
  std::strcpy(p.path, "/tmp/a.b");
  decoder.OnEvent(Bytes(&p, sizeof(p)));

  // path_len larger than the tail's NUL-terminated content is bounded by it.
  p.ev.path_len = 60000;
  decoder.OnEvent(Bytes(&p, sizeof(p)));

  ASSERT_EQ(rec.events.size(), 3u);
  EXPECT_EQ(rec.events[0].nr, SYS_sendto);
  EXPECT_EQ(rec.events[0].pid, 77u);
  EXPECT_EQ(rec.paths[0], "");
  EXPECT_EQ(rec.events[1].nr, SYS_openat);
  EXPECT_EQ(rec.paths[1], "/tmp/a.b");
  EXPECT_EQ(rec.paths[2], "/tmp/a.b");
  EXPECT_EQ(decoder.decoded(), 3u);
  EXPECT_EQ(decoder.errors(), 0u);
}

TEST(SyscallDecoder, WrongSizeIsCountedNotDelivered) {
  MetricsRegistry metrics;
  SyscallRecorder rec;
  EventDecoder decoder(rec, metrics);
  kspan_syscall_path_event p{};
  p.ev.type = KSPAN_EVENT_SYSCALL;
  decoder.OnEvent(Bytes(&p, sizeof(kspan_syscall_event) - 8));
  decoder.OnEvent(Bytes(&p, sizeof(kspan_syscall_event) + 8));
  decoder.OnEvent(Bytes(&p, sizeof(p) - 1));
  EXPECT_TRUE(rec.events.empty());
  EXPECT_EQ(decoder.errors(), 3u);
  EXPECT_EQ(decoder.decoded(), 0u);
}

}  // namespace
}  // namespace kspan
