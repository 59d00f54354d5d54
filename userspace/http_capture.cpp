#include "userspace/http_capture.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
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
  return absl::OkStatus();
}

absl::Status HttpCapture::Load() {
  if (int err = http_bpf::load(skel_)) return Failed("load http_bpf", err);
  return absl::OkStatus();
}

absl::Status HttpCapture::Attach() {
  if (int err = http_bpf::attach(skel_)) return Failed("attach (syscalls:sys_*_read*/write*/send*/recv*/close)", err);
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
