// Real containers for end-to-end tests: small RAII wrappers over the podman
// CLI (rootful, runc, cgroupfs; see docs/containers.md).
//
// Every argument reaches podman as its own argv element (posix_spawn, no
// shell), so names, paths and environment values need no quoting. Whatever
// a test creates is removed by the destructors, also when the test fails;
// a leftover of the same name from a crashed run is replaced, and networks
// and containers whose owning test process is gone are removed before new
// ones are made.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kspan::testing {

// What a command printed and how it ended.
struct CommandResult {
  int status = -1;  // exit status; 128 + signal when killed; -1 when it did not run or timed out
  bool timed_out = false;
  std::string out;  // stdout
  std::string err;  // stderr
  bool ok() const { return status == 0; }
  // "exit 1: <stderr>", for test messages.
  std::string Describe() const;
};

// Runs argv[0] (looked up in PATH) with stdin on /dev/null, capturing
// stdout and stderr; SIGKILLs it after `timeout`. No shell is involved.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         std::chrono::milliseconds timeout = std::chrono::seconds(60));

// `podman --runtime runc --cgroup-manager cgroupfs <args...>`: the suite
// always names runc (crun refused hosts with hybrid cgroups and no systemd)
// and cgroupfs (CI hosts have no systemd as pid 1).
CommandResult Podman(const std::vector<std::string>& args,
                     std::chrono::milliseconds timeout = std::chrono::seconds(60));

// The image the suite runs the demo in: localhost/kspan-test-node:<hash of
// tests/containers/build-image.sh>, set by CMake (KSPAN_TEST_IMAGE);
// the environment variable KSPAN_TEST_IMAGE overrides it.
std::string TestImage();

// True when podman and runc are installed, podman answers, and the test
// image is present; else false with the reason (and the fix) in *why.
bool PodmanUsable(std::string* why);

// A container to start; see PodmanContainer::Run.
struct ContainerSpec {
  // Required. A container of this name left by a crashed run is replaced.
  std::string name;
  std::string image = TestImage();
  // A podman network (e.g. PodmanNetwork::name()); empty: podman's default.
  // Either way the container has its own network namespace.
  std::string network;
  std::string ip;  // static IPv4 address on `network`; empty: assigned
  std::map<std::string, std::string> env;
  struct Mount {
    std::string host_path;
    std::string container_path;
    bool read_only = true;
  };
  std::vector<Mount> mounts;
  // More `podman run` options, placed before the image.
  std::vector<std::string> extra_run_args;
  // The command; empty: the image's CMD.
  std::vector<std::string> command;
};

// One detached container: `podman run -d`, then `podman rm -f` in the
// destructor. Move-only. Meant for services: Run() fails when the
// container's process has already exited by the time it is inspected.
class PodmanContainer {
 public:
  static absl::StatusOr<PodmanContainer> Run(const ContainerSpec& spec);

  PodmanContainer(PodmanContainer&& other) noexcept;
  PodmanContainer& operator=(PodmanContainer&& other) noexcept;
  PodmanContainer(const PodmanContainer&) = delete;
  PodmanContainer& operator=(const PodmanContainer&) = delete;
  ~PodmanContainer();  // podman rm -f (SIGKILL if still running)

  const std::string& id() const { return id_; }  // 64 hex digits
  const std::string& name() const { return name_; }
  // The container's first process as the host sees it (State.Pid).
  int host_pid() const { return host_pid_; }
  // Its address on the network it was started on ("" on none).
  const std::string& ip() const { return ip_; }

  // stdout and stderr so far (podman logs); the error when that failed.
  std::string logs() const;
  // `podman exec` in the running container.
  CommandResult Exec(const std::vector<std::string>& command,
                     std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;
  // Waits until the logs hold `needle`. False on timeout, or at once when
  // the container's process has exited.
  bool WaitLog(std::string_view needle, std::chrono::milliseconds timeout) const;
  // SIGTERM, then SIGKILL after `grace` (podman stop): lets the
  // OpenTelemetry SDK flush. Returns the container's exit code.
  absl::StatusOr<int> Stop(std::chrono::seconds grace = std::chrono::seconds(10));

 private:
  PodmanContainer() = default;
  void Remove() noexcept;

  std::string id_;
  std::string name_;
  std::string ip_;
  int host_pid_ = 0;
};

struct NetworkOptions {
  // Empty: "kspan-e2e-<pid>".
  std::string name;
  // IPv4 CIDR; the gateway is its first address. Empty: $KSPAN_TEST_SUBNET
  // if set (used as is), else 10.89.177.0/24, or the next /24 up to
  // 10.89.184.0/24 when podman finds one already used (another suite).
  std::string subnet;
};

// A dedicated podman bridge network, removed (with anything still attached)
// in the destructor. Move-only.
//
// The bridge interface and its gateway address exist only once a container
// has joined (CNI creates them then). To listen on the gateway before the
// services start, call BringUpBridge(); after a test's own first container,
// WaitBridgeUp() suffices.
class PodmanNetwork {
 public:
  static absl::StatusOr<PodmanNetwork> Create(NetworkOptions options = {});

  PodmanNetwork(PodmanNetwork&& other) noexcept;
  PodmanNetwork& operator=(PodmanNetwork&& other) noexcept;
  PodmanNetwork(const PodmanNetwork&) = delete;
  PodmanNetwork& operator=(const PodmanNetwork&) = delete;
  ~PodmanNetwork();

  const std::string& name() const { return name_; }
  const std::string& subnet() const { return subnet_; }
  const std::string& gateway() const { return gateway_; }  // on the host side
  // The host's bridge device for this network, e.g. "cni-podman1".
  const std::string& bridge_interface() const { return bridge_; }

  // Starts an idle container on the network (the anchor, `<name>-anchor`,
  // removed with the network) so that the bridge exists from now on, then
  // WaitBridgeUp(). Idempotent.
  absl::Status BringUpBridge(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Waits until bridge_interface() exists, is up and holds gateway().
  bool WaitBridgeUp(std::chrono::milliseconds timeout) const;

 private:
  PodmanNetwork() = default;
  void Remove() noexcept;

  std::string name_;
  std::string subnet_;
  std::string gateway_;
  std::string bridge_;
  std::optional<PodmanContainer> anchor_;
};

// The label podman objects of this suite carry: the owning test process as
// "<pid>-<start time>", so a later run can tell a crashed run's leftovers
// (owner gone) from a concurrent run's (owner alive).
inline constexpr char kOwnerLabel[] = "org.kspan.e2e.owner";

// Removes containers and networks labelled kOwnerLabel whose owner process
// no longer exists. Run once per test process before its first container or
// network; safe to call again.
void RemoveLeftoversOfDeadRuns();

}  // namespace kspan::testing
