// Bytes that requests in flight may hold, shared by every thread of the
// receiver (both transports): each request takes what it buffers (as sent,
// and what it inflates to) before buffering it, and gives it back when it is
// answered. A request that would pass the budget is refused as retryable,
// so many large requests at once cost at most the budget, not their sum.
#pragma once

#include <atomic>
#include <cstddef>

namespace kspan {

class MemoryBudget {
 public:
  explicit MemoryBudget(std::size_t limit) : limit_(limit) {}

  bool TryTake(std::size_t n) noexcept {
    std::size_t used = used_.load(std::memory_order_relaxed);
    do {
      if (n > limit_ || used > limit_ - n) return false;
    } while (!used_.compare_exchange_weak(used, used + n, std::memory_order_relaxed));
    return true;
  }
  void Give(std::size_t n) noexcept { used_.fetch_sub(n, std::memory_order_relaxed); }

  std::size_t used() const noexcept { return used_.load(std::memory_order_relaxed); }
  std::size_t limit() const noexcept { return limit_; }

 private:
  const std::size_t limit_;
  std::atomic<std::size_t> used_{0};
};

// What one request holds of a budget; all of it is given back on destruction.
class BudgetLease {
 public:
  explicit BudgetLease(MemoryBudget& budget) : budget_(budget) {}
  ~BudgetLease() { budget_.Give(held_); }
  BudgetLease(const BudgetLease&) = delete;
  BudgetLease& operator=(const BudgetLease&) = delete;

  // False (and nothing taken) when the budget has not `n` bytes more.
  bool Grow(std::size_t n) noexcept {
    if (!budget_.TryTake(n)) return false;
    held_ += n;
    return true;
  }
  std::size_t held() const noexcept { return held_; }

 private:
  MemoryBudget& budget_;
  std::size_t held_ = 0;
};

}  // namespace kspan
