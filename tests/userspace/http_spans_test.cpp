// The HTTP exchange tracker with synthetic records, as bpf/http.bpf.c writes
// them: pairing, keep-alive, pipelining, continued headers, trace context,
// status rules, bounds.
#include "userspace/http_spans.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstring>

#include "userspace/config.h"

namespace kspan {
namespace {

constexpr char kTrace[] = "4bf92f3577b34da6a3ce929d0e0e4736";
constexpr char kParent[] = "00f067aa0ba902b7";
const std::string kTraceparent = std::string("00-") + kTrace + "-" + kParent + "-01";

struct Rec {
  std::uint8_t kind = KSPAN_HTTP_REQUEST;
  std::uint8_t direction = KSPAN_HTTP_READ;
  std::uint64_t start = 0;
  std::uint64_t end = 0;
  std::string method = "GET";
  std::string path = "/";
  std::uint16_t status = 0;
  std::uint32_t bytes = 100;
  std::uint32_t header_len = 100;  // 0: the header block did not end
  std::string traceparent;
  std::string tracestate;
  std::uint32_t flags = 0;  // more KSPAN_HTTP_F_* bits
  std::uint64_t sock = 0x1000;
};

kspan_http_event Event(const Rec& r) {
  kspan_http_event e{};
  e.type = KSPAN_EVENT_HTTP;
  e.pid = 7;
  e.tid = 8;
  e.kind = r.kind;
  e.direction = r.direction;
  e.start_ns = r.start;
  e.end_ns = r.end ? r.end : r.start + 1000;
  e.sock_id = r.sock;
  e.sock_ino = 42;
  e.syscall_bytes = r.bytes;
  e.bytes = r.bytes;
  if (r.header_len) {
    e.header_len = r.header_len;
    e.flags |= KSPAN_HTTP_F_HEADERS_END;
  }
  e.family = AF_INET;
  e.local_port = 8080;
  e.peer_port = 50000;
  inet_pton(AF_INET, "10.0.0.1", e.local_addr);
  inet_pton(AF_INET, "10.0.0.2", e.peer_addr);
  e.version_minor = 1;
  e.status = r.status;
  e.method_len = static_cast<std::uint8_t>(r.method.size());
  std::memcpy(e.method, r.method.data(), r.method.size());
  e.path_len = static_cast<std::uint8_t>(r.path.size());
  std::memcpy(e.path, r.path.data(), r.path.size());
  e.traceparent_len = static_cast<std::uint8_t>(r.traceparent.size());
  std::memcpy(e.traceparent, r.traceparent.data(), r.traceparent.size());
  e.tracestate_len = static_cast<std::uint16_t>(r.tracestate.size());
  std::memcpy(e.tracestate, r.tracestate.data(), r.tracestate.size());
  std::strcpy(e.comm, "server");
  e.flags |= r.flags;
  return e;
}

Rec Request(std::uint64_t t, std::string path, std::uint8_t dir = KSPAN_HTTP_READ) {
  Rec r;
  r.start = t;
  r.path = std::move(path);
  r.direction = dir;
  return r;
}

Rec Response(std::uint64_t t, std::uint16_t status, std::uint8_t dir = KSPAN_HTTP_WRITE) {
  Rec r;
  r.kind = KSPAN_HTTP_RESPONSE;
  r.start = t;
  r.status = status;
  r.direction = dir;
  r.bytes = 120;  // 100 header bytes, 20 body bytes
  return r;
}

const std::int64_t* Int(const Span& s, std::string_view key) {
  const auto* v = FindAttribute(s.attributes, key);
  return v ? std::get_if<std::int64_t>(v) : nullptr;
}
std::string Str(const Span& s, std::string_view key) {
  const auto* v = FindAttribute(s.attributes, key);
  return v && std::holds_alternative<std::string>(*v) ? std::get<std::string>(*v) : "<absent>";
}

class HttpTrackerTest : public ::testing::Test {
 protected:
  std::vector<Span> Feed(const Rec& r) {
    auto out = tracker_.OnEvent(Event(r), ctx_);
    return out;
  }
  std::vector<Span> ExpireAt(std::uint64_t t) { return tracker_.Expire(t, ctx_); }

  ClockSync clock_{std::chrono::hours(1), [] { return ClockSync::Sample{1'000'000'000, 1}; }};
  ProcessResources resources_{
      ProcessResources::Options{.proc_root = "/nonexistent", .host_name = "h", .max_entries = 16}};
  IdGenerator ids_;
  SpanBuildContext ctx_{clock_, resources_, ids_};
  HttpTracker tracker_{HttpTrackerOptions{.response_idle = std::chrono::milliseconds(100),
                                          .response_timeout = std::chrono::seconds(5),
                                          .max_connections = 4}};
};

TEST(TraceParent, ValidAndInvalidPerW3C) {
  auto tp = ParseTraceParent(kTraceparent);
  ASSERT_TRUE(tp.has_value());
  EXPECT_EQ(ToHex(tp->trace_id), kTrace);
  EXPECT_EQ(ToHex(tp->parent_id), kParent);
  EXPECT_EQ(tp->flags, 1);
  // A later version may carry more fields after a '-'.
  EXPECT_TRUE(ParseTraceParent(std::string("01-") + kTrace + "-" + kParent + "-00-extra"));
  const std::string bad[] = {
      "",
      std::string("00-") + kTrace + "-" + kParent + "-1",            // short flags
      std::string("00-") + kTrace + "-" + kParent + "-01-extra",     // v00 has no more fields
      std::string("ff-") + kTrace + "-" + kParent + "-01",           // version ff
      std::string("00-") + std::string(32, '0') + "-" + kParent + "-01",  // zero trace id
      std::string("00-") + kTrace + "-" + std::string(16, '0') + "-01",   // zero parent id
      std::string("00-4BF92F3577B34DA6A3CE929D0E0E4736-") + kParent + "-01",  // upper case
      std::string("00_") + kTrace + "-" + kParent + "-01",
      std::string("0x-") + kTrace + "-" + kParent + "-01",
      std::string("01-") + kTrace + "-" + kParent + "-00x",
  };
  for (const auto& v : bad) EXPECT_FALSE(ParseTraceParent(v).has_value()) << v;
}

TEST(HttpPath, QueryAndFragmentDropped) {
  std::string query;
  EXPECT_EQ(HttpPathOf("/a/b?user=x&token=y", &query), "/a/b");
  EXPECT_EQ(query, "user=x&token=y");
  EXPECT_EQ(HttpPathOf("/a#frag", &query), "/a");
  EXPECT_EQ(HttpPathOf("http://example.com:8080/p?q=1"), "/p");
  EXPECT_EQ(HttpPathOf("http://example.com"), "/");
  EXPECT_EQ(HttpPathOf("*"), "*");
}

TEST_F(HttpTrackerTest, ServerKeepAliveManyRequestsInOrder) {
  std::vector<Span> spans;
  auto take = [&](std::vector<Span> v) { for (auto& s : v) spans.push_back(std::move(s)); };
  const std::uint16_t codes[] = {200, 201, 404, 500, 204};
  for (int i = 0; i < 5; ++i) {
    const std::uint64_t t = 1'000'000 * (i + 1);
    take(Feed(Request(t, "/r" + std::to_string(i))));
    take(Feed(Response(t + 500'000, codes[i])));
  }
  // The last response ends when the connection has been quiet long enough.
  EXPECT_EQ(spans.size(), 4u);
  take(ExpireAt(5'500'000 + 1000 + 50'000'000));  // not quiet long enough yet
  EXPECT_EQ(spans.size(), 4u);
  take(ExpireAt(5'500'000 + 1000 + 200'000'000));
  ASSERT_EQ(spans.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    const Span& s = spans[i];
    SCOPED_TRACE(i);
    EXPECT_EQ(s.name, "GET /r" + std::to_string(i));
    EXPECT_EQ(s.kind, SpanKind::kServer);
    EXPECT_EQ(*Int(s, "http.response.status_code"), codes[i]);
    EXPECT_EQ(s.status_code, codes[i] >= 500 ? StatusCode::kError : StatusCode::kUnset);
    EXPECT_EQ(s.end_unix_nano - s.start_unix_nano, 500'000u + 1000u);
    EXPECT_EQ(Str(s, "server.address"), "10.0.0.1");
    EXPECT_EQ(*Int(s, "server.port"), 8080);
    EXPECT_EQ(Str(s, "network.peer.address"), "10.0.0.2");
    EXPECT_EQ(*Int(s, "network.peer.port"), 50000);
    EXPECT_EQ(Str(s, "network.protocol.version"), "1.1");
    EXPECT_EQ(*Int(s, "http.request.body.size"), 0);
    EXPECT_EQ(*Int(s, "http.response.body.size"), 20);
    EXPECT_EQ(*Int(s, "process.pid"), 7);
    EXPECT_EQ(*Int(s, "thread.id"), 8);
    EXPECT_FALSE(IsValid(s.parent_span_id));
  }
  EXPECT_NE(spans[0].trace_id, spans[1].trace_id);
  EXPECT_EQ(tracker_.unanswered(), 0u);
}

TEST_F(HttpTrackerTest, PipelinedRequestsAnsweredInOrder) {
  EXPECT_TRUE(Feed(Request(1000, "/a")).empty());
  EXPECT_TRUE(Feed(Request(1000, "/b")).empty());  // same read
  EXPECT_TRUE(Feed(Response(5000, 200)).empty());
  auto first = Feed(Response(9000, 503));
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].name, "GET /a");
  EXPECT_EQ(*Int(first[0], "http.response.status_code"), 200);
  auto second = ExpireAt(9000 + 1000 + 200'000'000);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].name, "GET /b");
  EXPECT_EQ(*Int(second[0], "http.response.status_code"), 503);
  EXPECT_EQ(second[0].status_code, StatusCode::kError);
}

TEST_F(HttpTrackerTest, SplitRequestTakesTraceparentFromTheContinuation) {
  Rec head = Request(1000, "/split");
  head.header_len = 0;  // headers continue
  head.bytes = 60;
  Feed(head);
  Rec more;
  more.kind = KSPAN_HTTP_HEADERS;
  more.start = 2000;
  more.bytes = 80;
  more.header_len = 70;  // then 10 body bytes
  more.traceparent = kTraceparent;
  more.tracestate = "a=b";
  more.method.clear();
  more.path.clear();
  Feed(more);
  Feed(Response(4000, 200));
  auto spans = tracker_.OnEvent(Event([] {
                                  Rec c;
                                  c.kind = KSPAN_HTTP_CLOSE;
                                  c.start = 9000;
                                  return c;
                                }()),
                                ctx_);
  ASSERT_EQ(spans.size(), 1u);
  const Span& s = spans[0];
  EXPECT_EQ(ToHex(s.trace_id), kTrace);
  EXPECT_EQ(ToHex(s.parent_span_id), kParent);
  EXPECT_EQ(s.trace_state, "a=b");
  EXPECT_EQ(s.flags & 0xff, 1u);
  EXPECT_EQ(s.flags & 0x300, 0x300u);
  EXPECT_EQ(*Int(s, "http.request.body.size"), 10);  // 60 + 80 bytes, 60 + 70 of headers
  EXPECT_EQ(tracker_.connections(), 0u);
}

TEST_F(HttpTrackerTest, ACutTracestateIsDroppedTheTraceparentKept) {
  // The kernel keeps 256 bytes of tracestate (W3C allows 512): a longer one
  // arrives cut and flagged, and a partial list is not passed on.
  Rec rq = Request(1000, "/long-state");
  rq.traceparent = kTraceparent;
  rq.tracestate = std::string(KSPAN_HTTP_TRACESTATE_MAX - 4, 'a') + "=bcd";
  rq.flags = KSPAN_HTTP_F_TRACESTATE_CUT;
  Feed(rq);
  Feed(Response(4000, 200));
  auto spans = tracker_.OnEvent(Event([] {
                                  Rec c;
                                  c.kind = KSPAN_HTTP_CLOSE;
                                  c.start = 9000;
                                  return c;
                                }()),
                                ctx_);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(ToHex(spans[0].trace_id), kTrace);
  EXPECT_EQ(ToHex(spans[0].parent_span_id), kParent);
  EXPECT_EQ(spans[0].trace_state, "");
}

TEST_F(HttpTrackerTest, ClientSpanJoinsTheInjectedTraceAndErrsOn4xx) {
  Rec rq = Request(1000, "/api?secret=1", KSPAN_HTTP_WRITE);
  rq.traceparent = kTraceparent;
  Feed(rq);
  Rec body;
  body.kind = KSPAN_HTTP_DATA;
  body.direction = KSPAN_HTTP_READ;
  body.start = 6000;
  body.bytes = 1000;
  body.header_len = 0;
  Feed(Response(5000, 404, KSPAN_HTTP_READ));
  Feed(body);  // more of the response body
  auto spans = ExpireAt(7000 + 200'000'000);
  ASSERT_EQ(spans.size(), 1u);
  const Span& s = spans[0];
  EXPECT_EQ(s.kind, SpanKind::kClient);
  EXPECT_EQ(s.name, "GET /api");
  EXPECT_EQ(Str(s, "url.path"), "/api");
  EXPECT_EQ(FindAttribute(s.attributes, "url.query"), nullptr);
  EXPECT_EQ(ToHex(s.trace_id), kTrace);
  EXPECT_EQ(ToHex(s.parent_span_id), kParent);
  EXPECT_EQ(s.status_code, StatusCode::kError);
  EXPECT_EQ(Str(s, "error.type"), "404");
  EXPECT_EQ(Str(s, "server.address"), "10.0.0.2");  // the peer
  EXPECT_EQ(*Int(s, "server.port"), 50000);
  EXPECT_EQ(*Int(s, "http.response.body.size"), 1020);
  // Ends with the last read of the response.
  EXPECT_EQ(s.end_unix_nano - s.start_unix_nano, 5000u + 1000u);
}

TEST_F(HttpTrackerTest, ServerDoesNotErrOn4xx) {
  Feed(Request(1000, "/missing"));
  Feed(Response(2000, 404));
  auto spans = ExpireAt(3000 + 200'000'000);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].status_code, StatusCode::kUnset);
}

TEST_F(HttpTrackerTest, InvalidTraceparentIgnoredAndCounted) {
  Rec rq = Request(1000, "/x");
  rq.traceparent = std::string("00-") + std::string(32, '0') + "-" + kParent + "-01";
  rq.tracestate = "a=b";
  Feed(rq);
  Feed(Response(2000, 200));
  auto spans = ExpireAt(3000 + 200'000'000);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_TRUE(IsValid(spans[0].trace_id));
  EXPECT_NE(ToHex(spans[0].trace_id), std::string(32, '0'));
  EXPECT_FALSE(IsValid(spans[0].parent_span_id));
  EXPECT_EQ(spans[0].trace_state, "");
  EXPECT_EQ(tracker_.invalid_traceparent(), 1u);
}

TEST_F(HttpTrackerTest, QueryKeptOnlyWhenAskedFor) {
  HttpTracker keep(HttpTrackerOptions{.response_idle = std::chrono::milliseconds(1),
                                      .keep_query = true});
  keep.OnEvent(Event(Request(1000, "/s?q=kspan")), ctx_);
  keep.OnEvent(Event(Response(2000, 200)), ctx_);
  auto spans = keep.Expire(1'000'000'000, ctx_);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].name, "GET /s");
  EXPECT_EQ(Str(spans[0], "url.query"), "q=kspan");
}

TEST_F(HttpTrackerTest, NonHttpAndStrayRecordsMakeNothing) {
  Rec data;
  data.kind = KSPAN_HTTP_DATA;
  data.start = 1000;
  EXPECT_TRUE(Feed(data).empty());          // no connection known
  EXPECT_TRUE(Feed(Response(2000, 200)).empty());  // a response before any request
  EXPECT_EQ(tracker_.unmatched(), 1u);
  EXPECT_TRUE(ExpireAt(10'000'000'000).empty());
}

TEST_F(HttpTrackerTest, UnansweredRequestsEndOnCloseAndTimeout) {
  Feed(Request(1000, "/slow"));
  auto timed_out = ExpireAt(1000 + 6'000'000'000);
  ASSERT_EQ(timed_out.size(), 1u);
  EXPECT_EQ(timed_out[0].status_code, StatusCode::kError);
  EXPECT_EQ(Str(timed_out[0], "error.type"), "no_response");
  EXPECT_EQ(timed_out[0].end_unix_nano - timed_out[0].start_unix_nano, 5'000'000'000u);

  Rec other = Request(2000, "/gone");
  other.sock = 0x2000;
  Feed(other);
  Rec close;
  close.kind = KSPAN_HTTP_CLOSE;
  close.start = 3000;
  close.sock = 0x2000;
  auto closed = Feed(close);
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(Str(closed[0], "kspan.http.no_response"), "connection closed without a response");
  EXPECT_EQ(tracker_.unanswered(), 2u);
}

TEST_F(HttpTrackerTest, ConnectionsBoundedOldestEnded) {
  for (std::uint64_t i = 0; i < 6; ++i) {
    Rec r = Request(1000 + i, "/c");
    r.sock = 0x1000 + i;
    Feed(r);
  }
  EXPECT_EQ(tracker_.connections(), 4u);
  EXPECT_EQ(tracker_.evicted(), 2u);
  EXPECT_EQ(tracker_.unanswered(), 2u);
}

TEST(HttpConfig, ParsedAndValidated) {
  auto env = [](const char*) -> const char* { return nullptr; };
  auto c = ParseConfig(
      "capture:\n  http:\n    enabled: false\n    response_idle: 250ms\n    keep_query: true\n",
      "t.yaml", {}, env);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->capture.http.enabled);
  EXPECT_EQ(c->capture.http.response_idle, std::chrono::milliseconds(250));
  EXPECT_TRUE(c->capture.http.keep_query);
  EXPECT_EQ(c->capture.http.root_spans_per_second, 100u);  // the default
  EXPECT_EQ(c->capture.http.variant, "auto");
  auto bad = ParseConfig("capture:\n  http:\n    body: yes\n", "t.yaml", {}, env);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("capture.http"), std::string::npos) << bad.status();

  auto sampled = ParseConfig(
      "capture:\n  http:\n    root_spans_per_second: 0\n    variant: tracepoint\n", "t.yaml", {},
      env);
  ASSERT_TRUE(sampled.ok()) << sampled.status();
  EXPECT_EQ(sampled->capture.http.root_spans_per_second, 0u);
  EXPECT_EQ(sampled->capture.http.variant, "tracepoint");
  for (const char* wrong : {"capture:\n  http:\n    root_spans_per_second: -1\n",
                            "capture:\n  http:\n    variant: kprobe\n"}) {
    auto w = ParseConfig(wrong, "t.yaml", {}, env);
    ASSERT_FALSE(w.ok()) << wrong;
    EXPECT_NE(w.status().message().find("capture.http."), std::string::npos) << w.status();
  }
}

}  // namespace
}  // namespace kspan
