#include "exporter/export_metrics.h"
#include "exporter/self_metrics.h"

#include <gtest/gtest.h>

#include <thread>

#include "spdlog/sinks/ringbuffer_sink.h"
#include "spdlog/spdlog.h"

namespace kspan {
namespace {

using std::chrono::milliseconds;

// Captures what spdlog's default logger writes during a test.
class CapturedLog {
 public:
  CapturedLog()
      : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(1000)),
        saved_(spdlog::default_logger()) {
    auto logger = std::make_shared<spdlog::logger>("captured", sink_);
    logger->set_level(spdlog::level::trace);
    spdlog::set_default_logger(logger);
  }
  ~CapturedLog() { spdlog::set_default_logger(saved_); }
  std::vector<std::string> Lines() { return sink_->last_formatted(); }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> saved_;
};

// CounterTotal sums a family over its label sets, including counters whose
// value lives elsewhere (a BPF stats map), evaluated at the call; a gauge
// family of the same shape is not a counter.
TEST(MetricsRegistryTest, CounterTotalIncludesCallbackCounters) {
  MetricsRegistry m;
  m.GetCounter("kspan_x_total", "x", {{"family", "a"}}).Add(3);
  std::uint64_t kernel = 4;
  m.AddCallbackCounter("kspan_x_total", "x", {{"family", "b"}},
                       [&kernel] { return static_cast<double>(kernel); });
  EXPECT_EQ(m.CounterTotal("kspan_x_total"), 7u);
  kernel = 10;
  EXPECT_EQ(m.CounterTotal("kspan_x_total"), 13u);
  m.AddCallbackGauge("kspan_depth", "d", {}, [] { return 5.0; });
  EXPECT_EQ(m.CounterTotal("kspan_depth"), 0u);
  EXPECT_EQ(m.CounterTotal("kspan_absent_total"), 0u);
}

TEST(DropLogTest, LogsAtMostOncePerIntervalWithCounts) {
  CapturedLog log;
  {
    DropLog drops("collector", milliseconds(100));
    drops.Record("queue_full", 1);  // the first loss is reported at once
    for (int i = 0; i < 1000; ++i) drops.Record("queue_full", 2, "UNAVAILABLE: down");
    drops.Record("shutdown", 5);
    ASSERT_EQ(log.Lines().size(), 1u);
    EXPECT_NE(log.Lines()[0].find("1 spans lost (queue_full=1)"), std::string::npos) << log.Lines()[0];
    std::this_thread::sleep_for(milliseconds(110));
    drops.Record("queue_full", 1);
    ASSERT_EQ(log.Lines().size(), 2u);
    EXPECT_NE(log.Lines()[1].find("2006 spans lost (queue_full=2001, shutdown=5)"),
              std::string::npos)
        << log.Lines()[1];
    EXPECT_NE(log.Lines()[1].find("last error: UNAVAILABLE: down"), std::string::npos);
    drops.Record("permanent_error", 7);
  }  // destruction flushes what is pending
  ASSERT_EQ(log.Lines().size(), 3u);
  EXPECT_NE(log.Lines()[2].find("7 spans lost (permanent_error=7)"), std::string::npos);
  EXPECT_NE(log.Lines()[2].find("[error]"), std::string::npos) << "lost data logs at error";
}

TEST(DestinationMetricsTest, AccountingReadsBackEveryCounter) {
  MetricsRegistry registry;
  DestinationMetrics m(registry, "d");
  registry.GetCounter(metric::kSpansSubmitted, "").Add(20);
  registry.GetCounter(metric::kBatcherDropped, "", {{"reason", "queue_full"}}).Add(2);
  m.Exported(10);
  m.Dropped(drop_reason::kPermanentError, 3);
  m.Dropped(drop_reason::kShutdown, 4);
  m.Dropped(drop_reason::kRejectedByBackend, 1);
  auto a = ReadAccounting(registry, "d");
  EXPECT_EQ(a.exported, 10u);
  EXPECT_EQ(a.dropped_total(), 8u);
  EXPECT_TRUE(a.Balanced());
  m.Exported(1);
  EXPECT_FALSE(ReadAccounting(registry, "d").Balanced());
  // All drop reasons exist from the start, at 0.
  EXPECT_NE(registry.RenderPrometheus().find(
                "kspan_exporter_spans_dropped_total{destination=\"d\",reason=\"retry_exhausted\"} 0"),
            std::string::npos);
}

}  // namespace
}  // namespace kspan
