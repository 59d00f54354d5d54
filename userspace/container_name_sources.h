// The places on a node that name a container, one class each (see
// container_metadata.h for the order and the paths). A new source is a new
// class here and one line in DefaultContainerNameSources().
//
// Every file is untrusted input: read within SourceLimits, JSON files refused
// when they are symlinks or not regular files, nesting bounded before
// parsing, every value kept only if short and printable. Ids become part of a
// path only after IsContainerIdForPath().
//
// JSON: nlohmann::json (already a dependency), with exceptions disabled at
// parse and a SAX handler for containers.json, which can hold thousands of
// containers: the handler keeps only the fields kspan needs instead of
// building the whole document, so memory stays near the index's size.
// simdjson would parse faster, but a file is parsed once per change.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "userspace/container_metadata.h"
#include "userspace/host_files.h"

namespace kspan {

ContainerMetadata::Sources DefaultContainerNameSources(const HostFiles& files,
                                                       const SourceLimits& limits);

// The kubelet's log layout: /var/log/containers/<pod>_<namespace>_<container>-<id>.log
// names a container; /var/log/pods/<namespace>_<pod>_<uid>/ names a pod
// (used when the container's own link is not there yet, or for a sandbox,
// which has no log). Pod, namespace and container names are DNS names, so
// '_' separates them unambiguously.
class KubeletLogSource : public ContainerNameSource {
 public:
  KubeletLogSource(const HostFiles& files, const SourceLimits& limits)
      : files_(files), limits_(limits) {}
  std::string_view name() const override { return "kubelet-logs"; }
  absl::StatusOr<std::optional<ContainerNames>> Find(const CgroupIdentity& id) override;

 private:
  const HostFiles& files_;
  SourceLimits limits_;
};

// containerd's OCI bundles (CRI: io.kubernetes.cri.* annotations; nerdctl:
// nerdctl/name), in every containerd namespace (k8s.io, default, moby = Docker),
// for containerd and k3s's embedded containerd.
class ContainerdBundleSource : public ContainerNameSource {
 public:
  ContainerdBundleSource(const HostFiles& files, const SourceLimits& limits)
      : files_(files), limits_(limits) {}
  std::string_view name() const override { return "containerd-oci"; }
  absl::StatusOr<std::optional<ContainerNames>> Find(const CgroupIdentity& id) override;

 private:
  const HostFiles& files_;
  SourceLimits limits_;
};

// CRI-O's (and Podman's) OCI bundles under the containers/storage run root:
// io.kubernetes.container.name, io.kubernetes.pod.name,
// io.kubernetes.pod.namespace, io.kubernetes.cri-o.ImageName.
class CrioBundleSource : public ContainerNameSource {
 public:
  CrioBundleSource(const HostFiles& files, const SourceLimits& limits)
      : files_(files), limits_(limits) {}
  std::string_view name() const override { return "crio-oci"; }
  absl::StatusOr<std::optional<ContainerNames>> Find(const CgroupIdentity& id) override;

 private:
  const HostFiles& files_;
  SourceLimits limits_;
};

// Docker's container store: "Name", "Config.Image", and the kubelet's labels
// for containers made through cri-dockerd.
class DockerSource : public ContainerNameSource {
 public:
  DockerSource(const HostFiles& files, const SourceLimits& limits)
      : files_(files), limits_(limits) {}
  std::string_view name() const override { return "docker"; }
  absl::StatusOr<std::optional<ContainerNames>> Find(const CgroupIdentity& id) override;

 private:
  const HostFiles& files_;
  SourceLimits limits_;
};

// containers/storage's container list (Podman, Buildah, CRI-O): a JSON array
// of {"id", "names", "metadata": "<JSON with name and image-name>"}. Indexed
// once per change of the file (device, inode, size, mtime); all files'
// indexes together stay within max_index_bytes (each index is smaller than
// its file, and the files are read within that bound).
class ContainersStorageSource : public ContainerNameSource {
 public:
  ContainersStorageSource(const HostFiles& files, const SourceLimits& limits)
      : files_(files), limits_(limits) {}
  std::string_view name() const override { return "containers-storage"; }
  absl::StatusOr<std::optional<ContainerNames>> Find(const CgroupIdentity& id) override;

  struct Named {
    std::string name;
    std::string image;
  };
  using Index = std::unordered_map<std::string, Named>;
  // The index of one containers.json text (exposed for tests and fuzzing).
  static absl::StatusOr<Index> ParseContainersJson(std::string_view text);

 private:
  struct IndexedFile {
    FileStamp stamp;
    absl::Status status;  // a malformed file stays an error until it changes
    Index index;
  };
  // Brings the cached index of `path` up to date; NotFound when it is gone.
  absl::Status Refresh(const std::string& path);

  const HostFiles& files_;
  SourceLimits limits_;
  std::mutex mu_;
  std::map<std::string, IndexedFile> indexed_;  // by path
};

}  // namespace kspan
