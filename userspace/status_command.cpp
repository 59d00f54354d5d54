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
#include "exporter/terminal_text.h"
#include "userspace/bpf_stats.h"

namespace kspan {
namespace {

// Every string of the answer is escaped before it is printed: the answer
// comes from a loopback port that any local user can bind while no agent
// runs, and even the agent's own carries names taken from processes.
std::string Text(const nlohmann::json& j, const char* key, const char* fallback) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return fallback;
  return EscapeForTerminal(it->get_ref<const std::string&>());
}

// j[key], or null when absent: operator[] of a const json must not be given
// a key the (untrusted) answer lacks.
const nlohmann::json& At(const nlohmann::json& j, const char* key) {
  static const nlohmann::json kNull;
  if (!j.is_object()) return kNull;
  const auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

std::string Text(const nlohmann::json& v) {
  return EscapeForTerminal(v.is_string() ? v.get_ref<const std::string&>() : v.dump());
}

// "privileges: kept CAP_BPF, ...; bounding set the same; no_new_privs", as
// the agent's log says it at start.
void PrintPrivileges(const nlohmann::json& p, std::FILE* out) {
  if (!p.is_object()) return;
  auto names = [&p](const char* key) {
    std::string list;
    for (const auto& c : At(p, key)) list += (list.empty() ? "" : ", ") + Text(c);
    return list.empty() ? std::string("none") : list;
  };
  const std::string effective = names("effective");
  const std::string bounding = names("bounding");
  if (p.value("drop_capabilities", true)) {
    std::fprintf(out, "privileges: kept %s; dropped all others", effective.c_str());
  } else {
    std::fprintf(out, "privileges: not dropped (security.drop_capabilities: false): %zu effective",
                 At(p, "effective").size());
  }
  if (bounding != effective) std::fprintf(out, "; bounding set %s", bounding.c_str());
  if (const std::string ambient = names("ambient"); ambient != "none") {
    std::fprintf(out, "; ambient %s", ambient.c_str());
  }
  std::fprintf(out, "%s\n", p.value("no_new_privs", false) ? "; no_new_privs" : "");
}

void PrintHuman(const nlohmann::json& j, std::FILE* out) {
  std::fprintf(out, "kspan %s, pid %d, up %llds, pins %s\n", Text(j, "version", "?").c_str(),
               j.value("pid", 0), static_cast<long long>(j.value("uptime_seconds", 0)),
               Text(j, "pin_path", "").c_str());
  if (j.contains("privileges")) PrintPrivileges(At(j, "privileges"), out);
  for (const auto& f : At(j, "capture")) {
    std::fprintf(out, "\ncapture %s: variant %s", Text(f, "family", "?").c_str(),
                 Text(f, "variant", "?").c_str());
    if (f.contains("accept_variant")) {
      std::fprintf(out, " (accept: %s)", Text(f, "accept_variant", "?").c_str());
    }
    std::fprintf(out, "\n");
    if (f.contains("programs")) {
      std::fprintf(out, "  programs:");
      for (const auto& p : At(f, "programs")) std::fprintf(out, " %s", Text(p).c_str());
      std::fprintf(out, "\n");
    }
    if (f.contains("root_spans_per_second")) {
      const auto per_second = f.value("root_spans_per_second", 0ull);
      if (per_second == 0) {
        std::fprintf(out, "  sampling: every request (sampled traceparent: always; unsampled: never)\n");
      } else {
        std::fprintf(out, "  sampling: requests without trace context at most %llu per process and "
                     "second (sampled traceparent: always; unsampled: never)\n",
                     per_second);
      }
    }
    if (const auto& h = At(f, "hooks"); h.is_object()) {
      const auto attached = h.find("attached");
      const bool on = attached != h.end() && attached->is_boolean() && attached->get<bool>();
      std::fprintf(out, "  enter/exit programs: %s (attach: %s)\n",
                   on ? "attached" : "detached (no process selected)",
                   Text(h, "attach", "?").c_str());
    }
    if (f.contains("slow_watch")) {
      std::fprintf(out, "  slow syscalls of other processes: %s\n", Text(f, "slow_watch", "?").c_str());
    }
    if (const auto& sc = At(f, "slow_scan"); sc.is_object()) {
      const double scans = sc.value("scans", 0.0);
      const double seconds = sc.value("seconds", 0.0);
      std::fprintf(out, "  slow-syscall scan: %.0f passes, %.3f s in all (%.1f us a pass), %.0f failed\n",
                   scans, seconds, scans > 0 ? 1e6 * seconds / scans : 0.0,
                   sc.value("failures", 0.0));
    }
    if (f.contains("syscalls")) {
      std::fprintf(out, "  syscalls (%zu):", At(f, "syscalls").size());
      for (const auto& p : At(f, "syscalls")) std::fprintf(out, " %s", Text(p).c_str());
      std::fprintf(out, "\n");
    }
    std::fprintf(out, "  events:");
    for (const auto& [k, v] : At(f, "events").items()) {
      std::fprintf(out, " %s=%llu", EscapeForTerminal(k).c_str(), v.get<unsigned long long>());
    }
    std::fprintf(out, "\n  lost:");
    for (const auto& [k, v] : At(f, "lost").items()) {
      std::fprintf(out, " %s=%llu", EscapeForTerminal(k).c_str(), v.get<unsigned long long>());
    }
    if (f.contains("ring")) {
      const double size = At(f, "ring").value("size_bytes", 0.0);
      const double used = At(f, "ring").value("used_bytes", 0.0);
      std::fprintf(out, "\n  ring: %.0f of %.0f KiB in use (%.1f%%)", used / 1024, size / 1024,
                   size > 0 ? 100.0 * used / size : 0.0);
    }
    if (f.contains("record_rings")) {
      const auto& r = At(f, "record_rings");
      const double size = r.value("size_bytes", 0.0);
      const double used = r.value("used_bytes", 0.0);
      std::fprintf(out, "\n  record rings (per CPU, %d CPUs): %.0f of %.0f KiB in use (%.1f%%), "
                   "fullest CPU %.1f%%",
                   r.value("cpus", 0), used / 1024, size / 1024,
                   size > 0 ? 100.0 * used / size : 0.0, 100.0 * r.value("fullest_cpu_used", 0.0));
    }
    std::fprintf(out, "\n");
  }
  if (j.contains("filter")) {
    const auto& f = At(j, "filter");
    std::fprintf(out, "\nfilter: %llu pid(s), %llu cgroup(s), %llu comm prefix(es) selected; others: "
                 "syscalls slower than %.1f ms\n",
                 f.value("selected_pids", 0ull), f.value("selected_cgroups", 0ull),
                 f.value("selected_comm_prefixes", 0ull), f.value("slow_threshold_ns", 0.0) / 1e6);
  }
  if (j.contains("receiver")) {
    const auto& r = At(j, "receiver");
    std::fprintf(out, "receiver: OTLP/gRPC port %d, OTLP/HTTP port %d (0: off)\n", r.value("grpc_port", 0),
                 r.value("http_port", 0));
  }
  if (j.contains("identity")) {
    const auto& id = At(j, "identity");
    std::fprintf(out, "identity: %llu process(es), %llu container(s) named; %s\n",
                 id.value("processes", 0ull), id.value("containers", 0ull),
                 id.value("follows_exec", false) ? "refreshed at exec and exit"
                                                 : "re-read every minute (no process family)");
  }
  if (At(j, "enrollment").is_array()) {
    const auto& list = At(j, "enrollment");
    std::fprintf(out, "enrolled (fully captured; their kernel spans wait for their app spans)%s%s%s\n",
                 j.contains("enroll_from_environment") ? ", from the environment: " : "",
                 Text(j, "enroll_from_environment", "").c_str(), list.empty() ? ": none" : ":");
    for (const auto& e : list) {
      const auto& pid = At(e, "pid");
      std::string reasons;
      for (const auto& r : At(e, "reasons")) reasons += (reasons.empty() ? "" : ", ") + Text(r);
      const std::string detail = Text(e, "detail", "");
      std::fprintf(out, "  %llu %s [%s]%s%s\n",
                   pid.is_number_unsigned() ? pid.get<unsigned long long>() : 0ull,
                   Text(e, "service", "").c_str(), reasons.c_str(), detail.empty() ? "" : ": ",
                   detail.c_str());
    }
  } else if (j.contains("enrolled") && !At(j, "enrolled").empty()) {
    std::fprintf(out, "enrolled (send their spans, fully captured):\n");
    for (const auto& e : At(j, "enrolled")) {
      std::fprintf(out, "  %u %s\n", e.value("pid", 0u), Text(e, "is", "").c_str());
    }
  } else if (j.contains("enrolled_pids")) {
    std::string pids;
    for (const auto& pid : At(j, "enrolled_pids")) pids += " " + std::to_string(pid.get<std::uint32_t>());
    std::fprintf(out, "enrolled (send spans, fully captured):%s\n", pids.empty() ? " none" : pids.c_str());
  }
  if (j.contains("correlation")) {
    std::fprintf(out, "correlation: %llu kernel span(s) in the join window\n",
                 At(j, "correlation").value("pending_kernel_spans", 0ull));
  }
  const auto& p = At(j, "pipeline");
  std::fprintf(out, "\npipeline: ring records %llu, decoded %llu, decode errors %llu, spans %llu\n",
               p.value("ring_records", 0ull), p.value("decoded", 0ull),
               p.value("decode_errors", 0ull), p.value("spans", 0ull));
  std::fprintf(out, "export: submitted %llu, dropped before fan-out %llu\n",
               At(j, "export").value("submitted", 0ull), At(j, "export").value("batcher_dropped", 0ull));
  for (const auto& [name, d] : At(j, "destinations").items()) {
    std::fprintf(out, "  %-16s exported %llu, dropped %llu\n", EscapeForTerminal(name).c_str(),
                 d.value("exported", 0ull), d.value("dropped", 0ull));
  }
}

// Without the agent's endpoint, the pinned stats map still tells what the
// kernel side did (it outlives a hung agent, not a stopped one).
int FromPins(const StatusOptions& o, std::FILE* out) {
  const std::string path = o.pin_path + "/kspan_tcp_stats";
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) {
    std::fprintf(out, "no kspan agent: %s not reachable and %s not pinned\n", o.admin.c_str(),
                 path.c_str());
    return 1;
  }
  static constexpr const char* kNames[KSPAN_TCP_STAT_MAX] = {
      "connect records", "lost: ring full", "lost: start table full", "accept records",
      "connection records", "notes", "lost: connection table full"};
  std::fprintf(out, "agent endpoint %s not reachable; kernel counters from %s:\n", o.admin.c_str(),
               path.c_str());
  const auto totals = SumPerCpuSlots<KSPAN_TCP_STAT_MAX>(fd);
  for (std::size_t slot = 0; slot < totals.size(); ++slot) {
    std::fprintf(out, "  %-28s %llu\n", kNames[slot], static_cast<unsigned long long>(totals[slot]));
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
  std::FILE* out = o.out != nullptr ? o.out : stdout;
  if (!res || res->status != 200) return FromPins(o, out);
  auto j = nlohmann::json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    std::fprintf(stderr, "kspan status: the agent answered something that is not JSON\n");
    return 1;
  }
  if (o.json) {
    // Re-encoded rather than passed through: ensure_ascii leaves no control
    // byte and nothing but ASCII, and the JSON means the same.
    std::fprintf(out, "%s\n", j.dump(-1, ' ', /*ensure_ascii=*/true).c_str());
    return 0;
  }
  try {
    PrintHuman(j, out);
  } catch (const nlohmann::json::exception& e) {
    std::fprintf(stderr, "kspan status: the answer is not the agent's /status: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace kspan
