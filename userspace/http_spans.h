// HTTP/1.x records (bpf/http.h) -> one span per request/response exchange.
//
// Per connection (process, socket), requests are matched to responses in
// order (keep-alive and pipelining are FIFO in HTTP/1.x), on both sides:
//   SERVER  the process reads a request and writes the response,
//   CLIENT  the process writes a request and reads the response.
//
// A response has no end marker kspan can see without parsing its body, so a
// response is over when the next response on the connection starts, when the
// connection is closed, or when no more of its data has been seen for
// `response_idle` (checked by Expire() from the agent tick). Its end time is
// always the end of the last syscall that carried its bytes.
//
// A request with no response within `response_timeout`, or whose connection
// closed first, becomes an error span marked `kspan.http.no_response`.
// Bounded: at most max_connections connections and max_pending requests per
// connection; beyond that the oldest is ended early and counted.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "bpf/http.h"
#include "exporter/span.h"
#include "userspace/tcp_spans.h"

namespace kspan {

// A W3C traceparent header value (https://www.w3.org/TR/trace-context/).
struct TraceParent {
  std::uint8_t version = 0;
  TraceId trace_id{};
  SpanId parent_id{};
  std::uint8_t flags = 0;
};

// Validates per the W3C Trace Context specification: lower-case hex fields
// of the exact lengths, version not ff, ids not all zero; version 00 is
// exactly 55 characters, a higher version may carry more after a '-'.
std::optional<TraceParent> ParseTraceParent(std::string_view value);

// "/a/b?x=1" -> "/a/b"; "http://host:80/a?x" -> "/a"; "*" stays "*".
std::string HttpPathOf(std::string_view target, std::string* query = nullptr);

struct HttpTrackerOptions {
  std::chrono::nanoseconds response_idle = std::chrono::milliseconds(500);
  std::chrono::nanoseconds response_timeout = std::chrono::seconds(30);
  // A connection with nothing in flight is forgotten after this long.
  std::chrono::nanoseconds connection_idle = std::chrono::seconds(120);
  std::size_t max_connections = 16384;
  std::size_t max_pending = 64;  // requests waiting for a response, per connection
  bool keep_query = false;       // url.query attribute (may carry secrets: off by default)
};

class HttpTracker {
 public:
  explicit HttpTracker(HttpTrackerOptions options = {}) : options_(options) {}

  // Spans completed by this record.
  std::vector<Span> OnEvent(const kspan_http_event& e, SpanBuildContext& ctx);
  // Responses idle longer than response_idle, requests unanswered longer
  // than response_timeout, connections idle longer than connection_idle.
  std::vector<Span> Expire(std::uint64_t now_mono_ns, SpanBuildContext& ctx);
  // Everything still open, ended now (agent shutdown).
  std::vector<Span> Flush(SpanBuildContext& ctx);

  std::size_t connections() const { return conns_.size(); }
  std::uint64_t unanswered() const { return unanswered_; }
  std::uint64_t invalid_traceparent() const { return invalid_traceparent_; }
  std::uint64_t unmatched() const { return unmatched_; }
  std::uint64_t evicted() const { return evicted_; }

 private:
  struct Message {
    std::uint64_t start_ns = 0;
    std::uint64_t end_ns = 0;
    std::uint32_t tid = 0;
    std::uint64_t bytes = 0;
    std::uint64_t header_len = 0;
    bool headers_done = false;
    std::string method;
    std::string target;
    std::uint16_t status = 0;
    int version_minor = 1;
    std::string traceparent;
    std::string tracestate;
    bool tracestate_cut = false;  // longer than the kernel keeps: not passed on
  };
  struct Exchange {
    Message request;
    std::optional<Message> response;
  };
  struct Connection {
    kspan_http_event first{};  // process, addresses, comm
    int server = -1;           // -1 unknown, 1 server side, 0 client side
    std::deque<Exchange> pending;
    std::optional<Exchange> answering;  // its response is being transferred
    std::uint64_t last_ns = 0;
  };
  using Key = std::tuple<std::uint32_t, std::uint64_t, std::uint64_t>;  // pid, sock, inode

  static Message FromRecord(const kspan_http_event& e);
  static void Merge(Message& m, const kspan_http_event& e);
  Span Build(const Connection& c, const Exchange& x, const char* no_response,
             std::uint64_t end_ns, SpanBuildContext& ctx);
  void EndAll(Connection& c, const char* why, std::uint64_t end_ns, std::vector<Span>& out,
              SpanBuildContext& ctx);
  Connection& ConnectionFor(const kspan_http_event& e, std::vector<Span>& out,
                            SpanBuildContext& ctx);

  HttpTrackerOptions options_;
  std::map<Key, Connection> conns_;
  std::uint64_t unanswered_ = 0;
  std::uint64_t invalid_traceparent_ = 0;
  std::uint64_t unmatched_ = 0;
  std::uint64_t evicted_ = 0;
};

}  // namespace kspan
