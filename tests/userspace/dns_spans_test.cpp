#include "userspace/dns_spans.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstring>

namespace kspan {
namespace {

// "www.example.com" type AAAA, id 0xbeef; `response` sets QR and the rcode.
std::vector<std::uint8_t> Message(bool response, int rcode, std::uint16_t id = 0xbeef) {
  std::vector<std::uint8_t> m = {static_cast<std::uint8_t>(id >> 8), static_cast<std::uint8_t>(id),
                                 static_cast<std::uint8_t>(response ? 0x81 : 0x01),
                                 static_cast<std::uint8_t>(response ? (0x80 | rcode) : 0),
                                 0, 1, 0, static_cast<std::uint8_t>(response ? 2 : 0), 0, 0, 0, 0,
                                 3, 'w', 'w', 'w', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c',
                                 'o', 'm', 0, 0, 28, 0, 1};
  return m;
}

kspan_dns_event Event(std::uint16_t direction, const std::vector<std::uint8_t>& payload,
                      std::uint64_t ts) {
  kspan_dns_event e{};
  e.type = KSPAN_EVENT_DNS;
  e.pid = 7;
  e.tid = 8;
  e.direction = direction;
  e.ts_ns = ts;
  e.sock_id = 0x1000;
  e.family = AF_INET;
  e.server_port = 53;
  inet_pton(AF_INET, "10.0.0.53", e.server);
  std::strcpy(e.comm, "curl");
  e.len = static_cast<std::uint16_t>(payload.size());
  std::memcpy(e.payload, payload.data(), payload.size());
  return e;
}

TEST(DnsMessage, ParsesHeaderAndQuestion) {
  auto q = Message(false, 0);
  auto m = ParseDnsMessage(q);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->id, 0xbeef);
  EXPECT_FALSE(m->response);
  EXPECT_EQ(m->qname, "www.example.com");
  EXPECT_EQ(DnsTypeName(m->qtype), "AAAA");

  auto r = ParseDnsMessage(Message(true, 3));
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->response);
  EXPECT_EQ(DnsRcodeName(r->rcode), "NXDOMAIN");
  EXPECT_EQ(r->answers, 2);
}

TEST(DnsMessage, RejectsWhatIsNotDns) {
  std::vector<std::uint8_t> tiny = {1, 2, 3};
  EXPECT_FALSE(ParseDnsMessage(tiny).has_value());
  auto no_question = Message(false, 0);
  no_question[5] = 0;
  EXPECT_FALSE(ParseDnsMessage(no_question).has_value());
  auto cut = Message(false, 0);
  cut.resize(16);  // the name runs past the end
  auto m = ParseDnsMessage(cut);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->qname, "");
}

class DnsTrackerTest : public ::testing::Test {
 protected:
  ClockSync clock_{std::chrono::hours(1), [] { return ClockSync::Sample{1'000'000'000, 1}; }};
  ProcessResources resources_{
      ProcessResources::Options{.proc_root = "/nonexistent", .host_name = "h", .max_entries = 16}};
  IdGenerator ids_;
  SpanBuildContext ctx_{clock_, resources_, ids_};
};

TEST_F(DnsTrackerTest, PairsAResponseWithItsQuery) {
  DnsTracker tracker;
  EXPECT_TRUE(tracker.OnMessage(Event(KSPAN_DNS_QUERY, Message(false, 0), 1000), ctx_).empty());
  auto spans = tracker.OnMessage(Event(KSPAN_DNS_RESPONSE, Message(true, 0), 5000), ctx_);
  ASSERT_EQ(spans.size(), 1u);
  const Span& s = spans[0];
  EXPECT_EQ(s.name, "dns query");
  EXPECT_EQ(s.end_unix_nano - s.start_unix_nano, 4000u);
  EXPECT_EQ(std::get<std::string>(*FindAttribute(s.attributes, "dns.question.name")), "www.example.com");
  EXPECT_EQ(std::get<std::string>(*FindAttribute(s.attributes, "kspan.dns.response_code")), "NOERROR");
  EXPECT_EQ(std::get<std::string>(*FindAttribute(s.attributes, "server.address")), "10.0.0.53");
  EXPECT_EQ(s.status_code, StatusCode::kUnset);
  EXPECT_EQ(tracker.pending(), 0u);
}

TEST_F(DnsTrackerTest, UnansweredQueriesExpireAsErrors) {
  DnsTracker tracker(std::chrono::milliseconds(100));
  tracker.OnMessage(Event(KSPAN_DNS_QUERY, Message(false, 0), 0), ctx_);
  EXPECT_TRUE(tracker.Expire(50'000'000, ctx_).empty());
  auto spans = tracker.Expire(200'000'000, ctx_);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].status_code, StatusCode::kError);
  EXPECT_EQ(std::get<std::string>(*FindAttribute(spans[0].attributes, "error.type")), "timeout");
}

TEST_F(DnsTrackerTest, StaysBoundedAndCountsStrangers) {
  DnsTracker tracker(std::chrono::seconds(5), /*max_pending=*/2);
  std::size_t evicted = 0;
  for (std::uint16_t id = 1; id <= 5; ++id) {
    evicted += tracker.OnMessage(Event(KSPAN_DNS_QUERY, Message(false, 0, id), id), ctx_).size();
  }
  EXPECT_EQ(tracker.pending(), 2u);
  EXPECT_EQ(evicted, 3u);  // reported as unanswered, not lost
  tracker.OnMessage(Event(KSPAN_DNS_RESPONSE, Message(true, 0, 999), 10), ctx_);
  EXPECT_EQ(tracker.unmatched_responses(), 1u);
  std::vector<std::uint8_t> junk(8, 0xff);  // shorter than a DNS header
  tracker.OnMessage(Event(KSPAN_DNS_QUERY, junk, 11), ctx_);
  EXPECT_EQ(tracker.malformed(), 1u);
}

}  // namespace
}  // namespace kspan
