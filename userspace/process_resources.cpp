#include "userspace/process_resources.h"

#include <limits.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "exporter/otlp_options.h"
#include "userspace/cgroup_path.h"
#include "userspace/container_metadata.h"
#include "userspace/pid_namespace.h"
#include "userspace/proc_files.h"

namespace kspan {
namespace {

constexpr std::size_t kMaxCgroupBytes = 64 << 10;
constexpr std::size_t kMaxStatusBytes = 16 << 10;
// Longest name taken from a process's environment or its own spans.
constexpr std::size_t kMaxServiceName = 256;
// Ancestors followed to find the image a process ran before its exec.
constexpr int kMaxForkDepth = 4;

std::string HostName() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

std::string_view BaseName(std::string_view path) {
  const auto slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// The OpenTelemetry host.arch value for a uname machine.
std::string HostArch(std::string_view machine) {
  if (machine == "x86_64") return "amd64";
  if (machine == "aarch64" || machine == "arm64") return "arm64";
  if (machine.starts_with("armv") || machine == "arm") return "arm32";
  if (machine == "i386" || machine == "i486" || machine == "i586" || machine == "i686") return "x86";
  if (machine == "ppc64" || machine == "ppc64le") return "ppc64";
  if (machine == "ppc") return "ppc32";
  if (machine == "s390x") return "s390x";
  if (machine == "ia64") return "ia64";
  return std::string(machine);
}

// The line of /proc/<pid>/cgroup whose path is `path` (process.linux.cgroup
// holds a line of that file).
std::string CgroupLine(std::string_view content, std::string_view path) {
  absl::string_view first;
  for (absl::string_view line : absl::StrSplit(absl::string_view(content.data(), content.size()), '\n')) {
    if (line.empty()) continue;
    if (first.empty()) first = line;
    const auto colon = line.find(':', line.find(':') + 1);
    if (colon != absl::string_view::npos && std::string_view(line.data(), line.size()).substr(colon + 1) == path) {
      return std::string(line);
    }
  }
  return std::string(first);
}

// /proc/<pid>/comm without its newline; empty when unreadable.
std::string ReadComm(const std::string& dir) {
  auto comm = ReadBoundedFile(dir + "/comm", 64);
  if (!comm) return {};
  std::string c = *std::move(comm);
  if (!c.empty() && c.back() == '\n') c.pop_back();
  return c;
}

// Whether a thread of `pid` is named `comm` (/proc/<pid>/task/*/comm; at
// most kMaxThreadsLooked threads are looked at, and a process with more is
// taken to have one of that name: only a fork about to exec is in question).
constexpr std::size_t kMaxThreadsLooked = 256;

}  // namespace

bool ProcessResources::AnyThreadNamed(std::uint32_t pid, std::string_view comm) const {
  const std::string tasks = absl::StrCat(options_.proc_root, "/", pid, "/task");
  std::error_code ec;
  std::size_t looked = 0;
  for (auto it = std::filesystem::directory_iterator(tasks, ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec)) {
    if (++looked > kMaxThreadsLooked) return true;
    if (ReadComm(it->path().string()) == comm) return true;
  }
  return false;
}

namespace {

// PPid from /proc/<pid>/status; 0 when unreadable.
std::uint32_t ReadParentPid(const std::string& dir) {
  const auto status = ReadBoundedFile(dir + "/status", kMaxStatusBytes);
  if (!status) return 0;
  for (absl::string_view line : absl::StrSplit(*status, '\n')) {
    std::uint32_t ppid = 0;
    if (absl::ConsumePrefix(&line, "PPid:") && absl::SimpleAtoi(line, &ppid)) return ppid;
  }
  return 0;
}

std::uint64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

void SetServiceName(Attributes& a, std::string name) {
  for (auto& attr : a) {
    if (attr.key == "service.name") {
      attr.value = std::move(name);
      return;
    }
  }
  a.insert(a.begin(), Attribute{"service.name", std::move(name)});
}

}  // namespace

Attributes DetectHostAttributes(const std::string& host_root) {
  Attributes a;
  const std::string root = host_root == "/" ? "" : host_root;
  for (const char* file : {"/etc/machine-id", "/var/lib/dbus/machine-id"}) {
    auto id = ReadBoundedFile(root + file, 256);
    if (!id) continue;
    std::string v(absl::StripAsciiWhitespace(*id));
    if (!v.empty() && std::all_of(v.begin(), v.end(), [](char c) { return absl::ascii_isxdigit(c); })) {
      a.push_back({"host.id", std::move(v)});
      break;
    }
  }
  utsname u{};
  if (uname(&u) == 0) a.push_back({"host.arch", HostArch(u.machine)});
  a.push_back({"os.type", std::string("linux")});
  return a;
}

std::string ServiceNameFromEnviron(std::string_view environ) {
  std::string from_attributes;
  for (absl::string_view var : absl::StrSplit(absl::string_view(environ.data(), environ.size()), '\0')) {
    if (absl::StartsWith(var, "OTEL_SERVICE_NAME=")) {
      absl::string_view v = absl::StripAsciiWhitespace(var.substr(18));
      if (!v.empty()) return std::string(v.substr(0, kMaxServiceName));
    } else if (absl::StartsWith(var, "OTEL_RESOURCE_ATTRIBUTES=") && from_attributes.empty()) {
      const absl::string_view value = var.substr(25);
      if (auto pairs = ParseOtlpHeaders(std::string_view(value.data(), value.size())); pairs.ok()) {
        for (const auto& [k, v] : *pairs) {
          if (k == "service.name" && !v.empty()) from_attributes = v.substr(0, kMaxServiceName);
        }
      }
    }
  }
  return from_attributes;
}

struct ProcessResources::Facts {
  bool alive = false;
  std::string comm;  // /proc/<pid>/comm: the running image's (empty when unreadable)
  std::string exe_path;
  std::string env_service;
  std::string cgroup_line;
  CgroupIdentity cgroup;
  ContainerNames names;
  std::uint32_t namespace_pid = 0;
};

ProcessResources::ProcessResources() : ProcessResources(Options{}) {}

ProcessResources::ProcessResources(Options options, MetricsRegistry* metrics)
    : options_(std::move(options)),
      host_name_(options_.host_name.empty() ? HostName() : options_.host_name),
      metrics_(metrics) {
  auto r = std::make_shared<Resource>();
  r->attributes.push_back({"service.name", options_.host_service_name});
  AddCommon(r->attributes);
  kernel_ = std::move(r);
  if (metrics_ != nullptr) {
    built_ = &metrics_->GetCounter("kspan_process_identities_built_total",
                                   "Process resources read from /proc (new processes, execs, refreshes).");
    execs_ = &metrics_->GetCounter("kspan_process_execs_total",
                                   "Process images started (exec) seen by the process family.");
    reused_ = &metrics_->GetCounter(
        "kspan_process_pid_reuses_total",
        "Spans of a new process under the pid of an exited one: given a new identity.");
    metrics_->AddCallbackGauge("kspan_process_identities", "Processes whose identity kspan holds.", {},
                               [this] { return static_cast<double>(size()); }, this);
  }
}

ProcessResources::~ProcessResources() {
  if (metrics_ != nullptr) metrics_->RemoveCallbacks(this);
}

void ProcessResources::AddCommon(Attributes& a) const {
  a.push_back({"host.name", host_name_});
  for (const auto& h : options_.host_attributes) a.push_back(h);
  for (const auto& x : options_.extra_attributes) {
    if (x.key == "service.name") continue;  // per process; the host's is host_service_name
    if (FindAttribute(a, x.key) == nullptr) a.push_back(x);
  }
}

ProcessResources::Facts ProcessResources::Read(std::uint32_t pid) const {
  Facts f;
  const std::string dir = absl::StrCat(options_.proc_root, "/", pid);
  f.exe_path = ReadLinkPath(dir + "/exe");
  const auto cgroup = ReadBoundedFile(dir + "/cgroup", kMaxCgroupBytes);
  // Kernel threads have no exe but a cgroup file: alive all the same.
  f.alive = !f.exe_path.empty() || cgroup.has_value();
  if (!f.alive) return f;
  f.comm = ReadComm(dir);
  if (auto env = ReadBoundedFile(dir + "/environ", options_.max_environ_bytes)) {
    f.env_service = ServiceNameFromEnviron(*env);
  }
  if (cgroup) {
    if (auto id = ParseProcCgroup(*cgroup); id.ok()) {
      f.cgroup = *std::move(id);
      f.cgroup_line = CgroupLine(*cgroup, f.cgroup.cgroup_path);
      if (options_.containers != nullptr && (!f.cgroup.container_id.empty() || !f.cgroup.pod_uid.empty())) {
        f.names = options_.containers->Lookup(f.cgroup);
      }
    }
  }
  if (!f.cgroup.container_id.empty() || !f.cgroup.pod_uid.empty()) {
    if (auto status = ReadBoundedFile(dir + "/status", kMaxStatusBytes)) {
      const auto nspid = ParseNsPid(*status);
      if (nspid.size() > 1) f.namespace_pid = nspid.back();
    }
  }
  return f;
}

std::shared_ptr<const Resource> ProcessResources::Make(std::uint32_t pid, const Facts& f,
                                                       std::string_view comm,
                                                       std::string_view filename,
                                                       const std::string& learned) const {
  std::string exe_name(BaseName(f.exe_path));
  if (exe_name.empty()) exe_name = std::string(BaseName(filename));
  const ContainerNames& n = f.names;
  std::string service = !learned.empty()                ? learned
                        : !f.env_service.empty()        ? f.env_service
                        : !n.k8s_container_name.empty() ? n.k8s_container_name
                        : !n.container_name.empty()     ? n.container_name
                        : !exe_name.empty()             ? exe_name
                                                        : std::string(comm);
  auto r = std::make_shared<Resource>();
  Attributes& a = r->attributes;
  a.reserve(24);
  a.push_back({"service.name", std::move(service)});
  a.push_back({"process.pid", static_cast<std::int64_t>(pid)});
  a.push_back({"process.executable.name", exe_name.empty() ? std::string(comm) : exe_name});
  if (!f.exe_path.empty()) {
    a.push_back({"process.executable.path", f.exe_path});
  } else if (!filename.empty()) {
    a.push_back({"process.executable.path", std::string(filename)});
  }
  if (f.namespace_pid != 0) a.push_back({"kspan.process.namespace_pid", static_cast<std::int64_t>(f.namespace_pid)});
  if (!f.cgroup_line.empty()) a.push_back({"process.linux.cgroup", f.cgroup_line});
  const CgroupIdentity& c = f.cgroup;
  if (!c.container_id.empty()) {
    a.push_back({"container.id", c.container_id});
    // A cgroup that does not name its runtime (Kubernetes' cgroupfs layout):
    // the engine's own files say which it is.
    const ContainerRuntime runtime =
        c.runtime == ContainerRuntime::kUnknown || c.runtime == ContainerRuntime::kNone ? n.runtime : c.runtime;
    if (auto rt = RuntimeName(runtime); !rt.empty()) a.push_back({"container.runtime", std::string(rt)});
  }
  if (!n.container_name.empty()) a.push_back({"container.name", n.container_name});
  if (!n.image_name.empty()) a.push_back({"container.image.name", n.image_name});
  if (!c.pod_uid.empty()) a.push_back({"k8s.pod.uid", c.pod_uid});
  if (!n.k8s_pod_name.empty()) a.push_back({"k8s.pod.name", n.k8s_pod_name});
  if (!n.k8s_namespace.empty()) a.push_back({"k8s.namespace.name", n.k8s_namespace});
  if (!n.k8s_container_name.empty()) a.push_back({"k8s.container.name", n.k8s_container_name});
  if (!c.qos_class.empty()) a.push_back({"kspan.k8s.pod.qos_class", c.qos_class});
  AddCommon(a);
  if (built_ != nullptr) built_->Add();
  return r;
}

std::shared_ptr<const Resource> ProcessResources::Minimal(std::uint32_t pid, std::string_view comm,
                                                          std::string_view filename) const {
  return Make(pid, Facts{}, comm, filename, {});
}

std::shared_ptr<const Resource> ProcessResources::For(std::uint32_t pid, std::string_view comm,
                                                      std::uint64_t mono_ns) {
  return ForAt(pid, comm, mono_ns, 0);
}

std::shared_ptr<const Resource> ProcessResources::ForAt(std::uint32_t pid, std::string_view comm,
                                                        std::uint64_t mono_ns, int depth) {
  if (pid == 0) return kernel_;  // work no process owns (a connection nobody accepted): the host's
  const auto now = std::chrono::steady_clock::now();
  std::uint32_t parent = 0;
  std::string learned;
  std::string exec_comm;
  std::string exec_filename;
  {
    std::lock_guard lock(mu_);
    Entry& e = Slot(pid, mono_ns);
    e.last_used_ns = std::max(e.last_used_ns, mono_ns);
    if (e.exited_ns != 0 && mono_ns > e.exited_ns) {
      // The pid was freed and this span is a new process's.
      if (reused_ != nullptr) reused_->Add();
      const std::uint64_t since = e.exited_ns;
      auto old = std::move(e.current);
      e = Entry{};
      e.previous = std::move(old);  // the exited process's late spans
      e.image_since_ns = since;
      e.last_used_ns = mono_ns;
    }
    if (mono_ns != 0 && mono_ns < e.image_since_ns) {
      // Began before the process's last exec: its old image.
      if (e.previous) return e.previous;
      if (e.forked_from == 0 || depth >= kMaxForkDepth) {
        e.previous = Minimal(pid, comm, {});
        return e.previous;
      }
      parent = e.forked_from;
    }
    if (parent == 0) {
      if (e.current && (e.exited_ns != 0 || now - e.built < options_.ttl)) return e.current;
      learned = e.learned_service;
      exec_comm = e.exec_comm;
      exec_filename = e.exec_filename;
    }
  }
  if (parent != 0) {
    // Never read before its exec: it was its parent's image, forked.
    auto from = ForAt(parent, comm, mono_ns, depth + 1);
    auto r = std::make_shared<Resource>(*from);
    std::erase_if(r->attributes, [](const Attribute& a) { return a.key == "kspan.process.namespace_pid"; });
    bool has_pid = false;
    for (auto& a : r->attributes) {
      if (a.key == "process.pid") {
        a.value = static_cast<std::int64_t>(pid);
        has_pid = true;
      }
    }
    if (!has_pid) r->attributes.insert(r->attributes.begin() + 1, Attribute{"process.pid", static_cast<std::int64_t>(pid)});
    std::lock_guard lock(mu_);
    Entry& e = cache_[pid];
    if (!e.previous) e.previous = std::move(r);
    return e.previous;
  }
  // /proc is read without the lock: other threads' spans go on meanwhile.
  const Facts facts = Read(pid);
  if (depth == 0 && mono_ns != 0 && exec_comm.empty() && !comm.empty() && !facts.comm.empty() &&
      facts.comm != comm && !AnyThreadNamed(pid, comm)) {
    // /proc shows another program than the one this span's record names
    // (and no thread of it carries that name: records name the thread, and
    // threads may name themselves): the process exec'd after the span
    // began, and its exec record is not read yet (it was made after the
    // rings were last drained). The span is the old image's, /proc the new
    // one's.
    NoteUnreadExec(pid, comm, mono_ns, facts);
    return ForAt(pid, comm, mono_ns, 1);
  }
  std::lock_guard lock(mu_);
  Entry& e = cache_[pid];
  if (!facts.alive) {
    // Gone since: keep what was known, else what the records said.
    if (!e.current) e.current = Minimal(pid, exec_comm.empty() ? comm : exec_comm, exec_filename);
    e.built = now;
    return e.current;
  }
  e.current = Make(pid, facts, exec_comm.empty() ? comm : exec_comm, exec_filename, learned);
  e.built = now;
  return e.current;
}

void ProcessResources::NoteUnreadExec(std::uint32_t pid, std::string_view comm, std::uint64_t mono_ns,
                                      const Facts& facts) {
  const std::uint64_t read_ns = MonotonicNs();
  const std::string dir = absl::StrCat(options_.proc_root, "/", pid);
  const std::uint32_t ppid = ReadParentPid(dir);
  // A child between fork and exec ran its parent's program: when the parent
  // still runs the program the record names, the span is the parent's image
  // (as when the exec record comes first); otherwise what the record says.
  const bool forked = ppid != 0 && ppid != pid &&
                      ReadComm(absl::StrCat(options_.proc_root, "/", ppid)) == comm;
  auto current = Make(pid, facts, facts.comm, {}, {});
  {
    std::lock_guard lock(mu_);
    Entry& e = Slot(pid, mono_ns);
    if (e.image_since_ns != 0 && !e.exec_inferred) return;  // the exec record came meanwhile
    e.current = std::move(current);
    e.built = std::chrono::steady_clock::now();
    // The exec happened before this read; its record, when it comes, says
    // exactly when (OnExec).
    e.image_since_ns = read_ns;
    e.exec_inferred = true;
    e.previous = nullptr;
    e.forked_from = forked ? ppid : 0;
    if (!forked) e.previous = Minimal(pid, comm, {});
  }
}

void ProcessResources::OnExec(std::uint32_t pid, std::uint32_t ppid, std::uint64_t mono_ns,
                              std::string_view comm, std::string_view filename) {
  if (pid == 0) return;
  if (execs_ != nullptr) execs_->Add();
  {
    std::lock_guard lock(mu_);
    Entry& e = Slot(pid, mono_ns);
    if (e.exec_inferred && mono_ns <= e.image_since_ns) {
      // The exec a span's lookup inferred from /proc: the image read then is
      // this exec's; only its time was not known.
      e.exec_inferred = false;
      e.image_since_ns = mono_ns;
      e.exec_comm = std::string(comm);
      e.exec_filename = std::string(filename);
      return;
    }
    e.exec_inferred = false;
    if (e.exited_ns != 0 && mono_ns > e.exited_ns) e = Entry{};
    // A process kspan never read before this exec ran its parent's image
    // since the fork; exec'ing twice, it is the image of the first exec.
    e.forked_from = e.current || e.image_since_ns != 0 ? 0 : ppid;
    e.previous = std::move(e.current);
    e.current = nullptr;
    e.image_since_ns = mono_ns;
    e.learned_service.clear();  // the new program names itself anew
    e.exec_comm = std::string(comm);
    e.exec_filename = std::string(filename);
    e.last_used_ns = mono_ns;
  }
  // Read now, while the process is young: a short-lived one is gone by the
  // time its spans are assembled.
  Facts facts = Read(pid);
  if (!facts.alive && ppid != 0 && ppid != pid) {
    // Gone already (a curl that posted and exited before kspan read its
    // exec record): its container is its parent's. A child starts in its
    // parent's cgroup and exec does not move it; the program is the
    // record's, the environment unknown.
    const Facts parent = Read(ppid);
    if (parent.alive) {
      facts.alive = true;
      facts.cgroup = parent.cgroup;
      facts.cgroup_line = parent.cgroup_line;
      facts.names = parent.names;
    }
  }
  if (!facts.alive) return;
  auto r = Make(pid, facts, comm, filename, {});
  std::lock_guard lock(mu_);
  auto it = cache_.find(pid);
  if (it == cache_.end() || it->second.image_since_ns != mono_ns || it->second.current) return;
  it->second.current = std::move(r);
  it->second.built = std::chrono::steady_clock::now();
}

void ProcessResources::OnExit(std::uint32_t pid, std::uint64_t mono_ns) {
  if (pid == 0) return;
  std::lock_guard lock(mu_);
  auto it = cache_.find(pid);
  if (it == cache_.end()) return;  // nothing known, nothing to forget
  it->second.exited_ns = std::max<std::uint64_t>(mono_ns, 1);
}

void ProcessResources::LearnServiceName(std::uint32_t pid, std::string_view name) {
  if (pid == 0 || name.empty() || name.starts_with("unknown_service")) return;
  name = name.substr(0, kMaxServiceName);
  std::lock_guard lock(mu_);
  Entry& e = Slot(pid, MonotonicNs());
  if (e.learned_service == name || e.exited_ns != 0) return;
  e.learned_service = std::string(name);
  if (e.current) {
    auto r = std::make_shared<Resource>(*e.current);
    SetServiceName(r->attributes, e.learned_service);
    e.current = std::move(r);
  }
}

ProcessResources::Entry& ProcessResources::Slot(std::uint32_t pid, std::uint64_t now_ns) {
  auto it = cache_.find(pid);
  if (it != cache_.end()) return it->second;
  MakeRoom(now_ns);
  return cache_.emplace(pid, Entry{}).first->second;
}

void ProcessResources::MakeRoom(std::uint64_t now_ns) {
  if (cache_.size() < options_.max_entries) return;
  const auto grace = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(options_.exited_grace).count());
  std::erase_if(cache_, [&](const auto& kv) {
    return kv.second.exited_ns != 0 && kv.second.exited_ns + grace < now_ns;
  });
  if (cache_.size() < options_.max_entries) return;
  // All live or recent: the least recently used eighth goes (rebuilt from
  // /proc if it shows up again).
  std::vector<std::uint64_t> used;
  used.reserve(cache_.size());
  for (const auto& [pid, e] : cache_) used.push_back(e.last_used_ns);
  auto nth = used.begin() + static_cast<std::ptrdiff_t>(used.size() / 8);
  std::nth_element(used.begin(), nth, used.end());
  const std::uint64_t cut = *nth;
  std::erase_if(cache_, [&](const auto& kv) { return kv.second.last_used_ns <= cut; });
}

void ProcessResources::Sweep(std::uint64_t now_mono_ns) {
  const auto grace = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(options_.exited_grace).count());
  std::lock_guard lock(mu_);
  std::erase_if(cache_, [&](const auto& kv) {
    return kv.second.exited_ns != 0 && kv.second.exited_ns + grace < now_mono_ns;
  });
}

std::size_t ProcessResources::size() const {
  std::lock_guard lock(mu_);
  return cache_.size();
}

}  // namespace kspan
