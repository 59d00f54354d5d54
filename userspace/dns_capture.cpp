#include "userspace/dns_capture.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "dns.skel.h"
#include "exporter/status_macros.h"
#include "spdlog/spdlog.h"
#include "userspace/bpf_stats.h"
#include "userspace/capture_error.h"
#include "userspace/kernel_features.h"
#include "userspace/variant_ladder.h"

namespace kspan {
std::string_view DnsVariantName(DnsVariant v) {
  return v == DnsVariant::kTpBtf ? "tp_btf" : "tracepoint";
}

std::optional<DnsVariant> ParseDnsVariant(std::string_view name) {
  for (auto v : {DnsVariant::kTpBtf, DnsVariant::kTracepoint}) {
    if (DnsVariantName(v) == name) return v;
  }
  return std::nullopt;
}

DnsCapture::DnsCapture(DnsCaptureOptions options) : options_(std::move(options)) {}

DnsCapture::~DnsCapture() { Destroy(); }

void DnsCapture::Destroy() {
  dns_bpf::destroy(skel_);
  skel_ = nullptr;
}

absl::Status DnsCapture::Open() {
  if (options_.pin_dir.empty()) return absl::InvalidArgumentError("dns capture: no pin directory");
  LIBBPF_OPTS(bpf_object_open_opts, opts);
  if (!options_.btf_path.empty()) opts.btf_custom_path = options_.btf_path.c_str();
  opts.pin_root_path = options_.pin_dir.c_str();
  skel_ = dns_bpf::open(&opts);
  if (skel_ == nullptr) return CaptureError("dns", "open dns_bpf", errno);
  return absl::OkStatus();
}

absl::Status DnsCapture::Configure() {
  skel_->rodata->kspan_self_tgid = options_.self_tgid;
  std::size_t bytes = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  while (bytes < options_.ring_buffer_bytes) bytes <<= 1;
  if (int err = bpf_map__set_max_entries(skel_->maps.kspan_dns_ring, bytes)) {
    return CaptureError("dns", "configure kspan_dns_ring", err);
  }
  const bool tp_btf = attempt_ == DnsVariant::kTpBtf;
  for (bpf_program* p : {skel_->progs.kspan_dns_sk_tx, skel_->progs.kspan_dns_sk_rx}) {
    bpf_program__set_autoload(p, tp_btf);
  }
  for (bpf_program* p : {skel_->progs.kspan_dns_sendto, skel_->progs.kspan_dns_sendmsg,
                         skel_->progs.kspan_dns_sendmm, skel_->progs.kspan_dns_recvfrom,
                         skel_->progs.kspan_dns_recvfrom_x, skel_->progs.kspan_dns_recvmsg,
                         skel_->progs.kspan_dns_recvmsg_x}) {
    bpf_program__set_autoload(p, !tp_btf);
  }
  return absl::OkStatus();
}

absl::Status DnsCapture::Load() {
  if (int err = dns_bpf::load(skel_)) return CaptureError("dns", "load dns_bpf", err);
  return absl::OkStatus();
}

absl::Status DnsCapture::Attach() {
  const char* where = attempt_ == DnsVariant::kTpBtf ? "sock:sock_send_length/sock_recv_length"
                                                     : "syscalls:sys_*_send*/recv*";
  if (int err = dns_bpf::attach(skel_))
    return CaptureError("dns", absl::StrCat("attach (", where, ")"), err);
  variant_ = std::string(DnsVariantName(attempt_));
  return absl::OkStatus();
}

absl::Status DnsCapture::Start() {
  std::vector<DnsVariant> candidates;
  VariantLadder ladder;
  if (options_.force_variant) {
    candidates.push_back(*options_.force_variant);
  } else {
    if (KernelBtfHas("btf_trace_sock_send_length", BTF_KIND_TYPEDEF) &&
        KernelBtfHas("btf_trace_sock_recv_length", BTF_KIND_TYPEDEF) &&
        KernelHasBpfHelper("BPF_FUNC_task_pt_regs")) {
      candidates.push_back(DnsVariant::kTpBtf);
    } else {
      ladder.NotTried("tp_btf: the kernel has no sock_send_length/sock_recv_length tracepoints");
    }
    candidates.push_back(DnsVariant::kTracepoint);
  }
  auto taken = ladder.ClimbStages(
      candidates.size(), *this, [&](std::size_t i) { attempt_ = candidates[i]; },
      [this] { Destroy(); },
      [&](std::size_t i) { return std::string(DnsVariantName(candidates[i])); });
  if (!taken.ok()) return taken.status();
  if (candidates[*taken] == DnsVariant::kTpBtf) {
    spdlog::info("dns capture: variant tp_btf (socket layer: sock_send_length/sock_recv_length)");
  } else {
    // Named so that an operator knows what every process pays.
    spdlog::warn(
        "dns capture: variant tracepoint (per-syscall tracepoints: every syscall of "
        "every process takes the kernel's syscall tracing path){}{}",
        ladder.any_refused() ? "; " : "", ladder.refused());
  }
  return absl::OkStatus();
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
