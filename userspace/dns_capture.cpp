#include "userspace/dns_capture.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dns.skel.h"
#include "spdlog/spdlog.h"
#include "userspace/bpf_stats.h"

namespace kspan {
namespace {

absl::Status Failed(const std::string& stage, int err) {
  if (err < 0) err = -err;
  return absl::InternalError(absl::StrCat("dns capture: ", stage, ": ", std::strerror(err)));
}

}  // namespace

DnsCapture::DnsCapture(DnsCaptureOptions options) : options_(std::move(options)) {}

DnsCapture::~DnsCapture() { dns_bpf::destroy(skel_); }

absl::Status DnsCapture::Open() {
  if (options_.pin_dir.empty()) return absl::InvalidArgumentError("dns capture: no pin directory");
  LIBBPF_OPTS(bpf_object_open_opts, opts);
  if (!options_.btf_path.empty()) opts.btf_custom_path = options_.btf_path.c_str();
  opts.pin_root_path = options_.pin_dir.c_str();
  skel_ = dns_bpf::open(&opts);
  if (skel_ == nullptr) return Failed("open dns_bpf", errno);
  return absl::OkStatus();
}

absl::Status DnsCapture::Configure() {
  skel_->rodata->kspan_self_tgid = options_.self_tgid;
  std::size_t bytes = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  while (bytes < options_.ring_buffer_bytes) bytes <<= 1;
  if (int err = bpf_map__set_max_entries(skel_->maps.kspan_dns_ring, bytes)) {
    return Failed("configure kspan_dns_ring", err);
  }
  return absl::OkStatus();
}

absl::Status DnsCapture::Load() {
  if (int err = dns_bpf::load(skel_)) return Failed("load dns_bpf", err);
  return absl::OkStatus();
}

absl::Status DnsCapture::Attach() {
  if (int err = dns_bpf::attach(skel_)) return Failed("attach (syscalls:sys_*_send*/recv*)", err);
  spdlog::info("dns capture: attached to the socket syscall tracepoints");
  return absl::OkStatus();
}

absl::Status DnsCapture::Start() {
  if (auto s = Open(); !s.ok()) return s;
  if (auto s = Configure(); !s.ok()) return s;
  if (auto s = Load(); !s.ok()) return s;
  return Attach();
}

void DnsCapture::Detach() {
  if (skel_ != nullptr) dns_bpf::detach(skel_);
}

int DnsCapture::ring_fd() const { return skel_ ? bpf_map__fd(skel_->maps.kspan_dns_ring) : -1; }

DnsStats DnsCapture::ReadStats() const {
  if (skel_ == nullptr) return DnsStats{};
  return SumPerCpuSlots<KSPAN_DNS_STAT_MAX>(bpf_map__fd(skel_->maps.kspan_dns_stats));
}

}  // namespace kspan
