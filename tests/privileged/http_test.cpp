// HTTP/1.x spans on the running kernel: a small HTTP/1.1 server and raw
// clients in this test process over loopback, the process selected through
// the shared filter, and the spans that come out of the real programs,
// decoder and assembler: SERVER spans of the server's sockets and CLIENT
// spans of the clients' sockets.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/privileged/privileged.h"
#include "userspace/capture_filter.h"
#include "userspace/clock_sync.h"
#include "userspace/event_decoder.h"
#include "userspace/http_capture.h"
#include "userspace/pin_directory.h"
#include "userspace/ring_reader.h"
#include "userspace/span_assembler.h"

namespace kspan {
namespace {

using namespace std::chrono_literals;

constexpr char kTrace[] = "4bf92f3577b34da6a3ce929d0e0e4736";
constexpr char kParent[] = "00f067aa0ba902b7";

// A traceparent header line for kTrace/kParent with the given trace flags.
std::string TraceParentLine(const char* flags) {
  return "traceparent: 00-" + std::string(kTrace) + "-" + kParent + "-" + flags + "\r\n";
}

// Serves HTTP/1.1 keep-alive connections on 127.0.0.1: 404 for /status/404,
// 500 for /status/500, else 200 "hello". Waits in poll() before each read,
// so a read starts when request bytes are there (a server span starts at
// the read that carries the request).
class TinyHttpServer {
 public:
  TinyHttpServer() : listener_(AF_INET) {
    thread_ = std::thread([this] { Accept(); });
  }
  ~TinyHttpServer() {
    stop_ = true;
    thread_.join();
    for (auto& t : workers_) t.join();
  }
  int port() const { return listener_.port(); }
  int server_tid() const { return tid_.load(); }
  // CLOCK_REALTIME just after the last response's write() returned.
  std::uint64_t last_write_returned_ns() const { return write_returned_ns_.load(); }

 private:
  void Accept() {
    while (!stop_) {
      pollfd p{listener_.fd(), POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      int fd = accept(listener_.fd(), nullptr, nullptr);
      if (fd < 0) continue;
      workers_.emplace_back([this, fd] { Serve(fd); });
    }
  }
  void Serve(int fd) {
    tid_ = ::kspan::testing::CurrentTid();
    std::string in;
    char buf[4096];
    while (!stop_) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n <= 0) break;
      in.append(buf, static_cast<std::size_t>(n));
      if (in.compare(0, 4, "GET ") != 0 && in.compare(0, 4, "POST") != 0 && in.size() >= 4) {
        break;  // not HTTP: hang up
      }
      std::size_t end;
      while ((end = in.find("\r\n\r\n")) != std::string::npos) {
        const std::string head = in.substr(0, end);
        in.erase(0, end + 4);
        std::size_t body = 0;
        if (auto cl = head.find("Content-Length: "); cl != std::string::npos) {
          body = std::stoul(head.substr(cl + 16));
        }
        in.erase(0, std::min(body, in.size()));
        const std::string path = head.substr(head.find(' ') + 1,
                                             head.find(' ', head.find(' ') + 1) - head.find(' ') - 1);
        std::string status = "200 OK";
        if (path == "/status/404") status = "404 Not Found";
        if (path == "/status/500") status = "500 Internal Server Error";
        const std::string resp = "HTTP/1.1 " + status +
                                 "\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";
        if (write(fd, resp.data(), resp.size()) != static_cast<ssize_t>(resp.size())) break;
        write_returned_ns_ = ::kspan::testing::RealtimeNowNs();
      }
    }
    close(fd);
  }

  ::kspan::testing::Listener listener_;
  std::atomic<bool> stop_{false};
  std::atomic<int> tid_{0};
  std::atomic<std::uint64_t> write_returned_ns_{0};
  std::thread thread_;
  std::vector<std::thread> workers_;
};

int Connect(int port) {
  auto c = ::kspan::testing::ConnectLoopback(AF_INET, port);
  return c.fd;
}

int LocalPort(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

void SendAll(int fd, const std::string& data) {
  ASSERT_EQ(send(fd, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
}

// Reads `count` responses of the tiny server (each ends with "hello").
std::string ReadResponses(int fd, int count) {
  std::string got;
  char buf[4096];
  auto occurrences = [&] {
    int k = 0;
    for (std::size_t at = 0; (at = got.find("hello", at)) != std::string::npos; at += 5) ++k;
    return k;
  };
  while (occurrences() < count) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

// The variants this kernel can run: tp_btf where it has the socket data
// tracepoints (6.3+), the syscall tracepoints everywhere.
std::vector<HttpVariant> RunnableHttpVariants() {
  std::vector<HttpVariant> v;
  if (KernelHasSockLengthTracepoints()) v.push_back(HttpVariant::kTpBtf);
  v.push_back(HttpVariant::kTracepoint);
  return v;
}

std::string VariantTestName(const ::testing::TestParamInfo<HttpVariant>& p) {
  return std::string(HttpVariantName(p.param));
}

// Every test runs for each variant the kernel can run, forced.
class HttpCaptureTest : public ::testing::TestWithParam<HttpVariant> {
 protected:
  // Requests without trace context recorded per process and second (0: all).
  virtual std::uint32_t RootPerSecond() const { return 0; }

  void SetUp() override {
    KSPAN_REQUIRE_BPF();
    auto pins = PinDirectory::Create(::kspan::testing::TestPinDir());
    ASSERT_TRUE(pins.ok()) << pins.status();
    pins_.emplace(std::move(*pins));
    HttpCaptureOptions opts;
    opts.pin_dir = pins_->path();
    opts.force_variant = GetParam();
    opts.root_per_second = RootPerSecond();
    capture_ = std::make_unique<HttpCapture>(opts);
    auto started = capture_->Start();
    ASSERT_TRUE(started.ok()) << started;
    ASSERT_EQ(capture_->variant(), HttpVariantName(GetParam()));
    ::kspan::testing::ReportVariant("http.forced", capture_->variant());
    auto filter = CaptureFilter::Open(pins_->path());
    ASSERT_TRUE(filter.ok()) << filter.status();
    filter_.emplace(std::move(*filter));
    ASSERT_TRUE(filter_->SetSlowThreshold(0ns).ok());
    ASSERT_TRUE(filter_->AllowPid(static_cast<std::uint32_t>(getpid())).ok());
    ASSERT_TRUE(reader_.Add(capture_->ring_fd(), "kspan_http_ring", &decoder_).ok());
    ASSERT_TRUE(reader_.Start(10ms).ok());
  }
  void TearDown() override {
    if (capture_) {
      capture_->Detach();
      const HttpStats st = capture_->ReadStats();
      EXPECT_EQ(st[KSPAN_HTTP_STAT_RING_FULL], 0u);
      EXPECT_EQ(st[KSPAN_HTTP_STAT_INFLIGHT_FULL], 0u);
      EXPECT_EQ(st[KSPAN_HTTP_STAT_STATE_FULL], 0u);
    }
    reader_.Stop();
    filter_.reset();
    capture_.reset();
    pins_.reset();
  }

  // Server spans of the connection from `client_port` (their peer port).
  std::vector<Span> ServerSpansFrom(int client_port, std::size_t count,
                                    std::chrono::milliseconds timeout = 5s) {
    return Wait(SpanKind::kServer, "network.peer.port", client_port, count, timeout);
  }
  // Client spans to the test's server (each test has its own server port).
  std::vector<Span> ClientSpansTo(int server_port, std::size_t count,
                                  std::chrono::milliseconds timeout = 5s) {
    return Wait(SpanKind::kClient, "server.port", server_port, count, timeout);
  }

  std::vector<Span> Wait(SpanKind kind, std::string_view key, int value, std::size_t count,
                         std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::vector<Span> found;
    while (std::chrono::steady_clock::now() < deadline) {
      assembler_.ExpireHttp(MonotonicNowNs());
      {
        std::lock_guard lock(mu_);
        found.clear();
        for (const auto& s : spans_) {
          if (s.kind == kind && Int(s, key) == value) found.push_back(s);
        }
        if (found.size() >= count) break;
      }
      std::this_thread::sleep_for(20ms);
    }
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

  std::size_t SpansOfPid(std::int64_t pid) {
    std::lock_guard lock(mu_);
    std::size_t n = 0;
    for (const auto& s : spans_) n += Int(s, "process.pid") == pid;
    return n;
  }

  std::mutex mu_;
  std::vector<Span> spans_;
  MetricsRegistry metrics_;
  ClockSync clock_;
  ProcessResources resources_;
  HttpTrackerOptions http_options_{.response_idle = 150ms};
  SpanAssembler assembler_{clock_, resources_, metrics_,
                           [this](Span&& s) {
                             std::lock_guard lock(mu_);
                             spans_.push_back(std::move(s));
                           },
                           http_options_};
  EventDecoder decoder_{assembler_, metrics_};
  RingReader reader_;
  std::optional<PinDirectory> pins_;
  std::optional<CaptureFilter> filter_;
  std::unique_ptr<HttpCapture> capture_;
};

TEST_P(HttpCaptureTest, ServerAndClientSpansWithEveryField) {
  TinyHttpServer server;
  int fd = Connect(server.port());
  ASSERT_GE(fd, 0);
  const int client_port = LocalPort(fd);
  const std::uint64_t before = ::kspan::testing::RealtimeNowNs();
  SendAll(fd,
          "GET /hello/world?user=secret HTTP/1.1\r\nHost: localhost\r\n"
          "TraceParent: 00-" + std::string(kTrace) + "-" + kParent + "-01\r\n"
          "tracestate: vendor=abc,other=1\r\nX-Other: not-exported\r\n\r\n");
  const std::uint64_t sent = ::kspan::testing::RealtimeNowNs();
  ASSERT_NE(ReadResponses(fd, 1).find("hello"), std::string::npos);
  const std::uint64_t after = ::kspan::testing::RealtimeNowNs();
  const int client_tid = ::kspan::testing::CurrentTid();

  auto servers = ServerSpansFrom(client_port, 1);
  auto clients = ClientSpansTo(server.port(), 1);
  close(fd);
  ASSERT_EQ(servers.size(), 1u);
  ASSERT_EQ(clients.size(), 1u);
  for (const Span* s : {&servers[0], &clients[0]}) {
    SCOPED_TRACE(s->kind == SpanKind::kServer ? "server span" : "client span");
    EXPECT_EQ(s->name, "GET /hello/world");
    EXPECT_EQ(ToHex(s->trace_id), kTrace);
    EXPECT_EQ(ToHex(s->parent_span_id), kParent);
    EXPECT_NE(ToHex(s->span_id), kParent);
    EXPECT_EQ(s->trace_state, "vendor=abc,other=1");
    EXPECT_EQ(s->flags & 0xff, 1u);
    EXPECT_EQ(Str(*s, "http.request.method"), "GET");
    EXPECT_EQ(Str(*s, "url.path"), "/hello/world");
    EXPECT_EQ(FindAttribute(s->attributes, "url.query"), nullptr);
    EXPECT_EQ(Int(*s, "http.response.status_code"), 200);
    EXPECT_EQ(Str(*s, "server.address"), "127.0.0.1");
    EXPECT_EQ(Int(*s, "server.port"), server.port());
    EXPECT_EQ(Str(*s, "network.peer.address"), "127.0.0.1");
    EXPECT_EQ(Str(*s, "network.protocol.version"), "1.1");
    EXPECT_EQ(Int(*s, "http.request.body.size"), 0);
    EXPECT_EQ(Int(*s, "http.response.body.size"), 5);
    EXPECT_EQ(Int(*s, "process.pid"), getpid());
    EXPECT_EQ(s->status_code, StatusCode::kUnset);
    EXPECT_GE(s->start_unix_nano + 2'000'000, before);  // clock conversion tolerance
    // The client span ends by the time its read returned; the server span
    // by the time the server's write returned, which may be after the
    // client had the response (on a busy or emulated machine the server
    // thread can wait for a CPU between the two).
    EXPECT_LE(s->end_unix_nano,
              (s->kind == SpanKind::kServer ? server.last_write_returned_ns() : after) + 2'000'000);
    EXPECT_LT(s->start_unix_nano, s->end_unix_nano);
    for (const auto& a : s->attributes) {
      if (const auto* v = std::get_if<std::string>(&a.value)) {
        EXPECT_EQ(v->find("not-exported"), std::string::npos) << a.key;
        EXPECT_EQ(v->find("secret"), std::string::npos) << a.key;
      }
    }
  }
  const Span& sv = servers[0];
  const Span& cl = clients[0];
  EXPECT_EQ(Int(sv, "network.peer.port"), client_port);
  EXPECT_EQ(Int(sv, "client.port"), client_port);
  EXPECT_EQ(Int(cl, "network.peer.port"), server.port());
  EXPECT_EQ(Int(sv, "thread.id"), server.server_tid());
  EXPECT_EQ(Int(cl, "thread.id"), client_tid);
  EXPECT_EQ(sv.flags & 0x300, 0x300u);  // the parent is remote
  // The response is read after the server began. (The client's read may
  // return before the server's write() does: the data is delivered inside
  // that syscall.) The tracepoint variant starts a client span when its
  // request write began, before the server could read it. The tp_btf
  // variant times data once it has moved, inside the client's send: on
  // loopback the server's read may return first, by however long the
  // client's CPU is held up in between, so what holds is that the span
  // starts before the send returned (within the clock conversion
  // tolerance used above).
  if (GetParam() == HttpVariant::kTpBtf) {
    EXPECT_LE(cl.start_unix_nano, sent + 2'000'000);
  } else {
    EXPECT_LE(cl.start_unix_nano, sv.start_unix_nano);
  }
  EXPECT_GT(cl.end_unix_nano, sv.start_unix_nano);
}

TEST_P(HttpCaptureTest, KeepAliveRequestsOnOneConnection) {
  TinyHttpServer server;
  int fd = Connect(server.port());
  ASSERT_GE(fd, 0);
  const int client_port = LocalPort(fd);
  const char* paths[] = {"/one", "/status/404", "/status/500", "/four"};
  for (const char* p : paths) {
    SendAll(fd, std::string("GET ") + p + " HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_NE(ReadResponses(fd, 1).find("hello"), std::string::npos);
  }
  auto servers = ServerSpansFrom(client_port, 4);
  auto clients = ClientSpansTo(server.port(), 4);
  close(fd);
  ASSERT_EQ(servers.size(), 4u);
  ASSERT_EQ(clients.size(), 4u);
  const std::int64_t codes[] = {200, 404, 500, 200};
  for (int i = 0; i < 4; ++i) {
    SCOPED_TRACE(paths[i]);
    EXPECT_EQ(servers[i].name, std::string("GET ") + paths[i]);
    EXPECT_EQ(clients[i].name, std::string("GET ") + paths[i]);
    EXPECT_EQ(Int(servers[i], "http.response.status_code"), codes[i]);
    EXPECT_EQ(Int(clients[i], "http.response.status_code"), codes[i]);
    // Server: 5xx only; client: 4xx and 5xx.
    EXPECT_EQ(servers[i].status_code, codes[i] >= 500 ? StatusCode::kError : StatusCode::kUnset);
    EXPECT_EQ(clients[i].status_code, codes[i] >= 400 ? StatusCode::kError : StatusCode::kUnset);
    // No traceparent: each exchange its own fresh trace, no parent.
    EXPECT_TRUE(IsValid(servers[i].trace_id));
    EXPECT_FALSE(IsValid(servers[i].parent_span_id));
    if (i > 0) {
      EXPECT_GE(servers[i].start_unix_nano, servers[i - 1].end_unix_nano);
    }
  }
}

TEST_P(HttpCaptureTest, TwoPipelinedRequestsInOneSend) {
  TinyHttpServer server;
  int fd = Connect(server.port());
  ASSERT_GE(fd, 0);
  const int client_port = LocalPort(fd);
  SendAll(fd,
          "GET /first HTTP/1.1\r\nHost: x\r\ntraceparent: 00-" + std::string(kTrace) + "-" +
              kParent + "-01\r\n\r\n"
              "POST /status/404 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
  ASSERT_NE(ReadResponses(fd, 2).find("hello"), std::string::npos);
  auto servers = ServerSpansFrom(client_port, 2);
  auto clients = ClientSpansTo(server.port(), 2);
  close(fd);
  ASSERT_EQ(servers.size(), 2u);
  ASSERT_EQ(clients.size(), 2u);
  for (const auto* v : {&servers, &clients}) {
    const auto& s = *v;
    EXPECT_EQ(s[0].name, "GET /first");
    EXPECT_EQ(Int(s[0], "http.response.status_code"), 200);
    EXPECT_EQ(ToHex(s[0].trace_id), kTrace);
    EXPECT_EQ(s[0].flags & 0xff, 1u);  // sampled, as sent
    EXPECT_EQ(s[1].name, "POST /status/404");
    EXPECT_EQ(Str(s[1], "http.request.method"), "POST");
    EXPECT_EQ(Int(s[1], "http.response.status_code"), 404);
    EXPECT_EQ(Int(s[1], "http.request.body.size"), 3);
    EXPECT_NE(ToHex(s[1].trace_id), kTrace);
  }
}

TEST_P(HttpCaptureTest, RequestSplitAcrossTwoSendsTraceparentInTheSecond) {
  TinyHttpServer server;
  int fd = Connect(server.port());
  ASSERT_GE(fd, 0);
  const int client_port = LocalPort(fd);
  SendAll(fd, "GET /split HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n");
  std::this_thread::sleep_for(100ms);  // the server reads the first part alone
  SendAll(fd, "traceparent: 00-" + std::string(kTrace) + "-" + kParent + "-01\r\n\r\n");
  ASSERT_NE(ReadResponses(fd, 1).find("hello"), std::string::npos);
  auto servers = ServerSpansFrom(client_port, 1);
  auto clients = ClientSpansTo(server.port(), 1);
  close(fd);
  ASSERT_EQ(servers.size(), 1u);
  ASSERT_EQ(clients.size(), 1u);
  for (const Span* s : {&servers[0], &clients[0]}) {
    EXPECT_EQ(s->name, "GET /split");
    EXPECT_EQ(ToHex(s->trace_id), kTrace);
    EXPECT_EQ(ToHex(s->parent_span_id), kParent);
    EXPECT_EQ(Int(*s, "http.request.body.size"), 0);
    EXPECT_EQ(Int(*s, "http.response.status_code"), 200);
  }
}

TEST_P(HttpCaptureTest, VectorCallsAreReadThroughTheirFirstBuffer) {
  // writev/readv and sendmsg/recvmsg: the iovec array and the msghdr are
  // kept at enter and read at exit.
  TinyHttpServer server;
  int fd = Connect(server.port());
  ASSERT_GE(fd, 0);
  const int client_port = LocalPort(fd);
  std::string req = "GET /vec/writev HTTP/1.1\r\nHost: x\r\n\r\n";
  char empty = 0;
  iovec wv[2] = {{req.data(), req.size()}, {&empty, 0}};
  ASSERT_EQ(writev(fd, wv, 2), static_cast<ssize_t>(req.size()));
  char buf[4096];
  std::string got;
  while (got.find("hello") == std::string::npos) {
    iovec rv[2] = {{buf, sizeof(buf)}, {&empty, 0}};
    ssize_t n = readv(fd, rv, 2);
    ASSERT_GT(n, 0);
    got.append(buf, static_cast<std::size_t>(n));
  }
  std::string req2 = "GET /status/404 HTTP/1.1\r\nHost: x\r\n\r\n";
  iovec sv{req2.data(), req2.size()};
  msghdr sm{};
  sm.msg_iov = &sv;
  sm.msg_iovlen = 1;
  ASSERT_EQ(sendmsg(fd, &sm, 0), static_cast<ssize_t>(req2.size()));
  got.clear();
  while (got.find("hello") == std::string::npos) {
    iovec rv{buf, sizeof(buf)};
    msghdr rm{};
    rm.msg_iov = &rv;
    rm.msg_iovlen = 1;
    ssize_t n = recvmsg(fd, &rm, 0);
    ASSERT_GT(n, 0);
    got.append(buf, static_cast<std::size_t>(n));
  }
  auto servers = ServerSpansFrom(client_port, 2);
  auto clients = ClientSpansTo(server.port(), 2);
  close(fd);
  ASSERT_EQ(servers.size(), 2u);
  ASSERT_EQ(clients.size(), 2u);
  for (const auto* v : {&servers, &clients}) {
    EXPECT_EQ((*v)[0].name, "GET /vec/writev");
    EXPECT_EQ(Int((*v)[0], "http.response.status_code"), 200);
    EXPECT_EQ((*v)[1].name, "GET /status/404");
    EXPECT_EQ(Int((*v)[1], "http.response.status_code"), 404);
  }
}

TEST_P(HttpCaptureTest, FilterChangesReachAProcessWhoseLevelIsCached) {
  // The trace level is cached per process and filter generation: removing
  // the process from the filter stops its capture at once, adding it back
  // resumes it.
  TinyHttpServer server;
  auto exchange = [&](const std::string& path) {
    int fd = Connect(server.port());
    EXPECT_GE(fd, 0);
    const int port = LocalPort(fd);
    SendAll(fd, "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_NE(ReadResponses(fd, 1).find("hello"), std::string::npos);
    close(fd);
    return port;
  };
  const int first = exchange("/cached");
  ASSERT_EQ(ServerSpansFrom(first, 1).size(), 1u);

  ASSERT_TRUE(filter_->RemoveAllowedPid(static_cast<std::uint32_t>(getpid())).ok());
  const auto emitted = capture_->ReadStats()[KSPAN_HTTP_STAT_EMITTED];
  const int second = exchange("/removed");
  EXPECT_TRUE(ServerSpansFrom(second, 1, 500ms).empty());
  EXPECT_LE(ClientSpansTo(server.port(), 2, 300ms).size(), 1u);
  EXPECT_EQ(capture_->ReadStats()[KSPAN_HTTP_STAT_EMITTED], emitted);

  ASSERT_TRUE(filter_->AllowPid(static_cast<std::uint32_t>(getpid())).ok());
  const int third = exchange("/again");
  auto servers = ServerSpansFrom(third, 1);
  ASSERT_EQ(servers.size(), 1u);
  EXPECT_EQ(servers[0].name, "GET /again");
}

TEST_P(HttpCaptureTest, NonHttpStreamProducesNothingAndIsCounted) {
  TinyHttpServer server;
  const auto before = capture_->ReadStats()[KSPAN_HTTP_STAT_NOT_HTTP];
  int fd = Connect(server.port());
  ASSERT_GE(fd, 0);
  const int client_port = LocalPort(fd);
  SendAll(fd, std::string("\x16\x03\x01\x02\x00 binary, then GET / HTTP/1.1\r\n\r\n", 36));
  char c;
  EXPECT_EQ(read(fd, &c, 1), 0);  // the server hangs up
  // Later HTTP-looking bytes on the same stream are not looked at.
  send(fd, "GET /late HTTP/1.1\r\n\r\n", 22, MSG_NOSIGNAL);
  close(fd);
  // Both ends: the client's socket and the server's.
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (capture_->ReadStats()[KSPAN_HTTP_STAT_NOT_HTTP] < before + 2 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_GE(capture_->ReadStats()[KSPAN_HTTP_STAT_NOT_HTTP], before + 2);
  EXPECT_TRUE(ServerSpansFrom(client_port, 1, 500ms).empty());
  EXPECT_TRUE(ClientSpansTo(server.port(), 1, 300ms).empty());
}

TEST_P(HttpCaptureTest, ProcessOutsideTheFilterProducesNothing) {
  // Server and client both in a child that is not selected.
  ::kspan::testing::ChildProcess child([] {
    ::kspan::testing::Listener l(AF_INET);
    int c = Connect(l.port());
    int s = accept(l.fd(), nullptr, nullptr);
    const std::string req = "GET /outside HTTP/1.1\r\nHost: x\r\n\r\n";
    const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    char buf[512];
    if (write(c, req.data(), req.size()) < 0 || read(s, buf, sizeof(buf)) <= 0 ||
        write(s, resp.data(), resp.size()) < 0 || read(c, buf, sizeof(buf)) <= 0) {
      _exit(3);
    }
    close(c);
    close(s);
  });
  const auto emitted = capture_->ReadStats()[KSPAN_HTTP_STAT_EMITTED];
  ASSERT_TRUE(child.RunAndWait());
  std::this_thread::sleep_for(300ms);
  assembler_.ExpireHttp(MonotonicNowNs() + 1'000'000'000);
  EXPECT_EQ(SpansOfPid(child.pid()), 0u);
  EXPECT_EQ(capture_->ReadStats()[KSPAN_HTTP_STAT_EMITTED], emitted);

  // The same exchange selected: it does produce spans (the check above can fail).
  ::kspan::testing::ChildProcess selected([] {
    ::kspan::testing::Listener l(AF_INET);
    int c = Connect(l.port());
    int s = accept(l.fd(), nullptr, nullptr);
    const std::string req = "GET /inside HTTP/1.1\r\nHost: x\r\n\r\n";
    const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    char buf[512];
    if (write(c, req.data(), req.size()) < 0 || read(s, buf, sizeof(buf)) <= 0 ||
        write(s, resp.data(), resp.size()) < 0 || read(c, buf, sizeof(buf)) <= 0) {
      _exit(3);
    }
    close(c);
    close(s);
  });
  ASSERT_TRUE(filter_->AllowPid(selected.pid()).ok());
  ASSERT_TRUE(selected.RunAndWait());
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  while (SpansOfPid(selected.pid()) < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(SpansOfPid(selected.pid()), 2u);
}

INSTANTIATE_TEST_SUITE_P(Http, HttpCaptureTest, ::testing::ValuesIn(RunnableHttpVariants()),
                         VariantTestName);

TEST_P(HttpCaptureTest, UnsampledTraceparentIsNotRecordedNorItsResponse) {
  // Keep-alive: a request whose traceparent says "not sampled" (flags 00)
  // leaves no record on either side, its response and body none either; the
  // sampled request after it pairs with its own response.
  TinyHttpServer server;
  int fd = Connect(server.port());
  ASSERT_GE(fd, 0);
  const int client_port = LocalPort(fd);
  const auto before = capture_->ReadStats()[KSPAN_HTTP_STAT_PARENT_UNSAMPLED];
  SendAll(fd, "GET /status/404 HTTP/1.1\r\n" + TraceParentLine("00") + "\r\n");
  ASSERT_NE(ReadResponses(fd, 1).find("hello"), std::string::npos);
  SendAll(fd, "GET /status/500 HTTP/1.1\r\n" + TraceParentLine("01") + "\r\n");
  ASSERT_NE(ReadResponses(fd, 1).find("hello"), std::string::npos);
  auto servers = ServerSpansFrom(client_port, 2, 2s);
  auto clients = ClientSpansTo(server.port(), 2, 500ms);
  close(fd);
  ASSERT_EQ(servers.size(), 1u);
  ASSERT_EQ(clients.size(), 1u);
  for (const Span* sp : {&servers[0], &clients[0]}) {
    EXPECT_EQ(sp->name, "GET /status/500");
    EXPECT_EQ(Int(*sp, "http.response.status_code"), 500);
    EXPECT_EQ(ToHex(sp->trace_id), kTrace);
  }
  // The client's write and the server's read of the unsampled request.
  EXPECT_EQ(capture_->ReadStats()[KSPAN_HTTP_STAT_PARENT_UNSAMPLED], before + 2);
}

TEST_P(HttpCaptureTest, PipelinedUnsampledThenSampledPairInOrder) {
  // Two requests in one send, the first not sampled: the server's two
  // responses (two writes) and the client's read of both keep the pairing.
  TinyHttpServer server;
  int fd = Connect(server.port());
  ASSERT_GE(fd, 0);
  const int client_port = LocalPort(fd);
  SendAll(fd, "GET /status/404 HTTP/1.1\r\n" + TraceParentLine("00") + "\r\n" +
                  "GET /status/500 HTTP/1.1\r\n" + TraceParentLine("01") + "\r\n");
  ASSERT_NE(ReadResponses(fd, 2).find("500 Internal"), std::string::npos);
  auto servers = ServerSpansFrom(client_port, 2, 2s);
  auto clients = ClientSpansTo(server.port(), 2, 500ms);
  close(fd);
  ASSERT_EQ(servers.size(), 1u);
  ASSERT_EQ(clients.size(), 1u);
  for (const Span* sp : {&servers[0], &clients[0]}) {
    EXPECT_EQ(sp->name, "GET /status/500");
    EXPECT_EQ(Int(*sp, "http.response.status_code"), 500);
  }
}

// The same with a budget of 4 root requests per process and second.
class HttpRootBudgetTest : public HttpCaptureTest {
 protected:
  std::uint32_t RootPerSecond() const override { return 4; }
};

TEST_P(HttpRootBudgetTest, RootRequestsOverTheBudgetAreNotRecorded) {
  // This process is client and server: each exchange without trace context
  // spends two roots (the client's request and the server's). Ten quick
  // exchanges: the first are recorded, up to the budget, the rest on
  // neither side; a request with a sampled traceparent is recorded whatever
  // the budget, and pairs with its own response.
  TinyHttpServer server;
  int fd = Connect(server.port());
  ASSERT_GE(fd, 0);
  const int client_port = LocalPort(fd);
  const auto before = capture_->ReadStats()[KSPAN_HTTP_STAT_ROOT_LIMITED];
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i) {
    SendAll(fd, "GET /root/" + std::to_string(i) + " HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_NE(ReadResponses(fd, 1).find("hello"), std::string::npos);
  }
  SendAll(fd, "GET /status/404 HTTP/1.1\r\n" + TraceParentLine("01") + "\r\n");
  ASSERT_NE(ReadResponses(fd, 1).find("hello"), std::string::npos);
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  // The traced request is the last span of each side.
  auto last_is_traced = [](const std::vector<Span>& v) {
    return !v.empty() && v.back().name == "GET /status/404";
  };
  std::vector<Span> servers, clients;
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < deadline &&
         !(last_is_traced(servers) && last_is_traced(clients))) {
    servers = ServerSpansFrom(client_port, 1, 50ms);
    clients = ClientSpansTo(server.port(), 1, 50ms);
  }
  close(fd);
  ASSERT_TRUE(last_is_traced(servers));
  ASSERT_TRUE(last_is_traced(clients));
  for (const auto* v : {&servers, &clients}) {
    const Span& traced = v->back();
    EXPECT_EQ(Int(traced, "http.response.status_code"), 404);
    EXPECT_EQ(ToHex(traced.trace_id), kTrace);
  }
  // Roots recorded on each side: the first exchanges, in order, answered 200.
  std::size_t roots = 0;
  for (const auto* v : {&servers, &clients}) {
    for (std::size_t i = 0; i + 1 < v->size(); ++i) {
      EXPECT_EQ((*v)[i].name, "GET /root/" + std::to_string(i));
      EXPECT_EQ(Int((*v)[i], "http.response.status_code"), 200);
    }
    roots += v->size() - 1;
  }
  const auto limited = capture_->ReadStats()[KSPAN_HTTP_STAT_ROOT_LIMITED] - before;
  EXPECT_EQ(roots + limited, 20u);  // every root decided once: recorded or counted
  // The budget is per second: exact when the exchanges took less. CPUs that
  // decide at the same instant may each take the last unit of it.
  if (elapsed < 900ms) {
    const std::size_t cpus = std::max(1u, std::thread::hardware_concurrency());
    EXPECT_GE(roots, 4u);
    EXPECT_LE(roots, 4u + cpus - 1);
  } else {
    EXPECT_GE(limited, 1u) << "exchanges took " << elapsed.count() << " ns";
  }
}

TEST_P(HttpRootBudgetTest, JunkTraceparentsAreRootsNotTraceContext) {
  // A remote client cannot buy its way past the root budget with a
  // traceparent that merely ends in -01, nor hide its request with one
  // that ends in -00: an invalid traceparent (W3C: to be ignored) is no
  // trace context, and the request is a root like any other.
  const std::vector<std::string> junk = {
      "00-" + std::string(32, '0') + "-" + kParent + "-01",             // zero trace id
      "00-" + std::string(kTrace) + "-" + std::string(16, '0') + "-01",  // zero parent id
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-" + std::string(kParent) + "-01",  // upper case
      "00-" + std::string(kTrace) + "-" + kParent + "-01-x",             // version 00 goes on
      "ff-" + std::string(kTrace) + "-" + kParent + "-01",               // version ff
      "00-" + std::string(kTrace) + "-" + kParent + "-0g",               // not hex
      "00-" + std::string(kTrace) + "x" + std::string(kParent).substr(1) + "-01",  // no separator
      "00-" + std::string(32, '0') + "-" + kParent + "-00",             // -00 but invalid
  };
  TinyHttpServer server;
  int fd = Connect(server.port());
  ASSERT_GE(fd, 0);
  const int client_port = LocalPort(fd);
  const auto stats0 = capture_->ReadStats();
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < junk.size(); ++i) {
    SendAll(fd, "GET /junk/" + std::to_string(i) + " HTTP/1.1\r\ntraceparent: " + junk[i] + "\r\n\r\n");
    ASSERT_NE(ReadResponses(fd, 1).find("hello"), std::string::npos);
  }
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  std::vector<Span> servers = ServerSpansFrom(client_port, 16, 1s);
  std::vector<Span> clients = ClientSpansTo(server.port(), 16, 500ms);
  close(fd);
  const auto stats = capture_->ReadStats();
  // Not one was taken for a sampled or an unsampled parent.
  EXPECT_EQ(stats[KSPAN_HTTP_STAT_PARENT_UNSAMPLED], stats0[KSPAN_HTTP_STAT_PARENT_UNSAMPLED]);
  const std::size_t roots = servers.size() + clients.size();
  const auto limited = stats[KSPAN_HTTP_STAT_ROOT_LIMITED] - stats0[KSPAN_HTTP_STAT_ROOT_LIMITED];
  EXPECT_EQ(roots + limited, 2 * junk.size()) << "every request decided as a root once";
  if (elapsed < 900ms) {
    const std::size_t cpus = std::max(1u, std::thread::hardware_concurrency());
    EXPECT_LE(roots, 4u + cpus - 1) << "the root budget held";
  }
  // The recorded ones start their own traces.
  for (const auto* v : {&servers, &clients}) {
    for (const Span& sp : *v) {
      EXPECT_NE(ToHex(sp.trace_id), kTrace) << sp.name;
      EXPECT_FALSE(IsValid(sp.parent_span_id)) << sp.name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Http, HttpRootBudgetTest, ::testing::ValuesIn(RunnableHttpVariants()),
                         VariantTestName);

TEST(HttpCaptureAuto, TakesTheSocketVariantWhereTheKernelHasIt) {
  KSPAN_REQUIRE_BPF();
  // Linux 6.3 added the socket data tracepoints: a probe that misses them
  // there would silently drop the tp_btf tests above (and the fast path).
  struct utsname u {};
  ASSERT_EQ(uname(&u), 0);
  int major = 0, minor = 0;
  ASSERT_EQ(std::sscanf(u.release, "%d.%d", &major, &minor), 2) << u.release;
  if (major > 6 || (major == 6 && minor >= 3)) {
    EXPECT_TRUE(KernelHasSockLengthTracepoints()) << u.release;
  }
  auto pins = PinDirectory::Create(::kspan::testing::TestPinDir());
  ASSERT_TRUE(pins.ok()) << pins.status();
  HttpCaptureOptions opts;
  opts.pin_dir = pins->path();
  HttpCapture capture(opts);
  ASSERT_TRUE(capture.Start().ok());
  ::kspan::testing::ReportVariant("http", capture.variant());
  EXPECT_EQ(capture.variant(), KernelHasSockLengthTracepoints() ? "tp_btf" : "tracepoint");
  capture.Detach();
}

}  // namespace
}  // namespace kspan
