// OTLP receiver throughput: spans accepted per CPU-second, over OTLP/gRPC and
// OTLP/HTTP (protobuf, and gzip), requests of 512 typical app spans from a
// client in the same process (client and server share the machine's cores,
// and the CPU time measured is the whole process's: both sides). The sink
// only counts, so this is the receiver's own cost: transport, parsing,
// decoding into kspan's span model. Results: docs/benchmarks.md.
//
//   kspan_receiver_benchmark --benchmark_min_time=2
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "exporter/compression.h"
#include "exporter/otlp_decode.h"
#include "exporter/otlp_json.h"
#include "exporter/otlp_transform.h"
#include "grpcpp/grpcpp.h"
#include "httplib.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.grpc.pb.h"
#include "userspace/otlp_receiver.h"

namespace kspan {
namespace {

using opentelemetry::proto::collector::trace::v1::TraceService;

constexpr int kSpansPerRequest = 512;

// A typical instrumented HTTP server span: ten attributes, one event.
otlp::ExportTraceServiceRequest TypicalRequest() {
  const auto resource = std::make_shared<const Resource>(
      Resource{{{"service.name", std::string("checkout")},
                {"service.version", std::string("1.4.2")},
                {"host.name", std::string("web-17")},
                {"process.pid", std::int64_t{4242}},
                {"telemetry.sdk.language", std::string("go")}}});
  const auto scope = std::make_shared<const InstrumentationScope>(
      InstrumentationScope{"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp", "0.46.1"});
  std::vector<Span> spans;
  for (int i = 0; i < kSpansPerRequest; ++i) {
    Span s;
    s.trace_id.fill(0x5b);
    s.trace_id[15] = static_cast<std::uint8_t>(i);
    s.span_id.fill(0xe1);
    s.span_id[7] = static_cast<std::uint8_t>(i);
    s.span_id[6] = static_cast<std::uint8_t>(i >> 8);
    s.parent_span_id.fill(0x33);
    s.name = "GET /api/cart/{id}";
    s.kind = SpanKind::kServer;
    s.flags = 0x301;
    s.start_unix_nano = 1'700'000'000'000'000'000ULL + static_cast<std::uint64_t>(i) * 1000;
    s.end_unix_nano = s.start_unix_nano + 2'500'000;
    s.attributes = {{"http.request.method", std::string("GET")},
                    {"url.path", std::string("/api/cart/") + std::to_string(i)},
                    {"url.scheme", std::string("http")},
                    {"http.route", std::string("/api/cart/{id}")},
                    {"http.response.status_code", std::int64_t{200}},
                    {"server.address", std::string("checkout.internal")},
                    {"server.port", std::int64_t{8080}},
                    {"client.address", std::string("10.1.2.3")},
                    {"user_agent.original", std::string("Mozilla/5.0 (X11; Linux x86_64)")},
                    {"network.protocol.version", std::string("1.1")}};
    s.events = {{"cache.miss", s.start_unix_nano + 1000, {{"cache.key", std::string("cart:") + std::to_string(i)}}}};
    s.source = SpanSource::kApp;
    s.resource = resource;
    s.scope = scope;
    spans.push_back(std::move(s));
  }
  return ToExportRequest(spans);
}

struct Fixture {
  Fixture() {
    OtlpReceiverOptions options;
    options.grpc_address = "127.0.0.1:0";
    options.http_address = "127.0.0.1:0";
    options.http_threads = 2;
    auto r = OtlpReceiver::Start(
        options,
        [this](std::vector<Span>&& spans, const ReceiverPeer&) {
          accepted.fetch_add(spans.size(), std::memory_order_relaxed);
          return SinkResult{};
        },
        metrics);
    if (!r.ok()) std::abort();
    receiver = *std::move(r);
    request = TypicalRequest();
    body = request.SerializeAsString();
    gzip_body = *GzipCompress(body);
    json_body = ToOtlpJson(request);
  }
  MetricsRegistry metrics;
  std::atomic<std::size_t> accepted{0};
  std::unique_ptr<OtlpReceiver> receiver;
  otlp::ExportTraceServiceRequest request;
  std::string body;
  std::string gzip_body;
  std::string json_body;
};

Fixture& Shared() {
  static Fixture* f = new Fixture();  // lives until exit: servers keep running
  return *f;
}

// CPU seconds used by the whole process (client and receiver threads).
double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

void Report(benchmark::State& state, std::size_t accepted_before, double cpu_before, const std::string& body) {
  const double cpu = ProcessCpuSeconds() - cpu_before;
  const auto accepted = Shared().accepted.load() - accepted_before;
  // Spans per CPU-second of client and receiver together: what one core
  // accepts, counting the client's cost against kspan.
  state.counters["spans_per_cpu_s"] = cpu > 0 ? static_cast<double>(accepted) / cpu : 0;
  if (accepted != static_cast<std::size_t>(state.iterations()) * kSpansPerRequest) {
    state.SkipWithError("not every span was accepted");
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(accepted));
  state.counters["request_bytes"] = static_cast<double>(body.size());
}

void BM_ReceiverGrpc(benchmark::State& state) {
  auto& f = Shared();
  const bool gzip = state.range(0) != 0;
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(f.receiver->grpc_port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = TraceService::NewStub(channel);
  const auto before = f.accepted.load();
  const double cpu_before = ProcessCpuSeconds();
  for (auto _ : state) {
    grpc::ClientContext context;
    if (gzip) context.set_compression_algorithm(GRPC_COMPRESS_GZIP);
    otlp::ExportTraceServiceResponse response;
    if (!stub->Export(&context, f.request, &response).ok()) state.SkipWithError("export failed");
  }
  Report(state, before, cpu_before, gzip ? f.gzip_body : f.body);
}
BENCHMARK(BM_ReceiverGrpc)->Arg(0)->Arg(1)->ArgName("gzip")->MeasureProcessCPUTime()->UseRealTime();

void BM_ReceiverHttp(benchmark::State& state) {
  auto& f = Shared();
  const bool gzip = state.range(0) != 0;
  httplib::Client client("127.0.0.1", f.receiver->http_port());
  client.set_keep_alive(true);
  client.set_tcp_nodelay(true);  // as OTLP SDKs' HTTP clients do
  const httplib::Headers headers =
      gzip ? httplib::Headers{{"Content-Encoding", "gzip"}} : httplib::Headers{};
  const std::string& body = gzip ? f.gzip_body : f.body;
  const auto before = f.accepted.load();
  const double cpu_before = ProcessCpuSeconds();
  for (auto _ : state) {
    auto res = client.Post("/v1/traces", headers, body, "application/x-protobuf");
    if (!res || res->status != 200) state.SkipWithError("export failed");
  }
  Report(state, before, cpu_before, body);
}
BENCHMARK(BM_ReceiverHttp)->Arg(0)->Arg(1)->ArgName("gzip")->MeasureProcessCPUTime()->UseRealTime();

// OTLP/JSON over HTTP (hex ids, lowerCamelCase).
void BM_ReceiverHttpJson(benchmark::State& state) {
  auto& f = Shared();
  httplib::Client client("127.0.0.1", f.receiver->http_port());
  client.set_keep_alive(true);
  client.set_tcp_nodelay(true);
  const auto before = f.accepted.load();
  const double cpu_before = ProcessCpuSeconds();
  for (auto _ : state) {
    auto res = client.Post("/v1/traces", f.json_body, "application/json");
    if (!res || res->status != 200) state.SkipWithError("export failed");
  }
  Report(state, before, cpu_before, f.json_body);
}
BENCHMARK(BM_ReceiverHttpJson)->MeasureProcessCPUTime()->UseRealTime();

// The decoding alone (parse + span model), no transport.
void BM_DecodeOnly(benchmark::State& state) {
  const std::string body = TypicalRequest().SerializeAsString();
  for (auto _ : state) {
    auto decoded = DecodeExportRequest(body, OtlpEncoding::kProtobuf);
    benchmark::DoNotOptimize(decoded);
  }
  state.SetItemsProcessed(state.iterations() * kSpansPerRequest);
}
BENCHMARK(BM_DecodeOnly);

}  // namespace
}  // namespace kspan

BENCHMARK_MAIN();
