// The agent's configuration: YAML file, KSPAN_* and OTEL_EXPORTER_OTLP_*
// environment variables, and flags. Precedence: flag > env > file > default.
// Every key is known: an unknown key or a bad value refuses to start with a
// message naming the file, the key and why.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "exporter/export_config.h"
#include "userspace/otel_environment.h"

namespace kspan {

struct AgentConfig {
  std::string log_level = "info";
  std::string state_dir = "/var/lib/kspan";
  // host:port of /metrics, /healthz, /readyz; empty disables the server.
  std::string admin_listen = "127.0.0.1:9464";

  struct Bpf {
    std::string pin_path = "/sys/fs/bpf/kspan";
    std::string btf;  // external BTF file; empty = /sys/kernel/btf/vmlinux
  } bpf;

  struct Capture {
    std::size_t ring_buffer_bytes = 4u << 20;
    std::size_t wakeup_bytes = 256u << 10;
    std::chrono::milliseconds poll_interval{100};

    struct Tcp {
      bool enabled = true;
      bool selected_only = false;    // scope: all | selected
      std::string variant = "auto";  // auto | tp_btf | raw_tp | tracepoint
    } tcp;

    // Selected processes get full syscall capture (and TCP with scope
    // "selected"); denied ones nothing at all.
    struct Processes {
      std::vector<std::uint32_t> pids;
      std::vector<std::string> comms;    // comm prefixes, at most 15 bytes
      std::vector<std::string> cgroups;  // cgroup v2 directories
      std::vector<std::uint32_t> deny_pids;
    } processes;

    // Processes not selected record only syscalls slower than this (0: none).
    std::chrono::milliseconds slow_threshold{10};
    // How those processes are watched: "scan" (the agent looks at every
    // thread every slow_scan_interval; no program on any per-event path) or
    // "sched_switch" (a program at every context switch; exact timing).
    std::string slow_watch = "scan";
    // scan: how often; 0 = the slow threshold. At most the threshold.
    std::chrono::milliseconds slow_scan_interval{0};

    // DNS over UDP port 53 as client spans, for every process not denied.
    bool dns = true;

    // HTTP/1.x exchanges as SERVER/CLIENT spans, for selected processes.
    struct Http {
      bool enabled = true;
      // A response is over when no more of it came for this long (or the
      // next response started, or the connection closed).
      std::chrono::milliseconds response_idle{500};
      // A request with no response after this long ends as an error span.
      std::chrono::milliseconds response_timeout{30000};
      std::size_t max_connections = 16384;
      bool keep_query = false;  // url.query: may carry secrets
      // Requests without trace context recorded per process and second
      // (0: all); sampled traceparents always, unsampled never.
      std::size_t root_spans_per_second = 100;
      std::string variant = "auto";  // auto | tp_btf | tracepoint
    } http;

    struct Syscalls {
      bool enabled = true;
      std::string variant = "auto";  // auto | tp_btf | raw_tp | tracepoint
      // attach: on_demand (false): the enter and exit programs, which every
      // syscall on the host pays for while attached, only while a process
      // is selected or enrolled; always (true): from start to stop, so an
      // enrolled process is captured from the first syscall after its exec
      // (on_demand attaches on that exec's record, a fraction of a
      // millisecond later).
      bool attach_always = false;
      std::vector<std::string> names;  // empty: the default set
      // Selected processes: record a syscall of this class only when at
      // least this slow (socket I/O of selected processes: always).
      std::chrono::milliseconds file_io_min{1};
      std::chrono::milliseconds socket_io_min{0};
      std::chrono::milliseconds wait_min{1};
      std::chrono::milliseconds other_min{0};
    } syscalls;
  } capture;

  // The OTLP receiver for spans of instrumented applications on this host.
  struct Receiver {
    bool grpc_enabled = true;
    std::string grpc_endpoint = "127.0.0.1:4317";
    bool http_enabled = true;
    std::string http_endpoint = "127.0.0.1:4318";
    std::size_t max_request_bytes = 4u << 20;
    // Bytes all requests in flight may hold at once (both transports); at
    // least twice max_request_bytes.
    std::size_t max_in_flight_bytes = 64u << 20;
    // An OTLP/HTTP request must arrive whole within this.
    std::chrono::milliseconds request_timeout{10000};
    // receiver.limits: what one received span may hold (see SpanLimits).
    SpanLimits span_limits;
  } receiver;
  // Kernel spans joined into the traces applications send.
  struct Correlation {
    bool enabled = true;
    // How long kernel spans wait for the app spans that may contain them;
    // longer than the applications' export delay (SDK default 5 s).
    std::chrono::milliseconds join_window{6000};
    bool export_unmatched = true;  // unmatched: export | drop
    std::chrono::milliseconds clock_tolerance{1};
    std::size_t max_pending_spans = 200000;
    // Processes that send spans get full syscall and HTTP capture, until
    // they have not sent for enrollment_linger.
    bool enroll_senders = true;
    std::chrono::milliseconds enrollment_linger{60000};
    // Processes whose environment says they export traces to kspan's
    // receiver are enrolled from their exec (userspace/otel_environment.h).
    EnvironmentEnrollMode enroll_from_environment = EnvironmentEnrollMode::kReceiver;
  } correlation;
  // What kspan says about the processes and the host in the resources of
  // kernel spans (app spans keep their own resources).
  struct ResourceSettings {
    // Added to every kernel span's resource under keys kspan did not set
    // from the kernel's view (k8s.cluster.name, deployment.environment.name,
    // ...). OTEL_RESOURCE_ATTRIBUTES adds to (and overrides) these.
    std::vector<std::pair<std::string, std::string>> attributes;
    // service.name of work no process owns (a connection nobody accepted);
    // OTEL_SERVICE_NAME, else service.name in OTEL_RESOURCE_ATTRIBUTES.
    std::string host_service_name = "kernel";
    // Where the node's own files are (/etc/machine-id, /var/log/pods,
    // /var/lib/docker, /run/containerd, ...): "/" on a host, the mount
    // point of the node's root in a container (a DaemonSet's /host).
    std::string host_root = "/";
  } resource;

  struct Security {
    // After its BPF programs are loaded and attached, the agent keeps only
    // the capabilities it still uses (userspace/privileges.h) and sets
    // no_new_privs. Off: it keeps every capability it was started with.
    bool drop_capabilities = true;
  } security;
  ExportConfig exporter;
  // True when no destination was configured anywhere and the embedded
  // default (local file store + console) was filled in.
  bool embedded_default = false;
};

// Values given on the command line; unset ones do not override.
struct FlagOverrides {
  std::optional<std::string> log_level;
  std::optional<std::string> state_dir;
  std::optional<std::string> admin_listen;
  std::optional<std::string> btf;
  std::optional<std::string> otlp_endpoint;
  // host:port of the OTLP receiver; "off" disables that transport.
  std::optional<std::string> receiver_grpc;
  std::optional<std::string> receiver_http;
  std::optional<bool> console;
  // Added to capture.processes (repeatable flags).
  std::vector<std::uint32_t> pids;
  std::vector<std::string> comms;
  std::vector<std::string> cgroups;
};

using GetEnv = std::function<const char*(const char*)>;

// Loads `path` (empty: no file), applies env then flags, fills defaults and
// the embedded default destinations, validates. Errors read
// "<file>: <key>: <why>" (or "<VARIABLE>: <why>", "--flag: <why>").
absl::StatusOr<AgentConfig> LoadConfig(const std::string& path, const FlagOverrides& flags,
                                       const GetEnv& getenv);

// The same from YAML text, for `kspan validate` and tests; `origin` names it.
absl::StatusOr<AgentConfig> ParseConfig(const std::string& yaml, const std::string& origin,
                                        const FlagOverrides& flags, const GetEnv& getenv);

}  // namespace kspan
