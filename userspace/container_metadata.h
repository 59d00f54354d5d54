// Names for a container (container.name, container.image.name, k8s.namespace.name,
// k8s.pod.name, k8s.container.name) from local, read-only, node-side files:
// no cluster credentials, no runtime socket, no command run.
//
// The container id comes from the kernel (cgroup_path.h); the files only
// name it. Sources are tried in order and each fills the fields still empty:
//   kubelet-logs        /var/log/containers, /var/log/pods (names of the kubelet's log files)
//   containerd-oci      /run/containerd/io.containerd.runtime.v2.task/<ns>/<id>/config.json
//   crio-oci            /run/containers/storage/<driver>-containers/<id>/userdata/config.json
//   docker              /var/lib/docker/containers/<id>/config.v2.json
//   containers-storage  /var/lib/containers/storage/<driver>-containers/containers.json
//                       (Podman, Buildah, CRI-O), and volatile-containers.json
// All under Options::host_root (a DaemonSet mounts the node's "/" there).
//
// Answers are cached per container id (bounded, least recently used first
// out): a miss is retried after retry_unnamed (a container's files appear
// after it starts), an answer is re-read after refresh (a rename), and
// Sweep() drops containers whose cgroup is gone or that nobody asked for in a
// long time. Thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "exporter/self_metrics.h"
#include "userspace/cgroup_path.h"
#include "userspace/host_files.h"

namespace kspan {

struct ContainerNames {
  std::string container_name;  // the runtime's name ("web-1", "k8s_app_pod_ns_uid_0")
  std::string image_name;      // as the container was asked for ("nginx:1.25")
  std::string k8s_namespace;
  std::string k8s_pod_name;
  std::string k8s_container_name;  // empty for a pod's sandbox (pause) container
  // What the answering files say of the runtime (containerd's task state,
  // Docker's store, ...), for a cgroup that does not name it; kNone when the
  // files do not say.
  ContainerRuntime runtime = ContainerRuntime::kNone;
  // Which sources answered, in order, "+"-joined ("kubelet-logs+containerd-oci"),
  // for debugging; empty when none did.
  std::string source;

  bool empty() const {
    return container_name.empty() && image_name.empty() && k8s_namespace.empty() &&
           k8s_pod_name.empty() && k8s_container_name.empty();
  }
};

// Bounds every source reads within.
struct SourceLimits {
  std::size_t max_file_bytes = 1 << 20;    // one config.json / config.v2.json
  std::size_t max_index_bytes = 64 << 20;  // all containers.json files together
  std::size_t max_dir_entries = 65536;     // one directory listing
};

// One place that names containers. Find() is called from several threads at
// once and must not throw.
class ContainerNameSource {
 public:
  virtual ~ContainerNameSource() = default;
  // The `source` label of kspan_container_metadata_lookups_total.
  virtual std::string_view name() const = 0;
  // The names this source knows for `id` (some fields may stay empty);
  // nullopt when it knows nothing of it; an error when its files exist but
  // cannot be read or parsed (malformed JSON, over a bound, a symlink).
  virtual absl::StatusOr<std::optional<ContainerNames>> Find(const CgroupIdentity& id) = 0;
};

// 12 to 64 lowercase hex digits: safe to put in a path.
bool IsContainerIdForPath(std::string_view id);

class ContainerMetadata {
 public:
  struct Options {
    std::string host_root = "/";  // a DaemonSet mounts the node's files under e.g. /host
    std::size_t max_entries = 4096;
    std::chrono::seconds retry_unnamed{5};
    std::chrono::seconds refresh{300};
    // Sweep() drops an entry nobody looked up for this long.
    std::chrono::seconds unused_ttl{3600};
    std::size_t max_file_bytes = 1 << 20;
    std::size_t max_index_bytes = 64 << 20;
    std::size_t max_dir_entries = 65536;
  };
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  using Sources = std::vector<std::unique_ptr<ContainerNameSource>>;
  // Builds the sources over this object's view of host_root.
  using SourceFactory = std::function<Sources(const HostFiles&, const SourceLimits&)>;

  // The default sources (DefaultContainerNameSources), in the order above.
  // `metrics` may be null.
  explicit ContainerMetadata(Options options, MetricsRegistry* metrics = nullptr, Clock clock = {});
  // Other sources (tests, or a caller that wants fewer).
  ContainerMetadata(Options options, const SourceFactory& make_sources,
                    MetricsRegistry* metrics = nullptr, Clock clock = {});
  ~ContainerMetadata();
  ContainerMetadata(const ContainerMetadata&) = delete;
  ContainerMetadata& operator=(const ContainerMetadata&) = delete;

  // Empty names for a process outside any container and pod. A container in
  // a user's delegated cgroup subtree gets none either: its id is that
  // user's claim, and the node's runtime files describe root's containers.
  ContainerNames Lookup(const CgroupIdentity& id);
  // Drops entries whose cgroup directory is gone from
  // <host_root>/sys/fs/cgroup (v2, the hybrid "unified" tree or any v1
  // hierarchy), and entries unused for unused_ttl.
  void Sweep();
  std::size_t size() const;

  const HostFiles& files() const { return *files_; }

 private:
  struct Entry {
    ContainerNames names;
    bool found = false;
    std::chrono::steady_clock::time_point resolved;
    std::chrono::steady_clock::time_point last_used;
    std::string cgroup_path;
    std::list<std::string>::iterator lru;
  };

  ContainerNames Resolve(const CgroupIdentity& id);
  void Count(std::string_view source, std::string_view result);

  Options options_;
  std::unique_ptr<HostFiles> files_;
  Sources sources_;
  MetricsRegistry* metrics_;
  Clock clock_;

  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> lru_;  // most recently used first
};

}  // namespace kspan
