#include "userspace/process_resources.h"

#include <limits.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace kspan {
namespace {

std::string ReadLink(const std::string& path) {
  char buf[PATH_MAX];
  ssize_t n = readlink(path.c_str(), buf, sizeof(buf) - 1);
  if (n <= 0) return {};
  std::string s(buf, static_cast<std::size_t>(n));
  // A replaced binary reads "/usr/bin/foo (deleted)": keep the path.
  constexpr std::string_view kDeleted = " (deleted)";
  if (s.size() > kDeleted.size() && s.ends_with(kDeleted)) s.resize(s.size() - kDeleted.size());
  return s;
}

std::string HostName() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

}  // namespace

ProcessResources::ProcessResources() : ProcessResources(Options{}) {}

ProcessResources::ProcessResources(Options options)
    : options_(std::move(options)),
      host_name_(options_.host_name.empty() ? HostName() : options_.host_name) {}

std::shared_ptr<const Resource> ProcessResources::Build(std::uint32_t pid, std::string_view comm,
                                                        std::string* exe_path) const {
  *exe_path = ReadLink(absl::StrCat(options_.proc_root, "/", pid, "/exe"));
  std::string exe_name;
  if (!exe_path->empty()) {
    auto slash = exe_path->rfind('/');
    exe_name = slash == std::string::npos ? *exe_path : exe_path->substr(slash + 1);
  }
  auto r = std::make_shared<Resource>();
  r->attributes.push_back({"service.name", exe_name.empty() ? std::string(comm) : exe_name});
  r->attributes.push_back({"process.pid", static_cast<std::int64_t>(pid)});
  if (!exe_path->empty()) {
    r->attributes.push_back({"process.executable.name", exe_name});
    r->attributes.push_back({"process.executable.path", *exe_path});
  } else {
    r->attributes.push_back({"process.executable.name", std::string(comm)});
  }
  r->attributes.push_back({"host.name", host_name_});
  return r;
}

std::shared_ptr<const Resource> ProcessResources::For(std::uint32_t pid, std::string_view comm) {
  if (pid == 0) {
    // Work no process owns (a connection nobody accepted): the host's.
    if (!kernel_) {
      auto r = std::make_shared<Resource>();
      r->attributes.push_back({"service.name", std::string("kernel")});
      r->attributes.push_back({"host.name", host_name_});
      kernel_ = std::move(r);
    }
    return kernel_;
  }
  const auto now = std::chrono::steady_clock::now();
  auto it = cache_.find(pid);
  if (it != cache_.end() && now - it->second.built < options_.ttl) {
    return it->second.resource;
  }
  if (cache_.size() >= options_.max_entries) {
    // Drop expired entries; if all are fresh, start over. Both are cheap
    // relative to how rarely a host has this many distinct live processes.
    std::erase_if(cache_, [&](const auto& kv) { return now - kv.second.built >= options_.ttl; });
    if (cache_.size() >= options_.max_entries) cache_.clear();
  }
  std::string exe_path;
  auto resource = Build(pid, comm, &exe_path);
  if (it != cache_.end() && exe_path.empty()) {
    // The process is gone since: keep what we knew of it.
    it->second.built = now;
    return it->second.resource;
  }
  cache_[pid] = Entry{resource, exe_path, now};
  return resource;
}

}  // namespace kspan
