#include "userspace/span_assembler.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <set>

namespace kspan {
namespace {

constexpr std::int64_t kOffset = 1'700'000'000'000'000'000;

class SpanAssemblerTest : public ::testing::Test {
 protected:
  ClockSync clock_{std::chrono::hours(1), [] { return ClockSync::Sample{kOffset, 1}; }};
  ProcessResources resources_{ProcessResources::Options{.proc_root = "/nonexistent-proc", .host_name = "host-a", .max_entries = 16}};
  MetricsRegistry metrics_;
  std::vector<Span> out_;
  SpanAssembler assembler_{clock_, resources_, metrics_, [this](Span&& s) { out_.push_back(std::move(s)); }};

  static kspan_tcp_connect_event V4Connect() {
    kspan_tcp_connect_event e{};
    e.type = KSPAN_EVENT_TCP_CONNECT;
    e.pid = 1234;
    e.tid = 1240;
    e.start_ns = 10'000'000;
    e.end_ns = 10'250'000;
    e.family = AF_INET;
    e.sport = 40000;
    e.dport = 8080;
    e.established = 1;
    inet_pton(AF_INET, "127.0.0.1", e.saddr);
    inet_pton(AF_INET, "10.1.2.3", e.daddr);
    std::strcpy(e.comm, "curl");
    return e;
  }
};

std::string Str(const Span& s, std::string_view key) {
  const auto* v = FindAttribute(s.attributes, key);
  return v ? std::get<std::string>(*v) : "<absent>";
}
std::int64_t Int(const Span& s, std::string_view key) {
  const auto* v = FindAttribute(s.attributes, key);
  return v ? std::get<std::int64_t>(*v) : -1;
}

TEST_F(SpanAssemblerTest, EstablishedIpv4Connect) {
  assembler_.OnTcpConnect(V4Connect());
  ASSERT_EQ(out_.size(), 1u);
  const Span& s = out_[0];
  EXPECT_EQ(s.name, "tcp connect");
  EXPECT_EQ(s.kind, SpanKind::kClient);
  EXPECT_TRUE(IsValid(s.trace_id));
  EXPECT_TRUE(IsValid(s.span_id));
  EXPECT_FALSE(IsValid(s.parent_span_id));
  EXPECT_EQ(s.start_unix_nano, 10'000'000u + kOffset);
  EXPECT_EQ(s.end_unix_nano - s.start_unix_nano, 250'000u);
  EXPECT_EQ(Str(s, "network.peer.address"), "10.1.2.3");
  EXPECT_EQ(Int(s, "network.peer.port"), 8080);
  EXPECT_EQ(Str(s, "network.local.address"), "127.0.0.1");
  EXPECT_EQ(Int(s, "network.local.port"), 40000);
  EXPECT_EQ(Str(s, "network.transport"), "tcp");
  EXPECT_EQ(Str(s, "network.type"), "ipv4");
  EXPECT_EQ(Int(s, "process.pid"), 1234);
  EXPECT_EQ(Int(s, "thread.id"), 1240);
  EXPECT_EQ(s.status_code, StatusCode::kUnset);
  EXPECT_EQ(FindAttribute(s.attributes, "error.type"), nullptr);
  ASSERT_NE(s.scope, nullptr);
  EXPECT_EQ(s.scope->name, "kspan");

  // The process has no /proc entry here: the resource falls back to comm.
  ASSERT_NE(s.resource, nullptr);
  EXPECT_EQ(std::get<std::string>(*FindAttribute(s.resource->attributes, "service.name")), "curl");
  EXPECT_EQ(std::get<std::int64_t>(*FindAttribute(s.resource->attributes, "process.pid")), 1234);
  EXPECT_EQ(std::get<std::string>(*FindAttribute(s.resource->attributes, "host.name")), "host-a");
  EXPECT_EQ(metrics_.CounterTotal("kspan_spans_assembled_total"), 1u);
}

TEST_F(SpanAssemblerTest, ProcessRecordsReachTheObserverWithTheirEnvironmentBits) {
  std::vector<kspan_proc_event> seen;
  assembler_.SetProcessObserver([&seen](const kspan_proc_event& e) { seen.push_back(e); });
  kspan_proc_event exec{};
  exec.kind = KSPAN_PROC_EXEC;
  exec.pid = 1234;
  exec.ts_ns = 5'000'000;
  exec.otel_env = KSPAN_OTEL_ENV_ENDPOINT;
  exec.flags = KSPAN_PROC_F_ENROLLED;
  std::strcpy(exec.comm, "node");
  assembler_.OnProcess(exec);
  kspan_proc_event exit{};
  exit.kind = KSPAN_PROC_EXIT;
  exit.pid = 1234;
  exit.ts_ns = 6'000'000;
  assembler_.OnProcess(exit);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].kind, KSPAN_PROC_EXEC);
  EXPECT_EQ(seen[0].otel_env, static_cast<std::uint32_t>(KSPAN_OTEL_ENV_ENDPOINT));
  EXPECT_EQ(seen[0].flags, static_cast<std::uint32_t>(KSPAN_PROC_F_ENROLLED));
  EXPECT_EQ(seen[1].kind, KSPAN_PROC_EXIT);
  EXPECT_TRUE(out_.empty());  // no spans of their own
}

TEST_F(SpanAssemblerTest, Ipv6AndFailureReasons) {
  auto e = V4Connect();
  e.family = AF_INET6;
  std::memset(e.saddr, 0, 16);
  std::memset(e.daddr, 0, 16);
  inet_pton(AF_INET6, "::1", e.saddr);
  inet_pton(AF_INET6, "2001:db8::7", e.daddr);
  e.established = 0;
  e.error = ECONNREFUSED;
  Span refused = assembler_.BuildTcpConnect(e);
  EXPECT_EQ(Str(refused, "network.type"), "ipv6");
  EXPECT_EQ(Str(refused, "network.peer.address"), "2001:db8::7");
  EXPECT_EQ(refused.status_code, StatusCode::kError);
  EXPECT_EQ(Str(refused, "error.type"), "ECONNREFUSED");
  EXPECT_NE(refused.status_message.find("refused"), std::string::npos);

  e.error = ETIMEDOUT;
  Span timed_out = assembler_.BuildTcpConnect(e);
  EXPECT_EQ(Str(timed_out, "error.type"), "ETIMEDOUT");
  EXPECT_NE(timed_out.status_message.find("timed out"), std::string::npos);

  e.error = 0;
  Span abandoned = assembler_.BuildTcpConnect(e);
  EXPECT_EQ(abandoned.status_code, StatusCode::kError);
  EXPECT_EQ(Str(abandoned, "error.type"), "closed_before_established");
}

TEST_F(SpanAssemblerTest, IdsAreFreshPerSpanAndResourcesSharedPerProcess) {
  std::set<std::string> trace_ids, span_ids;
  const Resource* first_resource = nullptr;
  for (int i = 0; i < 1000; ++i) {
    Span s = assembler_.BuildTcpConnect(V4Connect());
    trace_ids.insert(ToHex(s.trace_id));
    span_ids.insert(ToHex(s.span_id));
    if (first_resource == nullptr) first_resource = s.resource.get();
    EXPECT_EQ(s.resource.get(), first_resource);
  }
  EXPECT_EQ(trace_ids.size(), 1000u);
  EXPECT_EQ(span_ids.size(), 1000u);
}

}  // namespace
}  // namespace kspan
