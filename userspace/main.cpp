// kspan: host-level span capture agent.
//
//   kspan run [-c kspan.yaml] [flags]   the agent
//   kspan validate kspan.yaml           check a config and exit
//   kspan dlq list|replay [-c kspan.yaml] [--destination D]   the dead-letter store
//   kspan version
#include <signal.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "CLI/CLI.hpp"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"
#include "exporter/dlq_commands.h"
#include "userspace/agent.h"
#include "userspace/config.h"
#include "userspace/kernel_features.h"
#include "userspace/log_sink.h"
#include "userspace/status_command.h"

namespace {

const char* RealGetEnv(const char* name) { return std::getenv(name); }

void SetUpLogging(const std::string& level) {
  // Logs go to stderr so stdout carries only the console destination's lines.
  // Through EscapingSink: messages carry names from processes and answers
  // from collectors.
  auto logger = std::make_shared<spdlog::logger>(
      "kspan", std::make_shared<kspan::EscapingSink>(
                   std::make_shared<spdlog::sinks::stderr_color_sink_mt>()));
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(spdlog::level::from_str(level));
}

int Run(const std::string& config_path, const kspan::FlagOverrides& flags) {
  auto config = kspan::LoadConfig(config_path, flags, RealGetEnv);
  if (!config.ok()) {
    std::fprintf(stderr, "kspan: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  SetUpLogging(config->log_level);
  kspan::RouteLibbpfLogs();
  // Before any thread: namespaces are per thread, inherited by new ones.
  kspan::JoinHostCgroupNamespace();

  // Signals are taken synchronously by the main thread; every thread the
  // agent starts inherits this mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  kspan::Agent agent(*config);
  if (auto s = agent.Start(); !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    agent.Stop(std::chrono::seconds(2));
    return 1;
  }
  spdlog::info("kspan {} running (pid {})", KSPAN_VERSION, getpid());
  if (config->embedded_default) {
    std::string where;
    for (const auto& d : config->exporter.destinations) {
      if (d.type == kspan::DestinationType::kFile) where = d.file.path;
    }
    bool console = false;
    for (const auto& d : config->exporter.destinations) {
      console = console || d.type == kspan::DestinationType::kConsole;
    }
    spdlog::info(
        "no destination configured: spans go to {} (OTLP/JSON){}. "
        "Set OTEL_EXPORTER_OTLP_ENDPOINT or destinations in kspan.yaml to send them elsewhere.",
        where, console ? " and to this terminal" : "");
  }

  const struct timespec tick = {1, 0};
  while (true) {
    int sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig == SIGINT || sig == SIGTERM) {
      spdlog::info("{} received: flushing and exiting", sig == SIGINT ? "SIGINT" : "SIGTERM");
      break;
    }
    agent.Tick();
  }
  agent.Stop(std::chrono::seconds(10));
  spdlog::info("kspan stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Everything kspan creates (span store, disk queues, dead letters, SQLite's
  // -wal/-shm, whatever a library adds beside them) is its owner's only,
  // whichever subcommand creates it and whatever mode the creating code asks
  // for. First, before anything is created.
  umask(077);
  CLI::App app{"kspan: kernel spans joined to your traces, exported over OTLP"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("kspan ") + KSPAN_VERSION);

  std::string config_path;
  kspan::FlagOverrides flags;
  std::string log_level, state_dir, admin_listen, btf, otlp_endpoint, receiver_grpc, receiver_http;
  bool no_console = false;
  bool console = false;

  auto* run = app.add_subcommand("run", "Capture kernel spans and export them");
  run->add_option("-c,--config", config_path, "YAML config file")->check(CLI::ExistingFile);
  run->add_option("--log-level", log_level, "trace, debug, info, warn, error, off");
  run->add_option("--state-dir", state_dir, "Directory for the local span store");
  run->add_option("--admin-listen", admin_listen, "host:port of /metrics, /healthz, /readyz");
  run->add_option("--btf", btf, "External BTF file, for kernels built without BTF");
  run->add_option("--otlp-endpoint", otlp_endpoint,
                  "OTLP/gRPC endpoint, e.g. http://127.0.0.1:4317 (sets destination 'otlp')");
  run->add_option("--receiver-grpc", receiver_grpc,
                  "OTLP/gRPC receiver for app spans, host:port (default 127.0.0.1:4317; off)");
  run->add_option("--receiver-http", receiver_http,
                  "OTLP/HTTP receiver for app spans, host:port (default 127.0.0.1:4318; off)");
  run->add_option("--pid", flags.pids, "Trace this process fully (repeatable)");
  run->add_option("--comm", flags.comms, "Trace processes whose name starts with this (repeatable)");
  run->add_option("--cgroup", flags.cgroups,
                  "Trace processes in this cgroup v2 directory (repeatable)");
  run->add_flag("--console", console, "Also print one line per span to stdout");
  run->add_flag("--no-console", no_console, "Do not print spans to stdout");

  std::string validate_path;
  auto* validate = app.add_subcommand("validate", "Check a config file and exit");
  validate->add_option("config", validate_path, "YAML config file")->required();

  // `kspan dlq`: reads the same config file, variables and --state-dir as
  // `kspan run`, so it finds the same stores and sends to the same endpoints.
  std::string dlq_config, dlq_destination, dlq_state_dir;
  auto* dlq = app.add_subcommand("dlq", "List or replay the dead-letter store");
  dlq->require_subcommand(1);
  auto* dlq_list = dlq->add_subcommand("list", "List dead letters");
  auto* dlq_replay = dlq->add_subcommand("replay", "Send dead letters to their destination again");
  for (auto* sub : {dlq_list, dlq_replay}) {
    sub->add_option("-c,--config", dlq_config, "YAML config file")->check(CLI::ExistingFile);
    sub->add_option("--state-dir", dlq_state_dir, "state_dir of the agent");
  }
  dlq_replay->add_option("--destination", dlq_destination, "Only this destination");

  kspan::StatusOptions status_options;
  auto* status = app.add_subcommand("status", "Capture and export health of the running agent");
  status->add_option("--admin", status_options.admin, "The agent's admin.listen address");
  status->add_option("--pin-path", status_options.pin_path, "The agent's bpf.pin_path");
  status->add_flag("--json", status_options.json, "Print the raw JSON");

  app.add_subcommand("version", "Print the version");

  CLI11_PARSE(app, argc, argv);

  auto opt = [](const std::string& v) {
    return v.empty() ? std::optional<std::string>() : std::optional<std::string>(v);
  };
  flags.log_level = opt(log_level);
  flags.state_dir = opt(state_dir);
  flags.admin_listen = run->count("--admin-listen") ? std::optional(admin_listen) : std::nullopt;
  flags.btf = opt(btf);
  flags.otlp_endpoint = run->count("--otlp-endpoint") ? std::optional(otlp_endpoint) : std::nullopt;
  flags.receiver_grpc = run->count("--receiver-grpc") ? std::optional(receiver_grpc) : std::nullopt;
  flags.receiver_http = run->count("--receiver-http") ? std::optional(receiver_http) : std::nullopt;
  if (console) flags.console = true;
  if (no_console) flags.console = false;

  if (*run) return Run(config_path, flags);
  if (*status) return kspan::RunStatus(status_options);
  if (*dlq) {
    kspan::FlagOverrides dlq_flags;
    dlq_flags.state_dir = opt(dlq_state_dir);
    auto config = kspan::LoadConfig(dlq_config, dlq_flags, RealGetEnv);
    if (!config.ok()) {
      std::fprintf(stderr, "kspan: %s\n", std::string(config.status().message()).c_str());
      return 2;
    }
    SetUpLogging("warn");
    if (*dlq_list) {
      auto s = kspan::DlqList(config->exporter, stdout);
      if (!s.ok()) {
        std::fprintf(stderr, "kspan: %s\n", std::string(s.message()).c_str());
        return 1;
      }
      return 0;
    }
    auto summary = kspan::DlqReplay(config->exporter, dlq_destination, stdout, kspan::ProcessEnv());
    if (!summary.ok()) {
      std::fprintf(stderr, "kspan: %s\n", std::string(summary.status().message()).c_str());
      return 1;
    }
    return summary->batches_failed == 0 ? 0 : 3;
  }
  if (*validate) {
    auto config = kspan::LoadConfig(validate_path, {}, RealGetEnv);
    if (!config.ok()) {
      std::fprintf(stderr, "kspan: %s\n", std::string(config.status().message()).c_str());
      return 2;
    }
    std::printf("%s: OK (%zu destination(s))\n", validate_path.c_str(),
                config->exporter.destinations.size());
    return 0;
  }
  std::printf("kspan %s\n", KSPAN_VERSION);
  return 0;
}
