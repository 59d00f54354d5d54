// Pids across pid namespaces: a process in a container knows itself by its
// namespace's pid (an OpenTelemetry SDK in a container reports
// process.pid = 1), kspan's kernel view by the host pid. This translates a
// pid that a sender names in its own pid namespace into the host pid of the
// process it names, using only what /proc says about the sender
// (NSpid in /proc/<pid>/status, the inode of /proc/<pid>/ns/pid).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kspan {

// The "NSpid:" line of a /proc/<pid>/status text: the process's pid in each
// pid namespace it is in, outermost (the reader's) first. Empty when the
// line is missing or malformed (kernels before 4.1 have no NSpid).
std::vector<std::uint32_t> ParseNsPid(std::string_view status);

// The inode that identifies the pid namespace of `pid` ("pid:[4026531836]"
// behind /proc/<pid>/ns/pid), or nullopt.
std::optional<std::uint64_t> PidNamespaceInode(const std::string& proc_root, std::uint32_t pid);

class PidTranslator {
 public:
  using SteadyClock = std::function<std::chrono::steady_clock::time_point()>;

  explicit PidTranslator(std::string proc_root = "/proc",
                         SteadyClock now = std::chrono::steady_clock::now);

  // The host pid of the process that `claimed` names in the pid namespace
  // of `sender` (a host pid), or nullopt when no process of that namespace
  // has that pid. The sender itself is checked first (the usual claim); any
  // other pid of a namespace other than kspan's costs a scan of /proc,
  // remembered for a few seconds. Thread-safe.
  std::optional<std::uint32_t> HostPid(std::uint32_t sender, std::uint32_t claimed);

 private:
  struct Found {
    std::uint32_t host_pid;
    std::chrono::steady_clock::time_point at;
  };
  // The process's pid in its own (innermost) namespace and that namespace.
  struct InnerPid {
    std::uint32_t pid = 0;
    std::uint64_t ns = 0;
  };
  std::optional<InnerPid> Inner(std::uint32_t host_pid) const;
  std::optional<std::uint32_t> Scan(std::uint64_t ns, std::uint32_t claimed) const;
  std::optional<std::uint64_t> OwnNamespace();

  const std::string proc_root_;
  SteadyClock now_;
  std::once_flag own_ns_once_;
  std::optional<std::uint64_t> own_ns_;  // kspan's pid namespace
  std::mutex mu_;
  std::map<std::pair<std::uint64_t, std::uint32_t>, Found> found_;  // (ns, claimed)
};

}  // namespace kspan
