// The admin endpoint with a real server on an ephemeral port: its answers,
// and the bounds an attacking client meets (it never reads a body, bounds
// the head, and neither a trickling client nor one that does not read its
// answer keeps it from serving others or from stopping).
#include "userspace/admin_server.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "httplib.h"
#include "tests/support/process_memory.h"
#include "tests/support/raw_client.h"

namespace kspan {
namespace {

using testing::ChunkedFlood;
using testing::PeakRss;
using testing::RawClient;
using testing::WaitFor;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr std::size_t kMiB = 1024 * 1024;

class AdminServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    metrics_.GetCounter("kspan_test_total", "A counter.").Add(7);
    admin_.SetStatusProvider([] { return std::string("{\"ok\":true}"); });
    ASSERT_TRUE(admin_.Start("127.0.0.1:0").ok());
    ASSERT_GT(admin_.port(), 0);
  }
  int Get(const std::string& path, std::string* body = nullptr) {
    httplib::Client c("127.0.0.1", admin_.port());
    c.set_read_timeout(10, 0);
    auto res = c.Get(path.c_str());
    if (!res) return -1;
    if (body != nullptr) *body = res->body;
    return res->status;
  }
  std::uint64_t Refused(const std::string& reason) {
    return metrics_.CounterValue("kspan_admin_refused_total", {{"reason", reason}});
  }

  MetricsRegistry metrics_;
  AdminServer admin_{metrics_};
};

TEST_F(AdminServerTest, AnswersItsPaths) {
  std::string body;
  EXPECT_EQ(Get("/metrics", &body), 200);
  EXPECT_NE(body.find("kspan_test_total 7"), std::string::npos) << body;
  EXPECT_EQ(Get("/healthz"), 200);
  EXPECT_EQ(Get("/readyz"), 503);
  admin_.SetReady(true);
  EXPECT_EQ(Get("/readyz"), 200);
  EXPECT_EQ(Get("/status", &body), 200);
  EXPECT_EQ(body, "{\"ok\":true}");
  EXPECT_EQ(Get("/nothing"), 404);
  httplib::Client c("127.0.0.1", admin_.port());
  auto res = c.Post("/metrics", "x", "text/plain");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 405);
}

// Before: cpp-httplib read a chunked body to /metrics whole (1 GiB: RSS
// 49 -> 2101 MiB). Now no body is read: the answer comes after the head and
// the connection closes.
TEST_F(AdminServerTest, ChunkedFloodIsNotRead) {
  for (const std::string method : {"POST", "GET"}) {
    PeakRss rss;
    RawClient c(admin_.port());
    ASSERT_TRUE(c.connected());
    c.StartReading();
    ChunkedFlood(c, method + " /metrics HTTP/1.1\r\nHost: kspan\r\nTransfer-Encoding: chunked\r\n\r\n", 256 * kMiB);
    const std::string answer = c.WaitClosed(milliseconds(10000));
    EXPECT_EQ(answer.rfind(method == "GET" ? "HTTP/1.1 200" : "HTTP/1.1 405", 0), 0u) << answer.substr(0, 100);
    EXPECT_LT(c.sent(), 32 * kMiB) << method;
    EXPECT_RSS_LT(rss.growth_mib(), 16) << method << ": peak RSS growth, MiB";
    std::printf("admin chunked flood (%s /metrics): %zu MiB sent, peak RSS +%lld MiB\n", method.c_str(),
                c.sent() / kMiB, static_cast<long long>(rss.growth_mib()));
  }
  EXPECT_EQ(Get("/metrics"), 200);
}

// Before: 500 MiB of header lines cost 527 MiB. Now the head is bounded.
TEST_F(AdminServerTest, HeaderFloodIsRefused) {
  PeakRss rss;
  RawClient c(admin_.port());
  c.StartReading();
  const std::string line = "X-Flood: " + std::string(1000, 'a') + "\r\n";
  ASSERT_TRUE(c.Send("GET /metrics HTTP/1.1\r\n"));
  while (c.sent() < 256 * kMiB && c.Send(line)) {
  }
  const std::string answer = c.WaitClosed(milliseconds(10000));
  EXPECT_EQ(answer.rfind("HTTP/1.1 431", 0), 0u) << answer.substr(0, 100);
  EXPECT_LT(c.sent(), 32 * kMiB);
  EXPECT_RSS_LT(rss.growth_mib(), 16) << "peak RSS growth, MiB";
  EXPECT_EQ(Refused("header_too_large"), 1u);
  EXPECT_EQ(Get("/healthz"), 200);
}

// Trickling clients, more than the endpoint has threads, leave it serving
// others at once, and Stop() waits for none of them.
TEST_F(AdminServerTest, SlowClientsDoNotBlockServingOrStopping) {
  std::vector<std::unique_ptr<RawClient>> slow;
  for (int i = 0; i < 40; ++i) {
    slow.push_back(std::make_unique<RawClient>(admin_.port()));
    slow.back()->Send("GET /metrics HTTP/1.1\r\nX-Slow: ");
  }
  for (int i = 0; i < 3; ++i) {
    const auto t0 = steady_clock::now();
    EXPECT_EQ(Get("/healthz"), 200);
    EXPECT_LT(steady_clock::now() - t0, milliseconds(1000));
    for (auto& c : slow) c->Send("a");
  }
  const auto t0 = steady_clock::now();
  admin_.Stop();
  EXPECT_LT(steady_clock::now() - t0, milliseconds(2000));
}

}  // namespace
}  // namespace kspan
