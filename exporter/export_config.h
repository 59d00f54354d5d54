// Options of the export path: the shared batcher and each destination.
//
// Plain structs with defaults; userspace/config.cpp fills them from the YAML
// file, the environment and flags (flag > env > file > default).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kspan {

// The longest duration any setting takes (a year). Far beyond any sensible
// timeout or backoff, and small enough that `now + d` (plus a server's
// clamped retry delay) cannot overflow a clock counting nanoseconds.
inline constexpr std::chrono::milliseconds kMaxSettingDuration{365LL * 24 * 3600 * 1000};

struct BatchOptions {
  std::size_t max_export_batch_size = 512;
  std::chrono::milliseconds schedule_delay{1000};
  // Spans waiting in the shared batcher before they are dropped (counted).
  std::size_t max_queue_size = 2048;
  // The same bound in bytes (ApproximateBatchBytes: spans with their
  // distinct resources and scopes counted once while queued). One request
  // larger than this is still taken into an empty queue, so that no
  // request is refused for ever.
  std::size_t max_queue_bytes = 64u << 20;
};

// Limits on the spans kspan receives over OTLP, as the OpenTelemetry SDKs
// limit the spans they record (the names follow OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT
// and the other variables of the SDK specification; the SDKs default to 128
// items and no value length limit). Applied while decoding, so what is over
// a limit is never held in memory; what is dropped is added to the span's,
// event's, link's, resource's or scope's dropped_*_count, as an SDK does.
// The defaults are four times the SDKs': spans from an SDK pass unchanged.
struct SpanLimits {
  // Resource and scope attributes, and the entries of any one array or
  // key-value list inside a value (OTEL_ATTRIBUTE_COUNT_LIMIT). An
  // attribute whose value holds a longer list is dropped.
  std::uint32_t attribute_count = 512;
  // Longer string and bytes values are cut to this many bytes (on a UTF-8
  // character boundary), as OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT cuts them.
  std::size_t attribute_value_length = 1u << 20;
  std::uint32_t span_attribute_count = 512;   // OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT
  std::uint32_t span_event_count = 512;       // OTEL_SPAN_EVENT_COUNT_LIMIT
  std::uint32_t span_link_count = 512;        // OTEL_SPAN_LINK_COUNT_LIMIT
  std::uint32_t event_attribute_count = 512;  // OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT
  std::uint32_t link_attribute_count = 512;   // OTEL_LINK_ATTRIBUTE_COUNT_LIMIT
  // Arrays and key-value lists nested in one value (kspan's own: OTLP has
  // no such limit, but each level costs the decoder stack). An attribute
  // nested deeper is dropped.
  std::uint32_t value_depth = 32;
};

struct RetryOptions {
  std::chrono::milliseconds initial_backoff{1000};
  std::chrono::milliseconds max_backoff{30000};
  double multiplier = 1.5;
  // Give up on a batch after this long (0 = keep trying while the queue has room).
  std::chrono::milliseconds max_elapsed{300000};
};

enum class DestinationType { kOtlpGrpc, kConsole, kFile, kOtlpHttp, kZipkin };

// TLS for the network destinations. Client certificate and key together
// enable mTLS.
struct TlsOptions {
  std::string cert_file;    // client certificate chain (PEM)
  std::string key_file;     // client private key (PEM)
  std::string server_name;  // name to verify (and SNI) instead of the endpoint's host
  bool insecure_skip_verify = false;  // HTTP destinations only; for tests and labs
};

// Credentials added as an `authorization` header. Secrets come from a file
// or an environment variable, never from the config file itself, and are
// never logged.
struct AuthOptions {
  std::string bearer_token_file;
  std::string bearer_token_env;
  std::string basic_username;
  std::string basic_password_file;
  std::string basic_password_env;
  bool empty() const {
    return bearer_token_file.empty() && bearer_token_env.empty() && basic_username.empty();
  }
};

// The options every network destination shares (OTLP/gRPC, OTLP/HTTP,
// Zipkin). The historical name stays because the config and environment
// code address it as DestinationConfig::otlp_grpc.
struct OtlpGrpcOptions {
  // As the OTLP exporter specification writes it: scheme://host[:port][/path]
  // ("http" = plaintext, "https" = TLS); for gRPC a bare host:port too.
  std::string endpoint = "http://localhost:4317";
  // OTLP/HTTP: true when `endpoint` is the full URL to POST to (it came from
  // OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or has a path); false when
  // "/v1/traces" is appended to it (OTEL_EXPORTER_OTLP_ENDPOINT).
  bool endpoint_is_full_url = false;
  bool insecure = false;  // only consulted for a scheme-less gRPC endpoint
  std::vector<std::pair<std::string, std::string>> headers;
  std::chrono::milliseconds timeout{10000};
  std::string compression = "none";  // "none" | "gzip" | "zstd" (HTTP only)
  std::string certificate_file;      // CA bundle for TLS; empty = system roots
  // "grpc" | "http/protobuf" | "http/json" (OTEL_EXPORTER_OTLP_PROTOCOL).
  // For type otlp_grpc a value http/* turns the destination into OTLP/HTTP.
  std::string protocol = "grpc";
  TlsOptions tls;
  AuthOptions auth;
};
using NetworkOptions = OtlpGrpcOptions;

struct FileStoreOptions {
  // OTLP/JSON, one ExportTraceServiceRequest per line.
  std::string path;
  // Rotate to <path>.1 beyond this size (0 = never).
  std::size_t max_bytes = 256u << 20;
};

struct ConsoleOptions {
  bool to_stderr = false;
};

enum class FsyncPolicy {
  kFull,    // SQLite synchronous=FULL: every accepted batch is fsynced (survives power loss)
  kNormal,  // synchronous=NORMAL in WAL mode: survives kill -9, not power loss
  kOff,     // synchronous=OFF: survives kill -9, not power loss; fewest fsyncs
};

struct DiskQueueOptions {
  bool enabled = false;
  std::string path;  // SQLite file; default <state_dir>/queue/<name>.db
  std::size_t max_bytes = 1u << 30;
  FsyncPolicy fsync = FsyncPolicy::kNormal;
};

// Memory bounds of one destination's queue. When full, low-value kernel
// spans are dropped before error spans and app spans.
// (The batch bound is DestinationConfig::max_queued_batches.)
struct QueueOptions {
  std::size_t max_spans = 0;         // 0 = only the other bounds
  std::size_t max_bytes = 64u << 20;  // Span::ApproximateBytes; 0 = unbounded
  DiskQueueOptions disk;
};

struct CircuitBreakerOptions {
  bool enabled = true;
  // Consecutive failed attempts (retryable errors) that open the breaker.
  int failure_threshold = 5;
  // How long it stays open before a probe (longer if the server asked).
  std::chrono::milliseconds open_duration{5000};
};

struct DeadLetterOptions {
  bool enabled = true;  // takes effect once a path is set (config fills one in)
  std::string path;     // SQLite file; default <state_dir>/dlq/<name>.db
  std::size_t max_bytes = 64u << 20;
};

struct DestinationConfig {
  std::string name;
  DestinationType type = DestinationType::kConsole;
  OtlpGrpcOptions otlp_grpc;  // every network destination (see above)
  FileStoreOptions file;
  ConsoleOptions console;
  RetryOptions retry;
  // Batches waiting for this destination's sender before drops (counted).
  // Config keys max_queued_batches and queue.max_batches.
  std::size_t max_queued_batches = 64;
  QueueOptions queue;
  // Requests in flight at once (one sender and connection each).
  std::size_t max_in_flight = 1;
  CircuitBreakerOptions circuit_breaker;
  DeadLetterOptions dead_letter;
};

struct ExportConfig {
  BatchOptions batch;
  std::vector<DestinationConfig> destinations;
};

// Which transport a destination uses after OTEL_EXPORTER_OTLP_PROTOCOL.
bool UsesOtlpHttp(const DestinationConfig& d);
bool IsNetworkDestination(const DestinationConfig& d);

}  // namespace kspan
