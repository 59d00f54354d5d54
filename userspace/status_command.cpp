#include "userspace/status_command.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <httplib.h>
#include <unistd.h>

#include <cstdio>
#include <vector>

#include "absl/strings/numbers.h"
#include "bpf/tcp.h"
#include "nlohmann/json.hpp"
#include "userspace/bpf_stats.h"

namespace kspan {
namespace {

void PrintHuman(const nlohmann::json& j) {
  std::printf("kspan %s, pid %d, up %llds, pins %s\n", j.value("version", "?").c_str(),
              j.value("pid", 0), static_cast<long long>(j.value("uptime_seconds", 0)),
              j.value("pin_path", "").c_str());
  for (const auto& f : j["capture"]) {
    std::printf("\ncapture %s: variant %s", f.value("family", "?").c_str(),
                f.value("variant", "?").c_str());
    if (f.contains("accept_variant")) {
      std::printf(" (accept: %s)", f.value("accept_variant", "?").c_str());
    }
    std::printf("\n");
    if (f.contains("programs")) {
      std::printf("  programs:");
      for (const auto& p : f["programs"]) std::printf(" %s", p.get<std::string>().c_str());
      std::printf("\n");
    }
    if (f.contains("root_spans_per_second")) {
      const auto per_second = f.value("root_spans_per_second", 0ull);
      if (per_second == 0) {
        std::printf("  sampling: every request (sampled traceparent: always; unsampled: never)\n");
      } else {
        std::printf("  sampling: requests without trace context at most %llu per process and "
                    "second (sampled traceparent: always; unsampled: never)\n",
                    per_second);
      }
    }
    if (f.contains("syscalls")) {
      std::printf("  syscalls (%zu):", f["syscalls"].size());
      for (const auto& p : f["syscalls"]) std::printf(" %s", p.get<std::string>().c_str());
      std::printf("\n");
    }
    std::printf("  events:");
    for (const auto& [k, v] : f["events"].items()) std::printf(" %s=%llu", k.c_str(), v.get<unsigned long long>());
    std::printf("\n  lost:");
    for (const auto& [k, v] : f["lost"].items()) std::printf(" %s=%llu", k.c_str(), v.get<unsigned long long>());
    if (f.contains("ring")) {
      const double size = f["ring"].value("size_bytes", 0.0);
      const double used = f["ring"].value("used_bytes", 0.0);
      std::printf("\n  ring: %.0f of %.0f KiB in use (%.1f%%)", used / 1024, size / 1024,
                  size > 0 ? 100.0 * used / size : 0.0);
    }
    if (f.contains("record_rings")) {
      const auto& r = f["record_rings"];
      const double size = r.value("size_bytes", 0.0);
      const double used = r.value("used_bytes", 0.0);
      std::printf("\n  record rings (per CPU, %d CPUs): %.0f of %.0f KiB in use (%.1f%%), "
                  "fullest CPU %.1f%%",
                  r.value("cpus", 0), used / 1024, size / 1024,
                  size > 0 ? 100.0 * used / size : 0.0, 100.0 * r.value("fullest_cpu_used", 0.0));
    }
    std::printf("\n");
  }
  if (j.contains("filter")) {
    const auto& f = j["filter"];
    std::printf("\nfilter: %llu pid(s), %llu cgroup(s), %llu comm prefix(es) selected; others: "
                "syscalls slower than %.1f ms\n",
                f.value("selected_pids", 0ull), f.value("selected_cgroups", 0ull),
                f.value("selected_comm_prefixes", 0ull), f.value("slow_threshold_ns", 0.0) / 1e6);
  }
  if (j.contains("receiver")) {
    const auto& r = j["receiver"];
    std::printf("receiver: OTLP/gRPC port %d, OTLP/HTTP port %d (0: off)\n", r.value("grpc_port", 0),
                r.value("http_port", 0));
  }
  if (j.contains("identity")) {
    const auto& id = j["identity"];
    std::printf("identity: %llu process(es), %llu container(s) named; %s\n",
                id.value("processes", 0ull), id.value("containers", 0ull),
                id.value("follows_exec", false) ? "refreshed at exec and exit"
                                                : "re-read every minute (no process family)");
  }
  if (j.contains("enrolled") && !j["enrolled"].empty()) {
    std::printf("enrolled (send their spans, fully captured):\n");
    for (const auto& e : j["enrolled"]) {
      std::printf("  %u %s\n", e.value("pid", 0u), e.value("is", "").c_str());
    }
  } else if (j.contains("enrolled_pids")) {
    std::string pids;
    for (const auto& pid : j["enrolled_pids"]) pids += " " + std::to_string(pid.get<std::uint32_t>());
    std::printf("enrolled (send spans, fully captured):%s\n", pids.empty() ? " none" : pids.c_str());
  }
  if (j.contains("correlation")) {
    std::printf("correlation: %llu kernel span(s) in the join window\n",
                j["correlation"].value("pending_kernel_spans", 0ull));
  }
  const auto& p = j["pipeline"];
  std::printf("\npipeline: ring records %llu, decoded %llu, decode errors %llu, spans %llu\n",
              p.value("ring_records", 0ull), p.value("decoded", 0ull),
              p.value("decode_errors", 0ull), p.value("spans", 0ull));
  std::printf("export: submitted %llu, dropped before fan-out %llu\n",
              j["export"].value("submitted", 0ull), j["export"].value("batcher_dropped", 0ull));
  for (const auto& [name, d] : j["destinations"].items()) {
    std::printf("  %-16s exported %llu, dropped %llu\n", name.c_str(), d.value("exported", 0ull),
                d.value("dropped", 0ull));
  }
}

// Without the agent's endpoint, the pinned stats map still tells what the
// kernel side did (it outlives a hung agent, not a stopped one).
int FromPins(const StatusOptions& o) {
  const std::string path = o.pin_path + "/kspan_tcp_stats";
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) {
    std::printf("no kspan agent: %s not reachable and %s not pinned\n", o.admin.c_str(),
                path.c_str());
    return 1;
  }
  static constexpr const char* kNames[KSPAN_TCP_STAT_MAX] = {
      "connect records", "lost: ring full", "lost: start table full", "accept records",
      "connection records", "notes", "lost: connection table full"};
  std::printf("agent endpoint %s not reachable; kernel counters from %s:\n", o.admin.c_str(),
              path.c_str());
  const auto totals = SumPerCpuSlots<KSPAN_TCP_STAT_MAX>(fd);
  for (std::size_t slot = 0; slot < totals.size(); ++slot) {
    std::printf("  %-28s %llu\n", kNames[slot], static_cast<unsigned long long>(totals[slot]));
  }
  close(fd);
  return 1;
}

}  // namespace

int RunStatus(const StatusOptions& o) {
  const auto colon = o.admin.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(o.admin.substr(colon + 1), &port)) {
    std::fprintf(stderr, "kspan status: --admin '%s' is not host:port\n", o.admin.c_str());
    return 2;
  }
  httplib::Client client(o.admin.substr(0, colon), port);
  client.set_connection_timeout(std::chrono::seconds(2));
  client.set_read_timeout(std::chrono::seconds(5));
  auto res = client.Get("/status");
  if (!res || res->status != 200) return FromPins(o);
  if (o.json) {
    std::printf("%s\n", res->body.c_str());
    return 0;
  }
  auto j = nlohmann::json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    std::fprintf(stderr, "kspan status: the agent answered something that is not JSON\n");
    return 1;
  }
  PrintHuman(j);
  return 0;
}

}  // namespace kspan
