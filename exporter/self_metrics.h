// kspan's self-metrics: counters and gauges every stage registers, rendered
// in the Prometheus text exposition format by the agent's /metrics endpoint.
//
// Hand-written because Debian 12 packages no Prometheus client library for
// C++ (prometheus-cpp is not in bookworm); the subset needed here (counters,
// gauges, callback gauges, labels, text format 0.0.4) is small.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kspan {

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void Add(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t Value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

class Gauge {
 public:
  void Set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
  double Value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Thread-safe. References returned stay valid for the registry's lifetime, so
// hot paths look a metric up once and then only touch an atomic.
class MetricsRegistry {
 public:
  Counter& GetCounter(std::string_view name, std::string_view help, MetricLabels labels = {});
  Gauge& GetGauge(std::string_view name, std::string_view help, MetricLabels labels = {});
  // Evaluated at render time (queue depths, ring usage). The callback must be
  // safe to call from the /metrics thread until the registry is destroyed or
  // the gauge is removed with RemoveCallbacks(owner).
  void AddCallbackGauge(std::string_view name, std::string_view help, MetricLabels labels,
                        std::function<double()> callback, const void* owner = nullptr);
  // A counter whose value lives elsewhere (e.g. a BPF per-CPU stats map),
  // read at render time. The callback must return a monotonic value.
  void AddCallbackCounter(std::string_view name, std::string_view help, MetricLabels labels,
                          std::function<double()> callback, const void* owner = nullptr);
  void RemoveCallbacks(const void* owner);

  // Sum of a counter family over all label sets, callback counters evaluated
  // now (used by tests, `status` and the agent's totals line).
  std::uint64_t CounterTotal(std::string_view name) const;
  // One counter's value, 0 when it was never registered.
  std::uint64_t CounterValue(std::string_view name, const MetricLabels& labels) const;
  // One gauge's value (callback gauges evaluated now), 0 when absent.
  double GaugeValue(std::string_view name, const MetricLabels& labels) const;

  std::string RenderPrometheus() const;

 private:
  struct Series {
    MetricLabels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::function<double()> callback;
    const void* owner = nullptr;
  };
  struct Family {
    std::string help;
    std::string type;  // "counter" | "gauge"
    std::vector<Series> series;
  };
  Series& FindOrAdd(std::string_view name, std::string_view help, std::string_view type,
                    MetricLabels labels);

  mutable std::mutex mu_;
  std::map<std::string, Family, std::less<>> families_;
};

}  // namespace kspan
