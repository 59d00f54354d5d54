#include "userspace/http_server.h"

#include "exporter/status_macros.h"

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including it.
#include <utility>

#include <array>
#include <atomic>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace kspan {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

std::string HttpRequestHead::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (absl::EqualsIgnoreCase(k, absl::string_view(name.data(), name.size()))) return v;
  }
  return {};
}

std::string_view HttpRefusalName(HttpRefusal r) {
  switch (r) {
    case HttpRefusal::kHeaderTooLarge: return "header_too_large";
    case HttpRefusal::kMalformed: return "malformed";
    case HttpRefusal::kSlowClient: return "slow_client";
    case HttpRefusal::kTooManyConnections: return "connections";
  }
  return "unknown";
}

namespace {

// Body bytes read from the socket at a time.
constexpr std::size_t kReadChunk = 16 * 1024;
// After an answer that ends a connection whose request body was not read,
// the rest of what the client sends is read and dropped for at most this
// long (and this much), as nginx's lingering close does: closing with
// unread data makes the kernel reset the connection, and a client still
// writing its body would then never see the answer.
constexpr std::chrono::milliseconds kLingerTime{1000};
constexpr std::uint64_t kMinLingerBytes = 1u << 20;
// Connections over max_connections that are still being answered 503.
constexpr int kMaxRefusing = 64;

std::string ToString(beast::string_view s) { return std::string(s.data(), s.size()); }

HttpAnswer PlainAnswer(int status, std::string_view message) {
  HttpAnswer a;
  a.status = status;
  a.content_type = "text/plain";
  a.body = std::string(message) + "\n";
  return a;
}


}  // namespace

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError(absl::StrCat("no port in '", address, "'"));
  std::string host = address.substr(0, colon);
  int port = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad port in '", address, "'"));
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) return absl::InvalidArgumentError(absl::StrCat("no host in '", address, "'"));
  return std::make_pair(std::move(host), port);
}

class HttpServer::Impl {
 public:
  explicit Impl(HttpServerOptions options)
      : options_(std::move(options)),
        io_(std::make_unique<asio::io_context>()),
        acceptor_(std::make_unique<tcp::acceptor>(*io_)) {
    if (!options_.error_answer) options_.error_answer = PlainAnswer;
    if (!options_.on_refused) options_.on_refused = [](HttpRefusal) {};
    options_.threads = std::max(1, options_.threads);
    options_.max_connections = std::max(1, options_.max_connections);
  }

  ~Impl() { Stop(); }

  absl::Status Bind(const std::string& address) {
    auto hp = SplitHostPort(address);
    if (!hp.ok()) return hp.status();
    const auto& [host, port] = *hp;
    beast::error_code ec;
    tcp::resolver resolver(*io_);
    auto results = resolver.resolve(host, std::to_string(port), tcp::resolver::passive | tcp::resolver::numeric_service, ec);
    if (ec || results.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("cannot resolve '", host, "': ", ec.message()));
    }
    const tcp::endpoint endpoint = results.begin()->endpoint();
    acceptor_->open(endpoint.protocol(), ec);
    // SO_REUSEADDR only: SO_REUSEPORT would let another process share the port.
    if (!ec) acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_->bind(endpoint, ec);
    if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return absl::UnavailableError(absl::StrCat("cannot listen on ", address, ": ", ec.message()));
    port_ = acceptor_->local_endpoint(ec).port();
    return absl::OkStatus();
  }

  void Run() {
    asio::co_spawn(*io_, Accept(), asio::detached);
    for (int i = 0; i < options_.threads; ++i) {
      threads_.emplace_back([this] {
        try {
          io_->run();
        } catch (const std::exception& e) {
          spdlog::error("{} server: {}", options_.name, e.what());
        }
      });
    }
  }

  void Stop() {
    std::lock_guard lock(stop_mu_);
    if (stopped_) return;
    stopped_ = true;
    io_->stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
    // Destroying the context destroys every connection still pending (their
    // sockets close, their body readers are released) now, not when some
    // client decides to send or close.
    acceptor_.reset();
    io_.reset();
  }

  int port() const { return port_; }
  int connections() const { return connections_.load(); }

 private:
  struct ConnectionCount {
    explicit ConnectionCount(std::atomic<int>& n) : n_(n) {}
    ~ConnectionCount() { --n_; }
    std::atomic<int>& n_;
  };

  asio::awaitable<void> Accept() {
    for (;;) {
      beast::error_code ec;
      tcp::socket socket(asio::make_strand(*io_));
      co_await acceptor_->async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
      if (ec == asio::error::operation_aborted || !acceptor_->is_open()) co_return;
      if (ec) {
        // Out of file descriptors: wait a little rather than spin.
        asio::steady_timer pause(*io_, std::chrono::milliseconds(20));
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      auto executor = socket.get_executor();
      const int open = connections_.fetch_add(1);
      if (open >= options_.max_connections + kMaxRefusing) {
        // Even answering costs a socket for a while: past this, just close.
        --connections_;
        options_.on_refused(HttpRefusal::kTooManyConnections);
        socket.close(ec);
      } else if (open >= options_.max_connections) {
        asio::co_spawn(executor, Refuse(std::move(socket)), asio::detached);
      } else {
        asio::co_spawn(executor, Serve(std::move(socket)), asio::detached);
      }
    }
  }

  asio::awaitable<void> Refuse(tcp::socket socket) {
    ConnectionCount count(connections_);
    options_.on_refused(HttpRefusal::kTooManyConnections);
    beast::tcp_stream stream(std::move(socket));
    HttpAnswer a = options_.error_answer(503, "too many connections to kspan");
    a.headers.emplace_back("Retry-After", "1");
    co_await Write(stream, a, /*close=*/true, 11);
    co_await Linger(stream, 64 * 1024);
  }

  asio::awaitable<void> Serve(tcp::socket socket) {
    ConnectionCount count(connections_);
    try {
      co_await ServeRequests(socket);
    } catch (const std::exception& e) {
      spdlog::debug("{} server: connection ended: {}", options_.name, e.what());
    }
  }

  // Arguments of coroutines awaited here are references to locals of the
  // caller's frame, never temporaries: GCC 12 destroys some temporaries of a
  // co_await expression twice.
  asio::awaitable<void> ServeRequests(tcp::socket& socket) {
    beast::error_code ec;
    const tcp::endpoint remote = socket.remote_endpoint(ec);
    beast::tcp_stream stream(std::move(socket));
    // Holds what was read beyond a parsed part: at most a head and a chunk.
    beast::flat_buffer buffer(options_.max_header_bytes + 4 * kReadChunk);
    std::array<char, kReadChunk> chunk;
    const std::uint64_t linger_bytes = std::max(kMinLingerBytes, 4 * options_.max_body_bytes);
    for (;;) {
      http::request_parser<http::buffer_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(options_.max_header_bytes, UINT32_MAX)));
      // The body is counted here, piece by piece, chunked or not; a declared
      // length over the limit is the handler's to answer.
      parser.body_limit(std::numeric_limits<std::uint64_t>::max());
      // One deadline for the whole request: reads do not extend it.
      stream.expires_after(options_.request_timeout);
      co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (ec == beast::error::timeout) {
          // An idle keep-alive connection just ends; one that began a
          // request and did not finish its head in time was too slow.
          if (parser.got_some() || buffer.size() > 0) options_.on_refused(HttpRefusal::kSlowClient);
          co_return;
        }
        if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
            ec == asio::error::operation_aborted) {
          co_return;
        }
        const bool too_large = ec == http::error::header_limit || ec == http::error::buffer_overflow;
        options_.on_refused(too_large ? HttpRefusal::kHeaderTooLarge : HttpRefusal::kMalformed);
        std::string why = "malformed HTTP request";
        if (too_large) why = absl::StrCat("request headers larger than ", options_.max_header_bytes, " bytes");
        const HttpAnswer refusal = options_.error_answer(too_large ? 431 : 400, why);
        co_await Write(stream, refusal, /*close=*/true, 11);
        co_await Linger(stream, linger_bytes);
        co_return;
      }

      auto& message = parser.get();
      const unsigned version = message.version();
      HttpRequestHead head;
      head.method = ToString(message.method_string());
      head.target = ToString(message.target());
      head.path = head.target.substr(0, head.target.find('?'));
      for (const auto& field : message) head.headers.emplace_back(ToString(field.name_string()), ToString(field.value()));
      if (auto len = parser.content_length()) head.content_length = *len;
      head.chunked = parser.chunked();
      head.remote_address = remote.address().to_string(ec);
      if (remote.address().is_v6() && remote.address().to_v6().is_v4_mapped()) {
        head.remote_address = asio::ip::make_address_v4(asio::ip::v4_mapped, remote.address().to_v6()).to_string();
      }
      head.remote_port = remote.port();
      const bool keep_alive = parser.keep_alive();

      HttpDecision decision;
      try {
        decision = options_.handler(head);
      } catch (const std::exception& e) {
        decision.answer = options_.error_answer(500, absl::StrCat("internal error: ", e.what()));
      }
      if (decision.answer || !decision.body) {
        HttpAnswer answer = decision.answer ? std::move(*decision.answer) : options_.error_answer(500, "no answer");
        // A body that was not read cannot be skipped reliably: the
        // connection ends after the answer.
        const bool close = answer.close || head.has_body() || !keep_alive;
        co_await Write(stream, answer, close, version);
        if (close) {
          if (head.has_body()) co_await Linger(stream, linger_bytes);
          co_return;
        }
        continue;
      }

      if (absl::EqualsIgnoreCase(head.Header("Expect"), "100-continue")) {
        http::response<http::empty_body> go_on{http::status::continue_, version};
        co_await http::async_write(stream, go_on, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) co_return;
      }
      HttpBodyEnd end = HttpBodyEnd::kComplete;
      std::uint64_t total = 0;
      while (!parser.is_done()) {
        message.body().data = chunk.data();
        message.body().size = chunk.size();
        co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
        if (ec == http::error::need_buffer) ec = {};
        const std::size_t n = chunk.size() - message.body().size;
        if (n > 0) {
          total += n;
          if (total > options_.max_body_bytes) {
            end = HttpBodyEnd::kTooLarge;
            break;
          }
          if (!decision.body->Consume(std::string_view(chunk.data(), n))) {
            end = HttpBodyEnd::kStopped;
            break;
          }
        }
        if (ec) {
          end = ec == beast::error::timeout ? HttpBodyEnd::kTimedOut : HttpBodyEnd::kBroken;
          break;
        }
      }
      HttpAnswer answer = decision.body->Finish(end);
      decision.body.reset();  // what it holds is released before the answer goes out
      // A timed-out stream has been closed by Beast: nothing can be answered.
      if (end == HttpBodyEnd::kTimedOut) co_return;
      const bool close = end != HttpBodyEnd::kComplete || answer.close || !keep_alive;
      co_await Write(stream, answer, close, version);
      if (close) {
        if (end == HttpBodyEnd::kTooLarge || end == HttpBodyEnd::kStopped) co_await Linger(stream, linger_bytes);
        co_return;
      }
    }
  }

  asio::awaitable<void> Write(beast::tcp_stream& stream, const HttpAnswer& a, bool close, unsigned version) {
    http::response<http::string_body> res{static_cast<http::status>(a.status), version};
    if (!a.content_type.empty()) res.set(http::field::content_type, a.content_type);
    for (const auto& [k, v] : a.headers) res.insert(k, v);
    res.body() = a.body;
    res.keep_alive(!close);
    res.prepare_payload();
    // A client that does not read its answer is not waited for beyond this.
    stream.expires_after(options_.request_timeout);
    beast::error_code ec;
    co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
  }

  asio::awaitable<void> Linger(beast::tcp_stream& stream, std::uint64_t max_bytes) {
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) co_return;
    stream.expires_after(kLingerTime);
    std::array<char, kReadChunk> sink;
    std::uint64_t drained = 0;
    while (drained < max_bytes) {
      const std::size_t n =
          co_await stream.async_read_some(asio::buffer(sink), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      drained += n;
    }
  }

  HttpServerOptions options_;
  std::unique_ptr<asio::io_context> io_;
  std::unique_ptr<tcp::acceptor> acceptor_;
  std::vector<std::thread> threads_;
  std::atomic<int> connections_{0};
  int port_ = 0;
  std::mutex stop_mu_;
  bool stopped_ = false;
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& address, HttpServerOptions options) {
  if (!options.handler) return absl::InvalidArgumentError("HTTP server: no handler");
  auto impl = std::make_unique<Impl>(std::move(options));
  KSPAN_RETURN_IF_ERROR(impl->Bind(address));
  impl->Run();
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

int HttpServer::port() const { return impl_->port(); }
int HttpServer::open_connections() const { return impl_->connections(); }

void HttpServer::Stop() {
  if (impl_) impl_->Stop();
}

}  // namespace kspan
