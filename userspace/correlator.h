// The correlator: places kernel spans inside the traces applications produce.
//
// Kernel spans (connect, syscall, HTTP, ...) wait up to a join window for the
// app spans that may contain them; app spans are indexed as the receiver
// accepts them and pass on at once, unchanged. What waits:
//   - every kernel span of a process expected to send spans: enrolled
//     (configured, or its environment names kspan's receiver, see
//     userspace/enrollment.h), or it has sent some. The expectation holds
//     from the process's first span and outlives it: after its exit, its
//     kernel spans wait until a join window after the exit, for the export
//     its SDK makes at shutdown (also those read from the rings after the
//     exit);
//   - socket syscalls that may belong to a kernel HTTP span of their
//     connection.
// Others leave at once, so hosts without instrumented apps see kernel spans
// without delay. When a kernel span leaves the window it is placed:
//   1. a kernel span that already carries trace context (an HTTP span that
//      read a traceparent) stays where the trace context says;
//   2. a socket syscall on a connection with a kernel HTTP span containing it
//      becomes that HTTP span's child; a TCP connect whose connection's first
//      request carried trace context gets that request's parent (the caller's
//      CLIENT span): concurrent calls overlap in time, connections do not;
//   3. a kernel HTTP server span without trace context (the client sent
//      none) becomes the child of the app SERVER span of the same request
//      (same process and client port, overlapping in time);
//   4. otherwise the innermost span of the same process (app spans, and kernel
//      HTTP spans carrying trace context) that contains it in time becomes its
//      parent; the same thread is required where both carry thread.id;
//   5. a span with no container leaves as its own trace, or is dropped
//      (per config), and is counted either way.
//
// Clocks: kernel times are CLOCK_MONOTONIC mapped to Unix time by ClockSync;
// applications stamp spans with their own wall clock (OpenTelemetry JS, for
// one, anchors each span on Date.now(), a millisecond clock). Per process,
// pairs of a kernel HTTP span and the app span of the same request bound the
// offset app - kernel; kernel spans are matched and exported shifted by it,
// and the observed offset is reported. Containment allows a small tolerance
// (default 1 ms) for the application's clock resolution.
#pragma once

#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "exporter/self_metrics.h"
#include "exporter/span.h"

namespace kspan {

struct CorrelatorOptions {
  // How long a kernel span waits for the app spans that may contain it. Must
  // exceed the applications' export delay (OpenTelemetry SDKs batch for 5 s
  // by default: OTEL_BSP_SCHEDULE_DELAY).
  std::chrono::milliseconds join_window{std::chrono::seconds(6)};
  // Kernel spans that no span contains: exported as their own traces (true)
  // or dropped (false). Counted either way.
  bool export_unmatched = true;
  // Slack for the application clock's resolution when testing containment.
  std::chrono::nanoseconds clock_tolerance{std::chrono::milliseconds(1)};
  // Memory bounds. A kernel span that finds the window full leaves it at once
  // (placed against what is known by then); the oldest app spans are
  // forgotten first.
  std::size_t max_pending_kernel_spans = 200000;
  std::size_t max_indexed_spans = 200000;
};

class Correlator {
 public:
  using Consumer = std::function<void(Span&&)>;
  using SteadyClock = std::function<std::chrono::steady_clock::time_point()>;

  // `downstream` receives every span that leaves (the export pipeline). With
  // `start_thread` false nothing leaves until Release()/Flush() is called
  // (tests drive time through `now`).
  Correlator(CorrelatorOptions options, MetricsRegistry& metrics, Consumer downstream,
             bool start_thread = true, SteadyClock now = std::chrono::steady_clock::now);
  ~Correlator();  // Flush()

  Correlator(const Correlator&) = delete;
  Correlator& operator=(const Correlator&) = delete;

  // A kernel span from span assembly (any thread). Waits in the window.
  void OnKernelSpan(Span&& span);
  // The host pid an app span belongs to (nullopt: none kspan can vouch for).
  using HostPidOf = std::function<std::optional<std::uint32_t>(const Span&)>;
  // App spans accepted by the receiver, before they are exported: indexed,
  // under the host pid `host_pid` gives (userspace/sender_identity.h: never
  // the pid a payload claims, which in a container is its own namespace's),
  // so kernel spans can find them. They are not kept or changed.
  void IndexAppSpans(const std::vector<Span>& spans, const HostPidOf& host_pid);

  // Places and hands on every kernel span whose window has passed.
  void Release();
  // Places and hands on every waiting kernel span now (shutdown). Idempotent;
  // later spans pass straight through.
  void Flush();

  // `pid` is expected to send spans (enrolled, see userspace/enrollment.h):
  // its kernel spans wait in the window from now on.
  void ExpectSpansFrom(std::uint32_t pid);
  // It is not after all (its environment names another collector). Spans
  // that wait keep waiting; a process that has sent stays expected.
  void StopExpecting(std::uint32_t pid);
  // The process exited: its waiting kernel spans, and those still to come
  // from the rings, wait until a join window from now (its SDK's export at
  // shutdown). Its index is kept until the last of them has left.
  void OnProcessExit(std::uint32_t pid);

  // kspan's own receiver ports: kernel spans of connections to them are an
  // app's telemetry, not its work, and are never placed inside its spans.
  void SetOwnPorts(std::set<std::int64_t> ports);

  std::size_t pending() const;
  // The offset app - kernel estimated for `pid`, when pairs were seen.
  std::optional<std::int64_t> ClockOffsetNs(std::uint32_t pid) const;

 private:
  struct Pending {
    Span span;
    std::chrono::steady_clock::time_point due;
    std::uint32_t pid = 0;  // 0: none known
    bool waited = false;    // it entered the window (did not leave at once)
    bool early = false;     // it left early: the window was full
    bool counted = false;   // counted in its sender's `waiting`
    bool placed = false;
    bool keep = true;  // false: unmatched and dropped
    // Where the span ended up; read by children placed through it.
    TraceId trace_id{};
    SpanId span_id{};
    std::uint32_t flags = 0;
  };
  // A span that may contain others: an app span, or a kernel HTTP span.
  struct Container {
    std::uint64_t start = 0;  // on the kernel time axis for kernel spans
    std::uint64_t end = 0;
    TraceId trace_id{};
    SpanId span_id{};
    SpanId parent_span_id{};
    std::uint32_t flags = 0;
    std::int64_t tid = 0;  // 0: unknown
    SpanKind kind = SpanKind::kInternal;
    bool app = false;
    std::string conn;  // kernel HTTP spans: the connection
    std::int64_t peer_port = 0;  // app SERVER spans: the client's port, when known
    std::shared_ptr<Pending> pending;  // kernel HTTP span not yet placed
    std::chrono::steady_clock::time_point indexed_at;
  };
  struct ProcessIndex {
    // Keyed by start time (app clock for app spans, kernel clock for kernel).
    std::multimap<std::uint64_t, Container> app;
    // Kernel HTTP spans, by connection, and those placed by trace context
    // (which may contain the process's other kernel spans).
    std::unordered_map<std::string, std::multimap<std::uint64_t, Container>> http_by_conn;
    std::multimap<std::uint64_t, Container> http_ctx;
    // Offset bounds (app - kernel), from pairs of the same request.
    std::int64_t lo = INT64_MIN;
    std::int64_t hi = INT64_MAX;
    std::chrono::steady_clock::time_point bounds_since{};
    // One side of a request seen so far, waiting for the other side.
    std::unordered_map<std::string, Container> pairs;
  };
  // A process expected to send spans, or that has sent.
  struct Sender {
    bool expected = false;  // enrolled
    bool sent = false;      // app spans of it were indexed
    std::optional<std::chrono::steady_clock::time_point> exited_at;
    std::size_t waiting = 0;  // its kernel spans in the window
  };
  // Why a kernel span left the window unplaced (label of
  // kspan_correlator_unplaced_spans_total).
  enum Unplaced { kNotASender, kNoAppSpans, kNotContained, kWindowFull, kTelemetry, kUnplacedReasons };
  struct IndexEntry {
    std::chrono::steady_clock::time_point at;
    std::uint32_t pid;
    bool app;
    std::uint64_t start;
    SpanId span_id;
    std::string conn;      // kernel HTTP spans: the http_by_conn key ("" if none)
    bool ctx = false;      // kernel HTTP spans: also in http_ctx
  };

  void Run();
  static Container ContainerOf(const Span& s, std::chrono::steady_clock::time_point now);
  bool MayJoinLater(const Span& s) const;
  // Places `p` (under mu_). May place a kernel HTTP parent first.
  void Place(Pending& p, int depth = 0);
  const Container* FindContainer(ProcessIndex& idx, const Span& span, std::int64_t offset,
                                 bool by_connection);
  const Container* FindSameRequest(ProcessIndex& idx, const Span& span, std::int64_t offset);
  // The kernel HTTP client span of the first request on a connect's
  // connection, when it carries trace context.
  const Container* FirstRequestOn(ProcessIndex& idx, const Span& connect);
  void IndexKernelHttp(const std::shared_ptr<Pending>& p);
  void LearnFromPair(ProcessIndex& idx, const Container& c, const std::string& key);
  void LearnOffset(ProcessIndex& idx, const Container& app, const Container& kernel);
  std::int64_t OffsetFor(const ProcessIndex& idx) const;
  void Forget(std::chrono::steady_clock::time_point now);
  void TakeDue(std::chrono::steady_clock::time_point now, bool all, std::vector<Span>& out);
  bool IsSender(std::uint32_t pid) const;
  // Places `p`, which leaves the window now, into `out` (under mu_).
  void Leave(const std::shared_ptr<Pending>& p, std::vector<Span>& out);
  // Removes the oldest waiting spans while the window is over its bound.
  void Evict(std::vector<Span>& out);
  void CountUnplaced(const Pending& p, bool telemetry);

  const CorrelatorOptions options_;
  Consumer downstream_;
  SteadyClock now_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool flushed_ = false;
  std::deque<std::shared_ptr<Pending>> pending_;  // in order of `due`
  // Spans of exited senders whose window was extended past their `due`,
  // by the new time.
  std::multimap<std::chrono::steady_clock::time_point, std::shared_ptr<Pending>> held_;
  std::unordered_map<std::uint32_t, Sender> senders_;
  // Exits of senders, in order: each is forgotten a window after its exit
  // once none of its spans waits.
  std::deque<std::pair<std::chrono::steady_clock::time_point, std::uint32_t>> exited_;
  std::unordered_map<std::uint32_t, ProcessIndex> processes_;
  std::deque<IndexEntry> index_order_;
  std::size_t indexed_ = 0;
  std::set<std::int64_t> own_ports_;
  std::thread thread_;
  MetricsRegistry* metrics_ = nullptr;

  Counter& kernel_in_;
  Counter& app_indexed_;
  Counter& placed_by_context_;
  Counter& placed_by_connection_;
  Counter& placed_in_app_;
  Counter& placed_in_kernel_http_;
  Counter& unmatched_exported_;
  Counter& unmatched_dropped_;
  Counter& window_full_;
  Counter* unplaced_[kUnplacedReasons] = {};
  Counter& index_evicted_;
  Gauge& max_offset_seconds_;
};

}  // namespace kspan
