// The bpftool commands docs/bpftool.md shows, run against a live agent:
// kspan's programs are listed by name, its pinned stats dump with real
// counts, and a filter changed with bpftool takes effect at once.
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <stdio.h>
#include <unistd.h>

#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/privileged/agent_process.h"
#include "tests/privileged/privileged.h"
#include "tests/support/otlp_test_server.h"

namespace kspan {
namespace {

using ::kspan::testing::AgentProcess;
using ::kspan::testing::ConnectLoopback;
using ::kspan::testing::ConnectResult;
using ::kspan::testing::Listener;
using ::kspan::testing::OtlpTestServer;
using ::kspan::testing::ReceivedSpan;

constexpr char kPins[] = "/sys/fs/bpf/kspan";

// Runs a shell command; returns its stdout, and its exit status in *rc.
std::string Shell(const std::string& cmd, int* rc) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) {
    *rc = -1;
    return out;
  }
  char buf[4096];
  while (std::size_t n = fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  *rc = pclose(p);
  return out;
}

// bpftool's "key hex" bytes of a little-endian u32.
std::string HexLe32(std::uint32_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%02x %02x %02x %02x", v & 0xff, (v >> 8) & 0xff,
                (v >> 16) & 0xff, (v >> 24) & 0xff);
  return buf;
}

bool HasConnectTo(const std::vector<ReceivedSpan>& spans, int port) {
  for (const auto& s : spans) {
    const auto* pid = s.ResourceAttribute("process.pid");
    const auto* peer = s.Attribute("network.peer.port");
    if (s.span.name() == "tcp connect" && pid && pid->int_value() == getpid() && peer &&
        peer->int_value() == port) {
      return true;
    }
  }
  return false;
}

TEST(BpftoolInspection, DocumentedCommandsShowAndSteerKspan) {
  KSPAN_REQUIRE_BPF();
  OtlpTestServer receiver;
  AgentProcess agent({"--otlp-endpoint", receiver.endpoint(), "--no-console"});
  ASSERT_TRUE(agent.WaitReady(std::chrono::seconds(60))) << agent.log();
  int rc = 0;

  // bpftool prog show: every program is named kspan_*.
  std::string out = Shell("bpftool -j prog show", &rc);
  ASSERT_EQ(rc, 0) << out;
  auto progs = nlohmann::json::parse(out);
  std::set<std::string> names;
  for (const auto& p : progs) {
    const std::string name = p.value("name", "");
    if (name.rfind("kspan_", 0) == 0) names.insert(name);
  }
  // Accepts: fexit where the kernel allows tracing programs, else the
  // socket data tracepoints (6.3+), else the syscall tracepoints.
  EXPECT_TRUE(names.contains("kspan_tcp_acc4") || names.contains("kspan_acc_fx2") ||
              names.contains("kspan_acc_fx4") || names.contains("kspan_acc_rx"))
      << out;
  EXPECT_TRUE(names.contains("kspan_tcp_btf") || names.contains("kspan_tcp_raw") ||
              names.contains("kspan_tcp_state"));

  // The pinned maps are where the docs say.
  out = Shell(std::string("ls ") + kPins, &rc);
  ASSERT_EQ(rc, 0) << out;
  for (const char* pin : {"kspan_cfg", "kspan_pid_allow", "kspan_pid_deny", "kspan_cg_allow",
                          "kspan_comm_pfx", "kspan_tcp_stats", "kspan_proc_stats", "kspan_rcv_ports",
                          "kspan_rcv_peers"}) {
    EXPECT_NE(out.find(pin), std::string::npos) << pin << " not pinned:\n" << out;
  }
  EXPECT_TRUE(names.contains("kspan_proc_exec") && names.contains("kspan_proc_exit")) << "process family";

  // Who sends to the receiver: an OTLP/HTTP request from this process is in
  // kspan_rcv_peers under its connection, owned by this process, and the
  // receiver's port is in kspan_rcv_ports.
  {
    httplib::Client otlp("127.0.0.1", agent.receiver_http_port());
    auto res = otlp.Post("/v1/traces", "{}", "application/json");
    ASSERT_TRUE(res) << agent.log();
    EXPECT_EQ(res->status, 200) << res->body;
  }
  out = Shell(std::string("bpftool -j map dump pinned ") + kPins + "/kspan_rcv_ports", &rc);
  ASSERT_EQ(rc, 0) << out;
  bool port_listed = false;
  for (const auto& entry : nlohmann::json::parse(out)) {
    port_listed = port_listed || entry["formatted"]["key"] == agent.receiver_http_port();
  }
  EXPECT_TRUE(port_listed) << out;
  out = Shell(std::string("bpftool -j map dump pinned ") + kPins + "/kspan_rcv_peers", &rc);
  ASSERT_EQ(rc, 0) << out;
  bool mine = false;
  for (const auto& entry : nlohmann::json::parse(out)) {
    const auto& f = entry["formatted"];
    mine = mine || (f["key"]["dport"] == agent.receiver_http_port() && f["value"]["pid"] == getpid());
  }
  EXPECT_TRUE(mine) << "this process's connection to the receiver is not in kspan_rcv_peers:\n" << out;

  // A connect shows up in the stats dump (slot 0: connect records).
  Listener first(AF_INET);
  ConnectResult r = ConnectLoopback(AF_INET, first.port());
  ASSERT_EQ(r.err, 0);
  close(r.fd);
  ASSERT_TRUE(receiver.WaitForSpans(
      [&](const auto& spans) { return HasConnectTo(spans, first.port()); },
      std::chrono::seconds(20)));
  out = Shell(std::string("bpftool -j map dump pinned ") + kPins + "/kspan_tcp_stats", &rc);
  ASSERT_EQ(rc, 0) << out;
  std::uint64_t connects = 0;
  for (const auto& entry : nlohmann::json::parse(out)) {
    if (entry["formatted"]["key"] != 0) continue;
    for (const auto& cpu : entry["formatted"]["values"]) connects += cpu["value"].get<std::uint64_t>();
  }
  EXPECT_GE(connects, 1u) << out;

  // The syscall record rings' positions, found by name: head, tail and
  // bell_at for every CPU, in that order, with no record consumed that was
  // not written and a doorbell set by the agent (at least bell_every past
  // the head it found when it opened the ring).
  out = Shell("bpftool map dump name kspan_sys_pos | grep -E '\"(head|tail|bell_at)\"'", &rc);
  ASSERT_EQ(rc, 0) << out;
  std::vector<std::pair<std::string, std::uint64_t>> fields;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    const auto q1 = line.find('"');
    const auto q2 = line.find('"', q1 + 1);
    const auto colon = line.find(':', q2);
    ASSERT_TRUE(q1 != std::string::npos && q2 != std::string::npos && colon != std::string::npos) << line;
    fields.emplace_back(line.substr(q1 + 1, q2 - q1 - 1), std::stoull(line.substr(colon + 1)));
  }
  const int cpus = libbpf_num_possible_cpus();
  ASSERT_EQ(fields.size(), 3u * static_cast<std::size_t>(cpus)) << out;
  for (std::size_t i = 0; i < fields.size(); i += 3) {
    EXPECT_EQ(fields[i].first, "head");
    EXPECT_EQ(fields[i + 1].first, "tail");
    EXPECT_EQ(fields[i + 2].first, "bell_at");
    EXPECT_LE(fields[i + 1].second, fields[i].second) << out;
    EXPECT_GT(fields[i + 2].second, 0u) << "no doorbell set:\n" << out;
  }

  // Deny this process with bpftool: its connects stop producing spans...
  const std::string key = HexLe32(static_cast<std::uint32_t>(getpid()));
  out = Shell(std::string("bpftool map update pinned ") + kPins + "/kspan_pid_deny key hex " + key +
                " value hex 01",
            &rc);
  ASSERT_EQ(rc, 0) << out;
  Listener denied(AF_INET);
  r = ConnectLoopback(AF_INET, denied.port());
  ASSERT_EQ(r.err, 0);
  close(r.fd);
  // ...and after removing the entry they produce spans again. Spans leave
  // in order, so once the later one arrived the earlier one never will.
  out = Shell(std::string("bpftool map delete pinned ") + kPins + "/kspan_pid_deny key hex " + key,
            &rc);
  ASSERT_EQ(rc, 0) << out;
  Listener allowed(AF_INET);
  r = ConnectLoopback(AF_INET, allowed.port());
  ASSERT_EQ(r.err, 0);
  close(r.fd);
  ASSERT_TRUE(receiver.WaitForSpans(
      [&](const auto& spans) { return HasConnectTo(spans, allowed.port()); },
      std::chrono::seconds(20)))
      << agent.log();
  EXPECT_FALSE(HasConnectTo(receiver.spans(), denied.port()))
      << "a connect from a process denied with bpftool was traced";

  EXPECT_EQ(agent.Terminate(std::chrono::seconds(20)), 0) << agent.log();
  out = Shell(std::string("ls ") + kPins, &rc);
  EXPECT_NE(rc, 0) << "pins left behind after exit:\n" << out;
}

}  // namespace
}  // namespace kspan
