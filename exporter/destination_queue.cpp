#include "exporter/destination_queue.h"

#include <algorithm>

#include "spdlog/spdlog.h"

namespace kspan {
namespace {

std::string FormatMs(std::chrono::milliseconds d) { return std::to_string(d.count()) + "ms"; }

}  // namespace

DestinationQueue::DestinationQueue(Options options, std::unique_ptr<SpanSender> sender,
                                   MetricsRegistry& metrics)
    : options_(std::move(options)),
      sender_(std::move(sender)),
      registry_(metrics),
      metrics_(metrics, options_.name),
      drop_log_(options_.name, options_.drop_log_interval),
      rejected_log_(options_.name, options_.drop_log_interval),
      backoff_(options_.retry) {
  registry_.AddCallbackGauge(
      metric::kQueueBatches, "Batches waiting for a destination's sender.",
      {{"destination", options_.name}}, [this] { return static_cast<double>(queued_batches()); },
      this);
  registry_.AddCallbackGauge(
      metric::kQueueSpans, "Spans waiting for a destination's sender.",
      {{"destination", options_.name}}, [this] { return static_cast<double>(queued_spans()); },
      this);
  worker_ = std::thread([this] { Run(); });
}

DestinationQueue::~DestinationQueue() {
  Join();
  registry_.RemoveCallbacks(this);
}

bool DestinationQueue::Enqueue(SharedSpanBatch batch) noexcept {
  if (!batch || batch->spans.empty()) return true;
  const std::size_t n = batch->spans.size();
  std::string_view reason;
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      reason = drop_reason::kShutdown;
    } else if (queue_.size() >= options_.max_queued_batches) {
      reason = drop_reason::kDestinationQueueFull;
    } else {
      try {
        queue_.push_back(std::move(batch));
        queued_spans_ += n;
      } catch (...) {
        reason = drop_reason::kDestinationQueueFull;  // out of memory
      }
    }
  }
  if (!reason.empty()) {
    Drop(reason, n);
    return false;
  }
  cv_.notify_all();
  return true;
}

void DestinationQueue::BeginShutdown(Clock::time_point deadline) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    deadline_ = deadline;
  }
  cv_.notify_all();
}

void DestinationQueue::Join() {
  std::lock_guard join_lock(join_mu_);
  if (!worker_.joinable()) return;
  bool cancel = false;
  {
    std::unique_lock lock(mu_);
    if (!stopping_) {
      stopping_ = true;
      deadline_ = Clock::now();
    }
    cv_.notify_all();
    if (deadline_ == Clock::time_point::max()) {
      done_cv_.wait(lock, [&] { return finished_; });
    } else {
      done_cv_.wait_until(lock, deadline_, [&] { return finished_; });
    }
    if (!finished_) {
      hard_stop_ = true;
      cancel = true;
    }
  }
  cv_.notify_all();
  // Aborts a send that started before the deadline with a longer timeout.
  if (cancel) sender_->Cancel();
  worker_.join();
  drop_log_.Flush();
  rejected_log_.Flush();
  const auto a = ReadAccounting(registry_, options_.name);
  spdlog::info("export to '{}' stopped: {} spans exported, {} dropped", options_.name, a.exported,
               a.dropped_total());
}

std::size_t DestinationQueue::queued_batches() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

std::size_t DestinationQueue::queued_spans() const {
  std::lock_guard lock(mu_);
  return queued_spans_;
}

bool DestinationQueue::HardStoppedLocked(Clock::time_point now) const {
  return hard_stop_ || (stopping_ && now >= deadline_);
}

void DestinationQueue::Drop(std::string_view reason, std::uint64_t spans, std::string_view detail) {
  metrics_.Dropped(reason, spans);
  drop_log_.Record(reason, spans, detail);
}

void DestinationQueue::Run() {
  for (;;) {
    SharedSpanBatch batch;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) break;  // stopping and drained
      batch = std::move(queue_.front());
      queue_.pop_front();
      // The batch counts as queued until its fate is recorded, so that
      // queued + exported + dropped never misses spans in flight.
    }
    Deliver(*batch);
    {
      std::lock_guard lock(mu_);
      queued_spans_ -= batch->spans.size();
    }
  }
  {
    std::lock_guard lock(mu_);
    finished_ = true;
  }
  done_cv_.notify_all();
}

void DestinationQueue::Deliver(const SpanBatch& batch) {
  const std::uint64_t n = batch.spans.size();
  const auto first_attempt = Clock::now();
  backoff_.Reset();
  for (;;) {
    Clock::time_point deadline;
    {
      std::lock_guard lock(mu_);
      if (HardStoppedLocked(Clock::now())) {
        Drop(drop_reason::kShutdown, n);
        return;
      }
      deadline = deadline_;
    }

    const auto t0 = Clock::now();
    ExportResult result = sender_->Send(batch, deadline);
    metrics_.ExportDuration(Clock::now() - t0);

    switch (result.outcome) {
      case ExportResult::Outcome::kSuccess: {
        const auto rejected =
            static_cast<std::uint64_t>(std::clamp<std::int64_t>(result.rejected_spans, 0,
                                                                static_cast<std::int64_t>(n)));
        metrics_.BatchAttempt(rejected > 0 ? batch_outcome::kPartialSuccess
                                           : batch_outcome::kSuccess);
        metrics_.Exported(n - rejected);
        if (rejected > 0) {
          metrics_.Dropped(drop_reason::kRejectedByBackend, rejected);
          rejected_log_.Record(drop_reason::kRejectedByBackend, rejected, result.message);
        } else if (!result.message.empty()) {
          // The specification lets a server warn through partial_success.
          spdlog::debug("export to '{}': server message: {}", options_.name, result.message);
        }
        spdlog::debug("export to '{}': {} spans sent ({} rejected)", options_.name, n, rejected);
        if (failing_) {
          failing_ = false;
          spdlog::info("export to '{}' recovered", options_.name);
        }
        return;
      }
      case ExportResult::Outcome::kPermanent:
        metrics_.BatchAttempt(batch_outcome::kPermanentError);
        Drop(drop_reason::kPermanentError, n, result.code + ": " + result.message);
        return;
      case ExportResult::Outcome::kRetryable:
        break;
    }

    metrics_.BatchAttempt(batch_outcome::kRetryableError);
    const auto delay = result.retry_after.value_or(backoff_.Next());
    const auto now = Clock::now();
    std::string_view give_up;
    {
      std::lock_guard lock(mu_);
      if (HardStoppedLocked(now) || (stopping_ && now + delay >= deadline_)) {
        give_up = drop_reason::kShutdown;  // no attempt fits before the deadline
      } else if (options_.retry.max_elapsed.count() > 0 &&
                 now + delay - first_attempt > options_.retry.max_elapsed) {
        give_up = drop_reason::kRetryExhausted;
      } else if (options_.retry.max_elapsed.count() == 0 &&
                 queue_.size() >= options_.max_queued_batches) {
        // "Keep trying while the queue has room": newer data now wins.
        give_up = drop_reason::kRetryExhausted;
      }
    }
    if (!give_up.empty()) {
      Drop(give_up, n, result.code + ": " + result.message);
      return;
    }
    metrics_.Retry();
    spdlog::debug("export to '{}' failed ({}: {}); retry {} in {}", options_.name, result.code,
                  result.message, backoff_.attempts(), FormatMs(delay));
    // Warn on the transition to failing only: an outage is one line, not
    // one per batch.
    if (!failing_) {
      failing_ = true;
      spdlog::warn("export to '{}' failing ({}: {}); retrying with backoff, spans keep queueing",
                   options_.name, result.code, result.message);
    }

    std::unique_lock lock(mu_);
    const auto wake = now + delay;
    while (!HardStoppedLocked(Clock::now()) && Clock::now() < wake) {
      cv_.wait_until(lock, std::min(wake, deadline_));
    }
  }
}

}  // namespace kspan
