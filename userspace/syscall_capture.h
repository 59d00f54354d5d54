// Loader of the syscall program family (bpf/syscalls.bpf.c) with explicit
// stages: Open -> Configure -> Load -> Attach -> (ring polled elsewhere) ->
// Detach -> destroy. Start() runs the stages for each attach variant in turn
// (tp_btf, raw_tp, classic tracepoint), destroying a refused one and falling
// back to the next, and logs one line naming the variant taken.
//
// Which syscalls are recorded, and how slow they must be, is kept in the
// pinned array kspan_sys_cfg and changed at run time without reloading.
//
// The enter and exit programs ("hooks") put every syscall of every process
// on the kernel's syscall tracing path while attached, so the agent detaches
// them while no process is selected (SetHooksAttached, SyscallDemand). The
// slow syscalls of processes that are not selected are then seen by the
// slow-syscall watch, which stays on: by default a task iterator the agent
// runs every scan interval (kspan_sys_scan, no program on any per-event
// path), or a program on sched_switch (kspan_sys_slow), both on kernels with
// tp_btf and bpf_task_pt_regs; where neither loads, the hooks time those
// processes' syscalls as before and stay attached while the host-wide
// threshold is set.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bpf/syscalls.h"
#include "userspace/percpu_ring.h"

struct syscalls_bpf;

namespace kspan {

enum class SyscallVariant {
  kTpBtf,       // tp_btf/sys_enter, tp_btf/sys_exit (BTF-typed raw tracepoints)
  kRawTp,       // raw_tp/sys_enter, raw_tp/sys_exit
  kTracepoint,  // tracepoint/raw_syscalls/sys_enter, sys_exit
};

// "tp_btf", "raw_tp", "tracepoint".
std::string_view SyscallVariantName(SyscallVariant v);
std::optional<SyscallVariant> ParseSyscallVariant(std::string_view name);
// The order Start() tries them in.
inline constexpr std::array kSyscallVariants = {SyscallVariant::kTpBtf, SyscallVariant::kRawTp,
                                                SyscallVariant::kTracepoint};

// How the slow syscalls of processes that are not selected are watched
// (capture.slow_watch).
enum class SlowWatch {
  kScan,    // kspan_sys_scan (iter/task) every scan interval: the agent pays, no other process
  kSwitch,  // kspan_sys_slow (tp_btf/sched_switch): exact, a program at every context switch
  kHooks,   // the enter and exit programs time every configured syscall (the fallback)
};
// "scan", "sched_switch", "sys_enter/sys_exit".
std::string_view SlowWatchName(SlowWatch w);
std::optional<SlowWatch> ParseSlowWatch(std::string_view name);  // "scan" or "sched_switch"

using SyscallClassMinimums = std::array<std::chrono::nanoseconds, KSPAN_SYSCALL_CLASS_MAX>;

// Class minimums for fully traced processes (indexed by kspan_syscall_class):
// file I/O and waits only when slower than 1 ms, socket I/O always.
inline constexpr SyscallClassMinimums kDefaultSyscallClassMinimums = {
    std::chrono::nanoseconds(0),          // other
    std::chrono::milliseconds(1),         // file_io
    std::chrono::nanoseconds(0),          // socket_io
    std::chrono::milliseconds(1),         // wait
};

struct SyscallCaptureOptions {
  // Process whose syscalls are never recorded (kspan itself); 0 = none.
  std::uint32_t self_tgid = 0;
  std::size_t ring_buffer_bytes = 8u << 20;
  // Wake the consumer once per this many bytes written, rounded down to a
  // power of two (0 = kernel default: whenever it has caught up).
  std::uint64_t wakeup_bytes = 256u << 10;
  // External BTF for kernels without /sys/kernel/btf/vmlinux; empty = kernel's.
  std::string btf_path;
  // bpffs directory of the shared filter maps and the pinned kspan_sys_cfg
  // and kspan_sys_stats (libbpf pin_root_path). Required: it must exist.
  std::string pin_dir;
  // Only this variant (tests, or an operator's choice); empty = try in order.
  std::optional<SyscallVariant> force_variant;
  // tp_btf: where kernel BTF has bpf_rdonly_cast (6.2+), take the exit
  // program that walks task -> files -> fd -> file -> socket with direct BTF
  // loads instead of probe reads (several times cheaper per record), falling
  // back to the probe-read exit if the kernel refuses it. false: probe reads.
  bool direct_walk = true;
  // tp_btf, where the kernel has bpf_task_pt_regs (5.15+): how processes
  // that are not selected are watched for slow syscalls rather than timing
  // their every syscall in the enter and exit programs. The other watch is
  // tried if the kernel refuses this one, then the enter and exit programs.
  SlowWatch slow_watch = SlowWatch::kScan;
  // kScan: how often the agent runs the scan; at most the slow threshold,
  // so that no wait that long starts and ends between two scans.
  std::chrono::nanoseconds slow_scan_interval = std::chrono::milliseconds(10);
  // Whether processes that are not selected are watched for slow syscalls
  // at all (capture.slow_threshold > 0). false: neither watch is loaded, so
  // a context switch pays nothing and the agent does not scan.
  bool watch_unselected = true;
  // Syscall names to record (see KnownSyscalls()); empty = the default set.
  std::vector<std::string> syscalls;
  SyscallClassMinimums class_min = kDefaultSyscallClassMinimums;
  // Threads inside a traced syscall whose per-thread array slot (sized from
  // pid_max, at most 256 Ki) is taken by another thread: the spill-over table.
  std::uint32_t max_in_flight = 16384;
  // Open files whose openat path is remembered (LRU).
  std::uint32_t max_paths = 16384;
};

using SyscallStats = std::array<std::uint64_t, KSPAN_SYS_STAT_MAX>;

class SyscallCapture {
 public:
  explicit SyscallCapture(SyscallCaptureOptions options);
  ~SyscallCapture();
  SyscallCapture(const SyscallCapture&) = delete;
  SyscallCapture& operator=(const SyscallCapture&) = delete;

  // The stages for one variant (the forced one, else the first).
  absl::Status Open();
  absl::Status Configure();
  absl::Status Load();  // also writes the syscall table into kspan_sys_cfg
  absl::Status Attach();
  // The stages for each variant in turn until one loads and attaches.
  absl::Status Start();
  // Stops new records while the ring stays readable for a final drain.
  void Detach();
  // Starts the scan thread where the scan was taken (slow_watch_taken()
  // kScan; otherwise nothing): it runs kspan_sys_scan every
  // slow_scan_interval until Detach. Separate from Start because the agent
  // drops its capabilities while it has one thread only.
  void StartScan();

  // Attaches or detaches the enter and exit programs (on tp_btf with the
  // switch program whose per-CPU entry they read), after Start, which
  // attaches them. The exec and exit hooks and the slow-syscall watch stay.
  // The classic tracepoint variant keeps its hooks (attaching them again
  // would take CAP_PERFMON, which the agent drops): FailedPrecondition.
  // Not thread-safe: one caller at a time, not concurrent with Detach.
  absl::Status SetHooksAttached(bool attached);
  bool hooks_attached() const { return hooks_attached_.load(); }
  // Whether SetHooksAttached(false) can work (not the tracepoint variant).
  bool hooks_detachable() const;
  // The slow-syscall watch of processes that are not selected that was
  // taken; kHooks: the enter and exit programs, which it then needs
  // attached.
  SlowWatch slow_watch_taken() const { return slow_taken_; }
  // Whether that watch runs without the enter and exit programs (scan or
  // sched_switch: its records are KSPAN_SYSCALL_EV_OFF_CPU).
  bool slow_watch_off_cpu() const { return slow_taken_ != SlowWatch::kHooks; }
  // That choice in words, for the log and `kspan status`.
  std::string slow_watch() const;
  // The scan's work so far: scans run, and the time they took (wall time
  // of the agent's scan thread, nearly all of it kernel CPU).
  struct ScanStats {
    std::uint64_t scans = 0;
    std::uint64_t failures = 0;
    std::uint64_t nanoseconds = 0;
  };
  ScanStats scan_stats() const;

  // The BPF ring buffer of records with a path (files, openat).
  int ring_fd() const;
  // The per-CPU record rings of every other record, and the ring buffer of
  // their doorbells (RingReader::AddPerCpu).
  PerCpuRingSpec record_rings() const;
  int bell_fd() const;

  // How ring_buffer_bytes and wakeup_bytes are spent: per CPU, a record ring
  // of slots_per_cpu records (a power of two; its share of ring_buffer_bytes,
  // at least 1024), a doorbell every bell_every records (about wakeup_bytes,
  // at least four per ring); a quarter for the ring of path records.
  struct RecordRingSizes {
    std::uint32_t slots_shift = 0;
    std::uint32_t slots_per_cpu = 1;
    std::uint32_t bell_every = 1;
    std::size_t path_ring_bytes = 0;
  };
  static RecordRingSizes RecordRingSizesFor(std::size_t ring_buffer_bytes,
                                            std::uint64_t wakeup_bytes, std::uint32_t cpus);
  // The variant taken ("tp_btf", "raw_tp", "tracepoint"); empty before Start.
  const std::string& variant() const { return variant_; }
  // Whether the tp_btf exit program with direct BTF loads was taken.
  bool direct_walk() const { return direct_walk_; }
  // Per-CPU counters summed; zeros before Load().
  SyscallStats ReadStats() const;
  // The raw_syscalls enter and exit programs of the variant taken (-1 before
  // Start): for per-program run-time figures (bpf_stats) in benchmarks.
  struct ProgramFds {
    int enter = -1;
    int exit = -1;
  };
  ProgramFds program_fds() const;

  // Run-time changes, written to kspan_sys_cfg at once (no reload). Unknown
  // names are refused with InvalidArgument and change nothing.
  absl::Status SetSyscalls(const std::vector<std::string>& names);
  absl::Status EnableSyscall(std::string_view name, bool enabled);
  absl::Status SetClassMinDuration(kspan_syscall_class syscall_class,
                                   std::chrono::nanoseconds min_duration);
  // Overrides the class minimum for one syscall; nullopt restores it.
  absl::Status SetSyscallMinDuration(std::string_view name,
                                     std::optional<std::chrono::nanoseconds> min_duration);
  std::vector<std::string> EnabledSyscalls() const;

  // Checks syscall names against KnownSyscalls() (for config validation).
  static absl::Status ValidateSyscallNames(const std::vector<std::string>& names);

 private:
  struct Entry {
    bool enabled = false;
    std::optional<std::chrono::nanoseconds> min_override;
  };
  absl::Status WriteEntry(std::uint32_t nr);  // mu_ held
  absl::Status WriteAll();                    // mu_ held
  void Destroy();
  void StopScan();
  void ScanLoop(int link_fd);
  // The enter and exit programs of the variant taken, and on tp_btf the
  // switch program first; their links into the skeleton.
  absl::Status AttachHooks();
  void DetachHooks();

  SyscallCaptureOptions options_;
  std::uint32_t cpus_ = 1;  // possible CPUs
  RecordRingSizes sizes_;
  SyscallVariant attempt_;
  bool attempt_direct_ = false;  // tp_btf: kspan_sys_x_ptr instead of kspan_sys_x_btf
  bool direct_walk_ = false;
  SlowWatch attempt_watch_ = SlowWatch::kHooks;  // tp_btf: kspan_sys_scan or kspan_sys_slow
  // kScan: the whole pass in one run (kspan_sys_scan, open-coded task
  // iterator, 6.7+) rather than one run per thread (kspan_sys_scant).
  bool attempt_scan_whole_ = false;
  bool scan_whole_ = false;
  SlowWatch slow_taken_ = SlowWatch::kHooks;
  std::thread scan_thread_;
  std::mutex scan_mu_;
  std::condition_variable scan_cv_;
  bool scan_stop_ = false;  // scan_mu_
  std::atomic<std::uint64_t> scans_{0};
  std::atomic<std::uint64_t> scan_failures_{0};
  std::atomic<std::uint64_t> scan_ns_{0};
  std::atomic<bool> hooks_attached_{false};  // read by /metrics and /status
  syscalls_bpf* skel_ = nullptr;
  std::string variant_;
  mutable std::mutex mu_;
  std::array<Entry, KSPAN_SYSCALL_NR_MAX> table_{};
  SyscallClassMinimums class_min_;
};

}  // namespace kspan
