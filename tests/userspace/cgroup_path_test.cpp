// Container identity from cgroup paths: the real path strings each runtime
// writes (cgroup v1 and v2, cgroupfs and systemd drivers), what is not a
// container, and hostile input.
#include "userspace/cgroup_path.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace kspan {
namespace {

constexpr char kId[] = "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d";
constexpr char kPodmanId[] = "e8737661a1142331a624a99aa954bbe6d0834b17ca4a92568f69e62f6538d6a3";
constexpr char kPodUid[] = "05b3ee07-a2bd-47e7-9599-7961201f20dd";
constexpr char kPodUidUnderscores[] = "05b3ee07_a2bd_47e7_9599_7961201f20dd";

template <typename... Parts>
std::string S(const Parts&... parts) {
  std::string out;
  (out.append(std::string_view(parts)), ...);
  return out;
}

CgroupIdentity Parse(const std::string& path) {
  auto id = ParseCgroupPath(path);
  EXPECT_TRUE(id.ok()) << path << ": " << id.status();
  return id.ok() ? *id : CgroupIdentity{};
}

void ExpectContainer(const std::string& path, std::string_view id, ContainerRuntime runtime) {
  SCOPED_TRACE(path);
  CgroupIdentity got = Parse(path);
  EXPECT_EQ(got.container_id, id);
  EXPECT_EQ(got.runtime, runtime);
  EXPECT_EQ(got.cgroup_path, path);
}

void ExpectNoContainer(const std::string& path) {
  SCOPED_TRACE(path);
  CgroupIdentity got = Parse(path);
  EXPECT_FALSE(got.has_container()) << got.container_id;
  EXPECT_EQ(got.runtime, ContainerRuntime::kNone);
}

TEST(CgroupPath, RuntimeNamesAreTheSemanticConventionValues) {
  EXPECT_EQ(RuntimeName(ContainerRuntime::kDocker), "docker");
  EXPECT_EQ(RuntimeName(ContainerRuntime::kContainerd), "containerd");
  EXPECT_EQ(RuntimeName(ContainerRuntime::kCrio), "cri-o");
  EXPECT_EQ(RuntimeName(ContainerRuntime::kPodman), "podman");
  EXPECT_EQ(RuntimeName(ContainerRuntime::kSystemdNspawn), "systemd-nspawn");
  EXPECT_EQ(RuntimeName(ContainerRuntime::kLxc), "lxc");
  EXPECT_EQ(RuntimeName(ContainerRuntime::kNone), "");
  EXPECT_EQ(RuntimeName(ContainerRuntime::kUnknown), "");
}

TEST(CgroupPath, Docker) {
  ExpectContainer(S("/docker/", kId), kId, ContainerRuntime::kDocker);
  ExpectContainer(S("/system.slice/docker-", kId, ".scope"), kId, ContainerRuntime::kDocker);
  // Rootless Docker with the systemd driver.
  ExpectContainer(
      S("/user.slice/user-1000.slice/user@1000.service/user.slice/docker-", kId, ".scope"), kId,
      ContainerRuntime::kDocker);
  // The daemon and its shims are not containers.
  ExpectNoContainer("/system.slice/docker.service");
  ExpectNoContainer("/system.slice/containerd.service");
}

TEST(CgroupPath, Containerd) {
  // nerdctl with the systemd cgroup manager ("system.slice:nerdctl:<id>").
  ExpectContainer(S("/system.slice/nerdctl-", kId, ".scope"), kId, ContainerRuntime::kContainerd);
  // containerd's default cgroupfs path names a containerd namespace, which
  // could be any word: not guessed.
  ExpectNoContainer(S("/default/", kId));
  ExpectNoContainer(S("/k8s.io/", kId));
  ExpectNoContainer(S("/", kId));
}

TEST(CgroupPath, Podman) {
  ExpectContainer(S("/machine.slice/libpod-", kPodmanId, ".scope"), kPodmanId,
                  ContainerRuntime::kPodman);
  // A container with its own cgroup namespace runs in a sub-cgroup.
  ExpectContainer(S("/machine.slice/libpod-", kPodmanId, ".scope/container"), kPodmanId,
                  ContainerRuntime::kPodman);
  // The cgroupfs manager (this machine's podman 4.3 with --cgroup-manager cgroupfs).
  ExpectContainer(S("/libpod_parent/libpod-", kPodmanId), kPodmanId, ContainerRuntime::kPodman);
  // A container in a podman pod.
  ExpectContainer(
      S("/machine.slice/machine-libpod_pod_", kId, ".slice/libpod-", kPodmanId, ".scope"),
      kPodmanId, ContainerRuntime::kPodman);
  // conmon, the runtime's supervisor, sits beside the container.
  ExpectNoContainer(S("/machine.slice/libpod-conmon-", kPodmanId, ".scope"));
}

TEST(CgroupPath, RootlessPodmanIsMarkedUserDelegated) {
  const std::string path =
      S("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-", kPodmanId, ".scope");
  CgroupIdentity got = Parse(path);
  EXPECT_EQ(got.container_id, kPodmanId);
  EXPECT_EQ(got.runtime, ContainerRuntime::kPodman);
  EXPECT_TRUE(got.user_delegated);
  // Rootless on cgroup v1: under the user's podman-<pid>.scope (name=systemd).
  got = Parse(
      S("/user.slice/user-1000.slice/user@1000.service/user.slice/podman-4242.scope/", kPodmanId));
  EXPECT_EQ(got.container_id, kPodmanId);
  EXPECT_EQ(got.runtime, ContainerRuntime::kPodman);
  EXPECT_TRUE(got.user_delegated);
  // Rootful: not delegated.
  EXPECT_FALSE(Parse(S("/machine.slice/libpod-", kPodmanId, ".scope")).user_delegated);
  // A user service is delegated but no container.
  got = Parse("/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service");
  EXPECT_TRUE(got.user_delegated);
  EXPECT_FALSE(got.has_container());
}

TEST(CgroupPath, Crio) {
  const std::string pod = S("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod",
                            kPodUidUnderscores, ".slice");
  CgroupIdentity got = Parse(S(pod, "/crio-", kId, ".scope"));
  EXPECT_EQ(got.container_id, kId);
  EXPECT_EQ(got.runtime, ContainerRuntime::kCrio);
  EXPECT_EQ(got.pod_uid, kPodUid);
  EXPECT_EQ(got.qos_class, "besteffort");
  // crun on cgroup v2 puts the container's processes in a "container" leaf.
  ExpectContainer(S(pod, "/crio-", kId, ".scope/container"), kId, ContainerRuntime::kCrio);
  // CRI-O with the cgroupfs manager.
  ExpectContainer(S("/kubepods/burstable/pod", kPodUid, "/crio-", kId), kId,
                  ContainerRuntime::kCrio);
  // conmon: in the pod, not a container.
  got = Parse(S(pod, "/crio-conmon-", kId, ".scope"));
  EXPECT_FALSE(got.has_container());
  EXPECT_EQ(got.pod_uid, kPodUid);
}

TEST(CgroupPath, KubernetesCgroupfsDriver) {
  CgroupIdentity got = Parse(S("/kubepods/burstable/pod", kPodUid, "/", kId));
  EXPECT_EQ(got.container_id, kId);
  // The path does not say whether containerd or cri-dockerd made it.
  EXPECT_EQ(got.runtime, ContainerRuntime::kUnknown);
  EXPECT_EQ(got.pod_uid, kPodUid);
  EXPECT_EQ(got.qos_class, "burstable");

  got = Parse(S("/kubepods/besteffort/pod", kPodUid, "/", kId));
  EXPECT_EQ(got.qos_class, "besteffort");
  EXPECT_EQ(got.container_id, kId);

  // Guaranteed pods sit directly under kubepods.
  got = Parse(S("/kubepods/pod", kPodUid, "/", kId));
  EXPECT_EQ(got.qos_class, "guaranteed");
  EXPECT_EQ(got.pod_uid, kPodUid);
  EXPECT_EQ(got.container_id, kId);

  // The pod's own cgroup: pod and QoS, no container.
  got = Parse(S("/kubepods/burstable/pod", kPodUid));
  EXPECT_EQ(got.pod_uid, kPodUid);
  EXPECT_EQ(got.qos_class, "burstable");
  EXPECT_FALSE(got.has_container());

  // A pod-like name outside kubepods is not a pod.
  got = Parse(S("/system.slice/pod", kPodUid, "/", kId));
  EXPECT_FALSE(got.in_pod());
  EXPECT_FALSE(got.has_container());
}

TEST(CgroupPath, KubernetesSystemdDriver) {
  const std::string burstable = S("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod",
                                  kPodUidUnderscores, ".slice");
  CgroupIdentity got = Parse(S(burstable, "/cri-containerd-", kId, ".scope"));
  EXPECT_EQ(got.container_id, kId);
  EXPECT_EQ(got.runtime, ContainerRuntime::kContainerd);
  EXPECT_EQ(got.pod_uid, kPodUid);  // dashed, canonical
  EXPECT_EQ(got.qos_class, "burstable");

  // Guaranteed.
  got = Parse(S("/kubepods.slice/kubepods-pod", kPodUidUnderscores, ".slice/cri-containerd-", kId,
                ".scope"));
  EXPECT_EQ(got.qos_class, "guaranteed");
  EXPECT_EQ(got.pod_uid, kPodUid);
  EXPECT_EQ(got.container_id, kId);

  // Kubernetes with Docker through cri-dockerd.
  got = Parse(S(burstable, "/docker-", kId, ".scope"));
  EXPECT_EQ(got.runtime, ContainerRuntime::kDocker);
  EXPECT_EQ(got.pod_uid, kPodUid);

  // The pod slice alone.
  got = Parse(burstable);
  EXPECT_EQ(got.pod_uid, kPodUid);
  EXPECT_EQ(got.qos_class, "burstable");
  EXPECT_FALSE(got.has_container());

  // A QoS slice is not a pod.
  got = Parse("/kubepods.slice/kubepods-burstable.slice");
  EXPECT_FALSE(got.in_pod());
  EXPECT_TRUE(got.qos_class.empty());

  // kubelet with --cgroup-root=/kubelet (kind nodes).
  got =
      Parse(S("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
              "kubelet-kubepods-besteffort-pod",
              kPodUidUnderscores, ".slice/cri-containerd-", kId, ".scope"));
  EXPECT_EQ(got.pod_uid, kPodUid);
  EXPECT_EQ(got.qos_class, "besteffort");
  EXPECT_EQ(got.container_id, kId);

  // containerd without SystemdCgroup under a systemd kubelet: runc's
  // cgroupfs driver takes "slice:prefix:id" literally (cgroup v1).
  got = Parse(S("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod",
                kPodUidUnderscores, ".slice:cri-containerd:", kId));
  EXPECT_EQ(got.container_id, kId);
  EXPECT_EQ(got.runtime, ContainerRuntime::kContainerd);
}

TEST(CgroupPath, KubernetesStaticPodUidIsAHash) {
  // A static pod's UID is the 32-hex hash of its manifest.
  constexpr char kStatic[] = "7b2a0b5c9e1d4f3a8c6b0e2d4f6a8c0e";
  CgroupIdentity got = Parse(S("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod",
                               kStatic, ".slice/cri-containerd-", kId, ".scope"));
  EXPECT_EQ(got.pod_uid, kStatic);
  got = Parse(S("/kubepods/burstable/pod", kStatic, "/", kId));
  EXPECT_EQ(got.pod_uid, kStatic);
}

TEST(CgroupPath, KubernetesPauseContainerIsAContainerOfThePod) {
  // The sandbox has a container id like any other; only the metadata says it
  // is the pause container.
  constexpr char kPause[] = "446c65ab43d490ab8d7f693a46050db88f66a2bf657eda0c3de8bc8bab516be4";
  CgroupIdentity got = Parse(S("/kubepods/besteffort/pod", kPodUid, "/", kPause));
  EXPECT_EQ(got.container_id, kPause);
  EXPECT_EQ(got.pod_uid, kPodUid);
}

TEST(CgroupPath, SystemdNspawn) {
  ExpectContainer("/machine.slice/systemd-nspawn@web.service/payload", "web",
                  ContainerRuntime::kSystemdNspawn);
  // Older systemd: everything in the unit's cgroup.
  ExpectContainer("/machine.slice/systemd-nspawn@web.service", "web",
                  ContainerRuntime::kSystemdNspawn);
  // systemd escapes '-' in unit names.
  ExpectContainer("/machine.slice/systemd-nspawn@debian\\x2dbookworm.service/payload",
                  "debian-bookworm", ContainerRuntime::kSystemdNspawn);
  ExpectContainer(
      "/machine.slice/machine-debian\\x2dbookworm.scope/payload/system.slice/"
      "cron.service",
      "debian-bookworm", ContainerRuntime::kSystemdNspawn);
  ExpectContainer("/machine.slice/machine-web.scope", "web", ContainerRuntime::kSystemdNspawn);
  // systemd-nspawn itself.
  ExpectNoContainer("/machine.slice/systemd-nspawn@web.service/supervisor");
  ExpectNoContainer("/machine.slice/machine-web.scope/supervisor");
  // libvirt's VMs and libvirt-lxc domains are machines too, not nspawn.
  ExpectNoContainer("/machine.slice/machine-qemu\\x2d1\\x2dvm1.scope");
  ExpectNoContainer("/machine.slice/machine-lxc\\x2d4242\\x2dweb.scope");
  // Escapes that decode to something that is not a name.
  ExpectNoContainer("/machine.slice/machine-a\\x2fb.scope");
  ExpectNoContainer("/machine.slice/machine-a\\x00b.scope");
  ExpectNoContainer("/machine.slice/machine-a\\x2.scope");
  ExpectNoContainer("/machine.slice/machine-a\\.scope");
}

TEST(CgroupPath, Lxc) {
  ExpectContainer("/lxc/web", "web", ContainerRuntime::kLxc);
  ExpectContainer("/lxc.payload.web", "web", ContainerRuntime::kLxc);
  ExpectContainer("/lxc.payload.web/system.slice/cron.service", "web", ContainerRuntime::kLxc);
  ExpectContainer("/lxc.payload/web", "web", ContainerRuntime::kLxc);
  // Unprivileged LXC below the user's delegated cgroup.
  CgroupIdentity got =
      Parse("/user.slice/user-1000.slice/user@1000.service/app.slice/lxc.payload.web");
  EXPECT_EQ(got.container_id, "web");
  EXPECT_TRUE(got.user_delegated);
  ExpectNoContainer("/lxc.monitor.web");
  ExpectNoContainer("/lxc.monitor/web");
}

TEST(CgroupPath, HostServicesAreNoContainer) {
  for (const char* path :
       {"/", "/init.scope", "/system.slice/ssh.service", "/system.slice/systemd-journald.service",
        "/user.slice/user-1000.slice/session-3.scope",
        "/user.slice/user-0.slice/user@0.service/init.scope",
        // This machine's hybrid memory hierarchy: a 32-hex id is no
        // container id.
        "/process_api/c8b8e07463c3d24d2131d3907293e90c"}) {
    CgroupIdentity got = Parse(path);
    EXPECT_FALSE(got.has_container()) << path;
    EXPECT_FALSE(got.in_pod()) << path;
  }
}

TEST(CgroupPath, IdsOfTheWrongShapeAreNoContainer) {
  const std::string upper = "9EC39B91F3D70E1BEFF50A308F77067065EA6BE0D91A3378375056CD4422CF3D";
  ExpectNoContainer(S("/docker/", upper));
  ExpectNoContainer(S("/docker/", std::string(kId).substr(0, 63)));
  ExpectNoContainer(S("/docker/", kId, "0"));
  ExpectNoContainer(S("/system.slice/docker-", std::string(kId).substr(0, 12), ".scope"));
  std::string non_hex = kId;
  non_hex[10] = 'g';
  ExpectNoContainer(S("/system.slice/docker-", non_hex, ".scope"));
  ExpectNoContainer("/system.slice/docker-.scope");
  // A pod UID of the wrong shape is no pod, and its child no container.
  CgroupIdentity got = Parse(S("/kubepods/burstable/pod05b3ee07-a2bd-47e7-9599/", kId));
  EXPECT_FALSE(got.in_pod());
  EXPECT_FALSE(got.has_container());
  got = Parse("/kubepods.slice/kubepods-pod05b3ee07-a2bd-47e7-9599-7961201f20dd.slice");
  EXPECT_FALSE(got.in_pod());  // the systemd form uses '_'
}

TEST(CgroupPath, OutermostContainerWins) {
  // A kind node (Docker) running a Kubernetes pod inside: the host's runtime
  // knows the node container, and a process inside it cannot claim another
  // identity by naming a sub-cgroup.
  constexpr char kInner[] = "446c65ab43d490ab8d7f693a46050db88f66a2bf657eda0c3de8bc8bab516be4";
  CgroupIdentity got = Parse(S("/system.slice/docker-", kId,
                               ".scope/kubelet.slice/kubelet-kubepods.slice/"
                               "kubelet-kubepods-pod",
                               kPodUidUnderscores, S(".slice/cri-containerd-", kInner, ".scope")));
  EXPECT_EQ(got.container_id, kId);
  EXPECT_EQ(got.runtime, ContainerRuntime::kDocker);
  EXPECT_FALSE(got.in_pod());
  got = Parse(S("/docker/", kId, "/docker/", kInner));
  EXPECT_EQ(got.container_id, kId);
}

TEST(CgroupPath, MalformedPathsAreRefused) {
  EXPECT_EQ(ParseCgroupPath("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseCgroupPath("docker/x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseCgroupPath(std::string("/docker/\0x", 10)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ParseCgroupPath("/docker/../etc").ok());
  EXPECT_FALSE(ParseCgroupPath("/docker/./x").ok());
  EXPECT_FALSE(ParseCgroupPath("/docker//x").ok());
  EXPECT_FALSE(ParseCgroupPath("/docker/").ok());
  EXPECT_FALSE(ParseCgroupPath(S("/docker/", kId, "/..")).ok());
  EXPECT_FALSE(ParseCgroupPath("/" + std::string(5000, 'a')).ok());
  // What a reader in another cgroup namespace sees: the message says so.
  auto ns = ParseCgroupPath(S("/../../kubepods-besteffort.slice/cri-containerd-", kId, ".scope"));
  ASSERT_FALSE(ns.ok());
  EXPECT_NE(ns.status().message().find("cgroup namespace"), std::string::npos);
}

TEST(CgroupProcFile, CgroupV2) {
  auto got = ParseProcCgroup(S("0::/system.slice/docker-", kId, ".scope\n"));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->container_id, kId);
  EXPECT_EQ(got->runtime, ContainerRuntime::kDocker);

  got = ParseProcCgroup("0::/system.slice/ssh.service\n");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_container());
  EXPECT_EQ(got->cgroup_path, "/system.slice/ssh.service");
}

TEST(CgroupProcFile, CgroupV1DockerCgroupfs) {
  const std::string p = S("/docker/", kId);
  const std::string content = S("12:hugetlb:", p, "\n11:net_cls,net_prio:", p, "\n") +
                              S("10:cpu,cpuacct:", p, "\n9:memory:", p, "\n") +
                              S("8:devices:", p, "\n7:pids:", p, "\n1:name=systemd:", p, "\n");
  auto got = ParseProcCgroup(content);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->container_id, kId);
  EXPECT_EQ(got->runtime, ContainerRuntime::kDocker);
}

TEST(CgroupProcFile, HybridPodmanCgroupfsOnThisMachine) {
  // `podman --runtime runc --cgroup-manager cgroupfs run ... cat /proc/self/cgroup`
  // on this machine's hybrid hierarchy (podman 4.3).
  const std::string p = S("/libpod_parent/libpod-", kPodmanId);
  const std::string content =
      S("9:name=systemd:", p, "\n8:pids:", p, "\n") + S("7:blkio:", p, "\n6:freezer:", p, "\n") +
      S("5:devices:", p, "\n4:memory:", p, "\n") + S("3:cpuset:", p, "\n2:cpuacct:", p, "\n") +
      S("1:cpu:", p, "\n0::", p, "\n");
  auto got = ParseProcCgroup(content);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->container_id, kPodmanId);
  EXPECT_EQ(got->runtime, ContainerRuntime::kPodman);
}

TEST(CgroupProcFile, HybridPrefersTheLineThatYieldsAContainer) {
  // systemd's unified hierarchy tracks the daemon; the v1 controllers hold
  // the container.
  const std::string content = S("4:memory:/docker/", kId, "\n1:name=systemd:/docker/", kId,
                                "\n0::/system.slice/containerd.service\n");
  auto got = ParseProcCgroup(content);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->container_id, kId);
  EXPECT_EQ(got->cgroup_path, S("/docker/", kId));
}

TEST(CgroupProcFile, V2LineFirstWhenBothYieldAContainer) {
  const std::string content =
      S("4:memory:/docker/", kPodmanId, "\n0::/system.slice/docker-", kId, ".scope\n");
  auto got = ParseProcCgroup(content);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->container_id, kId);
}

TEST(CgroupProcFile, HostProcessOnThisMachine) {
  // This machine's own /proc/self/cgroup: hybrid, one controller elsewhere.
  auto got = ParseProcCgroup(
      "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n"
      "4:memory:/process_api/c8b8e07463c3d24d2131d3907293e90c\n3:cpuset:/\n2:cpuacct:/\n"
      "1:cpu:/\n0::/\n");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->has_container());
  EXPECT_EQ(got->cgroup_path, "/");  // the v2 line
}

TEST(CgroupProcFile, PodWithoutContainerIsKept) {
  auto got = ParseProcCgroup(S("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod",
                               kPodUidUnderscores, S(".slice/crio-conmon-", kId, ".scope\n")));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->has_container());
  EXPECT_EQ(got->pod_uid, kPodUid);
}

TEST(CgroupProcFile, BoundsAndMalformedLines) {
  EXPECT_EQ(ParseProcCgroup(std::string(kMaxProcCgroupBytes + 1, 'a')).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ParseProcCgroup("0::/" + std::string(5000, 'a') + "\n").status().code(),
            absl::StatusCode::kResourceExhausted);
  std::string many;
  for (int i = 0; i < 65; ++i) many += std::to_string(i + 1) + ":cpu:/\n";
  EXPECT_EQ(ParseProcCgroup(many).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ParseProcCgroup("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseProcCgroup("\n").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseProcCgroup("garbage\n").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseProcCgroup("x:cpu:/\n").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseProcCgroup(":cpu:/\n").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseProcCgroup("0:/\n").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseProcCgroup("99999999999:cpu:/\n").status().code(),
            absl::StatusCode::kInvalidArgument);
  auto dotdot = ParseProcCgroup("0::/../../system.slice/ssh.service\n");
  ASSERT_FALSE(dotdot.ok());
  EXPECT_NE(dotdot.status().message().find("line 1"), std::string::npos);
  // The path itself may contain ':' (the "slice:prefix:id" form).
  auto colon = ParseProcCgroup(S("1:name=systemd:/kubepods.slice/kubepods-pod", kPodUidUnderscores,
                                 ".slice:cri-containerd:", kId, "\n"));
  ASSERT_TRUE(colon.ok()) << colon.status();
  EXPECT_EQ(colon->container_id, kId);
}

// Fuzz-style: random bytes and mutations of real inputs must never crash, and
// whatever is accepted must be a well-formed identity.
TEST(CgroupFuzz, RandomAndMutatedInputsNeverCrash) {
  std::mt19937 rng(20261207);
  const std::vector<std::string> seeds = {
      S("0::/system.slice/docker-", kId, ".scope\n"),
      S("9:name=systemd:/libpod_parent/libpod-", kPodmanId, "\n0::/libpod_parent/libpod-",
        kPodmanId, "\n"),
      S("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod", kPodUidUnderscores,
        S(".slice/cri-containerd-", kId, ".scope\n")),
      S("1:name=systemd:/kubepods/besteffort/pod", kPodUid, "/", kId, "\n"),
      "0::/machine.slice/systemd-nspawn@debian\\x2dbookworm.service/payload\n",
      "0::/lxc.payload.web\n0::/../../x\n",
  };
  using namespace std::string_literals;
  const std::string alphabet = "0123456789abcdef:/\\x-_.@\n\0kubepodsdockerlibpodcrio"s;
  auto check = [](const std::string& input) {
    auto got = ParseProcCgroup(input);
    if (!got.ok()) return;
    EXPECT_FALSE(got->cgroup_path.empty());
    EXPECT_EQ(got->cgroup_path.front(), '/');
    if (got->runtime == ContainerRuntime::kNone) {
      EXPECT_TRUE(got->container_id.empty());
    }
    if (got->has_container()) {
      EXPECT_NE(got->runtime, ContainerRuntime::kNone);
    }
    EXPECT_EQ(got->container_id.find('/'), std::string::npos);
    EXPECT_EQ(got->container_id.find('\0'), std::string::npos);
    EXPECT_EQ(got->qos_class.empty(), got->pod_uid.empty());
  };
  for (int round = 0; round < 20000; ++round) {
    std::string input;
    if (round % 4 == 0) {
      input.resize(rng() % 512);
      for (char& c : input) c = static_cast<char>(rng() & 0xff);
    } else {
      input = seeds[rng() % seeds.size()];
      const int edits = 1 + static_cast<int>(rng() % 8);
      for (int e = 0; e < edits && !input.empty(); ++e) {
        const std::size_t at = rng() % input.size();
        switch (rng() % 4) {
          case 0:
            input[at] = alphabet[rng() % alphabet.size()];
            break;
          case 1:
            input.erase(at, 1 + rng() % 8);
            break;
          case 2:
            input.insert(at, 1, alphabet[rng() % alphabet.size()]);
            break;
          case 3:
            input.insert(at, input.substr(rng() % input.size(), rng() % 80));
            break;
        }
      }
    }
    check(input);
  }
  // Large inputs: a 1 MB line, 64 KiB exactly, many short lines.
  check(std::string(1 << 20, 'a'));
  check("0::/" + std::string(1 << 20, 'a'));
  check("0::/" + std::string(kMaxProcCgroupBytes - 5, 'a') + "\n");
  std::string lines;
  for (int i = 0; i < 10000; ++i) lines += "0::/\n";
  check(lines);
  check(std::string(1000, '\n'));
}

}  // namespace
}  // namespace kspan
