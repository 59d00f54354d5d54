// The userspace half of HTTP capture: records as bpf/http.bpf.c writes them
// (request and status lines, trace context header values, header ends, body
// data, closes) paired into exchanges by HttpTracker, the W3C traceparent
// parser and the request-target parser.
//
// Input: whole kspan_http_event records back to back (a partial last one is
// ignored), so records read from a real ring are seeds as they are. Each is
// fed as the kernel could never write it too: lengths and strings as they
// come, times anywhere. Only the keys are folded (3 processes, 4 sockets, 2
// inodes) and the kind and direction brought into their ranges (one value
// out of range each), so that records meet on connections. pad0, which the
// kernel leaves zero, drives the tick: when set, Expire() runs pad0 ms after
// the record. The tracker is bounded small (4 connections, 4 pending) so
// that eviction runs too.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/kernel_context.h"
#include "userspace/http_spans.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kspan::fuzz::QuietLogs();
  return 0;
}

namespace {

void CheckSpans(const std::vector<kspan::Span>& spans) {
  for (const auto& s : spans) {
    FUZZ_CHECK(kspan::IsValid(s.trace_id));
    FUZZ_CHECK(kspan::IsValid(s.span_id));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kspan;
  fuzz::KernelContext k;
  HttpTracker tracker(HttpTrackerOptions{.response_idle = std::chrono::milliseconds(100),
                                         .response_timeout = std::chrono::seconds(1),
                                         .connection_idle = std::chrono::seconds(2),
                                         .max_connections = 4,
                                         .max_pending = 4,
                                         .keep_query = (size & 1) != 0});
  for (std::size_t at = 0; at + sizeof(kspan_http_event) <= size; at += sizeof(kspan_http_event)) {
    kspan_http_event e;
    std::memcpy(&e, data + at, sizeof(e));
    e.pid %= 3;
    e.sock_id %= 4;
    e.sock_ino %= 2;
    e.kind %= KSPAN_HTTP_CLOSE + 1;
    e.direction %= KSPAN_HTTP_WRITE + 1;
    // The parsers on their own, on the record's strings as far as its
    // lengths say (cut at the field, as HttpTracker cuts them).
    (void)ParseTraceParent(std::string_view(e.traceparent, std::min<std::size_t>(e.traceparent_len, sizeof(e.traceparent))));
    std::string query;
    (void)HttpPathOf(std::string_view(e.path, std::min<std::size_t>(e.path_len, sizeof(e.path))), &query);
    CheckSpans(tracker.OnEvent(e, k.ctx));
    if (e.pad0 != 0) {
      CheckSpans(tracker.Expire(e.end_ns + std::uint64_t{e.pad0} * 1'000'000, k.ctx));
    }
    FUZZ_CHECK(tracker.connections() <= 4);
  }
  CheckSpans(tracker.Flush(k.ctx));
  FUZZ_CHECK(tracker.connections() == 0);
  return 0;
}
