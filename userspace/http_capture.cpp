#include "userspace/http_capture.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "http.skel.h"
#include "spdlog/spdlog.h"
#include "userspace/bpf_stats.h"

namespace kspan {
namespace {

absl::Status Failed(const std::string& stage, int err) {
  if (err < 0) err = -err;
  return absl::InternalError(absl::StrCat("http capture: ", stage, ": ", std::strerror(err)));
}

// Level-cache entries: one per possible tgid (kernel.pid_max), at most 4 Mi.
std::uint32_t PidMax() {
  std::ifstream in("/proc/sys/kernel/pid_max");
  std::uint64_t v = 0;
  if (!(in >> v) || v == 0) v = 4u << 20;
  return static_cast<std::uint32_t>(std::clamp<std::uint64_t>(v, 1024, 4u << 20));
}

// In-flight array slots, a power of two: one per possible tid up to 256 Ki
// (8 MiB), so threads share a slot (and spill into the hash) only on hosts
// with a larger pid_max.
std::uint32_t InFlightSlots() {
  const std::uint32_t want = std::min<std::uint32_t>(PidMax(), 1u << 18);
  std::uint32_t n = 1024;
  while (n < want) n <<= 1;
  return n;
}

}  // namespace

HttpCapture::HttpCapture(HttpCaptureOptions options) : options_(std::move(options)) {}

HttpCapture::~HttpCapture() { http_bpf::destroy(skel_); }

absl::Status HttpCapture::Open() {
  if (options_.pin_dir.empty()) return absl::InvalidArgumentError("http capture: no pin directory");
  LIBBPF_OPTS(bpf_object_open_opts, opts);
  if (!options_.btf_path.empty()) opts.btf_custom_path = options_.btf_path.c_str();
  opts.pin_root_path = options_.pin_dir.c_str();
  skel_ = http_bpf::open(&opts);
  if (skel_ == nullptr) return Failed("open http_bpf", errno);
  return absl::OkStatus();
}

absl::Status HttpCapture::Configure() {
  skel_->rodata->kspan_self_tgid = options_.self_tgid;
  skel_->rodata->wakeup_bytes = options_.wakeup_bytes;
  std::size_t bytes = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  while (bytes < options_.ring_buffer_bytes) bytes <<= 1;
  if (int err = bpf_map__set_max_entries(skel_->maps.kspan_http_ring, bytes)) {
    return Failed("configure kspan_http_ring", err);
  }
  skel_->rodata->infl_mask = InFlightSlots() - 1;
  if (int err = bpf_map__set_max_entries(skel_->maps.kspan_http_infl, InFlightSlots())) {
    return Failed("configure kspan_http_infl", err);
  }
  if (int err = bpf_map__set_max_entries(skel_->maps.kspan_http_lvl, PidMax())) {
    return Failed("configure kspan_http_lvl", err);
  }
  return absl::OkStatus();
}

absl::Status HttpCapture::Load() {
  if (int err = http_bpf::load(skel_)) return Failed("load http_bpf", err);
  return absl::OkStatus();
}

absl::Status HttpCapture::Attach() {
  if (int err = http_bpf::attach(skel_)) return Failed("attach (syscalls:sys_*_read*/write*/send*/recv*/close, sched:sched_process_exec/exit)", err);
  spdlog::info("http capture: attached to the socket syscall tracepoints");
  return absl::OkStatus();
}

absl::Status HttpCapture::Start() {
  if (auto s = Open(); !s.ok()) return s;
  if (auto s = Configure(); !s.ok()) return s;
  if (auto s = Load(); !s.ok()) return s;
  return Attach();
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
