// The correlator with a driven clock: kernel spans wait in the join window,
// are placed under the innermost app span of their process (same thread where
// known), under kernel HTTP spans of their connection, or by trace context;
// unmatched ones leave as their own traces or are dropped; memory is bounded.
#include "userspace/correlator.h"

#include <gtest/gtest.h>

#include <chrono>
#include <vector>

namespace kspan {
namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t kT0 = 1'700'000'000'000'000'000ull;  // Unix ns
constexpr std::uint64_t kMs = 1'000'000;

TraceId Trace(std::uint8_t b) {
  TraceId t{};
  t.fill(b);
  return t;
}
SpanId Id(std::uint8_t b) {
  SpanId s{};
  s.fill(b);
  return s;
}

std::shared_ptr<const Resource> ProcessResource(std::int64_t pid) {
  auto r = std::make_shared<Resource>();
  r->attributes.push_back({"process.pid", pid});
  r->attributes.push_back({"service.name", std::string("svc")});
  return r;
}

Span AppSpan(std::int64_t pid, std::uint8_t trace, std::uint8_t id, std::uint8_t parent,
             std::uint64_t start_ms, std::uint64_t end_ms, SpanKind kind = SpanKind::kInternal) {
  Span s;
  s.trace_id = Trace(trace);
  s.span_id = Id(id);
  if (parent != 0) s.parent_span_id = Id(parent);
  s.flags = 0x1;
  s.kind = kind;
  s.name = "app";
  s.start_unix_nano = kT0 + start_ms * kMs;
  s.end_unix_nano = kT0 + end_ms * kMs;
  s.resource = ProcessResource(pid);
  s.source = SpanSource::kApp;
  return s;
}

Span KernelSpan(std::int64_t pid, std::int64_t tid, std::uint8_t id, std::uint64_t start_us,
                std::uint64_t end_us, std::string name = "syscall write") {
  Span s;
  s.trace_id = Trace(0xee);  // a fresh trace, as span assembly gives every kernel span
  s.span_id = Id(id);
  s.name = std::move(name);
  s.start_unix_nano = kT0 + start_us * 1000;
  s.end_unix_nano = kT0 + end_us * 1000;
  s.attributes.push_back({"process.pid", pid});
  s.attributes.push_back({"thread.id", tid});
  if (s.name.rfind("syscall ", 0) == 0) {
    s.attributes.push_back({"kspan.syscall.name", s.name.substr(8)});
  }
  s.resource = ProcessResource(pid);
  return s;
}

// A kernel HTTP span of the thread `pid` of process `pid`.
Span HttpSpan(std::int64_t pid, std::uint8_t id, std::uint64_t start_us, std::uint64_t end_us,
              std::string name, SpanKind kind) {
  Span s = KernelSpan(pid, pid, id, start_us, end_us, std::move(name));
  s.kind = kind;
  s.attributes.push_back({"http.request.method", std::string("GET")});
  return s;
}

void OnConnection(Span& s, std::string peer, std::int64_t port, std::int64_t local_port = -1) {
  s.attributes.push_back({"network.peer.address", std::move(peer)});
  s.attributes.push_back({"network.peer.port", port});
  if (local_port >= 0) s.attributes.push_back({"network.local.port", local_port});
}

// The host pid an app span is indexed under: in these tests every sender
// is in kspan's pid namespace and names itself (userspace/sender_identity
// decides this in the agent).
std::optional<std::uint32_t> ResourcePid(const Span& s) {
  const AttributeValue* v = s.resource ? FindAttribute(s.resource->attributes, "process.pid") : nullptr;
  const auto* pid = v ? std::get_if<std::int64_t>(v) : nullptr;
  if (pid == nullptr || *pid <= 0) return std::nullopt;
  return static_cast<std::uint32_t>(*pid);
}

class CorrelatorTest : public ::testing::Test {
 protected:
  void Make(CorrelatorOptions options = {}) {
    options.join_window = 2s;
    correlator_ = std::make_unique<Correlator>(
        options, metrics_, [this](Span&& s) { out_.push_back(std::move(s)); },
        /*start_thread=*/false, [this] { return now_; });
  }
  // `pid` has sent spans before: its kernel spans wait for app spans.
  void Known(std::int64_t pid) {
    correlator_->IndexAppSpans({AppSpan(pid, 0x01, 0xf0, 0, 900'000, 900'001)}, ResourcePid);
  }
  const Span* Out(std::uint8_t id) const {
    for (const auto& s : out_)
      if (s.span_id == Id(id)) return &s;
    return nullptr;
  }

  MetricsRegistry metrics_;
  std::chrono::steady_clock::time_point now_{std::chrono::seconds(1000)};
  std::vector<Span> out_;
  std::unique_ptr<Correlator> correlator_;
};

TEST_F(CorrelatorTest, KernelSpanWaitsForTheWindowThenJoinsTheInnermostAppSpan) {
  Make();
  Known(42);
  // Kernel span 10.2-10.4 ms; app spans: root 0-50 ms, child 10-20 ms.
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x31, 10'200, 10'400));
  correlator_->Release();
  EXPECT_TRUE(out_.empty()) << "left before the window passed";
  correlator_->IndexAppSpans({AppSpan(42, 0xaa, 0x01, 0, 0, 50),
                              AppSpan(42, 0xaa, 0x02, 0x01, 10, 20),
                              AppSpan(42, 0xaa, 0x03, 0x01, 30, 40)}, ResourcePid);
  now_ += 2100ms;
  correlator_->Release();
  ASSERT_EQ(out_.size(), 1u);
  EXPECT_EQ(out_[0].trace_id, Trace(0xaa));
  EXPECT_EQ(out_[0].parent_span_id, Id(0x02));
  EXPECT_EQ(out_[0].flags, 0x1u);
  EXPECT_EQ(metrics_.CounterTotal("kspan_correlator_placed_total"), 1u);
}

TEST_F(CorrelatorTest, OtherProcessesAndOtherThreadsDoNotAdopt) {
  Make();
  Known(42);
  correlator_->OnKernelSpan(KernelSpan(7, 7, 0x31, 10'200, 10'400));   // another process
  correlator_->OnKernelSpan(KernelSpan(42, 43, 0x32, 10'200, 10'400)); // other thread
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x33, 10'200, 10'400));
  Span app = AppSpan(42, 0xaa, 0x02, 0, 10, 20);
  app.attributes.push_back({"thread.id", std::int64_t{42}});
  correlator_->IndexAppSpans({app}, ResourcePid);
  correlator_->Flush();
  ASSERT_EQ(out_.size(), 3u);
  EXPECT_EQ(Out(0x31)->trace_id, Trace(0xee));
  EXPECT_FALSE(IsValid(Out(0x31)->parent_span_id));
  EXPECT_EQ(Out(0x32)->trace_id, Trace(0xee));
  EXPECT_EQ(Out(0x33)->parent_span_id, Id(0x02));
  EXPECT_EQ(metrics_.CounterTotal("kspan_correlator_unmatched_total"), 2u);
}

TEST_F(CorrelatorTest, UnmatchedSpansAreDroppedWhenConfigured) {
  CorrelatorOptions o;
  o.export_unmatched = false;
  Make(o);
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x31, 100'000, 100'100));
  correlator_->Flush();
  EXPECT_TRUE(out_.empty());
  EXPECT_EQ(metrics_.CounterTotal("kspan_correlator_unmatched_total"), 1u);
}

TEST_F(CorrelatorTest, KernelSpanWithTraceContextStaysWhereItSays) {
  Make();
  Span http = HttpSpan(42, 0x40, 10'000, 11'000, "GET /x", SpanKind::kServer);
  http.trace_id = Trace(0xbb);
  http.parent_span_id = Id(0x77);
  correlator_->OnKernelSpan(std::move(http));
  correlator_->IndexAppSpans({AppSpan(42, 0xaa, 0x02, 0, 0, 50)}, ResourcePid);
  correlator_->Flush();
  ASSERT_EQ(out_.size(), 1u);
  EXPECT_EQ(out_[0].trace_id, Trace(0xbb));
  EXPECT_EQ(out_[0].parent_span_id, Id(0x77));
}

TEST_F(CorrelatorTest, SocketSyscallsJoinTheHttpSpanOfTheirConnection) {
  Make();
  // nginx: an HTTP server span placed by traceparent; its read and write on
  // the same connection, and a read on another connection at the same time.
  Span http = HttpSpan(9, 0x40, 10'000, 12'000, "GET /x", SpanKind::kServer);
  http.trace_id = Trace(0xbb);
  http.parent_span_id = Id(0x77);
  http.flags = 1;
  OnConnection(http, "127.0.0.1", 50000);
  Span read = KernelSpan(9, 9, 0x41, 10'000, 10'010, "syscall recvfrom");
  OnConnection(read, "127.0.0.1", 50000);
  Span write = KernelSpan(9, 9, 0x42, 11'900, 12'000, "syscall writev");
  OnConnection(write, "127.0.0.1", 50000);
  Span other = KernelSpan(9, 9, 0x43, 10'500, 10'510, "syscall recvfrom");
  OnConnection(other, "127.0.0.1", 50001);
  // The connection's accept, just before the request was read: not a child.
  Span accept = KernelSpan(9, 9, 0x44, 9'950, 9'990, "tcp accept");
  OnConnection(accept, "127.0.0.1", 50000);
  correlator_->OnKernelSpan(std::move(accept));
  correlator_->OnKernelSpan(std::move(read));
  correlator_->OnKernelSpan(std::move(other));
  correlator_->OnKernelSpan(std::move(write));
  correlator_->OnKernelSpan(std::move(http));
  correlator_->Flush();
  ASSERT_EQ(out_.size(), 5u);
  EXPECT_FALSE(IsValid(Out(0x44)->parent_span_id));
  EXPECT_EQ(Out(0x41)->trace_id, Trace(0xbb));
  EXPECT_EQ(Out(0x41)->parent_span_id, Id(0x40));
  EXPECT_EQ(Out(0x42)->parent_span_id, Id(0x40));
  // Not on the connection, but inside an HTTP span with trace context of the
  // same thread: the innermost container.
  EXPECT_EQ(Out(0x43)->parent_span_id, Id(0x40));
}

TEST_F(CorrelatorTest, ConcurrentCallsToOneServerKeepTheirConnectsAndSyscalls) {
  Make();
  // Two requests of a single-threaded app (no thread.id) call the same
  // backend at the same time, each on a connection of its own: the app's
  // CLIENT spans overlap, so time cannot tell the connects and syscalls
  // apart; their connections can.
  correlator_->IndexAppSpans({AppSpan(42, 0xa1, 0x11, 0, 10, 30, SpanKind::kClient),
                              AppSpan(42, 0xa2, 0x21, 0, 11, 31, SpanKind::kClient)},
                             ResourcePid);
  struct Call {
    std::uint8_t trace, client, connect, http, write;
    std::int64_t local_port;
    std::uint64_t at_us;
  };
  for (const Call& c : {Call{0xa1, 0x11, 0x50, 0x51, 0x52, 40001, 12'000},
                        Call{0xa2, 0x21, 0x60, 0x61, 0x62, 40002, 12'100}}) {
    Span connect = KernelSpan(42, 42, c.connect, c.at_us, c.at_us + 300, "tcp connect");
    connect.kind = SpanKind::kClient;
    OnConnection(connect, "10.0.0.9", 8080, c.local_port);
    // The HTTP client span read the traceparent the app sent on it.
    Span http = HttpSpan(42, c.http, c.at_us + 400, c.at_us + 9'000, "GET /work", SpanKind::kClient);
    http.trace_id = Trace(c.trace);
    http.parent_span_id = Id(c.client);
    OnConnection(http, "10.0.0.9", 8080, c.local_port);
    Span write = KernelSpan(42, 42, c.write, c.at_us + 400, c.at_us + 450, "syscall write");
    OnConnection(write, "10.0.0.9", 8080, c.local_port);
    correlator_->OnKernelSpan(std::move(connect));
    correlator_->OnKernelSpan(std::move(write));
    correlator_->OnKernelSpan(std::move(http));
  }
  correlator_->Flush();
  ASSERT_EQ(out_.size(), 6u);
  // The second call's connect lies inside both CLIENT spans; its connection
  // says it is the second's.
  EXPECT_EQ(Out(0x50)->trace_id, Trace(0xa1));
  EXPECT_EQ(Out(0x50)->parent_span_id, Id(0x11));
  EXPECT_EQ(Out(0x60)->trace_id, Trace(0xa2));
  EXPECT_EQ(Out(0x60)->parent_span_id, Id(0x21));
  EXPECT_EQ(Out(0x52)->parent_span_id, Id(0x51));
  EXPECT_EQ(Out(0x62)->parent_span_id, Id(0x61));
  EXPECT_EQ(Out(0x62)->trace_id, Trace(0xa2));
  EXPECT_EQ(metrics_.CounterValue("kspan_correlator_placed_total", {{"by", "connection"}}), 4u);
}

TEST_F(CorrelatorTest, ConnectionParentWithoutTraceContextIsPlacedFirst) {
  Make();
  Known(42);
  // A kernel HTTP client span without traceparent inside an app span: its
  // syscalls follow it into the app's trace.
  Span http = HttpSpan(42, 0x40, 10'100, 10'900, "GET /y", SpanKind::kClient);
  OnConnection(http, "10.0.0.1", 80);
  Span write = KernelSpan(42, 42, 0x41, 10'100, 10'150, "syscall write");
  OnConnection(write, "10.0.0.1", 80);
  correlator_->OnKernelSpan(std::move(write));
  correlator_->OnKernelSpan(std::move(http));
  correlator_->IndexAppSpans({AppSpan(42, 0xaa, 0x02, 0, 10, 20)}, ResourcePid);
  correlator_->Flush();
  ASSERT_EQ(out_.size(), 2u);
  EXPECT_EQ(Out(0x40)->trace_id, Trace(0xaa));
  EXPECT_EQ(Out(0x40)->parent_span_id, Id(0x02));
  EXPECT_EQ(Out(0x41)->trace_id, Trace(0xaa));
  EXPECT_EQ(Out(0x41)->parent_span_id, Id(0x40));
}

TEST_F(CorrelatorTest, HttpServerSpanWithoutContextJoinsTheAppServerSpanOfItsRequest) {
  Make();
  Known(42);
  // The client sent no traceparent: the app's SERVER span is a root. The
  // kernel saw the request read before the app span began (9.8 ms) and the
  // response written after it ended; it is the same request by client port.
  Span http = HttpSpan(42, 0x40, 9'800, 20'300, "GET /order", SpanKind::kServer);
  OnConnection(http, "127.0.0.1", 41000);
  Span read = KernelSpan(42, 42, 0x41, 9'800, 9'810, "syscall read");
  OnConnection(read, "127.0.0.1", 41000);
  correlator_->OnKernelSpan(std::move(read));
  correlator_->OnKernelSpan(std::move(http));
  Span other = AppSpan(42, 0xab, 0x03, 0, 10, 20, SpanKind::kServer);
  other.attributes.push_back({"net.peer.port", std::int64_t{41001}});
  Span app = AppSpan(42, 0xaa, 0x02, 0, 10, 20, SpanKind::kServer);
  app.attributes.push_back({"net.peer.port", std::int64_t{41000}});
  correlator_->IndexAppSpans({other, app}, ResourcePid);
  correlator_->Flush();
  ASSERT_EQ(out_.size(), 2u);
  EXPECT_EQ(Out(0x40)->trace_id, Trace(0xaa));
  EXPECT_EQ(Out(0x40)->parent_span_id, Id(0x02));
  EXPECT_EQ(Out(0x41)->trace_id, Trace(0xaa));
  EXPECT_EQ(Out(0x41)->parent_span_id, Id(0x40));
}

TEST_F(CorrelatorTest, AppTelemetryToKspanIsNotPartOfTheAppsWork) {
  Make();
  Known(42);
  correlator_->SetOwnPorts({4318});
  Span write = KernelSpan(42, 42, 0x31, 10'200, 10'400, "syscall write");
  OnConnection(write, "127.0.0.1", 4318);
  Span other = KernelSpan(42, 42, 0x32, 10'200, 10'400, "syscall write");
  OnConnection(other, "127.0.0.1", 8080);
  correlator_->OnKernelSpan(std::move(write));
  correlator_->OnKernelSpan(std::move(other));
  correlator_->IndexAppSpans({AppSpan(42, 0xaa, 0x02, 0, 10, 20)}, ResourcePid);
  correlator_->Flush();
  EXPECT_FALSE(IsValid(Out(0x31)->parent_span_id));
  EXPECT_EQ(Out(0x32)->parent_span_id, Id(0x02));
}

TEST_F(CorrelatorTest, ToleranceCoversTheAppClockResolution) {
  Make();
  Known(42);
  // The app's span ends 0.4 ms before the kernel read it contains really
  // ended (a millisecond clock); the next app span starts after it.
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x31, 19'000, 20'400));
  // What starts after an app span ended is not its child, even within the
  // tolerance (the next connection accepted right after a response).
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x32, 20'300, 20'500));
  correlator_->IndexAppSpans({AppSpan(42, 0xaa, 0x02, 0, 10, 20),
                              AppSpan(42, 0xab, 0x03, 0, 21, 30)}, ResourcePid);
  correlator_->Flush();
  ASSERT_EQ(out_.size(), 2u);
  EXPECT_EQ(Out(0x31)->parent_span_id, Id(0x02));
  EXPECT_FALSE(IsValid(Out(0x32)->parent_span_id));
}

TEST_F(CorrelatorTest, ClockOffsetLearnedFromOneRequestSeenBothWays) {
  Make();
  // The app's clock runs 5 ms ahead of the kernel's: its SERVER span
  // (15-25 ms) is the request the kernel saw read at 10 ms and answered by 21.
  Span http = HttpSpan(42, 0x40, 10'000, 21'000, "GET /x", SpanKind::kServer);
  http.trace_id = Trace(0xaa);
  http.parent_span_id = Id(0x77);
  correlator_->OnKernelSpan(std::move(http));
  correlator_->IndexAppSpans({AppSpan(42, 0xaa, 0x02, 0x77, 15, 25, SpanKind::kServer)}, ResourcePid);
  auto offset = correlator_->ClockOffsetNs(42);
  ASSERT_TRUE(offset.has_value());
  // Bounds: d <= 15 - 10 (+1 ms clock resolution) = 6 ms and
  // d >= 15 - 21 = -6 ms: 0 lies inside, so nothing is corrected until a
  // request proves otherwise.
  EXPECT_EQ(*offset, 0);
  // A client request of the same process: app span 31-40, kernel write at
  // 28 ms: d >= 31 - 28 = 3 ms.
  Span client = HttpSpan(42, 0x50, 28'000, 33'000, "GET /y", SpanKind::kClient);
  client.trace_id = Trace(0xac);
  client.parent_span_id = Id(0x05);
  correlator_->OnKernelSpan(std::move(client));
  correlator_->IndexAppSpans({AppSpan(42, 0xac, 0x05, 0, 31, 40, SpanKind::kClient)}, ResourcePid);
  offset = correlator_->ClockOffsetNs(42);
  ASSERT_TRUE(offset.has_value());
  EXPECT_EQ(*offset, 3 * static_cast<std::int64_t>(kMs));
  // A kernel span at 33.5-34 ms (kernel clock), after the response was read,
  // is inside the app's client span (31-40 ms, app clock) only once
  // corrected, and is exported on the app's clock.
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x60, 33'500, 34'000, "syscall futex"));
  correlator_->Flush();
  const Span* connect = Out(0x60);
  ASSERT_NE(connect, nullptr);
  EXPECT_EQ(connect->parent_span_id, Id(0x05));
  EXPECT_EQ(connect->start_unix_nano, kT0 + 36'500'000);
  EXPECT_GT(metrics_.CounterTotal("kspan_correlator_placed_total"), 0u);
}

TEST_F(CorrelatorTest, FullWindowReleasesTheOldestEarlyAndCounts) {
  CorrelatorOptions o;
  o.max_pending_kernel_spans = 3;
  Make(o);
  Known(42);
  for (int i = 0; i < 5; ++i) {
    correlator_->OnKernelSpan(KernelSpan(42, 42, static_cast<std::uint8_t>(0x10 + i), 100, 200));
  }
  EXPECT_EQ(out_.size(), 2u);
  EXPECT_EQ(correlator_->pending(), 3u);
  EXPECT_EQ(metrics_.CounterTotal("kspan_correlator_window_full_total"), 2u);
  correlator_->Flush();
  EXPECT_EQ(out_.size(), 5u);
}

TEST_F(CorrelatorTest, IndexIsBoundedAndForgetsOldSpans) {
  CorrelatorOptions o;
  o.max_indexed_spans = 10;
  Make(o);
  std::vector<Span> many;
  for (int i = 0; i < 25; ++i) {
    many.push_back(AppSpan(42, 0xaa, static_cast<std::uint8_t>(i + 1), 0, i, i + 1));
  }
  correlator_->IndexAppSpans(many, ResourcePid);
  EXPECT_EQ(metrics_.CounterTotal("kspan_correlator_index_evicted_total"), 15u);
  // The newest are still known.
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x99, 24'100, 24'200));
  now_ += 2100ms;
  correlator_->Release();
  // Past retention everything is forgotten.
  now_ += 30s;
  correlator_->IndexAppSpans({}, ResourcePid);
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x98, 24'100, 24'200));
  correlator_->Flush();
  EXPECT_EQ(Out(0x99)->parent_span_id, Id(25));
  EXPECT_FALSE(IsValid(Out(0x98)->parent_span_id));
}

TEST_F(CorrelatorTest, SpansOfProcessesThatSendNoSpansLeaveAtOnce) {
  Make();
  // A TCP connect of a process that never sent spans: nothing can adopt it.
  Span connect = KernelSpan(7, 7, 0x31, 100, 200, "tcp connect");
  OnConnection(connect, "10.0.0.1", 80);
  correlator_->OnKernelSpan(std::move(connect));
  EXPECT_EQ(out_.size(), 1u);
  // A socket syscall may still join the HTTP span of its connection: waits.
  Span read = KernelSpan(7, 7, 0x32, 100, 200, "syscall read");
  OnConnection(read, "10.0.0.1", 80);
  correlator_->OnKernelSpan(std::move(read));
  EXPECT_EQ(out_.size(), 1u);
  EXPECT_EQ(correlator_->pending(), 1u);
}

TEST_F(CorrelatorTest, AfterFlushSpansPassStraightThrough) {
  Make();
  correlator_->Flush();
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x31, 100, 200));
  EXPECT_EQ(out_.size(), 1u);
}

// Counted in kspan_correlator_unplaced_spans_total under `reason`.
std::uint64_t Unplaced(const MetricsRegistry& m, const char* reason) {
  return m.CounterValue("kspan_correlator_unplaced_spans_total", {{"reason", reason}});
}

TEST_F(CorrelatorTest, NeitherSendingNorEnrolledLeavesAtOnceAndIsCountedSo) {
  Make();
  correlator_->OnKernelSpan(KernelSpan(7, 7, 0x31, 100, 200));
  ASSERT_EQ(out_.size(), 1u);
  EXPECT_EQ(correlator_->pending(), 0u);
  EXPECT_EQ(Unplaced(metrics_, "not_a_sender"), 1u);
  // Its exit changes nothing.
  correlator_->OnProcessExit(7);
  correlator_->OnKernelSpan(KernelSpan(7, 7, 0x32, 300, 400));
  EXPECT_EQ(out_.size(), 2u);
}

TEST_F(CorrelatorTest, EnrolledProcessWaitsFromItsFirstSpanBeforeItHasSent) {
  Make();
  correlator_->ExpectSpansFrom(42);
  // A connect, which a process not known to send would see leave at once.
  Span connect = KernelSpan(42, 42, 0x31, 10'200, 10'400, "tcp connect");
  OnConnection(connect, "10.0.0.1", 5432);
  correlator_->OnKernelSpan(std::move(connect));
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x32, 10'500, 10'600));
  EXPECT_TRUE(out_.empty());
  EXPECT_EQ(correlator_->pending(), 2u);
  // Its first export, 1.9 s later: the request's spans.
  now_ += 1900ms;
  correlator_->IndexAppSpans({AppSpan(42, 0xaa, 0x01, 0, 10, 20)}, ResourcePid);
  now_ += 200ms;
  correlator_->Release();
  ASSERT_EQ(out_.size(), 2u);
  EXPECT_EQ(Out(0x31)->parent_span_id, Id(0x01));
  EXPECT_EQ(Out(0x32)->parent_span_id, Id(0x01));
  EXPECT_EQ(metrics_.CounterTotal("kspan_correlator_unplaced_spans_total"), 0u);
}

TEST_F(CorrelatorTest, ProcessThatIsNotASenderAfterAllStopsWaiting) {
  Make();
  correlator_->ExpectSpansFrom(42);
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x31, 100, 200));
  correlator_->StopExpecting(42);
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x32, 300, 400));
  ASSERT_EQ(out_.size(), 1u);  // the later one, at once
  EXPECT_EQ(out_[0].span_id, Id(0x32));
  now_ += 2100ms;
  correlator_->Release();
  ASSERT_EQ(out_.size(), 2u);
  EXPECT_EQ(Unplaced(metrics_, "no_app_spans"), 1u);  // it waited in vain
  EXPECT_EQ(Unplaced(metrics_, "not_a_sender"), 1u);
}

TEST_F(CorrelatorTest, SenderStaysExpectedAfterItsIndexIsForgotten) {
  Make();
  Known(42);
  now_ += 60s;  // past the index's retention: nothing of it is indexed
  correlator_->IndexAppSpans({}, ResourcePid);
  Span connect = KernelSpan(42, 42, 0x31, 100, 200, "tcp connect");
  OnConnection(connect, "10.0.0.1", 5432);
  correlator_->OnKernelSpan(std::move(connect));
  EXPECT_TRUE(out_.empty());
  EXPECT_EQ(correlator_->pending(), 1u);
}

TEST_F(CorrelatorTest, ExitedSenderSpansWaitForItsExportAtShutdown) {
  Make();
  correlator_->ExpectSpansFrom(42);
  // A short-lived process: a request at once, its spans exported at exit.
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x31, 10'200, 10'400));
  now_ += 1500ms;
  correlator_->OnProcessExit(42);
  // A span the rings held when the exit was read.
  now_ += 100ms;
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x32, 10'500, 10'600));
  now_ += 500ms;  // past the first span's own window
  correlator_->Release();
  EXPECT_TRUE(out_.empty()) << "left before the shutdown export could arrive";
  EXPECT_EQ(correlator_->pending(), 2u);
  // The SDK's export at shutdown reaches the receiver after the exit.
  correlator_->IndexAppSpans({AppSpan(42, 0xaa, 0x01, 0, 10, 20)}, ResourcePid);
  now_ += 1400ms;  // a window after the exit
  correlator_->Release();
  ASSERT_EQ(out_.size(), 1u);
  EXPECT_EQ(out_[0].span_id, Id(0x31));
  now_ += 200ms;  // and the late span's own window
  correlator_->Release();
  ASSERT_EQ(out_.size(), 2u);
  EXPECT_EQ(Out(0x31)->parent_span_id, Id(0x01));
  EXPECT_EQ(Out(0x32)->parent_span_id, Id(0x01));
  EXPECT_EQ(correlator_->pending(), 0u);
}

TEST_F(CorrelatorTest, ExitedSenderIsForgottenAWindowAfterItsLastSpan) {
  Make();
  correlator_->ExpectSpansFrom(42);
  correlator_->OnProcessExit(42);
  // Within a window of the exit: still expected.
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x31, 100, 200));
  EXPECT_EQ(correlator_->pending(), 1u);
  now_ += 2100ms;
  correlator_->Release();
  ASSERT_EQ(out_.size(), 1u);
  // The pid's next process (neither enrolled nor sending) is not kept waiting.
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x32, 300, 400));
  EXPECT_EQ(out_.size(), 2u);
}

TEST_F(CorrelatorTest, UnplacedSpansAreCountedByReason) {
  CorrelatorOptions o;
  o.max_pending_kernel_spans = 2;
  Make(o);
  correlator_->SetOwnPorts({4318});
  Known(42);
  correlator_->IndexAppSpans({AppSpan(42, 0xaa, 0x01, 0, 10, 20)}, ResourcePid);
  correlator_->ExpectSpansFrom(43);
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x31, 50'000, 50'100));  // outside the app span
  correlator_->OnKernelSpan(KernelSpan(43, 43, 0x32, 100, 200));        // 43 never sends
  Span export_call = KernelSpan(42, 42, 0x33, 10'100, 10'200, "tcp connect");
  OnConnection(export_call, "127.0.0.1", 4318);
  correlator_->OnKernelSpan(std::move(export_call));  // the first one leaves early
  correlator_->OnKernelSpan(KernelSpan(7, 7, 0x34, 100, 200));  // not a sender
  correlator_->Flush();
  EXPECT_EQ(Unplaced(metrics_, "window_full"), 1u);
  EXPECT_EQ(Unplaced(metrics_, "no_app_spans"), 1u);
  EXPECT_EQ(Unplaced(metrics_, "telemetry"), 1u);
  EXPECT_EQ(Unplaced(metrics_, "not_a_sender"), 1u);
  EXPECT_EQ(Unplaced(metrics_, "not_contained"), 0u);
  EXPECT_EQ(metrics_.CounterTotal("kspan_correlator_unplaced_spans_total"),
            metrics_.CounterTotal("kspan_correlator_unmatched_total"));
  EXPECT_EQ(metrics_.CounterTotal("kspan_correlator_window_full_total"), 1u);
}

TEST_F(CorrelatorTest, SpanNoAppSpanContainsIsCountedNotContained) {
  Make();
  Known(42);
  correlator_->OnKernelSpan(KernelSpan(42, 42, 0x31, 50'000, 50'100));
  now_ += 2100ms;
  correlator_->Release();
  ASSERT_EQ(out_.size(), 1u);
  EXPECT_EQ(Unplaced(metrics_, "not_contained"), 1u);
}

TEST(CorrelatorThread, ReleasesOnItsOwnAfterTheWindow) {
  MetricsRegistry metrics;
  std::mutex mu;
  std::vector<Span> out;
  CorrelatorOptions o;
  o.join_window = 200ms;
  Correlator c(o, metrics, [&](Span&& s) {
    std::lock_guard lock(mu);
    out.push_back(std::move(s));
  });
  c.IndexAppSpans({AppSpan(42, 0x01, 0xf0, 0, 900'000, 900'001)}, ResourcePid);
  c.OnKernelSpan(KernelSpan(42, 42, 0x31, 100, 200));
  {
    std::lock_guard lock(mu);
    EXPECT_TRUE(out.empty());
  }
  for (int i = 0; i < 100; ++i) {
    {
      std::lock_guard lock(mu);
      if (!out.empty()) break;
    }
    std::this_thread::sleep_for(20ms);
  }
  std::lock_guard lock(mu);
  EXPECT_EQ(out.size(), 1u);
}

}  // namespace
}  // namespace kspan
