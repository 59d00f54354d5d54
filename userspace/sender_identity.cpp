#include "userspace/sender_identity.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <set>
#include <string_view>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "userspace/proc_files.h"

namespace kspan {
namespace {

// A connection table can be large on a busy host; beyond this the socket is
// not looked for (the sender stays unknown) rather than reading without end.
constexpr std::size_t kMaxTcpTableBytes = 64 << 20;
constexpr std::size_t kMaxScannedConnections = 4096;
constexpr int kMaxScansPerSecond = 20;
// Longest service.name taken from a sender's own resource.
constexpr std::size_t kMaxServiceName = 256;

// /proc/net/tcp writes addresses as the raw in-memory words in hex: IPv4 as
// one 32-bit word, IPv6 as four, each in host byte order.
std::string ProcNetAddress(const std::string& address, bool* v6) {
  in_addr a4{};
  in6_addr a6{};
  char buf[40];
  if (inet_pton(AF_INET, address.c_str(), &a4) == 1) {
    *v6 = false;
    std::snprintf(buf, sizeof(buf), "%08X", a4.s_addr);
    return buf;
  }
  if (inet_pton(AF_INET6, address.c_str(), &a6) == 1) {
    *v6 = true;
    std::string out;
    for (int i = 0; i < 4; ++i) {
      std::uint32_t w;
      std::memcpy(&w, a6.s6_addr + 4 * i, 4);
      std::snprintf(buf, sizeof(buf), "%08X", w);
      out += buf;
    }
    return out;
  }
  return {};
}

std::optional<std::uint64_t> ParseHex(std::string_view s) {
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 16);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// The inode of the socket local=addr:port, remote port = server_port, in a
// /proc/net/tcp{,6} table.
std::optional<unsigned long> SocketInode(const std::string& table, const std::string& local,
                                         std::uint16_t port, std::uint16_t server_port) {
  auto text = ReadBoundedFile(table, kMaxTcpTableBytes);
  if (!text) return std::nullopt;
  char want_local[64];
  std::snprintf(want_local, sizeof(want_local), "%s:%04X", local.c_str(), port);
  bool header = true;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    if (header) {
      header = false;
      continue;
    }
    // sl local rem st queues tr retr uid timeout inode
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 10 || f[1] != want_local) continue;
    auto colon = f[2].rfind(':');
    if (colon == absl::string_view::npos) continue;
    const absl::string_view port_hex = f[2].substr(colon + 1);
    if (ParseHex(std::string_view(port_hex.data(), port_hex.size())) != server_port) continue;
    std::uint64_t inode = 0;
    if (std::from_chars(f[9].data(), f[9].data() + f[9].size(), inode).ec != std::errc()) continue;
    return static_cast<unsigned long>(inode);
  }
  return std::nullopt;
}

// The inode of the client socket in the tables that `net_dir` (a
// /proc/<pid>/net or /proc/net directory) shows.
std::optional<unsigned long> FindClientSocket(const std::string& net_dir, const std::string& address,
                                              std::uint16_t port, std::uint16_t server_port) {
  bool v6 = false;
  const std::string local = ProcNetAddress(address, &v6);
  if (local.empty()) return std::nullopt;
  auto inode = SocketInode(net_dir + (v6 ? "/tcp6" : "/tcp"), local, port, server_port);
  if (!inode && !v6) {
    // An IPv4 client of a dual-stack listener shows as ::ffff:a.b.c.d.
    const auto mapped = ProcNetAddress("::ffff:" + address, &v6);
    inode = SocketInode(net_dir + "/tcp6", mapped, port, server_port);
  }
  if (inode && *inode == 0) return std::nullopt;
  return inode;
}

bool ProcessOwnsSocket(const std::string& proc_root, std::uint32_t pid, const std::string& link) {
  const std::string dir = absl::StrCat(proc_root, "/", pid, "/fd");
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return false;
  bool found = false;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    if (ReadLinkPath(absl::StrCat(dir, "/", e->d_name)) == link) {
      found = true;
      break;
    }
  }
  closedir(d);
  return found;
}

std::vector<std::uint32_t> AllPids(const std::string& proc_root) {
  std::vector<std::uint32_t> pids;
  DIR* d = opendir(proc_root.c_str());
  if (d == nullptr) return pids;
  while (dirent* e = readdir(d)) {
    const std::string_view name(e->d_name);
    std::uint32_t pid = 0;
    auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), pid);
    if (ec == std::errc() && end == name.data() + name.size() && pid != 0) pids.push_back(pid);
  }
  closedir(d);
  return pids;
}

std::optional<std::int64_t> ClaimedPid(const Resource& r) {
  const AttributeValue* v = FindAttribute(r.attributes, "process.pid");
  if (v == nullptr) return std::nullopt;
  if (const auto* i = std::get_if<std::int64_t>(v)) return *i;
  if (const auto* s = std::get_if<std::string>(v)) {
    // Some SDKs send ids as strings.
    std::int64_t out = 0;
    auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), out);
    if (ec == std::errc() && end == s->data() + s->size()) return out;
  }
  return -1;  // present but not a pid: a claim nobody can have
}

}  // namespace

std::optional<std::uint32_t> PidOfTcpClient(const std::string& address, std::uint16_t port,
                                            std::uint16_t server_port,
                                            std::optional<std::uint32_t> hint,
                                            const std::string& proc_root) {
  auto inode = FindClientSocket(proc_root + "/net", address, port, server_port);
  const std::vector<std::uint32_t> pids = AllPids(proc_root);
  if (!inode) {
    // Not in kspan's network namespace: look through each other one once
    // (a container on a bridge connecting to the host's bridge address).
    std::set<std::string> seen;
    if (const auto own = ReadLinkPath(proc_root + "/self/ns/net"); !own.empty()) seen.insert(own);
    for (std::uint32_t pid : pids) {
      const std::string ns = ReadLinkPath(absl::StrCat(proc_root, "/", pid, "/ns/net"));
      if (ns.empty() || !seen.insert(ns).second) continue;
      inode = FindClientSocket(absl::StrCat(proc_root, "/", pid, "/net"), address, port, server_port);
      if (inode) {
        // Its owner is most likely in this namespace, this process first.
        if (!hint) hint = pid;
        break;
      }
    }
  }
  if (!inode) return std::nullopt;
  // Socket inodes are unique on the host, whatever the namespace.
  const std::string link = absl::StrCat("socket:[", *inode, "]");
  if (hint && ProcessOwnsSocket(proc_root, *hint, link)) return hint;
  for (std::uint32_t pid : pids) {
    if (ProcessOwnsSocket(proc_root, pid, link)) return pid;
  }
  return std::nullopt;
}

std::optional<std::uint32_t> SenderAttribution::PidOf(const Resource* resource) const {
  for (const auto& [r, pid] : resource_pids) {
    if (r == resource) return pid;
  }
  return std::nullopt;
}

SenderIdentity::SenderIdentity(MetricsRegistry& metrics, KernelOwnerFn kernel_owner,
                               std::string proc_root)
    : kernel_owner_(std::move(kernel_owner)),
      proc_root_(std::move(proc_root)),
      pids_(proc_root_),
      by_kernel_(metrics.GetCounter("kspan_receiver_senders_total",
                                    "OTLP requests by how their sending process was identified.",
                                    {{"identified_by", "kernel"}})),
      by_proc_(metrics.GetCounter("kspan_receiver_senders_total",
                                  "OTLP requests by how their sending process was identified.",
                                  {{"identified_by", "proc"}})),
      unknown_(metrics.GetCounter("kspan_receiver_senders_total",
                                  "OTLP requests by how their sending process was identified.",
                                  {{"identified_by", "unknown"}})),
      scans_limited_(metrics.GetCounter(
          "kspan_receiver_sender_scans_limited_total",
          "Requests whose sender was not looked for in /proc: over 20 scans a second.")),
      claims_own_(metrics.GetCounter(
          "kspan_receiver_pid_claims_total",
          "Resources in OTLP requests attributed to the process that sent them.")),
      refused_other_process_(metrics.GetCounter(
          "kspan_receiver_pid_claims_refused_total",
          "Resources whose process.pid is not their sender: never enrolled, by reason.",
          {{"reason", "other_process"}})),
      refused_not_in_namespace_(metrics.GetCounter(
          "kspan_receiver_pid_claims_refused_total",
          "Resources whose process.pid is not their sender: never enrolled, by reason.",
          {{"reason", "not_in_sender_namespace"}})),
      refused_sender_unknown_(metrics.GetCounter(
          "kspan_receiver_pid_claims_refused_total",
          "Resources whose process.pid is not their sender: never enrolled, by reason.",
          {{"reason", "sender_unknown"}})) {}

void SenderIdentity::SetServerPorts(int grpc_port, int http_port) {
  grpc_port_ = grpc_port;
  http_port_ = http_port;
}

std::optional<std::uint32_t> SenderIdentity::OwnerOf(const ReceiverPeer& peer) {
  const int server_port =
      peer.transport == ReceiverTransport::kGrpc ? grpc_port_.load() : http_port_.load();
  if (peer.address.empty() || peer.port == 0 || server_port <= 0) {
    unknown_.Add();
    return std::nullopt;
  }
  const auto sport = static_cast<std::uint16_t>(server_port);
  if (kernel_owner_) {
    // Written when the connection was established, so always current: a
    // port reused by another process is another entry.
    if (auto pid = kernel_owner_(peer, sport)) {
      by_kernel_.Add();
      return pid;
    }
  }
  const std::string key = absl::StrCat(peer.address, "|", peer.port, "|", sport);
  std::optional<std::uint32_t> owner;
  bool cached = false;
  {
    std::lock_guard lock(mu_);
    if (auto it = scanned_.find(key); it != scanned_.end()) {
      owner = it->second;
      cached = true;
    }
  }
  // A cached owner that has exited left its port to whoever comes next.
  if (cached && owner && access(absl::StrCat(proc_root_, "/", *owner).c_str(), F_OK) != 0) {
    cached = false;
  }
  if (!cached) {
    {
      // A scan reads every process's fd table: bounded per second, so that
      // connections the kernel did not record (TCP capture off, a proxy)
      // cannot keep the receiver's threads scanning.
      std::lock_guard lock(mu_);
      const auto now = std::chrono::steady_clock::now();
      if (now - scan_window_ >= std::chrono::seconds(1)) {
        scan_window_ = now;
        scans_in_window_ = 0;
      }
      if (scans_in_window_ >= kMaxScansPerSecond) {
        scans_limited_.Add();
        unknown_.Add();
        return std::nullopt;
      }
      ++scans_in_window_;
    }
    owner = PidOfTcpClient(peer.address, peer.port, sport, std::nullopt, proc_root_);
    std::lock_guard lock(mu_);
    if (scanned_.size() >= kMaxScannedConnections) scanned_.clear();
    scanned_[key] = owner;
  }
  (owner ? by_proc_ : unknown_).Add();
  return owner;
}

SenderAttribution SenderIdentity::Attribute(const std::vector<Span>& spans, const ReceiverPeer& peer) {
  SenderAttribution out;
  out.sender = OwnerOf(peer);
  const Resource* last = nullptr;
  std::set<const Resource*> done;
  for (const Span& s : spans) {
    const Resource* r = s.resource.get();
    if (r == last) continue;
    last = r;
    if (!done.insert(r).second) continue;
    const auto claim = r != nullptr ? ClaimedPid(*r) : std::nullopt;
    if (!out.sender) {
      refused_sender_unknown_.Add();
      continue;
    }
    std::optional<std::uint32_t> pid;
    if (!claim) {
      pid = out.sender;
    } else if (*claim > 0 && *claim <= UINT32_MAX) {
      pid = pids_.HostPid(*out.sender, static_cast<std::uint32_t>(*claim));
    }
    if (!pid) {
      refused_not_in_namespace_.Add();
      continue;
    }
    out.resource_pids.emplace_back(r, *pid);
    if (*pid != *out.sender) {
      refused_other_process_.Add();
      continue;
    }
    claims_own_.Add();
    out.sender_sent_own_spans = true;
    if (r != nullptr && out.own_service_name.empty()) {
      if (const auto* v = FindAttribute(r->attributes, "service.name")) {
        if (const auto* name = std::get_if<std::string>(v)) {
          out.own_service_name = name->substr(0, kMaxServiceName);
        }
      }
    }
  }
  return out;
}

}  // namespace kspan
