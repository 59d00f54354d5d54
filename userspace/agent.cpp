#include "userspace/agent.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <variant>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "exporter/export_metrics.h"
#include "exporter/private_files.h"
#include "exporter/status_macros.h"
#include "exporter/terminal_text.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "userspace/capture_filter.h"
#include "userspace/kernel_features.h"
#include "userspace/proc_files.h"

namespace kspan {

Agent::Agent(AgentConfig config) : config_(std::move(config)) {}

Agent::~Agent() { Stop(std::chrono::seconds(5)); }

absl::Status Agent::Start() {
  // First: whatever else fails, span data an older version left readable
  // does not stay so.
  MakeStateOwnerOnly();
  KernelRequirements req;
  req.btf_override = config_.bpf.btf;
  KSPAN_RETURN_IF_ERROR(CheckKernel(req));

  // Two phases. First, with the capabilities kspan was started with and
  // no other thread: pins, BPF load and attach, the filter maps. Then the
  // capability drop (one thread, so it holds for every thread started
  // after, see privileges.h). Then everything that starts threads or takes
  // input from others: the export pipeline, the correlator, the admin
  // server, the receiver and the ring reader.
  KSPAN_RETURN_IF_ERROR(EnsureBpffs(req));
  auto pins = PinDirectory::Create(config_.bpf.pin_path);
  if (!pins.ok()) return pins.status();
  pins_.emplace(std::move(*pins));

  clock_ = std::make_unique<ClockSync>();
  {
    const auto& rc = config_.resource;
    ContainerMetadata::Options co;
    co.host_root = rc.host_root;
    containers_ = std::make_unique<ContainerMetadata>(co, &metrics_);
    ProcessResources::Options ro;
    ro.host_attributes = DetectHostAttributes(rc.host_root);
    for (const auto& [k, v] : rc.attributes) ro.extra_attributes.push_back({k, v});
    ro.host_service_name = rc.host_service_name;
    ro.containers = containers_.get();
    // An exited process's late spans: those the HTTP tracker ends on its
    // response timeout come last.
    ro.exited_grace = std::max<std::chrono::seconds>(
        std::chrono::seconds(120),
        std::chrono::duration_cast<std::chrono::seconds>(config_.capture.http.response_timeout) * 2);
    resources_ = std::make_unique<ProcessResources>(std::move(ro), &metrics_);
  }
  // Its sink reaches the correlator and the pipeline, made after the drop
  // and before the reader starts.
  assembler_ = std::make_unique<SpanAssembler>(*clock_, *resources_, metrics_, [this](Span&& s) {
    if (correlator_) {
      correlator_->OnKernelSpan(std::move(s));
    } else {
      pipeline_->Submit(std::move(s));
    }
  }, HttpTrackerOptions{.response_idle = config_.capture.http.response_idle,
                        .response_timeout = config_.capture.http.response_timeout,
                        .max_connections = config_.capture.http.max_connections,
                        .keep_query = config_.capture.http.keep_query});
  decoder_ = std::make_unique<EventDecoder>(*assembler_, metrics_);
  reader_ = std::make_unique<RingReader>();

  const bool any_capture = config_.capture.tcp.enabled || config_.capture.syscalls.enabled ||
                           config_.capture.dns || config_.capture.http.enabled;
  // First: the reader drains rings in the order they are added, so a
  // process's exec and exit are seen before the records it made after them.
  if (any_capture) {
    KSPAN_RETURN_IF_ERROR(StartProcessFamily());
  }
  if (config_.capture.tcp.enabled) {
    CaptureOptions opts;
    opts.self_tgid = static_cast<std::uint32_t>(getpid());
    opts.ring_buffer_bytes = config_.capture.ring_buffer_bytes;
    opts.wakeup_bytes = config_.capture.wakeup_bytes;
    opts.btf_path = config_.bpf.btf;
    opts.pin_dir = pins_->path();
    opts.tcp_selected_only = config_.capture.tcp.selected_only;
    tcp_ = std::make_unique<TcpCapture>(opts);
    std::vector<TcpVariant> ladder = {TcpVariant::kTpBtf, TcpVariant::kRawTp,
                                      TcpVariant::kTracepoint};
    if (auto forced = ParseTcpVariant(config_.capture.tcp.variant)) ladder = {*forced};
    KSPAN_RETURN_IF_ERROR(tcp_->Start(ladder));
    KSPAN_RETURN_IF_ERROR(reader_->Add(tcp_->ring_fd(), "kspan_tcp_ring", decoder_.get()));
  }
  if (config_.capture.syscalls.enabled) {
    const auto& sys = config_.capture.syscalls;
    SyscallCaptureOptions opts;
    opts.self_tgid = static_cast<std::uint32_t>(getpid());
    opts.ring_buffer_bytes = config_.capture.ring_buffer_bytes;
    opts.wakeup_bytes = config_.capture.wakeup_bytes;
    opts.btf_path = config_.bpf.btf;
    opts.pin_dir = pins_->path();
    opts.force_variant = ParseSyscallVariant(sys.variant);
    opts.watch_unselected = config_.capture.slow_threshold.count() > 0;
    opts.slow_watch = ParseSlowWatch(config_.capture.slow_watch).value_or(SlowWatch::kScan);
    opts.slow_scan_interval = config_.capture.slow_scan_interval.count() > 0
                                  ? config_.capture.slow_scan_interval
                                  : config_.capture.slow_threshold;
    opts.syscalls = sys.names;
    opts.class_min[KSPAN_SYSCALL_CLASS_FILE_IO] = sys.file_io_min;
    opts.class_min[KSPAN_SYSCALL_CLASS_SOCKET_IO] = sys.socket_io_min;
    opts.class_min[KSPAN_SYSCALL_CLASS_WAIT] = sys.wait_min;
    opts.class_min[KSPAN_SYSCALL_CLASS_OTHER] = sys.other_min;
    syscalls_ = std::make_unique<SyscallCapture>(opts);
    KSPAN_RETURN_IF_ERROR(syscalls_->Start());
    KSPAN_RETURN_IF_ERROR(reader_->Add(syscalls_->ring_fd(), "kspan_sys_ring", decoder_.get()));
    KSPAN_RETURN_IF_ERROR(
        reader_->AddPerCpu(syscalls_->record_rings(), syscalls_->bell_fd(), decoder_.get()));
  }
  if (config_.capture.dns) {
    DnsCaptureOptions opts;
    opts.self_tgid = static_cast<std::uint32_t>(getpid());
    opts.btf_path = config_.bpf.btf;
    opts.pin_dir = pins_->path();
    dns_ = std::make_unique<DnsCapture>(opts);
    KSPAN_RETURN_IF_ERROR(dns_->Start());
    KSPAN_RETURN_IF_ERROR(reader_->Add(dns_->ring_fd(), "kspan_dns_ring", decoder_.get()));
  }
  if (config_.capture.http.enabled) {
    HttpCaptureOptions opts;
    opts.self_tgid = static_cast<std::uint32_t>(getpid());
    opts.ring_buffer_bytes = config_.capture.ring_buffer_bytes;
    opts.wakeup_bytes = config_.capture.wakeup_bytes;
    opts.btf_path = config_.bpf.btf;
    opts.pin_dir = pins_->path();
    opts.force_variant = ParseHttpVariant(config_.capture.http.variant);
    opts.root_per_second = static_cast<std::uint32_t>(config_.capture.http.root_spans_per_second);
    http_ = std::make_unique<HttpCapture>(opts);
    KSPAN_RETURN_IF_ERROR(http_->Start());
    KSPAN_RETURN_IF_ERROR(reader_->Add(http_->ring_fd(), "kspan_http_ring", decoder_.get()));
  }
  if (!tcp_ && !syscalls_ && !dns_ && !http_) {
    spdlog::warn("all capture disabled in config: kspan only exports");
  } else {
    KSPAN_RETURN_IF_ERROR(ApplyProcessFilter());
    KSPAN_RETURN_IF_ERROR(SetEnvironmentEnrollment());
    KSPAN_RETURN_IF_ERROR(StartSyscallDemand());
  }
  const bool from_environment =
      config_.correlation.enroll_from_environment != EnvironmentEnrollMode::kOff;
  if (filter_ && (config_.correlation.enroll_senders || from_environment)) {
    const auto& p = config_.capture.processes;
    enrollment_ = std::make_unique<Enrollment>(
        [this](std::uint32_t pid, bool allow) {
          if (!allow) return filter_->RemoveAllowedPid(pid);
          absl::Status s = filter_->AllowPid(pid);
          if (s.ok()) UpdateSyscallHooks("a process enrolled", pid);
          return s;
        },
        std::chrono::duration_cast<std::chrono::seconds>(config_.correlation.enrollment_linger),
        static_cast<std::uint32_t>(getpid()),
        std::set<std::uint32_t>(p.pids.begin(), p.pids.end()), metrics_,
        std::chrono::steady_clock::now, [this](std::uint32_t pid) { return Describe(pid); });
  }
  KSPAN_RETURN_IF_ERROR(DropPrivileges());

  auto pipeline = ExportPipeline::Create(config_.exporter, metrics_);
  if (!pipeline.ok()) return pipeline.status();
  pipeline_ = std::move(*pipeline);
  if (config_.correlation.enabled) {
    const auto& cc = config_.correlation;
    CorrelatorOptions co;
    co.join_window = cc.join_window;
    co.export_unmatched = cc.export_unmatched;
    co.clock_tolerance = cc.clock_tolerance;
    co.max_pending_kernel_spans = cc.max_pending_spans;
    correlator_ = std::make_unique<Correlator>(
        co, metrics_, [this](Span&& s) { pipeline_->Submit(std::move(s)); });
    for (auto pid : config_.capture.processes.pids) correlator_->ExpectSpansFrom(pid);
  }
  // Before the reader starts: every exec and exit record.
  assembler_->SetProcessObserver([this](const kspan_proc_event& e) { OnProcessRecord(e); });
  if (!config_.admin_listen.empty()) {
    admin_ = std::make_unique<AdminServer>(metrics_);
    admin_->SetStatusProvider([this] { return StatusJson(); });
    KSPAN_RETURN_IF_ERROR(admin_->Start(config_.admin_listen));
  }
  RegisterCaptureMetrics();
  KSPAN_RETURN_IF_ERROR(StartReceiver());
  StartEnvironmentEnrollment();
  if (tcp_ || syscalls_ || dns_ || http_) {
    KSPAN_RETURN_IF_ERROR(reader_->Start(config_.capture.poll_interval));
  }
  if (syscalls_) syscalls_->StartScan();  // a thread: after the capability drop
  last_totals_log_ = std::chrono::steady_clock::now();
  if (admin_) admin_->SetReady(true);
  return absl::OkStatus();
}

absl::Status Agent::DropPrivileges() {
  if (!config_.security.drop_capabilities) {
    privileges_ = ReadPrivileges();
    spdlog::warn("privileges: {}", privileges_.Describe());
    return absl::OkStatus();
  }
  auto state = DropCapabilities(RunTimeCapabilities(config_));
  if (!state.ok()) return state.status();
  privileges_ = *std::move(state);
  if (!privileges_.bounding_not_dropped.empty()) {
    spdlog::warn("privileges: {}", privileges_.Describe());
  } else {
    spdlog::info("privileges: {}", privileges_.Describe());
  }
  return absl::OkStatus();
}

void Agent::MakeStateOwnerOnly() {
  TightenResult all = MakeTreeOwnerOnly(config_.state_dir);
  auto add = [&all](TightenResult r) {
    for (auto& t : r.tightened) all.tightened.push_back(std::move(t));
    for (auto& e : r.errors) all.errors.push_back(std::move(e));
  };
  // Data files configured outside state_dir: the files only (and SQLite's
  // and rotation's companions); their directories may be shared.
  const std::string inside = config_.state_dir + "/";
  auto outside = [&inside](const std::string& path) {
    return !path.empty() && path.rfind(inside, 0) != 0;
  };
  for (const auto& d : config_.exporter.destinations) {
    if (d.type == DestinationType::kFile && outside(d.file.path)) {
      for (const char* suffix : {"", ".1"}) add(MakeFileOwnerOnly(d.file.path + suffix));
    }
    for (const std::string* db : {&d.queue.disk.path, &d.dead_letter.path}) {
      if (!outside(*db)) continue;
      for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
        add(MakeFileOwnerOnly(*db + suffix));
      }
    }
  }
  // Each path, bounded: a state directory holds a handful of files.
  constexpr std::size_t kListed = 20;
  for (std::size_t i = 0; i < all.tightened.size() && i < kListed; ++i) {
    const auto& t = all.tightened[i];
    spdlog::warn("state: {} was readable by others (mode {:04o}): now {:04o}",
                 EscapeForTerminal(t.path), t.was, t.now);
  }
  if (all.tightened.size() > kListed) {
    spdlog::warn("state: {} more path(s) made owner-only", all.tightened.size() - kListed);
  }
  for (const auto& e : all.errors) {
    spdlog::error("state: cannot make owner-only: {}", EscapeForTerminal(e));
  }
}

std::string Agent::Describe(std::uint32_t pid) {
  if (!resources_) return {};
  const auto r = resources_->For(pid, "", 0);  // its current image, whatever time it is
  auto str = [&r](std::string_view key) -> std::string {
    const AttributeValue* v = FindAttribute(r->attributes, key);
    const auto* s = v ? std::get_if<std::string>(v) : nullptr;
    return s ? *s : std::string();
  };
  std::string out = str("service.name");
  if (const std::string name = str("container.name"); !name.empty()) {
    absl::StrAppend(&out, ", container ", name);
  } else if (const std::string id = str("container.id"); !id.empty()) {
    absl::StrAppend(&out, ", container ", id.substr(0, 12));
  }
  if (const std::string pod = str("k8s.pod.name"); !pod.empty()) {
    absl::StrAppend(&out, ", pod ", str("k8s.namespace.name"), "/", pod);
  }
  // Names come from processes' environments and spans: escaped for the log
  // and the terminal (and valid UTF-8, which /status's JSON requires).
  return EscapeForTerminal(out);
}

absl::Status Agent::StartProcessFamily() {
  ProcessCaptureOptions opts;
  opts.self_tgid = static_cast<std::uint32_t>(getpid());
  opts.wakeup_bytes = config_.capture.wakeup_bytes;
  opts.btf_path = config_.bpf.btf;
  opts.pin_dir = pins_->path();
  process_ = std::make_unique<ProcessCapture>(opts);
  if (auto s = process_->Start(); !s.ok()) {
    // Identities then follow exec only when re-read (every minute).
    spdlog::warn("process family unavailable ({}): a process's identity is refreshed every {}s "
                 "instead of at exec",
                 std::string(s.message()), 60);
    process_.reset();
    return absl::OkStatus();
  }
  return reader_->Add(process_->ring_fd(), "kspan_proc_ring", decoder_.get());
}

void Agent::WarnIfExposed(const char* transport, const std::string& endpoint) {
  const auto colon = endpoint.rfind(':');
  std::string host = colon == std::string::npos ? endpoint : endpoint.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  in6_addr a6{};
  in_addr a4{};
  bool loopback = host == "localhost";
  bool any = false;
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) {
    loopback = (ntohl(a4.s_addr) >> 24) == 127;
    any = a4.s_addr == INADDR_ANY;
  } else if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) {
    loopback = IN6_IS_ADDR_LOOPBACK(&a6);
    any = IN6_IS_ADDR_UNSPECIFIED(&a6);
  }
  if (loopback) return;
  if (any) {
    spdlog::warn("OTLP/{} receiver on {}: every network interface. Any host that can reach this "
                 "one, not only local containers, can send spans through kspan to its destinations; "
                 "prefer a container bridge address, or firewall the port",
                 transport, endpoint);
  } else {
    spdlog::warn("OTLP/{} receiver on {} (not loopback): every process, container and host that "
                 "can reach this address can send spans through kspan to its destinations. Each "
                 "request is attributed only to the process the kernel says sent it",
                 transport, endpoint);
  }
}

absl::Status Agent::StartReceiver() {
  const auto& rc = config_.receiver;
  if (!rc.grpc_enabled && !rc.http_enabled) return absl::OkStatus();
  // The kernel learns a receiver port's clients as they connect: ports
  // known from the config are set before the first client can come.
  auto port_of = [](bool enabled, const std::string& endpoint) -> std::uint16_t {
    if (!enabled) return 0;
    const auto colon = endpoint.rfind(':');
    int port = 0;
    if (colon == std::string::npos || !absl::SimpleAtoi(endpoint.substr(colon + 1), &port)) return 0;
    return port > 0 && port < 65536 ? static_cast<std::uint16_t>(port) : 0;
  };
  auto set_ports = [this](std::uint16_t grpc, std::uint16_t http) {
    if (!tcp_) return;
    std::vector<std::uint16_t> ports;
    for (auto p : {grpc, http}) {
      if (p != 0) ports.push_back(p);
    }
    if (auto s = tcp_->SetReceiverPorts(ports); !s.ok()) {
      spdlog::warn("receiver: senders will be found through /proc: {}", std::string(s.message()));
    }
  };
  set_ports(port_of(rc.grpc_enabled, rc.grpc_endpoint), port_of(rc.http_enabled, rc.http_endpoint));
  senders_ = std::make_unique<SenderIdentity>(
      metrics_, [this](const ReceiverPeer& peer, std::uint16_t server_port) -> std::optional<std::uint32_t> {
        if (!tcp_) return std::nullopt;
        auto owner = tcp_->LookupReceiverPeer(peer.address, peer.port, server_port);
        if (!owner) return std::nullopt;
        return owner->pid;
      });
  OtlpReceiverOptions ro;
  ro.grpc_enabled = rc.grpc_enabled;
  ro.grpc_address = rc.grpc_endpoint;
  ro.http_enabled = rc.http_enabled;
  ro.http_address = rc.http_endpoint;
  ro.max_request_bytes = rc.max_request_bytes;
  ro.max_in_flight_bytes = rc.max_in_flight_bytes;
  ro.request_timeout = rc.request_timeout;
  ro.span_limits = rc.span_limits;
  AppSpanSink sink = [this, pipeline = PipelineSink(*pipeline_)](std::vector<Span>&& spans,
                                                                 const ReceiverPeer& peer) {
    const SenderAttribution who = senders_->Attribute(spans, peer);
    if (who.sender && who.sender_sent_own_spans) {
      if (enrollment_ && config_.correlation.enroll_senders) enrollment_->Seen(*who.sender);
      // Its kernel spans sit with its own in the backend's service list.
      if (!who.own_service_name.empty()) resources_->LearnServiceName(*who.sender, who.own_service_name);
    }
    // Indexed before they leave, so the kernel spans they contain find them.
    if (correlator_) {
      correlator_->IndexAppSpans(spans, [&who](const Span& s) { return who.PidOf(s.resource.get()); });
    }
    return pipeline(std::move(spans), peer);
  };
  if (rc.grpc_enabled) WarnIfExposed("gRPC", rc.grpc_endpoint);
  if (rc.http_enabled) WarnIfExposed("HTTP", rc.http_endpoint);
  auto receiver = OtlpReceiver::Start(ro, std::move(sink), metrics_);
  if (!receiver.ok()) {
    return absl::Status(receiver.status().code(),
                        absl::StrCat("receiver: ", std::string(receiver.status().message())));
  }
  receiver_ = std::move(*receiver);
  receiver_grpc_port_ = receiver_->grpc_port();
  receiver_http_port_ = receiver_->http_port();
  senders_->SetServerPorts(receiver_->grpc_port(), receiver_->http_port());
  set_ports(static_cast<std::uint16_t>(receiver_->grpc_port()),
            static_cast<std::uint16_t>(receiver_->http_port()));
  if (correlator_) correlator_->SetOwnPorts({receiver_->grpc_port(), receiver_->http_port()});
  return absl::OkStatus();
}

// The variables the exec hook enrolls on; the rule (otel_environment.h)
// then reads their values. Any other OTEL_* variable alone does not make an
// exporter.
constexpr std::uint32_t kEnrollingVariables = KSPAN_OTEL_ENV_ENDPOINT | KSPAN_OTEL_ENV_TRACES_ENDPOINT |
                                              KSPAN_OTEL_ENV_SERVICE_NAME | KSPAN_OTEL_ENV_TRACES_EXPORTER;

absl::Status Agent::SetEnvironmentEnrollment() {
  if (config_.correlation.enroll_from_environment == EnvironmentEnrollMode::kOff) return absl::OkStatus();
  if (auto s = filter_->SetEnvironmentEnrollment(kEnrollingVariables); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("enrollment from the environment: ", std::string(s.message())));
  }
  return absl::OkStatus();
}

void Agent::StartEnvironmentEnrollment() {
  const EnvironmentEnrollMode mode = config_.correlation.enroll_from_environment;
  if (!enrollment_ || mode == EnvironmentEnrollMode::kOff) return;
  Enrollment::Environment env;
  env.rule = {.mode = mode,
              .grpc_port = receiver_->grpc_port(),
              .http_port = receiver_->http_port(),
              .is_host_address = IsAddressOfThisHost};
  env.allow = [this](std::uint32_t pid, bool allow) {
    if (!allow) return filter_->RemoveEnvironmentPid(pid);
    absl::Status s = filter_->AllowPidFromEnvironment(pid);
    if (s.ok()) UpdateSyscallHooks("a running process enrolled from its environment", pid);
    return s;
  };
  // The same bound as the process identity's reads of the environment.
  env.read = [max = ProcessResources::Options{}.max_environ_bytes](std::uint32_t pid) {
    return ReadBoundedFile("/proc/" + std::to_string(pid) + "/environ", max);
  };
  env.on_verdict = [this](std::uint32_t pid, bool sender) {
    if (!correlator_) return;
    if (sender) {
      correlator_->ExpectSpansFrom(pid);
    } else {
      correlator_->StopExpecting(pid);
    }
  };
  enrollment_->EnableEnvironment(std::move(env));
  // Processes that started before kspan: their exec was not seen. Judged
  // before the agent reports ready, so /readyz means they are enrolled.
  enrollment_->PostScan(ListProcesses());
  enrollment_->Drain();
}

void Agent::OnProcessRecord(const kspan_proc_event& e) {
  if (e.pid == static_cast<std::uint32_t>(getpid())) return;
  if (e.kind == KSPAN_PROC_EXEC) {
    // Until the rule has read the values (on the enrollment worker), what
    // the exec hook saw holds: the process's first spans wait.
    const bool likely_sender =
        (e.flags & KSPAN_PROC_F_ENROLLED) != 0 || (e.otel_env & kEnrollingVariables) != 0;
    if (likely_sender && correlator_ &&
        config_.correlation.enroll_from_environment != EnvironmentEnrollMode::kOff) {
      correlator_->ExpectSpansFrom(e.pid);
    }
    // The exec hook put it on the allow-list: its syscalls are to be
    // captured from now on, before the enrollment worker judges it.
    if ((e.flags & KSPAN_PROC_F_ENROLLED) != 0) {
      UpdateSyscallHooks("the exec of a process enrolled from its environment", e.pid, e.ts_ns);
    }
    if (enrollment_) enrollment_->PostExec(e.pid, e.otel_env, e.flags);
  } else if (e.kind == KSPAN_PROC_EXIT) {
    if (correlator_) correlator_->OnProcessExit(e.pid);
    if (enrollment_) enrollment_->PostExit(e.pid);
  }
}

bool Agent::SyscallHooksWanted() const {
  // Where the slow-syscall watch cannot run on sched_switch, the enter and
  // exit programs time the syscalls of every process while the threshold
  // is set.
  return filter_->HasSelection() ||
         (!syscalls_->slow_watch_off_cpu() && filter_->ReadConfig().slow_threshold_ns > 0);
}

absl::Status Agent::StartSyscallDemand() {
  if (!syscalls_ || !filter_) return absl::OkStatus();
  if (config_.capture.syscalls.attach_always) {
    spdlog::info("syscall capture: enter/exit programs attached from start to stop "
                 "(capture.syscalls.attach: always)");
    return absl::OkStatus();
  }
  if (!syscalls_->hooks_detachable()) {
    spdlog::warn("syscall capture: variant {} keeps its enter/exit programs attached: every "
                 "syscall of every process pays for them",
                 syscalls_->variant());
    return absl::OkStatus();
  }
  std::lock_guard lock(hooks_mu_);
  // Long enough that enrolled processes coming and going keep them
  // attached rather than attaching and detaching per process.
  constexpr auto kLinger = std::chrono::seconds(30);
  syscall_demand_.emplace(syscalls_->hooks_attached(), kLinger);
  if (SyscallHooksWanted()) {
    spdlog::info("syscall capture: enter/exit programs attached ({})",
                 filter_->HasSelection() ? "a process is selected"
                                         : "they watch every process for slow syscalls");
    return absl::OkStatus();
  }
  KSPAN_RETURN_IF_ERROR(syscalls_->SetHooksAttached(false));
  syscall_demand_->Set(false);
  spdlog::info("syscall capture: enter/exit programs detached until a process is selected or "
               "enrolled; slow syscalls of every process: {}",
               syscalls_->slow_watch());
  return absl::OkStatus();
}

void Agent::UpdateSyscallHooks(const char* why, std::uint32_t pid, std::uint64_t exec_ns) {
  std::lock_guard lock(hooks_mu_);
  if (!syscall_demand_ || hooks_stopped_ || !filter_) return;
  const auto action = syscall_demand_->Update(SyscallHooksWanted(), std::chrono::steady_clock::now());
  if (action == SyscallDemand::Action::kNone) return;
  const bool attach = action == SyscallDemand::Action::kAttach;
  const absl::Status s = syscalls_->SetHooksAttached(attach);
  syscall_demand_->Set(syscalls_->hooks_attached());
  if (!s.ok()) {
    // Retried at the next tick; meanwhile selected processes' syscalls are
    // not recorded.
    spdlog::error("syscall capture: {} the enter/exit programs: {}",
                  attach ? "cannot attach" : "cannot detach", std::string(s.message()));
    return;
  }
  if (!attach) {
    spdlog::info("syscall capture: enter/exit programs detached (no process selected or enrolled)");
  } else if (exec_ns != 0) {
    const std::uint64_t now = MonotonicNowNs();
    spdlog::info("syscall capture: enter/exit programs attached ({}, pid {}), {:.2f} ms after "
                 "its exec",
                 why, pid, now > exec_ns ? static_cast<double>(now - exec_ns) / 1e6 : 0.0);
  } else if (pid != 0) {
    spdlog::info("syscall capture: enter/exit programs attached ({}, pid {})", why, pid);
  } else {
    spdlog::info("syscall capture: enter/exit programs attached ({})", why);
  }
}

absl::Status Agent::ApplyProcessFilter() {
  auto filter = CaptureFilter::Open(pins_->path());
  if (!filter.ok()) return filter.status();
  filter_.emplace(std::move(*filter));
  const auto& p = config_.capture.processes;
  for (auto pid : p.pids) {
    KSPAN_RETURN_IF_ERROR(filter_->AllowPid(pid));
  }
  for (auto pid : p.deny_pids) {
    KSPAN_RETURN_IF_ERROR(filter_->DenyPid(pid));
  }
  for (const auto& comm : p.comms) {
    KSPAN_RETURN_IF_ERROR(filter_->AllowCommPrefix(comm));
  }
  for (const auto& cgroup : p.cgroups) {
    if (auto s = filter_->AllowCgroup(cgroup); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("capture.processes.cgroups: ", std::string(s.message())));
    }
  }
  KSPAN_RETURN_IF_ERROR(filter_->SetSlowThreshold(config_.capture.slow_threshold));
  spdlog::info("process filter: {} pid(s), {} comm prefix(es), {} cgroup(s) selected; {} denied; "
               "others: syscalls slower than {}ms",
               p.pids.size(), p.comms.size(), p.cgroups.size(), p.deny_pids.size(),
               config_.capture.slow_threshold.count());
  return absl::OkStatus();
}

void Agent::RegisterCaptureMetrics() {
  metrics_.AddCallbackCounter("kspan_ring_records_total", "Records read from BPF ring buffers.",
                              {}, [this] { return static_cast<double>(reader_->records_read()); },
                              this);
  metrics_.AddCallbackGauge("kspan_clock_offset_seconds",
                            "CLOCK_REALTIME minus CLOCK_MONOTONIC applied to kernel timestamps.",
                            {}, [this] { return clock_->offset_ns() / 1e9; }, this);
  metrics_.AddCallbackGauge("kspan_clock_skew_seconds",
                            "Change of the realtime offset at the last re-sample (skew corrected).",
                            {}, [this] { return clock_->last_skew_ns() / 1e9; }, this);
  if (syscalls_) {
    metrics_.AddCallbackGauge(
        "kspan_syscall_hooks_attached",
        "1 while the syscall enter/exit programs are attached (every syscall on the host pays "
        "for them), 0 while no process is selected or enrolled.",
        {}, [this] { return syscalls_->hooks_attached() ? 1.0 : 0.0; }, this);
    if (syscalls_->slow_watch_taken() == SlowWatch::kScan) {
      metrics_.AddCallbackCounter(
          "kspan_syscall_slow_scans_total",
          "Scans of every thread of the host for slow syscalls (capture.slow_watch: scan).", {},
          [this] { return static_cast<double>(syscalls_->scan_stats().scans); }, this);
      metrics_.AddCallbackCounter(
          "kspan_syscall_slow_scan_seconds_total",
          "Time the agent spent in those scans: what the slow-syscall watch costs the host.", {},
          [this] { return syscalls_->scan_stats().nanoseconds / 1e9; }, this);
      metrics_.AddCallbackCounter(
          "kspan_syscall_slow_scan_failures_total",
          "Scans that could not run (the iterator could not be created or read).", {},
          [this] { return static_cast<double>(syscalls_->scan_stats().failures); }, this);
    }
    static constexpr StatSlot kSysSlots[] = {
        {KSPAN_SYS_STAT_EMITTED, StatSlot::kEvent, "syscall"},
        {KSPAN_SYS_STAT_RING_FULL, StatSlot::kLost, "ring_full"},
        {KSPAN_SYS_STAT_ENTER_NO_SLOT, StatSlot::kLost, "in_flight_table_full"},
        {KSPAN_SYS_STAT_BELOW_THRESHOLD, StatSlot::kOwn, "kspan_bpf_syscalls_below_threshold_total",
         "Paired syscalls faster than their minimum duration, not recorded (by design)."},
        // The syscall began before capture attached or the process was
        // selected: not a loss.
        {KSPAN_SYS_STAT_EXIT_NO_ENTER, StatSlot::kOwn, "kspan_bpf_syscall_exits_unpaired_total",
         "Syscall exits whose enter was not seen (began before capture or selection)."},
        {KSPAN_SYS_STAT_PATH_TABLE_FULL, StatSlot::kOwn,
         "kspan_bpf_syscall_paths_not_remembered_total",
         "openat paths not remembered because the path table was full."},
    };
    RegisterStatSlots("syscalls", kSysSlots,
                      [this](int i) { return syscalls_->ReadStats()[static_cast<std::size_t>(i)]; });
  }
  if (dns_) {
    static constexpr StatSlot kDnsSlots[] = {
        {KSPAN_DNS_STAT_QUERY_EMITTED, StatSlot::kEvent, "dns_query"},
        {KSPAN_DNS_STAT_RESPONSE_EMITTED, StatSlot::kEvent, "dns_response"},
        {KSPAN_DNS_STAT_RING_FULL, StatSlot::kLost, "ring_full"},
    };
    RegisterStatSlots("dns", kDnsSlots,
                      [this](int i) { return dns_->ReadStats()[static_cast<std::size_t>(i)]; });
  }
  if (http_) {
    static constexpr StatSlot kHttpSlots[] = {
        {KSPAN_HTTP_STAT_EMITTED, StatSlot::kEvent, "http"},
        {KSPAN_HTTP_STAT_RING_FULL, StatSlot::kLost, "ring_full"},
        {KSPAN_HTTP_STAT_INFLIGHT_FULL, StatSlot::kLost, "in_flight_table_full"},
        {KSPAN_HTTP_STAT_STATE_FULL, StatSlot::kLost, "socket_table_full"},
        {KSPAN_HTTP_STAT_NOT_HTTP, StatSlot::kOwn, "kspan_bpf_http_streams_not_http_total",
         "TCP streams of selected processes whose first bytes were not HTTP/1.x (skipped)."},
        {KSPAN_HTTP_STAT_MESSAGES_CUT, StatSlot::kOwn, "kspan_bpf_http_messages_cut_total",
         "Pipelined HTTP messages beyond the per-syscall limit, not recorded."},
        {KSPAN_HTTP_STAT_LINES_CUT, StatSlot::kOwn, "kspan_bpf_http_header_lines_cut_total",
         "Syscalls with more HTTP header lines than scanned (later trace headers missed)."},
        {KSPAN_HTTP_STAT_ROOT_LIMITED, StatSlot::kOwn, "kspan_bpf_http_root_requests_limited_total",
         "HTTP requests without trace context over capture.http.root_spans_per_second: not "
         "recorded (sampled out in the kernel)."},
        {KSPAN_HTTP_STAT_PARENT_UNSAMPLED, StatSlot::kOwn,
         "kspan_bpf_http_parent_unsampled_total",
         "HTTP requests whose traceparent is not sampled: not recorded."},
    };
    RegisterStatSlots("http", kHttpSlots,
                      [this](int i) { return http_->ReadStats()[static_cast<std::size_t>(i)]; });
  }
  if (process_) {
    static constexpr StatSlot kProcSlots[] = {
        {KSPAN_PROC_STAT_EXEC_EMITTED, StatSlot::kEvent, "exec"},
        {KSPAN_PROC_STAT_EXIT_EMITTED, StatSlot::kEvent, "exit"},
        {KSPAN_PROC_STAT_RING_FULL, StatSlot::kLost, "ring_full"},
        {KSPAN_PROC_STAT_ENV_ENROLLED, StatSlot::kOwn, "kspan_bpf_process_env_enrolled_total",
         "Execs the exec hook enrolled from the OpenTelemetry variables in their environment."},
        {KSPAN_PROC_STAT_ENV_UNREADABLE, StatSlot::kOwn, "kspan_bpf_process_env_unreadable_total",
         "Execs whose environment the exec hook could not read (not enrolled by it)."},
    };
    RegisterStatSlots("process", kProcSlots,
                      [this](int i) { return process_->ReadStats()[static_cast<std::size_t>(i)]; });
  }
  if (tcp_) {
    static constexpr StatSlot kTcpSlots[] = {
        {KSPAN_TCP_STAT_CONNECT_EMITTED, StatSlot::kEvent, "tcp_connect"},
        {KSPAN_TCP_STAT_ACCEPT_EMITTED, StatSlot::kEvent, "tcp_accept"},
        {KSPAN_TCP_STAT_CONN_EMITTED, StatSlot::kEvent, "tcp_connection"},
        {KSPAN_TCP_STAT_NOTE_EMITTED, StatSlot::kEvent, "tcp_note"},
        {KSPAN_TCP_STAT_RING_FULL, StatSlot::kLost, "ring_full"},
        {KSPAN_TCP_STAT_START_TABLE_FULL, StatSlot::kLost, "start_table_full"},
        {KSPAN_TCP_STAT_CONN_TABLE_FULL, StatSlot::kLost, "conn_table_full"},
    };
    RegisterStatSlots("tcp", kTcpSlots,
                      [this](int i) { return tcp_->ReadStats()[static_cast<std::size_t>(i)]; });
  }
}

void Agent::RegisterStatSlots(const char* family, std::span<const StatSlot> slots,
                              std::function<std::uint64_t(int)> read) {
  for (const auto& slot : slots) {
    const int index = slot.index;
    auto value = [read, index] { return static_cast<double>(read(index)); };
    switch (slot.what) {
      case StatSlot::kEvent:
        metrics_.AddCallbackCounter("kspan_bpf_events_total",
                                    "Records BPF programs submitted to ring buffers, by kind.",
                                    {{"family", family}, {"kind", slot.label}}, value, this);
        break;
      case StatSlot::kLost:
        metrics_.AddCallbackCounter("kspan_bpf_dropped_total",
                                    "Kernel events lost before reaching userspace, by reason.",
                                    {{"family", family}, {"reason", slot.label}}, value, this);
        break;
      case StatSlot::kOwn:
        metrics_.AddCallbackCounter(slot.label, slot.help, {}, value, this);
        break;
    }
  }
}

void Agent::LogTotals() {
  // Every family's slots as registered for /metrics (RegisterCaptureMetrics),
  // so the line and the metrics cannot disagree.
  const std::uint64_t events = metrics_.CounterTotal("kspan_bpf_events_total");
  const std::uint64_t lost = metrics_.CounterTotal("kspan_bpf_dropped_total");
  const std::uint64_t spans = metrics_.CounterTotal("kspan_spans_assembled_total");
  if (spans == last_logged_spans_ && lost == last_logged_lost_) return;
  last_logged_spans_ = spans;
  last_logged_lost_ = lost;
  spdlog::info(
      "totals: kernel events {} (lost in kernel {}), decoded {}, decode errors {}, spans {}, "
      "exported {} (sum over destinations), dropped {}",
      events, lost, decoder_->decoded(), decoder_->errors(), spans,
      metrics_.CounterTotal("kspan_exporter_spans_exported_total"),
      metrics_.CounterTotal("kspan_exporter_batcher_dropped_spans_total") +
          metrics_.CounterTotal("kspan_exporter_spans_dropped_total"));
}

std::string Agent::StatusJson() {
  std::lock_guard lock(status_mu_);
  nlohmann::json j;
  j["version"] = KSPAN_VERSION;
  j["pid"] = getpid();
  j["uptime_seconds"] = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::steady_clock::now() - started_)
                            .count();
  j["pin_path"] = pins_ ? pins_->path() : "";
  {
    // This thread's sets (an admin server thread, started after the drop),
    // not what the agent meant to keep.
    const PrivilegeState now = ReadPrivileges();
    j["privileges"] = {{"drop_capabilities", config_.security.drop_capabilities},
                       {"effective", now.effective},
                       {"permitted", now.permitted},
                       {"bounding", now.bounding},
                       {"ambient", now.ambient},
                       {"no_new_privs", now.no_new_privs}};
  }
  if (receiver_) {
    j["receiver"] = {{"grpc_port", receiver_grpc_port_.load()},
                     {"http_port", receiver_http_port_.load()}};
  }
  j["enroll_from_environment"] =
      std::string(EnvironmentEnrollModeName(config_.correlation.enroll_from_environment));
  if (enrollment_) {
    const auto pids = enrollment_->Enrolled();
    j["enrolled_pids"] = pids;
    auto& who = j["enrolled"] = nlohmann::json::array();
    for (auto pid : pids) who.push_back({{"pid", pid}, {"is", Describe(pid)}});
    // Every enrolled process, configured ones too, and why.
    auto& why = j["enrollment"] = nlohmann::json::array();
    for (const auto& p : enrollment_->List()) {
      auto reasons = nlohmann::json::array();
      for (auto r : p.reasons) reasons.push_back(std::string(EnrollReasonName(r)));
      why.push_back({{"pid", p.pid},
                     {"reason", reasons.empty() ? "" : reasons.front()},
                     {"reasons", reasons},
                     {"service", p.service.empty() ? Describe(p.pid) : p.service},
                     {"detail", p.detail}});
    }
  }
  if (resources_) {
    j["identity"] = {{"processes", resources_->size()},
                     {"containers", containers_ ? containers_->size() : 0},
                     {"follows_exec", process_ != nullptr}};
  }
  if (correlator_) j["correlation"] = {{"pending_kernel_spans", correlator_->pending()}};
  auto& families = j["capture"] = nlohmann::json::array();
  if (process_) {
    const auto st = process_->ReadStats();
    nlohmann::json f;
    f["family"] = "process";
    f["variant"] = "tracepoint";
    f["events"] = {{"exec", st[KSPAN_PROC_STAT_EXEC_EMITTED]},
                   {"exit", st[KSPAN_PROC_STAT_EXIT_EMITTED]},
                   {"env_enrolled", st[KSPAN_PROC_STAT_ENV_ENROLLED]},
                   {"env_unreadable", st[KSPAN_PROC_STAT_ENV_UNREADABLE]}};
    f["lost"] = {{"ring_full", st[KSPAN_PROC_STAT_RING_FULL]}};
    families.push_back(f);
  }
  if (tcp_) {
    const auto st = tcp_->ReadStats();
    nlohmann::json f;
    f["family"] = "tcp";
    f["variant"] = tcp_->variant();
    f["accept_variant"] = tcp_->accept_variant();
    f["programs"] = tcp_->attached_programs();
    f["events"] = {{"tcp_connect", st[KSPAN_TCP_STAT_CONNECT_EMITTED]},
                   {"tcp_accept", st[KSPAN_TCP_STAT_ACCEPT_EMITTED]},
                   {"tcp_connection", st[KSPAN_TCP_STAT_CONN_EMITTED]},
                   {"tcp_note", st[KSPAN_TCP_STAT_NOTE_EMITTED]}};
    f["lost"] = {{"ring_full", st[KSPAN_TCP_STAT_RING_FULL]},
                 {"start_table_full", st[KSPAN_TCP_STAT_START_TABLE_FULL]},
                 {"conn_table_full", st[KSPAN_TCP_STAT_CONN_TABLE_FULL]}};
    if (auto ring = QueryRing(tcp_->ring_fd()); ring.ok()) {
      f["ring"] = {{"size_bytes", ring->size_bytes}, {"used_bytes", ring->used_bytes}};
    }
    families.push_back(f);
  }
  if (syscalls_) {
    const auto st = syscalls_->ReadStats();
    nlohmann::json f;
    f["family"] = "syscalls";
    f["variant"] = syscalls_->variant();
    f["hooks"] = {{"attach", config_.capture.syscalls.attach_always ? "always" : "on_demand"},
                  {"attached", syscalls_->hooks_attached()}};
    f["slow_watch"] = syscalls_->slow_watch();
    if (syscalls_->slow_watch_taken() == SlowWatch::kScan) {
      const auto scan = syscalls_->scan_stats();
      f["slow_scan"] = {{"scans", scan.scans},
                        {"seconds", scan.nanoseconds / 1e9},
                        {"failures", scan.failures}};
    }
    f["syscalls"] = syscalls_->EnabledSyscalls();
    f["events"] = {{"syscall", st[KSPAN_SYS_STAT_EMITTED]},
                   {"below_threshold", st[KSPAN_SYS_STAT_BELOW_THRESHOLD]},
                   {"exit_unpaired", st[KSPAN_SYS_STAT_EXIT_NO_ENTER]}};
    f["lost"] = {{"ring_full", st[KSPAN_SYS_STAT_RING_FULL]},
                 {"in_flight_table_full", st[KSPAN_SYS_STAT_ENTER_NO_SLOT]}};
    if (auto ring = QueryRing(syscalls_->ring_fd()); ring.ok()) {
      f["ring"] = {{"size_bytes", ring->size_bytes}, {"used_bytes", ring->used_bytes}};
    }
    if (const PerCpuRing* rings = reader_ ? reader_->per_cpu_ring("kspan_sys_rec") : nullptr) {
      const RingUsage u = rings->Usage();  // safe while the reader drains
      f["record_rings"] = {{"cpus", rings->cpus()},
                           {"size_bytes", u.size_bytes},
                           {"used_bytes", u.used_bytes},
                           {"fullest_cpu_used", rings->MaxCpuUsedFraction()}};
    }
    families.push_back(f);
  }
  if (dns_) {
    const auto st = dns_->ReadStats();
    nlohmann::json f;
    f["family"] = "dns";
    f["variant"] = dns_->variant();
    f["events"] = {{"dns_query", st[KSPAN_DNS_STAT_QUERY_EMITTED]},
                   {"dns_response", st[KSPAN_DNS_STAT_RESPONSE_EMITTED]}};
    f["lost"] = {{"ring_full", st[KSPAN_DNS_STAT_RING_FULL]}};
    families.push_back(f);
  }
  if (http_) {
    const auto st = http_->ReadStats();
    nlohmann::json f;
    f["family"] = "http";
    f["variant"] = http_->variant();
    f["events"] = {{"http", st[KSPAN_HTTP_STAT_EMITTED]},
                   {"not_http_streams", st[KSPAN_HTTP_STAT_NOT_HTTP]},
                   {"root_requests_limited", st[KSPAN_HTTP_STAT_ROOT_LIMITED]},
                   {"parent_unsampled", st[KSPAN_HTTP_STAT_PARENT_UNSAMPLED]}};
    f["root_spans_per_second"] = config_.capture.http.root_spans_per_second;
    f["lost"] = {{"ring_full", st[KSPAN_HTTP_STAT_RING_FULL]},
                 {"in_flight_table_full", st[KSPAN_HTTP_STAT_INFLIGHT_FULL]},
                 {"socket_table_full", st[KSPAN_HTTP_STAT_STATE_FULL]}};
    families.push_back(f);
  }
  if (filter_) {
    const auto cfg = filter_->ReadConfig();
    j["filter"] = {{"selected_pids", cfg.pid_allow_count},
                   {"selected_cgroups", cfg.cgroup_allow_count},
                   {"selected_comm_prefixes", cfg.comm_prefix_count},
                   {"slow_threshold_ns", cfg.slow_threshold_ns}};
  }
  j["pipeline"] = {{"ring_records", reader_ ? reader_->records_read() : 0},
                   {"decoded", decoder_ ? decoder_->decoded() : 0},
                   {"decode_errors", decoder_ ? decoder_->errors() : 0},
                   {"spans", metrics_.CounterTotal("kspan_spans_assembled_total")}};
  auto& dests = j["destinations"] = nlohmann::json::object();
  for (const auto& d : config_.exporter.destinations) {
    const auto acc = ReadAccounting(metrics_, d.name);
    dests[d.name] = {{"exported", acc.exported}, {"dropped", acc.dropped_total()}};
  }
  j["export"] = {{"submitted", metrics_.CounterTotal("kspan_exporter_spans_submitted_total")},
                 {"batcher_dropped",
                  metrics_.CounterTotal("kspan_exporter_batcher_dropped_spans_total")}};
  return j.dump();
}

void Agent::Tick() {
  if (assembler_) assembler_->ExpireDns(MonotonicNowNs());
  if (assembler_) assembler_->ExpireHttp(MonotonicNowNs());
  if (enrollment_) enrollment_->Expire();
  // Selections made with bpftool, processes that left, the linger.
  UpdateSyscallHooks("a process selected in the filter maps");
  if (resources_) resources_->Sweep(MonotonicNowNs());
  const auto now = std::chrono::steady_clock::now();
  if (containers_ && now - last_container_sweep_ >= std::chrono::seconds(30)) {
    last_container_sweep_ = now;
    containers_->Sweep();
  }
  if (now - last_totals_log_ >= std::chrono::seconds(60)) {
    last_totals_log_ = now;
    LogTotals();
  }
}

void Agent::Stop(std::chrono::milliseconds deadline) {
  if (stopped_) return;
  stopped_ = true;
  if (admin_) admin_->SetReady(false);
  // No new app spans; those accepted are already in the pipeline.
  if (receiver_) receiver_->Shutdown();
  if (process_) process_->Detach();
  if (tcp_) tcp_->Detach();
  if (syscalls_) {
    std::lock_guard lock(hooks_mu_);
    hooks_stopped_ = true;
    syscalls_->Detach();
  }
  if (dns_) dns_->Detach();
  if (http_) http_->Detach();
  if (reader_) reader_->Stop();  // drains what the kernel already submitted
  if (http_) assembler_->FlushHttp();  // exchanges still open
  if (correlator_) correlator_->Flush();  // kernel spans still in the join window
  if (pipeline_) pipeline_->Shutdown(deadline);
  if (decoder_) LogTotals();
  metrics_.RemoveCallbacks(this);
  std::lock_guard lock(status_mu_);
  enrollment_.reset();  // enrolled pids leave the allow-list
  receiver_.reset();
  filter_.reset();
  syscalls_.reset();
  dns_.reset();
  http_.reset();
  tcp_.reset();   // destroys the skeletons
  process_.reset();
  pins_.reset();  // removes /sys/fs/bpf/kspan
  if (admin_) admin_->Stop();
}

}  // namespace kspan
