// Container names from node files: each source over its real on-disk layout
// in a temporary host root, the order of sources, the cache (hits, retried
// misses, refresh, Sweep, bounds), hostile files, and concurrent look-ups.
#include "userspace/container_metadata.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "userspace/container_name_sources.h"

namespace kspan {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr char kId[] = "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d";
constexpr char kOtherId[] = "446c65ab43d490ab8d7f693a46050db88f66a2bf657eda0c3de8bc8bab516be4";
constexpr char kPodmanId[] = "e8737661a1142331a624a99aa954bbe6d0834b17ca4a92568f69e62f6538d6a3";
constexpr char kPodUid[] = "05b3ee07-a2bd-47e7-9599-7961201f20dd";

std::string Cat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (auto p : parts) out.append(p);
  return out;
}

// containerd's CRI plugin: the OCI spec of a pod's container, trimmed of
// mounts and capabilities but with the annotations as written.
std::string ContainerdCriConfig(std::string_view type, std::string_view container,
                                std::string_view pod, std::string_view ns, std::string_view image) {
  std::string annotations = Cat({R"("io.kubernetes.cri.container-type":")", type, R"(",)",
                                 R"("io.kubernetes.cri.sandbox-id":")", kOtherId, R"(",)",
                                 R"("io.kubernetes.cri.sandbox-name":")", pod, R"(",)",
                                 R"("io.kubernetes.cri.sandbox-namespace":")", ns, R"(",)",
                                 R"("io.kubernetes.cri.sandbox-uid":")", kPodUid, R"(")"});
  if (type == "container") {
    annotations += Cat({R"(,"io.kubernetes.cri.container-name":")", container, R"(",)",
                        R"("io.kubernetes.cri.image-name":")", image, R"(")"});
  } else {
    annotations += R"(,"io.kubernetes.cri.sandbox-log-directory":"/var/log/pods/x")";
  }
  return Cat({R"({"ociVersion":"1.1.0","process":{"user":{"uid":0,"gid":0},)",
              R"("args":["/docker-entrypoint.sh","nginx","-g","daemon off;"],)",
              R"("env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)",
              R"("HOSTNAME=web-7d4b9c7f8-x2x9q"],"cwd":"/","noNewPrivileges":false,)",
              R"("oomScoreAdj":1000},"root":{"path":"rootfs"},)",
              R"("mounts":[{"destination":"/proc","type":"proc","source":"proc",)",
              R"("options":["nosuid","noexec","nodev"]}],"annotations":{)", annotations,
              R"(},"linux":{"resources":{"devices":[{"allow":false,"access":"rwm"}],)",
              R"("cpu":{"shares":2}},"cgroupsPath":"kubepods-besteffort-pod05b3ee07_a2bd_47e7_)",
              R"(9599_7961201f20dd.slice:cri-containerd:)", kId,
              R"(","namespaces":[{"type":"pid"},{"type":"ipc","path":"/proc/4242/ns/ipc"}]}})"});
}

std::string DockerConfigV2(std::string_view name, std::string_view image,
                           std::string_view labels = R"("maintainer":"NGINX Docker Maintainers")") {
  return Cat(
      {R"({"StreamConfig":{},"State":{"Running":true,"Paused":false,"Restarting":false,)",
       R"("OOMKilled":false,"RemovalInProgress":false,"Dead":false,"Pid":4242,)",
       R"("ExitCode":0,"Error":"","StartedAt":"2026-12-07T07:08:46.88Z",)",
       R"("FinishedAt":"0001-01-01T00:00:00Z","Health":null},"ID":")",
       kId,
       R"(","Created":"2026-12-07T07:08:46.54Z","Managed":false,)",
       R"("Path":"/docker-entrypoint.sh","Args":["nginx","-g","daemon off;"],)",
       R"("Config":{"Hostname":"9ec39b91f3d7","Domainname":"","User":"",)",
       R"("AttachStdin":false,"Tty":false,"Env":["PATH=/usr/local/sbin:/usr/bin",)",
       R"("NGINX_VERSION=1.25.3"],"Cmd":["nginx","-g","daemon off;"],"Image":")",
       image,
       R"(","Volumes":null,"WorkingDir":"","Entrypoint":["/docker-entrypoint.sh"],)",
       R"("OnBuild":null,"Labels":{)",
       labels,
       R"(},"StopSignal":"SIGQUIT"},"Image":"sha256:a8758716bb6aa4d90071160d27028fe4eaee7ce8166221a97d30440c8eac2be6",)",
       R"("NetworkSettings":{"Bridge":"","SandboxID":"","Ports":{}},)",
       R"("LogPath":"/var/lib/docker/containers/)",
       kId,
       "/",
       kId,
       R"(-json.log",)",
       R"("Name":")",
       name,
       R"(","Driver":"overlay2","OS":"linux","MountLabel":"","ProcessLabel":"",)",
       R"("RestartCount":0,"HasBeenStartedBefore":true,"HasBeenManuallyStopped":false})"});
}

// podman 4.3 rootful, as on this machine (trimmed ids shortened in "image"
// and "layer" exactly as the brief's sample).
std::string ContainersJson(std::string_view id, std::string_view name, std::string_view image) {
  return Cat({R"([{"id":")", id, R"(","names":[")", name,
              R"("],"image":"0ccbeebc6e3e","layer":"21800cc0a2f1","metadata":"{\"image-name\":\")",
              image, R"(\",\"image-id\":\"0ccbeebc6e3e\",\"name\":\")", name,
              R"(\",\"created-at\":1796627326}","created":"2026-12-07T07:08:46.883306154Z",)",
              R"("flags":{"MountLabel":"","ProcessLabel":""}}])"});
}

class ContainerMetadataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kspan-host-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { fs::remove_all(root_); }

  void Write(const std::string& rel, const std::string& content) {
    const fs::path p = fs::path(root_) / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << content;
  }
  void Mkdir(const std::string& rel) { fs::create_directories(fs::path(root_) / rel); }
  void Symlink(const std::string& target, const std::string& rel) {
    const fs::path p = fs::path(root_) / rel;
    fs::create_directories(p.parent_path());
    fs::create_symlink(target, p);
  }

  ContainerMetadata::Options Opts() {
    ContainerMetadata::Options o;
    o.host_root = root_;
    return o;
  }
  std::unique_ptr<ContainerMetadata> Make(ContainerMetadata::Options o) {
    return std::make_unique<ContainerMetadata>(std::move(o), &metrics_, [this] { return now_; });
  }
  std::unique_ptr<ContainerMetadata> Make() { return Make(Opts()); }

  static CgroupIdentity Identity(std::string_view path) {
    auto id = ParseCgroupPath(path);
    EXPECT_TRUE(id.ok()) << id.status();
    return *id;
  }
  static CgroupIdentity K8sContainer(std::string_view id = kId) {
    return Identity(
        Cat({"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod",
             "05b3ee07_a2bd_47e7_9599_7961201f20dd.slice/cri-containerd-", id, ".scope"}));
  }
  static CgroupIdentity DockerContainer(std::string_view id = kId) {
    return Identity(Cat({"/system.slice/docker-", id, ".scope"}));
  }

  std::uint64_t Lookups(std::string_view source, std::string_view result) {
    return metrics_.CounterValue(
        "kspan_container_metadata_lookups_total",
        {{"source", std::string(source)}, {"result", std::string(result)}});
  }

  std::string root_;
  MetricsRegistry metrics_;
  std::chrono::steady_clock::time_point now_{std::chrono::hours(1000)};
};

TEST_F(ContainerMetadataTest, KubeletLogLinkNamesAContainer) {
  // The kubelet's symlink, pointing into /var/log/pods (dangling here: only
  // its name is read).
  Symlink(Cat({"/var/log/pods/shop_web-7d4b9c7f8-x2x9q_", kPodUid, "/nginx/0.log"}),
          Cat({"var/log/containers/web-7d4b9c7f8-x2x9q_shop_nginx-", kId, ".log"}));
  auto m = Make();
  ContainerNames n = m->Lookup(K8sContainer());
  EXPECT_EQ(n.k8s_pod_name, "web-7d4b9c7f8-x2x9q");
  EXPECT_EQ(n.k8s_namespace, "shop");
  EXPECT_EQ(n.k8s_container_name, "nginx");
  EXPECT_EQ(n.source, "kubelet-logs");
  EXPECT_EQ(Lookups("kubelet-logs", "found"), 1u);
  EXPECT_EQ(Lookups("docker", "none"), 1u);
}

TEST_F(ContainerMetadataTest, KubeletPodDirectoryNamesAPodBeforeItsContainerLink) {
  Mkdir(Cat({"var/log/pods/shop_web-7d4b9c7f8-x2x9q_", kPodUid, "/nginx"}));
  // Another container's link: not ours.
  Symlink("/dev/null", Cat({"var/log/containers/other_shop_nginx-", kOtherId, ".log"}));
  auto m = Make();
  ContainerNames n = m->Lookup(K8sContainer());
  EXPECT_EQ(n.k8s_pod_name, "web-7d4b9c7f8-x2x9q");
  EXPECT_EQ(n.k8s_namespace, "shop");
  EXPECT_TRUE(n.k8s_container_name.empty());
  // The pod's own cgroup (no container) is named too.
  n = m->Lookup(Identity(Cat({"/kubepods/besteffort/pod", kPodUid})));
  EXPECT_EQ(n.k8s_pod_name, "web-7d4b9c7f8-x2x9q");
  EXPECT_EQ(m->size(), 2u);
}

TEST_F(ContainerMetadataTest, KubeletNamesThatAreNotDnsNamesAreIgnored) {
  Symlink("/dev/null", Cat({"var/log/containers/a_b_c_d-", kId, ".log"}));
  Symlink("/dev/null", Cat({"var/log/containers/Web_shop_nginx-", kId, ".log"}));
  auto m = Make();
  EXPECT_TRUE(m->Lookup(K8sContainer()).empty());
}

TEST_F(ContainerMetadataTest, ContainerdCriBundle) {
  Write(Cat({"run/containerd/io.containerd.runtime.v2.task/k8s.io/", kId, "/config.json"}),
        ContainerdCriConfig("container", "nginx", "web-7d4b9c7f8-x2x9q", "shop",
                            "docker.io/library/nginx:1.25"));
  auto m = Make();
  CgroupIdentity id = Identity(Cat({"/kubepods/besteffort/pod", kPodUid, "/", kId}));
  ASSERT_EQ(id.runtime, ContainerRuntime::kUnknown);
  ContainerNames n = m->Lookup(id);
  EXPECT_EQ(n.k8s_container_name, "nginx");
  EXPECT_EQ(n.k8s_pod_name, "web-7d4b9c7f8-x2x9q");
  EXPECT_EQ(n.k8s_namespace, "shop");
  EXPECT_EQ(n.image_name, "docker.io/library/nginx:1.25");
  EXPECT_EQ(n.runtime, ContainerRuntime::kContainerd);  // what the cgroup did not say
  EXPECT_EQ(n.source, "containerd-oci");
}

TEST_F(ContainerMetadataTest, ContainerdSandboxHasNoContainerName) {
  Write(Cat({"run/containerd/io.containerd.runtime.v2.task/k8s.io/", kId, "/config.json"}),
        ContainerdCriConfig("sandbox", "", "web-7d4b9c7f8-x2x9q", "shop", ""));
  ContainerNames n = Make()->Lookup(K8sContainer());
  EXPECT_EQ(n.k8s_pod_name, "web-7d4b9c7f8-x2x9q");
  EXPECT_TRUE(n.k8s_container_name.empty());
  EXPECT_TRUE(n.image_name.empty());
}

TEST_F(ContainerMetadataTest, NerdctlAndK3sAndMobyNamespaces) {
  Write(Cat({"run/containerd/io.containerd.runtime.v2.task/default/", kId, "/config.json"}),
        R"({"ociVersion":"1.1.0","annotations":{"nerdctl/name":"redis-1",)"
        R"("nerdctl/namespace":"default","nerdctl/platform":"linux/amd64"}})");
  Write(Cat({"run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/", kOtherId, "/config.json"}),
        ContainerdCriConfig("container", "app", "api-0", "prod", "registry.local/api:3"));
  Write(Cat({"run/containerd/io.containerd.runtime.v2.task/moby/", kPodmanId, "/config.json"}),
        R"({"ociVersion":"1.1.0","annotations":{}})");
  auto m = Make();
  ContainerNames n = m->Lookup(Identity(Cat({"/system.slice/nerdctl-", kId, ".scope"})));
  EXPECT_EQ(n.container_name, "redis-1");
  EXPECT_EQ(n.runtime, ContainerRuntime::kContainerd);
  n = m->Lookup(K8sContainer(kOtherId));
  EXPECT_EQ(n.k8s_pod_name, "api-0");
  EXPECT_EQ(n.image_name, "registry.local/api:3");
  // Docker's containers in containerd's "moby" namespace: found, nameless.
  n = m->Lookup(Identity(Cat({"/docker/", kPodmanId})));
  EXPECT_EQ(n.runtime, ContainerRuntime::kDocker);
  EXPECT_EQ(n.source, "containerd-oci");
  EXPECT_TRUE(n.empty());
}

TEST_F(ContainerMetadataTest, CrioBundle) {
  Write(
      Cat({"run/containers/storage/overlay-containers/", kId, "/userdata/config.json"}),
      Cat({R"({"ociVersion":"1.0.2-dev","process":{"args":["/api"]},"annotations":{)",
           R"("io.container.manager":"cri-o","io.kubernetes.container.hash":"8f4a2b1c",)",
           R"("io.kubernetes.container.name":"api","io.kubernetes.cri-o.ContainerID":")", kId,
           R"(","io.kubernetes.cri-o.ContainerType":"container",)",
           R"("io.kubernetes.cri-o.ImageName":"quay.io/shop/api:2.1",)",
           R"("io.kubernetes.cri-o.SandboxID":")", kOtherId,
           R"(","io.kubernetes.pod.name":"api-5c9d8b7f6-q7w2e",)",
           R"("io.kubernetes.pod.namespace":"prod","io.kubernetes.pod.uid":")", kPodUid,
           R"("},"linux":{"cgroupsPath":"kubepods-besteffort-pod05b3ee07_a2bd_47e7_9599_7961201f20dd.slice:crio:)",
           kId, R"("}})"}));
  ContainerNames n = Make()->Lookup(
      Identity(Cat({"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod",
                    "05b3ee07_a2bd_47e7_9599_7961201f20dd.slice/crio-", kId, ".scope/container"})));
  EXPECT_EQ(n.k8s_container_name, "api");
  EXPECT_EQ(n.k8s_pod_name, "api-5c9d8b7f6-q7w2e");
  EXPECT_EQ(n.k8s_namespace, "prod");
  EXPECT_EQ(n.image_name, "quay.io/shop/api:2.1");
  EXPECT_EQ(n.runtime, ContainerRuntime::kCrio);
  EXPECT_EQ(n.source, "crio-oci");
}

TEST_F(ContainerMetadataTest, DockerStore) {
  Write(Cat({"var/lib/docker/containers/", kId, "/config.v2.json"}),
        DockerConfigV2("/web-1", "nginx:1.25"));
  ContainerNames n = Make()->Lookup(DockerContainer());
  EXPECT_EQ(n.container_name, "web-1");
  EXPECT_EQ(n.image_name, "nginx:1.25");
  EXPECT_EQ(n.runtime, ContainerRuntime::kDocker);
  EXPECT_TRUE(n.k8s_pod_name.empty());
  EXPECT_EQ(n.source, "docker");
}

TEST_F(ContainerMetadataTest, DockerThroughCriDockerdCarriesTheKubeletLabels) {
  Write(Cat({"var/lib/docker/containers/", kId, "/config.v2.json"}),
        DockerConfigV2(
            "/k8s_nginx_web-0_shop_05b3ee07-a2bd-47e7-9599-7961201f20dd_0",
            "nginx@sha256:0d17b565c37bcbd895e9d92315a05c1c3c9a29f762b011a10c54a66cd53c9b31",
            R"("io.kubernetes.container.name":"nginx",)"
            R"("io.kubernetes.pod.name":"web-0","io.kubernetes.pod.namespace":"shop",)"
            R"("io.kubernetes.pod.uid":"05b3ee07-a2bd-47e7-9599-7961201f20dd")"));
  ContainerNames n = Make()->Lookup(DockerContainer());
  EXPECT_EQ(n.k8s_container_name, "nginx");
  EXPECT_EQ(n.k8s_pod_name, "web-0");
  EXPECT_EQ(n.k8s_namespace, "shop");
  EXPECT_EQ(n.container_name, "k8s_nginx_web-0_shop_05b3ee07-a2bd-47e7-9599-7961201f20dd_0");
}

TEST_F(ContainerMetadataTest, ContainersStorageOfPodman) {
  Write("var/lib/containers/storage/overlay-containers/containers.json",
        ContainersJson(kPodmanId, "probe1", "localhost/kspan-test:probe"));
  // `podman run --rm` containers are in the volatile list.
  Write("var/lib/containers/storage/overlay-containers/volatile-containers.json",
        ContainersJson(kId, "tmp1", "docker.io/library/alpine:3.19"));
  auto m = Make();
  ContainerNames n = m->Lookup(Identity(Cat({"/libpod_parent/libpod-", kPodmanId})));
  EXPECT_EQ(n.container_name, "probe1");
  EXPECT_EQ(n.image_name, "localhost/kspan-test:probe");
  EXPECT_EQ(n.source, "containers-storage");
  n = m->Lookup(Identity(Cat({"/machine.slice/libpod-", kId, ".scope"})));
  EXPECT_EQ(n.container_name, "tmp1");
  EXPECT_EQ(n.image_name, "docker.io/library/alpine:3.19");
}

TEST_F(ContainerMetadataTest, ContainersStorageIsReindexedWhenTheFileChanges) {
  const std::string path = "var/lib/containers/storage/overlay-containers/containers.json";
  Write(path, "[]");
  auto m = Make();
  const CgroupIdentity id = Identity(Cat({"/machine.slice/libpod-", kPodmanId, ".scope"}));
  EXPECT_TRUE(m->Lookup(id).empty());
  Write(path, ContainersJson(kPodmanId, "probe1", "localhost/kspan-test:probe"));
  now_ += 5s;  // retry_unnamed
  EXPECT_EQ(m->Lookup(id).container_name, "probe1");
}

TEST_F(ContainerMetadataTest, SourcesAnswerInOrderAndFillWhatIsMissing) {
  // The kubelet's log layout and containerd's bundle disagree on the pod's
  // name (they cannot, really): the earlier source wins; the image comes from
  // the later one.
  Symlink("/dev/null", Cat({"var/log/containers/web-0_shop_nginx-", kId, ".log"}));
  Write(Cat({"run/containerd/io.containerd.runtime.v2.task/k8s.io/", kId, "/config.json"}),
        ContainerdCriConfig("container", "other", "web-1", "other", "nginx:1.25"));
  ContainerNames n = Make()->Lookup(K8sContainer());
  EXPECT_EQ(n.k8s_pod_name, "web-0");
  EXPECT_EQ(n.k8s_namespace, "shop");
  EXPECT_EQ(n.k8s_container_name, "nginx");
  EXPECT_EQ(n.image_name, "nginx:1.25");
  EXPECT_EQ(n.source, "kubelet-logs+containerd-oci");
}

TEST_F(ContainerMetadataTest, CacheHitsReadNoFiles) {
  Write(Cat({"var/lib/docker/containers/", kId, "/config.v2.json"}),
        DockerConfigV2("/web-1", "nginx:1.25"));
  auto m = Make();
  EXPECT_EQ(m->Lookup(DockerContainer()).container_name, "web-1");
  fs::remove_all(fs::path(root_) / "var/lib/docker");
  now_ += 299s;
  EXPECT_EQ(m->Lookup(DockerContainer()).container_name, "web-1");
  EXPECT_EQ(Lookups("docker", "found"), 1u);
  EXPECT_EQ(Lookups("docker", "none"), 0u);
  EXPECT_EQ(m->size(), 1u);
}

TEST_F(ContainerMetadataTest, MissesAreRetriedAfterRetryUnnamed) {
  auto m = Make();
  EXPECT_TRUE(m->Lookup(DockerContainer()).empty());
  // The container's files appear after it started.
  Write(Cat({"var/lib/docker/containers/", kId, "/config.v2.json"}),
        DockerConfigV2("/web-1", "nginx:1.25"));
  now_ += 4s;
  EXPECT_TRUE(m->Lookup(DockerContainer()).empty());  // still the cached miss
  EXPECT_EQ(Lookups("docker", "none"), 1u);
  now_ += 1s;
  EXPECT_EQ(m->Lookup(DockerContainer()).container_name, "web-1");
  EXPECT_EQ(Lookups("docker", "found"), 1u);
}

TEST_F(ContainerMetadataTest, HitsAreRefreshedAndAFailedRefreshKeepsTheNames) {
  const std::string path = Cat({"var/lib/docker/containers/", kId, "/config.v2.json"});
  Write(path, DockerConfigV2("/web-1", "nginx:1.25"));
  auto m = Make();
  EXPECT_EQ(m->Lookup(DockerContainer()).container_name, "web-1");
  Write(path, DockerConfigV2("/web-renamed", "nginx:1.25"));  // docker rename
  now_ += 299s;
  EXPECT_EQ(m->Lookup(DockerContainer()).container_name, "web-1");
  now_ += 1s;
  EXPECT_EQ(m->Lookup(DockerContainer()).container_name, "web-renamed");
  fs::remove(fs::path(root_) / path);
  now_ += 300s;
  EXPECT_EQ(m->Lookup(DockerContainer()).container_name, "web-renamed");
}

TEST_F(ContainerMetadataTest, SweepDropsContainersWhoseCgroupIsGone) {
  // cgroup v2.
  Write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n");
  Mkdir(Cat({"sys/fs/cgroup/system.slice/docker-", kId, ".scope"}));
  Mkdir(Cat({"sys/fs/cgroup/system.slice/docker-", kOtherId, ".scope"}));
  auto m = Make();
  m->Lookup(DockerContainer(kId));
  m->Lookup(DockerContainer(kOtherId));
  m->Sweep();
  EXPECT_EQ(m->size(), 2u);
  fs::remove(fs::path(root_) / Cat({"sys/fs/cgroup/system.slice/docker-", kId, ".scope"}));
  m->Sweep();
  EXPECT_EQ(m->size(), 1u);
  // Unused for unused_ttl: gone too, cgroup or not.
  now_ += 3600s;
  m->Sweep();
  EXPECT_EQ(m->size(), 0u);
}

TEST_F(ContainerMetadataTest, SweepFindsCgroupV1AndHybridHierarchies) {
  // Hybrid: v1 controllers plus the unified tree; this container only has a
  // memory cgroup left, the other only a unified one.
  Write("sys/fs/cgroup/memory/tasks", "");
  Write("sys/fs/cgroup/systemd/tasks", "");
  Write("sys/fs/cgroup/unified/cgroup.controllers", "");
  Mkdir(Cat({"sys/fs/cgroup/memory/docker/", kId}));
  Mkdir(Cat({"sys/fs/cgroup/unified/docker/", kOtherId}));
  auto m = Make();
  m->Lookup(Identity(Cat({"/docker/", kId})));
  m->Lookup(Identity(Cat({"/docker/", kOtherId})));
  m->Lookup(Identity(Cat({"/docker/", kPodmanId})));
  EXPECT_EQ(m->size(), 3u);
  m->Sweep();
  EXPECT_EQ(m->size(), 2u);
}

TEST_F(ContainerMetadataTest, SweepWithoutACgroupTreeDropsOnlyUnused) {
  auto m = Make();
  m->Lookup(DockerContainer());
  m->Sweep();
  EXPECT_EQ(m->size(), 1u);
}

TEST_F(ContainerMetadataTest, TheCacheIsBounded) {
  auto o = Opts();
  o.max_entries = 2;
  auto m = Make(o);
  m->Lookup(DockerContainer(kId));
  m->Lookup(DockerContainer(kOtherId));
  m->Lookup(DockerContainer(kId));  // now the most recent
  m->Lookup(DockerContainer(kPodmanId));
  EXPECT_EQ(m->size(), 2u);
  // kOtherId was the least recently used: looked up again from the files.
  const auto none_before = Lookups("docker", "none");
  m->Lookup(DockerContainer(kId));
  EXPECT_EQ(Lookups("docker", "none"), none_before);
  m->Lookup(DockerContainer(kOtherId));
  EXPECT_EQ(Lookups("docker", "none"), none_before + 1);
}

TEST_F(ContainerMetadataTest, NoNamesOutsideContainersOrForAUsersClaim) {
  auto m = Make();
  EXPECT_TRUE(m->Lookup(Identity("/system.slice/ssh.service")).empty());
  EXPECT_TRUE(m->Lookup(Identity("/")).empty());
  // A rootless container's id is its user's claim: root's files do not name it.
  Write(Cat({"var/lib/docker/containers/", kId, "/config.v2.json"}),
        DockerConfigV2("/web-1", "nginx:1.25"));
  EXPECT_TRUE(m->Lookup(Identity(Cat({"/user.slice/user-1000.slice/user@1000.service/",
                                      "user.slice/docker-", kId, ".scope"})))
                  .empty());
  EXPECT_EQ(m->size(), 0u);
  EXPECT_EQ(metrics_.CounterTotal("kspan_container_metadata_lookups_total"), 0u);
}

TEST_F(ContainerMetadataTest, MachinesAreNamedByTheirCgroup) {
  auto m = Make();
  ContainerNames n =
      m->Lookup(Identity("/machine.slice/systemd-nspawn@debian\\x2dbookworm.service/payload"));
  EXPECT_EQ(n.container_name, "debian-bookworm");
  EXPECT_EQ(n.source, "cgroup");
  EXPECT_EQ(m->Lookup(Identity("/lxc.payload.web")).container_name, "web");
}

TEST_F(ContainerMetadataTest, AnIdWithAPathInItIsNeverLookedUp) {
  // Only ParseCgroupPath makes identities in kspan; a hand-made one with a
  // traversal in its id must still not reach a path.
  Write("etc/config.v2.json", DockerConfigV2("/escaped", "x"));
  CgroupIdentity id;
  id.cgroup_path = "/x";
  id.runtime = ContainerRuntime::kDocker;
  for (const char* bad : {"../../../etc", "9ec39b91f3d7/../../../../etc", "9ec39b91f3d", "",
                          "9EC39B91F3D70E1B", "9ec39b91f3d7 "}) {
    id.container_id = bad;
    EXPECT_TRUE(Make()->Lookup(id).empty()) << bad;
  }
  EXPECT_FALSE(IsContainerIdForPath("../../x"));
  EXPECT_TRUE(IsContainerIdForPath("9ec39b91f3d7"));
  EXPECT_TRUE(IsContainerIdForPath(kId));
  EXPECT_EQ(metrics_.CounterTotal("kspan_container_metadata_lookups_total"), 0u);
}

TEST_F(ContainerMetadataTest, OversizeMalformedAndHostileFilesAreErrorsNotNames) {
  auto o = Opts();
  o.max_file_bytes = 4096;
  auto m = Make(o);
  // Over max_file_bytes.
  Write(Cat({"var/lib/docker/containers/", kId, "/config.v2.json"}),
        DockerConfigV2("/web-1", std::string(8000, 'x')));
  EXPECT_TRUE(m->Lookup(DockerContainer(kId)).empty());
  EXPECT_EQ(Lookups("docker", "error"), 1u);
  // Malformed JSON.
  Write(Cat({"var/lib/docker/containers/", kOtherId, "/config.v2.json"}),
        R"({"Name":"/web-2","Config":{"Image":)");
  EXPECT_TRUE(m->Lookup(DockerContainer(kOtherId)).empty());
  EXPECT_EQ(Lookups("docker", "error"), 2u);
  // Nested past the bound.
  Write(Cat({"var/lib/docker/containers/", kPodmanId, "/config.v2.json"}),
        std::string(1000, '[') + std::string(1000, ']'));
  EXPECT_TRUE(m->Lookup(DockerContainer(kPodmanId)).empty());
  EXPECT_EQ(Lookups("docker", "error"), 3u);
  // Valid JSON of the wrong shape: found, but no names.
  const std::string shapes[] = {"[]", "\"x\"", R"({"Name":7,"Config":[1]})",
                                R"({"Name":"/a\u0001b","Config":{"Image":{"x":1}}})"};
  for (const auto& text : shapes) {
    Write(Cat({"var/lib/docker/containers/", kId, "/config.v2.json"}), text);
    now_ += 301s;
    ContainerNames n = Make(o)->Lookup(DockerContainer(kId));
    EXPECT_TRUE(n.empty()) << text;
  }
}

TEST_F(ContainerMetadataTest, SymlinksAndSpecialFilesAreRefusedForJsonSources) {
  // A config.json that is a symlink to some other file on the node.
  Write("etc/shadow-like.json", R"({"annotations":{"nerdctl/name":"stolen"}})");
  Symlink("/etc/shadow-like.json",
          Cat({"run/containerd/io.containerd.runtime.v2.task/default/", kId, "/config.json"}));
  // A FIFO where Docker's config is expected: must not block.
  fs::create_directories(fs::path(root_) / Cat({"var/lib/docker/containers/", kId}));
  ASSERT_EQ(
      mkfifo(
          (fs::path(root_) / Cat({"var/lib/docker/containers/", kId, "/config.v2.json"})).c_str(),
          0600),
      0);
  auto m = Make();
  ContainerNames n = m->Lookup(DockerContainer());
  EXPECT_TRUE(n.empty());
  EXPECT_EQ(Lookups("containerd-oci", "error"), 1u);
  EXPECT_EQ(Lookups("docker", "error"), 1u);
}

TEST_F(ContainerMetadataTest, PathsResolveInsideTheHostRoot) {
  // On the node, /var/lib/docker is a symlink to another disk: absolute, so
  // it must resolve against the node's tree, not the agent's.
  Symlink("/data/docker", "var/lib/docker");
  Write(Cat({"data/docker/containers/", kId, "/config.v2.json"}),
        DockerConfigV2("/web-1", "nginx:1.25"));
  // And a relative link that tries to climb out of the root stays inside.
  Symlink("../../../../../../../../../../../", "run/containers");
  HostFiles files(root_);
  EXPECT_EQ(files
                .ReadRegularFile(
                    "run/containers/data/docker/containers/" + std::string(kId) + "/config.v2.json",
                    1 << 20)
                .ok(),
            true);
  EXPECT_FALSE(files.ReadRegularFile("../../../etc/passwd", 1 << 20).ok());
  auto m = Make();
  EXPECT_EQ(m->Lookup(DockerContainer()).container_name, "web-1");
}

TEST_F(ContainerMetadataTest, ContainersJsonOverTheIndexBoundIsAnError) {
  auto o = Opts();
  o.max_index_bytes = 300;
  Write("var/lib/containers/storage/overlay-containers/containers.json",
        ContainersJson(kPodmanId, "probe1", "localhost/kspan-test:probe"));
  auto m = Make(o);
  EXPECT_TRUE(m->Lookup(Identity(Cat({"/libpod_parent/libpod-", kPodmanId}))).empty());
  EXPECT_EQ(Lookups("containers-storage", "error"), 1u);
}

TEST_F(ContainerMetadataTest, MetricsCountBySourceAndExposeTheCacheSize) {
  auto m = Make();
  m->Lookup(DockerContainer());
  EXPECT_EQ(Lookups("kubelet-logs", "none"), 1u);
  EXPECT_EQ(Lookups("containerd-oci", "none"), 1u);
  EXPECT_EQ(Lookups("crio-oci", "none"), 1u);
  EXPECT_EQ(Lookups("docker", "none"), 1u);
  EXPECT_EQ(Lookups("containers-storage", "none"), 1u);
  EXPECT_NE(metrics_.RenderPrometheus().find("kspan_container_metadata_cache_entries 1"),
            std::string::npos);
  m.reset();  // the gauge's callback goes with the object
  EXPECT_EQ(metrics_.RenderPrometheus().find("kspan_container_metadata_cache_entries 1"),
            std::string::npos);
}

TEST_F(ContainerMetadataTest, ConcurrentLookupsAgree) {
  std::vector<std::string> ids;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 64; ++i) {
    char buf[65];
    std::snprintf(buf, sizeof(buf), "%016llx%016llx%016llx%016llx",
                  static_cast<unsigned long long>(rng()), static_cast<unsigned long long>(rng()),
                  static_cast<unsigned long long>(rng()), static_cast<unsigned long long>(rng()));
    ids.emplace_back(buf);
    Write(Cat({"var/lib/docker/containers/", ids.back(), "/config.v2.json"}),
          DockerConfigV2("/c" + std::to_string(i), "img" + std::to_string(i)));
  }
  auto o = Opts();
  o.max_entries = 48;  // evictions while the threads run
  auto m = std::make_unique<ContainerMetadata>(o, &metrics_);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 300; ++round) {
        const int i = (round * 7 + t * 13) % 64;
        ContainerNames n = m->Lookup(DockerContainer(ids[i]));
        if (n.container_name != "c" + std::to_string(i)) ++wrong;
        if (round % 50 == 0) m->Sweep();
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_LE(m->size(), 48u);
}

TEST(ContainersJson, ParsesTheRealFormatAndRefusesOthers) {
  auto index = ContainersStorageSource::ParseContainersJson(
      ContainersJson(kPodmanId, "probe1", "localhost/kspan-test:probe"));
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->size(), 1u);
  EXPECT_EQ(index->at(kPodmanId).name, "probe1");
  EXPECT_EQ(index->at(kPodmanId).image, "localhost/kspan-test:probe");
  // The name from metadata when "names" is empty; bad ids are skipped.
  index = ContainersStorageSource::ParseContainersJson(
      Cat({R"([{"id":")", kId, R"(","names":[],"metadata":"{\"name\":\"m\"}"},)",
           R"({"id":"../../etc","names":["x"]},{"id":7},"junk",[1,2]])"}));
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->size(), 1u);
  EXPECT_EQ(index->at(kId).name, "m");
  for (const char* bad : {"", "{}", "\"x\"", "[", "[{]", "[{\"id\":}]", "nul"}) {
    EXPECT_FALSE(ContainersStorageSource::ParseContainersJson(bad).ok()) << bad;
  }
  EXPECT_FALSE(ContainersStorageSource::ParseContainersJson(std::string(100000, '[')).ok());
  // A metadata string nested past the bound is ignored, not fatal.
  index = ContainersStorageSource::ParseContainersJson(Cat(
      {R"([{"id":")", kId, R"(","names":["n"],"metadata":")", std::string(100, '['), R"("}])"}));
  ASSERT_TRUE(index.ok());
  EXPECT_EQ(index->at(kId).name, "n");
}

TEST(ContainersJson, FuzzedInputsNeverThrow) {
  std::mt19937 rng(12345);
  const std::string seed = ContainersJson(kPodmanId, "probe1", "localhost/kspan-test:probe");
  for (int round = 0; round < 5000; ++round) {
    std::string text = seed;
    const int edits = 1 + static_cast<int>(rng() % 6);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const std::size_t at = rng() % text.size();
      switch (rng() % 3) {
        case 0:
          text[at] = static_cast<char>(rng() & 0xff);
          break;
        case 1:
          text.erase(at, 1 + rng() % 16);
          break;
        case 2:
          text.insert(at, text.substr(rng() % text.size(), rng() % 64));
          break;
      }
    }
    auto index = ContainersStorageSource::ParseContainersJson(text);
    if (index.ok()) {
      for (const auto& [id, named] : *index) EXPECT_TRUE(IsContainerIdForPath(id));
    }
  }
}

}  // namespace
}  // namespace kspan
