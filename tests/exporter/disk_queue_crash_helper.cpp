// A small program that embeds the real ExportPipeline with a disk queue, for
// the kill -9 test (disk_queue_test.cpp):
//
//   produce ENDPOINT DIR   submit spans 0,1,2,... steadily and print
//                          "persisted N" whenever N spans (a prefix, in
//                          order) are committed to the disk queue
//   drain ENDPOINT DIR     export what the disk queue holds, then print
//                          "recovered R resent B exported E" and exit
//
// Span i carries span.index = i and ids derived from i.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "exporter/export_metrics.h"
#include "exporter/export_pipeline.h"
#include "tests/exporter/test_spans.h"

using namespace kspan;

namespace {

Span MakeIndexedSpan(std::int64_t i, const std::shared_ptr<const Resource>& resource) {
  Span s = testing::MakeSpan(static_cast<int>(i % 200), resource);
  for (int b = 0; b < 8; ++b) {
    s.trace_id[static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(i >> (8 * b));
    s.span_id[static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(i >> (8 * b));
  }
  s.trace_id[15] = 1;
  s.span_id[7] |= 0x80;
  for (auto& a : s.attributes) {
    if (a.key == "span.index") a.value = std::int64_t{i};
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s produce|drain ENDPOINT DIR\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[1];
  ExportConfig config;
  config.batch.max_export_batch_size = 256;
  config.batch.schedule_delay = std::chrono::milliseconds(20);
  config.batch.max_queue_size = 1 << 20;
  DestinationConfig d;
  d.name = "otlp";
  d.type = DestinationType::kOtlpGrpc;
  d.otlp_grpc.endpoint = argv[2];
  d.otlp_grpc.timeout = std::chrono::milliseconds(2000);
  d.retry.initial_backoff = std::chrono::milliseconds(20);
  d.retry.max_backoff = std::chrono::milliseconds(200);
  d.retry.max_elapsed = std::chrono::milliseconds(0);
  d.max_queued_batches = 1 << 16;
  d.queue.max_bytes = 256u << 20;
  d.queue.disk = {.enabled = true, .path = std::string(argv[3]) + "/queue.db",
                  .max_bytes = 1u << 30, .fsync = FsyncPolicy::kNormal};
  d.max_in_flight = 2;
  config.destinations.push_back(d);

  MetricsRegistry metrics;
  auto pipeline = ExportPipeline::Create(config, metrics);
  if (!pipeline.ok()) {
    std::fprintf(stderr, "%s\n", std::string(pipeline.status().message()).c_str());
    return 1;
  }
  const MetricLabels dest = {{"destination", "otlp"}};
  if (mode == "produce") {
    auto resource = testing::MakeResource("crash-helper", 42);
    std::uint64_t last = 0;
    for (std::int64_t i = 0;; ++i) {
      if (!(*pipeline)->Submit(MakeIndexedSpan(i, resource))) {
        std::printf("dropped %lld\n", static_cast<long long>(i));
      }
      if (i % 100 == 99) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        const auto persisted = metrics.CounterValue(metric::kDiskPersistedSpans, dest);
        if (persisted != last) {
          last = persisted;
          std::printf("persisted %llu\n", static_cast<unsigned long long>(persisted));
          std::fflush(stdout);
        }
      }
    }
  }
  const auto recovered = metrics.CounterValue(metric::kDiskRecoveredSpans, dest);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (metrics.CounterValue(metric::kSpansExported, dest) < recovered &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  (*pipeline)->Shutdown(std::chrono::milliseconds(5000));
  std::printf("recovered %llu resent %llu exported %llu\n",
              static_cast<unsigned long long>(recovered),
              static_cast<unsigned long long>(metrics.CounterValue(metric::kDiskResentBatches, dest)),
              static_cast<unsigned long long>(metrics.CounterValue(metric::kSpansExported, dest)));
  return 0;
}
