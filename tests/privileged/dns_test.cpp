// DNS spans on the running kernel: a small DNS server on 127.0.0.1:53 in the
// test, queries sent the ways resolvers send them (sendto on an unconnected
// socket as musl does, sendmmsg of A+AAAA on a connected one as glibc does),
// and the spans that come out of the real decoder and assembler.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/privileged/privileged.h"
#include "userspace/dns_capture.h"
#include "userspace/event_decoder.h"
#include "userspace/http_capture.h"
#include "userspace/kernel_features.h"
#include "userspace/pin_directory.h"
#include "userspace/ring_reader.h"
#include "userspace/span_assembler.h"

namespace kspan {
namespace {

std::vector<std::uint8_t> Query(std::uint16_t id, const std::string& name, std::uint16_t qtype) {
  std::vector<std::uint8_t> q = {static_cast<std::uint8_t>(id >> 8), static_cast<std::uint8_t>(id),
                                 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    q.push_back(static_cast<std::uint8_t>(dot - start));
    q.insert(q.end(), name.begin() + static_cast<long>(start), name.begin() + static_cast<long>(dot));
    start = dot + 1;
  }
  q.push_back(0);
  q.insert(q.end(), {static_cast<std::uint8_t>(qtype >> 8), static_cast<std::uint8_t>(qtype), 0, 1});
  return q;
}

// Answers every query on 127.0.0.1:53: NXDOMAIN for names under
// "missing.", else NOERROR with no answers.
class FakeDnsServer {
 public:
  FakeDnsServer() {
    fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(53);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bound_ = bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    bind_errno_ = errno;
    timeval tv{0, 100'000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (bound_) thread_ = std::thread([this] { Serve(); });
  }
  ~FakeDnsServer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    close(fd_);
  }
  bool bound() const { return bound_; }
  int bind_errno() const { return bind_errno_; }

 private:
  void Serve() {
    std::uint8_t buf[512];
    while (!stop_) {
      sockaddr_in from{};
      socklen_t len = sizeof(from);
      ssize_t n = recvfrom(fd_, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 12) continue;
      buf[2] |= 0x80;  // QR: a response
      const bool missing = n > 13 && std::memcmp(buf + 13, "missing", 7) == 0;
      buf[3] = missing ? 3 : 0;  // rcode
      sendto(fd_, buf, static_cast<std::size_t>(n), 0, reinterpret_cast<sockaddr*>(&from), len);
    }
  }
  int fd_ = -1;
  bool bound_ = false;
  int bind_errno_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// The variants this kernel can run: tp_btf where it has the socket data
// tracepoints (6.3+), the syscall tracepoints everywhere.
std::vector<DnsVariant> RunnableDnsVariants() {
  std::vector<DnsVariant> v;
  if (KernelHasSockLengthTracepoints() && KernelHasBpfHelper("BPF_FUNC_task_pt_regs")) {
    v.push_back(DnsVariant::kTpBtf);
  }
  v.push_back(DnsVariant::kTracepoint);
  return v;
}

// Every test runs for each variant the kernel can run, forced.
class DnsCaptureTest : public ::testing::TestWithParam<DnsVariant> {
 protected:
  void SetUp() override {
    auto pins = PinDirectory::Create(::kspan::testing::TestPinDir());
    ASSERT_TRUE(pins.ok()) << pins.status();
    pins_.emplace(std::move(*pins));
    DnsCaptureOptions opts;
    opts.pin_dir = pins_->path();
    opts.force_variant = GetParam();
    capture_ = std::make_unique<DnsCapture>(opts);
    const absl::Status started = capture_->Start();
    ASSERT_TRUE(started.ok()) << started;
    ASSERT_EQ(capture_->variant(), DnsVariantName(GetParam()));
    ::kspan::testing::ReportVariant("dns.forced", capture_->variant());
    ASSERT_TRUE(reader_.Add(capture_->ring_fd(), "kspan_dns_ring", &decoder_).ok());
    ASSERT_TRUE(reader_.Start(std::chrono::milliseconds(10)).ok());
  }
  void TearDown() override {
    if (capture_) capture_->Detach();
    reader_.Stop();
    capture_.reset();
    pins_.reset();
  }

  std::optional<Span> WaitSpan(const std::string& qname, const std::string& qtype) {
    std::unique_lock lock(mu_);
    std::optional<Span> found;
    cv_.wait_for(lock, std::chrono::seconds(5), [&] {
      for (const auto& s : spans_) {
        const auto* n = FindAttribute(s.attributes, "dns.question.name");
        const auto* t = FindAttribute(s.attributes, "kspan.dns.question.type");
        if (n && t && std::get<std::string>(*n) == qname && std::get<std::string>(*t) == qtype) {
          found = s;
          return true;
        }
      }
      return false;
    });
    return found;
  }

  static std::string Str(const Span& s, std::string_view key) {
    const auto* v = FindAttribute(s.attributes, key);
    return v ? std::get<std::string>(*v) : "<absent>";
  }
  static std::int64_t Int(const Span& s, std::string_view key) {
    const auto* v = FindAttribute(s.attributes, key);
    return v ? std::get<std::int64_t>(*v) : -1;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Span> spans_;
  MetricsRegistry metrics_;
  ClockSync clock_;
  ProcessResources resources_;
  SpanAssembler assembler_{clock_, resources_, metrics_, [this](Span&& s) {
                             std::lock_guard lock(mu_);
                             spans_.push_back(std::move(s));
                             cv_.notify_all();
                           }};
  EventDecoder decoder_{assembler_, metrics_};
  RingReader reader_;
  std::optional<PinDirectory> pins_;
  std::unique_ptr<DnsCapture> capture_;
};

TEST_P(DnsCaptureTest, QueriesAndResponsesBecomeClientSpans) {
  KSPAN_REQUIRE_BPF();
  FakeDnsServer server;
  ASSERT_TRUE(server.bound()) << "cannot bind 127.0.0.1:53: " << std::strerror(server.bind_errno());
  sockaddr_in dns{};
  dns.sin_family = AF_INET;
  dns.sin_port = htons(53);
  dns.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::uint8_t buf[512];

  // musl style: sendto/recvfrom on an unconnected socket.
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  const std::uint64_t before = ::kspan::testing::RealtimeNowNs();
  auto q = Query(0x1234, "ok.example.test", 1);
  ASSERT_EQ(sendto(fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&dns), sizeof(dns)),
            static_cast<ssize_t>(q.size()));
  ASSERT_GT(recvfrom(fd, buf, sizeof(buf), 0, nullptr, nullptr), 0);
  const std::uint64_t after = ::kspan::testing::RealtimeNowNs();
  auto missing = Query(0x2222, "missing.test", 1);
  sendto(fd, missing.data(), missing.size(), 0, reinterpret_cast<sockaddr*>(&dns), sizeof(dns));
  ASSERT_GT(recvfrom(fd, buf, sizeof(buf), 0, nullptr, nullptr), 0);
  close(fd);

  // glibc style: connect, A and AAAA in one sendmmsg, answers with recvfrom.
  fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&dns), sizeof(dns)), 0);
  auto qa = Query(0x3001, "both.example.test", 1);
  auto qaaaa = Query(0x3002, "both.example.test", 28);
  iovec iov[2] = {{qa.data(), qa.size()}, {qaaaa.data(), qaaaa.size()}};
  mmsghdr msgs[2] = {};
  msgs[0].msg_hdr.msg_iov = &iov[0];
  msgs[0].msg_hdr.msg_iovlen = 1;
  msgs[1].msg_hdr.msg_iov = &iov[1];
  msgs[1].msg_hdr.msg_iovlen = 1;
  ASSERT_EQ(sendmmsg(fd, msgs, 2, 0), 2);
  ASSERT_GT(recvfrom(fd, buf, sizeof(buf), 0, nullptr, nullptr), 0);
  ASSERT_GT(recvfrom(fd, buf, sizeof(buf), 0, nullptr, nullptr), 0);
  close(fd);

  auto ok = WaitSpan("ok.example.test", "A");
  ASSERT_TRUE(ok.has_value()) << "no span for the sendto query; queries "
                              << capture_->ReadStats()[KSPAN_DNS_STAT_QUERY_EMITTED] << ", responses "
                              << capture_->ReadStats()[KSPAN_DNS_STAT_RESPONSE_EMITTED] << ", spans "
                              << spans_.size() << ", decoded " << decoder_.decoded();
  EXPECT_EQ(ok->name, "dns query");
  EXPECT_EQ(ok->kind, SpanKind::kClient);
  EXPECT_EQ(ok->status_code, StatusCode::kUnset);
  EXPECT_EQ(Str(*ok, "kspan.dns.response_code"), "NOERROR");
  EXPECT_EQ(Int(*ok, "kspan.dns.id"), 0x1234);
  EXPECT_EQ(Str(*ok, "network.peer.address"), "127.0.0.1");
  EXPECT_EQ(Int(*ok, "network.peer.port"), 53);
  EXPECT_EQ(Str(*ok, "network.transport"), "udp");
  EXPECT_EQ(Int(*ok, "process.pid"), getpid());
  EXPECT_EQ(Int(*ok, "thread.id"), ::kspan::testing::CurrentTid());
  EXPECT_GE(ok->start_unix_nano + 1'000'000, before);
  EXPECT_LE(ok->end_unix_nano, after + 1'000'000);
  EXPECT_LE(ok->start_unix_nano, ok->end_unix_nano);

  auto nx = WaitSpan("missing.test", "A");
  ASSERT_TRUE(nx.has_value());
  EXPECT_EQ(nx->status_code, StatusCode::kError);
  EXPECT_EQ(Str(*nx, "error.type"), "NXDOMAIN");

  auto a = WaitSpan("both.example.test", "A");
  auto aaaa = WaitSpan("both.example.test", "AAAA");
  ASSERT_TRUE(a.has_value()) << "no span for the first sendmmsg query";
  ASSERT_TRUE(aaaa.has_value()) << "no span for the second sendmmsg query";
  EXPECT_EQ(Int(*aaaa, "kspan.dns.id"), 0x3002);

  const auto st = capture_->ReadStats();
  EXPECT_GE(st[KSPAN_DNS_STAT_QUERY_EMITTED], 4u);
  EXPECT_GE(st[KSPAN_DNS_STAT_RESPONSE_EMITTED], 4u);
  EXPECT_EQ(st[KSPAN_DNS_STAT_RING_FULL], 0u);
}

TEST_P(DnsCaptureTest, OtherUdpTrafficIsIgnored) {
  KSPAN_REQUIRE_BPF();
  FakeDnsServer dns_server;
  ASSERT_TRUE(dns_server.bound()) << std::strerror(dns_server.bind_errno());
  int other = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(other, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  getsockname(other, reinterpret_cast<sockaddr*>(&a), &len);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  auto q = Query(0x4444, "not-dns-port.test", 1);  // DNS-shaped, but not to port 53
  ASSERT_GT(sendto(fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  // A real query after it: once its span is out, the first would be too.
  sockaddr_in dns{};
  dns.sin_family = AF_INET;
  dns.sin_port = htons(53);
  dns.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  auto sentinel = Query(0x4445, "sentinel.test", 1);
  sendto(fd, sentinel.data(), sentinel.size(), 0, reinterpret_cast<sockaddr*>(&dns), sizeof(dns));
  std::uint8_t buf[512];
  ASSERT_GT(recvfrom(fd, buf, sizeof(buf), 0, nullptr, nullptr), 0);
  close(fd);
  close(other);
  ASSERT_TRUE(WaitSpan("sentinel.test", "A").has_value());
  std::lock_guard lock(mu_);
  for (const auto& s : spans_) EXPECT_NE(Str(s, "dns.question.name"), "not-dns-port.test");
}

INSTANTIATE_TEST_SUITE_P(Dns, DnsCaptureTest, ::testing::ValuesIn(RunnableDnsVariants()),
                         [](const ::testing::TestParamInfo<DnsVariant>& p) {
                           return std::string(DnsVariantName(p.param));
                         });

TEST(DnsCaptureAuto, TakesTheSocketVariantWhereTheKernelHasIt) {
  KSPAN_REQUIRE_BPF();
  auto pins = PinDirectory::Create(::kspan::testing::TestPinDir());
  ASSERT_TRUE(pins.ok()) << pins.status();
  DnsCaptureOptions opts;
  opts.pin_dir = pins->path();
  DnsCapture capture(opts);
  ASSERT_TRUE(capture.Start().ok());
  ::kspan::testing::ReportVariant("dns", capture.variant());
  // Not the per-syscall tracepoints (every syscall of the host pays for
  // them) where the socket layer's tracepoints exist.
  EXPECT_EQ(capture.variant(), RunnableDnsVariants().front() == DnsVariant::kTpBtf ? "tp_btf"
                                                                                   : "tracepoint");
  capture.Detach();
}

}  // namespace
}  // namespace kspan
