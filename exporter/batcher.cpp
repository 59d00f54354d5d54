#include "exporter/batcher.h"

#include <algorithm>
#include <iterator>

#include "exporter/export_metrics.h"
#include "spdlog/spdlog.h"

namespace kspan {

Batcher::Batcher(const BatchOptions& options, MetricsRegistry& metrics, Sink sink)
    : options_(options),
      metrics_(metrics),
      sink_(std::move(sink)),
      submitted_(metrics.GetCounter(metric::kSpansSubmitted, "Spans handed to the exporter.")),
      dropped_queue_full_(metrics.GetCounter(
          metric::kBatcherDropped, "Spans lost in the shared batcher before fan-out, by reason.",
          {{"reason", std::string(drop_reason::kQueueFull)}})),
      dropped_shutdown_(metrics.GetCounter(
          metric::kBatcherDropped, "Spans lost in the shared batcher before fan-out, by reason.",
          {{"reason", std::string(drop_reason::kShutdown)}})),
      batches_(metrics.GetCounter(metric::kBatcherBatches, "Batches cut by the shared batcher.")) {
  metrics_.AddCallbackGauge(
      metric::kBatcherQueueSpans, "Spans waiting in the shared batcher.", {},
      [this] { return static_cast<double>(queued_spans()); }, this);
  worker_ = std::thread([this] { Run(); });
}

Batcher::~Batcher() {
  Shutdown();
  metrics_.RemoveCallbacks(this);
}

bool Batcher::Submit(Span span) noexcept {
  submitted_.Add();
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      dropped_shutdown_.Add();
      return false;
    }
    if (queue_.size() >= options_.max_queue_size) {
      dropped_queue_full_.Add();
      return false;
    }
    try {
      queue_.push_back(std::move(span));
    } catch (...) {
      // Out of memory: the span is lost; count it like a full queue.
      dropped_queue_full_.Add();
      return false;
    }
    // Wake the worker only when it has something new to decide: the first
    // span starts the age timer, a full batch is due now.
    if (queue_.size() == 1) {
      oldest_ = std::chrono::steady_clock::now();
      wake = true;
    }
    wake = wake || queue_.size() == options_.max_export_batch_size;
  }
  if (wake) cv_.notify_one();
  return true;
}

SubmitResult Batcher::SubmitBatch(std::vector<Span>&& spans) noexcept {
  const std::size_t n = spans.size();
  submitted_.Add(n);
  if (n == 0) return SubmitResult::kAccepted;
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      dropped_shutdown_.Add(n);
      return SubmitResult::kShutdown;
    }
    const std::size_t before = queue_.size();
    if (before > options_.max_queue_size || options_.max_queue_size - before < n) {
      dropped_queue_full_.Add(n);
      return SubmitResult::kQueueFull;
    }
    try {
      for (auto& s : spans) queue_.push_back(std::move(s));
    } catch (...) {
      // Out of memory part way: take back what was queued (the moved-from
      // spans are gone, so the caller sees a refused, emptied batch).
      queue_.resize(before);
      dropped_queue_full_.Add(n);
      return SubmitResult::kQueueFull;
    }
    spans.clear();
    if (before == 0) {
      oldest_ = std::chrono::steady_clock::now();
      wake = true;
    }
    const std::size_t max_batch = options_.max_export_batch_size;
    wake = wake || (before < max_batch && queue_.size() >= max_batch);
  }
  if (wake) cv_.notify_one();
  return SubmitResult::kAccepted;
}

void Batcher::Shutdown() {
  std::lock_guard shutdown_lock(shutdown_mu_);
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (worker_.joinable()) worker_.join();
}

std::size_t Batcher::queued_spans() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

void Batcher::Run() {
  const std::size_t max_batch = std::max<std::size_t>(options_.max_export_batch_size, 1);
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) break;  // stopping and drained
    if (!stopping_ && queue_.size() < max_batch) {
      const auto due = oldest_ + options_.schedule_delay;
      const bool ready = cv_.wait_until(
          lock, due, [&] { return stopping_ || queue_.size() >= max_batch; });
      if (!ready && std::chrono::steady_clock::now() < due) continue;  // spurious wake
      if (queue_.empty()) continue;
    }
    const std::size_t n = std::min(queue_.size(), max_batch);
    auto batch = std::make_shared<SpanBatch>();
    batch->spans.reserve(n);
    std::move(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n),
              std::back_inserter(batch->spans));
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    if (!queue_.empty()) oldest_ = std::chrono::steady_clock::now();
    lock.unlock();
    // Sized once here, outside the lock, for every destination's byte bound.
    for (const auto& s : batch->spans) batch->approx_bytes += s.ApproximateBytes();
    batches_.Add();
    spdlog::debug("batcher: cut a batch of {} spans", n);
    sink_(std::move(batch));
    lock.lock();
  }
}

}  // namespace kspan
