#include "userspace/event_decoder.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace kspan {
namespace {

struct Recorder : KernelEventHandler {
  std::vector<kspan_tcp_connect_event> connects;
  std::vector<kspan_proc_event> processes;
  void OnTcpConnect(const kspan_tcp_connect_event& e) noexcept override { connects.push_back(e); }
  void OnProcess(const kspan_proc_event& e) noexcept override { processes.push_back(e); }
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

TEST(EventDecoder, DecodesProcessRecord) {
  MetricsRegistry metrics;
  Recorder rec;
  EventDecoder decoder(rec, metrics);
  kspan_proc_event e{};
  e.type = KSPAN_EVENT_PROCESS;
  e.kind = KSPAN_PROC_EXEC;
  e.pid = 4242;
  e.ppid = 1;
  e.ts_ns = 123456789;
  e.cgroup_id = 0x1234'5678'9abcull;
  std::strcpy(e.comm, "true");
  std::strcpy(e.filename, "/bin/true");
  auto bytes = Bytes(&e, sizeof(e));
  decoder.OnEvent(bytes);
  ASSERT_EQ(rec.processes.size(), 1u);
  const kspan_proc_event& got = rec.processes[0];
  EXPECT_EQ(got.kind, static_cast<std::uint32_t>(KSPAN_PROC_EXEC));
  EXPECT_EQ(got.pid, 4242u);
  EXPECT_EQ(got.ppid, 1u);
  EXPECT_EQ(got.ts_ns, 123456789u);
  EXPECT_EQ(got.cgroup_id, 0x1234'5678'9abcull);
  EXPECT_STREQ(got.comm, "true");
  EXPECT_STREQ(got.filename, "/bin/true");
  EXPECT_EQ(decoder.decoded(), 1u);
  EXPECT_EQ(decoder.errors(), 0u);
}

TEST(EventDecoder, RejectsProcessRecordOfWrongSize) {
  MetricsRegistry metrics;
  Recorder rec;
  EventDecoder decoder(rec, metrics);
  kspan_proc_event e{};
  e.type = KSPAN_EVENT_PROCESS;
  e.kind = KSPAN_PROC_EXIT;

  // Only the type: a record cut short after its first field.
  auto header_only = Bytes(&e, sizeof(e.type));
  decoder.OnEvent(header_only);
  // Without its filename: the size another layout would have.
  auto short_record = Bytes(&e, sizeof(e) - KSPAN_PROC_FILENAME_LEN);
  decoder.OnEvent(short_record);
  // Longer than the struct: the BPF side and this build disagree.
  std::vector<std::byte> long_record = Bytes(&e, sizeof(e));
  long_record.resize(sizeof(e) + 8);
  decoder.OnEvent(long_record);

  EXPECT_TRUE(rec.processes.empty());
  EXPECT_EQ(decoder.decoded(), 0u);
  EXPECT_EQ(metrics.CounterValue("kspan_decoder_errors_total", {{"reason", "size_mismatch"}}), 3u);
  EXPECT_EQ(metrics.CounterValue("kspan_decoder_errors_total", {{"reason", "short_record"}}), 0u);
}

}  // namespace
}  // namespace kspan
