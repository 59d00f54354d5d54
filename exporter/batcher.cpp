#include "exporter/batcher.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "exporter/export_metrics.h"
#include "spdlog/spdlog.h"

namespace kspan {

Batcher::Batcher(const BatchOptions& options, MetricsRegistry& metrics, Sink sink,
                 Sink memory_sink)
    : options_(options),
      metrics_(metrics),
      sink_(std::move(sink)),
      memory_sink_(std::move(memory_sink)),
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
  metrics_.AddCallbackGauge(
      metric::kBatcherQueueBytes,
      "Approximate bytes of the spans waiting in the shared batcher (resources and scopes once).",
      {}, [this] { return static_cast<double>(queued_bytes()); }, this);
  worker_ = std::thread([this] { Run(); });
}

Batcher::~Batcher() {
  Shutdown();
  metrics_.RemoveCallbacks(this);
}

Batcher::SharedUse Batcher::CountShared(std::span<const Span> spans) {
  SharedUse use;
  // Spans of one request or process share one or two objects: a linear
  // look-up over the few distinct ones beats a hash set here.
  auto note = [&use](const void* object, auto size) {
    if (object == nullptr) return;
    for (auto& u : use) {
      if (u.object == object) {
        ++u.refs;
        return;
      }
    }
    use.push_back({object, 1, size()});
  };
  for (const auto& s : spans) {
    note(s.resource.get(), [&] { return ApproximateBytes(*s.resource); });
    note(s.scope.get(), [&] { return ApproximateBytes(*s.scope); });
    if (use.size() > 64 && &s != &spans.back()) {
      // Many distinct objects (a request of many ResourceSpans): the
      // linear look-up would go quadratic. Start over with a hash map.
      absl::flat_hash_map<const void*, std::size_t> index;
      SharedUse all;
      for (const auto& t : spans) {
        for (const auto& [object, size] :
             {std::pair<const void*, std::size_t>{t.resource.get(), 0},
              std::pair<const void*, std::size_t>{t.scope.get(), 1}}) {
          if (object == nullptr) continue;
          auto [it, added] = index.try_emplace(object, all.size());
          if (added) {
            all.push_back({object, 1,
                           size == 0 ? ApproximateBytes(*t.resource) : ApproximateBytes(*t.scope)});
          } else {
            ++all[it->second].refs;
          }
        }
      }
      return all;
    }
  }
  return use;
}

std::size_t Batcher::NewSharedBytesLocked(const SharedUse& use) const {
  std::size_t n = 0;
  for (const auto& u : use) {
    if (!shared_.contains(u.object)) n += u.bytes;
  }
  return n;
}

void Batcher::AddSharedLocked(const SharedUse& use) {
  for (const auto& u : use) {
    auto& e = shared_[u.object];
    if (e.refs == 0) {
      e.bytes = u.bytes;
      queue_bytes_ += u.bytes;
    }
    e.refs += u.refs;
  }
}

void Batcher::ReleaseSharedLocked(const Span& span) {
  for (const void* object : {static_cast<const void*>(span.resource.get()),
                             static_cast<const void*>(span.scope.get())}) {
    if (object == nullptr) continue;
    auto it = shared_.find(object);
    if (it == shared_.end()) continue;
    if (--it->second.refs == 0) {
      queue_bytes_ -= it->second.bytes;
      shared_.erase(it);
    }
  }
}

bool Batcher::FitsLocked(std::size_t spans, std::size_t bytes) const {
  // An empty queue takes one submission of any size: a request larger than
  // the byte bound would otherwise be refused (and retried by its client)
  // for ever. Memory stays bounded by the bound plus one request.
  if (queue_.empty()) return spans <= options_.max_queue_size;
  if (queue_.size() > options_.max_queue_size || options_.max_queue_size - queue_.size() < spans) {
    return false;
  }
  return options_.max_queue_bytes == 0 || (queue_bytes_ <= options_.max_queue_bytes &&
                                           options_.max_queue_bytes - queue_bytes_ >= bytes);
}

bool Batcher::Submit(Span span) noexcept {
  submitted_.Add();
  // Sized before taking the lock: capture threads contend on it.
  const std::size_t bytes = span.ApproximateBytes();
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      dropped_shutdown_.Add();
      return false;
    }
    try {
      const SharedUse use = CountShared(std::span<const Span>(&span, 1));
      if (!FitsLocked(1, bytes + NewSharedBytesLocked(use))) {
        dropped_queue_full_.Add();
        return false;
      }
      // Reserved first so that adding the references cannot throw after
      // the span is queued.
      shared_.reserve(shared_.size() + use.size());
      queue_.push_back({std::move(span), bytes});
      AddSharedLocked(use);
      queue_bytes_ += bytes;
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

SubmitResult Batcher::SubmitBatch(std::vector<Span>&& spans, BatchRoute route) noexcept {
  const std::size_t n = spans.size();
  const bool counted = route == BatchRoute::kEveryDestination;
  if (!counted && !memory_sink_) return SubmitResult::kQueueFull;
  if (counted) submitted_.Add(n);
  if (n == 0) return SubmitResult::kAccepted;
  bool wake = false;
  try {
    // Sized outside the lock; the shared objects' use is counted per
    // distinct object so the lock is held for a few look-ups, not n.
    std::vector<std::size_t> bytes(n);
    std::size_t own = 0;
    for (std::size_t i = 0; i < n; ++i) own += bytes[i] = spans[i].ApproximateBytes();
    const SharedUse use = CountShared(spans);
    std::lock_guard lock(mu_);
    if (stopping_) {
      if (counted) dropped_shutdown_.Add(n);
      return SubmitResult::kShutdown;
    }
    const std::size_t before = queue_.size();
    if (!FitsLocked(n, own + NewSharedBytesLocked(use))) {
      if (counted) dropped_queue_full_.Add(n);
      return SubmitResult::kQueueFull;
    }
    try {
      shared_.reserve(shared_.size() + use.size());  // AddSharedLocked cannot throw then
      for (std::size_t i = 0; i < n; ++i) queue_.push_back({std::move(spans[i]), bytes[i], route});
      AddSharedLocked(use);
    } catch (...) {
      // Out of memory part way: take back what was queued (the moved-from
      // spans are gone, so the caller sees a refused, emptied batch).
      queue_.resize(before);
      if (counted) dropped_queue_full_.Add(n);
      return SubmitResult::kQueueFull;
    }
    queue_bytes_ += own;
    spans.clear();
    if (before == 0) {
      oldest_ = std::chrono::steady_clock::now();
      wake = true;
    }
    const std::size_t max_batch = options_.max_export_batch_size;
    wake = wake || (before < max_batch && queue_.size() >= max_batch);
  } catch (...) {
    if (counted) dropped_queue_full_.Add(n);  // out of memory sizing the request
    return SubmitResult::kQueueFull;
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

std::size_t Batcher::queued_bytes() const {
  std::lock_guard lock(mu_);
  return queue_bytes_;
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
    // One cut, up to two batches: spans for every destination, and spans
    // already persisted in the disk queues, for the other destinations.
    auto batch = std::make_shared<SpanBatch>();
    std::shared_ptr<SpanBatch> memory_batch;
    batch->spans.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      Queued& q = queue_[i];
      queue_bytes_ -= q.bytes;
      ReleaseSharedLocked(q.span);
      if (q.route == BatchRoute::kEveryDestination) {
        batch->spans.push_back(std::move(q.span));
      } else {
        if (!memory_batch) memory_batch = std::make_shared<SpanBatch>();
        memory_batch->spans.push_back(std::move(q.span));
      }
    }
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    if (!queue_.empty()) oldest_ = std::chrono::steady_clock::now();
    lock.unlock();
    spdlog::debug("batcher: cut a batch of {} spans", n);
    // Sized once here, outside the lock, for every destination's byte bound.
    if (!batch->spans.empty()) {
      batch->approx_bytes = ApproximateBatchBytes(batch->spans);
      batches_.Add();
      sink_(std::move(batch));
    }
    if (memory_batch) {
      memory_batch->approx_bytes = ApproximateBatchBytes(memory_batch->spans);
      batches_.Add();
      memory_sink_(std::move(memory_batch));
    }
    lock.lock();
  }
}

}  // namespace kspan
