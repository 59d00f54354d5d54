// Options of the export path: the shared batcher and each destination.
//
// Plain structs with defaults; userspace/config.cpp fills them from the YAML
// file, the environment and flags (flag > env > file > default).
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace kspan {

struct BatchOptions {
  std::size_t max_export_batch_size = 512;
  std::chrono::milliseconds schedule_delay{1000};
  // Spans waiting in the shared batcher before they are dropped (counted).
  std::size_t max_queue_size = 2048;
};

struct RetryOptions {
  std::chrono::milliseconds initial_backoff{1000};
  std::chrono::milliseconds max_backoff{30000};
  double multiplier = 1.5;
  // Give up on a batch after this long (0 = keep trying while the queue has room).
  std::chrono::milliseconds max_elapsed{300000};
};

enum class DestinationType { kOtlpGrpc, kConsole, kFile };

struct OtlpGrpcOptions {
  // As the OTLP exporter specification writes it: scheme://host:port
  // ("http" = plaintext, "https" = TLS); a bare host:port is accepted too.
  std::string endpoint = "http://localhost:4317";
  bool insecure = false;  // only consulted for a scheme-less endpoint
  std::vector<std::pair<std::string, std::string>> headers;
  std::chrono::milliseconds timeout{10000};
  std::string compression = "none";  // "none" | "gzip"
  std::string certificate_file;      // CA bundle for TLS; empty = system roots
};

struct FileStoreOptions {
  // OTLP/JSON, one ExportTraceServiceRequest per line.
  std::string path;
  // Rotate to <path>.1 beyond this size (0 = never).
  std::size_t max_bytes = 256u << 20;
};

struct ConsoleOptions {
  bool to_stderr = false;
};

struct DestinationConfig {
  std::string name;
  DestinationType type = DestinationType::kConsole;
  OtlpGrpcOptions otlp_grpc;
  FileStoreOptions file;
  ConsoleOptions console;
  RetryOptions retry;
  // Batches waiting for this destination's sender before drops (counted).
  std::size_t max_queued_batches = 64;
};

struct ExportConfig {
  BatchOptions batch;
  std::vector<DestinationConfig> destinations;
};

}  // namespace kspan
