#include "exporter/destination_queue.h"

#include <gtest/gtest.h>

#include "tests/exporter/fake_sender.h"
#include "tests/exporter/test_spans.h"

namespace kspan {
namespace {

using std::chrono::milliseconds;
using testing::FakeSender;

SharedSpanBatch MakeBatch(int n, int first = 0) {
  auto b = std::make_shared<SpanBatch>();
  for (int i = 0; i < n; ++i) b->spans.push_back(testing::MakeSpan(first + i));
  return b;
}

RetryOptions FastRetry() {
  return RetryOptions{.initial_backoff = milliseconds(5), .max_backoff = milliseconds(20),
                      .multiplier = 2.0, .max_elapsed = milliseconds(5000)};
}

class DestinationQueueTest : public ::testing::Test {
 protected:
  std::unique_ptr<DestinationQueue> MakeQueue(RetryOptions retry = FastRetry(),
                                              std::size_t max_batches = 8) {
    DestinationQueue::Options o;
    o.name = "d";
    o.retry = retry;
    o.max_queued_batches = max_batches;
    return std::make_unique<DestinationQueue>(o, std::make_unique<FakeSender>(state_), metrics_);
  }
  std::uint64_t Dropped(const std::string& reason) {
    return metrics_.CounterValue(metric::kSpansDropped, {{"destination", "d"}, {"reason", reason}});
  }
  std::uint64_t Exported() {
    return metrics_.CounterValue(metric::kSpansExported, {{"destination", "d"}});
  }
  std::uint64_t Batches(const std::string& outcome) {
    return metrics_.CounterValue(metric::kBatches, {{"destination", "d"}, {"outcome", outcome}});
  }
  void Stop(DestinationQueue& q, milliseconds deadline = milliseconds(5000)) {
    q.BeginShutdown(std::chrono::steady_clock::now() + deadline);
    q.Join();
  }

  MetricsRegistry metrics_;
  std::shared_ptr<FakeSender::State> state_ = std::make_shared<FakeSender::State>();
};

TEST_F(DestinationQueueTest, DeliversAndCountsExported) {
  auto q = MakeQueue();
  EXPECT_TRUE(q->Enqueue(MakeBatch(3)));
  EXPECT_TRUE(q->Enqueue(MakeBatch(2)));
  Stop(*q);
  EXPECT_EQ(state_->sent_sizes, (std::vector<std::size_t>{3, 2}));
  EXPECT_EQ(Exported(), 5u);
  EXPECT_EQ(Batches("success"), 2u);
  EXPECT_EQ(metrics_.CounterTotal(metric::kSpansDropped), 0u);
}

TEST_F(DestinationQueueTest, RetryableFailureIsRetriedAndDeliveredOnce) {
  state_->Push(ExportResult::Retryable("UNAVAILABLE", "down"));
  state_->Push(ExportResult::Retryable("UNAVAILABLE", "down"));
  auto q = MakeQueue();
  q->Enqueue(MakeBatch(4));
  Stop(*q);
  EXPECT_EQ(state_->sent_sizes, (std::vector<std::size_t>{4, 4, 4}));
  EXPECT_EQ(Exported(), 4u);
  EXPECT_EQ(metrics_.CounterValue(metric::kRetries, {{"destination", "d"}}), 2u);
  EXPECT_EQ(Batches("retryable_error"), 2u);
  EXPECT_EQ(Batches("success"), 1u);
  // Backoff between attempts (>= 80% of 5 ms, then of 10 ms).
  EXPECT_GE(state_->sent_at[1] - state_->sent_at[0], milliseconds(3));
  EXPECT_GE(state_->sent_at[2] - state_->sent_at[1], milliseconds(7));
}

TEST_F(DestinationQueueTest, PermanentFailureIsNeverRetried) {
  state_->Push(ExportResult::Permanent("INVALID_ARGUMENT", "bad"));
  auto q = MakeQueue();
  q->Enqueue(MakeBatch(4));
  q->Enqueue(MakeBatch(1));
  Stop(*q);
  EXPECT_EQ(state_->sent_sizes, (std::vector<std::size_t>{4, 1}));
  EXPECT_EQ(Dropped("permanent_error"), 4u);
  EXPECT_EQ(Exported(), 1u);
  EXPECT_EQ(metrics_.CounterValue(metric::kRetries, {{"destination", "d"}}), 0u);
}

TEST_F(DestinationQueueTest, PartialSuccessCountsRejectedAndIsNotRetried) {
  ExportResult partial = ExportResult::Success();
  partial.rejected_spans = 3;
  partial.message = "3 spans too old";
  state_->Push(partial);
  auto q = MakeQueue();
  q->Enqueue(MakeBatch(10));
  Stop(*q);
  EXPECT_EQ(state_->sends(), 1u);
  EXPECT_EQ(Exported(), 7u);
  EXPECT_EQ(Dropped("rejected_by_backend"), 3u);
  EXPECT_EQ(Batches("partial_success"), 1u);
}

TEST_F(DestinationQueueTest, GivesUpAfterMaxElapsed) {
  for (int i = 0; i < 100; ++i) state_->Push(ExportResult::Retryable("UNAVAILABLE", "down"));
  auto retry = FastRetry();
  retry.max_elapsed = milliseconds(60);
  auto q = MakeQueue(retry);
  q->Enqueue(MakeBatch(2));
  Stop(*q);
  EXPECT_EQ(Dropped("retry_exhausted"), 2u);
  EXPECT_EQ(Exported(), 0u);
  EXPECT_GT(state_->sends(), 2u);
  EXPECT_LT(state_->sends(), 30u);
}

TEST_F(DestinationQueueTest, ServerRetryDelayReplacesBackoff) {
  ExportResult throttled = ExportResult::Retryable("RESOURCE_EXHAUSTED", "slow down");
  throttled.retry_after = milliseconds(120);
  state_->Push(throttled);
  auto q = MakeQueue();
  q->Enqueue(MakeBatch(1));
  Stop(*q);
  ASSERT_EQ(state_->sends(), 2u);
  EXPECT_GE(state_->sent_at[1] - state_->sent_at[0], milliseconds(115));
  EXPECT_EQ(Exported(), 1u);
}

TEST_F(DestinationQueueTest, FullQueueDropsWithoutBlocking) {
  state_->block = true;
  auto q = MakeQueue(FastRetry(), /*max_batches=*/2);
  q->Enqueue(MakeBatch(1));  // taken by the sender, which hangs
  ASSERT_TRUE(state_->WaitForSends(1, milliseconds(5000)));
  EXPECT_TRUE(q->Enqueue(MakeBatch(2)));
  EXPECT_TRUE(q->Enqueue(MakeBatch(3)));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(q->Enqueue(MakeBatch(4)));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(100));
  EXPECT_EQ(Dropped("destination_queue_full"), 4u);
  EXPECT_EQ(q->queued_batches(), 3u);  // includes the batch in flight
  EXPECT_EQ(q->queued_spans(), 6u);    // likewise
  state_->Unblock();
  Stop(*q);
  EXPECT_EQ(Exported(), 6u);
}

TEST_F(DestinationQueueTest, ShutdownDeadlineCancelsAndCountsLeftovers) {
  state_->block = true;
  auto q = MakeQueue();
  q->Enqueue(MakeBatch(2));
  ASSERT_TRUE(state_->WaitForSends(1, milliseconds(5000)));
  q->Enqueue(MakeBatch(3));
  q->Enqueue(MakeBatch(4));
  const auto t0 = std::chrono::steady_clock::now();
  Stop(*q, milliseconds(100));
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, milliseconds(90));
  EXPECT_LT(took, milliseconds(3000));
  EXPECT_EQ(Dropped("shutdown"), 9u);
  EXPECT_EQ(Exported(), 0u);
  EXPECT_FALSE(q->Enqueue(MakeBatch(1)));
  EXPECT_EQ(Dropped("shutdown"), 10u);
}

TEST_F(DestinationQueueTest, ShutdownWithoutDeadlineDrainsEverything) {
  auto q = MakeQueue();
  for (int i = 0; i < 5; ++i) q->Enqueue(MakeBatch(10));
  Stop(*q);
  EXPECT_EQ(Exported(), 50u);
  EXPECT_EQ(state_->cancels, 0);
}

}  // namespace
}  // namespace kspan
