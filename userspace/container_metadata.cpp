#include "userspace/container_metadata.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "exporter/terminal_text.h"
#include "spdlog/spdlog.h"
#include "userspace/container_name_sources.h"

namespace kspan {
namespace {

constexpr char kLookupsMetric[] = "kspan_container_metadata_lookups_total";
constexpr char kLookupsHelp[] =
    "Container name look-ups in node files, by source and result (found, none, error)";
constexpr char kEntriesMetric[] = "kspan_container_metadata_cache_entries";
// v1 hierarchies are directories of <root>/sys/fs/cgroup; a mount of many
// controllers appears once per name (cpu, cpuacct, "cpu,cpuacct").
constexpr std::size_t kMaxHierarchies = 64;

// Fills the fields of `into` that are still empty.
void Merge(const ContainerNames& from, std::string_view source, ContainerNames* into) {
  auto fill = [](std::string* field, const std::string& value) {
    if (field->empty()) *field = value;
  };
  fill(&into->container_name, from.container_name);
  fill(&into->image_name, from.image_name);
  fill(&into->k8s_namespace, from.k8s_namespace);
  fill(&into->k8s_pod_name, from.k8s_pod_name);
  fill(&into->k8s_container_name, from.k8s_container_name);
  if (into->runtime == ContainerRuntime::kNone) into->runtime = from.runtime;
  into->source = into->source.empty() ? std::string(source)
                                      : absl::StrCat(into->source, "+", std::string(source));
}

bool Complete(const ContainerNames& n) {
  return !n.container_name.empty() && !n.image_name.empty() && !n.k8s_namespace.empty() &&
         !n.k8s_pod_name.empty() && !n.k8s_container_name.empty();
}

// Where the cgroup hierarchies of the node are mounted, relative to the root:
// the v2 tree itself, the hybrid "unified" tree, and each v1 hierarchy.
std::vector<std::string> CgroupHierarchies(const HostFiles& files) {
  std::vector<std::string> roots;
  if (files.Exists("sys/fs/cgroup/cgroup.controllers")) roots.emplace_back("sys/fs/cgroup");
  if (files.Exists("sys/fs/cgroup/unified/cgroup.controllers")) {
    roots.emplace_back("sys/fs/cgroup/unified");
  }
  auto entries = files.ListDirectory("sys/fs/cgroup", 4096);
  if (entries.ok()) {
    for (const auto& e : *entries) {
      if (roots.size() == kMaxHierarchies) break;
      // Only a v1 hierarchy's root has "tasks" (a v2 child cgroup has not).
      const std::string dir = absl::StrCat("sys/fs/cgroup/", e);
      if (files.Exists(absl::StrCat(dir, "/tasks"))) roots.push_back(dir);
    }
  }
  return roots;
}

}  // namespace

ContainerMetadata::ContainerMetadata(Options options, MetricsRegistry* metrics, Clock clock)
    : ContainerMetadata(std::move(options), DefaultContainerNameSources, metrics,
                        std::move(clock)) {}

ContainerMetadata::ContainerMetadata(Options options, const SourceFactory& make_sources,
                                     MetricsRegistry* metrics, Clock clock)
    : options_(std::move(options)),
      files_(std::make_unique<HostFiles>(options_.host_root)),
      metrics_(metrics),
      clock_(clock ? std::move(clock) : [] { return std::chrono::steady_clock::now(); }) {
  SourceLimits limits;
  limits.max_file_bytes = options_.max_file_bytes;
  limits.max_index_bytes = options_.max_index_bytes;
  limits.max_dir_entries = options_.max_dir_entries;
  sources_ = make_sources(*files_, limits);
  if (metrics_ != nullptr) {
    metrics_->AddCallbackGauge(
        kEntriesMetric, "Containers and pods whose names kspan holds", {},
        [this] { return static_cast<double>(size()); }, this);
  }
}

ContainerMetadata::~ContainerMetadata() {
  if (metrics_ != nullptr) metrics_->RemoveCallbacks(this);
}

void ContainerMetadata::Count(std::string_view source, std::string_view result) {
  if (metrics_ == nullptr) return;
  metrics_
      ->GetCounter(kLookupsMetric, kLookupsHelp,
                   {{"source", std::string(source)}, {"result", std::string(result)}})
      .Add();
}

ContainerNames ContainerMetadata::Resolve(const CgroupIdentity& id) {
  ContainerNames names;
  for (const auto& source : sources_) {
    auto found = source->Find(id);
    if (!found.ok()) {
      // Per container, not per event; the metric carries the count. The id
      // comes from a cgroup path and the message may quote a container's
      // files: escaped.
      spdlog::debug("container metadata: {} for {}: {}", source->name(),
                    EscapeForTerminal(id.has_container() ? id.container_id : id.pod_uid),
                    EscapeForTerminal(std::string(found.status().message())));
      Count(source->name(), "error");
      continue;
    }
    if (!found->has_value()) {
      Count(source->name(), "none");
      continue;
    }
    Count(source->name(), "found");
    Merge(**found, source->name(), &names);
    if (Complete(names)) break;
  }
  return names;
}

ContainerNames ContainerMetadata::Lookup(const CgroupIdentity& id) {
  if (id.user_delegated) return {};
  if (id.has_container() &&
      (id.runtime == ContainerRuntime::kSystemdNspawn || id.runtime == ContainerRuntime::kLxc)) {
    // The cgroup carries the machine's name itself; no file says more.
    ContainerNames names;
    names.container_name = id.container_id;
    names.source = "cgroup";
    return names;
  }
  std::string key;
  if (id.has_container() && IsContainerIdForPath(id.container_id)) {
    key = "c/" + id.container_id;
  } else if (!id.has_container() && id.in_pod()) {
    key = "p/" + id.pod_uid;
  } else {
    return {};
  }
  // Kept for Sweep() only if it is a well-formed path (the identity may not
  // come from ParseCgroupPath).
  std::string cgroup_path = ParseCgroupPath(id.cgroup_path).ok() ? id.cgroup_path : std::string();

  const auto now = clock_();
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      Entry& e = it->second;
      e.last_used = now;
      if (!cgroup_path.empty()) e.cgroup_path = cgroup_path;
      lru_.splice(lru_.begin(), lru_, e.lru);
      const auto age = now - e.resolved;
      if (e.found ? age < options_.refresh : age < options_.retry_unnamed) return e.names;
    }
  }

  // Files are read without the lock, so one slow look-up does not hold up
  // the others; two threads may resolve the same container at once.
  ContainerNames names = Resolve(id);
  const bool found = !names.source.empty();

  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    Entry& e = it->second;
    // A failed refresh keeps what was known: the files of a container that
    // is stopping go before its last processes do.
    if (found || !e.found) {
      e.names = std::move(names);
      e.found = found;
    }
    e.resolved = now;
    return e.names;
  }
  if (options_.max_entries == 0) return names;
  while (entries_.size() >= options_.max_entries && !lru_.empty()) {
    entries_.erase(lru_.back());
    lru_.pop_back();
  }
  lru_.push_front(key);
  Entry e;
  e.names = names;
  e.found = found;
  e.resolved = now;
  e.last_used = now;
  e.cgroup_path = std::move(cgroup_path);
  e.lru = lru_.begin();
  entries_.emplace(std::move(key), std::move(e));
  return names;
}

void ContainerMetadata::Sweep() {
  const auto now = clock_();
  struct Candidate {
    std::string key;
    std::string cgroup_path;
    std::chrono::steady_clock::time_point last_used;
  };
  std::vector<Candidate> candidates;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (now - it->second.last_used >= options_.unused_ttl) {
        lru_.erase(it->second.lru);
        it = entries_.erase(it);
        continue;
      }
      if (!it->second.cgroup_path.empty()) {
        candidates.push_back({it->first, it->second.cgroup_path, it->second.last_used});
      }
      ++it;
    }
  }
  if (candidates.empty()) return;
  const std::vector<std::string> hierarchies = CgroupHierarchies(*files_);
  if (hierarchies.empty()) {
    // No cgroup tree under host_root (not mounted in): existence says
    // nothing, so only unused entries go.
    spdlog::debug("container metadata: no cgroup hierarchy under {}/sys/fs/cgroup", files_->root());
    return;
  }
  std::vector<const Candidate*> gone;
  for (const auto& c : candidates) {
    bool alive = false;
    for (const auto& h : hierarchies) {
      auto is_dir = files_->IsDirectory(absl::StrCat(h, c.cgroup_path));
      // An error (EACCES, a path over PATH_MAX) proves nothing: keep.
      if (!is_dir.ok() || *is_dir) {
        alive = true;
        break;
      }
    }
    if (!alive) gone.push_back(&c);
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const Candidate* c : gone) {
    auto it = entries_.find(c->key);
    // Looked up again meanwhile (perhaps from a new cgroup): keep.
    if (it == entries_.end() || it->second.last_used != c->last_used ||
        it->second.cgroup_path != c->cgroup_path) {
      continue;
    }
    lru_.erase(it->second.lru);
    entries_.erase(it);
  }
}

std::size_t ContainerMetadata::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

}  // namespace kspan
