// /proc/<pid>/cgroup text and cgroup paths -> container and pod identity
// (cgroup v1, v2 and hybrid lines; Docker, containerd, CRI-O, Podman,
// systemd-nspawn, LXC and Kubernetes layouts). A container's own processes
// can shape their cgroup names in delegated subtrees, so the text is
// untrusted. Seeds: real /proc/<pid>/cgroup files of this and other hosts'
// layouts (corpus/cgroup_path/README.md).
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/fuzz_common.h"
#include "userspace/cgroup_path.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kspan::fuzz::QuietLogs();
  return 0;
}

namespace {

void Check(const kspan::CgroupIdentity& id) {
  using kspan::ContainerRuntime;
  if (id.runtime == ContainerRuntime::kDocker || id.runtime == ContainerRuntime::kContainerd ||
      id.runtime == ContainerRuntime::kCrio || id.runtime == ContainerRuntime::kPodman) {
    FUZZ_CHECK(kspan::IsFullContainerId(id.container_id));
  }
  if (id.runtime == ContainerRuntime::kNone) FUZZ_CHECK(id.container_id.empty());
  FUZZ_CHECK(id.cgroup_path.size() <= kspan::kMaxCgroupPathBytes);
  (void)kspan::RuntimeName(id.runtime);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kspan;
  const auto text = fuzz::AsText(data, size);
  if (auto id = ParseProcCgroup(text); id.ok()) Check(*id);
  if (auto id = ParseCgroupPath(text); id.ok()) Check(*id);
  (void)IsFullContainerId(text);
  return 0;
}
