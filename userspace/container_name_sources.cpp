#include "userspace/container_name_sources.h"

#include <algorithm>
#include <exception>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "userspace/split_view.h"

namespace kspan {
namespace {

using Json = nlohmann::json;

// Deeper than any runtime writes (OCI config.json nests some 6 levels), low
// enough that a hostile file cannot make the parser build a tower.
constexpr int kMaxJsonDepth = 32;
constexpr std::size_t kMaxNameBytes = 253;   // a DNS subdomain
constexpr std::size_t kMaxImageBytes = 512;  // registry/path:tag@sha256:...
constexpr std::size_t kMaxMetadataBytes = 64 * 1024;
constexpr std::size_t kMaxNamespaces = 256;
constexpr std::size_t kMaxStorageDrivers = 64;

// A value from a file, kept only if it is short and printable: it ends up in
// span attributes and in logs.
std::string Clean(std::string_view s, std::size_t max_bytes) {
  if (s.size() > max_bytes) return {};
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return {};
  }
  return std::string(s);
}

// Pod, namespace and container names: DNS labels and subdomains.
bool IsDnsName(std::string_view s) {
  if (s.empty() || s.size() > kMaxNameBytes) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) return false;
  }
  return true;
}

// A directory name we are willing to descend into (containerd namespaces,
// storage driver directories): no separators, no dot-dirs.
bool IsPlainDirName(std::string_view s) {
  if (s.empty() || s.size() > 255 || s == "." || s == "..") return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
          c == '_' || c == '.')) {
      return false;
    }
  }
  return true;
}

// Nesting depth, counted outside strings, before anything is allocated.
bool DepthWithin(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

absl::StatusOr<Json> ParseJson(std::string_view text, std::string_view what) {
  if (!DepthWithin(text, kMaxJsonDepth)) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(what), ": JSON nested deeper than ", kMaxJsonDepth));
  }
  // nlohmann reports syntax errors as a discarded value when exceptions are
  // off, but can still throw (std::bad_alloc): none may leave a source.
  try {
    Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      return absl::InvalidArgumentError(absl::StrCat(std::string(what), ": malformed JSON"));
    }
    return j;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(what), ": ", e.what()));
  }
}

// obj[key] when obj is an object and the value a string, else "".
std::string_view StringAt(const Json& obj, const char* key) {
  if (!obj.is_object()) return {};
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return {};
  return it->get_ref<const std::string&>();
}

std::string_view FirstOf(const Json& obj, std::initializer_list<const char*> keys) {
  for (const char* key : keys) {
    std::string_view v = StringAt(obj, key);
    if (!v.empty()) return v;
  }
  return {};
}

// Names from an OCI runtime spec's annotations, as containerd's CRI plugin
// (io.kubernetes.cri.*), CRI-O (the kubelet's io.kubernetes.* labels and
// io.kubernetes.cri-o.*) and nerdctl (nerdctl/*) write them.
ContainerNames FromOciAnnotations(const Json& spec) {
  ContainerNames names;
  auto it = spec.is_object() ? spec.find("annotations") : spec.end();
  if (it == spec.end() || !it->is_object()) return names;
  const Json& a = *it;
  const bool sandbox = FirstOf(a, {"io.kubernetes.cri.container-type",
                                   "io.kubernetes.cri-o.ContainerType"}) == "sandbox";
  if (!sandbox) {
    std::string_view container =
        FirstOf(a, {"io.kubernetes.cri.container-name", "io.kubernetes.container.name"});
    if (IsDnsName(container)) names.k8s_container_name = std::string(container);
  }
  std::string_view pod = FirstOf(a, {"io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"});
  if (IsDnsName(pod)) names.k8s_pod_name = std::string(pod);
  std::string_view ns =
      FirstOf(a, {"io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"});
  if (IsDnsName(ns)) names.k8s_namespace = std::string(ns);
  names.image_name =
      Clean(FirstOf(a, {"io.kubernetes.cri.image-name", "io.kubernetes.cri-o.ImageName"}),
            kMaxImageBytes);
  names.container_name = Clean(StringAt(a, "nerdctl/name"), kMaxNameBytes);
  return names;
}

// Reads and parses one JSON file of a source; nullopt when it is absent.
absl::StatusOr<std::optional<Json>> ReadJsonFile(const HostFiles& files, const std::string& path,
                                                 std::size_t max_bytes) {
  auto text = files.ReadRegularFile(path, max_bytes, /*refuse_symlink=*/true);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return std::optional<Json>();
    return text.status();
  }
  auto json = ParseJson(*text, path);
  if (!json.ok()) return json.status();
  return std::optional<Json>(*std::move(json));
}

bool WantsContainerFiles(const CgroupIdentity& id) {
  return id.has_container() && IsContainerIdForPath(id.container_id);
}

// containers/storage keeps one "<driver>-containers" directory per storage
// driver (overlay, vfs, btrfs, zfs).
absl::StatusOr<std::vector<std::string>> StorageDriverDirs(const HostFiles& files,
                                                           const std::string& root) {
  auto entries = files.ListDirectory(root, kMaxStorageDrivers);
  if (!entries.ok()) {
    if (absl::IsNotFound(entries.status())) return std::vector<std::string>();
    return entries.status();
  }
  std::vector<std::string> dirs;
  for (const auto& e : *entries) {
    if (IsPlainDirName(e) && std::string_view(e).ends_with("-containers")) {
      dirs.push_back(absl::StrCat(root, "/", e));
    }
  }
  return dirs;
}

// containers.json, one SAX pass: keeps id, names[0] and the metadata string
// of each element of the top-level array, skips everything else.
class ContainersJsonHandler : public nlohmann::json_sax<Json> {
 public:
  explicit ContainersJsonHandler(ContainersStorageSource::Index* index) : index_(index) {}

  bool null() override { return Scalar(); }
  bool boolean(bool) override { return Scalar(); }
  bool number_integer(number_integer_t) override { return Scalar(); }
  bool number_unsigned(number_unsigned_t) override { return Scalar(); }
  bool number_float(number_float_t, const string_t&) override { return Scalar(); }
  bool binary(binary_t&) override { return Scalar(); }
  bool string(string_t& v) override {
    if (depth_ == 0) return false;  // the top level must be an array
    if (depth_ == 2) {
      if (key_ == "id") id_ = v;
      if (key_ == "metadata" && v.size() <= kMaxMetadataBytes) metadata_ = v;
    } else if (depth_ == 3 && in_names_ && first_name_.empty()) {
      first_name_ = v;
    }
    return true;
  }
  bool start_object(std::size_t) override {
    if (depth_ == 0) return false;
    if (++depth_ > kMaxJsonDepth) return false;
    if (depth_ == 2) {
      id_.clear();
      first_name_.clear();
      metadata_.clear();
    }
    return true;
  }
  bool key(string_t& k) override {
    if (depth_ == 2) key_ = k;
    return true;
  }
  bool end_object() override {
    if (depth_ == 2) Finish();
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override {
    if (++depth_ > kMaxJsonDepth) return false;
    if (depth_ == 1) saw_array_ = true;
    if (depth_ == 3 && key_ == "names") in_names_ = true;
    return true;
  }
  bool end_array() override {
    if (depth_ == 3) in_names_ = false;
    --depth_;
    return true;
  }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& e) override {
    error_ = absl::StrCat("at byte ", position, ": ", e.what());
    return false;
  }

  bool saw_array() const { return saw_array_; }
  const std::string& error() const { return error_; }

 private:
  bool Scalar() { return depth_ > 0; }

  void Finish() {
    if (!IsContainerIdForPath(id_)) return;
    ContainersStorageSource::Named named;
    named.name = Clean(first_name_, kMaxNameBytes);
    if (!metadata_.empty()) {
      // "metadata" is itself JSON text: {"image-name": ..., "name": ...}.
      auto meta = ParseJson(metadata_, "containers.json metadata");
      if (meta.ok()) {
        if (named.name.empty()) named.name = Clean(StringAt(*meta, "name"), kMaxNameBytes);
        named.image = Clean(StringAt(*meta, "image-name"), kMaxImageBytes);
      }
    }
    (*index_)[id_] = std::move(named);
  }

  ContainersStorageSource::Index* index_;
  int depth_ = 0;
  bool saw_array_ = false;
  bool in_names_ = false;
  std::string key_;
  std::string id_;
  std::string first_name_;
  std::string metadata_;
  std::string error_;
};

}  // namespace

bool IsContainerIdForPath(std::string_view id) {
  if (id.size() < 12 || id.size() > 64) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

ContainerMetadata::Sources DefaultContainerNameSources(const HostFiles& files,
                                                       const SourceLimits& limits) {
  ContainerMetadata::Sources sources;
  sources.push_back(std::make_unique<KubeletLogSource>(files, limits));
  sources.push_back(std::make_unique<ContainerdBundleSource>(files, limits));
  sources.push_back(std::make_unique<CrioBundleSource>(files, limits));
  sources.push_back(std::make_unique<DockerSource>(files, limits));
  sources.push_back(std::make_unique<ContainersStorageSource>(files, limits));
  return sources;
}

absl::StatusOr<std::optional<ContainerNames>> KubeletLogSource::Find(const CgroupIdentity& id) {
  absl::Status error;
  if (WantsContainerFiles(id)) {
    auto entries = files_.ListDirectory("var/log/containers", limits_.max_dir_entries);
    if (entries.ok()) {
      const std::string suffix = absl::StrCat("-", id.container_id, ".log");
      for (const auto& e : *entries) {
        std::string_view entry = e;
        if (!entry.ends_with(suffix)) continue;
        // The kubelet cuts a name over 255 bytes, losing the id's end; such
        // a container is named through its pod below.
        std::vector<std::string_view> parts =
            SplitView(entry.substr(0, entry.size() - suffix.size()), '_');
        if (parts.size() != 3 || !IsDnsName(parts[0]) || !IsDnsName(parts[1]) ||
            !IsDnsName(parts[2])) {
          continue;
        }
        ContainerNames names;
        names.k8s_pod_name = std::string(parts[0]);
        names.k8s_namespace = std::string(parts[1]);
        names.k8s_container_name = std::string(parts[2]);
        return std::optional<ContainerNames>(std::move(names));
      }
    } else if (!absl::IsNotFound(entries.status())) {
      error = entries.status();
    }
  }
  if (id.in_pod()) {
    auto entries = files_.ListDirectory("var/log/pods", limits_.max_dir_entries);
    if (entries.ok()) {
      for (const auto& e : *entries) {
        std::vector<std::string_view> parts = SplitView(e, '_');
        if (parts.size() != 3 || parts[2] != id.pod_uid || !IsDnsName(parts[0]) ||
            !IsDnsName(parts[1])) {
          continue;
        }
        ContainerNames names;
        names.k8s_namespace = std::string(parts[0]);
        names.k8s_pod_name = std::string(parts[1]);
        return std::optional<ContainerNames>(std::move(names));
      }
    } else if (!absl::IsNotFound(entries.status())) {
      error = entries.status();
    }
  }
  if (!error.ok()) return error;
  return std::optional<ContainerNames>();
}

absl::StatusOr<std::optional<ContainerNames>> ContainerdBundleSource::Find(
    const CgroupIdentity& id) {
  if (!WantsContainerFiles(id)) return std::optional<ContainerNames>();
  absl::Status error;
  for (const char* root : {"run/containerd/io.containerd.runtime.v2.task",
                           "run/k3s/containerd/io.containerd.runtime.v2.task"}) {
    auto namespaces = files_.ListDirectory(root, kMaxNamespaces);
    if (!namespaces.ok()) {
      if (!absl::IsNotFound(namespaces.status())) error = namespaces.status();
      continue;
    }
    for (const auto& ns : *namespaces) {
      if (!IsPlainDirName(ns)) continue;
      const std::string path = absl::StrCat(root, "/", ns, "/", id.container_id, "/config.json");
      auto spec = ReadJsonFile(files_, path, limits_.max_file_bytes);
      if (!spec.ok()) {
        error = spec.status();
        continue;
      }
      if (!spec->has_value()) continue;
      ContainerNames names = FromOciAnnotations(**spec);
      // Docker (since 20.10) runs its containers through containerd's "moby"
      // namespace.
      names.runtime = ns == "moby" ? ContainerRuntime::kDocker : ContainerRuntime::kContainerd;
      return std::optional<ContainerNames>(std::move(names));
    }
  }
  if (!error.ok()) return error;
  return std::optional<ContainerNames>();
}

absl::StatusOr<std::optional<ContainerNames>> CrioBundleSource::Find(const CgroupIdentity& id) {
  if (!WantsContainerFiles(id)) return std::optional<ContainerNames>();
  auto dirs = StorageDriverDirs(files_, "run/containers/storage");
  if (!dirs.ok()) return dirs.status();
  absl::Status error;
  for (const auto& dir : *dirs) {
    const std::string path = absl::StrCat(dir, "/", id.container_id, "/userdata/config.json");
    auto spec = ReadJsonFile(files_, path, limits_.max_file_bytes);
    if (!spec.ok()) {
      error = spec.status();
      continue;
    }
    if (!spec->has_value()) continue;
    ContainerNames names = FromOciAnnotations(**spec);
    // Podman keeps its bundles in the same run root.
    const Json& spec_json = **spec;
    auto annotations = spec_json.is_object() ? spec_json.find("annotations") : spec_json.end();
    const bool libpod = annotations != spec_json.end() &&
                        StringAt(*annotations, "io.container.manager") == "libpod";
    names.runtime = libpod ? ContainerRuntime::kPodman : ContainerRuntime::kCrio;
    return std::optional<ContainerNames>(std::move(names));
  }
  if (!error.ok()) return error;
  return std::optional<ContainerNames>();
}

absl::StatusOr<std::optional<ContainerNames>> DockerSource::Find(const CgroupIdentity& id) {
  if (!WantsContainerFiles(id)) return std::optional<ContainerNames>();
  const std::string path =
      absl::StrCat("var/lib/docker/containers/", id.container_id, "/config.v2.json");
  auto config = ReadJsonFile(files_, path, limits_.max_file_bytes);
  if (!config.ok()) return config.status();
  if (!config->has_value()) return std::optional<ContainerNames>();
  const Json& c = **config;
  ContainerNames names;
  names.runtime = ContainerRuntime::kDocker;
  std::string_view name = StringAt(c, "Name");  // "/web-1"
  if (name.starts_with('/')) name.remove_prefix(1);
  names.container_name = Clean(name, kMaxNameBytes);
  auto cfg = c.is_object() ? c.find("Config") : c.end();
  if (cfg != c.end() && cfg->is_object()) {
    names.image_name = Clean(StringAt(*cfg, "Image"), kMaxImageBytes);
    auto labels = cfg->find("Labels");
    if (labels != cfg->end() && labels->is_object()) {
      // The kubelet's labels on containers made through cri-dockerd.
      std::string_view pod = StringAt(*labels, "io.kubernetes.pod.name");
      std::string_view ns = StringAt(*labels, "io.kubernetes.pod.namespace");
      std::string_view container = StringAt(*labels, "io.kubernetes.container.name");
      if (IsDnsName(pod)) names.k8s_pod_name = std::string(pod);
      if (IsDnsName(ns)) names.k8s_namespace = std::string(ns);
      // The sandbox is labelled "POD", not a DNS name: left empty.
      if (IsDnsName(container)) names.k8s_container_name = std::string(container);
    }
  }
  return std::optional<ContainerNames>(std::move(names));
}

absl::StatusOr<ContainersStorageSource::Index> ContainersStorageSource::ParseContainersJson(
    std::string_view text) {
  Index index;
  ContainersJsonHandler handler(&index);
  bool ok = false;
  try {
    ok = Json::sax_parse(text.begin(), text.end(), &handler);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("containers.json: ", e.what()));
  }
  if (!ok || !handler.saw_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat("containers.json: ",
                     handler.error().empty() ? "not an array of containers" : handler.error()));
  }
  return index;
}

absl::Status ContainersStorageSource::Refresh(const std::string& path) {
  auto stamp = files_.Stamp(path, /*refuse_symlink=*/true);
  if (!stamp.ok()) {
    indexed_.erase(path);
    return stamp.status();
  }
  auto it = indexed_.find(path);
  if (it != indexed_.end() && it->second.stamp == *stamp) return it->second.status;
  // The budget for this file: what the other files' text left of it.
  std::size_t others = 0;
  for (const auto& [p, f] : indexed_) {
    if (p != path) others += f.stamp.size;
  }
  const std::size_t budget =
      limits_.max_index_bytes > others ? limits_.max_index_bytes - others : 0;
  IndexedFile file;
  file.stamp = *stamp;
  auto text = files_.ReadRegularFile(path, budget, /*refuse_symlink=*/true);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) {
      indexed_.erase(path);
      return text.status();
    }
    file.status = text.status();
  } else {
    auto index = ParseContainersJson(*text);
    if (index.ok()) {
      file.index = *std::move(index);
    } else {
      file.status = absl::InvalidArgumentError(absl::StrCat(path, ": ", index.status().message()));
    }
  }
  // A file that failed is remembered with its stamp, so it is not read again
  // until it changes.
  absl::Status status = file.status;
  indexed_[path] = std::move(file);
  return status;
}

absl::StatusOr<std::optional<ContainerNames>> ContainersStorageSource::Find(
    const CgroupIdentity& id) {
  if (!WantsContainerFiles(id)) return std::optional<ContainerNames>();
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status error;
  // The graph root holds containers.json and, for `podman run --rm`,
  // volatile-containers.json; with a transient store both are in the run root.
  std::vector<std::string> paths;
  for (const char* root : {"var/lib/containers/storage", "run/containers/storage"}) {
    auto dirs = StorageDriverDirs(files_, root);
    if (!dirs.ok()) {
      error = dirs.status();
      continue;
    }
    for (const auto& dir : *dirs) {
      for (const char* file : {"containers.json", "volatile-containers.json"}) {
        paths.push_back(absl::StrCat(dir, "/", file));
      }
    }
  }
  // Forget the indexes of files whose directory went away.
  std::erase_if(indexed_, [&](const auto& kv) {
    return std::find(paths.begin(), paths.end(), kv.first) == paths.end();
  });
  for (const auto& path : paths) {
    absl::Status status = Refresh(path);
    if (!status.ok()) {
      if (!absl::IsNotFound(status)) error = status;
      continue;
    }
    const Index& index = indexed_[path].index;
    auto it = index.find(id.container_id);
    if (it == index.end()) continue;
    ContainerNames names;
    names.container_name = it->second.name;
    names.image_name = it->second.image;
    return std::optional<ContainerNames>(std::move(names));
  }
  if (!error.ok()) return error;
  return std::optional<ContainerNames>();
}

}  // namespace kspan
