// DNS messages -> client spans: a query and its response (same process,
// socket and DNS id) become one span; a query with no response within the
// timeout becomes an error span. Bounded: at most max_pending queries wait.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "bpf/dns.h"
#include "exporter/span.h"
#include "userspace/tcp_spans.h"

namespace kspan {

struct DnsMessage {
  std::uint16_t id = 0;
  bool response = false;
  int rcode = 0;
  std::uint16_t questions = 0;
  std::uint16_t answers = 0;
  std::string qname;  // empty when the question was cut off
  std::uint16_t qtype = 0;
};

// Parses the header and the first question. nullopt for anything that is
// not a DNS message (too short, no question).
std::optional<DnsMessage> ParseDnsMessage(std::span<const std::uint8_t> bytes);
std::string DnsTypeName(std::uint16_t qtype);
std::string DnsRcodeName(int rcode);

class DnsTracker {
 public:
  explicit DnsTracker(std::chrono::nanoseconds timeout = std::chrono::seconds(5),
                      std::size_t max_pending = 4096)
      : timeout_(timeout), max_pending_(max_pending) {}

  // Spans completed by this message (a matched response; an evicted query).
  std::vector<Span> OnMessage(const kspan_dns_event& e, SpanBuildContext& ctx);
  // Queries waiting longer than the timeout, as "no response" spans.
  std::vector<Span> Expire(std::uint64_t now_mono_ns, SpanBuildContext& ctx);

  std::uint64_t malformed() const { return malformed_; }
  std::uint64_t unmatched_responses() const { return unmatched_; }
  std::size_t pending() const { return pending_.size(); }

 private:
  struct Pending {
    kspan_dns_event query;
    DnsMessage message;
  };
  using Key = std::tuple<std::uint32_t, std::uint64_t, std::uint16_t>;  // pid, socket, id

  Span Build(const Pending& q, const kspan_dns_event* response, const DnsMessage* answer,
             SpanBuildContext& ctx) const;

  std::chrono::nanoseconds timeout_;
  std::size_t max_pending_;
  std::map<Key, Pending> pending_;
  std::uint64_t malformed_ = 0;
  std::uint64_t unmatched_ = 0;
};

}  // namespace kspan
