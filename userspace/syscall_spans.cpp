#include "userspace/syscall_spans.h"

#include <arpa/inet.h>
#include <linux/futex.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "bpf/filter.h"

namespace kspan {
namespace {

constexpr std::uint8_t kFd = KSPAN_SYSCALL_F_FD_ARG0;
constexpr auto kFile = KSPAN_SYSCALL_CLASS_FILE_IO;
constexpr auto kSock = KSPAN_SYSCALL_CLASS_SOCKET_IO;
constexpr auto kWait = KSPAN_SYSCALL_CLASS_WAIT;

// read/write and friends are file I/O by default; the fd kind decides what
// the span says. send/recv are socket I/O.
constexpr std::array kSyscalls = {
    SyscallInfo{SYS_read, "read", kFile, kFd, true},
    SyscallInfo{SYS_write, "write", kFile, kFd, true},
    SyscallInfo{SYS_readv, "readv", kFile, kFd, true},
    SyscallInfo{SYS_writev, "writev", kFile, kFd, true},
    SyscallInfo{SYS_pread64, "pread64", kFile, kFd, true},
    SyscallInfo{SYS_pwrite64, "pwrite64", kFile, kFd, true},
    SyscallInfo{SYS_sendto, "sendto", kSock, kFd, true},
    SyscallInfo{SYS_recvfrom, "recvfrom", kSock, kFd, true},
    SyscallInfo{SYS_sendmsg, "sendmsg", kSock, kFd, true},
    SyscallInfo{SYS_recvmsg, "recvmsg", kSock, kFd, true},
    SyscallInfo{SYS_sendmmsg, "sendmmsg", kSock, kFd, true},
    SyscallInfo{SYS_recvmmsg, "recvmmsg", kSock, kFd, true},
    SyscallInfo{SYS_connect, "connect", kSock, kFd, true},
    SyscallInfo{SYS_accept, "accept", kSock, KSPAN_SYSCALL_F_FD_RET, true},
    SyscallInfo{SYS_accept4, "accept4", kSock, KSPAN_SYSCALL_F_FD_RET, true},
    SyscallInfo{SYS_openat, "openat", kFile,
                KSPAN_SYSCALL_F_FD_RET | KSPAN_SYSCALL_F_PATH_ARG1, true},
    SyscallInfo{SYS_close, "close", kFile, KSPAN_SYSCALL_F_FD_AT_ENTER, true},
    SyscallInfo{SYS_fsync, "fsync", kFile, kFd, true},
    SyscallInfo{SYS_fdatasync, "fdatasync", kFile, kFd, true},
    SyscallInfo{SYS_poll, "poll", kWait, 0, true},
    SyscallInfo{SYS_ppoll, "ppoll", kWait, 0, true},
    SyscallInfo{SYS_epoll_wait, "epoll_wait", kWait, kFd, true},
    SyscallInfo{SYS_epoll_pwait, "epoll_pwait", kWait, kFd, true},
    SyscallInfo{SYS_select, "select", kWait, 0, true},
    SyscallInfo{SYS_pselect6, "pselect6", kWait, 0, true},
    SyscallInfo{SYS_nanosleep, "nanosleep", kWait, 0, true},
    SyscallInfo{SYS_clock_nanosleep, "clock_nanosleep", kWait, 0, true},
    SyscallInfo{SYS_futex, "futex", kWait, KSPAN_SYSCALL_F_FUTEX_WAIT, true},
    // Known, off by default.
    SyscallInfo{SYS_epoll_pwait2, "epoll_pwait2", kWait, kFd, false},
    SyscallInfo{SYS_sendfile, "sendfile", kFile, 0, false},
    SyscallInfo{SYS_sync_file_range, "sync_file_range", kFile, kFd, false},
    SyscallInfo{SYS_shutdown, "shutdown", kSock, kFd, false},
};
static_assert(SYS_futex < KSPAN_SYSCALL_NR_MAX && SYS_epoll_pwait2 < KSPAN_SYSCALL_NR_MAX);

std::string Address(std::uint8_t family, const std::uint8_t* addr) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (inet_ntop(family, addr, buf, sizeof(buf)) == nullptr) return {};
  return buf;
}

bool IsZero(const std::uint8_t* addr, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (addr[i] != 0) return false;
  }
  return true;
}

enum class Io { kNone, kReceive, kTransmit };

// Byte-moving syscalls: the direction, and whether args[2] is a byte count.
Io Direction(std::uint32_t nr, bool* count_arg) {
  *count_arg = false;
  switch (nr) {
    case SYS_read:
    case SYS_pread64:
    case SYS_recvfrom:
      *count_arg = true;
      return Io::kReceive;
    case SYS_readv:
    case SYS_recvmsg:
    case SYS_recvmmsg:
      return Io::kReceive;
    case SYS_write:
    case SYS_pwrite64:
    case SYS_sendto:
      *count_arg = true;
      return Io::kTransmit;
    case SYS_writev:
    case SYS_sendmsg:
    case SYS_sendmmsg:
      return Io::kTransmit;
    default:
      return Io::kNone;
  }
}

std::string_view FutexOpName(std::uint64_t op) {
  switch (op & FUTEX_CMD_MASK) {
    case FUTEX_WAIT: return "FUTEX_WAIT";
    case FUTEX_WAIT_BITSET: return "FUTEX_WAIT_BITSET";
    case FUTEX_WAIT_REQUEUE_PI: return "FUTEX_WAIT_REQUEUE_PI";
    case FUTEX_LOCK_PI: return "FUTEX_LOCK_PI";
    case 13: return "FUTEX_LOCK_PI2";  // not in every libc's linux/futex.h
    default: return "other";
  }
}

void AddWaitDetails(const kspan_syscall_event& e, Attributes& a) {
  const auto i64 = [](std::uint64_t v) { return static_cast<std::int64_t>(v); };
  const auto i32 = [](std::uint64_t v) { return static_cast<std::int64_t>(static_cast<std::int32_t>(v)); };
  switch (e.nr) {
    case SYS_futex:
      a.push_back({"kspan.futex.op", std::string(FutexOpName(e.args[1]))});
      a.push_back({"kspan.futex.private", (e.args[1] & FUTEX_PRIVATE_FLAG) != 0});
      a.push_back({"kspan.futex.uaddr", absl::StrCat("0x", absl::Hex(e.args[0]))});
      break;
    case SYS_poll:
      a.push_back({"kspan.wait.nfds", i64(e.args[1])});
      a.push_back({"kspan.wait.timeout_ms", i32(e.args[2])});
      break;
    case SYS_ppoll:
      a.push_back({"kspan.wait.nfds", i64(e.args[1])});
      break;
    case SYS_epoll_wait:
    case SYS_epoll_pwait:
    case SYS_epoll_pwait2:
      a.push_back({"kspan.wait.max_events", i32(e.args[2])});
      if (e.nr != SYS_epoll_pwait2) a.push_back({"kspan.wait.timeout_ms", i32(e.args[3])});
      break;
    case SYS_select:
    case SYS_pselect6:
      a.push_back({"kspan.wait.nfds", i32(e.args[0])});
      break;
    case SYS_clock_nanosleep:
      a.push_back({"kspan.sleep.clock_id", i32(e.args[0])});
      a.push_back({"kspan.sleep.absolute", (e.args[1] & 1) != 0});  // TIMER_ABSTIME
      break;
    default:
      break;
  }
}

void AddSocket(const kspan_syscall_event& e, Attributes& a) {
  if (e.family == AF_UNIX) {
    a.push_back({"network.transport", std::string("unix")});
    return;
  }
  if (e.family != AF_INET && e.family != AF_INET6) return;
  const std::size_t len = e.family == AF_INET6 ? 16 : 4;
  if (e.protocol == IPPROTO_TCP) {
    a.push_back({"network.transport", std::string("tcp")});
  } else if (e.protocol == IPPROTO_UDP) {
    a.push_back({"network.transport", std::string("udp")});
  }
  a.push_back({"network.type", std::string(e.family == AF_INET6 ? "ipv6" : "ipv4")});
  a.push_back({"network.local.address", Address(e.family, e.saddr)});
  a.push_back({"network.local.port", static_cast<std::int64_t>(e.sport)});
  // An unconnected socket (a UDP receiver, a listener) has no peer.
  if (e.dport != 0 || !IsZero(e.daddr, len)) {
    a.push_back({"network.peer.address", Address(e.family, e.daddr)});
    a.push_back({"network.peer.port", static_cast<std::int64_t>(e.dport)});
  }
}

}  // namespace

std::span<const SyscallInfo> KnownSyscalls() { return kSyscalls; }

const SyscallInfo* FindSyscall(std::string_view name) {
  for (const auto& s : kSyscalls) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

const SyscallInfo* FindSyscallByNr(std::uint32_t nr) {
  for (const auto& s : kSyscalls) {
    if (s.nr == nr) return &s;
  }
  return nullptr;
}

std::string_view SyscallClassName(std::uint8_t syscall_class) {
  switch (syscall_class) {
    case KSPAN_SYSCALL_CLASS_FILE_IO: return "file_io";
    case KSPAN_SYSCALL_CLASS_SOCKET_IO: return "socket_io";
    case KSPAN_SYSCALL_CLASS_WAIT: return "wait";
    default: return "other";
  }
}

std::string_view FdKindName(std::uint8_t fd_kind) {
  switch (fd_kind) {
    case KSPAN_FD_FILE: return "file";
    case KSPAN_FD_SOCKET: return "socket";
    case KSPAN_FD_PIPE: return "pipe";
    case KSPAN_FD_OTHER: return "other";
    default: return {};
  }
}

std::string ErrnoSymbol(int err) {
  // Visible at sys_exit before signal delivery turns them into EINTR or a
  // restart; include/linux/errno.h, not exported to userspace headers.
  switch (err) {
    case 512: return "ERESTARTSYS";
    case 513: return "ERESTARTNOINTR";
    case 514: return "ERESTARTNOHAND";
    case 515: return "ENOIOCTLCMD";
    case 516: return "ERESTART_RESTARTBLOCK";
    default: break;
  }
  // glibc >= 2.32 names every errno it knows.
  if (const char* name = strerrorname_np(err)) return name;
  return absl::StrCat("errno ", err);
}

Span BuildSyscallSpan(const kspan_syscall_event& e, std::string_view path, ClockSync& clock,
                      ProcessResources& resources, IdGenerator& ids) {
  Span s;
  s.trace_id = ids.NewTraceId();
  s.span_id = ids.NewSpanId();
  const SyscallInfo* info = FindSyscallByNr(e.nr);
  const std::string name =
      info != nullptr ? std::string(info->name) : absl::StrCat("syscall_", e.nr);
  s.name = absl::StrCat("syscall ", name);
  s.kind = SpanKind::kInternal;
  s.start_unix_nano = clock.ToUnixNanos(e.start_ns);
  s.end_unix_nano = clock.ToUnixNanos(e.end_ns);
  s.scope = KernelScope();
  s.resource = resources.For(e.pid, std::string_view(e.comm, strnlen(e.comm, sizeof(e.comm))), e.start_ns);

  const auto ret = static_cast<std::int64_t>(e.ret);
  Attributes& a = s.attributes;
  a.reserve(16);
  a.push_back({"process.pid", static_cast<std::int64_t>(e.pid)});
  a.push_back({"thread.id", static_cast<std::int64_t>(e.tid)});
  a.push_back({"kspan.syscall.name", name});
  a.push_back({"kspan.syscall.class", std::string(SyscallClassName(e.syscall_class))});
  // A wait seen by the slow-syscall watch on context switches: the span is
  // the time off the CPU inside the syscall, which had not returned yet.
  const bool off_cpu = (e.flags & KSPAN_SYSCALL_EV_OFF_CPU) != 0;
  if (off_cpu) {
    a.push_back({"kspan.syscall.off_cpu", true});
  } else {
    a.push_back({"kspan.syscall.return", ret});
  }
  if (e.trace_level == KSPAN_TRACE_SLOW_ONLY) a.push_back({"kspan.syscall.slow_only", true});
  if (e.fd != KSPAN_SYSCALL_NO_FD) {
    a.push_back({"kspan.syscall.fd", static_cast<std::int64_t>(static_cast<std::int32_t>(e.fd))});
  }
  if (const std::string_view kind = FdKindName(e.fd_kind); !kind.empty()) {
    a.push_back({"kspan.fd.kind", std::string(kind)});
  }
  if (e.fd_kind == KSPAN_FD_SOCKET) AddSocket(e, a);
  if (!path.empty()) {
    // A dentry name is the last component only: file.name, not file.path.
    a.push_back({e.path_source == KSPAN_PATH_DENTRY ? "file.name" : "file.path", std::string(path)});
  }

  bool count_arg = false;
  const Io io = Direction(e.nr, &count_arg);
  if (io != Io::kNone) {
    if (e.fd_kind == KSPAN_FD_SOCKET) {
      a.push_back({"network.io.direction",
                   std::string(io == Io::kReceive ? "receive" : "transmit")});
    }
    if (count_arg) {
      a.push_back({"kspan.syscall.bytes_requested", static_cast<std::int64_t>(e.args[2])});
    }
    if (off_cpu) return s;  // no return value: no bytes, no error
    if (ret >= 0) {
      const bool messages = e.nr == SYS_sendmmsg || e.nr == SYS_recvmmsg;
      a.push_back({messages ? "kspan.syscall.messages" : "kspan.syscall.bytes", ret});
    }
  }
  if (off_cpu) return s;
  if (e.syscall_class == KSPAN_SYSCALL_CLASS_WAIT) {
    AddWaitDetails(e, a);
    if (ret >= 0 && e.nr != SYS_nanosleep && e.nr != SYS_clock_nanosleep && e.nr != SYS_futex) {
      a.push_back({"kspan.wait.ready", ret});
    }
  }

  if (ret < 0 && ret >= -4095 && e.syscall_class == KSPAN_SYSCALL_CLASS_WAIT) {
    // A wait that timed out, found the futex word changed, or was
    // interrupted ended the way waits end: not an error.
    const int err = static_cast<int>(-ret);
    const char* outcome = err == ETIMEDOUT ? "timed_out"
                          : err == EAGAIN  ? "value_changed"
                          : (err == EINTR || err >= 512) ? "interrupted"  // ERESTART*
                                                         : nullptr;
    if (outcome != nullptr) {
      a.push_back({"kspan.wait.outcome", std::string(outcome)});
      return s;
    }
  }
  if (ret < 0 && ret >= -4095) {
    const int err = static_cast<int>(-ret);
    s.status_code = StatusCode::kError;
    s.status_message = absl::StrCat(name, ": ", std::strerror(err));
    a.push_back({"error.type", ErrnoSymbol(err)});
  }
  return s;
}

}  // namespace kspan
