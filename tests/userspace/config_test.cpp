#include "userspace/config.h"

#include <gtest/gtest.h>

#include <map>

namespace kspan {
namespace {

struct FakeEnv {
  std::map<std::string, std::string> vars;
  GetEnv fn() const {
    return [this](const char* name) -> const char* {
      auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  }
};

absl::StatusOr<AgentConfig> Parse(const std::string& yaml, const FakeEnv& env = {},
                                  const FlagOverrides& flags = {}) {
  return ParseConfig(yaml, "kspan.yaml", flags, env.fn());
}

const DestinationConfig* Find(const AgentConfig& c, const std::string& name) {
  for (const auto& d : c.exporter.destinations) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

TEST(Config, NothingConfiguredMeansTheEmbeddedDefault) {
  auto c = Parse("");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->embedded_default);
  ASSERT_EQ(c->exporter.destinations.size(), 2u);
  const auto* local = Find(*c, "local");
  ASSERT_NE(local, nullptr);
  EXPECT_EQ(local->type, DestinationType::kFile);
  EXPECT_EQ(local->file.path, "/var/lib/kspan/spans/local.jsonl");
  ASSERT_NE(Find(*c, "console"), nullptr);
  EXPECT_EQ(c->admin_listen, "127.0.0.1:9464");
}

TEST(Config, UnknownKeysAreRefusedWithFileLineAndKey) {
  auto c = Parse("capture:\n  poll_interval: 10ms\n  ring_size: 10\n");
  ASSERT_FALSE(c.ok());
  const std::string msg(c.status().message());
  EXPECT_NE(msg.find("kspan.yaml:3: capture.ring_size: unknown key"), std::string::npos) << msg;

  c = Parse("destinations:\n  - type: otlp_grpc\n    endpont: x\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string(c.status().message()).find("destinations[0].endpont: unknown key"),
            std::string::npos)
      << c.status();

  c = Parse("bogus: 1\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string(c.status().message()).find("bogus: unknown key"), std::string::npos);
}

TEST(Config, SecurityDropsCapabilitiesUnlessTurnedOff) {
  auto c = Parse("");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->security.drop_capabilities);
  c = Parse("security:\n  drop_capabilities: false\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->security.drop_capabilities);
  c = Parse("security:\n  keep: [cap_sys_admin]\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string(c.status().message()).find("security.keep: unknown key"), std::string::npos)
      << c.status();
}

TEST(Config, SyscallHooksAttachOnDemandUnlessAlways) {
  auto c = Parse("");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->capture.syscalls.attach_always);
  c = Parse("capture:\n  syscalls: {attach: always}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->capture.syscalls.attach_always);
  c = Parse("capture:\n  syscalls: {attach: on_demand}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->capture.syscalls.attach_always);
}

TEST(Config, SlowWatchScanByDefaultAtTheThreshold) {
  auto c = Parse("");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->capture.slow_watch, "scan");
  EXPECT_EQ(c->capture.slow_scan_interval.count(), 0);  // the threshold
  c = Parse("capture:\n  slow_watch: sched_switch\n  slow_threshold: 50ms\n"
            "  slow_scan_interval: 20ms\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->capture.slow_watch, "sched_switch");
  EXPECT_EQ(c->capture.slow_scan_interval, std::chrono::milliseconds(20));
}

TEST(Config, BadValuesNameTheKey) {
  for (const auto& [yaml, expect] : std::vector<std::pair<std::string, std::string>>{
           {"capture:\n  tcp: {enabled: maybe}\n", "capture.tcp.enabled: must be true or false"},
           {"capture:\n  tcp: {scope: some}\n", "capture.tcp.scope: must be all or selected"},
           {"capture:\n  tcp: {variant: kprobe}\n", "capture.tcp.variant: must be auto"},
           {"capture:\n  slow_watch: kprobe\n", "capture.slow_watch: scan or sched_switch"},
           {"capture:\n  slow_threshold: 10ms\n  slow_scan_interval: 20ms\n",
            "capture.slow_scan_interval: at most capture.slow_threshold"},
           {"capture:\n  syscalls: {attach: lazily}\n",
            "capture.syscalls.attach: must be on_demand or always"},
           {"capture:\n  processes: {pids: [abc]}\n", "capture.processes.pids: must be a list"},
           {"capture:\n  processes: {comms: [averyveryverylongname]}\n",
            "a comm prefix is 1 to 15 bytes"},
           {"batch:\n  schedule_delay: soon\n", "batch.schedule_delay: must be a duration"},
           {"batch:\n  max_queue_size: 0\n", "batch.max_queue_size: must be at least 1"},
           {"capture:\n  ring_buffer_bytes: 1KiB\n", "capture.ring_buffer_bytes: must be between"},
           {"log_level: loud\n", "log_level: 'loud'"},
           {"destinations:\n  - type: kafka\n", "destinations[0].type: unknown type 'kafka'"},
           {"destinations:\n  - {name: a, type: console}\n  - {name: a, type: console}\n",
            "name 'a' is used twice"},
           {"destinations: [\n", "not valid YAML"},
       }) {
    auto c = Parse(yaml);
    ASSERT_FALSE(c.ok()) << yaml;
    EXPECT_NE(std::string(c.status().message()).find(expect), std::string::npos)
        << c.status() << " for " << yaml;
  }
}

TEST(Config, ReceiverAndCorrelation) {
  auto d = Parse("");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->receiver.grpc_enabled);
  EXPECT_EQ(d->receiver.grpc_endpoint, "127.0.0.1:4317");
  EXPECT_EQ(d->receiver.http_endpoint, "127.0.0.1:4318");
  EXPECT_TRUE(d->correlation.enabled);
  EXPECT_TRUE(d->correlation.enroll_senders);
  EXPECT_EQ(d->correlation.enroll_from_environment, EnvironmentEnrollMode::kReceiver);

  auto c = Parse(
      "receiver:\n"
      "  grpc: {enabled: false}\n"
      "  http: {endpoint: \"0.0.0.0:14318\"}\n"
      "  max_request_bytes: 1MiB\n"
      "  max_in_flight_bytes: 16MiB\n"
      "  request_timeout: 3s\n"
      "correlation:\n"
      "  join_window: 10s\n"
      "  unmatched: drop\n"
      "  clock_tolerance: 2ms\n"
      "  max_pending_spans: 1000\n"
      "  enroll_senders: false\n"
      "  enrollment_linger: 5m\n"
      "  enroll_from_environment: any\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->receiver.grpc_enabled);
  EXPECT_EQ(c->receiver.http_endpoint, "0.0.0.0:14318");
  EXPECT_EQ(c->receiver.max_request_bytes, 1u << 20);
  EXPECT_EQ(c->receiver.max_in_flight_bytes, 16u << 20);
  EXPECT_EQ(c->receiver.request_timeout, std::chrono::seconds(3));
  EXPECT_EQ(c->correlation.join_window, std::chrono::seconds(10));
  EXPECT_FALSE(c->correlation.export_unmatched);
  EXPECT_EQ(c->correlation.clock_tolerance, std::chrono::milliseconds(2));
  EXPECT_EQ(c->correlation.max_pending_spans, 1000u);
  EXPECT_FALSE(c->correlation.enroll_senders);
  EXPECT_EQ(c->correlation.enrollment_linger, std::chrono::minutes(5));
  EXPECT_EQ(c->correlation.enroll_from_environment, EnvironmentEnrollMode::kAny);

  FlagOverrides flags;
  flags.receiver_grpc = "127.0.0.1:5317";
  flags.receiver_http = "off";
  auto f = ParseConfig("", "kspan.yaml", flags, FakeEnv{}.fn());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->receiver.grpc_endpoint, "127.0.0.1:5317");
  EXPECT_FALSE(f->receiver.http_enabled);

  for (const auto& [yaml, expect] : std::vector<std::pair<std::string, std::string>>{
           {"correlation:\n  unmatched: keep\n", "correlation.unmatched: must be export or drop"},
           {"correlation:\n  join_window: later\n", "correlation.join_window: must be a duration"},
           {"correlation:\n  window: 1s\n", "unknown key"},
           {"correlation:\n  enroll_from_environment: yes\n",
            "correlation.enroll_from_environment: must be receiver, any or off"},
           {"receiver:\n  grpc: {port: 1}\n", "receiver.grpc.port"},
           {"receiver:\n  max_request_bytes: 10\n", "must be at least 1KiB"},
           {"receiver:\n  max_in_flight_bytes: 4MiB\n",
            "receiver.max_in_flight_bytes: must be at least twice receiver.max_request_bytes"},
           {"receiver:\n  max_request_bytes: 64MiB\n", "receiver.max_in_flight_bytes: must be at least twice"},
           {"receiver:\n  request_timeout: 10ms\n", "receiver.request_timeout: must be at least 100ms"},
       }) {
    auto bad = Parse(yaml);
    ASSERT_FALSE(bad.ok()) << yaml;
    EXPECT_NE(std::string(bad.status().message()).find(expect), std::string::npos)
        << bad.status() << " for " << yaml;
  }
}

TEST(Config, FileValuesAreRead) {
  auto c = Parse(R"(
log_level: debug
state_dir: /srv/kspan
admin: {listen: "127.0.0.1:0"}
capture:
  ring_buffer_bytes: 8MiB
  wakeup_bytes: 4KiB
  poll_interval: 50ms
batch:
  max_queue_size: 100
  max_export_batch_size: 10
  schedule_delay: 2s
destinations:
  - name: tempo
    type: otlp_grpc
    endpoint: https://tempo.example:4317
    compression: gzip
    timeout: 3s
    headers: {Authorization: "Bearer x"}
    retry: {initial_backoff: 100ms, max_backoff: 2s, max_elapsed: 0}
  - name: archive
    type: file
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->embedded_default);
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->capture.ring_buffer_bytes, 8u << 20);
  EXPECT_EQ(c->capture.wakeup_bytes, 4u << 10);
  EXPECT_EQ(c->capture.poll_interval, std::chrono::milliseconds(50));
  EXPECT_EQ(c->exporter.batch.max_queue_size, 100u);
  EXPECT_EQ(c->exporter.batch.schedule_delay, std::chrono::seconds(2));
  const auto* tempo = Find(*c, "tempo");
  ASSERT_NE(tempo, nullptr);
  EXPECT_EQ(tempo->otlp_grpc.endpoint, "https://tempo.example:4317");
  EXPECT_EQ(tempo->otlp_grpc.compression, "gzip");
  EXPECT_EQ(tempo->otlp_grpc.timeout, std::chrono::seconds(3));
  ASSERT_EQ(tempo->otlp_grpc.headers.size(), 1u);
  EXPECT_EQ(tempo->otlp_grpc.headers[0].first, "authorization");
  EXPECT_EQ(tempo->retry.max_elapsed, std::chrono::milliseconds(0));
  EXPECT_EQ(Find(*c, "archive")->file.path, "/srv/kspan/spans/archive.jsonl");
}

TEST(Config, PrecedenceIsFlagThenEnvThenFileThenDefault) {
  const std::string file = "state_dir: /from/file\nlog_level: warn\n";
  FakeEnv env;
  auto c = Parse(file, env);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->state_dir, "/from/file");

  env.vars["KSPAN_STATE_DIR"] = "/from/env";
  c = Parse(file, env);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->state_dir, "/from/env");
  EXPECT_EQ(c->log_level, "warn");

  FlagOverrides flags;
  flags.state_dir = "/from/flag";
  c = Parse(file, env, flags);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->state_dir, "/from/flag");
}

TEST(Config, OtlpEndpointFromEnvironmentReplacesTheEmbeddedDefault) {
  FakeEnv env;
  env.vars["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector:4317";
  auto c = Parse("", env);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->embedded_default);
  ASSERT_EQ(c->exporter.destinations.size(), 1u);
  EXPECT_EQ(c->exporter.destinations[0].name, "otlp");
  EXPECT_EQ(c->exporter.destinations[0].type, DestinationType::kOtlpGrpc);
  EXPECT_EQ(c->exporter.destinations[0].otlp_grpc.endpoint, "http://collector:4317");

  // The signal-specific variable wins, and the flag wins over both.
  env.vars["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "http://traces:4317";
  c = Parse("", env);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->exporter.destinations[0].otlp_grpc.endpoint, "http://traces:4317");
  FlagOverrides flags;
  flags.otlp_endpoint = "http://flag:4317";
  c = Parse("", env, flags);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->exporter.destinations[0].otlp_grpc.endpoint, "http://flag:4317");
}

TEST(Config, InvalidOtlpEnvironmentNamesTheVariable) {
  FakeEnv env;
  env.vars["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector:4317";
  env.vars["OTEL_EXPORTER_OTLP_TIMEOUT"] = "soon";
  auto c = Parse("", env);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string(c.status().message()).find("OTEL_EXPORTER_OTLP_TIMEOUT"),
            std::string::npos)
      << c.status();
}

TEST(Config, ConsoleFlagAddsOrRemovesTheConsole) {
  FlagOverrides flags;
  flags.console = false;
  auto c = Parse("", {}, flags);
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->exporter.destinations.size(), 1u);
  EXPECT_EQ(c->exporter.destinations[0].type, DestinationType::kFile);

  flags.console = true;
  c = Parse("destinations:\n  - {name: b, type: otlp_grpc, endpoint: 'localhost:4317'}\n", {}, flags);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(Find(*c, "console"), nullptr);
}


// Values that passed validation and then meant something else: a size that
// wrapped to 0 ("no bound"), a duration that turned negative in deadline
// arithmetic, header values that injected header lines. Refused, with the
// key and line, never quoting a header value (it may be a secret).
TEST(Config, OverflowingValuesAndInjectingHeadersAreRefused) {
  for (const auto& [yaml, expect] : std::vector<std::pair<std::string, std::string>>{
           {"destinations:\n  - type: otlp_grpc\n    queue: {max_bytes: 17179869184GiB}\n",
            "kspan.yaml:3: destinations[0].queue.max_bytes: is too large"},
           {"destinations:\n  - type: otlp_grpc\n    queue: {max_bytes: 18446744073709551615KiB}\n",
            "destinations[0].queue.max_bytes: is too large"},
           {"destinations:\n  - type: otlp_grpc\n    timeout: 9223372036854775807\n",
            "destinations[0].timeout: is too long"},
           {"destinations:\n  - type: otlp_grpc\n    timeout: 99999999999999999999\n",
            "destinations[0].timeout: is too long"},
           {"destinations:\n  - type: otlp_grpc\n    timeout: 2562047788015h\n",
            "destinations[0].timeout: is too long"},
           {"destinations:\n  - type: otlp_grpc\n    timeout: inf\n", "destinations[0].timeout: is too long"},
           {"destinations:\n  - type: otlp_grpc\n    retry: {max_elapsed: 8761h}\n",
            "destinations[0].retry.max_elapsed: is too long"},
           {"destinations:\n  - type: otlp_grpc\n    retry: {multiplier: nan}\n",
            "destinations[0].retry.multiplier: must be a finite number"},
           {"destinations:\n  - type: otlp_grpc\n    retry: {multiplier: inf}\n",
            "destinations[0].retry.multiplier: must be a finite number"},
           {"destinations:\n  - type: otlp_http\n    headers: {x-tenant: \"a\\r\\nX-Injected: 1\"}\n",
            "kspan.yaml:3: destinations[0].headers: a header value contains CR, LF"},
           {"destinations:\n  - type: otlp_http\n    headers: {\"x tenant\": a}\n",
            "destinations[0].headers: a header name is not an HTTP token"},
           {"destinations:\n  - type: otlp_grpc\n    headers: {x-tenant: \"caf\xC3\xA9\"}\n",
            "destinations 'destination0': headers: a header value has a byte outside printable ASCII"},
       }) {
    auto c = Parse(yaml);
    ASSERT_FALSE(c.ok()) << yaml;
    const std::string msg(c.status().message());
    EXPECT_NE(msg.find(expect), std::string::npos) << msg << " for " << yaml;
    EXPECT_EQ(msg.find("Injected"), std::string::npos) << msg;
  }
  // The largest values still accepted, and what HTTP allows but gRPC not.
  auto ok = Parse(
      "destinations:\n"
      "  - {name: a, type: otlp_http, timeout: 8760h, headers: {x-tenant: \"caf\xC3\xA9\\tx\"},\n"
      "     queue: {max_bytes: 17179869183GiB}}\n");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->exporter.destinations[0].otlp_grpc.timeout, std::chrono::hours(8760));
  EXPECT_EQ(ok->exporter.destinations[0].queue.max_bytes, 17179869183ull << 30);

  FakeEnv env;
  env.vars["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector:4317";
  env.vars["OTEL_EXPORTER_OTLP_HEADERS"] = "a=b%0D%0AX-Injected%3A%201";
  auto e = Parse("", env);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(std::string(e.status().message())
                .find("OTEL_EXPORTER_OTLP_HEADERS: header 1: a header value contains CR, LF"),
            std::string::npos)
      << e.status();
  EXPECT_EQ(std::string(e.status().message()).find("Injected"), std::string::npos);
  env.vars.erase("OTEL_EXPORTER_OTLP_HEADERS");
  env.vars["OTEL_EXPORTER_OTLP_TIMEOUT"] = "9223372036854775807";
  e = Parse("", env);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(std::string(e.status().message()).find("OTEL_EXPORTER_OTLP_TIMEOUT"), std::string::npos)
      << e.status();
  // A header fine for HTTP but not for gRPC metadata, from the environment:
  // refused for the gRPC destination it lands on, taken for HTTP.
  env.vars.erase("OTEL_EXPORTER_OTLP_TIMEOUT");
  env.vars["OTEL_EXPORTER_OTLP_HEADERS"] = "x-tenant=caf%C3%A9";
  e = Parse("", env);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(std::string(e.status().message()).find("destinations 'otlp': headers"), std::string::npos)
      << e.status();
  env.vars["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf";
  EXPECT_TRUE(Parse("", env).ok());
}


TEST(Config, BatchQueueBytes) {
  auto d = Parse("");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->exporter.batch.max_queue_bytes, 64u << 20);
  auto c = Parse("batch:\n  max_queue_bytes: 16MiB\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->exporter.batch.max_queue_bytes, 16u << 20);
  for (const auto& [yaml, expect] : std::vector<std::pair<std::string, std::string>>{
           {"batch:\n  max_queue_bytes: 17179869184GiB\n", "batch.max_queue_bytes: is too large"},
           {"batch:\n  max_queue_bytes: 1KiB\n", "batch.max_queue_bytes: must be at least 64KiB"},
       }) {
    auto bad = Parse(yaml);
    ASSERT_FALSE(bad.ok()) << yaml;
    EXPECT_NE(std::string(bad.status().message()).find(expect), std::string::npos)
        << bad.status() << " for " << yaml;
  }
}

TEST(Config, ReceiverSpanLimits) {
  auto d = Parse("");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->receiver.span_limits.span_attribute_count, 512u);
  EXPECT_EQ(d->receiver.span_limits.attribute_value_length, 1u << 20);
  EXPECT_EQ(d->receiver.span_limits.value_depth, 32u);

  auto c = Parse(
      "receiver:\n"
      "  limits:\n"
      "    attribute_count_limit: 64\n"
      "    attribute_value_length_limit: 4KiB\n"
      "    span_attribute_count_limit: 128\n"
      "    span_event_count_limit: 0\n"
      "    span_link_count_limit: 16\n"
      "    event_attribute_count_limit: 8\n"
      "    link_attribute_count_limit: 4\n"
      "    max_value_depth: 3\n");
  ASSERT_TRUE(c.ok()) << c.status();
  const SpanLimits& l = c->receiver.span_limits;
  EXPECT_EQ(l.attribute_count, 64u);
  EXPECT_EQ(l.attribute_value_length, 4096u);
  EXPECT_EQ(l.span_attribute_count, 128u);
  EXPECT_EQ(l.span_event_count, 0u);
  EXPECT_EQ(l.span_link_count, 16u);
  EXPECT_EQ(l.event_attribute_count, 8u);
  EXPECT_EQ(l.link_attribute_count, 4u);
  EXPECT_EQ(l.value_depth, 3u);

  for (const auto& [yaml, expect] : std::vector<std::pair<std::string, std::string>>{
           {"receiver:\n  limits: {span_attribute_count_limit: 1000001}\n",
            "receiver.limits.span_attribute_count_limit: must be at most 1000000"},
           {"receiver:\n  limits: {span_attribute_count_limit: -1}\n",
            "receiver.limits.span_attribute_count_limit: must be a whole number"},
           {"receiver:\n  limits: {attribute_value_length_limit: 0}\n",
            "receiver.limits.attribute_value_length_limit: must be 1 byte to 1GiB"},
           {"receiver:\n  limits: {max_value_depth: 65}\n", "receiver.limits.max_value_depth: must be at most 64"},
           {"receiver:\n  limits: {attribute_limit: 5}\n", "receiver.limits.attribute_limit: unknown key"},
       }) {
    auto bad = Parse(yaml);
    ASSERT_FALSE(bad.ok()) << yaml;
    EXPECT_NE(std::string(bad.status().message()).find(expect), std::string::npos)
        << bad.status() << " for " << yaml;
  }
}

}  // namespace
TEST(Config, ExportDestinationsHttpZipkinTlsAuthQueueBreakerDeadLetter) {
  auto c = Parse(R"(
state_dir: /tmp/st
destinations:
  - name: http
    type: otlp_http
    endpoint: https://collector:4318
    protocol: http/json
    compression: zstd
    max_in_flight: 4
    tls: {ca_file: /ca.pem, cert_file: /c.pem, key_file: /k.pem, server_name: otlp.test}
    auth: {bearer_token_file: /token}
    queue:
      max_batches: 10
      max_spans: 5000
      max_bytes: 64MiB
      disk: {max_bytes: 1GiB, fsync: full}
    circuit_breaker: {failure_threshold: 3, open_duration: 2s}
    dead_letter: {max_bytes: 8MiB}
  - name: zipkin
    type: zipkin
    endpoint: http://zipkin:9411
    auth: {basic_username: u, basic_password_env: ZIPKIN_PASSWORD}
    dead_letter: {enabled: false}
)");
  ASSERT_TRUE(c.ok()) << c.status();
  const auto* h = Find(*c, "http");
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->type, DestinationType::kOtlpHttp);
  EXPECT_EQ(h->otlp_grpc.protocol, "http/json");
  EXPECT_EQ(h->otlp_grpc.compression, "zstd");
  EXPECT_EQ(h->max_in_flight, 4u);
  EXPECT_EQ(h->otlp_grpc.certificate_file, "/ca.pem");
  EXPECT_EQ(h->otlp_grpc.tls.cert_file, "/c.pem");
  EXPECT_EQ(h->otlp_grpc.tls.server_name, "otlp.test");
  EXPECT_EQ(h->otlp_grpc.auth.bearer_token_file, "/token");
  EXPECT_EQ(h->max_queued_batches, 10u);
  EXPECT_EQ(h->queue.max_spans, 5000u);
  EXPECT_EQ(h->queue.max_bytes, 64u << 20);
  EXPECT_TRUE(h->queue.disk.enabled);
  EXPECT_EQ(h->queue.disk.path, "/tmp/st/queue/http.db");
  EXPECT_EQ(h->queue.disk.fsync, FsyncPolicy::kFull);
  EXPECT_EQ(h->circuit_breaker.failure_threshold, 3);
  EXPECT_EQ(h->circuit_breaker.open_duration, std::chrono::seconds(2));
  EXPECT_EQ(h->dead_letter.path, "/tmp/st/dlq/http.db");
  EXPECT_EQ(h->dead_letter.max_bytes, 8u << 20);
  const auto* z = Find(*c, "zipkin");
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(z->type, DestinationType::kZipkin);
  EXPECT_EQ(z->otlp_grpc.auth.basic_username, "u");
  EXPECT_TRUE(z->dead_letter.path.empty());
}

TEST(Config, ExportKeysRefuseUnknownAndBadValues) {
  auto c = Parse("destinations:\n  - {type: otlp_http, tls: {ca: x}}\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("tls.ca: unknown key"), std::string::npos) << c.status();
  c = Parse("destinations:\n  - {type: otlp_http, queue: {disk: {fsync: sometimes}}}\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("queue.disk.fsync"), std::string::npos);
  c = Parse("destinations:\n  - {type: otlp_grpc, endpoint: 'x:1', compression: zstd}\n");
  ASSERT_FALSE(c.ok());
  c = Parse("destinations:\n  - {type: otlp_http, protocol: grpc}\n");
  ASSERT_FALSE(c.ok());
  c = Parse("destinations:\n  - {type: otlp_http, auth: {bearer_token_env: T, basic_username: u}}\n");
  ASSERT_FALSE(c.ok());
  c = Parse("destinations:\n  - {type: otlp_http, tls: {cert_file: /c.pem}}\n");
  ASSERT_FALSE(c.ok());
}

TEST(Config, OtlpProtocolVariableSelectsHttp) {
  FakeEnv env{{{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"},
               {"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"}}};
  auto c = Parse("", env);
  ASSERT_TRUE(c.ok()) << c.status();
  const auto* d = Find(*c, "otlp");
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->type, DestinationType::kOtlpHttp);
  EXPECT_EQ(d->otlp_grpc.protocol, "http/json");
  EXPECT_FALSE(d->otlp_grpc.endpoint_is_full_url);
}

TEST(Config, ResourceAttributesFromFileAndTheOtelVariables) {
  auto d = Parse("");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->resource.attributes.empty());
  EXPECT_EQ(d->resource.host_service_name, "kernel");
  EXPECT_EQ(d->resource.host_root, "/");

  const std::string yaml =
      "resource:\n"
      "  attributes:\n"
      "    k8s.cluster.name: prod-eu\n"
      "    deployment.environment.name: staging\n"
      "  host_root: /host\n";
  auto f = Parse(yaml);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->resource.attributes.size(), 2u);
  EXPECT_EQ(f->resource.attributes[0].first, "k8s.cluster.name");
  EXPECT_EQ(f->resource.attributes[0].second, "prod-eu");
  EXPECT_EQ(f->resource.host_root, "/host");

  // OTEL_RESOURCE_ATTRIBUTES overrides the file key by key (percent-decoded,
  // as the SDKs read it); its service.name and OTEL_SERVICE_NAME name the host.
  FakeEnv env;
  env.vars["OTEL_RESOURCE_ATTRIBUTES"] = "deployment.environment.name=prod,team=a%2Cb,service.name=edge";
  auto e = Parse(yaml, env);
  ASSERT_TRUE(e.ok()) << e.status();
  std::map<std::string, std::string> attrs(e->resource.attributes.begin(), e->resource.attributes.end());
  EXPECT_EQ(attrs["k8s.cluster.name"], "prod-eu");
  EXPECT_EQ(attrs["deployment.environment.name"], "prod");
  EXPECT_EQ(attrs["team"], "a,b");
  EXPECT_FALSE(attrs.contains("service.name"));
  EXPECT_EQ(e->resource.host_service_name, "edge");
  env.vars["OTEL_SERVICE_NAME"] = "node-7";
  env.vars["KSPAN_HOST_ROOT"] = "/node";
  auto n = Parse(yaml, env);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->resource.host_service_name, "node-7");
  EXPECT_EQ(n->resource.host_root, "/node");
}

TEST(Config, BadResourceSettingsNameTheKeyOrVariable) {
  auto a = Parse("resource:\n  attributes: [a, b]\n");
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("resource.attributes"), std::string::npos) << a.status();
  auto r = Parse("resource:\n  host_root: relative/path\n");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("resource.host_root"), std::string::npos) << r.status();
  auto u = Parse("resource:\n  labels: {}\n");
  ASSERT_FALSE(u.ok());
  EXPECT_NE(u.status().message().find("resource.labels"), std::string::npos) << u.status();
  FakeEnv env;
  env.vars["OTEL_RESOURCE_ATTRIBUTES"] = "novalue";
  auto e = Parse("", env);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("OTEL_RESOURCE_ATTRIBUTES"), std::string::npos) << e.status();
  env.vars["OTEL_RESOURCE_ATTRIBUTES"] = "";
  env.vars["KSPAN_HOST_ROOT"] = "host";
  auto h = Parse("", env);
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("resource.host_root"), std::string::npos) << h.status();
}

}  // namespace kspan
