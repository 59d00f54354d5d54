// A small HTTP/1.1 server for kspan's two listeners (the OTLP/HTTP receiver
// and the admin endpoint) whose every cost a client can drive is bounded:
//
//   request line + headers    max_header_bytes in all (so also their count)
//   body                      max_body_bytes as sent, chunked or not; a body
//                             is read only when the handler asks for it,
//                             in pieces, never buffered by the server
//   time                      request_timeout for a whole request, head and
//                             body, from when the server starts waiting for
//                             it: a client that trickles bytes cannot extend
//                             it (a per-request deadline, not a per-read one)
//   connections               max_connections at once; beyond, 503
//   threads                   `threads` serve every connection (asynchronous
//                             I/O): a slow client holds a socket and a few
//                             KiB, never a thread, so it cannot keep others
//                             waiting, and Stop() waits for no client.
//
// Why not cpp-httplib's server, which kspan used before: 0.11 (Debian 12)
// reads headers without a bound on their count (and a line without a
// newline into an unbounded string), reads the body of an unmatched route
// or a chunked body whole, gives each connection a thread for as long as it
// trickles a byte per read timeout, and offers no hook on the accepted
// socket through which any of that could be bounded from outside. Boost.Beast
// (Debian's Boost 1.74) has header and body limits in its parser and
// deadlines on its streams; this file keeps it out of every other header.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kspan {

struct HttpRequestHead {
  std::string method;  // as sent: "POST"
  std::string target;  // "/v1/traces?x=1"
  std::string path;    // target up to '?'
  std::vector<std::pair<std::string, std::string>> headers;
  std::optional<std::uint64_t> content_length;  // as declared
  bool chunked = false;
  std::string remote_address;  // "127.0.0.1", "::1"
  std::uint16_t remote_port = 0;

  // First value of a header (name case-insensitive), "" when absent.
  std::string Header(std::string_view name) const;
  bool has_body() const { return chunked || content_length.value_or(0) > 0; }
};

struct HttpAnswer {
  int status = 200;
  std::string content_type;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  bool close = false;  // Connection: close after this answer
};

// How the body of a request ended.
enum class HttpBodyEnd {
  kComplete,
  kStopped,   // the reader refused more (Consume returned false)
  kTooLarge,  // more than max_body_bytes was sent
  kTimedOut,  // request_timeout passed before the last byte
  kBroken,    // malformed chunking, or the client went away
};

// Reads one request's body, piece by piece, as sent (de-chunked; never
// decompressed). Consume and Finish run on a server thread.
class HttpBodyReader {
 public:
  virtual ~HttpBodyReader() = default;
  virtual bool Consume(std::string_view piece) = 0;
  // The answer. For any end but kComplete the connection is closed after it.
  virtual HttpAnswer Finish(HttpBodyEnd end) = 0;
};

// What a handler makes of a request's head: an answer at once (a body, if
// any, is then not read and the connection closes after the answer), or a
// reader for the body.
struct HttpDecision {
  std::optional<HttpAnswer> answer;
  std::unique_ptr<HttpBodyReader> body;
};

// The server's own refusals, for the owner's metrics.
enum class HttpRefusal {
  kHeaderTooLarge,      // answered 431, closed
  kMalformed,           // not HTTP/1.x: answered 400, closed
  kSlowClient,          // the head did not arrive within request_timeout: closed
  kTooManyConnections,  // answered 503, closed
};
std::string_view HttpRefusalName(HttpRefusal r);

// "host:port" or "[v6]:port" -> host (without brackets), port: the form of
// every listen address in kspan's config.
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address);

struct HttpServerOptions {
  std::string name = "http";  // in log lines
  std::size_t max_header_bytes = 16 * 1024;
  std::uint64_t max_body_bytes = 4u << 20;
  std::chrono::milliseconds request_timeout{10000};
  int max_connections = 256;
  int threads = 2;
  // Called on a server thread for every request head.
  std::function<HttpDecision(const HttpRequestHead&)> handler;
  // The body of the server's own error answers (a status, a message).
  std::function<HttpAnswer(int status, std::string_view message)> error_answer;
  std::function<void(HttpRefusal)> on_refused;
};

class HttpServer {
 public:
  // Binds `address` (host:port, [v6]:port; port 0 = ephemeral) exclusively
  // (no SO_REUSEPORT) and starts serving.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& address, HttpServerOptions options);
  ~HttpServer();  // Stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const;
  int open_connections() const;
  // Closes the listener and every connection, in progress or not, and joins
  // the threads; waits for no client. Idempotent.
  void Stop();

  class Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kspan
