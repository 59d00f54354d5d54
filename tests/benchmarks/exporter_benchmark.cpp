// Export path load program (results in docs/benchmarks.md):
//
//   kspan_exporter_benchmark throughput [none|gzip] [SPANS] [IN_FLIGHT]
//       spans/s through Submit -> batcher -> OTLP/gRPC to a loopback
//       receiver in a separate process, per second of this process's CPU
//       time (getrusage: every exporter thread counted, the receiver not).
//   kspan_exporter_benchmark outage [SECONDS]
//       backend down, 64 MiB memory queue bound: peak RSS stays bounded.
//   kspan_exporter_benchmark disk [SPANS]
//       disk queue: spans/s persisted while the backend is down, then
//       spans/s replayed once it is up.
//   kspan_exporter_benchmark json [SPANS] [BATCH]
//       OTLP/JSON encoding on this thread, spans per CPU-second: the
//       reference path ToOtlpJson(ToExportRequest()) (protobuf messages,
//       then an nlohmann DOM) against OtlpJsonEncoder, encoding alone and
//       through the file store (each line appended to a file in a temporary
//       directory, as FileStoreSender does).
//
// Spans are built before the clock starts: what is measured is the
// exporter, not span construction.
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "exporter/export_metrics.h"
#include "exporter/export_pipeline.h"
#include "exporter/file_store_sender.h"
#include "exporter/otlp_json.h"
#include "exporter/otlp_json_writer.h"
#include "exporter/otlp_transform.h"
#include "grpcpp/grpcpp.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.grpc.pb.h"

using namespace kspan;
using Clock = std::chrono::steady_clock;

namespace {

namespace tsvc = opentelemetry::proto::collector::trace::v1;

// The receiver: counts spans, answers OK. Runs in a child process.
class CountingService final : public tsvc::TraceService::Service {
 public:
  grpc::Status Export(grpc::ServerContext*, const tsvc::ExportTraceServiceRequest*,
                      tsvc::ExportTraceServiceResponse*) override {
    return grpc::Status::OK;
  }
};

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// Forks a receiver; returns its pid and port. Must run before this process
// creates any gRPC object (fork and gRPC threads do not mix). With
// `start_fd` >= 0 the receiver only listens once a byte arrives on it: the
// backend is "down" until then.
std::pair<pid_t, int> StartReceiver(int port_hint = 0, int start_fd = -1) {
  int fds[2];
  if (pipe(fds) != 0) std::abort();
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    if (start_fd >= 0) {
      char c;
      (void)!write(fds[1], &port_hint, sizeof(port_hint));
      if (read(start_fd, &c, 1) != 1) _exit(1);
    }
    CountingService service;
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:" + std::to_string(port_hint), grpc::InsecureServerCredentials(), &port);
    b.RegisterService(&service);
    b.SetMaxReceiveMessageSize(64 << 20);
    auto server = b.BuildAndStart();
    if (start_fd < 0) (void)!write(fds[1], &port, sizeof(port));
    server->Wait();
    _exit(0);
  }
  close(fds[1]);
  int port = 0;
  if (read(fds[0], &port, sizeof(port)) != sizeof(port)) std::abort();
  close(fds[0]);
  return {pid, port};
}

std::vector<Span> MakeSpans(std::size_t n) {
  // Shaped like a TCP connect span from the assembler: ten attributes.
  auto resource = std::make_shared<const Resource>(Resource{
      {{"service.name", std::string("curl")}, {"process.pid", std::int64_t{1234}},
       {"host.name", std::string("bench-host")}}});
  std::vector<Span> spans(n);
  for (std::size_t i = 0; i < n; ++i) {
    Span& s = spans[i];
    for (int b = 0; b < 8; ++b) {
      s.trace_id[static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(i >> (8 * b));
      s.span_id[static_cast<std::size_t>(b)] = static_cast<std::uint8_t>((i >> (8 * b)) ^ 0x5a);
    }
    s.trace_id[15] = 1;
    s.name = "connect";
    s.kind = SpanKind::kClient;
    s.start_unix_nano = 1'700'000'000'000'000'000ull + i * 1000;
    s.end_unix_nano = s.start_unix_nano + 231'000;
    s.attributes = {{"network.peer.address", std::string("10.0.0.7")},
                    {"network.peer.port", std::int64_t{8080}},
                    {"network.local.address", std::string("10.0.0.3")},
                    {"network.local.port", std::int64_t{40000 + static_cast<std::int64_t>(i % 20000)}},
                    {"network.transport", std::string("tcp")},
                    {"network.type", std::string("ipv4")},
                    {"process.pid", std::int64_t{1234}},
                    {"thread.id", std::int64_t{1235}},
                    {"process.executable.name", std::string("curl")},
                    {"kspan.tcp.connect.result", std::string("established")}};
    s.status_code = StatusCode::kUnset;
    s.resource = resource;
    s.scope = KernelScope();
  }
  return spans;
}

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

long PeakRssKiB() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

DestinationConfig Grpc(int port, const std::string& compression, std::size_t in_flight) {
  DestinationConfig d;
  d.name = "otlp";
  d.type = DestinationType::kOtlpGrpc;
  d.otlp_grpc.endpoint = "http://127.0.0.1:" + std::to_string(port);
  d.otlp_grpc.compression = compression;
  d.max_queued_batches = 1 << 20;
  d.queue.max_bytes = 0;
  d.max_in_flight = in_flight;
  d.retry.initial_backoff = std::chrono::milliseconds(50);
  d.retry.max_backoff = std::chrono::milliseconds(200);
  d.retry.max_elapsed = std::chrono::milliseconds(0);
  return d;
}

std::uint64_t Exported(const MetricsRegistry& m) {
  return m.CounterValue(metric::kSpansExported, {{"destination", "otlp"}});
}

int Throughput(const std::string& compression, std::size_t n, std::size_t in_flight) {
  auto [pid, port] = StartReceiver();
  auto spans = MakeSpans(n);
  ExportConfig config;
  config.batch.max_export_batch_size = 2048;
  config.batch.schedule_delay = std::chrono::milliseconds(50);
  config.batch.max_queue_size = n;
  config.destinations.push_back(Grpc(port, compression, in_flight));
  MetricsRegistry metrics;
  auto pipeline = ExportPipeline::Create(config, metrics);
  if (!pipeline.ok()) return 1;
  const double cpu0 = CpuSeconds();
  const auto t0 = Clock::now();
  for (auto& s : spans) (*pipeline)->Submit(std::move(s));
  while (Exported(metrics) < n) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const double cpu = CpuSeconds() - cpu0;
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  (*pipeline)->Shutdown(std::chrono::milliseconds(1000));
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  std::printf("throughput compression=%s spans=%zu in_flight=%zu: cpu %.3f s, wall %.3f s, "
              "%.0f spans per CPU-second, %.0f spans/s wall, dropped %llu\n",
              compression.c_str(), n, in_flight, cpu, wall, static_cast<double>(n) / cpu,
              static_cast<double>(n) / wall,
              static_cast<unsigned long long>(metrics.CounterTotal(metric::kSpansDropped) +
                                              metrics.CounterTotal(metric::kBatcherDropped)));
  return 0;
}

int Outage(int seconds) {
  ExportConfig config;
  config.batch.max_queue_size = 65536;
  DestinationConfig d = Grpc(1, "none", 1);  // nothing listens on port 1
  d.max_queued_batches = 1 << 20;
  d.queue.max_bytes = 64u << 20;
  config.destinations.push_back(d);
  MetricsRegistry metrics;
  auto pipeline = ExportPipeline::Create(config, metrics);
  if (!pipeline.ok()) return 1;
  auto spans = MakeSpans(100000);
  const long rss0 = PeakRssKiB();
  std::uint64_t submitted = 0;
  const auto until = Clock::now() + std::chrono::seconds(seconds);
  while (Clock::now() < until) {
    for (const auto& s : spans) {
      (*pipeline)->Submit(s);
      ++submitted;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const long rss1 = PeakRssKiB();
  std::printf("outage %ds: submitted %llu spans, dropped %llu (destination) + %llu (batcher), "
              "peak RSS %.1f MiB (%.1f MiB with the 100k template spans, before the outage)\n",
              seconds, static_cast<unsigned long long>(submitted),
              static_cast<unsigned long long>(metrics.CounterTotal(metric::kSpansDropped)),
              static_cast<unsigned long long>(metrics.CounterTotal(metric::kBatcherDropped)),
              static_cast<double>(rss1) / 1024, static_cast<double>(rss0) / 1024);
  (*pipeline)->Shutdown(std::chrono::milliseconds(0));
  return 0;
}

int Disk(std::size_t n) {
  const auto dir = std::filesystem::temp_directory_path() / "kspan-bench-disk";
  std::filesystem::remove_all(dir);
  // The receiver is forked now (before any gRPC object) and comes up later.
  int start[2];
  if (pipe(start) != 0) return 1;
  auto [pid, port] = StartReceiver(FreePort(), start[0]);
  auto spans = MakeSpans(n);
  ExportConfig config;
  config.batch.max_export_batch_size = 2048;
  config.batch.max_queue_size = n;
  DestinationConfig d = Grpc(port, "none", 2);
  // Unbounded staging: measure the disk, not the memory bound's drops.
  d.queue.max_bytes = 0;
  d.queue.disk = {.enabled = true, .path = (dir / "q.db").string(), .max_bytes = 8ull << 30,
                  .fsync = FsyncPolicy::kNormal};
  config.destinations.push_back(d);
  MetricsRegistry metrics;
  auto pipeline = ExportPipeline::Create(config, metrics);
  if (!pipeline.ok()) return 1;
  const MetricLabels dest = {{"destination", "otlp"}};
  const auto t0 = Clock::now();
  for (auto& s : spans) (*pipeline)->Submit(std::move(s));
  while (metrics.CounterValue(metric::kDiskPersistedSpans, dest) +
             metrics.CounterTotal(metric::kSpansDropped) <
         n) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (Clock::now() - t0 > std::chrono::seconds(60)) {
      std::fprintf(stderr, "persisted %llu dropped %llu exported %llu\n",
                   static_cast<unsigned long long>(metrics.CounterValue(metric::kDiskPersistedSpans, dest)),
                   static_cast<unsigned long long>(metrics.CounterTotal(metric::kSpansDropped)),
                   static_cast<unsigned long long>(Exported(metrics)));
      return 1;
    }
  }
  const double persist_s = std::chrono::duration<double>(Clock::now() - t0).count();
  (void)!write(start[1], "x", 1);  // the backend comes up
  const auto t1 = Clock::now();
  while (Exported(metrics) < n) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const double replay_s = std::chrono::duration<double>(Clock::now() - t1).count();
  std::printf("disk queue (fsync normal): %zu spans persisted in %.2f s (%.0f spans/s), "
              "replayed in %.2f s (%.0f spans/s, includes the circuit breaker's first probe "
              "delay), file %.1f MiB\n",
              n, persist_s, static_cast<double>(n) / persist_s, replay_s,
              static_cast<double>(n) / replay_s,
              static_cast<double>(std::filesystem::file_size(dir / "q.db")) / (1 << 20));
  (*pipeline)->Shutdown(std::chrono::milliseconds(1000));
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return 0;
}

// Runs `encode_batch` over every batch of `spans`, `rounds` times; prints
// and returns spans per CPU-second.
template <typename F>
double JsonRun(const char* what, const std::vector<SpanBatch>& batches, std::size_t spans, int rounds,
               F&& encode_batch) {
  std::size_t bytes = 0;
  const double cpu0 = CpuSeconds();
  for (int r = 0; r < rounds; ++r) {
    for (const auto& b : batches) bytes += encode_batch(b);
  }
  const double cpu = CpuSeconds() - cpu0;
  const double total = static_cast<double>(spans) * rounds;
  std::printf("json %-32s %zu spans: cpu %.3f s, %.0f spans per CPU-second", what,
              static_cast<std::size_t>(total), cpu, total / cpu);
  if (bytes > 0) std::printf(", %.0f bytes/span", static_cast<double>(bytes) / total);
  std::printf("\n");
  return total / cpu;
}

int Json(std::size_t n, std::size_t batch_size) {
  std::vector<SpanBatch> batches;
  {
    auto spans = MakeSpans(n);
    for (std::size_t i = 0; i < n; i += batch_size) {
      SpanBatch b;
      const std::size_t end = std::min(n, i + batch_size);
      b.spans.assign(std::make_move_iterator(spans.begin() + static_cast<std::ptrdiff_t>(i)),
                     std::make_move_iterator(spans.begin() + static_cast<std::ptrdiff_t>(end)));
      batches.push_back(std::move(b));
    }
  }
  // Same text both ways (checked once, outside the clock).
  if (ToOtlpJson(ToExportRequest(batches[0].spans)) != EncodeOtlpJson(batches[0].spans)) {
    std::fprintf(stderr, "json: the encoders disagree\n");
    return 1;
  }
  const auto dir = std::filesystem::temp_directory_path() / ("kspan-json-bench-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  constexpr std::size_t kRotateBytes = 64u << 20;  // bounds the disk used

  const double dom = JsonRun("encode reference (proto+DOM)", batches, n, 1, [](const SpanBatch& b) {
    return ToOtlpJson(ToExportRequest(b.spans)).size();
  });
  OtlpJsonEncoder encoder;
  std::string out;
  const double direct = JsonRun("encode OtlpJsonEncoder", batches, n, 3, [&](const SpanBatch& b) {
    encoder.Encode(b.spans, out);
    return out.size();
  });

  // The file store before OtlpJsonEncoder: the reference text, appended.
  const std::string ref_path = (dir / "reference.jsonl").string();
  int fd = ::open(ref_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  std::size_t size = 0;
  const double dom_file = JsonRun("file store reference", batches, n, 1, [&](const SpanBatch& b) {
    std::string line = ToOtlpJson(ToExportRequest(b.spans));
    line += '\n';
    if (size + line.size() > kRotateBytes) {
      (void)!::ftruncate(fd, 0);
      size = 0;
    }
    if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) std::abort();
    size += line.size();
    return line.size();
  });
  ::close(fd);
  std::filesystem::remove(ref_path);

  FileStoreOptions options;
  options.path = (dir / "spans.jsonl").string();
  options.max_bytes = kRotateBytes;
  auto sender = FileStoreSender::Create(options);
  if (!sender.ok()) return 1;
  const double direct_file = JsonRun("file store FileStoreSender", batches, n, 3, [&](const SpanBatch& b) {
    if ((*sender)->Send(b, Clock::now()).outcome != ExportResult::Outcome::kSuccess) std::abort();
    return std::size_t{0};
  });
  sender->reset();
  std::filesystem::remove_all(dir);
  std::printf("json batch=%zu: encoding %.1fx, file store %.1fx the reference's spans per CPU-second\n",
              batch_size, direct / dom, direct_file / dom_file);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "throughput";
  if (mode == "throughput") {
    const std::string c = argc > 2 ? argv[2] : "none";
    const std::size_t n = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 2'000'000;
    const std::size_t in_flight = argc > 4 ? std::strtoull(argv[4], nullptr, 10) : 2;
    return Throughput(c, n, in_flight);
  }
  if (mode == "outage") return Outage(argc > 2 ? std::atoi(argv[2]) : 20);
  if (mode == "disk") return Disk(argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1'000'000);
  if (mode == "json") {
    return Json(argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 200'000,
                argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 512);
  }
  std::fprintf(stderr, "usage: %s throughput|outage|disk|json ...\n", argv[0]);
  return 2;
}
