#include "exporter/batcher.h"

#include <gtest/gtest.h>

#include <future>

#include "exporter/export_metrics.h"
#include "tests/exporter/test_spans.h"
#include "tests/support/process_memory.h"

namespace kspan {
namespace {

using std::chrono::milliseconds;
using testing::MakeSpan;

// Collects batches handed to the sink.
struct Collected {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<SharedSpanBatch> batches;

  Batcher::Sink Sink() {
    return [this](SharedSpanBatch b) {
      {
        std::lock_guard lock(mu);
        batches.push_back(std::move(b));
      }
      cv.notify_all();
    };
  }
  bool WaitForBatches(std::size_t n, milliseconds timeout) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, timeout, [&] { return batches.size() >= n; });
  }
  std::vector<std::size_t> Sizes() {
    std::lock_guard lock(mu);
    std::vector<std::size_t> sizes;
    for (const auto& b : batches) sizes.push_back(b->spans.size());
    return sizes;
  }
};

TEST(BatcherTest, FlushesWhenABatchIsFull) {
  MetricsRegistry metrics;
  Collected out;
  BatchOptions options{.max_export_batch_size = 3, .schedule_delay = milliseconds(60'000),
                       .max_queue_size = 100};
  Batcher batcher(options, metrics, out.Sink());
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(batcher.Submit(MakeSpan(i)));
  // Two full batches go out long before the (one minute) delay.
  ASSERT_TRUE(out.WaitForBatches(2, milliseconds(5000)));
  EXPECT_EQ(out.Sizes(), (std::vector<std::size_t>{3, 3}));
  // The rest is flushed by Shutdown, in submission order.
  batcher.Shutdown();
  ASSERT_EQ(out.Sizes(), (std::vector<std::size_t>{3, 3, 1}));
  EXPECT_EQ(out.batches[0]->spans[0].name, "connect-0");
  EXPECT_EQ(out.batches[2]->spans[0].name, "connect-6");
  EXPECT_EQ(metrics.CounterTotal(metric::kSpansSubmitted), 7u);
  EXPECT_EQ(metrics.CounterTotal(metric::kBatcherDropped), 0u);
  EXPECT_EQ(metrics.CounterTotal(metric::kBatcherBatches), 3u);
}

TEST(BatcherTest, FlushesAPartialBatchAfterTheScheduleDelay) {
  MetricsRegistry metrics;
  Collected out;
  BatchOptions options{.max_export_batch_size = 100, .schedule_delay = milliseconds(50),
                       .max_queue_size = 100};
  Batcher batcher(options, metrics, out.Sink());
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(batcher.Submit(MakeSpan(1)));
  ASSERT_TRUE(batcher.Submit(MakeSpan(2)));
  ASSERT_TRUE(out.WaitForBatches(1, milliseconds(5000)));
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, milliseconds(45));  // not before the delay
  EXPECT_EQ(out.Sizes(), (std::vector<std::size_t>{2}));
  // A later span starts a new timer.
  ASSERT_TRUE(batcher.Submit(MakeSpan(3)));
  ASSERT_TRUE(out.WaitForBatches(2, milliseconds(5000)));
  EXPECT_EQ(out.Sizes(), (std::vector<std::size_t>{2, 1}));
}

TEST(BatcherTest, BoundedQueueDropsAndCountsWhenFull) {
  MetricsRegistry metrics;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> sunk_spans{0};
  std::promise<void> first_batch_taken;
  std::atomic<bool> first{true};
  BatchOptions options{.max_export_batch_size = 1, .schedule_delay = milliseconds(1),
                       .max_queue_size = 4};
  Batcher batcher(options, metrics, [&](SharedSpanBatch b) {
    sunk_spans += static_cast<int>(b->spans.size());
    if (first.exchange(false)) {
      first_batch_taken.set_value();
      released.wait();  // a stuck consumer
    }
  });
  ASSERT_TRUE(batcher.Submit(MakeSpan(0)));
  first_batch_taken.get_future().wait();
  // The worker is stuck: four spans fit, the next ones are dropped at once.
  for (int i = 1; i <= 4; ++i) EXPECT_TRUE(batcher.Submit(MakeSpan(i)));
  EXPECT_EQ(batcher.queued_spans(), 4u);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(batcher.Submit(MakeSpan(5)));
  EXPECT_FALSE(batcher.Submit(MakeSpan(6)));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(100)) << "Submit must not block";
  EXPECT_EQ(metrics.CounterValue(metric::kBatcherDropped, {{"reason", "queue_full"}}), 2u);
  EXPECT_NE(metrics.RenderPrometheus().find("kspan_exporter_batcher_queue_spans 4"),
            std::string::npos);
  release.set_value();
  batcher.Shutdown();
  EXPECT_EQ(sunk_spans.load(), 5);
  EXPECT_EQ(metrics.CounterTotal(metric::kSpansSubmitted), 7u);
}

TEST(BatcherTest, SubmitAfterShutdownIsDroppedAndCounted) {
  MetricsRegistry metrics;
  Collected out;
  Batcher batcher(BatchOptions{}, metrics, out.Sink());
  batcher.Shutdown();
  batcher.Shutdown();  // idempotent
  EXPECT_FALSE(batcher.Submit(MakeSpan(1)));
  EXPECT_EQ(metrics.CounterValue(metric::kBatcherDropped, {{"reason", "shutdown"}}), 1u);
  EXPECT_TRUE(out.Sizes().empty());
}


// Bounded by bytes as well as spans: an app's request of one span with a
// 3 MiB resource attribute is 3 MiB in the queue, not one span of 2048.
TEST(BatcherTest, BoundedByBytesCountingEachSharedResourceOnce) {
  constexpr std::size_t kMiB = 1 << 20;
  MetricsRegistry metrics;
  Collected out;
  BatchOptions options{.max_export_batch_size = 10000, .schedule_delay = milliseconds(60'000),
                       .max_queue_size = 2048, .max_queue_bytes = 16 * kMiB};
  Batcher batcher(options, metrics, out.Sink());
  auto big = [](int i) {
    std::vector<Span> request;
    request.push_back(MakeSpan(i, std::make_shared<const Resource>(
                                      Resource{{{"blob", std::string(3 * kMiB, 'x')}}})));
    request.back().source = SpanSource::kApp;
    return request;
  };
  testing::ResetPeakMemory();
  const auto before = testing::ReadMemory();
  int accepted = 0;
  for (int i = 0; i < 100; ++i) {
    if (batcher.SubmitBatch(big(i)) == SubmitResult::kAccepted) ++accepted;
  }
  // Five fit in 16 MiB; the others were refused (the receiver answers them
  // UNAVAILABLE, the client retries later), counted.
  EXPECT_EQ(accepted, 5);
  EXPECT_EQ(metrics.CounterValue(metric::kBatcherDropped, {{"reason", "queue_full"}}), 95u);
  const double bytes = metrics.GaugeValue(metric::kBatcherQueueBytes, {});
  EXPECT_GE(bytes, 5.0 * 3 * kMiB);
  EXPECT_LE(bytes, static_cast<double>(options.max_queue_bytes));
  EXPECT_EQ(batcher.queued_bytes(), static_cast<std::size_t>(bytes));
  // Was 100 x 3 MiB.
  EXPECT_RSS_LT(testing::PeakGrowthSince(before), 32 * kMiB);

  // Kernel spans sharing their process's resource: counted once, so a full
  // span bound is a few hundred KiB, not the resource times 2048.
  batcher.Shutdown();
  MetricsRegistry m2;
  Batcher kernel(options, m2, out.Sink());
  const auto shared = std::make_shared<const Resource>(Resource{{{"blob", std::string(kMiB, 'y')}}});
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(kernel.Submit(MakeSpan(i, shared)));
  EXPECT_LT(kernel.queued_bytes(), 2 * kMiB);
  EXPECT_GT(kernel.queued_bytes(), kMiB);
}

TEST(BatcherTest, AnEmptyQueueTakesOneRequestLargerThanTheByteBound) {
  MetricsRegistry metrics;
  Collected out;
  BatchOptions options{.max_export_batch_size = 10000, .schedule_delay = milliseconds(60'000),
                       .max_queue_size = 2048, .max_queue_bytes = 64 * 1024};
  Batcher batcher(options, metrics, out.Sink());
  std::vector<Span> large;
  large.push_back(MakeSpan(1, std::make_shared<const Resource>(Resource{{{"blob", std::string(100'000, 'x')}}})));
  // Else it would be refused for ever, and the client retry for ever.
  EXPECT_EQ(batcher.SubmitBatch(std::move(large)), SubmitResult::kAccepted);
  std::vector<Span> next;
  next.push_back(MakeSpan(2));
  EXPECT_EQ(batcher.SubmitBatch(std::move(next)), SubmitResult::kQueueFull);
  ASSERT_EQ(next.size(), 1u);  // all or nothing: left with the caller
  batcher.Shutdown();
  // What was cut and handed on carries its size, resource included.
  ASSERT_EQ(out.batches.size(), 1u);
  EXPECT_GE(out.batches[0]->approx_bytes, 100'000u);
  EXPECT_EQ(batcher.queued_bytes(), 0u);
}

}  // namespace
}  // namespace kspan
