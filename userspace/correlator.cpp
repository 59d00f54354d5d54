#include "userspace/correlator.h"

#include <algorithm>
#include <cstring>
#include <string_view>
#include <variant>

#include "userspace/tcp_spans.h"

namespace kspan {
namespace {

using namespace std::chrono_literals;

// How far back (in index entries) a containment search looks from the span's
// start. Bounds the cost of one placement on a process with many spans.
constexpr int kMaxScan = 512;
// Slack between timestamps of the same moment taken by different kernel
// programs (a syscall span and the HTTP span built from the same syscall).
constexpr std::uint64_t kKernelSlackNs = 100'000;
// Pair candidates kept per process for the clock offset.
constexpr std::size_t kMaxPairCandidates = 4096;
// Offset bounds older than this are forgotten (clocks drift).
constexpr auto kOffsetBoundsLife = 60s;
// Senders remembered at most (live ones are few; this bounds those whose
// exit was not seen).
constexpr std::size_t kMaxSenders = 65536;

std::optional<std::int64_t> IntAttribute(const Attributes& attrs, std::string_view key) {
  const AttributeValue* v = FindAttribute(attrs, key);
  if (v == nullptr) return std::nullopt;
  if (const auto* i = std::get_if<std::int64_t>(v)) return *i;
  if (const auto* s = std::get_if<std::string>(v)) {
    // Some SDKs send ids as strings.
    std::int64_t out = 0;
    for (char c : *s) {
      if (c < '0' || c > '9') return std::nullopt;
      out = out * 10 + (c - '0');
    }
    return s->empty() ? std::nullopt : std::optional<std::int64_t>(out);
  }
  return std::nullopt;
}

std::string StringAttribute(const Attributes& attrs, std::string_view key) {
  const AttributeValue* v = FindAttribute(attrs, key);
  if (v == nullptr) return {};
  if (const auto* s = std::get_if<std::string>(v)) return *s;
  if (const auto* i = std::get_if<std::int64_t>(v)) return std::to_string(*i);
  return {};
}

// The host pid of a kernel span: its process.pid attribute or its resource's
// (kspan writes both from the kernel's view; app spans are indexed by the
// pid their sender's identity gives, never by this).
std::optional<std::uint32_t> PidOf(const Span& s) {
  auto pid = IntAttribute(s.attributes, "process.pid");
  if (!pid && s.resource) pid = IntAttribute(s.resource->attributes, "process.pid");
  if (!pid || *pid <= 0 || *pid > UINT32_MAX) return std::nullopt;
  return static_cast<std::uint32_t>(*pid);
}

std::int64_t TidOf(const Span& s) { return IntAttribute(s.attributes, "thread.id").value_or(0); }

bool IsSyscall(const Span& s) { return FindAttribute(s.attributes, "kspan.syscall.name") != nullptr; }

bool IsHttp(const Span& s) { return FindAttribute(s.attributes, "http.request.method") != nullptr; }

bool IsConnect(const Span& s) { return s.name == kTcpConnectSpanName; }

// The connection a kernel span belongs to, or "" when it has none: the peer
// and, where the span says it, the local port (a client's connections to
// one server differ only there).
std::string ConnectionOf(const Span& s) {
  std::string peer = StringAttribute(s.attributes, "network.peer.address");
  std::string port = StringAttribute(s.attributes, "network.peer.port");
  if (peer.empty() || port.empty()) return {};
  return peer + "|" + port + "|" + StringAttribute(s.attributes, "network.local.port");
}

std::string PairKey(const TraceId& trace, const SpanId& span, char side) {
  std::string key(reinterpret_cast<const char*>(trace.data()), trace.size());
  key.append(reinterpret_cast<const char*>(span.data()), span.size());
  key.push_back(side);
  return key;
}

std::uint64_t Shift(std::uint64_t t, std::int64_t d) {
  return static_cast<std::uint64_t>(static_cast<std::int64_t>(t) + d);
}

}  // namespace

Correlator::Correlator(CorrelatorOptions options, MetricsRegistry& metrics, Consumer downstream,
                       bool start_thread, SteadyClock now)
    : options_(options),
      downstream_(std::move(downstream)),
      now_(std::move(now)),
      kernel_in_(metrics.GetCounter("kspan_correlator_kernel_spans_total",
                                    "Kernel spans that entered the join window.")),
      app_indexed_(metrics.GetCounter("kspan_correlator_app_spans_indexed_total",
                                      "App spans indexed for joining kernel spans.")),
      placed_by_context_(metrics.GetCounter(
          "kspan_correlator_placed_total",
          "Kernel spans placed in a trace, by what placed them.", {{"by", "trace_context"}})),
      placed_by_connection_(metrics.GetCounter(
          "kspan_correlator_placed_total",
          "Kernel spans placed in a trace, by what placed them.", {{"by", "connection"}})),
      placed_in_app_(metrics.GetCounter("kspan_correlator_placed_total",
                                        "Kernel spans placed in a trace, by what placed them.",
                                        {{"by", "app_span"}})),
      placed_in_kernel_http_(metrics.GetCounter(
          "kspan_correlator_placed_total",
          "Kernel spans placed in a trace, by what placed them.", {{"by", "kernel_http_span"}})),
      unmatched_exported_(metrics.GetCounter(
          "kspan_correlator_unmatched_total",
          "Kernel spans no span contained: exported as their own trace or dropped.",
          {{"action", "exported"}})),
      unmatched_dropped_(metrics.GetCounter(
          "kspan_correlator_unmatched_total",
          "Kernel spans no span contained: exported as their own trace or dropped.",
          {{"action", "dropped"}})),
      window_full_(metrics.GetCounter(
          "kspan_correlator_window_full_total",
          "Kernel spans that left the join window early because it was full.")),
      index_evicted_(metrics.GetCounter(
          "kspan_correlator_index_evicted_total",
          "Indexed spans forgotten before their retention ended (index full).")),
      max_offset_seconds_(metrics.GetGauge(
          "kspan_correlator_clock_offset_max_seconds",
          "Largest absolute clock offset (application minus kernel) observed over processes.")) {
  static constexpr const char* kUnplacedNames[kUnplacedReasons] = {
      "not_a_sender", "no_app_spans", "not_contained", "window_full", "telemetry"};
  for (int i = 0; i < kUnplacedReasons; ++i) {
    unplaced_[i] = &metrics.GetCounter(
        "kspan_correlator_unplaced_spans_total",
        "Kernel spans that left the join window with no parent, by why: their process neither "
        "sends spans nor is enrolled (not_a_sender, they did not wait), no app span of their "
        "process arrived (no_app_spans), none contained them (not_contained), the window was "
        "full (window_full), or they are an app's telemetry to kspan (telemetry).",
        {{"reason", kUnplacedNames[i]}});
  }
  metrics.AddCallbackGauge(
      "kspan_correlator_pending_spans", "Kernel spans waiting in the join window.", {},
      [this] { return static_cast<double>(pending()); }, this);
  if (start_thread) thread_ = std::thread([this] { Run(); });
  metrics_ = &metrics;
}

Correlator::~Correlator() {
  Flush();
  if (metrics_ != nullptr) metrics_->RemoveCallbacks(this);
}

void Correlator::Run() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, 100ms);
    if (stopping_) break;
    std::vector<Span> out;
    TakeDue(now_(), false, out);
    lock.unlock();
    for (auto& s : out) downstream_(std::move(s));
    lock.lock();
  }
}

void Correlator::OnKernelSpan(Span&& span) {
  kernel_in_.Add();
  std::vector<Span> out;
  {
    std::lock_guard lock(mu_);
    auto p = std::make_shared<Pending>();
    p->span = std::move(span);
    p->due = now_() + options_.join_window;
    p->pid = PidOf(p->span).value_or(0);
    p->trace_id = p->span.trace_id;
    p->span_id = p->span.span_id;
    p->flags = p->span.flags;
    if (IsHttp(p->span)) IndexKernelHttp(p);
    if (flushed_ || !MayJoinLater(p->span)) {
      // Shutting down: placed against what is known now.
      Leave(p, out);
    } else {
      p->waited = true;
      if (auto it = senders_.find(p->pid); it != senders_.end()) {
        ++it->second.waiting;
        p->counted = true;
      }
      pending_.push_back(std::move(p));
      Evict(out);
    }
  }
  for (auto& s : out) downstream_(std::move(s));
}

// Whether waiting can change where `s` goes. App spans come only from
// processes that send them (or are expected to), and a socket syscall can
// still join the HTTP span of its connection (which ends after it);
// everything else is placed now, so hosts without instrumented apps see
// kernel spans without delay.
bool Correlator::MayJoinLater(const Span& s) const {
  if (IsValid(s.parent_span_id)) return false;  // placed by its trace context
  auto pid = PidOf(s);
  if (!pid) return false;
  if (IsSender(*pid)) return true;
  if (auto it = processes_.find(*pid); it != processes_.end() && !it->second.app.empty()) {
    return true;
  }
  return IsSyscall(s) && !ConnectionOf(s).empty();
}

bool Correlator::IsSender(std::uint32_t pid) const {
  auto it = senders_.find(pid);
  return it != senders_.end() && (it->second.expected || it->second.sent);
}

void Correlator::ExpectSpansFrom(std::uint32_t pid) {
  if (pid == 0) return;
  std::lock_guard lock(mu_);
  Sender& s = senders_[pid];
  s.expected = true;
  s.exited_at.reset();  // a new image of a reused pid
}

void Correlator::StopExpecting(std::uint32_t pid) {
  std::lock_guard lock(mu_);
  auto it = senders_.find(pid);
  if (it == senders_.end()) return;
  it->second.expected = false;
  if (!it->second.sent && it->second.waiting == 0) senders_.erase(it);
}

void Correlator::OnProcessExit(std::uint32_t pid) {
  std::lock_guard lock(mu_);
  auto it = senders_.find(pid);
  if (it == senders_.end()) return;
  if (!it->second.expected && !it->second.sent) return;
  const auto now = now_();
  it->second.exited_at = now;
  exited_.emplace_back(now, pid);
}

Correlator::Container Correlator::ContainerOf(const Span& s,
                                              std::chrono::steady_clock::time_point now) {
  Container c;
  c.start = s.start_unix_nano;
  c.end = s.end_unix_nano;
  c.trace_id = s.trace_id;
  c.span_id = s.span_id;
  c.parent_span_id = s.parent_span_id;
  c.flags = s.flags;
  c.tid = TidOf(s);
  c.kind = s.kind;
  c.indexed_at = now;
  return c;
}

void Correlator::IndexAppSpans(const std::vector<Span>& spans, const HostPidOf& host_pid) {
  std::lock_guard lock(mu_);
  const auto now = now_();
  for (const Span& s : spans) {
    const auto pid = host_pid(s);
    if (!pid || !IsValid(s.trace_id) || !IsValid(s.span_id)) continue;
    ProcessIndex& idx = processes_[*pid];
    senders_[*pid].sent = true;
    Container c = ContainerOf(s, now);
    c.app = true;
    if (s.kind == SpanKind::kServer) {
      // The client's port, under the names HTTP instrumentations use.
      for (const char* key : {"network.peer.port", "client.port", "net.peer.port"}) {
        if (auto port = IntAttribute(s.attributes, key)) {
          c.peer_port = *port;
          break;
        }
      }
    }
    // A kernel HTTP span of the same request bounds the clock offset.
    if (s.kind == SpanKind::kServer && IsValid(s.parent_span_id)) {
      LearnFromPair(idx, c, PairKey(s.trace_id, s.parent_span_id, 'S'));
    } else if (s.kind == SpanKind::kClient) {
      LearnFromPair(idx, c, PairKey(s.trace_id, s.span_id, 'C'));
    }
    idx.app.emplace(c.start, std::move(c));
    index_order_.push_back({now, *pid, true, s.start_unix_nano, s.span_id, {}, false});
    ++indexed_;
    app_indexed_.Add();
  }
  Forget(now);
}

void Correlator::IndexKernelHttp(const std::shared_ptr<Pending>& p) {
  const Span& s = p->span;
  auto pid = PidOf(s);
  if (!pid) return;
  const auto now = now_();
  ProcessIndex& idx = processes_[*pid];
  Container c = ContainerOf(s, now);
  c.conn = ConnectionOf(s);
  c.pending = p;
  if (IsValid(s.parent_span_id)) {
    if (s.kind == SpanKind::kServer) {
      LearnFromPair(idx, c, PairKey(s.trace_id, s.parent_span_id, 'S'));
    } else if (s.kind == SpanKind::kClient) {
      LearnFromPair(idx, c, PairKey(s.trace_id, s.parent_span_id, 'C'));
    }
  }
  IndexEntry entry{now, *pid, false, s.start_unix_nano, s.span_id, c.conn, false};
  if (IsValid(s.parent_span_id)) {
    idx.http_ctx.emplace(c.start, c);
    entry.ctx = true;
  }
  if (!c.conn.empty()) idx.http_by_conn[c.conn].emplace(c.start, std::move(c));
  index_order_.push_back(std::move(entry));
  ++indexed_;
}

void Correlator::LearnFromPair(ProcessIndex& idx, const Container& c, const std::string& key) {
  auto it = idx.pairs.find(key);
  if (it == idx.pairs.end()) {
    if (idx.pairs.size() >= kMaxPairCandidates) idx.pairs.clear();
    idx.pairs.emplace(key, c);
    return;
  }
  const Container& other = it->second;
  if (other.app != c.app) {
    const Container& app = c.app ? c : other;
    const Container& kernel = c.app ? other : c;
    LearnOffset(idx, app, kernel);
  }
  idx.pairs.erase(it);
}

// Bounds on d = app clock - kernel clock from one request seen both ways.
//   server: the app span starts after the request was read and before the
//           response was written: ks <= as - d <= ke.
//   client: the app span starts before the request is written and ends after
//           the response was read: as - d <= ks and ke <= ae - d.
void Correlator::LearnOffset(ProcessIndex& idx, const Container& app, const Container& kernel) {
  const auto now = now_();
  if (now - idx.bounds_since > kOffsetBoundsLife) {
    idx.lo = INT64_MIN;
    idx.hi = INT64_MAX;
    idx.bounds_since = now;
  }
  const auto as = static_cast<std::int64_t>(app.start);
  const auto ae = static_cast<std::int64_t>(app.end);
  const auto ks = static_cast<std::int64_t>(kernel.start);
  const auto ke = static_cast<std::int64_t>(kernel.end);
  // A coarse app clock stamps up to `tolerance` early: the upper bounds,
  // which rest on app times being late enough, are widened by it.
  const auto tol = static_cast<std::int64_t>(options_.clock_tolerance.count());
  if (app.kind == SpanKind::kServer) {
    idx.hi = std::min(idx.hi, as - ks + tol);
    idx.lo = std::max(idx.lo, as - ke);
  } else {
    idx.lo = std::max(idx.lo, as - ks);
    idx.hi = std::min(idx.hi, ae - ke + tol);
  }
  const double off = static_cast<double>(std::abs(OffsetFor(idx))) / 1e9;
  if (off > max_offset_seconds_.Value()) max_offset_seconds_.Set(off);
}

std::int64_t Correlator::OffsetFor(const ProcessIndex& idx) const {
  if (idx.lo == INT64_MIN && idx.hi == INT64_MAX) return 0;
  if (idx.lo == INT64_MIN) return std::min<std::int64_t>(0, idx.hi);
  if (idx.hi == INT64_MAX) return std::max<std::int64_t>(0, idx.lo);
  if (idx.lo > idx.hi) return idx.lo / 2 + idx.hi / 2;  // inconsistent: the middle
  return std::clamp<std::int64_t>(0, idx.lo, idx.hi);
}

std::optional<std::int64_t> Correlator::ClockOffsetNs(std::uint32_t pid) const {
  std::lock_guard lock(mu_);
  auto it = processes_.find(pid);
  if (it == processes_.end()) return std::nullopt;
  if (it->second.lo == INT64_MIN && it->second.hi == INT64_MAX) return std::nullopt;
  return OffsetFor(it->second);
}

const Correlator::Container* Correlator::FindContainer(ProcessIndex& idx, const Span& span,
                                                       std::int64_t offset, bool by_connection) {
  const std::uint64_t ks = span.start_unix_nano;
  const std::uint64_t ke = span.end_unix_nano;
  const std::int64_t tid = TidOf(span);
  const Container* best = nullptr;
  bool best_strict = false;
  std::uint64_t best_start = 0;  // kernel axis
  std::uint64_t best_end = 0;
  auto consider = [&](const Container& c, std::uint64_t s, std::uint64_t e, bool strict) {
    if (best != nullptr) {
      if (best_strict && !strict) return;
      if (best_strict == strict &&
          (s < best_start || (s == best_start && e >= best_end)))
        return;
    }
    best = &c;
    best_strict = strict;
    best_start = s;
    best_end = e;
  };

  // Kernel HTTP spans are on the kernel's own axis; their ends are stamped by
  // other programs than the syscall's own, a few ns apart.
  // By connection: any thread; otherwise only HTTP spans placed by trace
  // context, of the same thread where known.
  // The slack only for a syscall of the connection (the same moments stamped
  // by two programs); other spans must lie inside.
  const std::uint64_t slack = by_connection ? kKernelSlackNs : 0;
  auto scan_kernel = [&](const std::multimap<std::uint64_t, Container>& spans, bool same_thread) {
    int scanned = 0;
    auto it = spans.upper_bound(ks + slack);
    while (it != spans.begin() && scanned++ < kMaxScan) {
      --it;
      const Container& c = it->second;
      if (c.end + slack < ke) continue;
      if (same_thread && c.tid != 0 && tid != 0 && c.tid != tid) continue;
      consider(c, c.start, c.end, true);
      return;  // the latest-starting container on this axis
    }
  };
  if (by_connection) {
    auto it = idx.http_by_conn.find(ConnectionOf(span));
    if (it != idx.http_by_conn.end()) scan_kernel(it->second, false);
    return best;
  }
  scan_kernel(idx.http_ctx, true);

  // App spans, on the app's axis: kernel time + offset. A coarse app clock
  // truncates: its spans appear up to `tolerance` early, start and end alike.
  // So the kernel span must start inside the app span, and may end up to
  // `tolerance` after it.
  const auto tol = static_cast<std::uint64_t>(options_.clock_tolerance.count());
  const std::uint64_t as = Shift(ks, offset);
  const std::uint64_t ae = Shift(ke, offset);
  int scanned = 0;
  auto it = idx.app.upper_bound(as);
  while (it != idx.app.begin() && scanned++ < kMaxScan) {
    --it;
    const Container& c = it->second;
    if (as >= c.end || c.end + tol < ae) continue;
    if (c.tid != 0 && tid != 0 && c.tid != tid) continue;
    const bool strict = c.start <= as && ae <= c.end;
    consider(c, Shift(c.start, -offset), Shift(c.end, -offset), strict);
    if (strict) break;  // earlier starts are outer spans
  }
  return best;
}

const Correlator::Container* Correlator::FirstRequestOn(ProcessIndex& idx, const Span& connect) {
  auto it = idx.http_by_conn.find(ConnectionOf(connect));
  if (it == idx.http_by_conn.end()) return nullptr;
  // The first request written after the handshake began, if it carries the
  // trace context the caller sent (its parent is the caller's span).
  for (auto r = it->second.lower_bound(connect.start_unix_nano); r != it->second.end(); ++r) {
    const Container& c = r->second;
    if (c.kind != SpanKind::kClient) continue;
    return IsValid(c.parent_span_id) ? &c : nullptr;
  }
  return nullptr;
}

const Correlator::Container* Correlator::FindSameRequest(ProcessIndex& idx, const Span& span,
                                                         std::int64_t offset) {
  const auto port = IntAttribute(span.attributes, "network.peer.port");
  if (!port) return nullptr;
  const auto tol = static_cast<std::uint64_t>(options_.clock_tolerance.count());
  const std::uint64_t as = Shift(span.start_unix_nano, offset);
  const std::uint64_t ae = Shift(span.end_unix_nano, offset);
  int scanned = 0;
  auto it = idx.app.upper_bound(ae + tol);
  while (it != idx.app.begin() && scanned++ < kMaxScan) {
    --it;
    const Container& c = it->second;
    if (c.kind != SpanKind::kServer || c.peer_port != *port) continue;
    if (c.end + tol < as) continue;  // no overlap
    return &c;
  }
  return nullptr;
}

void Correlator::Place(Pending& p, int depth) {
  if (p.placed) return;
  p.placed = true;
  Span& s = p.span;
  if (IsValid(s.parent_span_id)) {
    placed_by_context_.Add();
    return;
  }
  auto pid = PidOf(s);
  const Container* c = nullptr;
  std::int64_t offset = 0;
  bool by_connection = false;
  bool telemetry = false;
  if (!own_ports_.empty()) {
    if (auto port = IntAttribute(s.attributes, "network.peer.port")) {
      telemetry = own_ports_.contains(*port);
    }
  }
  if (pid && !telemetry) {
    auto it = processes_.find(*pid);
    if (it != processes_.end()) {
      ProcessIndex& idx = it->second;
      offset = OffsetFor(idx);
      if (IsSyscall(s) && !ConnectionOf(s).empty()) {
        c = FindContainer(idx, s, offset, true);
        by_connection = c != nullptr;
      } else if (IsConnect(s) && !ConnectionOf(s).empty()) {
        // Concurrent calls overlap in time; the connection does not: the
        // connect belongs where the first request on it belongs.
        if (const Container* request = FirstRequestOn(idx, s)) {
          if (request->pending && depth == 0) Place(*request->pending, depth + 1);
          s.trace_id = request->pending ? request->pending->trace_id : request->trace_id;
          s.parent_span_id = request->parent_span_id;
          s.flags = (request->pending ? request->pending->flags : request->flags) & 0xffu;
          p.trace_id = s.trace_id;
          p.flags = s.flags;
          if (offset != 0) {  // its parent is an app span: the app's clock
            s.start_unix_nano = Shift(s.start_unix_nano, offset);
            s.end_unix_nano = Shift(s.end_unix_nano, offset);
          }
          placed_by_connection_.Add();
          return;
        }
      } else if (IsHttp(s) && s.kind == SpanKind::kServer) {
        c = FindSameRequest(idx, s, offset);
      }
      if (c == nullptr) c = FindContainer(idx, s, offset, false);
    }
  }
  if (c == nullptr) {
    CountUnplaced(p, telemetry);
    if (options_.export_unmatched) {
      unmatched_exported_.Add();
    } else {
      unmatched_dropped_.Add();
      p.keep = false;
    }
    return;
  }
  TraceId trace = c->trace_id;
  SpanId parent = c->span_id;
  std::uint32_t flags = c->flags;
  if (c->pending) {
    // A kernel HTTP parent: its own place first, so children follow it.
    if (depth == 0) Place(*c->pending, depth + 1);
    trace = c->pending->trace_id;
    parent = c->pending->span_id;
    flags = c->pending->flags;
  }
  s.trace_id = trace;
  s.parent_span_id = parent;
  s.flags = flags & 0xffu;  // W3C trace flags; the parent is another process's span
  p.trace_id = trace;
  p.flags = s.flags;
  if (c->app) {
    if (offset != 0) {
      s.start_unix_nano = Shift(s.start_unix_nano, offset);
      s.end_unix_nano = Shift(s.end_unix_nano, offset);
    }
    placed_in_app_.Add();
  } else if (by_connection) {
    placed_by_connection_.Add();
  } else {
    placed_in_kernel_http_.Add();
  }
}

void Correlator::CountUnplaced(const Pending& p, bool telemetry) {
  Unplaced why = kNotContained;
  if (p.early) {
    why = kWindowFull;
  } else if (telemetry) {
    why = kTelemetry;
  } else {
    auto it = processes_.find(p.pid);
    const bool app_spans = it != processes_.end() && !it->second.app.empty();
    if (!app_spans) why = (p.waited || IsSender(p.pid)) ? kNoAppSpans : kNotASender;
  }
  unplaced_[why]->Add();
}

void Correlator::Forget(std::chrono::steady_clock::time_point now) {
  const auto retention = 2 * options_.join_window + std::chrono::seconds(10);
  while (!index_order_.empty()) {
    const IndexEntry& e = index_order_.front();
    const bool expired = e.at + retention < now;
    const bool over = indexed_ > options_.max_indexed_spans;
    if (!expired && !over) break;
    if (!expired) index_evicted_.Add();
    auto pit = processes_.find(e.pid);
    if (pit != processes_.end()) {
      ProcessIndex& idx = pit->second;
      auto erase = [&e](std::multimap<std::uint64_t, Container>& map) {
        auto [b, end] = map.equal_range(e.start);
        for (auto it = b; it != end; ++it) {
          if (it->second.span_id == e.span_id) {
            map.erase(it);
            return;
          }
        }
      };
      if (e.app) {
        erase(idx.app);
      } else {
        if (e.ctx) erase(idx.http_ctx);
        if (auto cit = idx.http_by_conn.find(e.conn); cit != idx.http_by_conn.end()) {
          erase(cit->second);
          if (cit->second.empty()) idx.http_by_conn.erase(cit);
        }
      }
      auto sender = senders_.find(e.pid);
      const bool waiting = sender != senders_.end() && sender->second.waiting > 0;
      if (idx.app.empty() && idx.http_ctx.empty() && idx.http_by_conn.empty() &&
          idx.bounds_since + kOffsetBoundsLife < now && !waiting) {
        processes_.erase(pit);
      }
    }
    --indexed_;
    index_order_.pop_front();
  }
}

void Correlator::Leave(const std::shared_ptr<Pending>& p, std::vector<Span>& out) {
  Place(*p);
  if (p->counted) {
    p->counted = false;
    auto it = senders_.find(p->pid);
    if (it != senders_.end() && --it->second.waiting == 0 &&
        (it->second.exited_at || (!it->second.expected && !it->second.sent))) {
      senders_.erase(it);  // its last kernel span has left
    }
  }
  if (p->keep) out.push_back(std::move(p->span));
}

void Correlator::Evict(std::vector<Span>& out) {
  while (pending_.size() + held_.size() > options_.max_pending_kernel_spans) {
    window_full_.Add();
    std::shared_ptr<Pending> oldest;
    if (!pending_.empty()) {
      oldest = std::move(pending_.front());
      pending_.pop_front();
    } else {
      oldest = std::move(held_.begin()->second);
      held_.erase(held_.begin());
    }
    oldest->early = true;
    Leave(oldest, out);
  }
}

void Correlator::TakeDue(std::chrono::steady_clock::time_point now, bool all,
                         std::vector<Span>& out) {
  while (!pending_.empty() && (all || pending_.front()->due <= now)) {
    auto p = std::move(pending_.front());
    pending_.pop_front();
    if (!all && p->counted) {
      // A sender that exited: its shutdown export may still be on the way.
      auto it = senders_.find(p->pid);
      if (it != senders_.end() && it->second.exited_at) {
        const auto until = *it->second.exited_at + options_.join_window;
        if (until > now) {
          held_.emplace(until, std::move(p));
          continue;
        }
      }
    }
    Leave(p, out);
  }
  while (!held_.empty() && (all || held_.begin()->first <= now)) {
    auto p = std::move(held_.begin()->second);
    held_.erase(held_.begin());
    Leave(p, out);
  }
  Forget(now);
  while (!exited_.empty() && (all || exited_.front().first + options_.join_window <= now)) {
    auto it = senders_.find(exited_.front().second);
    if (it != senders_.end() && it->second.exited_at == exited_.front().first &&
        it->second.waiting == 0) {
      senders_.erase(it);
    }
    exited_.pop_front();
  }
  if (senders_.size() > kMaxSenders) {
    // Exits not seen (no process family): forget idle senders with nothing
    // indexed.
    std::erase_if(senders_, [this](const auto& kv) {
      return kv.second.waiting == 0 && !processes_.contains(kv.first);
    });
  }
}

void Correlator::Release() {
  std::vector<Span> out;
  {
    std::lock_guard lock(mu_);
    TakeDue(now_(), false, out);
  }
  for (auto& s : out) downstream_(std::move(s));
}

void Correlator::Flush() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::vector<Span> out;
  {
    std::lock_guard lock(mu_);
    flushed_ = true;
    TakeDue(now_(), true, out);
  }
  for (auto& s : out) downstream_(std::move(s));
}

void Correlator::SetOwnPorts(std::set<std::int64_t> ports) {
  std::lock_guard lock(mu_);
  own_ports_ = std::move(ports);
}

std::size_t Correlator::pending() const {
  std::lock_guard lock(mu_);
  return pending_.size() + held_.size();
}

}  // namespace kspan
