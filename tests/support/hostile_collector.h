// A collector that misbehaves on purpose, for the exporter's robustness
// tests: OTLP/gRPC and OTLP/HTTP servers on 127.0.0.1 (ephemeral ports) that
// answer each request with exactly the bytes a test scripts, however wrong:
// gzip and zstd bombs, bodies larger than any bound, escape sequences in
// status messages, absurd RetryInfo and Retry-After, OK with garbage.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <string>
#include <utility>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "tests/support/process_memory.h"

namespace httplib {
class Server;
}

namespace kspan::testing {

// One answer of the gRPC collector to TraceService/Export.
struct HostileGrpcAnswer {
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string message;  // the status message: any bytes
  std::string details;  // grpc-status-details-bin: any bytes
  std::string body;     // with OK: the response message as sent; need not parse
};

class HostileGrpcCollector {
 public:
  HostileGrpcCollector();  // aborts the test binary if it cannot listen
  ~HostileGrpcCollector();

  std::string endpoint() const;  // "http://127.0.0.1:PORT"
  // Answers for the next calls, in order; the last one is repeated until
  // another is pushed (an empty script answers OK with an empty body).
  void Push(HostileGrpcAnswer answer);
  int calls() const;

 private:
  class Service;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

// One answer of the HTTP collector to any POST.
struct HostileHttpAnswer {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;  // e.g. Content-Encoding, Retry-After
  std::string content_type = "application/x-protobuf";
  std::string body;
  // Instead of `body`: this many zero bytes, streamed (never held in memory,
  // so the collector does not count against the memory a test measures).
  std::size_t zero_bytes = 0;
};

class HostileHttpCollector {
 public:
  HostileHttpCollector();
  ~HostileHttpCollector();

  std::string base_url() const;  // "http://127.0.0.1:PORT"
  void Push(HostileHttpAnswer answer);  // as HostileGrpcCollector::Push
  int calls() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

// gzip data that inflates to `mib` MiB of zeros in about 1 KiB per MiB,
// built in milliseconds: one deflate block of 1 MiB of zeros, flushed so
// that it stands alone, repeated, then an empty final block and the gzip
// trailer (CRC-32 and length of the whole).
std::string GzipBomb(std::size_t mib);
// zstd frames of 1 MiB of zeros each, concatenated (one stream to a decoder).
std::string ZstdBomb(std::size_t mib);

// A google.rpc.Status (code UNAVAILABLE) whose details hold a RetryInfo with
// this delay, valid or not: grpc-status-details-bin as a collector sends it.
std::string RetryInfoDetails(std::int64_t seconds, std::int32_t nanos = 0);

}  // namespace kspan::testing
