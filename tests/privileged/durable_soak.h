// At-least-once from acceptance, tested the way it fails in production: the
// real kspan binary with a disk queue and its backend down, apps sending
// spans over OTLP/gRPC and OTLP/HTTP (kspan's own OTLP clients, real
// sockets), the agent killed with SIGKILL at random points and restarted on
// the same state directory; then the backend (a real gRPC collector that
// records what it receives) comes up and every span the agent answered with
// success must arrive. Shared by the CI test (durable_acceptance_e2e_test)
// and the benchmark program (tests/benchmarks/durable_soak.cpp).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "exporter/otlp_grpc_sender.h"
#include "exporter/otlp_http_sender.h"
#include "exporter/span.h"
#include "tests/privileged/agent_process.h"
#include "tests/support/otlp_test_server.h"

namespace kspan::testing {

struct SoakOptions {
  int iterations = 20;           // kill -9 + restart cycles while spans flow
  std::chrono::milliseconds min_run{100};  // agent lifetime after ready, random in [min, max]
  std::chrono::milliseconds max_run{800};
  int senders = 4;               // threads; even ones gRPC, odd ones HTTP
  int spans_per_request = 20;
  // Outage mode (iterations = 0): send for this long at `rate` spans/s with
  // one agent, sample its RSS, then bring the backend up.
  std::chrono::seconds outage{0};
  int rate = 0;                  // spans/s across all senders (0 = as fast as answered)
  std::chrono::seconds drain_timeout{120};
  std::uint64_t disk_max_bytes = 1ull << 30;
  std::uint32_t seed = 0;        // 0: random
};

struct SoakResult {
  std::uint64_t accepted = 0;          // spans answered with success
  std::uint64_t refused_requests = 0;  // answered 503 / UNAVAILABLE (retryable)
  std::uint64_t failed_requests = 0;   // no answer (agent down or killed mid-request)
  std::uint64_t received = 0;          // spans the collector received, duplicates included
  std::uint64_t received_distinct = 0;
  std::uint64_t lost = 0;              // accepted but never received
  std::uint64_t duplicates = 0;        // received - received_distinct
  std::int64_t max_rss_kb = 0;         // agent's largest VmRSS sampled
  // Outage mode: the agent's kspan_exporter_disk_queue_persist_refused_spans_total
  // (spans refused because the disk queue was full or failing) at the end.
  double persist_refused_spans = -1;
  double drain_seconds = 0;
  std::string note;
  double duplicate_ratio() const {
    return received_distinct == 0 ? 0 : static_cast<double>(duplicates) / received_distinct;
  }
};

inline std::int64_t ProcessRssKb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return -1;
}

// An app span with a unique id drawn from `n` (span id = n, trace id from n).
inline Span SoakSpan(std::uint64_t n, const std::shared_ptr<const Resource>& resource,
                     const std::shared_ptr<const InstrumentationScope>& scope) {
  Span s;
  for (int i = 0; i < 8; ++i) {
    s.span_id[i] = static_cast<std::uint8_t>(n >> (8 * (7 - i)));
    s.trace_id[i] = 0x5a;
    s.trace_id[8 + i] = static_cast<std::uint8_t>(n >> (8 * (7 - i)));
  }
  s.span_id[0] |= 0x80;  // never all zero
  s.name = "GET /orders";
  s.kind = SpanKind::kServer;
  s.start_unix_nano = 1'700'000'000'000'000'000ull + n * 1000;
  s.end_unix_nano = s.start_unix_nano + 500'000;
  s.attributes = {{"http.request.method", std::string("GET")},
                  {"http.route", std::string("/orders")},
                  {"soak.n", static_cast<std::int64_t>(n)}};
  s.source = SpanSource::kApp;
  s.resource = resource;
  s.scope = scope;
  return s;
}

inline std::uint64_t SoakIdOf(const std::string& span_id_bytes) {
  std::uint64_t n = 0;
  for (unsigned char c : span_id_bytes) n = (n << 8) | c;
  return n & ~(std::uint64_t{0x80} << 56);
}

class DurableSoak {
 public:
  explicit DurableSoak(SoakOptions o) : o_(std::move(o)) {
    char tmpl[] = "/tmp/kspan-soak-XXXXXX";
    dir_ = mkdtemp(tmpl);
    state_ = dir_ + "/state";
    backend_port_ = FreeLoopbackPort();
    grpc_port_ = FreeLoopbackPort();
    http_port_ = FreeLoopbackPort();
    std::ofstream(dir_ + "/kspan.yaml")
        << "capture:\n"
           "  tcp: {enabled: false}\n"
           "  dns: false\n"
           "  http: {enabled: false}\n"
           "  syscalls: {enabled: false}\n"
           "destinations:\n"
           "  - name: backend\n"
           "    type: otlp_grpc\n"
           "    endpoint: http://127.0.0.1:" << backend_port_ << "\n"
           "    timeout: 2s\n"
           "    max_in_flight: 4\n"
           "    queue:\n"
           "      disk: {enabled: true, fsync: normal, max_bytes: " << o_.disk_max_bytes << "}\n"
           "    retry: {initial_backoff: 100ms, max_backoff: 1s, max_elapsed: 0s}\n"
           "    circuit_breaker: {open_duration: 500ms}\n";
  }
  ~DurableSoak() { std::filesystem::remove_all(dir_); }

  SoakResult Run(const std::function<void(const std::string&)>& progress = nullptr) {
    std::mt19937 rng(o_.seed != 0 ? o_.seed : std::random_device{}());
    StartSenders();
    SoakResult r;
    if (o_.outage.count() > 0) {
      AgentProcess agent(AgentArgs(), state_);
      if (!agent.WaitReady(std::chrono::seconds(60))) {
        r.note = "agent did not start: " + agent.log();
        StopSenders();
        return r;
      }
      const auto until = std::chrono::steady_clock::now() + o_.outage;
      while (std::chrono::steady_clock::now() < until) {
        r.max_rss_kb = std::max(r.max_rss_kb, ProcessRssKb(agent.pid()));
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        if (progress) progress("outage: " + std::to_string(accepted_count()) + " accepted, rss " +
                               std::to_string(r.max_rss_kb) + " kB max");
      }
      StopSenders();
      r.max_rss_kb = std::max(r.max_rss_kb, ProcessRssKb(agent.pid()));
      r.persist_refused_spans =
          MetricSum(agent.Metrics(), "kspan_exporter_disk_queue_persist_refused_spans_total");
      agent.Kill();  // the hardest stop: nothing flushed
    } else {
      std::uniform_int_distribution<long> life(o_.min_run.count(), o_.max_run.count());
      for (int i = 0; i < o_.iterations; ++i) {
        AgentProcess agent(AgentArgs(), state_);
        if (!agent.WaitReady(std::chrono::seconds(60))) {
          r.note = "agent did not start (iteration " + std::to_string(i) + "): " + agent.log();
          StopSenders();
          return r;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(life(rng)));
        r.max_rss_kb = std::max(r.max_rss_kb, ProcessRssKb(agent.pid()));
        agent.Kill();
        if (progress) {
          progress("iteration " + std::to_string(i + 1) + ": " +
                   std::to_string(accepted_count()) + " spans accepted so far");
        }
      }
      StopSenders();
    }

    // The backend comes up; one more agent delivers what the disk queue
    // holds. The collector keeps only a count per span id (millions of
    // spans in the outage benchmark).
    OtlpTestServer backend(backend_port_);
    backend.SetSpanTap([this](const otlp_proto::Span& s) {
      const std::uint64_t id = SoakIdOf(s.span_id());
      std::lock_guard lock(received_mu_);
      if (id >= received_.size()) received_.resize(std::max<std::size_t>(id + 1, received_.size() * 2), 0);
      if (received_[id] < 0xffff) ++received_[id];
    });
    const auto t0 = std::chrono::steady_clock::now();
    AgentProcess agent(AgentArgs(), state_);
    if (!agent.WaitReady(std::chrono::seconds(60))) {
      r.note = "final agent did not start: " + agent.log();
      return r;
    }
    const std::uint64_t accepted = accepted_count();
    // Cheap first (a count, duplicates included), then every accepted id.
    backend.WaitForSpanCount(accepted, o_.drain_timeout);
    const auto all_in = [&] {
      std::scoped_lock lock(mu_, received_mu_);
      for (std::uint64_t id = 0; id < accepted_.size(); ++id) {
        if (accepted_[id] && (id >= received_.size() || received_[id] == 0)) return false;
      }
      return true;
    };
    for (int i = 0; i < 20 && !all_in(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(500));
    r.drain_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    agent.Terminate(std::chrono::seconds(15));
    backend.Shutdown();  // no tap runs after this
    r.accepted = accepted;
    r.refused_requests = refused_.load();
    r.failed_requests = failed_.load();
    for (std::uint64_t id = 0; id < received_.size(); ++id) {
      if (received_[id] == 0) continue;
      r.received += received_[id];
      ++r.received_distinct;
    }
    r.duplicates = r.received - r.received_distinct;
    for (std::uint64_t id = 0; id < accepted_.size(); ++id) {
      if (accepted_[id] && (id >= received_.size() || received_[id] == 0)) ++r.lost;
    }
    return r;
  }

  std::size_t accepted_count() {
    std::lock_guard lock(mu_);
    return accepted_total_;
  }

 private:
  std::vector<std::string> AgentArgs() const {
    return {"-c", dir_ + "/kspan.yaml", "--receiver-grpc", "127.0.0.1:" + std::to_string(grpc_port_),
            "--receiver-http", "127.0.0.1:" + std::to_string(http_port_), "--no-console"};
  }

  void StartSenders() {
    for (int t = 0; t < o_.senders; ++t) threads_.emplace_back([this, t] { SendLoop(t); });
  }
  void StopSenders() {
    stop_.store(true);
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  void SendLoop(int t) {
    OtlpGrpcOptions opts;
    const bool grpc = t % 2 == 0;
    opts.endpoint = "http://127.0.0.1:" + std::to_string(grpc ? grpc_port_ : http_port_);
    opts.protocol = grpc ? "grpc" : "http/protobuf";
    opts.timeout = std::chrono::milliseconds(3000);
    const EnvLookup no_env = [](const char*) -> const char* { return nullptr; };
    std::unique_ptr<SpanSender> sender;
    if (grpc) {
      auto s = OtlpGrpcSender::Create(opts, no_env);
      if (s.ok()) sender = *std::move(s);
    } else {
      auto s = OtlpHttpSender::Create(opts, no_env);
      if (s.ok()) sender = *std::move(s);
    }
    if (!sender) return;
    auto resource = std::make_shared<const Resource>(
        Resource{{{"service.name", std::string("soak-") + std::to_string(t)}}});
    auto scope = std::make_shared<const InstrumentationScope>();
    const int n = o_.spans_per_request;
    // Pacing: each sender's share of `rate`.
    const double per_sender = o_.rate > 0 ? static_cast<double>(o_.rate) / o_.senders : 0;
    const auto interval = per_sender > 0 ? std::chrono::duration<double>(n / per_sender)
                                         : std::chrono::duration<double>(0);
    auto next = std::chrono::steady_clock::now();
    while (!stop_.load()) {
      SpanBatch batch;
      const std::uint64_t first = next_id_.fetch_add(static_cast<std::uint64_t>(n));
      for (int i = 0; i < n; ++i) batch.spans.push_back(SoakSpan(first + i, resource, scope));
      const ExportResult res =
          sender->Send(batch, std::chrono::steady_clock::now() + std::chrono::seconds(3));
      if (res.outcome == ExportResult::Outcome::kSuccess && res.rejected_spans == 0) {
        std::lock_guard lock(mu_);
        if (first + n > accepted_.size()) accepted_.resize(std::max<std::size_t>(first + n, accepted_.size() * 2), 0);
        for (int i = 0; i < n; ++i) accepted_[first + i] = 1;
        accepted_total_ += static_cast<std::size_t>(n);
      } else if (res.code.find("503") != std::string::npos ||
                 res.code.find("UNAVAILABLE") != std::string::npos) {
        // Either refused (retry later) or no connection: told apart by
        // whether the agent answered, which the code alone does not say.
        (res.message.find("kspan") != std::string::npos ? refused_ : failed_).fetch_add(1);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      } else {
        failed_.fetch_add(1);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      if (per_sender > 0) {
        next += std::chrono::duration_cast<std::chrono::steady_clock::duration>(interval);
        const auto now = std::chrono::steady_clock::now();
        if (next > now) std::this_thread::sleep_until(next);
        else if (now - next > std::chrono::seconds(1)) next = now;  // behind: do not burst
      }
    }
  }

  SoakOptions o_;
  std::string dir_, state_;
  int backend_port_ = 0, grpc_port_ = 0, http_port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> next_id_{1};
  std::atomic<std::uint64_t> refused_{0}, failed_{0};
  std::mutex mu_;
  // Indexed by span id (ids are handed out in sequence from 1): flags of
  // the spans answered with success, and how often the collector got each.
  std::vector<std::uint8_t> accepted_;
  std::size_t accepted_total_ = 0;
  std::mutex received_mu_;
  std::vector<std::uint16_t> received_;
  std::vector<std::thread> threads_;
};

}  // namespace kspan::testing
