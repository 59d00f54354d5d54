#include "userspace/event_decoder.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace kspan {
namespace {

struct Recorder : KernelEventHandler {
  std::vector<kspan_tcp_connect_event> connects;
  void OnTcpConnect(const kspan_tcp_connect_event& e) noexcept override { connects.push_back(e); }
};

std::vector<std::byte> Bytes(const void* p, std::size_t n) {
  std::vector<std::byte> v(n);
  std::memcpy(v.data(), p, n);
  return v;
}

TEST(EventDecoder, DecodesTcpConnectRecord) {
  MetricsRegistry metrics;
  Recorder rec;
  EventDecoder decoder(rec, metrics);
  kspan_tcp_connect_event e{};
  e.type = KSPAN_EVENT_TCP_CONNECT;
  e.pid = 42;
  e.tid = 43;
  e.start_ns = 1000;
  e.end_ns = 2000;
  e.dport = 8080;
  std::strcpy(e.comm, "curl");
  auto bytes = Bytes(&e, sizeof(e));
  decoder.OnEvent(bytes);
  ASSERT_EQ(rec.connects.size(), 1u);
  EXPECT_EQ(rec.connects[0].pid, 42u);
  EXPECT_EQ(rec.connects[0].tid, 43u);
  EXPECT_EQ(rec.connects[0].dport, 8080);
  EXPECT_STREQ(rec.connects[0].comm, "curl");
  EXPECT_EQ(decoder.decoded(), 1u);
  EXPECT_EQ(decoder.errors(), 0u);
}

TEST(EventDecoder, RejectsMalformedRecordsAndCountsEachReason) {
  MetricsRegistry metrics;
  Recorder rec;
  EventDecoder decoder(rec, metrics);

  std::byte tiny[2] = {};
  decoder.OnEvent(tiny);

  kspan_tcp_connect_event e{};
  e.type = KSPAN_EVENT_TCP_CONNECT;
  auto truncated = Bytes(&e, sizeof(e) - 8);
  decoder.OnEvent(truncated);

  e.type = 9999;
  auto unknown = Bytes(&e, sizeof(e));
  decoder.OnEvent(unknown);

  EXPECT_TRUE(rec.connects.empty());
  EXPECT_EQ(decoder.errors(), 3u);
  EXPECT_EQ(metrics.CounterValue("kspan_decoder_errors_total", {{"reason", "short_record"}}), 1u);
  EXPECT_EQ(metrics.CounterValue("kspan_decoder_errors_total", {{"reason", "size_mismatch"}}), 1u);
  EXPECT_EQ(metrics.CounterValue("kspan_decoder_errors_total", {{"reason", "unknown_type"}}), 1u);
}

}  // namespace
}  // namespace kspan
