// kspan's local HTTP endpoint: /metrics (Prometheus text), /healthz, /readyz.
// Bound to loopback by default; it exposes counts, never span payloads.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "exporter/self_metrics.h"

namespace httplib {
class Server;
}

namespace kspan {

class AdminServer {
 public:
  explicit AdminServer(MetricsRegistry& metrics);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // `listen` is host:port; port 0 picks a free one (see port()).
  absl::Status Start(const std::string& listen);
  void Stop();
  int port() const { return port_; }

  // /readyz answers 200 once capture is attached and export runs.
  void SetReady(bool ready) { ready_.store(ready); }
  // /status answers with this JSON (set before Start()).
  void SetStatusProvider(std::function<std::string()> provider) {
    status_provider_ = std::move(provider);
  }

 private:
  MetricsRegistry& metrics_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> ready_{false};
  std::function<std::string()> status_provider_;
  int port_ = 0;
};

}  // namespace kspan
