#include "userspace/pid_namespace.h"

#include <dirent.h>

#include <charconv>

#include "absl/strings/str_cat.h"
#include "userspace/proc_files.h"

namespace kspan {
namespace {

using namespace std::chrono_literals;

// A hit is trusted this long before the scan is repeated (a pid freed and
// reused within it is caught by re-checking the hit's NSpid).
constexpr auto kFoundLife = 10s;
constexpr std::size_t kMaxFound = 4096;
constexpr std::size_t kMaxStatusBytes = 16 << 10;

}  // namespace

std::vector<std::uint32_t> ParseNsPid(std::string_view status) {
  constexpr std::string_view kKey = "NSpid:";
  std::size_t at = status.starts_with(kKey) ? 0 : status.find("\nNSpid:");
  if (at == std::string_view::npos) return {};
  if (at != 0) ++at;
  std::string_view line = status.substr(at + kKey.size());
  line = line.substr(0, line.find('\n'));
  std::vector<std::uint32_t> pids;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    if (i == line.size()) break;
    std::uint32_t v = 0;
    auto [end, ec] = std::from_chars(line.data() + i, line.data() + line.size(), v);
    if (ec != std::errc() || v == 0) return {};
    pids.push_back(v);
    // pid namespaces nest at most 32 deep (MAX_PID_NS_LEVEL).
    if (pids.size() > 33) return {};
    i = static_cast<std::size_t>(end - line.data());
    if (i < line.size() && line[i] != ' ' && line[i] != '\t') return {};
  }
  return pids;
}

std::optional<std::uint64_t> PidNamespaceInode(const std::string& proc_root, std::uint32_t pid) {
  const std::string link = ReadLinkPath(absl::StrCat(proc_root, "/", pid, "/ns/pid"));
  constexpr std::string_view kPrefix = "pid:[";
  if (!link.starts_with(kPrefix) || !link.ends_with("]")) return std::nullopt;
  std::uint64_t inode = 0;
  const char* first = link.data() + kPrefix.size();
  const char* last = link.data() + link.size() - 1;
  auto [end, ec] = std::from_chars(first, last, inode);
  if (ec != std::errc() || end != last) return std::nullopt;
  return inode;
}

PidTranslator::PidTranslator(std::string proc_root, SteadyClock now)
    : proc_root_(std::move(proc_root)), now_(std::move(now)) {}

std::optional<std::uint64_t> PidTranslator::OwnNamespace() {
  std::call_once(own_ns_once_, [this] {
    // "self" resolves through the proc mount's own view; a fake proc root
    // (tests) may have none, and then no namespace is kspan's.
    const std::string link = ReadLinkPath(proc_root_ + "/self");
    std::uint32_t self = 0;
    if (!link.empty() && std::from_chars(link.data(), link.data() + link.size(), self).ec == std::errc()) {
      own_ns_ = PidNamespaceInode(proc_root_, self);
    }
  });
  return own_ns_;
}

std::optional<PidTranslator::InnerPid> PidTranslator::Inner(std::uint32_t host_pid) const {
  auto status = ReadBoundedFile(absl::StrCat(proc_root_, "/", host_pid, "/status"), kMaxStatusBytes);
  if (!status) return std::nullopt;
  const auto nspid = ParseNsPid(*status);
  auto ns = PidNamespaceInode(proc_root_, host_pid);
  if (nspid.empty() || !ns) return std::nullopt;
  return InnerPid{nspid.back(), *ns};
}

std::optional<std::uint32_t> PidTranslator::Scan(std::uint64_t ns, std::uint32_t claimed) const {
  DIR* d = opendir(proc_root_.c_str());
  if (d == nullptr) return std::nullopt;
  std::optional<std::uint32_t> out;
  while (dirent* e = readdir(d)) {
    std::uint32_t pid = 0;
    const std::string_view name(e->d_name);
    auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), pid);
    if (ec != std::errc() || end != name.data() + name.size() || pid == 0) continue;
    // The namespace first (one readlink), the status only for its members.
    if (PidNamespaceInode(proc_root_, pid) != ns) continue;
    if (auto inner = Inner(pid); inner && inner->ns == ns && inner->pid == claimed) {
      out = pid;
      break;
    }
  }
  closedir(d);
  return out;
}

std::optional<std::uint32_t> PidTranslator::HostPid(std::uint32_t sender, std::uint32_t claimed) {
  if (sender == 0 || claimed == 0) return std::nullopt;
  const auto me = Inner(sender);
  if (!me) return std::nullopt;
  if (me->pid == claimed) return sender;
  if (const auto own = OwnNamespace(); own && me->ns == *own) {
    // kspan's own namespace: the claim is a host pid already, and every
    // process of the host (those in containers too) has one.
    if (Inner(claimed)) return claimed;
    return std::nullopt;
  }
  const auto key = std::make_pair(me->ns, claimed);
  const auto now = now_();
  {
    std::lock_guard lock(mu_);
    if (auto it = found_.find(key); it != found_.end() && now - it->second.at < kFoundLife) {
      const std::uint32_t pid = it->second.host_pid;
      auto again = Inner(pid);
      if (again && again->ns == me->ns && again->pid == claimed) return pid;
      found_.erase(it);
    }
  }
  auto pid = Scan(me->ns, claimed);
  if (!pid) return std::nullopt;
  std::lock_guard lock(mu_);
  if (found_.size() >= kMaxFound) {
    std::erase_if(found_, [&](const auto& kv) { return now - kv.second.at >= kFoundLife; });
    if (found_.size() >= kMaxFound) found_.clear();
  }
  found_[key] = Found{*pid, now};
  return pid;
}

}  // namespace kspan
