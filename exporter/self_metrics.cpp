#include "exporter/self_metrics.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace kspan {
namespace {

// Label values escape backslash, double quote and newline (text format 0.0.4).
void AppendEscaped(std::string& out, std::string_view v) {
  for (char c : v) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
}

void AppendLabels(std::string& out, const MetricLabels& labels) {
  if (labels.empty()) return;
  out += '{';
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out += ',';
    first = false;
    out += k;
    out += "=\"";
    AppendEscaped(out, v);
    out += '"';
  }
  out += '}';
}

void AppendValue(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else if (v == std::floor(v) && std::fabs(v) < 1e15) {
    out += std::to_string(static_cast<long long>(v));
  } else {
    std::ostringstream s;
    s.precision(17);
    s << v;
    out += s.str();
  }
}

MetricLabels Sorted(MetricLabels labels) {
  std::sort(labels.begin(), labels.end());
  return labels;
}

}  // namespace

MetricsRegistry::Series& MetricsRegistry::FindOrAdd(std::string_view name, std::string_view help,
                                                    std::string_view type, MetricLabels labels) {
  labels = Sorted(std::move(labels));
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(std::string(name), Family{std::string(help), std::string(type), {}})
             .first;
  }
  for (auto& s : it->second.series) {
    if (s.labels == labels) return s;
  }
  it->second.series.push_back(Series{std::move(labels), nullptr, nullptr, nullptr, nullptr});
  return it->second.series.back();
}

Counter& MetricsRegistry::GetCounter(std::string_view name, std::string_view help,
                                     MetricLabels labels) {
  std::lock_guard lock(mu_);
  auto& s = FindOrAdd(name, help, "counter", std::move(labels));
  if (!s.counter) s.counter = std::make_unique<Counter>();
  return *s.counter;
}

Gauge& MetricsRegistry::GetGauge(std::string_view name, std::string_view help,
                                 MetricLabels labels) {
  std::lock_guard lock(mu_);
  auto& s = FindOrAdd(name, help, "gauge", std::move(labels));
  if (!s.gauge) s.gauge = std::make_unique<Gauge>();
  return *s.gauge;
}

void MetricsRegistry::AddCallbackGauge(std::string_view name, std::string_view help,
                                       MetricLabels labels, std::function<double()> callback,
                                       const void* owner) {
  std::lock_guard lock(mu_);
  auto& s = FindOrAdd(name, help, "gauge", std::move(labels));
  s.callback = std::move(callback);
  s.owner = owner;
}

void MetricsRegistry::AddCallbackCounter(std::string_view name, std::string_view help,
                                         MetricLabels labels, std::function<double()> callback,
                                         const void* owner) {
  std::lock_guard lock(mu_);
  auto& s = FindOrAdd(name, help, "counter", std::move(labels));
  s.callback = std::move(callback);
  s.owner = owner;
}

void MetricsRegistry::RemoveCallbacks(const void* owner) {
  std::lock_guard lock(mu_);
  for (auto& [name, family] : families_) {
    auto& series = family.series;
    series.erase(std::remove_if(series.begin(), series.end(),
                                [owner](const Series& s) {
                                  return s.callback && s.owner == owner;
                                }),
                 series.end());
  }
}

std::uint64_t MetricsRegistry::CounterTotal(std::string_view name) const {
  std::lock_guard lock(mu_);
  auto it = families_.find(name);
  if (it == families_.end()) return 0;
  std::uint64_t total = 0;
  for (const auto& s : it->second.series) {
    if (s.counter) {
      total += s.counter->Value();
    } else if (s.callback && it->second.type == "counter") {
      total += static_cast<std::uint64_t>(s.callback());
    }
  }
  return total;
}

std::uint64_t MetricsRegistry::CounterValue(std::string_view name,
                                            const MetricLabels& labels) const {
  const auto sorted = Sorted(labels);
  std::lock_guard lock(mu_);
  auto it = families_.find(name);
  if (it == families_.end()) return 0;
  for (const auto& s : it->second.series) {
    if (s.counter && s.labels == sorted) return s.counter->Value();
  }
  return 0;
}

double MetricsRegistry::GaugeValue(std::string_view name, const MetricLabels& labels) const {
  const auto sorted = Sorted(labels);
  std::lock_guard lock(mu_);
  auto it = families_.find(name);
  if (it == families_.end() || it->second.type != "gauge") return 0;
  for (const auto& s : it->second.series) {
    if (s.labels != sorted) continue;
    if (s.gauge) return s.gauge->Value();
    if (s.callback) return s.callback();
  }
  return 0;
}

std::string MetricsRegistry::RenderPrometheus() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, family] : families_) {
    if (family.series.empty()) continue;
    out += "# HELP " + name + " " + family.help + "\n";
    out += "# TYPE " + name + " " + family.type + "\n";
    for (const auto& s : family.series) {
      out += name;
      AppendLabels(out, s.labels);
      out += ' ';
      if (s.counter) {
        out += std::to_string(s.counter->Value());
      } else if (s.gauge) {
        AppendValue(out, s.gauge->Value());
      } else if (s.callback) {
        AppendValue(out, s.callback());
      } else {
        out += '0';
      }
      out += '\n';
    }
  }
  return out;
}

}  // namespace kspan
