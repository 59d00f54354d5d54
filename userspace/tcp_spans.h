// TCP kernel records -> spans: connect attempts, accepts, and connection
// lifetimes with their retransmit/reset notes as span events.
#pragma once

#include <cstdint>
#include <deque>
#include <unordered_map>
#include <vector>

#include "bpf/tcp.h"
#include "exporter/span.h"
#include "userspace/clock_sync.h"
#include "userspace/id_generator.h"
#include "userspace/process_resources.h"

namespace kspan {

// What every span builder needs: time conversion, ids, resources.
struct SpanBuildContext {
  ClockSync& clock;
  ProcessResources& resources;
  IdGenerator& ids;
};

// The name of a connect attempt's span (the correlator places it by its
// connection).
inline constexpr char kTcpConnectSpanName[] = "tcp connect";

Span BuildTcpConnectSpan(const kspan_tcp_connect_event& e, SpanBuildContext& ctx);
Span BuildTcpAcceptSpan(const kspan_tcp_accept_event& e, SpanBuildContext& ctx);
Span BuildTcpConnectionSpan(const kspan_tcp_conn_event& e, std::vector<SpanEvent> notes,
                            SpanBuildContext& ctx);

// Notes (retransmits, resets) wait here, keyed by connection, until that
// connection's lifetime record arrives. Bounded: beyond the limits the
// oldest connection's notes are discarded and counted.
class TcpNoteBuffer {
 public:
  explicit TcpNoteBuffer(std::size_t max_connections = 16384, std::size_t max_per_connection = 64)
      : max_connections_(max_connections), max_per_connection_(max_per_connection) {}

  void Add(const kspan_tcp_note& note, std::uint64_t unix_ns);
  std::vector<SpanEvent> Take(std::uint64_t sock_id);
  std::uint64_t discarded() const { return discarded_; }
  std::size_t connections() const { return pending_.size(); }

 private:
  std::size_t max_connections_;
  std::size_t max_per_connection_;
  std::unordered_map<std::uint64_t, std::vector<SpanEvent>> pending_;
  std::deque<std::uint64_t> order_;  // insertion order, for eviction
  std::uint64_t discarded_ = 0;
};

const char* TcpStateName(std::uint32_t state);

}  // namespace kspan
