#include "userspace/enrollment.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "spdlog/spdlog.h"

namespace kspan {
namespace {

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

// The inode of the socket local=addr:port, remote port = server_port.
std::optional<unsigned long> SocketInode(const std::string& table, const std::string& local,
                                         std::uint16_t port, std::uint16_t server_port) {
  std::ifstream in(table);
  std::string line;
  std::getline(in, line);  // header
  char want_local[64];
  std::snprintf(want_local, sizeof(want_local), "%s:%04X", local.c_str(), port);
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string sl, loc, rem, st, queues, tr, retr, uid, timeout;
    unsigned long inode = 0;
    if (!(f >> sl >> loc >> rem >> st >> queues >> tr >> retr >> uid >> timeout >> inode)) continue;
    if (loc != want_local) continue;
    auto colon = rem.rfind(':');
    if (colon == std::string::npos) continue;
    if (std::stoul(rem.substr(colon + 1), nullptr, 16) != server_port) continue;
    return inode;
  }
  return std::nullopt;
}

bool ProcessOwnsSocket(const std::string& proc_root, std::uint32_t pid, const std::string& link) {
  const std::string dir = proc_root + "/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return false;
  bool found = false;
  char target[64];
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string path = dir + "/" + e->d_name;
    ssize_t n = readlink(path.c_str(), target, sizeof(target) - 1);
    if (n <= 0) continue;
    target[n] = 0;
    if (link == target) {
      found = true;
      break;
    }
  }
  closedir(d);
  return found;
}

}  // namespace

std::optional<std::uint32_t> PidOfTcpClient(const std::string& address, std::uint16_t port,
                                            std::uint16_t server_port,
                                            std::optional<std::uint32_t> hint,
                                            const std::string& proc_root) {
  bool v6 = false;
  std::string local = ProcNetAddress(address, &v6);
  if (local.empty()) return std::nullopt;
  auto inode = SocketInode(proc_root + (v6 ? "/net/tcp6" : "/net/tcp"), local, port, server_port);
  if (!inode && !v6) {
    // An IPv4 client of a dual-stack listener shows as ::ffff:a.b.c.d.
    auto mapped = ProcNetAddress("::ffff:" + address, &v6);
    inode = SocketInode(proc_root + "/net/tcp6", mapped, port, server_port);
  }
  if (!inode || *inode == 0) return std::nullopt;
  const std::string link = "socket:[" + std::to_string(*inode) + "]";
  if (hint && ProcessOwnsSocket(proc_root, *hint, link)) return hint;
  // Every process: a connection to kspan is looked up once (callers cache).
  DIR* d = opendir(proc_root.c_str());
  if (d == nullptr) return std::nullopt;
  std::optional<std::uint32_t> owner;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    unsigned long pid = std::strtoul(e->d_name, &end, 10);
    if (end == e->d_name || *end != 0) continue;
    if (ProcessOwnsSocket(proc_root, static_cast<std::uint32_t>(pid), link)) {
      owner = static_cast<std::uint32_t>(pid);
      break;
    }
  }
  closedir(d);
  return owner;
}

Enrollment::Enrollment(AllowFn allow, std::chrono::seconds linger, std::uint32_t self,
                       std::set<std::uint32_t> configured, MetricsRegistry& metrics,
                       SteadyClock now)
    : allow_(std::move(allow)),
      linger_(linger),
      self_(self),
      configured_(std::move(configured)),
      now_(std::move(now)),
      metrics_(metrics),
      enrolled_total_(metrics.GetCounter(
          "kspan_enrollment_joined_total",
          "Processes enrolled for full capture because they sent spans to the receiver.")),
      left_total_(metrics.GetCounter(
          "kspan_enrollment_left_total",
          "Enrolled processes removed after they stopped sending or exited.")),
      failed_total_(metrics.GetCounter("kspan_enrollment_failed_total",
                                       "Enrollments the in-kernel allow-list refused.")) {
  metrics.AddCallbackGauge(
      "kspan_enrollment_processes", "Processes enrolled by the spans they send.", {},
      [this] {
        std::lock_guard lock(mu_);
        return static_cast<double>(last_seen_.size());
      },
      this);
}

Enrollment::~Enrollment() {
  metrics_.RemoveCallbacks(this);
  std::lock_guard lock(mu_);
  for (const auto& [pid, seen] : last_seen_) {
    (void)seen;
    (void)allow_(pid, false);
  }
  last_seen_.clear();
}

void Enrollment::Seen(std::uint32_t pid) {
  if (pid == 0 || pid == self_ || configured_.contains(pid)) return;
  std::lock_guard lock(mu_);
  auto [it, inserted] = last_seen_.try_emplace(pid, now_());
  if (!inserted) {
    it->second = now_();
    return;
  }
  if (absl::Status s = allow_(pid, true); !s.ok()) {
    failed_total_.Add();
    last_seen_.erase(it);
    spdlog::warn("enrollment: cannot select process {} for capture: {}", pid, s.ToString());
    return;
  }
  enrolled_total_.Add();
  spdlog::info("enrollment: process {} sends spans: syscall and HTTP capture on", pid);
}

void Enrollment::Expire() {
  std::lock_guard lock(mu_);
  const auto now = now_();
  for (auto it = last_seen_.begin(); it != last_seen_.end();) {
    const bool gone = access(("/proc/" + std::to_string(it->first)).c_str(), F_OK) != 0;
    if (!gone && now - it->second < linger_) {
      ++it;
      continue;
    }
    (void)allow_(it->first, false);
    left_total_.Add();
    spdlog::info("enrollment: process {} {}: capture back to the default", it->first,
                 gone ? "exited" : "stopped sending spans");
    it = last_seen_.erase(it);
  }
}

std::vector<std::uint32_t> Enrollment::Enrolled() const {
  std::lock_guard lock(mu_);
  std::vector<std::uint32_t> out;
  for (const auto& [pid, seen] : last_seen_) out.push_back(pid);
  return out;
}

}  // namespace kspan
