// A scriptable SpanSender for policy tests: answers from a queue of results,
// records what it was asked, can block until released or cancelled.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <vector>

#include "exporter/sender.h"

namespace kspan::testing {

class FakeSender final : public SpanSender {
 public:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<ExportResult> script;  // then Success()
    std::vector<std::size_t> sent_sizes;  // every Send(), in order
    std::vector<Clock::time_point> sent_at;
    bool block = false;      // Send() waits until unblocked or cancelled
    int cancels = 0;
    bool cancelled = false;

    void Push(ExportResult r) {
      std::lock_guard lock(mu);
      script.push_back(std::move(r));
    }
    void Unblock() {
      {
        std::lock_guard lock(mu);
        block = false;
      }
      cv.notify_all();
    }
    bool WaitForSends(std::size_t n, std::chrono::milliseconds timeout) {
      std::unique_lock lock(mu);
      return cv.wait_for(lock, timeout, [&] { return sent_sizes.size() >= n; });
    }
    // Until the sends together carried `n` spans.
    bool WaitForSpans(std::size_t n, std::chrono::milliseconds timeout) {
      std::unique_lock lock(mu);
      return cv.wait_for(lock, timeout, [&] {
        std::size_t total = 0;
        for (std::size_t s : sent_sizes) total += s;
        return total >= n;
      });
    }
    std::size_t sends() {
      std::lock_guard lock(mu);
      return sent_sizes.size();
    }
  };

  explicit FakeSender(std::shared_ptr<State> state) : state_(std::move(state)) {}

  ExportResult Send(const SpanBatch& batch, Clock::time_point deadline) override {
    std::unique_lock lock(state_->mu);
    state_->sent_sizes.push_back(batch.spans.size());
    state_->sent_at.push_back(Clock::now());
    state_->cv.notify_all();
    state_->cancelled = false;
    while (state_->block && !state_->cancelled && Clock::now() < deadline) {
      state_->cv.wait_until(lock, std::min(deadline, Clock::now() + std::chrono::milliseconds(20)));
    }
    if (state_->cancelled) return ExportResult::Retryable("CANCELLED", "cancelled");
    if (state_->block) return ExportResult::Retryable("DEADLINE_EXCEEDED", "deadline");
    if (state_->script.empty()) return ExportResult::Success();
    ExportResult r = std::move(state_->script.front());
    state_->script.pop_front();
    return r;
  }

  void Cancel() noexcept override {
    {
      std::lock_guard lock(state_->mu);
      ++state_->cancels;
      state_->cancelled = true;
    }
    state_->cv.notify_all();
  }

 private:
  std::shared_ptr<State> state_;
};

}  // namespace kspan::testing
