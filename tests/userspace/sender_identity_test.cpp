// Sender identity: the process behind a receiver connection comes from the
// kernel's view (or /proc), and a resource's process.pid only counts when
// it names a process of the sender's own pid namespace; only the sender's
// own spans may enroll it.
#include "userspace/sender_identity.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "tests/userspace/fake_proc.h"

namespace kspan {
namespace {

using ::kspan::testing::FakeProc;

TEST(PidOfTcpClient, FindsTheProcessOwningTheClientEndOfALoopbackConnection) {
  int srv = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(srv, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(srv, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(listen(srv, 1), 0);
  socklen_t len = sizeof(a);
  ASSERT_EQ(getsockname(srv, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const std::uint16_t server_port = ntohs(a.sin_port);
  int cli = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(connect(cli, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  int acc = accept(srv, nullptr, nullptr);
  ASSERT_GE(acc, 0);
  // What the receiver sees: the client's address and port.
  sockaddr_in peer{};
  len = sizeof(peer);
  ASSERT_EQ(getpeername(acc, reinterpret_cast<sockaddr*>(&peer), &len), 0);
  const std::uint16_t client_port = ntohs(peer.sin_port);

  const auto self = static_cast<std::uint32_t>(getpid());
  EXPECT_EQ(PidOfTcpClient("127.0.0.1", client_port, server_port), self);
  EXPECT_EQ(PidOfTcpClient("127.0.0.1", client_port, server_port, self), self);
  // A wrong hint falls back to the search.
  EXPECT_EQ(PidOfTcpClient("127.0.0.1", client_port, server_port, 1u), self);
  // No such connection (the other namespaces are searched too, in vain).
  EXPECT_EQ(PidOfTcpClient("127.0.0.1", client_port, static_cast<std::uint16_t>(server_port + 1)),
            std::nullopt);
  EXPECT_EQ(PidOfTcpClient("not-an-address", client_port, server_port), std::nullopt);
  close(acc);
  close(cli);
  close(srv);
}

std::shared_ptr<const Resource> ResourceClaiming(std::optional<AttributeValue> pid,
                                                 const std::string& service = "checkout") {
  auto r = std::make_shared<Resource>();
  r->attributes.push_back({"service.name", service});
  if (pid) r->attributes.push_back({"process.pid", *pid});
  return r;
}

Span SpanOf(std::shared_ptr<const Resource> r) {
  Span s;
  s.resource = std::move(r);
  s.source = SpanSource::kApp;
  return s;
}

// Container A (pid namespace 2): init host pid 200 (1 inside), app host pid
// 201 (7 inside). kspan and host processes: namespace 1.
class SenderIdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    proc_.Link("self", "100");
    proc_.Process(100, 1, "100");
    proc_.Process(150, 1, "150");
    proc_.Process(200, 2, "200\t1");
    proc_.Process(201, 2, "201\t7");
    identity_.SetServerPorts(4317, 4318);
  }
  std::uint64_t Refused(const std::string& reason) {
    return metrics_.CounterValue("kspan_receiver_pid_claims_refused_total", {{"reason", reason}});
  }
  ReceiverPeer Peer() const {
    ReceiverPeer p;
    p.address = "10.88.0.5";
    p.port = 40000;
    p.family = AF_INET;
    p.transport = ReceiverTransport::kHttp;
    return p;
  }

  FakeProc proc_;
  MetricsRegistry metrics_;
  std::optional<std::uint32_t> kernel_says_ = 201;
  std::uint16_t asked_port_ = 0;
  SenderIdentity identity_{metrics_,
                           [this](const ReceiverPeer&, std::uint16_t server_port) {
                             asked_port_ = server_port;
                             return kernel_says_;
                           },
                           proc_.root()};
};

TEST_F(SenderIdentityTest, TheSendersOwnSpansAreItsOwn) {
  auto r = ResourceClaiming(std::int64_t{7});  // the SDK's pid inside its container
  auto who = identity_.Attribute({SpanOf(r), SpanOf(r)}, Peer());
  EXPECT_EQ(asked_port_, 4318);
  EXPECT_EQ(who.sender, 201u);
  EXPECT_TRUE(who.sender_sent_own_spans);
  EXPECT_EQ(who.own_service_name, "checkout");
  EXPECT_EQ(who.PidOf(r.get()), 201u);
  EXPECT_EQ(metrics_.CounterValue("kspan_receiver_senders_total", {{"identified_by", "kernel"}}), 1u);
  EXPECT_EQ(metrics_.CounterTotal("kspan_receiver_pid_claims_total"), 1u);
  EXPECT_EQ(metrics_.CounterTotal("kspan_receiver_pid_claims_refused_total"), 0u);
}

TEST_F(SenderIdentityTest, NoClaimMeansTheSender) {
  auto r = ResourceClaiming(std::nullopt);
  auto s = ResourceClaiming(std::string("7"));  // some SDKs write pids as strings
  auto who = identity_.Attribute({SpanOf(r), SpanOf(s)}, Peer());
  EXPECT_EQ(who.PidOf(r.get()), 201u);
  EXPECT_EQ(who.PidOf(s.get()), 201u);
  EXPECT_TRUE(who.sender_sent_own_spans);
}

TEST_F(SenderIdentityTest, PidOneOfAContainerIsItsInitNeverTheHostsInit) {
  auto r = ResourceClaiming(std::int64_t{1});
  auto who = identity_.Attribute({SpanOf(r)}, Peer());
  // Another process of the sender's container: indexed under it, not enrolled.
  EXPECT_EQ(who.PidOf(r.get()), 200u);
  EXPECT_FALSE(who.sender_sent_own_spans);
  EXPECT_TRUE(who.own_service_name.empty());
  EXPECT_EQ(Refused("other_process"), 1u);
}

TEST_F(SenderIdentityTest, AHostPidNamedFromAContainerIsIgnored) {
  auto host = ResourceClaiming(std::int64_t{150});
  auto junk = ResourceClaiming(std::string("not-a-pid"));
  auto huge = ResourceClaiming(std::int64_t{1} << 40);
  auto own = ResourceClaiming(std::int64_t{7});
  auto who = identity_.Attribute({SpanOf(host), SpanOf(junk), SpanOf(huge), SpanOf(own)}, Peer());
  EXPECT_EQ(who.PidOf(host.get()), std::nullopt);
  EXPECT_EQ(who.PidOf(junk.get()), std::nullopt);
  EXPECT_EQ(who.PidOf(huge.get()), std::nullopt);
  EXPECT_EQ(who.PidOf(own.get()), 201u);
  EXPECT_TRUE(who.sender_sent_own_spans);
  EXPECT_EQ(Refused("not_in_sender_namespace"), 3u);
}

TEST_F(SenderIdentityTest, AnUnknownSenderGetsNothingAttributed) {
  kernel_says_ = std::nullopt;  // and the fake /proc has no connection tables
  auto r = ResourceClaiming(std::int64_t{7});
  auto who = identity_.Attribute({SpanOf(r)}, Peer());
  EXPECT_EQ(who.sender, std::nullopt);
  EXPECT_FALSE(who.sender_sent_own_spans);
  EXPECT_EQ(who.PidOf(r.get()), std::nullopt);
  EXPECT_EQ(Refused("sender_unknown"), 1u);
  EXPECT_EQ(metrics_.CounterValue("kspan_receiver_senders_total", {{"identified_by", "unknown"}}), 1u);
}

TEST_F(SenderIdentityTest, AHostCollectorForwardingSpansEnrollsNobody) {
  kernel_says_ = 150;
  auto app = ResourceClaiming(std::int64_t{100});
  auto who = identity_.Attribute({SpanOf(app)}, Peer());
  EXPECT_EQ(who.sender, 150u);
  EXPECT_EQ(who.PidOf(app.get()), 100u);
  EXPECT_FALSE(who.sender_sent_own_spans);
  EXPECT_EQ(Refused("other_process"), 1u);
}

TEST_F(SenderIdentityTest, ProcScansAreBoundedPerSecond) {
  kernel_says_ = std::nullopt;  // every connection needs a /proc scan
  for (int i = 0; i < 25; ++i) {
    ReceiverPeer p = Peer();
    p.port = static_cast<std::uint16_t>(41000 + i);
    identity_.Attribute({SpanOf(ResourceClaiming(std::int64_t{7}))}, p);
  }
  EXPECT_EQ(metrics_.CounterTotal("kspan_receiver_sender_scans_limited_total"), 5u);
  EXPECT_EQ(metrics_.CounterValue("kspan_receiver_senders_total", {{"identified_by", "unknown"}}), 25u);
}

TEST_F(SenderIdentityTest, APeerWithoutAnAddressIsUnknown) {
  ReceiverPeer p = Peer();
  p.address.clear();
  p.family = AF_UNIX;
  auto who = identity_.Attribute({SpanOf(ResourceClaiming(std::int64_t{7}))}, p);
  EXPECT_EQ(who.sender, std::nullopt);
  EXPECT_EQ(asked_port_, 0);
}

// A request whose sender the kernel knows never waits for a /proc scan that
// another receiver thread is making for a connection the kernel did not
// record: the scan (here through a 60 MiB connection table, about a second
// of parsing) holds no lock the kernel path needs.
TEST(SenderIdentityLocking, KernelLookupsDoNotWaitForAProcScan) {
  FakeProc proc;
  proc.Link("self", "100");
  proc.Process(100, 1, "100");
  proc.Process(201, 1, "201");
  {
    const std::string row =
        "   0: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 20 4 30 10 -1\n";
    std::string table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
    table.reserve(60u << 20);
    while (table.size() + row.size() < (60u << 20)) table += row;
    proc.File("net/tcp", table);
  }
  MetricsRegistry metrics;
  std::atomic<bool> scan_asked{false};
  SenderIdentity identity(
      metrics,
      [&](const ReceiverPeer& peer, std::uint16_t) -> std::optional<std::uint32_t> {
        if (peer.port == 50000) {
          scan_asked = true;  // the kernel does not know this one: a scan follows
          return std::nullopt;
        }
        return 201;
      },
      proc.root());
  identity.SetServerPorts(4317, 4318);
  ReceiverPeer unknown;
  unknown.address = "127.0.0.1";
  unknown.port = 50000;
  unknown.family = AF_INET;
  unknown.transport = ReceiverTransport::kHttp;
  std::atomic<bool> scan_done{false};
  std::thread scanner([&] {
    identity.Attribute({SpanOf(ResourceClaiming(std::nullopt))}, unknown);
    scan_done = true;
  });
  while (!scan_asked) std::this_thread::yield();
  ReceiverPeer known = unknown;
  known.port = 50001;
  for (int i = 0; i < 20; ++i) {
    auto who = identity.Attribute({SpanOf(ResourceClaiming(std::nullopt))}, known);
    EXPECT_EQ(who.sender, 201u);
  }
  // All twenty were answered while the scan was still reading.
  EXPECT_FALSE(scan_done.load()) << "the scan ended before the kernel lookups: make the table larger";
  scanner.join();
  EXPECT_EQ(metrics.CounterValue("kspan_receiver_senders_total", {{"identified_by", "kernel"}}), 20u);
}

}  // namespace
}  // namespace kspan
