// Syscall records (bpf/syscalls.h) -> kspan spans: `syscall write`, kind
// INTERNAL, OpenTelemetry semantic-convention attributes (network.*,
// file.path, error.type, process.pid, thread.id) plus kspan.syscall.*.
// Also the table of syscalls kspan knows (x86_64 numbers, class, how to read
// their arguments), shared with the loader (userspace/syscall_capture).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "bpf/syscalls.h"
#include "exporter/span.h"
#include "userspace/clock_sync.h"
#include "userspace/id_generator.h"
#include "userspace/process_resources.h"

namespace kspan {

struct SyscallInfo {
  std::uint16_t nr;  // x86_64
  std::string_view name;
  kspan_syscall_class syscall_class;
  std::uint8_t flags;  // enum kspan_syscall_flag
  bool in_default_set;
};

// Every syscall kspan can pair; the default set is marked.
std::span<const SyscallInfo> KnownSyscalls();
const SyscallInfo* FindSyscall(std::string_view name);
const SyscallInfo* FindSyscallByNr(std::uint32_t nr);

// "file_io", "socket_io", "wait", "other".
std::string_view SyscallClassName(std::uint8_t syscall_class);
// "socket", "file", "pipe", "other"; empty for KSPAN_FD_NONE.
std::string_view FdKindName(std::uint8_t fd_kind);
// "EBADF" for 9; the kernel's restart codes (ERESTARTSYS, ...) by name.
std::string ErrnoSymbol(int err);

// The span of one record; `path` is the record's path tail (may be empty).
Span BuildSyscallSpan(const kspan_syscall_event& event, std::string_view path, ClockSync& clock,
                      ProcessResources& resources, IdGenerator& ids);

}  // namespace kspan
