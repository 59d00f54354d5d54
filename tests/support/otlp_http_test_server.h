// A real OTLP/HTTP (and Zipkin) receiver for tests: an in-process
// cpp-httplib server on 127.0.0.1 (ephemeral port; another local address
// when asked, e.g. a container bridge's gateway), plaintext or TLS (with
// optional client-certificate verification for mTLS). It records every
// request (body decompressed and decoded) and answers as scripted: any
// status, Retry-After, partial success, google.rpc.Status bodies, delays.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/otlp_test_server.h"

namespace httplib {
class Server;
}

namespace kspan::testing {

struct HttpScriptedResponse {
  int status = 200;
  std::map<std::string, std::string> headers;  // e.g. {"Retry-After", "1"}
  // With 2xx on /v1/traces: partial_success in the response.
  std::int64_t rejected_spans = 0;
  std::string error_message;
  // With an error status: a google.rpc.Status with this message.
  std::string status_message;
  std::chrono::milliseconds delay{0};
};

struct RecordedHttpRequest {
  std::string path;
  std::string remote_addr;  // the sender's address (a container's, on a bridge)
  std::string content_type;
  std::string content_encoding;
  std::multimap<std::string, std::string> headers;  // lower-case names
  std::string body;  // decompressed
  std::optional<otlp_proto::ExportTraceServiceRequest> otlp;  // when it decoded
  std::chrono::steady_clock::time_point at;
};

struct HttpServerTls {
  std::string cert_file;
  std::string key_file;
  std::string client_ca_file;  // non-empty: require a client certificate (mTLS)
};

class OtlpHttpTestServer {
 public:
  // `bind_address`: a local IPv4 or IPv6 address to listen on. Aborts the
  // test binary if it cannot listen there.
  explicit OtlpHttpTestServer(std::optional<HttpServerTls> tls = std::nullopt,
                              std::string bind_address = "127.0.0.1");
  ~OtlpHttpTestServer();

  int port() const { return port_; }
  const std::string& bind_address() const { return bind_address_; }
  // "http://127.0.0.1:PORT" (https with TLS; the bind address in place of
  // 127.0.0.1, bracketed when IPv6).
  std::string base_url() const;

  void PushResponse(HttpScriptedResponse r);
  void SetDefaultDelay(std::chrono::milliseconds d);

  // Every request received, whatever it was answered.
  std::vector<RecordedHttpRequest> requests() const;
  int calls() const;
  // Spans of requests answered 2xx.
  std::vector<ReceivedSpan> spans() const;
  bool WaitForCalls(int n, std::chrono::milliseconds timeout) const;
  bool WaitForSpanCount(std::size_t n, std::chrono::milliseconds timeout) const;

  void Stop();

 private:
  struct State;
  std::shared_ptr<State> state_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::string bind_address_;
  int port_ = 0;
  bool tls_ = false;
};

// A CA, a server certificate (localhost, otlp.test, 127.0.0.1) and a client
// certificate, generated with the openssl CLI into `dir` at test time.
struct TestPki {
  std::string ca_cert, ca_key;
  std::string server_cert, server_key;
  std::string client_cert, client_key;
  std::string other_ca_cert;  // an unrelated CA, for verification failures
};
TestPki MakeTestPki(const std::string& dir);

}  // namespace kspan::testing
