// The node's files that name containers: containers/storage's
// containers.json (with its nested metadata JSON), OCI runtime specs
// (config.json of containerd's and CRI-O's/Podman's bundles) and Docker's
// config.v2.json. Their contents are partly chosen by whoever starts a
// container (names, labels, annotations), so they are untrusted.
//
// Input: the first byte picks the file, the rest is its text. containers.json
// goes through ParseContainersJson (what the source indexes); the others are
// written to their place under a scratch host root on tmpfs and read by the
// real source, file limits and all. Seeds: files as Podman, containerd, CRI-O
// and Docker write them (corpus/container_name_sources/README.md).
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "tests/fuzz/fuzz_common.h"
#include "userspace/container_name_sources.h"

namespace {

constexpr char kId[] = "4f3a4c1d2e5b6a7980f1e2d3c4b5a6978877665544332211aabbccddeeff0011";

struct Files {
  std::string root;
  int containerd = -1;
  int crio = -1;
  int docker = -1;
  std::unique_ptr<kspan::HostFiles> host;
};

int Create(const std::string& root, const std::string& rel) {
  const std::filesystem::path p = std::filesystem::path(root) / rel;
  std::filesystem::create_directories(p.parent_path());
  const int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  FUZZ_CHECK(fd >= 0);
  return fd;
}

Files& Setup() {
  static Files* files = [] {
    auto* f = new Files;
    char tmpl[] = "/dev/shm/kspan-fuzz-containers-XXXXXX";
    char tmpl_tmp[] = "/tmp/kspan-fuzz-containers-XXXXXX";
    const char* dir = ::mkdtemp(tmpl);
    if (dir == nullptr) dir = ::mkdtemp(tmpl_tmp);
    FUZZ_CHECK(dir != nullptr);
    f->root = dir;
    const std::string id = kId;
    f->containerd = Create(f->root, "run/containerd/io.containerd.runtime.v2.task/k8s.io/" + id + "/config.json");
    f->crio = Create(f->root, "run/containers/storage/overlay-containers/" + id + "/userdata/config.json");
    f->docker = Create(f->root, "var/lib/docker/containers/" + id + "/config.v2.json");
    f->host = std::make_unique<kspan::HostFiles>(f->root);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(files->root, ec);
    });
    return f;
  }();
  return *files;
}

void Write(int fd, const std::uint8_t* data, std::size_t size) {
  FUZZ_CHECK(::ftruncate(fd, 0) == 0);
  FUZZ_CHECK(::pwrite(fd, data, size, 0) == static_cast<ssize_t>(size));
}

void Check(const kspan::ContainerNames& n) {
  for (const std::string* s : {&n.container_name, &n.image_name, &n.k8s_namespace,
                               &n.k8s_pod_name, &n.k8s_container_name}) {
    for (unsigned char c : *s) FUZZ_CHECK(c >= 0x20 && c != 0x7f);  // printable for logs
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kspan::fuzz::QuietLogs();
  Setup();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kspan;
  if (size == 0) return 0;
  const std::uint8_t which = data[0] % 4;
  ++data;
  --size;
  if (which == 0) {
    auto index = ContainersStorageSource::ParseContainersJson(fuzz::AsText(data, size));
    if (index.ok()) {
      for (const auto& [id, named] : *index) {
        FUZZ_CHECK(IsContainerIdForPath(id));
        Check(ContainerNames{.container_name = named.name, .image_name = named.image});
      }
    }
    return 0;
  }
  Files& f = Setup();
  // Small limits, so the file bound is reached too.
  const SourceLimits limits{.max_file_bytes = 16 << 10, .max_index_bytes = 64 << 10, .max_dir_entries = 64};
  CgroupIdentity id;
  id.container_id = kId;
  id.runtime = ContainerRuntime::kUnknown;
  absl::StatusOr<std::optional<ContainerNames>> names;
  if (which == 1) {
    Write(f.containerd, data, size);
    names = ContainerdBundleSource(*f.host, limits).Find(id);
  } else if (which == 2) {
    Write(f.crio, data, size);
    names = CrioBundleSource(*f.host, limits).Find(id);
  } else {
    Write(f.docker, data, size);
    names = DockerSource(*f.host, limits).Find(id);
  }
  if (names.ok() && names->has_value()) Check(**names);
  return 0;
}
