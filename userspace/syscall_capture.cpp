#include "userspace/syscall_capture.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "exporter/status_macros.h"
#include "spdlog/spdlog.h"
#include "syscalls.skel.h"
#include "userspace/bpf_stats.h"
#include "userspace/capture_error.h"
#include "userspace/kernel_features.h"
#include "userspace/syscall_spans.h"
#include "userspace/variant_ladder.h"

namespace kspan {
std::string_view SyscallVariantName(SyscallVariant v) {
  switch (v) {
    case SyscallVariant::kTpBtf: return "tp_btf";
    case SyscallVariant::kRawTp: return "raw_tp";
    case SyscallVariant::kTracepoint: return "tracepoint";
  }
  return "unknown";
}

std::optional<SyscallVariant> ParseSyscallVariant(std::string_view name) {
  for (auto v : kSyscallVariants) {
    if (SyscallVariantName(v) == name) return v;
  }
  return std::nullopt;
}

std::string_view SlowWatchName(SlowWatch w) {
  switch (w) {
    case SlowWatch::kScan: return "scan";
    case SlowWatch::kSwitch: return "sched_switch";
    case SlowWatch::kHooks: return "sys_enter/sys_exit";
  }
  return "unknown";
}

std::optional<SlowWatch> ParseSlowWatch(std::string_view name) {
  if (name == "scan") return SlowWatch::kScan;
  if (name == "sched_switch") return SlowWatch::kSwitch;
  return std::nullopt;
}

absl::Status SyscallCapture::ValidateSyscallNames(const std::vector<std::string>& names) {
  for (const auto& n : names) {
    if (FindSyscall(n) == nullptr) {
      std::vector<std::string> known;
      for (const auto& s : KnownSyscalls()) known.emplace_back(s.name);
      return absl::InvalidArgumentError(absl::StrCat("unknown syscall \"", n,
                                                     "\"; known: ", absl::StrJoin(known, ", ")));
    }
  }
  return absl::OkStatus();
}

SyscallCapture::SyscallCapture(SyscallCaptureOptions options)
    : options_(std::move(options)),
      attempt_(options_.force_variant.value_or(kSyscallVariants[0])),
      class_min_(options_.class_min) {
  if (options_.syscalls.empty()) {
    for (const auto& s : KnownSyscalls()) table_[s.nr].enabled = s.in_default_set;
  } else {
    for (const auto& n : options_.syscalls) {
      if (const SyscallInfo* s = FindSyscall(n)) table_[s->nr].enabled = true;
    }
  }
}

SyscallCapture::~SyscallCapture() { Destroy(); }

void SyscallCapture::Destroy() {
  StopScan();  // before the link it reads goes
  syscalls_bpf::destroy(skel_);  // detaches links, closes maps; null-safe
  skel_ = nullptr;
}

absl::Status SyscallCapture::Open() {
  if (options_.pin_dir.empty()) {
    return absl::InvalidArgumentError("syscall capture: a pin directory is required");
  }
  KSPAN_RETURN_IF_ERROR(ValidateSyscallNames(options_.syscalls));
  LIBBPF_OPTS(bpf_object_open_opts, opts);
  if (!options_.btf_path.empty()) opts.btf_custom_path = options_.btf_path.c_str();
  opts.pin_root_path = options_.pin_dir.c_str();
  skel_ = syscalls_bpf::open(&opts);
  if (skel_ == nullptr) return CaptureError("syscall", "open syscalls_bpf object", errno);
  return absl::OkStatus();
}

SyscallCapture::RecordRingSizes SyscallCapture::RecordRingSizesFor(std::size_t ring_buffer_bytes,
                                                                 std::uint64_t wakeup_bytes,
                                                                 std::uint32_t cpus) {
  constexpr std::size_t kRecord = sizeof(kspan_syscall_event);
  constexpr std::uint32_t kMinSlots = 1024;     // ~136 KiB a CPU
  constexpr std::uint32_t kMaxSlots = 1u << 20;  // 136 MiB a CPU
  RecordRingSizes r;
  // Each CPU's share of ring_buffer_bytes, at least kMinSlots records: the
  // largest power of two of records that fits.
  const std::size_t share = ring_buffer_bytes / std::max<std::uint32_t>(cpus, 1) / kRecord;
  while (r.slots_shift < 20 && (std::size_t{2} << r.slots_shift) <= share) ++r.slots_shift;
  while ((1u << r.slots_shift) < kMinSlots) ++r.slots_shift;
  r.slots_per_cpu = std::min(1u << r.slots_shift, kMaxSlots);
  // A doorbell per wakeup_bytes of records, rounded down to a power of two,
  // and at least four per ring so the reader wakes well before it fills.
  std::uint32_t bell = 1;
  while (std::uint64_t{bell} * 2 * kRecord <= wakeup_bytes && bell * 2 <= r.slots_per_cpu / 4) {
    bell *= 2;
  }
  r.bell_every = bell;
  // Records with a path (file I/O above its minimum, openat): a quarter.
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  r.path_ring_bytes = page;
  while (r.path_ring_bytes < ring_buffer_bytes / 4) r.path_ring_bytes <<= 1;
  return r;
}

absl::Status SyscallCapture::Configure() {
  skel_->rodata->kspan_self_tgid = options_.self_tgid;
  skel_->rodata->wakeup_bytes = options_.wakeup_bytes;
  const int possible = libbpf_num_possible_cpus();
  if (possible <= 0) return CaptureError("syscall", "configure possible CPUs", -possible);
  cpus_ = static_cast<std::uint32_t>(possible);
  sizes_ = RecordRingSizesFor(options_.ring_buffer_bytes, options_.wakeup_bytes, cpus_);
  skel_->rodata->rec_slots_shift = sizes_.slots_shift;
  skel_->rodata->bell_mask = sizes_.bell_every - 1;
  // The programs wake the consumer of the path ring per power of two of
  // bytes (a shift, not a division, per record): the largest one not above
  // wakeup_bytes, nor above a quarter of that ring.
  const std::uint64_t wake = std::min<std::uint64_t>(options_.wakeup_bytes,
                                                     sizes_.path_ring_bytes / 4);
  std::uint32_t shift = 0;
  while (shift < 63 && (std::uint64_t{2} << shift) <= wake) ++shift;
  skel_->rodata->wakeup_shift = shift;
  // The programs look at the producer position only every 2^k-th record of
  // a CPU (a helper call saved per record): at most an eighth of the wakeup
  // size, in the largest records (a path record), between two looks.
  constexpr std::uint64_t kLargestRecord = sizeof(kspan_syscall_path_event) + 8;
  const std::uint64_t per_check = (std::uint64_t{1} << shift) / 8 / kLargestRecord;
  std::uint32_t check = 1;
  while (std::uint64_t{check} * 2 <= per_check && check < (1u << 16)) check <<= 1;
  skel_->rodata->wakeup_check_mask = check - 1;
  skel_->rodata->infl_mask = PerThreadSlots() - 1;
  const bool slow = attempt_ == SyscallVariant::kTpBtf && attempt_watch_ != SlowWatch::kHooks;
  skel_->rodata->slow_by_switch = slow ? 1 : 0;
  skel_->rodata->slow_by_scan = slow && attempt_watch_ == SlowWatch::kScan ? 1 : 0;
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  struct {
    bpf_map* map;
    std::size_t entries;
    const char* name;
  } sizes[] = {
      {skel_->maps.kspan_sys_ring, sizes_.path_ring_bytes, "kspan_sys_ring"},
      {skel_->maps.kspan_sys_rec, std::size_t{cpus_} * sizes_.slots_per_cpu, "kspan_sys_rec"},
      {skel_->maps.kspan_sys_pos, cpus_, "kspan_sys_pos"},
      {skel_->maps.kspan_sys_bell, page, "kspan_sys_bell"},
      {skel_->maps.kspan_sys_lvl, PidMax(), "kspan_sys_lvl"},
      {skel_->maps.kspan_sys_infl, PerThreadSlots(), "kspan_sys_infl"},
      {skel_->maps.kspan_sys_wait, slow ? PerThreadSlots() : 1, "kspan_sys_wait"},
      {skel_->maps.kspan_sys_spill, std::max<std::uint32_t>(options_.max_in_flight, 64),
       "kspan_sys_spill"},
      {skel_->maps.kspan_sys_paths, std::max<std::uint32_t>(options_.max_paths, 64),
       "kspan_sys_paths"},
  };
  for (const auto& s : sizes) {
    if (int err = bpf_map__set_max_entries(s.map, static_cast<std::uint32_t>(s.entries))) {
      return CaptureError("syscall", absl::StrCat("configure map ", s.name), err);
    }
  }
  struct {
    bpf_program* prog;
    SyscallVariant variant;
  } progs[] = {
      {skel_->progs.kspan_sys_e_btf, SyscallVariant::kTpBtf},
      {skel_->progs.kspan_sys_e_raw, SyscallVariant::kRawTp},
      {skel_->progs.kspan_sys_x_raw, SyscallVariant::kRawTp},
      {skel_->progs.kspan_sys_e_tp, SyscallVariant::kTracepoint},
      {skel_->progs.kspan_sys_x_tp, SyscallVariant::kTracepoint},
  };
  for (const auto& p : progs) {
    if (int err = bpf_program__set_autoload(p.prog, p.variant == attempt_)) {
      return CaptureError("syscall", absl::StrCat("configure ", bpf_program__name(p.prog)), err);
    }
  }
  // tp_btf has two exit programs; the other variants' never load either.
  const bool tp_btf = attempt_ == SyscallVariant::kTpBtf;
  const std::pair<bpf_program*, bool> exits[] = {
      {skel_->progs.kspan_sys_x_btf, tp_btf && !attempt_direct_},
      {skel_->progs.kspan_sys_x_ptr, tp_btf && attempt_direct_},
      {skel_->progs.kspan_sys_switch, tp_btf},
      {skel_->progs.kspan_sys_slow, slow && attempt_watch_ == SlowWatch::kSwitch},
      {skel_->progs.kspan_sys_scan,
       slow && attempt_watch_ == SlowWatch::kScan && attempt_scan_whole_},
      {skel_->progs.kspan_sys_scant,
       slow && attempt_watch_ == SlowWatch::kScan && !attempt_scan_whole_},
  };
  for (const auto& [prog, load] : exits) {
    if (int err = bpf_program__set_autoload(prog, load)) {
      return CaptureError("syscall", absl::StrCat("configure ", bpf_program__name(prog)), err);
    }
  }
  return absl::OkStatus();
}

absl::Status SyscallCapture::Load() {
  if (int err = syscalls_bpf::load(skel_)) {
    return CaptureError(
        "syscall", absl::StrCat("load variant ", std::string(SyscallVariantName(attempt_))), err);
  }
  std::lock_guard lock(mu_);
  return WriteAll();
}

absl::Status SyscallCapture::Attach() {
  struct {
    bpf_program* prog;
    bpf_link** link;
  } always[] = {
      {skel_->progs.kspan_sys_exec, &skel_->links.kspan_sys_exec},
      {skel_->progs.kspan_sys_gone, &skel_->links.kspan_sys_gone},
      {skel_->progs.kspan_sys_slow, &skel_->links.kspan_sys_slow},
      {skel_->progs.kspan_sys_scan, &skel_->links.kspan_sys_scan},
      {skel_->progs.kspan_sys_scant, &skel_->links.kspan_sys_scant},
  };
  for (const auto& o : always) {
    if (!bpf_program__autoload(o.prog)) continue;
    if (o.prog == skel_->progs.kspan_sys_scan) {
      // Runs once per pass: iterates one task (this process's main thread,
      // which lives as long as it does) and walks every thread itself.
      union bpf_iter_link_info info = {};
      info.task.tid = static_cast<__u32>(getpid());
      LIBBPF_OPTS(bpf_iter_attach_opts, iter, .link_info = &info,
                  .link_info_len = sizeof(info));
      *o.link = bpf_program__attach_iter(o.prog, &iter);
    } else {
      *o.link = bpf_program__attach(o.prog);
    }
    if (*o.link == nullptr) {
      return CaptureError("syscall",
                          absl::StrCat("attach ", bpf_program__name(o.prog), " (variant ",
                                       std::string(SyscallVariantName(attempt_)), ")"),
                          errno);
    }
  }
  KSPAN_RETURN_IF_ERROR(AttachHooks());
  variant_ = std::string(SyscallVariantName(attempt_));
  direct_walk_ = attempt_direct_;
  slow_taken_ = skel_->links.kspan_sys_slow ? SlowWatch::kSwitch
                : (skel_->links.kspan_sys_scan || skel_->links.kspan_sys_scant) ? SlowWatch::kScan
                                                                                : SlowWatch::kHooks;
  scan_whole_ = skel_->links.kspan_sys_scan != nullptr;
  return absl::OkStatus();
}

absl::Status SyscallCapture::AttachHooks() {
  // Attach exit before enter: an exit without its enter is counted, an enter
  // without its exit would hold an in-flight slot.
  bpf_program *enter = nullptr, *exit = nullptr;
  bpf_link **enter_link = nullptr, **exit_link = nullptr;
  switch (attempt_) {
    case SyscallVariant::kTpBtf:
      enter = skel_->progs.kspan_sys_e_btf, enter_link = &skel_->links.kspan_sys_e_btf;
      if (attempt_direct_) {
        exit = skel_->progs.kspan_sys_x_ptr, exit_link = &skel_->links.kspan_sys_x_ptr;
      } else {
        exit = skel_->progs.kspan_sys_x_btf, exit_link = &skel_->links.kspan_sys_x_btf;
      }
      break;
    case SyscallVariant::kRawTp:
      enter = skel_->progs.kspan_sys_e_raw, exit = skel_->progs.kspan_sys_x_raw;
      enter_link = &skel_->links.kspan_sys_e_raw, exit_link = &skel_->links.kspan_sys_x_raw;
      break;
    case SyscallVariant::kTracepoint:
      enter = skel_->progs.kspan_sys_e_tp, exit = skel_->progs.kspan_sys_x_tp;
      enter_link = &skel_->links.kspan_sys_e_tp, exit_link = &skel_->links.kspan_sys_x_tp;
      break;
  }
  // tp_btf: the running thread's cache first, and emptied once it is
  // attached (what it held from an earlier attach is stale; an entry the
  // switch program writes meanwhile is either kept or zeroed, both safe),
  // so the syscall programs only ever see a current entry or none.
  if (attempt_ == SyscallVariant::kTpBtf && skel_->links.kspan_sys_switch == nullptr) {
    skel_->links.kspan_sys_switch = bpf_program__attach(skel_->progs.kspan_sys_switch);
    if (skel_->links.kspan_sys_switch == nullptr) {
      return CaptureError("syscall", "attach kspan_sys_switch (variant tp_btf)", errno);
    }
    // A per-CPU value is laid out every round_up(value_size, 8) bytes.
    const std::size_t value = (bpf_map__value_size(skel_->maps.kspan_sys_cur) + 7) / 8 * 8;
    std::vector<std::byte> zeros(value * cpus_);
    const std::uint32_t zero = 0;
    if (bpf_map_update_elem(bpf_map__fd(skel_->maps.kspan_sys_cur), &zero, zeros.data(), BPF_ANY)) {
      return CaptureError("syscall", "attach clear kspan_sys_cur", errno);
    }
  }
  for (auto [prog, link] : {std::pair{exit, exit_link}, std::pair{enter, enter_link}}) {
    if (*link != nullptr) continue;
    *link = bpf_program__attach(prog);
    if (*link == nullptr) {
      return CaptureError("syscall",
                          absl::StrCat("attach ", bpf_program__name(prog), " (variant ",
                                       std::string(SyscallVariantName(attempt_)), ")"),
                          errno);
    }
  }
  hooks_attached_ = true;
  return absl::OkStatus();
}

void SyscallCapture::DetachHooks() {
  // Enter before exit (the reverse of AttachHooks), and the switch program
  // whose cache they read last.
  for (bpf_link** link : {&skel_->links.kspan_sys_e_btf, &skel_->links.kspan_sys_e_raw,
                          &skel_->links.kspan_sys_e_tp, &skel_->links.kspan_sys_x_btf,
                          &skel_->links.kspan_sys_x_ptr, &skel_->links.kspan_sys_x_raw,
                          &skel_->links.kspan_sys_x_tp, &skel_->links.kspan_sys_switch}) {
    bpf_link__destroy(*link);
    *link = nullptr;
  }
  hooks_attached_ = false;
}

bool SyscallCapture::hooks_detachable() const {
  return skel_ != nullptr && !variant_.empty() && attempt_ != SyscallVariant::kTracepoint;
}

absl::Status SyscallCapture::SetHooksAttached(bool attached) {
  if (skel_ == nullptr || variant_.empty()) {
    return absl::FailedPreconditionError("syscall capture: not started");
  }
  if (attached == hooks_attached_) return absl::OkStatus();
  if (!hooks_detachable()) {
    return absl::FailedPreconditionError(
        "syscall capture: the tracepoint variant keeps its enter and exit programs attached");
  }
  if (!attached) {
    DetachHooks();
    return absl::OkStatus();
  }
  absl::Status s = AttachHooks();
  if (!s.ok()) DetachHooks();  // none half attached
  return s;
}

absl::Status SyscallCapture::Start() {
  std::vector<SyscallVariant> variants;
  if (options_.force_variant) {
    variants.push_back(*options_.force_variant);
  } else {
    variants.assign(kSyscallVariants.begin(), kSyscallVariants.end());
  }
  // (variant, direct walk, slow watch): tp_btf with direct loads and the
  // configured watch first where possible, then the other watch, then the
  // enter and exit programs timing slow-only processes. A kernel without
  // what a watch reads (bpf_task_pt_regs; for the scan, the scheduler's
  // CONFIG_SCHED_INFO fields, whose CO-RE relocations then fail the load)
  // refuses it and the next is tried.
  const bool direct = options_.direct_walk && KernelBtfHas("bpf_rdonly_cast", BTF_KIND_FUNC);
  std::vector<SlowWatch> watches;
  if (options_.watch_unselected && options_.slow_watch != SlowWatch::kHooks &&
      KernelHasBpfHelper("BPF_FUNC_task_pt_regs")) {
    watches.push_back(options_.slow_watch);
    watches.push_back(options_.slow_watch == SlowWatch::kScan ? SlowWatch::kSwitch
                                                              : SlowWatch::kScan);
  }
  watches.push_back(SlowWatch::kHooks);
  // The scan's whole pass in one run where the kernel has the open-coded
  // task iterator (6.7+), else one run per thread.
  const bool whole = KernelBtfHas("bpf_iter_task_new", BTF_KIND_FUNC);
  struct Candidate {
    SyscallVariant variant;
    bool direct;
    SlowWatch watch;
    bool whole;
  };
  std::vector<Candidate> candidates;
  for (auto v : variants) {
    if (v != SyscallVariant::kTpBtf) {
      candidates.push_back({v, false, SlowWatch::kHooks, false});
      continue;
    }
    for (bool d : {true, false}) {
      if (d && !direct) continue;
      for (SlowWatch w : watches) {
        if (w == SlowWatch::kScan && whole) candidates.push_back({v, d, w, true});
        candidates.push_back({v, d, w, false});
      }
    }
  }
  VariantLadder ladder;
  std::vector<std::pair<SlowWatch, bool>> watches_refused;
  auto taken = ladder.Climb(
      candidates.size(),
      [&](std::size_t i) {
        // Once refused, a watch is not tried with the other exits.
        const auto& c = candidates[i];
        return std::find(watches_refused.begin(), watches_refused.end(),
                         std::pair{c.watch, c.whole}) != watches_refused.end();
      },
      [&](std::size_t i) {
        const auto& c = candidates[i];
        attempt_ = c.variant;
        attempt_direct_ = c.direct;
        attempt_watch_ = c.watch;
        attempt_scan_whole_ = c.whole;
        absl::Status s = Open();
        if (s.ok()) s = Configure();
        if (s.ok()) s = Load();
        if (s.ok()) s = Attach();
        if (!s.ok() && c.watch != SlowWatch::kHooks) watches_refused.push_back({c.watch, c.whole});
        return s;
      },
      [this] { Destroy(); },
      [&](std::size_t i) {
        const auto& c = candidates[i];
        return absl::StrCat(std::string(SyscallVariantName(c.variant)),
                            c.direct ? ", direct BTF loads" : "",
                            c.watch != SlowWatch::kHooks
                                ? absl::StrCat(", slow watch ", std::string(SlowWatchName(c.watch)),
                                               c.whole ? " (whole pass in one run)" : "")
                                : "");
      });
  if (!taken.ok()) {
    if (taken.status().code() == absl::StatusCode::kInvalidArgument) return taken.status();
    return absl::InternalError(
        absl::StrCat("syscall capture: no variant could be loaded: ", ladder.refused()));
  }
  const char* walk = direct_walk_ ? ", direct BTF loads" : "";
  const std::string watch = absl::StrCat("; slow syscalls of other processes: ", slow_watch());
  if (!ladder.any_refused()) {
    spdlog::info("syscall capture: variant {} (raw_syscalls sys_enter/sys_exit{}){}", variant_,
                 walk, watch);
  } else {
    spdlog::warn("syscall capture: variant {} (raw_syscalls sys_enter/sys_exit{}){}; refused: {}",
                 variant_, walk, watch, ladder.refused());
  }
  return absl::OkStatus();
}

void SyscallCapture::Detach() {
  if (skel_ == nullptr) return;
  StopScan();
  DetachHooks();
  syscalls_bpf::detach(skel_);
}

std::string SyscallCapture::slow_watch() const {
  if (!options_.watch_unselected) return "off (capture.slow_threshold: 0)";
  if (slow_taken_ == SlowWatch::kScan) {
    return absl::StrCat("scan every ",
                        std::chrono::duration_cast<std::chrono::microseconds>(
                            options_.slow_scan_interval).count() / 1e3,
                        scan_whole_ ? " ms (kspan_sys_scan" : " ms (kspan_sys_scant",
                        ": the agent pays, no other process)");
  }
  if (slow_taken_ == SlowWatch::kSwitch) {
    return "sched_switch (kspan_sys_slow: only syscalls that wait pay)";
  }
  return "sys_enter/sys_exit (every configured syscall timed while the threshold is set)";
}

void SyscallCapture::StartScan() {
  if (skel_ == nullptr || slow_taken_ != SlowWatch::kScan) return;
  StopScan();
  {
    std::lock_guard lock(scan_mu_);
    scan_stop_ = false;
  }
  bpf_link* link = scan_whole_ ? skel_->links.kspan_sys_scan : skel_->links.kspan_sys_scant;
  scan_thread_ = std::thread(&SyscallCapture::ScanLoop, this, bpf_link__fd(link));
}

void SyscallCapture::StopScan() {
  if (!scan_thread_.joinable()) return;
  {
    std::lock_guard lock(scan_mu_);
    scan_stop_ = true;
  }
  scan_cv_.notify_all();
  scan_thread_.join();
}

void SyscallCapture::ScanLoop(int link_fd) {
  pthread_setname_np(pthread_self(), "kspan-sys-scan");
  const auto interval = std::max<std::chrono::nanoseconds>(options_.slow_scan_interval,
                                                           std::chrono::milliseconds(1));
  auto next = std::chrono::steady_clock::now() + interval;
  bool warned = false;
  std::unique_lock lock(scan_mu_);
  while (!scan_cv_.wait_until(lock, next, [&] { return scan_stop_; })) {
    lock.unlock();
    const auto start = std::chrono::steady_clock::now();
    // Each read of a fresh iterator runs kspan_sys_scan over every thread
    // of the host; the program writes nothing, so one read returns 0.
    const int fd = bpf_iter_create(link_fd);
    bool ok = fd >= 0;
    if (ok) {
      char buf[64];
      ssize_t n;
      while ((n = read(fd, buf, sizeof(buf))) > 0) {
      }
      ok = n == 0;
      close(fd);
    }
    const auto end = std::chrono::steady_clock::now();
    if (ok) {
      scans_.fetch_add(1, std::memory_order_relaxed);
      scan_ns_.fetch_add(
          static_cast<std::uint64_t>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count()),
          std::memory_order_relaxed);
    } else {
      scan_failures_.fetch_add(1, std::memory_order_relaxed);
      if (!warned) {
        spdlog::warn("syscall capture: the slow-syscall scan failed: {}", std::strerror(errno));
        warned = true;
      }
    }
    // A scan that overran: the next one an interval after it ended.
    next += interval;
    if (next <= end) next = end + interval;
    lock.lock();
  }
}

SyscallCapture::ScanStats SyscallCapture::scan_stats() const {
  return {scans_.load(std::memory_order_relaxed), scan_failures_.load(std::memory_order_relaxed),
          scan_ns_.load(std::memory_order_relaxed)};
}

int SyscallCapture::ring_fd() const {
  return skel_ ? bpf_map__fd(skel_->maps.kspan_sys_ring) : -1;
}

PerCpuRingSpec SyscallCapture::record_rings() const {
  PerCpuRingSpec spec;
  spec.name = "kspan_sys_rec";
  spec.records_fd = skel_ ? bpf_map__fd(skel_->maps.kspan_sys_rec) : -1;
  spec.positions_fd = skel_ ? bpf_map__fd(skel_->maps.kspan_sys_pos) : -1;
  spec.cpus = cpus_;
  spec.slots_per_cpu = sizes_.slots_per_cpu;
  spec.slot_bytes = sizeof(kspan_syscall_event);
  spec.bell_every = sizes_.bell_every;
  return spec;
}

int SyscallCapture::bell_fd() const {
  return skel_ ? bpf_map__fd(skel_->maps.kspan_sys_bell) : -1;
}

SyscallCapture::ProgramFds SyscallCapture::program_fds() const {
  if (skel_ == nullptr || variant_.empty()) return {};
  bpf_program *enter = nullptr, *exit = nullptr;
  switch (attempt_) {
    case SyscallVariant::kTpBtf:
      enter = skel_->progs.kspan_sys_e_btf;
      exit = direct_walk_ ? skel_->progs.kspan_sys_x_ptr : skel_->progs.kspan_sys_x_btf;
      break;
    case SyscallVariant::kRawTp:
      enter = skel_->progs.kspan_sys_e_raw, exit = skel_->progs.kspan_sys_x_raw;
      break;
    case SyscallVariant::kTracepoint:
      enter = skel_->progs.kspan_sys_e_tp, exit = skel_->progs.kspan_sys_x_tp;
      break;
  }
  return {bpf_program__fd(enter), bpf_program__fd(exit)};
}

SyscallStats SyscallCapture::ReadStats() const {
  if (skel_ == nullptr) return SyscallStats{};
  return SumPerCpuSlots<KSPAN_SYS_STAT_MAX>(bpf_map__fd(skel_->maps.kspan_sys_stats));
}

absl::Status SyscallCapture::WriteEntry(std::uint32_t nr) {
  if (skel_ == nullptr) return absl::OkStatus();  // written at Load
  int fd = bpf_map__fd(skel_->maps.kspan_sys_cfg);
  if (fd < 0) return absl::OkStatus();
  kspan_syscall_config c{};
  const SyscallInfo* info = FindSyscallByNr(nr);
  const Entry& e = table_[nr];
  if (info != nullptr && e.enabled) {
    c.enabled = 1;
    c.syscall_class = static_cast<std::uint8_t>(info->syscall_class);
    c.flags = info->flags;
    const auto ns = [](std::chrono::nanoseconds d) {
      return static_cast<std::uint64_t>(std::max<std::int64_t>(d.count(), 0));
    };
    // A per-syscall override applies whatever the fd; else the class
    // minimum, and the socket I/O minimum when the fd turns out a socket.
    c.min_duration_ns = ns(e.min_override.value_or(class_min_[info->syscall_class]));
    c.socket_min_ns = ns(e.min_override.value_or(class_min_[KSPAN_SYSCALL_CLASS_SOCKET_IO]));
    const bool has_fd = (info->flags & (KSPAN_SYSCALL_F_FD_ARG0 | KSPAN_SYSCALL_F_FD_RET |
                                        KSPAN_SYSCALL_F_FD_AT_ENTER)) != 0;
    if (!has_fd) c.socket_min_ns = c.min_duration_ns;
  }
  if (bpf_map_update_elem(fd, &nr, &c, BPF_ANY) != 0) {
    return CaptureError("syscall", absl::StrCat("update kspan_sys_cfg[", nr, "]"), errno);
  }
  return absl::OkStatus();
}

absl::Status SyscallCapture::WriteAll() {
  // Every slot, so a reused pin left by another configuration is overwritten.
  for (std::uint32_t nr = 0; nr < KSPAN_SYSCALL_NR_MAX; ++nr) {
    KSPAN_RETURN_IF_ERROR(WriteEntry(nr));
  }
  return absl::OkStatus();
}

absl::Status SyscallCapture::SetSyscalls(const std::vector<std::string>& names) {
  KSPAN_RETURN_IF_ERROR(ValidateSyscallNames(names));
  std::lock_guard lock(mu_);
  std::array<bool, KSPAN_SYSCALL_NR_MAX> want{};
  for (const auto& n : names) want[FindSyscall(n)->nr] = true;
  for (const auto& s : KnownSyscalls()) {
    if (table_[s.nr].enabled == want[s.nr]) continue;
    table_[s.nr].enabled = want[s.nr];
    if (auto st = WriteEntry(s.nr); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::Status SyscallCapture::EnableSyscall(std::string_view name, bool enabled) {
  const SyscallInfo* s = FindSyscall(name);
  if (s == nullptr) return ValidateSyscallNames({std::string(name)});
  std::lock_guard lock(mu_);
  table_[s->nr].enabled = enabled;
  return WriteEntry(s->nr);
}

absl::Status SyscallCapture::SetClassMinDuration(kspan_syscall_class syscall_class,
                                                 std::chrono::nanoseconds min_duration) {
  if (syscall_class < 0 || syscall_class >= KSPAN_SYSCALL_CLASS_MAX) {
    return absl::InvalidArgumentError("syscall capture: no such syscall class");
  }
  std::lock_guard lock(mu_);
  class_min_[syscall_class] = min_duration;
  for (const auto& s : KnownSyscalls()) {
    // The socket I/O minimum also applies to fd syscalls of other classes.
    if (s.syscall_class != syscall_class && syscall_class != KSPAN_SYSCALL_CLASS_SOCKET_IO) continue;
    if (auto st = WriteEntry(s.nr); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::Status SyscallCapture::SetSyscallMinDuration(
    std::string_view name, std::optional<std::chrono::nanoseconds> min_duration) {
  const SyscallInfo* s = FindSyscall(name);
  if (s == nullptr) return ValidateSyscallNames({std::string(name)});
  std::lock_guard lock(mu_);
  table_[s->nr].min_override = min_duration;
  return WriteEntry(s->nr);
}

std::vector<std::string> SyscallCapture::EnabledSyscalls() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& s : KnownSyscalls()) {
    if (table_[s.nr].enabled) out.emplace_back(s.name);
  }
  return out;
}

}  // namespace kspan
