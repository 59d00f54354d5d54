#include "userspace/tcp_capture.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "exporter/status_macros.h"
#include "spdlog/spdlog.h"
#include "tcp.skel.h"
#include "userspace/bpf_stats.h"
#include "userspace/capture_error.h"
#include "userspace/kernel_features.h"
#include "userspace/variant_ladder.h"

namespace kspan {

// The BPF side writes and reads these; a layout drift must not compile.
static_assert(sizeof(kspan_rcv_peer_key) == 24);
static_assert(offsetof(kspan_rcv_peer_key, sport) == 2);
static_assert(offsetof(kspan_rcv_peer_key, dport) == 4);
static_assert(offsetof(kspan_rcv_peer_key, saddr) == 8);
static_assert(sizeof(kspan_rcv_peer) == 24);
static_assert(offsetof(kspan_rcv_peer, netns) == 8);
static_assert(offsetof(kspan_rcv_peer, established_ns) == 16);

namespace {

// The programs of one variant: the state change and the three notes.
struct VariantPrograms {
  bpf_program* state;
  bpf_program* retransmit;
  bpf_program* reset_sent;
  bpf_program* reset_received;
};

VariantPrograms ProgramsOf(tcp_bpf* s, TcpVariant v) {
  auto& p = s->progs;
  switch (v) {
    case TcpVariant::kTpBtf:
      return {p.kspan_tcp_btf, p.kspan_rtx_btf, p.kspan_rst_tx_btf, p.kspan_rst_rx_btf};
    case TcpVariant::kRawTp:
      return {p.kspan_tcp_raw, p.kspan_rtx_raw, p.kspan_rst_tx_raw, p.kspan_rst_rx_raw};
    case TcpVariant::kTracepoint:
      break;
  }
  return {p.kspan_tcp_state, p.kspan_rtx, p.kspan_rst_tx, p.kspan_rst_rx};
}

// Attaches `p` and stores the link in the skeleton's slot for it, so
// tcp_bpf::detach()/destroy() take it down with the rest.
bpf_link* AttachInSkeleton(tcp_bpf* s, bpf_program* p) {
  bpf_link* link = bpf_program__attach(p);
  if (link == nullptr) return nullptr;
  for (int i = 0; i < s->skeleton->prog_cnt; ++i) {
    if (*s->skeleton->progs[i].prog == p) *s->skeleton->progs[i].link = link;
  }
  return link;
}

// Parameters of inet_csk_accept() in the kernel's BTF (4 before 6.10, 2
// since), or 0 when it cannot be found.
int InetCskAcceptArity(const std::string& btf_path) {
  struct btf* btf = btf_path.empty() ? btf__load_vmlinux_btf() : btf__parse(btf_path.c_str(), nullptr);
  if (btf == nullptr) return 0;
  int arity = 0;
  const int id = btf__find_by_name_kind(btf, "inet_csk_accept", BTF_KIND_FUNC);
  if (id > 0) {
    const struct btf_type* func = btf__type_by_id(btf, id);
    const struct btf_type* proto = func ? btf__type_by_id(btf, func->type) : nullptr;
    if (proto != nullptr && btf_is_func_proto(proto)) arity = btf_vlen(proto);
  }
  btf__free(btf);
  return arity;
}

// Inode number of this process's network namespace: what the kernel's
// struct net ns.inum holds. 0 on a kernel without network namespaces
// (no such file), where the programs use the same value for every socket.
absl::StatusOr<std::uint32_t> OwnNetnsInum() {
  struct stat st {};
  if (stat("/proc/self/ns/net", &st) != 0) {
    const int err = errno;
    if (err == ENOENT && access("/proc/self", F_OK) == 0) return 0u;
    return absl::InternalError(
        absl::StrCat("tcp capture: stat /proc/self/ns/net: ", std::strerror(err)));
  }
  return static_cast<std::uint32_t>(st.st_ino);
}

// `address` as the BPF side stores a receiver peer: IPv4 (also v4-mapped
// IPv6) in the first 4 bytes with family AF_INET.
bool ReceiverPeerKey(const std::string& address, std::uint16_t port, std::uint16_t server_port,
                     kspan_rcv_peer_key* key) {
  std::memset(key, 0, sizeof(*key));
  key->sport = port;
  key->dport = server_port;
  std::string text = address;
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    key->family = AF_INET;
    std::memcpy(key->saddr, &v4, sizeof(v4));
    return true;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, text.c_str(), &v6) != 1) return false;
  if (IN6_IS_ADDR_V4MAPPED(&v6)) {
    key->family = AF_INET;
    std::memcpy(key->saddr, &v6.s6_addr[12], 4);
    return true;
  }
  key->family = AF_INET6;
  std::memcpy(key->saddr, &v6, sizeof(v6));
  return true;
}

}  // namespace

const char* VariantName(TcpVariant v) {
  switch (v) {
    case TcpVariant::kTpBtf: return "tp_btf";
    case TcpVariant::kRawTp: return "raw_tp";
    case TcpVariant::kTracepoint: return "tracepoint";
  }
  return "?";
}

std::optional<TcpVariant> ParseTcpVariant(const std::string& name) {
  for (auto v : {TcpVariant::kTpBtf, TcpVariant::kRawTp, TcpVariant::kTracepoint}) {
    if (name == VariantName(v)) return v;
  }
  return std::nullopt;
}

TcpCapture::TcpCapture(CaptureOptions options) : options_(std::move(options)) {}

TcpCapture::~TcpCapture() { Destroy(); }

void TcpCapture::Destroy() {
  rcv_peers_fd_.store(-1);
  tcp_bpf::destroy(skel_);  // detaches links, closes maps; null-safe
  skel_ = nullptr;
}

absl::Status TcpCapture::Open() {
  if (options_.pin_dir.empty()) {
    return absl::InvalidArgumentError("tcp capture: a pin directory is required");
  }
  LIBBPF_OPTS(bpf_object_open_opts, opts);
  if (!options_.btf_path.empty()) opts.btf_custom_path = options_.btf_path.c_str();
  opts.pin_root_path = options_.pin_dir.c_str();
  skel_ = tcp_bpf::open(&opts);
  if (skel_ == nullptr) return CaptureError("tcp", "open tcp_bpf object", errno);
  return absl::OkStatus();
}

absl::Status TcpCapture::Configure(TcpVariant variant, AcceptVariant accept) {
  skel_->rodata->kspan_self_tgid = options_.self_tgid;
  skel_->rodata->wakeup_bytes = options_.wakeup_bytes;
  skel_->rodata->selected_only = options_.tcp_selected_only ? 1 : 0;
  auto netns = OwnNetnsInum();
  if (!netns.ok()) return netns.status();
  skel_->rodata->kspan_netns = *netns;
  // The ring must be a power-of-two multiple of the page size.
  std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  std::size_t bytes = page;
  while (bytes < options_.ring_buffer_bytes) bytes <<= 1;
  if (int err = bpf_map__set_max_entries(skel_->maps.kspan_tcp_ring, bytes)) {
    return CaptureError("tcp", "configure map kspan_tcp_ring", err);
  }
  for (auto v : {TcpVariant::kTpBtf, TcpVariant::kRawTp, TcpVariant::kTracepoint}) {
    const auto progs = ProgramsOf(skel_, v);
    for (bpf_program* p : {progs.state, progs.retransmit, progs.reset_sent, progs.reset_received}) {
      bpf_program__set_autoload(p, v == variant);
    }
  }
  chosen_ = variant;
  accept_ = accept;
  const int arity = accept == AcceptVariant::kFexit ? InetCskAcceptArity(options_.btf_path) : 0;
  if (accept == AcceptVariant::kFexit && arity != 2 && arity != 4) {
    return absl::UnimplementedError(
        absl::StrCat("tcp capture: inet_csk_accept has ", arity, " parameters in this kernel's BTF"));
  }
  bpf_program__set_autoload(skel_->progs.kspan_acc_fx2, accept == AcceptVariant::kFexit && arity == 2);
  bpf_program__set_autoload(skel_->progs.kspan_acc_fx4, accept == AcceptVariant::kFexit && arity == 4);
  bpf_program__set_autoload(skel_->progs.kspan_acc_rx, accept == AcceptVariant::kSocketData);
  bpf_program__set_autoload(skel_->progs.kspan_acc_tx, accept == AcceptVariant::kSocketData);
  bpf_program__set_autoload(skel_->progs.kspan_tcp_acc4, accept == AcceptVariant::kSyscallTracepoint);
  bpf_program__set_autoload(skel_->progs.kspan_tcp_acc, accept == AcceptVariant::kSyscallTracepoint);
  return absl::OkStatus();
}

absl::Status TcpCapture::Load() {
  // Maps declared with pinning by name (filters, stats) are created and
  // pinned here, or reused when another family pinned them first.
  if (int err = tcp_bpf::load(skel_)) {
    return CaptureError("tcp", absl::StrCat("load tcp_bpf (", VariantName(chosen_), " variant)"),
                        err);
  }
  KSPAN_RETURN_IF_ERROR(ApplyReceiverPorts());
  rcv_peers_fd_.store(bpf_map__fd(skel_->maps.kspan_rcv_peers));
  return absl::OkStatus();
}

absl::Status TcpCapture::SetReceiverPorts(const std::vector<std::uint16_t>& ports) {
  std::vector<std::uint16_t> wanted = ports;
  std::sort(wanted.begin(), wanted.end());
  wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
  if (!wanted.empty() && wanted.front() == 0) {
    return absl::InvalidArgumentError("tcp capture: receiver port 0");
  }
  if (wanted.size() > KSPAN_RCV_MAX_PORTS) {
    return absl::InvalidArgumentError(absl::StrCat("tcp capture: ", wanted.size(),
                                                   " receiver ports, at most ",
                                                   KSPAN_RCV_MAX_PORTS));
  }
  receiver_ports_ = std::move(wanted);
  return ApplyReceiverPorts();
}

absl::Status TcpCapture::ApplyReceiverPorts() {
  if (skel_ == nullptr || skel_->bss == nullptr) return absl::OkStatus();  // at Load()
  const int fd = bpf_map__fd(skel_->maps.kspan_rcv_ports);
  if (fd < 0) return absl::OkStatus();  // opened, not loaded yet
  // The map is pinned: it may hold another run's or another set's ports.
  std::vector<std::uint16_t> stale;
  std::uint16_t key = 0;
  std::uint16_t next = 0;
  const std::uint16_t* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    if (!std::binary_search(receiver_ports_.begin(), receiver_ports_.end(), next)) {
      stale.push_back(next);
    }
    key = next;
    prev = &key;
  }
  for (std::uint16_t port : stale) {
    if (bpf_map_delete_elem(fd, &port) != 0 && errno != ENOENT) {
      return CaptureError("tcp", "remove receiver port from map kspan_rcv_ports", errno);
    }
  }
  const std::uint8_t one = 1;
  for (std::uint16_t port : receiver_ports_) {
    if (bpf_map_update_elem(fd, &port, &one, BPF_ANY) != 0) {
      return CaptureError("tcp", "add receiver port to map kspan_rcv_ports", errno);
    }
  }
  // The programs look ports up only while this is non-zero.
  __atomic_store_n(&skel_->bss->kspan_rcv_port_count,
                   static_cast<std::uint32_t>(receiver_ports_.size()), __ATOMIC_RELEASE);
  return absl::OkStatus();
}

std::optional<ReceiverPeerOwner> TcpCapture::LookupReceiverPeer(const std::string& address,
                                                                std::uint16_t port,
                                                                std::uint16_t server_port) const {
  const int fd = rcv_peers_fd_.load();
  kspan_rcv_peer_key key{};
  if (fd < 0 || !ReceiverPeerKey(address, port, server_port, &key)) return std::nullopt;
  kspan_rcv_peer value{};
  if (bpf_map_lookup_elem(fd, &key, &value) != 0) return std::nullopt;
  return ReceiverPeerOwner{value.pid, value.tid, value.netns, value.established_ns};
}

absl::Status TcpCapture::Attach() {
  attached_.clear();
  const auto progs = ProgramsOf(skel_, chosen_);
  for (bpf_program* p : {progs.state, progs.retransmit, progs.reset_sent, progs.reset_received}) {
    if (AttachInSkeleton(skel_, p) == nullptr)
      return CaptureError("tcp", absl::StrCat("attach ", bpf_program__name(p)), errno);
    attached_.push_back(bpf_program__name(p));
  }
  if (accept_ == AcceptVariant::kFexit) {
    bpf_program* p = bpf_program__autoload(skel_->progs.kspan_acc_fx2) ? skel_->progs.kspan_acc_fx2
                                                                       : skel_->progs.kspan_acc_fx4;
    if (AttachInSkeleton(skel_, p) == nullptr)
      return CaptureError("tcp", absl::StrCat("attach ", bpf_program__name(p)), errno);
    attached_.push_back(bpf_program__name(p));
    accept_attached_ = true;
    accept_variant_ = "fexit";
    return absl::OkStatus();
  }
  if (accept_ == AcceptVariant::kSocketData) {
    for (bpf_program* p : {skel_->progs.kspan_acc_rx, skel_->progs.kspan_acc_tx}) {
      if (AttachInSkeleton(skel_, p) == nullptr)
        return CaptureError("tcp", absl::StrCat("attach ", bpf_program__name(p)), errno);
      attached_.push_back(bpf_program__name(p));
    }
    accept_attached_ = true;
    accept_variant_ = "socket_data";
    return absl::OkStatus();
  }
  // Accept spans ride on syscall tracepoints; without them the rest works.
  accept_attached_ = true;
  accept_variant_ = "tracepoint";
  for (bpf_program* p : {skel_->progs.kspan_tcp_acc4, skel_->progs.kspan_tcp_acc}) {
    if (AttachInSkeleton(skel_, p) == nullptr) {
      accept_attached_ = false;
      spdlog::warn("tcp capture: {} not attached ({}): no accept spans, and incoming "
                   "connections have no owner",
                   bpf_program__name(p), std::strerror(errno));
      continue;
    }
    attached_.push_back(bpf_program__name(p));
  }
  return absl::OkStatus();
}

absl::Status TcpCapture::Start(std::vector<TcpVariant> ladder) {
  VariantLadder climb;
  bool try_fexit = options_.accept_fexit;
  bool try_socket_data = options_.accept_socket_data &&
                         KernelBtfHas("btf_trace_sock_recv_length", BTF_KIND_TYPEDEF) &&
                         KernelBtfHas("btf_trace_sock_send_length", BTF_KIND_TYPEDEF);
  if (options_.accept_socket_data && !try_socket_data) {
    climb.NotTried(
        "accept socket_data: the kernel has no sock_recv_length/sock_send_length "
        "tracepoints");
  }
  // Within one state-change variant: the fexit accept first, where
  // allowed, then the socket data tracepoints; once the kernel refuses
  // one, it is not tried again.
  std::vector<std::pair<TcpVariant, AcceptVariant>> candidates;
  for (TcpVariant v : ladder) {
    for (AcceptVariant a :
         {AcceptVariant::kFexit, AcceptVariant::kSocketData, AcceptVariant::kSyscallTracepoint}) {
      candidates.push_back({v, a});
    }
  }
  if (candidates.empty()) return absl::InvalidArgumentError("tcp capture: no variant to try");
  auto taken = climb.Climb(
      candidates.size(),
      [&](std::size_t i) {
        const AcceptVariant a = candidates[i].second;
        return (a == AcceptVariant::kFexit && !try_fexit) ||
               (a == AcceptVariant::kSocketData && !try_socket_data);
      },
      [&](std::size_t i) {
        const auto [v, a] = candidates[i];
        absl::Status s = Open();
        if (s.ok()) s = Configure(v, a);
        if (s.ok()) s = Load();
        if (s.ok()) s = Attach();
        if (!s.ok() && a == AcceptVariant::kFexit) try_fexit = false;
        if (!s.ok() && a == AcceptVariant::kSocketData) try_socket_data = false;
        return s;
      },
      [this] { Destroy(); },
      [&](std::size_t i) {
        const AcceptVariant a = candidates[i].second;
        return absl::StrCat(VariantName(candidates[i].first),
                            a == AcceptVariant::kFexit        ? "+fexit"
                            : a == AcceptVariant::kSocketData ? "+socket_data"
                                                              : "",
                            " refused");
      });
  if (!taken.ok()) return taken.status();
  variant_ = VariantName(candidates[*taken].first);
  if (accept_variant_ == "tracepoint") {
    // Named so that an operator knows what every process pays.
    spdlog::warn(
        "tcp capture: variant {} (accept: tracepoint, syscalls:sys_exit_accept*: "
        "every syscall of every process takes the kernel's syscall tracing "
        "path){}{}",
        variant_, climb.any_refused() ? "; " : "", climb.refused());
  } else if (!climb.any_refused()) {
    spdlog::info("tcp capture: variant {} (accept: {})", variant_, accept_variant_);
  } else {
    spdlog::warn("tcp capture: variant {} (accept: {}) taken; {}", variant_, accept_variant_,
                 climb.refused());
  }
  return absl::OkStatus();
}

void TcpCapture::Detach() {
  if (skel_ != nullptr) tcp_bpf::detach(skel_);
}

int TcpCapture::ring_fd() const {
  return skel_ ? bpf_map__fd(skel_->maps.kspan_tcp_ring) : -1;
}

TcpStats TcpCapture::ReadStats() const {
  if (skel_ == nullptr) return TcpStats{};
  return SumPerCpuSlots<KSPAN_TCP_STAT_MAX>(bpf_map__fd(skel_->maps.kspan_tcp_stats));
}

}  // namespace kspan
