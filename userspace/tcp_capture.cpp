#include "userspace/tcp_capture.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "tcp.skel.h"

namespace kspan {
namespace {

absl::Status Failed(const std::string& stage, const std::string& object, int err) {
  if (err < 0) err = -err;
  std::string msg = absl::StrCat("tcp capture: ", stage, " ", object, ": ", std::strerror(err));
  if (err == EPERM || err == EACCES) {
    absl::StrAppend(&msg, " (run as root, or with CAP_BPF and CAP_PERFMON)");
  }
  return absl::InternalError(msg);
}

}  // namespace

TcpCapture::TcpCapture(CaptureOptions options) : options_(std::move(options)) {}

TcpCapture::~TcpCapture() {
  tcp_bpf::destroy(skel_);  // detaches links, closes maps; null-safe
}

absl::Status TcpCapture::Open() {
  if (options_.pin_dir.empty()) {
    return absl::InvalidArgumentError("tcp capture: a pin directory is required");
  }
  LIBBPF_OPTS(bpf_object_open_opts, opts);
  if (!options_.btf_path.empty()) opts.btf_custom_path = options_.btf_path.c_str();
  opts.pin_root_path = options_.pin_dir.c_str();
  skel_ = tcp_bpf::open(&opts);
  if (skel_ == nullptr) return Failed("open", "tcp_bpf object", errno);
  return absl::OkStatus();
}

absl::Status TcpCapture::Configure() {
  skel_->rodata->kspan_self_tgid = options_.self_tgid;
  skel_->rodata->wakeup_bytes = options_.wakeup_bytes;
  // The ring must be a power-of-two multiple of the page size.
  std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  std::size_t bytes = page;
  while (bytes < options_.ring_buffer_bytes) bytes <<= 1;
  if (int err = bpf_map__set_max_entries(skel_->maps.kspan_tcp_ring, bytes)) {
    return Failed("configure", "map kspan_tcp_ring", err);
  }
  // Only one attach point exists for this family today; later variants
  // (tp_btf, fentry) are chosen here by feature probes.
  variant_ = "tracepoint";
  return absl::OkStatus();
}

absl::Status TcpCapture::Load() {
  // Maps declared with pinning by name (filters, stats) are created and
  // pinned here, or reused when another family pinned them first.
  if (int err = tcp_bpf::load(skel_)) return Failed("load", "program kspan_tcp_state", err);
  return absl::OkStatus();
}

absl::Status TcpCapture::Attach() {
  skel_->links.kspan_tcp_state = bpf_program__attach(skel_->progs.kspan_tcp_state);
  if (skel_->links.kspan_tcp_state == nullptr) {
    return Failed("attach", "kspan_tcp_state to tracepoint sock/inet_sock_set_state", errno);
  }
  spdlog::info("tcp capture: kspan_tcp_state attached ({} sock/inet_sock_set_state)", variant_);
  return absl::OkStatus();
}

absl::Status TcpCapture::Start() {
  if (auto s = Open(); !s.ok()) return s;
  if (auto s = Configure(); !s.ok()) return s;
  if (auto s = Load(); !s.ok()) return s;
  return Attach();
}

void TcpCapture::Detach() {
  if (skel_ != nullptr) tcp_bpf::detach(skel_);
}

int TcpCapture::ring_fd() const {
  return skel_ ? bpf_map__fd(skel_->maps.kspan_tcp_ring) : -1;
}

TcpStats TcpCapture::ReadStats() const {
  TcpStats total{};
  if (skel_ == nullptr) return total;
  int fd = bpf_map__fd(skel_->maps.kspan_tcp_stats);
  if (fd < 0) return total;
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return total;
  std::vector<std::uint64_t> per_cpu(static_cast<std::size_t>(ncpu));
  for (std::uint32_t slot = 0; slot < KSPAN_TCP_STAT_MAX; ++slot) {
    if (bpf_map_lookup_elem(fd, &slot, per_cpu.data()) != 0) continue;
    for (auto v : per_cpu) total[slot] += v;
  }
  return total;
}

}  // namespace kspan
