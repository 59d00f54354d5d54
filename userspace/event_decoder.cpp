#include "userspace/event_decoder.h"

#include <cstddef>
#include <cstring>

namespace kspan {

// The BPF side writes these structs; a layout drift must not compile.
static_assert(sizeof(kspan_tcp_connect_event) == 88);
static_assert(offsetof(kspan_tcp_connect_event, type) == 0);
static_assert(offsetof(kspan_tcp_connect_event, start_ns) == 16);
static_assert(offsetof(kspan_tcp_connect_event, end_ns) == 24);
static_assert(offsetof(kspan_tcp_connect_event, family) == 32);
static_assert(offsetof(kspan_tcp_connect_event, established) == 38);
static_assert(offsetof(kspan_tcp_connect_event, saddr) == 40);
static_assert(offsetof(kspan_tcp_connect_event, daddr) == 56);
static_assert(offsetof(kspan_tcp_connect_event, comm) == 72);

namespace {
constexpr char kErrors[] = "kspan_decoder_errors_total";
constexpr char kErrorsHelp[] = "Ring records the decoder rejected, by reason.";
}  // namespace

EventDecoder::EventDecoder(KernelEventHandler& handler, MetricsRegistry& metrics)
    : handler_(handler),
      decoded_(metrics.GetCounter("kspan_decoder_events_total",
                                  "Ring records decoded into kernel events.")),
      short_record_(metrics.GetCounter(kErrors, kErrorsHelp, {{"reason", "short_record"}})),
      unknown_type_(metrics.GetCounter(kErrors, kErrorsHelp, {{"reason", "unknown_type"}})),
      bad_size_(metrics.GetCounter(kErrors, kErrorsHelp, {{"reason", "size_mismatch"}})) {}

void EventDecoder::OnEvent(std::span<const std::byte> record) noexcept {
  std::uint32_t type = 0;
  if (record.size() < sizeof(type)) {
    short_record_.Add();
    return;
  }
  std::memcpy(&type, record.data(), sizeof(type));
  switch (type) {
    case KSPAN_EVENT_TCP_CONNECT: {
      kspan_tcp_connect_event e;
      if (record.size() != sizeof(e)) {
        bad_size_.Add();
        return;
      }
      // Ring records are 8-byte aligned, but copying keeps the decoder
      // independent of that and of strict aliasing.
      std::memcpy(&e, record.data(), sizeof(e));
      decoded_.Add();
      handler_.OnTcpConnect(e);
      return;
    }
    default:
      unknown_type_.Add();
  }
}

}  // namespace kspan
