#include "userspace/http_capture.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "exporter/status_macros.h"
#include "http.skel.h"
#include "spdlog/spdlog.h"
#include "userspace/bpf_stats.h"
#include "userspace/capture_error.h"
#include "userspace/kernel_features.h"
#include "userspace/variant_ladder.h"

namespace kspan {
std::string_view HttpVariantName(HttpVariant v) {
  switch (v) {
    case HttpVariant::kTpBtf: return "tp_btf";
    case HttpVariant::kTracepoint: return "tracepoint";
  }
  return "unknown";
}

std::optional<HttpVariant> ParseHttpVariant(std::string_view name) {
  for (auto v : kHttpVariants) {
    if (HttpVariantName(v) == name) return v;
  }
  return std::nullopt;
}

bool KernelHasSockLengthTracepoints() {
  return KernelBtfHas("btf_trace_sock_recv_length", BTF_KIND_TYPEDEF) &&
         KernelBtfHas("btf_trace_sock_send_length", BTF_KIND_TYPEDEF);
}

HttpCapture::HttpCapture(HttpCaptureOptions options)
    : options_(std::move(options)), attempt_(options_.force_variant.value_or(kHttpVariants[0])) {}

HttpCapture::~HttpCapture() { Destroy(); }

void HttpCapture::Destroy() {
  http_bpf::destroy(skel_);
  skel_ = nullptr;
}

absl::Status HttpCapture::Open() {
  if (options_.pin_dir.empty()) return absl::InvalidArgumentError("http capture: no pin directory");
  LIBBPF_OPTS(bpf_object_open_opts, opts);
  if (!options_.btf_path.empty()) opts.btf_custom_path = options_.btf_path.c_str();
  opts.pin_root_path = options_.pin_dir.c_str();
  skel_ = http_bpf::open(&opts);
  if (skel_ == nullptr) return CaptureError("http", "open http_bpf", errno);
  return absl::OkStatus();
}

absl::Status HttpCapture::Configure() {
  skel_->rodata->kspan_self_tgid = options_.self_tgid;
  skel_->rodata->wakeup_bytes = options_.wakeup_bytes;
  skel_->rodata->root_per_second = options_.root_per_second;
  std::size_t bytes = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  while (bytes < options_.ring_buffer_bytes) bytes <<= 1;
  if (int err = bpf_map__set_max_entries(skel_->maps.kspan_http_ring, bytes)) {
    return CaptureError("http", "configure kspan_http_ring", err);
  }
  // Per-thread in-flight slots and the socket-state hash only for the
  // syscall tracepoints; the tp_btf programs keep nothing between calls and
  // their socket state in socket storage. (The LRU hashes are preallocated:
  // left at full size they would cost megabytes for nothing.)
  const bool syscalls = attempt_ == HttpVariant::kTracepoint;
  const std::uint32_t slots = syscalls ? PerThreadSlots() : 1;
  skel_->rodata->infl_mask = slots - 1;
  if (int err = bpf_map__set_max_entries(skel_->maps.kspan_http_infl, slots)) {
    return CaptureError("http", "configure kspan_http_infl", err);
  }
  if (!syscalls) {
    for (bpf_map* unused : {skel_->maps.kspan_http_spill, skel_->maps.kspan_http_socks}) {
      if (int err = bpf_map__set_max_entries(unused, 1)) {
        return CaptureError("http", absl::StrCat("configure ", bpf_map__name(unused)), err);
      }
    }
  }
  // Programs of the other variant are not loaded.
  bpf_program* tp_btf[] = {skel_->progs.kspan_http_sk_recv, skel_->progs.kspan_http_sk_send,
                           skel_->progs.kspan_http_sk_state};
  bpf_program* prog = nullptr;
  bpf_object__for_each_program(prog, skel_->obj) {
    const bool is_tp_btf = std::find(std::begin(tp_btf), std::end(tp_btf), prog) != std::end(tp_btf);
    const std::string_view sec = bpf_program__section_name(prog);
    const bool is_syscall = sec.starts_with("tracepoint/syscalls/");
    if (!is_tp_btf && !is_syscall) continue;  // exec/exit hooks: both variants
    if (int err = bpf_program__set_autoload(prog, is_tp_btf ? !syscalls : syscalls)) {
      return CaptureError("http", absl::StrCat("autoload ", bpf_program__name(prog)), err);
    }
  }
  if (int err = bpf_map__set_max_entries(skel_->maps.kspan_http_lvl, PidMax())) {
    return CaptureError("http", "configure kspan_http_lvl", err);
  }
  return absl::OkStatus();
}

absl::Status HttpCapture::Load() {
  if (int err = http_bpf::load(skel_)) {
    return CaptureError(
        "http", absl::StrCat("load http_bpf, variant ", std::string(HttpVariantName(attempt_))),
        err);
  }
  return absl::OkStatus();
}

namespace {
const char* AttachPoints(HttpVariant v) {
  return v == HttpVariant::kTpBtf
             ? "sock:sock_recv_length/sock_send_length/inet_sock_set_state"
             : "syscalls:sys_*_read*/write*/send*/recv*/close";
}
}  // namespace

absl::Status HttpCapture::Attach() {
  if (int err = http_bpf::attach(skel_)) {
    return CaptureError("http",
                        absl::StrCat("attach variant ", std::string(HttpVariantName(attempt_)),
                                     " (", AttachPoints(attempt_), ")"),
                        err);
  }
  variant_ = std::string(HttpVariantName(attempt_));
  return absl::OkStatus();
}

absl::Status HttpCapture::Start() {
  std::vector<HttpVariant> candidates;
  if (options_.force_variant) {
    candidates.push_back(*options_.force_variant);
  } else {
    if (KernelHasSockLengthTracepoints()) candidates.push_back(HttpVariant::kTpBtf);
    candidates.push_back(HttpVariant::kTracepoint);
  }
  VariantLadder ladder;
  if (!options_.force_variant && candidates.front() != HttpVariant::kTpBtf) {
    ladder.NotTried("tp_btf: the kernel has no sock_recv_length/sock_send_length tracepoints");
  }
  auto taken = ladder.ClimbStages(
      candidates.size(), *this, [&](std::size_t i) { attempt_ = candidates[i]; },
      [this] { Destroy(); },
      [&](std::size_t i) { return std::string(HttpVariantName(candidates[i])); });
  if (!taken.ok()) return taken.status();
  const HttpVariant v = candidates[*taken];
  if (!ladder.any_refused()) {
    spdlog::info("http capture: variant {} ({})", variant_, AttachPoints(v));
  } else if (*taken == 0) {  // the kernel lacks the tracepoints
    spdlog::info("http capture: variant {} ({}); not taken: {}", variant_, AttachPoints(v),
                 ladder.refused());
  } else {
    spdlog::warn("http capture: variant {} ({}); refused: {}", variant_, AttachPoints(v),
                 ladder.refused());
  }
  return absl::OkStatus();
}

void HttpCapture::Detach() {
  if (skel_ != nullptr) http_bpf::detach(skel_);
}

int HttpCapture::ring_fd() const { return skel_ ? bpf_map__fd(skel_->maps.kspan_http_ring) : -1; }

HttpStats HttpCapture::ReadStats() const {
  if (skel_ == nullptr) return HttpStats{};
  return SumPerCpuSlots<KSPAN_HTTP_STAT_MAX>(bpf_map__fd(skel_->maps.kspan_http_stats));
}

}  // namespace kspan
