#include "userspace/process_capture.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "exporter/status_macros.h"
#include "process.skel.h"
#include "spdlog/spdlog.h"
#include "userspace/bpf_stats.h"
#include "userspace/capture_error.h"

namespace kspan {
ProcessCapture::ProcessCapture(ProcessCaptureOptions options) : options_(std::move(options)) {}

ProcessCapture::~ProcessCapture() { process_bpf::destroy(skel_); }

absl::Status ProcessCapture::Open() {
  if (options_.pin_dir.empty()) {
    return absl::InvalidArgumentError("process capture: no pin directory");
  }
  LIBBPF_OPTS(bpf_object_open_opts, opts);
  if (!options_.btf_path.empty()) opts.btf_custom_path = options_.btf_path.c_str();
  opts.pin_root_path = options_.pin_dir.c_str();
  skel_ = process_bpf::open(&opts);
  if (skel_ == nullptr) return CaptureError("process", "open process_bpf", errno);
  return absl::OkStatus();
}

absl::Status ProcessCapture::Configure() {
  skel_->rodata->kspan_self_tgid = options_.self_tgid;
  skel_->rodata->wakeup_bytes = options_.wakeup_bytes;
  // The ring must be a power-of-two multiple of the page size.
  std::size_t bytes = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  while (bytes < options_.ring_buffer_bytes) bytes <<= 1;
  if (int err = bpf_map__set_max_entries(skel_->maps.kspan_proc_ring, bytes)) {
    return CaptureError("process", "configure kspan_proc_ring", err);
  }
  return absl::OkStatus();
}

absl::Status ProcessCapture::Load() {
  if (int err = process_bpf::load(skel_)) return CaptureError("process", "load process_bpf", err);
  return absl::OkStatus();
}

absl::Status ProcessCapture::Attach() {
  attached_.clear();
  if (int err = process_bpf::attach(skel_)) {
    return CaptureError("process", "attach (sched:sched_process_exec, sched_process_exit)", err);
  }
  for (bpf_program* p : {skel_->progs.kspan_proc_exec, skel_->progs.kspan_proc_exit}) {
    attached_.push_back(bpf_program__name(p));
  }
  spdlog::info("process capture: attached to sched:sched_process_exec and sched_process_exit");
  return absl::OkStatus();
}

absl::Status ProcessCapture::Start() {
  KSPAN_RETURN_IF_ERROR(Open());
  KSPAN_RETURN_IF_ERROR(Configure());
  KSPAN_RETURN_IF_ERROR(Load());
  return Attach();
}

void ProcessCapture::Detach() {
  if (skel_ != nullptr) process_bpf::detach(skel_);
}

int ProcessCapture::ring_fd() const {
  return skel_ ? bpf_map__fd(skel_->maps.kspan_proc_ring) : -1;
}

ProcessStats ProcessCapture::ReadStats() const {
  if (skel_ == nullptr) return ProcessStats{};
  return SumPerCpuSlots<KSPAN_PROC_STAT_MAX>(bpf_map__fd(skel_->maps.kspan_proc_stats));
}

}  // namespace kspan
