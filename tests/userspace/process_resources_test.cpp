// Process resources: built from /proc (a real one and fake trees in the
// kernel's formats), with container identity from the cgroup, the service
// name's order of precedence, and identity that follows exec and exit.
#include "userspace/process_resources.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "tests/userspace/fake_proc.h"
#include "userspace/container_metadata.h"

namespace kspan {
namespace {

using ::kspan::testing::Environ;
using ::kspan::testing::FakeProc;

std::string Attr(const Resource& r, std::string_view key) {
  const auto* v = FindAttribute(r.attributes, key);
  if (v == nullptr) return "<absent>";
  if (const auto* s = std::get_if<std::string>(v)) return *s;
  return std::to_string(std::get<std::int64_t>(*v));
}

constexpr char kPodmanId[] = "e8737661a1142331a624a99aa954bbe6d0834b17ca4a92568f69e62f6538d6a3";

// A podman container's process as this machine's hybrid cgroups show it.
std::string PodmanCgroup() {
  const std::string path = std::string("/libpod_parent/libpod-") + kPodmanId;
  return "9:name=systemd:" + path + "\n4:memory:" + path + "\n0::" + path + "\n";
}

TEST(ProcessResources, DescribesALiveProcessFromProc) {
  ProcessResources resources;
  auto r = resources.For(static_cast<std::uint32_t>(getpid()), "ignored", 0);
  EXPECT_EQ(Attr(*r, "service.name"), "kspan_userspace_tests");
  EXPECT_EQ(Attr(*r, "process.executable.name"), "kspan_userspace_tests");
  EXPECT_NE(Attr(*r, "process.executable.path").find("/kspan_userspace_tests"), std::string::npos);
  EXPECT_EQ(Attr(*r, "process.pid"), std::to_string(getpid()));
  EXPECT_EQ(Attr(*r, "host.name"), resources.host_name());
  // Cached: the same resource object for the same process.
  EXPECT_EQ(resources.For(static_cast<std::uint32_t>(getpid()), "x", 0).get(), r.get());
}

TEST(ProcessResources, FallsBackToCommForAnExitedProcess) {
  ProcessResources::Options o;
  o.proc_root = "/nonexistent";
  o.host_name = "h";
  ProcessResources resources(o);
  auto r = resources.For(99999, "nginx", 0);
  EXPECT_EQ(Attr(*r, "service.name"), "nginx");
  EXPECT_EQ(Attr(*r, "process.executable.path"), "<absent>");
}

TEST(ProcessResources, StaysBounded) {
  ProcessResources::Options o;
  o.proc_root = "/nonexistent";
  o.host_name = "h";
  o.max_entries = 4;
  ProcessResources resources(o);
  auto first = resources.For(1, "a", 1);
  for (std::uint32_t pid = 2; pid < 100; ++pid) resources.For(pid, "b", 1 + pid);
  EXPECT_LE(resources.size(), 4u);
  // pid 1 was evicted along the way, so it is rebuilt (a new object).
  EXPECT_NE(resources.For(1, "a", 200).get(), first.get());
}

class FakeProcResources : public ::testing::Test {
 protected:
  ProcessResources::Options Options() const {
    ProcessResources::Options o;
    o.proc_root = proc_.root();
    o.host_name = "node-1";
    o.host_attributes = {{"host.id", std::string("0123abcd")}, {"os.type", std::string("linux")}};
    return o;
  }
  FakeProc proc_;
};

TEST_F(FakeProcResources, AContainerisedProcessCarriesItsContainer) {
  proc_.Process(201, 2, "201\t7", "/usr/bin/node", PodmanCgroup());
  ProcessResources resources(Options());
  auto r = resources.For(201, "node", 1);
  EXPECT_EQ(Attr(*r, "container.id"), kPodmanId);
  EXPECT_EQ(Attr(*r, "container.runtime"), "podman");
  EXPECT_EQ(Attr(*r, "process.pid"), "201");
  EXPECT_EQ(Attr(*r, "kspan.process.namespace_pid"), "7");
  EXPECT_EQ(Attr(*r, "process.linux.cgroup"),
            std::string("9:name=systemd:/libpod_parent/libpod-") + kPodmanId);
  // No name source given: the executable names it.
  EXPECT_EQ(Attr(*r, "service.name"), "node");
  EXPECT_EQ(Attr(*r, "host.name"), "node-1");
  EXPECT_EQ(Attr(*r, "host.id"), "0123abcd");
  EXPECT_EQ(Attr(*r, "os.type"), "linux");
}

TEST_F(FakeProcResources, AContainersNameComesFromTheEngine) {
  proc_.Process(201, 2, "201\t7", "/usr/bin/node", PodmanCgroup());
  // Podman's own record of its containers (containers/storage).
  FakeProc host;
  host.File("var/lib/containers/storage/overlay-containers/containers.json",
            std::string("[{\"id\":\"") + kPodmanId +
                "\",\"names\":[\"checkout-api\"],\"metadata\":\"{\\\"image-name\\\":"
                "\\\"localhost/shop:1\\\",\\\"name\\\":\\\"checkout-api\\\"}\"}]");
  ContainerMetadata::Options co;
  co.host_root = host.root();
  ContainerMetadata containers(co);
  auto o = Options();
  o.containers = &containers;
  ProcessResources resources(o);
  auto r = resources.For(201, "node", 1);
  EXPECT_EQ(Attr(*r, "container.name"), "checkout-api");
  EXPECT_EQ(Attr(*r, "container.image.name"), "localhost/shop:1");
  EXPECT_EQ(Attr(*r, "service.name"), "checkout-api");
}

TEST_F(FakeProcResources, ServiceNameFromTheEnvironmentThenFromItsOwnSpans) {
  proc_.Process(10, 1, "10", "/usr/bin/python3", "0::/system.slice/shop.service\n",
                Environ({"PATH=/bin", "OTEL_RESOURCE_ATTRIBUTES=service.name=cart,team=a",
                         "SECRET_TOKEN=hunter2"}));
  proc_.Process(11, 1, "11", "/usr/bin/python3", "",
                Environ({"OTEL_RESOURCE_ATTRIBUTES=service.name=cart", "OTEL_SERVICE_NAME=checkout"}));
  ProcessResources resources(Options());
  auto a = resources.For(10, "python3", 1);
  EXPECT_EQ(Attr(*a, "service.name"), "cart");
  // Nothing else of the environment leaves.
  for (const auto& attr : a->attributes) {
    if (const auto* v = std::get_if<std::string>(&attr.value)) {
      EXPECT_EQ(v->find("hunter2"), std::string::npos);
    }
  }
  EXPECT_EQ(Attr(*resources.For(11, "python3", 1), "service.name"), "checkout");
  // The name its own spans carry (checked by the receiver) wins from now on.
  resources.LearnServiceName(11, "unknown_service:python3");  // an SDK's default: not a name
  EXPECT_EQ(Attr(*resources.For(11, "python3", 2), "service.name"), "checkout");
  resources.LearnServiceName(11, "checkout-v2");
  auto b = resources.For(11, "python3", 3);
  EXPECT_EQ(Attr(*b, "service.name"), "checkout-v2");
  EXPECT_EQ(Attr(*b, "process.executable.path"), "/usr/bin/python3");
}

TEST_F(FakeProcResources, IdentityFollowsExec) {
  // A shell forks; the child runs as bash, then execs python3.
  proc_.Process(300, 1, "300", "/usr/bin/bash");
  ProcessResources resources(Options());
  EXPECT_EQ(Attr(*resources.For(300, "bash", 100), "service.name"), "bash");
  proc_.Link("300/exe", "/usr/bin/python3.11");
  resources.OnExec(300, 1, 200, "python3", "/usr/bin/python3");
  auto after = resources.For(300, "python3", 250);
  EXPECT_EQ(Attr(*after, "service.name"), "python3.11");
  EXPECT_EQ(Attr(*after, "process.executable.path"), "/usr/bin/python3.11");
  // A span that began before the exec is the shell's, even if it comes late.
  EXPECT_EQ(Attr(*resources.For(300, "bash", 150), "service.name"), "bash");
  EXPECT_EQ(Attr(*resources.For(300, "python3", 260), "service.name"), "python3.11");
}

TEST_F(FakeProcResources, BeforeItsExecAForkedChildIsItsParent) {
  // A shell (pid 50) forks pid 51, which connects, then execs curl; kspan
  // had never read pid 51 and sees the exec first (the process ring is
  // drained before the others).
  proc_.Process(50, 1, "50", "/usr/bin/bash", "0::/user.slice/session-1.scope\n",
                Environ({"OTEL_SERVICE_NAME=deploy-script"}));
  proc_.Process(51, 1, "51", "/usr/bin/curl");
  ProcessResources resources(Options());
  resources.OnExec(51, 50, 200, "curl", "/usr/bin/curl");
  auto before = resources.For(51, "bash", 150);
  EXPECT_EQ(Attr(*before, "service.name"), "deploy-script");
  EXPECT_EQ(Attr(*before, "process.executable.path"), "/usr/bin/bash");
  EXPECT_EQ(Attr(*before, "process.pid"), "51");
  auto after = resources.For(51, "curl", 250);
  EXPECT_EQ(Attr(*after, "service.name"), "curl");
  EXPECT_EQ(Attr(*after, "process.pid"), "51");
  // The parent's own identity is untouched.
  EXPECT_EQ(Attr(*resources.For(50, "bash", 260), "process.pid"), "50");
}

// The same child, looked up by a span of its before the exec record is read
// (the exec came after the rings were last drained): /proc already shows
// curl, the record says bash. The span is the parent's image; later spans,
// and the exec record when it comes, are curl's.
TEST_F(FakeProcResources, ASpanLookedUpBeforeItsExecRecordKeepsTheImageItRan) {
  proc_.Process(60, 1, "60", "/usr/bin/bash", "0::/user.slice/session-1.scope\n",
                Environ({"OTEL_SERVICE_NAME=deploy-script"}));
  proc_.File("60/comm", "bash\n");
  proc_.Process(61, 1, "61", "/usr/bin/curl");
  proc_.File("61/comm", "curl\n");
  proc_.File("61/status", "Name:\tcurl\nTgid:\t61\nNSpid:\t61\nPPid:\t60\n");
  ProcessResources resources(Options());
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const std::uint64_t connect_ns = static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + ts.tv_nsec;
  auto before = resources.For(61, "bash", connect_ns);
  EXPECT_EQ(Attr(*before, "service.name"), "deploy-script");
  EXPECT_EQ(Attr(*before, "process.executable.path"), "/usr/bin/bash");
  EXPECT_EQ(Attr(*before, "process.pid"), "61");
  // The exec record comes: it is the exec /proc showed, now with its time.
  resources.OnExec(61, 60, connect_ns + 1000, "curl", "/usr/bin/curl");
  EXPECT_EQ(Attr(*resources.For(61, "bash", connect_ns), "service.name"), "deploy-script");
  auto after = resources.For(61, "curl", connect_ns + 2000);
  EXPECT_EQ(Attr(*after, "service.name"), "curl");
  EXPECT_EQ(Attr(*after, "process.executable.path"), "/usr/bin/curl");
  // A process whose parent runs another program than the record names
  // (not a fork about to exec): the record's name, never the new image's.
  proc_.Process(70, 1, "70", "/usr/bin/python3.11");
  proc_.File("70/comm", "python3\n");
  proc_.File("70/status", "Name:\tpython3\nTgid:\t70\nNSpid:\t70\nPPid:\t60\n");
  auto old = resources.For(70, "make", connect_ns);
  EXPECT_EQ(Attr(*old, "process.executable.name"), "make");
  EXPECT_EQ(Attr(*resources.For(70, "python3", connect_ns + 60'000'000'000), "service.name"), "python3.11");
}

TEST_F(FakeProcResources, AReusedPidNeverInheritsTheOldIdentity) {
  proc_.Process(400, 1, "400", "/usr/bin/python3");
  MetricsRegistry metrics;
  ProcessResources resources(Options(), &metrics);
  EXPECT_EQ(Attr(*resources.For(400, "python3", 100), "service.name"), "python3");
  resources.LearnServiceName(400, "api");
  resources.OnExit(400, 200);
  // Its late spans keep its identity.
  EXPECT_EQ(Attr(*resources.For(400, "python3", 150), "service.name"), "api");
  // The pid goes to another program, which never execs (a fork of curl's
  // parent, say): spans after the exit are that process's.
  proc_.Remove(400);
  proc_.Process(400, 1, "400", "/usr/bin/curl");
  auto next = resources.For(400, "curl", 300);
  EXPECT_EQ(Attr(*next, "service.name"), "curl");
  EXPECT_EQ(metrics.CounterTotal("kspan_process_pid_reuses_total"), 1u);
  // And the old one's last spans are still its own.
  EXPECT_EQ(Attr(*resources.For(400, "python3", 190), "service.name"), "api");
}

TEST_F(FakeProcResources, AShortLivedProcessIsDescribedByItsExecRecord) {
  ProcessResources resources(Options());
  // Gone from /proc by the time kspan reads it.
  resources.OnExec(500, 1, 100, "job", "/opt/batch/job");
  auto r = resources.For(500, "job", 110);
  EXPECT_EQ(Attr(*r, "service.name"), "job");
  EXPECT_EQ(Attr(*r, "process.executable.path"), "/opt/batch/job");
}

// A container's shell runs curl, which posts and exits before kspan reads
// its exec record: the container is the parent's (a child starts in its
// parent's cgroup), the program the record's.
// Records name the thread: a worker thread that named itself is no exec.
TEST_F(FakeProcResources, ANamedThreadIsNotTakenForAnExec) {
  proc_.Process(80, 1, "80", "/usr/bin/node", "", Environ({"OTEL_SERVICE_NAME=checkout"}));
  proc_.File("80/comm", "node\n");
  proc_.File("80/task/80/comm", "node\n");
  proc_.File("80/task/81/comm", "libuv-worker\n");
  ProcessResources resources(Options());
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const std::uint64_t now_ns = static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + ts.tv_nsec;
  auto r = resources.For(80, "libuv-worker", now_ns);
  EXPECT_EQ(Attr(*r, "service.name"), "checkout");
  EXPECT_EQ(Attr(*r, "process.executable.path"), "/usr/bin/node");
  EXPECT_EQ(Attr(*resources.For(80, "node", now_ns + 1000), "service.name"), "checkout");
}

TEST_F(FakeProcResources, AShortLivedChildGoneBeforeItsExecIsReadKeepsItsParentsContainer) {
  proc_.Process(210, 2, "210\t1", "/usr/bin/dash", PodmanCgroup());
  ProcessResources resources(Options());
  resources.OnExec(211, 210, 100, "curl", "/usr/bin/curl");
  auto r = resources.For(211, "curl", 110);
  EXPECT_EQ(Attr(*r, "container.id"), kPodmanId);
  EXPECT_EQ(Attr(*r, "container.runtime"), "podman");
  EXPECT_EQ(Attr(*r, "process.pid"), "211");
  EXPECT_EQ(Attr(*r, "process.executable.name"), "curl");
  EXPECT_EQ(Attr(*r, "process.executable.path"), "/usr/bin/curl");
  EXPECT_EQ(Attr(*r, "kspan.process.namespace_pid"), "<absent>");
  // With the parent gone too, only the record remains.
  resources.OnExec(212, 299, 120, "job", "/opt/batch/job");
  EXPECT_EQ(Attr(*resources.For(212, "job", 130), "container.id"), "<absent>");
}

TEST_F(FakeProcResources, ExitedProcessesAreForgottenAfterTheirGrace) {
  proc_.Process(600, 1, "600", "/usr/bin/sleep");
  auto o = Options();
  o.exited_grace = std::chrono::seconds(1);
  ProcessResources resources(o);
  resources.For(600, "sleep", 100);
  resources.OnExit(600, 1'000);
  resources.Sweep(500'000'000);
  EXPECT_EQ(resources.size(), 1u);
  resources.Sweep(2'000'000'000);
  EXPECT_EQ(resources.size(), 0u);
}

TEST_F(FakeProcResources, AgentWideAttributesFillWhatTheKernelDidNotSay) {
  proc_.Process(700, 1, "700", "/usr/bin/nginx");
  auto o = Options();
  o.extra_attributes = {{"k8s.cluster.name", std::string("prod")},
                        {"host.name", std::string("spoofed")},
                        {"service.name", std::string("everyone")}};
  o.host_service_name = "node-agent";
  ProcessResources resources(o);
  auto r = resources.For(700, "nginx", 1);
  EXPECT_EQ(Attr(*r, "k8s.cluster.name"), "prod");
  EXPECT_EQ(Attr(*r, "host.name"), "node-1");
  EXPECT_EQ(Attr(*r, "service.name"), "nginx");
  auto host = resources.For(0, "", 1);
  EXPECT_EQ(Attr(*host, "service.name"), "node-agent");
  EXPECT_EQ(Attr(*host, "k8s.cluster.name"), "prod");
  EXPECT_EQ(Attr(*host, "process.pid"), "<absent>");
}

TEST(ServiceNameFromEnviron, TakesOnlyTheServiceName) {
  EXPECT_EQ(ServiceNameFromEnviron(Environ({"A=1", "OTEL_SERVICE_NAME=shop"})), "shop");
  EXPECT_EQ(ServiceNameFromEnviron(Environ({"OTEL_SERVICE_NAME= "})), "");
  EXPECT_EQ(ServiceNameFromEnviron(Environ({"OTEL_RESOURCE_ATTRIBUTES=a=b,service.name=my%20svc"})), "my svc");
  EXPECT_EQ(ServiceNameFromEnviron(Environ({"OTEL_RESOURCE_ATTRIBUTES=broken"})), "");
  EXPECT_EQ(ServiceNameFromEnviron(""), "");
  EXPECT_EQ(ServiceNameFromEnviron(std::string(300, 'x')), "");
  EXPECT_EQ(ServiceNameFromEnviron("OTEL_SERVICE_NAME=" + std::string(1000, 'n')).size(), 256u);
}

TEST(DetectHostAttributes, MachineIdArchAndOs) {
  FakeProc root;
  root.File("etc/machine-id", "6b3f0c2a9d6e4f1b8a7c5d4e3f2a1b0c\n");
  auto a = DetectHostAttributes(root.root());
  auto find = [&](std::string_view k) {
    const auto* v = FindAttribute(a, k);
    return v ? std::get<std::string>(*v) : std::string("<absent>");
  };
  EXPECT_EQ(find("host.id"), "6b3f0c2a9d6e4f1b8a7c5d4e3f2a1b0c");
  EXPECT_EQ(find("os.type"), "linux");
  EXPECT_NE(find("host.arch"), "<absent>");
  FakeProc empty;
  EXPECT_EQ(FindAttribute(DetectHostAttributes(empty.root()), "host.id"), nullptr);
}

}  // namespace
}  // namespace kspan
