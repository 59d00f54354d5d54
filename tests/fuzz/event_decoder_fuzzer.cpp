// Ring records -> EventDecoder -> kernel event handlers: once into a
// handler that does nothing (the decoder's own checks of type and size),
// once into the real SpanAssembler (every family's span building, with the
// TCP note buffer, DNS and HTTP pairing and process identities carried from
// one record to the next), as the agent's ring reader hands them on.
//
// Input: records, each a 16-bit little-endian length and that many bytes
// (a length past the end takes what is left), so records captured from the
// real rings are seeds (corpus/README.md). At the end the assembler's
// timers run and open HTTP exchanges are flushed, as at shutdown.
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <cstdint>
#include <span>
#include <vector>

#include "exporter/self_metrics.h"
#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/kernel_context.h"
#include "userspace/event_decoder.h"
#include "userspace/span_assembler.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kspan::fuzz::QuietLogs();
  return 0;
}

namespace {

class NoopHandler final : public kspan::KernelEventHandler {
 public:
  void OnTcpConnect(const kspan_tcp_connect_event&) noexcept override {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kspan;
  fuzz::KernelContext k;
  MetricsRegistry metrics;
  MetricsRegistry plain_metrics;  // the decoders' counters apart
  NoopHandler noop;
  EventDecoder plain(noop, plain_metrics);
  std::size_t spans = 0;
  std::uint64_t last_ns = 0;
  {
    SpanAssembler assembler(
        k.clock, k.resources, metrics,
        [&](Span&& s) {
          FUZZ_CHECK(IsValid(s.trace_id) && IsValid(s.span_id));
          ++spans;
        },
        HttpTrackerOptions{.max_connections = 4, .max_pending = 4});
    EventDecoder decoder(assembler, metrics);
    std::size_t records = 0;
    for (std::size_t at = 0; at + 2 <= size;) {
      std::size_t len = data[at] | std::size_t{data[at + 1]} << 8;
      at += 2;
      len = std::min(len, size - at);
      // A copy of exactly the record's bytes, so reading past it is caught.
      const std::vector<std::byte> record(reinterpret_cast<const std::byte*>(data + at),
                                          reinterpret_cast<const std::byte*>(data + at + len));
      plain.OnEvent(record);
      decoder.OnEvent(record);
      ++records;
      if (len >= 24) {
        std::uint64_t ts;
        std::memcpy(&ts, data + at + 16, sizeof(ts));  // start or ts of every family
        last_ns = std::max(last_ns, ts);
      }
      at += len;
    }
    FUZZ_CHECK(plain.decoded() + plain.errors() == records);
    FUZZ_CHECK(decoder.decoded() + decoder.errors() == records);
    assembler.ExpireDns(last_ns + 10'000'000'000);
    assembler.ExpireHttp(last_ns + 10'000'000'000);
    assembler.FlushHttp();
  }
  (void)spans;
  return 0;
}
