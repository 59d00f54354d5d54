#include "userspace/event_decoder.h"

#include <algorithm>
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
static_assert(sizeof(kspan_tcp_endpoints) == 40);
static_assert(sizeof(kspan_tcp_accept_event) == 88);
static_assert(offsetof(kspan_tcp_accept_event, queued_ns) == 16);
static_assert(offsetof(kspan_tcp_accept_event, ep) == 32);
static_assert(offsetof(kspan_tcp_accept_event, comm) == 72);
static_assert(sizeof(kspan_tcp_conn_event) == 128);
static_assert(offsetof(kspan_tcp_conn_event, sock_id) == 16);
static_assert(offsetof(kspan_tcp_conn_event, bytes_sent) == 40);
static_assert(offsetof(kspan_tcp_conn_event, srtt_us) == 68);
static_assert(offsetof(kspan_tcp_conn_event, ep) == 72);
static_assert(offsetof(kspan_tcp_conn_event, comm) == 112);
static_assert(sizeof(kspan_tcp_note) == 32);
static_assert(offsetof(kspan_tcp_note, ts_ns) == 16);

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

template <typename Record>
bool EventDecoder::Copy(std::span<const std::byte> record, Record* out) noexcept {
  if (record.size() != sizeof(Record)) {
    bad_size_.Add();
    return false;
  }
  // Ring records are 8-byte aligned, but copying keeps the decoder
  // independent of that and of strict aliasing.
  std::memcpy(out, record.data(), sizeof(Record));
  decoded_.Add();
  return true;
}

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
      if (Copy(record, &e)) handler_.OnTcpConnect(e);
      return;
    }
    case KSPAN_EVENT_TCP_ACCEPT: {
      kspan_tcp_accept_event e;
      if (Copy(record, &e)) handler_.OnTcpAccept(e);
      return;
    }
    case KSPAN_EVENT_TCP_CONN: {
      kspan_tcp_conn_event e;
      if (Copy(record, &e)) handler_.OnTcpConn(e);
      return;
    }
    case KSPAN_EVENT_TCP_CONN_EVENT: {
      kspan_tcp_note e;
      if (Copy(record, &e)) handler_.OnTcpNote(e);
      return;
    }
    default:
      unknown_type_.Add();
  }
}

}  // namespace kspan
