// DNS messages as bpf/dns.bpf.c copies them from UDP port 53 traffic (the
// header and the first question, cut at KSPAN_DNS_PAYLOAD): ParseDnsMessage
// (names decoded by c-ares, compression pointers included), then the
// DnsTracker pairing a query with its response into a span. A response comes
// from whatever answers on port 53, so these bytes are untrusted.
//
// Input: one DNS message. It is fed as a query, then with the response bit
// set as its answer, then as itself again (a response to nothing, or a
// second query), and the pending queries expire. Seeds: real queries and
// answers (corpus/dns_spans/README.md).
#include <sys/socket.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/kernel_context.h"
#include "userspace/dns_spans.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kspan::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kspan;
  // The parser on exactly the input's bytes (reads past them are caught).
  if (auto m = ParseDnsMessage(std::span<const std::uint8_t>(data, size))) {
    (void)DnsTypeName(m->qtype);
    (void)DnsRcodeName(m->rcode);
  }

  fuzz::KernelContext k;
  DnsTracker tracker(std::chrono::seconds(5), /*max_pending=*/2);
  kspan_dns_event e{};
  e.type = KSPAN_EVENT_DNS;
  e.pid = 42;
  e.tid = 42;
  e.ts_ns = 1'000'000'000;
  e.sock_id = 7;
  e.family = AF_INET;
  e.server_port = 53;
  e.server[0] = 127;
  e.server[3] = 53;
  std::memcpy(e.comm, "resolver", 9);
  e.len = static_cast<std::uint16_t>(std::min<std::size_t>(size, KSPAN_DNS_PAYLOAD));
  std::memcpy(e.payload, data, e.len);

  std::size_t spans = 0;
  e.direction = KSPAN_DNS_QUERY;
  spans += tracker.OnMessage(e, k.ctx).size();
  e.direction = KSPAN_DNS_RESPONSE;
  e.ts_ns += 1'000'000;
  if (e.len > 2) e.payload[2] |= 0x80;  // QR: a response
  spans += tracker.OnMessage(e, k.ctx).size();
  std::memcpy(e.payload, data, e.len);
  e.direction = (size & 1) ? KSPAN_DNS_QUERY : KSPAN_DNS_RESPONSE;
  spans += tracker.OnMessage(e, k.ctx).size();
  spans += tracker.Expire(e.ts_ns + 10'000'000'000, k.ctx).size();
  FUZZ_CHECK(tracker.pending() == 0);
  FUZZ_CHECK(spans <= 3);
  return 0;
}
