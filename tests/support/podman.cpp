#include "tests/support/podman.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

#ifndef KSPAN_TEST_IMAGE
#error "KSPAN_TEST_IMAGE must name the test image (tests/support/CMakeLists.txt)"
#endif

extern char** environ;

namespace kspan::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

// Reads what is there without blocking; false at EOF or on error.
bool ReadSome(int fd, std::string* into) {
  char buf[8192];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) {
      into->append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return true;
    return false;  // EOF or error
  }
}

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// The start time of `pid` (clock ticks since boot, /proc/<pid>/stat field
// 22), or "" when there is no such process. With the pid it names one
// process over the host's uptime: pids are reused, start times with them.
std::string StartTime(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // comm (field 2) may hold spaces and parentheses: fields resume after
  // the last ')'.
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return "";
  std::vector<std::string> fields =
      absl::StrSplit(stat.substr(close + 1), ' ', absl::SkipEmpty());
  constexpr std::size_t kStartTime = 22 - 3;  // fields[0] is field 3
  return fields.size() > kStartTime ? fields[kStartTime] : "";
}

std::string OwnerOfThisProcess() {
  const int pid = static_cast<int>(getpid());
  return absl::StrCat(pid, "-", StartTime(pid));
}

bool OwnerAlive(const std::string& owner) {
  const auto dash = owner.find('-');
  if (dash == std::string::npos) return false;
  const int pid = std::atoi(owner.substr(0, dash).c_str());
  return pid > 0 && StartTime(pid) == owner.substr(dash + 1);
}

absl::StatusOr<json> ParseJson(const CommandResult& r, const std::string& what) {
  if (!r.ok()) return absl::InternalError(absl::StrCat(what, ": ", r.Describe()));
  json j = json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InternalError(absl::StrCat(what, ": not JSON: ", r.out));
  return j;
}

// podman's defaults (nofile 1048576, nproc 32768) can exceed the hard
// limits of the process that starts the container; runc then fails to set
// them ("error setting rlimits ... operation not permitted") where the
// suite runs without CAP_SYS_RESOURCE, as in some CI sandboxes. Limits
// this process holds itself are always allowed.
std::vector<std::string> UlimitArgs() {
  auto limit = [](int resource, rlim_t want) {
    rlimit rl{};
    if (getrlimit(resource, &rl) != 0) return want;
    return rl.rlim_max == RLIM_INFINITY ? want : std::min(want, rl.rlim_max);
  };
  const rlim_t nofile = limit(RLIMIT_NOFILE, 1 << 20);
  const rlim_t nproc = limit(RLIMIT_NPROC, 4096);
  return {"--ulimit", absl::StrCat("nofile=", nofile, ":", nofile),
          "--ulimit", absl::StrCat("nproc=", nproc, ":", nproc)};
}

// Network address and gateway (its first address) of an IPv4 CIDR.
absl::Status GatewayOf(const std::string& cidr, std::string* gateway) {
  const auto slash = cidr.find('/');
  in_addr addr{};
  if (slash == std::string::npos || inet_pton(AF_INET, cidr.substr(0, slash).c_str(), &addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("not an IPv4 CIDR: ", cidr));
  }
  const int len = std::atoi(cidr.substr(slash + 1).c_str());
  if (len < 8 || len > 30) {
    return absl::InvalidArgumentError(absl::StrCat("prefix length must be 8..30: ", cidr));
  }
  const std::uint32_t mask = ~std::uint32_t{0} << (32 - len);
  const std::uint32_t net = ntohl(addr.s_addr) & mask;
  in_addr gw{htonl(net + 1)};
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &gw, buf, sizeof(buf));
  *gateway = buf;
  return absl::OkStatus();
}

std::vector<std::string> SubnetCandidates() {
  if (const char* env = std::getenv("KSPAN_TEST_SUBNET"); env != nullptr && *env != '\0') {
    return {env};
  }
  // 10.89/16 lies beside podman's default 10.88.0.0/16 and far from
  // docker's 172.17+; 177..184 is unlikely to be a site's own range.
  std::vector<std::string> out;
  for (int third = 177; third <= 184; ++third) out.push_back(absl::StrCat("10.89.", third, ".0/24"));
  return out;
}

void RemoveLeftoversOnce() {
  static std::once_flag once;
  std::call_once(once, RemoveLeftoversOfDeadRuns);
}

}  // namespace

std::string CommandResult::Describe() const {
  std::string s = timed_out ? "timed out" : absl::StrCat("exit ", status);
  // absl's string_view: Debian's abseil does not alias std::string_view.
  const absl::string_view e = absl::StripAsciiWhitespace(err);
  if (!e.empty()) absl::StrAppend(&s, ": ", e);
  return s;
}

CommandResult RunCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  CommandResult r;
  if (argv.empty()) return r;
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0) return r;
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    return r;
  }
  // Only our ends: O_NONBLOCK on the write ends would reach the child.
  fcntl(out[0], F_SETFL, O_NONBLOCK);
  fcntl(err[0], F_SETFL, O_NONBLOCK);
  // posix_spawn rather than fork: the test process has threads (gRPC,
  // HTTP servers), and only exec is safe in a forked copy of them.
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  // Nothing else of the test process reaches podman, and through it conmon
  // and the containers: an inherited listening socket would stay open (and
  // owned by a container's monitor) after the test closed it.
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  // Its own process group, so a timeout kills what it started too.
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);
  std::vector<char*> args;
  std::vector<std::string> copy = argv;  // posix_spawn takes char* const[]
  for (auto& a : copy) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &fa, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  close(out[1]);
  close(err[1]);
  if (rc != 0) {
    r.err = absl::StrCat("cannot run ", argv[0], ": ", std::strerror(rc));
    close(out[0]);
    close(err[0]);
    return r;
  }

  const auto deadline = Clock::now() + timeout;
  bool out_open = true, err_open = true, exited = false;
  int status = 0;
  while (!exited || out_open || err_open) {
    if (!exited && waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      // A daemon it started (conmon) may hold the pipes open for good:
      // take what is there and stop reading.
      if (out_open) ReadSome(out[0], &r.out);
      if (err_open) ReadSome(err[0], &r.err);
      break;
    }
    if (Clock::now() >= deadline) {
      kill(-pid, SIGKILL);
      waitpid(pid, &status, 0);
      r.timed_out = true;
      break;
    }
    pollfd fds[2] = {{out_open ? out[0] : -1, POLLIN, 0}, {err_open ? err[0] : -1, POLLIN, 0}};
    poll(fds, 2, 20);
    if (out_open && fds[0].revents != 0) out_open = ReadSome(out[0], &r.out);
    if (err_open && fds[1].revents != 0) err_open = ReadSome(err[0], &r.err);
  }
  close(out[0]);
  close(err[0]);
  r.status = r.timed_out ? -1 : DecodeWaitStatus(status);
  return r;
}

CommandResult Podman(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
  std::vector<std::string> argv = {"podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, timeout);
}

std::string TestImage() {
  const char* env = std::getenv("KSPAN_TEST_IMAGE");
  return env != nullptr && *env != '\0' ? env : KSPAN_TEST_IMAGE;
}

bool PodmanUsable(std::string* why) {
  auto fail = [why](std::string reason) {
    if (why != nullptr) *why = std::move(reason);
    return false;
  };
  // Bridge networks and cgroup paths need rootful podman.
  if (geteuid() != 0) return fail("not running as root (the container tests use rootful podman)");
  for (const char* tool : {"podman", "runc"}) {
    const CommandResult r = RunCommand({tool, "--version"}, 30s);
    if (!r.ok()) {
      return fail(absl::StrCat(tool, " is not usable (", r.Describe(),
                               "); scripts/setup.sh installs it"));
    }
  }
  const CommandResult info = Podman({"info", "--format", "{{.Host.NetworkBackend}}"}, 60s);
  if (!info.ok()) return fail(absl::StrCat("podman info failed: ", info.Describe()));
  const std::string image = TestImage();
  const CommandResult exists = Podman({"image", "exists", image}, 30s);
  if (exists.status == 1) {
    return fail(absl::StrCat("the test image ", image,
                             " is missing: tests/containers/build-image.sh builds it "
                             "(scripts/test.sh runs it)"));
  }
  if (!exists.ok()) return fail(absl::StrCat("podman image exists: ", exists.Describe()));
  return true;
}

void RemoveLeftoversOfDeadRuns() {
  const std::string filter = absl::StrCat("label=", kOwnerLabel);
  auto containers = ParseJson(Podman({"ps", "-a", "--filter", filter, "--format", "json"}),
                              "podman ps");
  if (containers.ok() && containers->is_array()) {
    for (const auto& c : *containers) {
      const std::string owner = c.value("Labels", json::object()).value(kOwnerLabel, "");
      if (OwnerAlive(owner)) continue;
      Podman({"rm", "-f", "-t", "0", "--ignore", c.value("Id", "")});
    }
  }
  auto networks = ParseJson(Podman({"network", "ls", "--filter", filter, "--format", "json"}),
                            "podman network ls");
  if (networks.ok() && networks->is_array()) {
    for (const auto& n : *networks) {
      const std::string owner = n.value("labels", json::object()).value(kOwnerLabel, "");
      if (OwnerAlive(owner)) continue;
      Podman({"network", "rm", "-f", "-t", "0", n.value("name", "")});
    }
  }
}

// ---- PodmanContainer

absl::StatusOr<PodmanContainer> PodmanContainer::Run(const ContainerSpec& spec) {
  if (spec.name.empty()) return absl::InvalidArgumentError("a container needs a name");
  RemoveLeftoversOnce();
  std::vector<std::string> args = {
      "run", "--detach",
      // Only the locally built image: no registry is reachable, and a
      // missing image would otherwise cost three retried pulls.
      "--pull=never",
      // A container of this name left by a crashed run goes first.
      "--replace", "--name", spec.name,
      "--label", absl::StrCat(kOwnerLabel, "=", OwnerOfThisProcess()),
      // The default (journald where systemd runs) is absent on CI hosts.
      "--log-driver", "k8s-file"};
  const auto ulimits = UlimitArgs();
  args.insert(args.end(), ulimits.begin(), ulimits.end());
  if (!spec.network.empty()) args.insert(args.end(), {"--network", spec.network});
  if (!spec.ip.empty()) args.insert(args.end(), {"--ip", spec.ip});
  for (const auto& [key, value] : spec.env) {
    if (key.empty() || key.find('=') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("bad environment variable name: ", key));
    }
    args.insert(args.end(), {"--env", absl::StrCat(key, "=", value)});
  }
  for (const auto& m : spec.mounts) {
    // -v splits its argument at ':'; such a path cannot be expressed.
    if (m.host_path.empty() || m.container_path.empty() ||
        m.host_path.find(':') != std::string::npos ||
        m.container_path.find(':') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad bind mount ", m.host_path, " -> ", m.container_path));
    }
    args.insert(args.end(), {"--volume", absl::StrCat(m.host_path, ":", m.container_path,
                                                      m.read_only ? ":ro" : "")});
  }
  args.insert(args.end(), spec.extra_run_args.begin(), spec.extra_run_args.end());
  args.push_back(spec.image);
  args.insert(args.end(), spec.command.begin(), spec.command.end());

  const CommandResult run = Podman(args, 120s);
  PodmanContainer c;
  c.name_ = spec.name;
  // From here on `c` removes the container on every error return.
  c.id_ = std::string(absl::StripAsciiWhitespace(run.out));
  if (!run.ok()) {
    if (c.id_.empty()) c.id_ = spec.name;  // created but not started: remove by name
    return absl::InternalError(absl::StrCat("podman run ", spec.name, ": ", run.Describe()));
  }
  auto inspect = ParseJson(Podman({"container", "inspect", c.id_}), "podman container inspect");
  if (!inspect.ok()) return inspect.status();
  if (!inspect->is_array() || inspect->empty()) {
    return absl::InternalError(absl::StrCat("podman container inspect ", spec.name, ": no result"));
  }
  const json& info = (*inspect)[0];
  c.id_ = info.value("Id", c.id_);
  const json state = info.value("State", json::object());
  c.host_pid_ = state.value("Pid", 0);
  if (c.host_pid_ <= 0) {
    return absl::InternalError(absl::StrCat("container ", spec.name, " is not running: ",
                                            state.dump(), "\n", c.logs()));
  }
  const json networks =
      info.value("NetworkSettings", json::object()).value("Networks", json::object());
  if (!spec.network.empty()) {
    c.ip_ = networks.value(spec.network, json::object()).value("IPAddress", "");
  } else if (!networks.empty()) {
    c.ip_ = networks.begin()->value("IPAddress", "");
  }
  return c;
}

PodmanContainer::PodmanContainer(PodmanContainer&& other) noexcept { *this = std::move(other); }

PodmanContainer& PodmanContainer::operator=(PodmanContainer&& other) noexcept {
  if (this != &other) {
    Remove();
    id_ = std::exchange(other.id_, {});
    name_ = std::move(other.name_);
    ip_ = std::move(other.ip_);
    host_pid_ = std::exchange(other.host_pid_, 0);
  }
  return *this;
}

PodmanContainer::~PodmanContainer() { Remove(); }

void PodmanContainer::Remove() noexcept {
  if (id_.empty()) return;
  // -t 0: a test that got here without Stop() failed already; no grace.
  const CommandResult r = Podman({"rm", "--force", "--time", "0", "--ignore", id_}, 60s);
  if (!r.ok()) {
    std::fprintf(stderr, "podman rm %s failed (%s): remove it by hand\n", name_.c_str(),
                 r.Describe().c_str());
  }
  id_.clear();
}

std::string PodmanContainer::logs() const {
  const CommandResult r = Podman({"logs", id_}, 30s);
  if (!r.ok()) return absl::StrCat("(podman logs ", name_, ": ", r.Describe(), ")");
  return r.out + r.err;
}

CommandResult PodmanContainer::Exec(const std::vector<std::string>& command,
                                    std::chrono::milliseconds timeout) const {
  std::vector<std::string> args = {"exec", id_};
  args.insert(args.end(), command.begin(), command.end());
  return Podman(args, timeout);
}

bool PodmanContainer::WaitLog(std::string_view needle, std::chrono::milliseconds timeout) const {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    // Whether it still runs is read before the logs: a process that wrote
    // the line and exited right after is still found.
    const bool running = host_pid_ > 0 && (kill(host_pid_, 0) == 0 || errno != ESRCH);
    if (logs().find(needle) != std::string::npos) return true;
    if (!running || Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
}

absl::StatusOr<int> PodmanContainer::Stop(std::chrono::seconds grace) {
  const CommandResult r =
      Podman({"stop", "--time", std::to_string(grace.count()), id_}, grace + 60s);
  if (!r.ok()) return absl::InternalError(absl::StrCat("podman stop ", name_, ": ", r.Describe()));
  const CommandResult code =
      Podman({"container", "inspect", "--format", "{{.State.ExitCode}}", id_});
  if (!code.ok()) {
    return absl::InternalError(absl::StrCat("podman inspect ", name_, ": ", code.Describe()));
  }
  return std::atoi(code.out.c_str());
}

// ---- PodmanNetwork

absl::StatusOr<PodmanNetwork> PodmanNetwork::Create(NetworkOptions options) {
  RemoveLeftoversOnce();
  PodmanNetwork net;
  const std::string name =
      options.name.empty() ? absl::StrCat("kspan-e2e-", getpid()) : options.name;
  // Same name, earlier run (e.g. an explicit name, or a reused pid).
  if (Podman({"network", "exists", name}).ok()) {
    const CommandResult rm = Podman({"network", "rm", "--force", "--time", "0", name});
    if (!rm.ok()) {
      return absl::InternalError(absl::StrCat("podman network rm ", name, ": ", rm.Describe()));
    }
  }
  const std::vector<std::string> candidates =
      options.subnet.empty() ? SubnetCandidates() : std::vector<std::string>{options.subnet};
  std::string failures;
  for (const auto& subnet : candidates) {
    std::string gateway;
    if (absl::Status s = GatewayOf(subnet, &gateway); !s.ok()) return s;
    const CommandResult r = Podman({"network", "create", "--driver", "bridge",
                                    // Containers are addressed by IP; no DNS plugin needed.
                                    "--disable-dns", "--subnet", subnet, "--gateway", gateway,
                                    "--label",
                                    absl::StrCat(kOwnerLabel, "=", OwnerOfThisProcess()), name});
    if (r.ok()) {
      net.name_ = name;
      net.subnet_ = subnet;
      net.gateway_ = gateway;
      break;
    }
    absl::StrAppend(&failures, "\n  ", subnet, ": ", r.Describe());
    // Taken by another network or a host route: try the next candidate.
    if (r.err.find("already used") == std::string::npos) break;
  }
  if (net.name_.empty()) {
    return absl::InternalError(absl::StrCat("podman network create ", name, " failed:", failures));
  }
  // From here on `net` removes the network on every error return.
  auto inspect = ParseJson(Podman({"network", "inspect", name}), "podman network inspect");
  if (!inspect.ok()) return inspect.status();
  if (inspect->is_array() && !inspect->empty()) {
    net.bridge_ = (*inspect)[0].value("network_interface", "");
  }
  if (net.bridge_.empty()) {
    return absl::InternalError(absl::StrCat("podman network inspect ", name,
                                            " names no bridge interface: ", inspect->dump()));
  }
  return net;
}

PodmanNetwork::PodmanNetwork(PodmanNetwork&& other) noexcept { *this = std::move(other); }

PodmanNetwork& PodmanNetwork::operator=(PodmanNetwork&& other) noexcept {
  if (this != &other) {
    Remove();
    name_ = std::exchange(other.name_, {});
    subnet_ = std::move(other.subnet_);
    gateway_ = std::move(other.gateway_);
    bridge_ = std::move(other.bridge_);
    anchor_ = std::move(other.anchor_);
    other.anchor_.reset();
  }
  return *this;
}

PodmanNetwork::~PodmanNetwork() { Remove(); }

void PodmanNetwork::Remove() noexcept {
  anchor_.reset();
  if (name_.empty()) return;
  // --force: containers a test left attached go too.
  const CommandResult r = Podman({"network", "rm", "--force", "--time", "0", name_}, 60s);
  if (!r.ok()) {
    std::fprintf(stderr, "podman network rm %s failed (%s): remove it by hand\n", name_.c_str(),
                 r.Describe().c_str());
  }
  name_.clear();
}

absl::Status PodmanNetwork::BringUpBridge(std::chrono::milliseconds timeout) {
  if (!anchor_) {
    ContainerSpec spec;
    spec.name = name_ + "-anchor";
    spec.network = name_;
    // Idle for the network's lifetime; killed on removal (pid 1 ignores
    // SIGTERM without a handler, so removal does not wait for it).
    spec.command = {"sleep", "infinity"};
    auto anchor = PodmanContainer::Run(spec);
    if (!anchor.ok()) return anchor.status();
    anchor_ = std::move(*anchor);
  }
  if (!WaitBridgeUp(timeout)) {
    return absl::DeadlineExceededError(absl::StrCat("bridge ", bridge_, " of network ", name_,
                                                    " did not come up with ", gateway_));
  }
  return absl::OkStatus();
}

bool PodmanNetwork::WaitBridgeUp(std::chrono::milliseconds timeout) const {
  in_addr want{};
  if (inet_pton(AF_INET, gateway_.c_str(), &want) != 1) return false;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    ifaddrs* list = nullptr;
    bool up = false;
    if (getifaddrs(&list) == 0) {
      for (const ifaddrs* i = list; i != nullptr && !up; i = i->ifa_next) {
        up = i->ifa_addr != nullptr && i->ifa_addr->sa_family == AF_INET &&
             bridge_ == i->ifa_name && (i->ifa_flags & IFF_UP) != 0 &&
             reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr == want.s_addr;
      }
      freeifaddrs(list);
    }
    if (up) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
}

}  // namespace kspan::testing
