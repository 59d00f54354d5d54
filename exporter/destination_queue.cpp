#include "exporter/destination_queue.h"

#include <algorithm>

#include "exporter/otlp_transform.h"
#include "spdlog/spdlog.h"

namespace kspan {
namespace {

std::string FormatMs(std::chrono::milliseconds d) { return std::to_string(d.count()) + "ms"; }

std::size_t BatchBytes(const SpanBatch& b) {
  if (b.approx_bytes != 0) return b.approx_bytes;
  return ApproximateBatchBytes(b.spans);
}

// The batch with only its high-priority spans; nullptr when it has none.
std::shared_ptr<SpanBatch> HighPriorityOnly(const SpanBatch& b) {
  auto out = std::make_shared<SpanBatch>();
  for (const auto& s : b.spans) {
    if (s.HighPriority()) out->spans.push_back(s);
  }
  out->approx_bytes = ApproximateBatchBytes(out->spans);
  return out;
}

std::size_t HighPriorityCount(const SpanBatch& b) {
  return static_cast<std::size_t>(
      std::count_if(b.spans.begin(), b.spans.end(), [](const Span& s) { return s.HighPriority(); }));
}

std::string Serialize(const SpanBatch& b) {
  return ToExportRequest(b.spans).SerializeAsString();
}

const MetricLabels Dest(const std::string& name) { return {{"destination", name}}; }

}  // namespace

DestinationQueue::DestinationQueue(Options options, std::unique_ptr<SpanSender> sender,
                                   MetricsRegistry& metrics)
    : DestinationQueue(std::move(options),
                       [&] {
                         std::vector<std::unique_ptr<SpanSender>> v;
                         v.push_back(std::move(sender));
                         return v;
                       }(),
                       metrics) {}

DestinationQueue::DestinationQueue(Options options,
                                   std::vector<std::unique_ptr<SpanSender>> senders,
                                   MetricsRegistry& metrics)
    : options_(std::move(options)),
      senders_(std::move(senders)),
      registry_(metrics),
      metrics_(metrics, options_.name),
      drop_log_(options_.name, options_.drop_log_interval),
      rejected_log_(options_.name, options_.drop_log_interval),
      persisted_spans_(metrics.GetCounter(metric::kDiskPersistedSpans,
                                          "Spans committed to the disk queue (accepted).",
                                          Dest(options_.name))),
      disk_rejected_full_(metrics.GetCounter(
          metric::kDiskRejected,
          "Batches the disk queue could not take (kept in memory only), by reason.",
          {{"destination", options_.name}, {"reason", "full"}})),
      disk_rejected_error_(metrics.GetCounter(
          metric::kDiskRejected,
          "Batches the disk queue could not take (kept in memory only), by reason.",
          {{"destination", options_.name}, {"reason", "error"}})),
      persist_refused_full_(metrics.GetCounter(
          metric::kDiskPersistRefused,
          "App spans not persisted in the disk queue before the receiver answered (the client "
          "was told to retry), by reason.",
          {{"destination", options_.name}, {"reason", "full"}})),
      persist_refused_error_(metrics.GetCounter(
          metric::kDiskPersistRefused,
          "App spans not persisted in the disk queue before the receiver answered (the client "
          "was told to retry), by reason.",
          {{"destination", options_.name}, {"reason", "error"}})),
      recovered_batches_(metrics.GetCounter(metric::kDiskRecoveredBatches,
                                            "Batches read back from the disk queue at start-up.",
                                            Dest(options_.name))),
      recovered_spans_(metrics.GetCounter(metric::kDiskRecoveredSpans,
                                          "Spans read back from the disk queue at start-up.",
                                          Dest(options_.name))),
      resent_batches_(metrics.GetCounter(
          metric::kDiskResentBatches,
          "Recovered batches whose sending had started before the restart (possible duplicates).",
          Dest(options_.name))),
      dlq_evicted_(metrics.GetCounter(metric::kDlqEvicted,
                                      "Dead letters evicted (oldest first) to stay within bounds.",
                                      Dest(options_.name))),
      probes_(metrics.GetCounter(metric::kCircuitProbes,
                                 "Probe requests sent while the circuit breaker was open.",
                                 Dest(options_.name))),
      bad_response_too_large_(metrics.GetCounter(
          metric::kBadResponses,
          "Answers from the destination that could not be read (the outcome stood), by reason.",
          {{"destination", options_.name}, {"reason", "too_large"}})),
      bad_response_unreadable_(metrics.GetCounter(
          metric::kBadResponses,
          "Answers from the destination that could not be read (the outcome stood), by reason.",
          {{"destination", options_.name}, {"reason", "unreadable"}})) {
  if (senders_.empty()) senders_.push_back(nullptr);  // caught below; keeps indices valid
  for (std::size_t i = 0; i < senders_.size(); ++i) backoffs_.emplace_back(options_.retry);

  if (options_.disk.enabled) {
    auto d = DiskQueue::Open(options_.disk);
    if (d.ok()) {
      disk_ = *std::move(d);
    } else {
      // Keep running on memory: the disk queue is a durability add-on.
      spdlog::error("export to '{}': disk queue unavailable, memory queue only: {}",
                    options_.name, std::string(d.status().message()));
      disk_rejected_error_.Add();
    }
  }
  if (options_.dead_letter.enabled && !options_.dead_letter.path.empty()) {
    auto s = DeadLetterStore::Open(options_.dead_letter.path, options_.dead_letter.max_bytes);
    if (s.ok()) {
      dlq_ = *std::move(s);
    } else {
      spdlog::error("export to '{}': dead-letter store unavailable (permanent failures will be "
                    "dropped, counted): {}",
                    options_.name, std::string(s.status().message()));
    }
  }

  const auto labels = Dest(options_.name);
  registry_.AddCallbackGauge(
      metric::kQueueBatches, "Batches waiting for a destination's sender (in flight included).",
      labels, [this] { return static_cast<double>(queued_batches()); }, this);
  registry_.AddCallbackGauge(
      metric::kQueueSpans, "Spans waiting for a destination's sender (in flight included).", labels,
      [this] { return static_cast<double>(queued_spans()); }, this);
  registry_.AddCallbackGauge(
      metric::kQueueBytes, "Approximate bytes of spans a destination's queue holds in memory.",
      labels, [this] { return static_cast<double>(queued_bytes()); }, this);
  registry_.AddCallbackGauge(
      metric::kInFlight, "Export requests in flight.", labels,
      [this] {
        std::lock_guard lock(mu_);
        return static_cast<double>(in_flight_);
      },
      this);
  registry_.AddCallbackGauge(
      metric::kCircuitState, "Circuit breaker: 0 closed, 1 open, 2 half-open (probing).", labels,
      [this] { return static_cast<double>(circuit_state()); }, this);
  if (disk_) {
    registry_.AddCallbackGauge(
        metric::kDiskBytes, "Bytes in the disk queue.", labels,
        [this] { return static_cast<double>(disk_->bytes()); }, this);
    registry_.AddCallbackGauge(
        metric::kDiskBatches, "Batches in the disk queue.", labels,
        [this] { return static_cast<double>(disk_->batches()); }, this);
    registry_.AddCallbackGauge(
        metric::kDiskWritable, "1 while the disk queue accepts writes, 0 after a refusal.", labels,
        [this] {
          std::lock_guard lock(mu_);
          return disk_writable_ ? 1.0 : 0.0;
        },
        this);
  }
  if (dlq_) {
    registry_.AddCallbackGauge(
        metric::kDlqBytes, "Bytes in the dead-letter store.", labels,
        [this] { return static_cast<double>(dlq_->bytes()); }, this);
  }
  Start();
}

void DestinationQueue::Start() {
  if (disk_) {
    Recover();
    writer_ = std::thread([this] { RunWriter(); });
  }
  workers_running_ = senders_.size();
  for (std::size_t i = 0; i < senders_.size(); ++i) {
    workers_.emplace_back([this, i] { RunWorker(i); });
  }
}

void DestinationQueue::Recover() {
  auto rows = disk_->List();
  if (!rows.ok()) {
    spdlog::error("export to '{}': cannot read the disk queue: {}", options_.name,
                  std::string(rows.status().message()));
    return;
  }
  std::size_t spans = 0;
  for (const auto& r : *rows) {
    Entry e;
    e.spans = r.spans;
    e.disk_id = r.id;
    e.disk_bytes = r.bytes;
    e.attempts_before = r.attempts;
    spans += r.spans;
    ready_.push_back(std::move(e));
  }
  queued_batches_ += rows->size();
  queued_spans_ += spans;
  recovered_batches_.Add(rows->size());
  recovered_spans_.Add(spans);
  if (!rows->empty()) {
    spdlog::info("export to '{}': {} batches ({} spans) recovered from the disk queue {}",
                 options_.name, rows->size(), spans, disk_->path());
  }
}

DestinationQueue::~DestinationQueue() {
  Join();
  registry_.RemoveCallbacks(this);
}

bool DestinationQueue::FitsLocked(std::size_t spans, std::size_t bytes) const {
  // With a writable disk queue, batches pass through memory only briefly on
  // their way to disk: the span and byte bounds still cap memory, the batch
  // count does not.
  if (!(disk_ && disk_writable_) && mem_batches_ + 1 > options_.max_queued_batches) return false;
  if (options_.max_queued_spans > 0 && mem_spans_ + spans > options_.max_queued_spans) return false;
  if (options_.max_queued_bytes > 0 && mem_bytes_ + bytes > options_.max_queued_bytes) return false;
  return true;
}

bool DestinationQueue::MemoryFullLocked() const {
  if (disk_ && disk_writable_) return false;  // the disk queue has room
  return mem_batches_ >= options_.max_queued_batches ||
         (options_.max_queued_spans > 0 && mem_spans_ >= options_.max_queued_spans) ||
         (options_.max_queued_bytes > 0 && mem_bytes_ >= options_.max_queued_bytes);
}

void DestinationQueue::AddLocked(std::deque<Entry>& q, Entry e) {
  if (e.batch) {
    ++mem_batches_;
    mem_spans_ += e.spans;
    mem_bytes_ += e.bytes;
  }
  q.push_back(std::move(e));
}

void DestinationQueue::ReleaseMemoryLocked(Entry& e) {
  if (!e.batch) return;
  --mem_batches_;
  mem_spans_ -= e.spans;
  mem_bytes_ -= e.bytes;
}

bool DestinationQueue::FreeCachedLocked(const Entry& e) {
  if (FitsLocked(e.spans, e.bytes)) return true;
  for (auto it = ready_.rbegin(); it != ready_.rend() && !FitsLocked(e.spans, e.bytes); ++it) {
    if (it->disk_id != 0 && it->batch) {
      ReleaseMemoryLocked(*it);
      it->batch.reset();
    }
  }
  return FitsLocked(e.spans, e.bytes);
}

bool DestinationQueue::MakeRoomLocked(Entry& e) {
  // 0. Memory copies of persisted batches are only a cache: free to drop.
  if (FreeCachedLocked(e)) return true;
  // 1. The incoming batch's own low-priority spans go first.
  const std::size_t high = HighPriorityCount(*e.batch);
  if (high < e.spans) {
    const std::size_t low = e.spans - high;
    metrics_.PriorityDrop(false, low);
    Drop(drop_reason::kDestinationQueueFull, low);
    if (high == 0) return false;
    auto filtered = HighPriorityOnly(*e.batch);
    e.bytes = filtered->approx_bytes;
    e.spans = filtered->spans.size();
    e.batch = std::move(filtered);
    if (FitsLocked(e.spans, e.bytes)) return true;
  }
  // 2. Then low-priority spans already queued in memory, oldest first
  //    (never rows already on disk: the disk copy would disagree).
  for (auto* q : {&ready_, &staging_}) {
    for (auto it = q->begin(); it != q->end() && !FitsLocked(e.spans, e.bytes);) {
      if (!it->batch || it->disk_id != 0) {
        ++it;
        continue;
      }
      const std::size_t keep = HighPriorityCount(*it->batch);
      if (keep == it->spans) {
        ++it;
        continue;
      }
      const std::size_t low = it->spans - keep;
      metrics_.PriorityDrop(false, low);
      Drop(drop_reason::kDestinationQueueFull, low);
      ReleaseMemoryLocked(*it);
      queued_spans_ -= low;
      if (keep == 0) {
        --queued_batches_;
        it = q->erase(it);
        continue;
      }
      auto filtered = HighPriorityOnly(*it->batch);
      it->bytes = filtered->approx_bytes;
      it->spans = filtered->spans.size();
      it->batch = std::move(filtered);
      ++mem_batches_;
      mem_spans_ += it->spans;
      mem_bytes_ += it->bytes;
      ++it;
    }
  }
  if (FitsLocked(e.spans, e.bytes)) return true;
  // 3. Nothing of lower value is left: the incoming high-priority spans go.
  metrics_.PriorityDrop(true, e.spans);
  Drop(drop_reason::kDestinationQueueFull, e.spans);
  return false;
}

bool DestinationQueue::Enqueue(SharedSpanBatch batch) noexcept {
  if (!batch || batch->spans.empty()) return true;
  const std::size_t n = batch->spans.size();
  bool all_kept = true;
  try {
    std::lock_guard lock(mu_);
    if (stopping_) {
      Drop(drop_reason::kShutdown, n);
      return false;
    }
    Entry e;
    e.spans = n;
    e.bytes = BatchBytes(*batch);
    e.batch = std::move(batch);
    const auto now = Clock::now();
    if (disk_ && !disk_writable_ && now >= disk_retry_at_) disk_writable_ = true;
    const bool to_disk = disk_ && disk_writable_;
    if (!MakeRoomLocked(e)) return false;
    all_kept = e.spans == n;
    ++queued_batches_;
    queued_spans_ += e.spans;
    AddLocked(to_disk ? staging_ : ready_, std::move(e));
  } catch (...) {
    Drop(drop_reason::kDestinationQueueFull, n);  // out of memory
    return false;
  }
  cv_.notify_all();
  return all_kept;
}

absl::Status DestinationQueue::Persist(SharedSpanBatch batch) {
  if (!batch || batch->spans.empty()) return absl::OkStatus();
  if (!disk_) return absl::FailedPreconditionError("no disk queue");
  auto ticket = std::make_shared<PersistTicket>();
  try {
    std::unique_lock lock(mu_);
    if (stopping_) return absl::UnavailableError("kspan is shutting down");
    Entry e;
    e.spans = batch->spans.size();
    e.bytes = BatchBytes(*batch);
    e.batch = std::move(batch);
    e.ticket = ticket;
    // Waiting for the writer, the batch counts against the memory bounds
    // like any other; only cached copies of persisted batches make room for
    // it (nothing already accepted is dropped for it).
    if (!FreeCachedLocked(e)) {
      persist_refused_full_.Add(e.spans);
      return absl::ResourceExhaustedError("the destination's memory queue is full");
    }
    const std::size_t n = e.spans;
    ++queued_batches_;
    queued_spans_ += n;
    AddLocked(staging_, std::move(e));
    cv_.notify_all();
    if (!done_cv_.wait_for(lock, options_.persist_timeout, [&] { return ticket->done; })) {
      // The writer still holds it and may commit it later: a possible
      // duplicate when the client sends the request again.
      persist_refused_error_.Add(n);
      return absl::UnavailableError("the disk queue did not commit in time");
    }
    if (!ticket->status.ok()) {
      (absl::IsResourceExhausted(ticket->status) ? persist_refused_full_ : persist_refused_error_)
          .Add(n);
    }
    return ticket->status;
  } catch (...) {
    return absl::ResourceExhaustedError("out of memory");
  }
}

void DestinationQueue::CountDropped(std::string_view reason, std::uint64_t spans) {
  Drop(reason, spans);
}

void DestinationQueue::RunWriter() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return writer_stop_ || !staging_.empty(); });
    if (staging_.empty()) break;  // stop requested and nothing left
    std::vector<Entry> items(std::make_move_iterator(staging_.begin()),
                             std::make_move_iterator(staging_.end()));
    staging_.clear();
    writing_ = items.size();
    lock.unlock();

    // Serialize outside the lock; one transaction for everything waiting
    // (group commit: one fsync for many batches under fsync: full).
    std::vector<DiskQueue::Item> payloads;
    payloads.reserve(items.size());
    for (const auto& e : items) payloads.push_back({Serialize(*e.batch), e.spans});
    auto ids = disk_->Append(payloads);

    lock.lock();
    writing_ = 0;
    if (ids.ok()) {
      for (std::size_t i = 0; i < items.size(); ++i) {
        Entry& e = items[i];
        if (e.ticket) {
          e.ticket->done = true;
          e.ticket.reset();
        }
        e.disk_id = (*ids)[i];
        e.disk_bytes = payloads[i].payload.size();
        persisted_spans_.Add(e.spans);
        // Persisted: the memory copy is only a cache, dropped when memory is
        // tight and read back from disk when its turn comes.
        ReleaseMemoryLocked(e);
        if (!FitsLocked(e.spans, e.bytes)) e.batch.reset();
        AddLocked(ready_, std::move(e));
      }
      if (!disk_writable_) {
        disk_writable_ = true;
        spdlog::info("export to '{}': disk queue writable again", options_.name);
      }
    } else {
      const bool full = ids.status().code() == absl::StatusCode::kResourceExhausted;
      (full ? disk_rejected_full_ : disk_rejected_error_).Add(items.size());
      if (disk_writable_) {
        spdlog::error(
            "export to '{}': disk queue refused {} batches, keeping them (and new ones for {}) in "
            "memory only: {}",
            options_.name, items.size(), FormatMs(options_.disk_retry_interval),
            std::string(ids.status().message()));
      }
      disk_writable_ = false;
      disk_retry_at_ = Clock::now() + options_.disk_retry_interval;
      for (auto& e : items) {
        if (e.ticket) {
          // A Persist() caller: the spans were not accepted here; it refuses
          // them (its client retries), so they are not kept.
          e.ticket->done = true;
          e.ticket->status = ids.status();
          e.ticket.reset();
          ReleaseMemoryLocked(e);
          queued_spans_ -= e.spans;
          --queued_batches_;
          continue;
        }
        ready_.push_back(std::move(e));  // still counted in memory
      }
    }
    cv_.notify_all();
    done_cv_.notify_all();
  }
}

bool DestinationQueue::WaitPersisted(std::chrono::milliseconds timeout) const {
  if (!disk_) return true;
  std::unique_lock lock(mu_);
  return done_cv_.wait_for(lock, timeout, [&] { return staging_.empty() && writing_ == 0; });
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
  if (joined_) return;
  joined_ = true;
  bool cancel = false;
  {
    std::unique_lock lock(mu_);
    if (!stopping_) {
      stopping_ = true;
      deadline_ = Clock::now();
    }
    cv_.notify_all();
    if (deadline_ == Clock::time_point::max()) {
      done_cv_.wait(lock, [&] { return workers_running_ == 0; });
    } else {
      done_cv_.wait_until(lock, deadline_, [&] { return workers_running_ == 0; });
    }
    if (workers_running_ != 0) {
      hard_stop_ = true;
      cancel = true;
    }
  }
  cv_.notify_all();
  // Aborts sends that started before the deadline with a longer timeout.
  if (cancel) {
    for (auto& s : senders_) {
      if (s) s->Cancel();
    }
  }
  for (auto& w : workers_) w.join();
  {
    std::lock_guard lock(mu_);
    writer_stop_ = true;
  }
  cv_.notify_all();
  // The writer persists what is still staged before it exits: with a disk
  // queue, shutdown keeps the rest on disk.
  if (writer_.joinable()) writer_.join();
  std::uint64_t kept = 0;
  {
    std::lock_guard lock(mu_);
    for (auto* q : {&ready_, &staging_}) {
      for (auto& e : *q) {
        if (e.disk_id != 0) {
          kept += e.spans;
        } else {
          Drop(drop_reason::kShutdown, e.spans);
        }
        ReleaseMemoryLocked(e);
      }
      q->clear();
    }
    queued_spans_ = 0;
    queued_batches_ = 0;
  }
  if (kept > 0) {
    metrics_.KeptOnDisk(kept);
    spdlog::info("export to '{}': {} spans kept in the disk queue for the next start",
                 options_.name, kept);
  }
  drop_log_.Flush();
  rejected_log_.Flush();
  const auto a = ReadAccounting(registry_, options_.name);
  spdlog::info("export to '{}' stopped: {} spans exported, {} dropped, {} dead-lettered",
               options_.name, a.exported, a.dropped_total(), a.dead_lettered);
}

std::size_t DestinationQueue::queued_batches() const {
  std::lock_guard lock(mu_);
  return queued_batches_;
}

std::size_t DestinationQueue::queued_spans() const {
  std::lock_guard lock(mu_);
  return queued_spans_;
}

std::size_t DestinationQueue::queued_bytes() const {
  std::lock_guard lock(mu_);
  return mem_bytes_;
}

DestinationQueue::CircuitState DestinationQueue::circuit_state() const {
  std::lock_guard lock(mu_);
  return circuit_;
}

bool DestinationQueue::HardStoppedLocked(Clock::time_point now) const {
  return hard_stop_ || (stopping_ && now >= deadline_);
}

void DestinationQueue::Drop(std::string_view reason, std::uint64_t spans, std::string_view detail) {
  metrics_.Dropped(reason, spans);
  drop_log_.Record(reason, spans, detail);
}

void DestinationQueue::RunWorker(std::size_t index) {
  for (;;) {
    // One export: the next entry, and with a disk queue the rows after it
    // that are on disk too, up to options_.coalesce_max_spans/_bytes. After an outage or a
    // restart the queue holds one row per accepted request (often a few
    // spans each): sent one by one, the drain is as slow as the
    // destination's round trip; coalesced, it moves at export-batch size.
    std::vector<Entry> rows;
    std::size_t spans = 0;
    std::size_t bytes = 0;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] {
        return HardStoppedLocked(Clock::now()) || !ready_.empty() ||
               (stopping_ && staging_.empty() && writing_ == 0);
      });
      if (HardStoppedLocked(Clock::now()) || ready_.empty()) break;  // stopped or drained
      do {
        spans += ready_.front().spans;
        bytes += ready_.front().disk_bytes;
        rows.push_back(std::move(ready_.front()));
        ready_.pop_front();
        ReleaseMemoryLocked(rows.back());
      } while (rows.front().disk_id != 0 && !ready_.empty() && ready_.front().disk_id != 0 &&
               spans + ready_.front().spans <= options_.coalesce_max_spans &&
               bytes + ready_.front().disk_bytes <= options_.coalesce_max_bytes);
      ++in_flight_;
    }
    // Each row read back from disk unless its batch is still in memory; a
    // row that no longer parses is counted and removed.
    std::vector<bool> readable(rows.size(), true);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      Entry& r = rows[i];
      if (r.batch) continue;
      auto payload = disk_->Load(r.disk_id);
      std::optional<std::vector<Span>> decoded;
      if (payload.ok()) decoded = DecodeStoredBatch(*payload);
      if (decoded) {
        auto b = std::make_shared<SpanBatch>();
        b->spans = *std::move(decoded);
        r.batch = std::move(b);
      } else {
        readable[i] = false;
        Drop(drop_reason::kDiskCorrupt, r.spans,
             payload.ok() ? std::string("unparseable row") : std::string(payload.status().message()));
      }
    }
    Entry e;  // what is sent: one row as it is, or the rows together
    std::size_t readable_rows = 0;
    for (std::size_t i = 0; i < rows.size(); ++i) readable_rows += readable[i] ? 1 : 0;
    if (rows.size() == 1) {
      e = rows.front();
    } else if (readable_rows > 0) {
      auto b = std::make_shared<SpanBatch>();
      for (std::size_t i = 0; i < rows.size(); ++i) {
        if (!readable[i]) continue;
        b->spans.insert(b->spans.end(), rows[i].batch->spans.begin(), rows[i].batch->spans.end());
        e.spans += rows[i].spans;
        e.bytes += rows[i].bytes;
        e.attempts_before = std::max(e.attempts_before, rows[i].attempts_before);
      }
      e.batch = std::move(b);
      e.disk_id = rows.front().disk_id;  // on disk: kept, not dropped, at shutdown
    }
    Fate fate = Fate::kDone;
    if (e.batch && readable_rows > 0) {
      if (e.attempts_before > 0) resent_batches_.Add();
      for (std::size_t i = 0; i < rows.size(); ++i) {
        if (readable[i] && rows[i].disk_id != 0) (void)disk_->MarkAttempted(rows[i].disk_id);
      }
      fate = Deliver(index, e);
    }
    // Sent (or given up on) rows leave the disk; so do unreadable ones,
    // already counted as dropped, whatever happened to the others.
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const Entry& r = rows[i];
      if (r.disk_id == 0 || (fate == Fate::kKeep && readable[i])) continue;
      if (auto st = disk_->Remove(r.disk_id, r.disk_bytes); !st.ok()) {
        spdlog::warn("export to '{}': cannot remove a sent batch from the disk queue (it will be "
                     "sent again after a restart): {}",
                     options_.name, std::string(st.message()));
      }
    }
    {
      std::lock_guard lock(mu_);
      --in_flight_;
      for (std::size_t i = rows.size(); i-- > 0;) {
        if (fate == Fate::kKeep && readable[i]) {
          // Undelivered at shutdown but safe on disk: back to the queue, in
          // their order, so Join() counts them as kept.
          rows[i].batch.reset();
          ready_.push_front(std::move(rows[i]));
        } else {
          queued_spans_ -= rows[i].spans;
          --queued_batches_;
        }
      }
    }
  }
  {
    std::lock_guard lock(mu_);
    --workers_running_;
  }
  done_cv_.notify_all();
  cv_.notify_all();
}

DestinationQueue::Fate DestinationQueue::ShutdownFate(const Entry& entry) {
  if (entry.disk_id != 0) return Fate::kKeep;
  Drop(drop_reason::kShutdown, entry.spans);
  return Fate::kDone;
}

void DestinationQueue::GiveUp(const Entry& entry, std::string_view reason,
                              const ExportResult& result) {
  const std::string detail = result.code + ": " + result.message;
  if (dlq_) {
    DeadLetter meta;
    meta.destination = options_.name;
    meta.reason = std::string(reason);
    meta.code = result.code;
    meta.message = result.message.substr(0, 1024);
    meta.spans = entry.spans;
    auto evicted = dlq_->Put(meta, Serialize(*entry.batch));
    if (evicted.ok()) {
      metrics_.DeadLettered(reason, entry.spans);
      dlq_evicted_.Add(*evicted);
      const auto now = Clock::now();
      std::lock_guard lock(mu_);
      if (now - last_dead_letter_log_ >= options_.drop_log_interval) {
        last_dead_letter_log_ = now;
        spdlog::warn("export to '{}': {} spans moved to the dead-letter store ({}; {}); see "
                     "`kspan dlq list`",
                     options_.name, entry.spans, reason, detail);
      }
      return;
    }
    spdlog::error("export to '{}': dead-letter store refused a batch: {}", options_.name,
                  std::string(evicted.status().message()));
  }
  Drop(reason, entry.spans, detail);
}

void DestinationQueue::SetCircuitLocked(CircuitState s) {
  if (circuit_ == s) return;
  circuit_ = s;
  static constexpr const char* kNames[] = {"closed", "open", "half_open"};
  registry_
      .GetCounter(metric::kCircuitTransitions, "Circuit breaker state changes, by new state.",
                  {{"destination", options_.name}, {"to", kNames[static_cast<int>(s)]}})
      .Add();
}

bool DestinationQueue::AwaitBreaker(std::size_t index) {
  std::unique_lock lock(mu_);
  for (;;) {
    const auto now = Clock::now();
    if (HardStoppedLocked(now)) return false;
    if (!options_.circuit_breaker.enabled || circuit_ == CircuitState::kClosed) return true;
    if (circuit_ == CircuitState::kOpen && now >= open_until_ && !probe_in_flight_) {
      // This worker probes with an empty export request: cheap for the
      // backend, and no full batch is sent at a destination that is down.
      probe_in_flight_ = true;
      SetCircuitLocked(CircuitState::kHalfOpen);
      const auto deadline = deadline_;
      lock.unlock();
      probes_.Add();
      static const SpanBatch kProbe;
      const ExportResult r = senders_[index]->Send(kProbe, deadline);
      NoteResponse(r);
      lock.lock();
      probe_in_flight_ = false;
      if (r.outcome == ExportResult::Outcome::kRetryable) {
        SetCircuitLocked(CircuitState::kOpen);
        open_until_ = Clock::now() + std::max<std::chrono::milliseconds>(
                                         options_.circuit_breaker.open_duration,
                                         ClampServerDelay(r.retry_after.value_or(
                                             std::chrono::milliseconds(0))));
        spdlog::debug("export to '{}': probe failed ({}), breaker stays open", options_.name,
                      r.code);
      } else {
        consecutive_failures_ = 0;
        SetCircuitLocked(CircuitState::kClosed);
        spdlog::info("export to '{}': probe answered, circuit breaker closed", options_.name);
      }
      cv_.notify_all();
      continue;
    }
    const auto wake = circuit_ == CircuitState::kOpen
                          ? std::min(open_until_, deadline_)
                          : std::min(now + std::chrono::milliseconds(50), deadline_);
    cv_.wait_until(lock, wake);
  }
}

void DestinationQueue::NoteResponse(const ExportResult& result) {
  if (result.response_issue == ExportResult::ResponseIssue::kNone) return;
  const bool too_large = result.response_issue == ExportResult::ResponseIssue::kTooLarge;
  (too_large ? bad_response_too_large_ : bad_response_unreadable_).Add();
  const auto now = Clock::now();
  {
    std::lock_guard lock(mu_);
    if (bad_response_logged_ && now - last_bad_response_log_ < options_.drop_log_interval) return;
    bad_response_logged_ = true;
    last_bad_response_log_ = now;
  }
  spdlog::warn("export to '{}': the destination answered {} with a body that {}; the answer's "
               "status stands (kspan_exporter_bad_responses_total counts these)",
               options_.name, result.code,
               too_large ? "is larger than kspan reads" : "is not the message the protocol says");
}

void DestinationQueue::RecordAttempt(const ExportResult& result) {
  if (!options_.circuit_breaker.enabled) return;
  std::lock_guard lock(mu_);
  if (result.outcome != ExportResult::Outcome::kRetryable) {
    consecutive_failures_ = 0;
    return;
  }
  ++consecutive_failures_;
  if (circuit_ == CircuitState::kClosed &&
      consecutive_failures_ >= std::max(options_.circuit_breaker.failure_threshold, 1)) {
    SetCircuitLocked(CircuitState::kOpen);
    open_until_ = Clock::now() + std::max<std::chrono::milliseconds>(
                                     options_.circuit_breaker.open_duration,
                                     ClampServerDelay(result.retry_after.value_or(
                                         std::chrono::milliseconds(0))));
    spdlog::warn("export to '{}': {} consecutive failures ({}), circuit breaker open: probing "
                 "every {} before sending batches again",
                 options_.name, consecutive_failures_, result.code,
                 FormatMs(options_.circuit_breaker.open_duration));
  }
}

DestinationQueue::Fate DestinationQueue::Deliver(std::size_t index, Entry& entry) {
  const SpanBatch& batch = *entry.batch;
  const std::uint64_t n = batch.spans.size();
  const auto first_attempt = Clock::now();
  Backoff& backoff = backoffs_[index];
  backoff.Reset();
  for (;;) {
    if (!AwaitBreaker(index)) return ShutdownFate(entry);
    Clock::time_point deadline;
    {
      std::lock_guard lock(mu_);
      if (HardStoppedLocked(Clock::now())) return ShutdownFate(entry);
      deadline = deadline_;
    }

    const auto t0 = Clock::now();
    ExportResult result = senders_[index]->Send(batch, deadline);
    metrics_.ExportDuration(Clock::now() - t0);
    RecordAttempt(result);
    NoteResponse(result);

    switch (result.outcome) {
      case ExportResult::Outcome::kSuccess: {
        const auto rejected =
            static_cast<std::uint64_t>(std::clamp<std::int64_t>(result.rejected_spans, 0,
                                                                static_cast<std::int64_t>(n)));
        metrics_.BatchAttempt(rejected > 0 ? batch_outcome::kPartialSuccess
                                           : batch_outcome::kSuccess);
        metrics_.Exported(n - rejected);
        if (rejected > 0) {
          // Partial success is never retried: the backend has decided.
          metrics_.Dropped(drop_reason::kRejectedByBackend, rejected);
          rejected_log_.Record(drop_reason::kRejectedByBackend, rejected, result.message);
        } else if (!result.message.empty()) {
          // The specification lets a server warn through partial_success.
          spdlog::debug("export to '{}': server message: {}", options_.name, result.message);
        }
        spdlog::debug("export to '{}': {} spans sent ({} rejected)", options_.name, n, rejected);
        std::lock_guard lock(mu_);
        if (failing_) {
          failing_ = false;
          spdlog::info("export to '{}' recovered", options_.name);
        }
        return Fate::kDone;
      }
      case ExportResult::Outcome::kPermanent:
        metrics_.BatchAttempt(batch_outcome::kPermanentError);
        GiveUp(entry, drop_reason::kPermanentError, result);
        return Fate::kDone;
      case ExportResult::Outcome::kRetryable:
        break;
    }

    metrics_.BatchAttempt(batch_outcome::kRetryableError);
    // The server's hint wins over the backoff, also beyond max_backoff: the
    // batch waits rather than being dropped. Clamped again here, whatever
    // sender it came from: an unbounded delay would overflow `now + delay`.
    const auto delay =
        result.retry_after ? ClampServerDelay(*result.retry_after) : backoff.Next();
    const auto now = Clock::now();
    enum { kRetry, kShutdown, kExhausted } verdict = kRetry;
    {
      std::lock_guard lock(mu_);
      if (HardStoppedLocked(now) || (stopping_ && now + delay >= deadline_)) {
        verdict = kShutdown;  // no attempt fits before the deadline
      } else if (options_.retry.max_elapsed.count() > 0 &&
                 now + delay - first_attempt > options_.retry.max_elapsed) {
        verdict = kExhausted;
      } else if (options_.retry.max_elapsed.count() == 0 && MemoryFullLocked()) {
        // "Keep trying while the queue has room": newer data now wins.
        verdict = kExhausted;
      }
    }
    if (verdict == kShutdown) return ShutdownFate(entry);
    if (verdict == kExhausted) {
      GiveUp(entry, drop_reason::kRetryExhausted, result);
      return Fate::kDone;
    }
    metrics_.Retry();
    spdlog::debug("export to '{}' failed ({}: {}); retry {} in {}", options_.name, result.code,
                  result.message, backoff.attempts(), FormatMs(delay));
    std::unique_lock lock(mu_);
    // Warn on the transition to failing only: an outage is one line, not
    // one per batch.
    if (!failing_) {
      failing_ = true;
      spdlog::warn("export to '{}' failing ({}: {}); retrying with backoff, spans keep queueing",
                   options_.name, result.code, result.message);
    }
    const auto wake = now + delay;
    while (!HardStoppedLocked(Clock::now()) && Clock::now() < wake) {
      cv_.wait_until(lock, std::min(wake, deadline_));
    }
  }
}

}  // namespace kspan
