// The real kspan binary attacked through its OTLP/HTTP receiver and its
// admin port: floods do not grow the agent's memory, clients trickling
// bytes neither keep others from being served nor hold SIGTERM.
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/privileged/agent_process.h"
#include "tests/privileged/privileged.h"
#include "tests/support/raw_client.h"

namespace kspan {
namespace {

using ::kspan::testing::AgentProcess;
using ::kspan::testing::ChunkedFlood;
using ::kspan::testing::RawClient;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr std::size_t kMiB = 1024 * 1024;

std::int64_t AgentStatusKb(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::atoll(line.c_str() + key.size() + 1);
  }
  return -1;
}

// Resets the agent's VmHWM to its current RSS; returns that RSS (KiB).
std::int64_t ResetPeak(pid_t pid) {
  std::ofstream("/proc/" + std::to_string(pid) + "/clear_refs") << "5";
  return AgentStatusKb(pid, "VmRSS");
}

// Before: 1 GiB chunked to the receiver's /v1/logs took the agent from 41 to
// 2050 MiB, to admin /metrics from 49 to 2101 MiB; 500 MiB of header lines
// +527 MiB; 16 trickling clients made OTLP/HTTP unavailable and held
// SIGTERM for 56 s.
TEST(ReceiverLimitsEndToEnd, FloodsAndSlowClientsNeitherGrowTheAgentNorHoldItsShutdown) {
  KSPAN_REQUIRE_BPF();
  // Its own pin path, so it can run beside another agent on this host.
  const std::string config = "/tmp/kspan-limits-e2e-" + std::to_string(getpid()) + ".yaml";
  std::ofstream(config) << "bpf:\n  pin_path: /sys/fs/bpf/kspan-limits-e2e-" << getpid() << "\n";
  AgentProcess agent({"-c", config, "--no-console"});
  ASSERT_TRUE(agent.WaitReady(std::chrono::seconds(60))) << agent.log();
  const int http_port = agent.receiver_http_port();
  ASSERT_GT(http_port, 0);

  const std::int64_t base_kb = ResetPeak(agent.pid());
  struct Attack {
    int port;
    std::string head;
  };
  const std::vector<Attack> floods = {
      {http_port, "POST /v1/logs HTTP/1.1\r\nHost: kspan\r\nTransfer-Encoding: chunked\r\n\r\n"},
      {agent.admin_port(), "POST /metrics HTTP/1.1\r\nHost: kspan\r\nTransfer-Encoding: chunked\r\n\r\n"},
  };
  for (const auto& attack : floods) {
    RawClient c(attack.port);
    c.StartReading();
    ChunkedFlood(c, attack.head, 512 * kMiB);
    c.WaitClosed(milliseconds(10000));
    EXPECT_LT(c.sent(), 64 * kMiB) << attack.head;
  }
  {
    RawClient c(agent.admin_port());
    c.StartReading();
    const std::string line = "X-Flood: " + std::string(1000, 'a') + "\r\n";
    c.Send("GET /metrics HTTP/1.1\r\n");
    while (c.sent() < 512 * kMiB && c.Send(line)) {
    }
    EXPECT_EQ(c.WaitClosed(milliseconds(10000)).rfind("HTTP/1.1 431", 0), 0u);
  }
  const std::int64_t peak_growth_mib = (AgentStatusKb(agent.pid(), "VmHWM") - base_kb) / 1024;
  EXPECT_LT(peak_growth_mib, 64) << "agent peak RSS growth, MiB";
  std::printf("agent: RSS %lld MiB before, peak +%lld MiB through 2 x 512 MiB chunked and 512 MiB of headers\n",
              static_cast<long long>(base_kb / 1024), static_cast<long long>(peak_growth_mib));

  // Clients trickling a byte every 100 ms; a normal client is served now.
  std::vector<std::unique_ptr<RawClient>> slow;
  for (int i = 0; i < 32; ++i) {
    slow.push_back(std::make_unique<RawClient>(http_port));
    slow.back()->Send("POST /v1/traces HTTP/1.1\r\nHost: kspan\r\n");
  }
  std::atomic<bool> stop{false};
  std::thread trickler([&] {
    while (!stop) {
      for (auto& c : slow) c->Send("X");
      std::this_thread::sleep_for(milliseconds(100));
    }
  });
  httplib::Client http("127.0.0.1", http_port);
  http.set_read_timeout(10, 0);
  const auto t0 = steady_clock::now();
  auto res = http.Post("/v1/traces", "", "application/x-protobuf");  // an empty request is a valid one
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_LT(steady_clock::now() - t0, milliseconds(2000));

  const auto t1 = steady_clock::now();
  EXPECT_EQ(agent.Terminate(std::chrono::seconds(30)), 0) << agent.log();
  const auto took = std::chrono::duration_cast<milliseconds>(steady_clock::now() - t1);
  EXPECT_LT(took, milliseconds(5000)) << took.count() << " ms";
  std::printf("agent: SIGTERM to exit with 32 trickling clients: %lld ms\n", static_cast<long long>(took.count()));
  stop = true;
  trickler.join();
  unlink(config.c_str());
}

}  // namespace
}  // namespace kspan
