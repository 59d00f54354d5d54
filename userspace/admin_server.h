// kspan's local HTTP endpoint: /metrics (Prometheus text), /healthz, /readyz,
// /status. Bound to loopback by default; it exposes counts, never span
// payloads. It takes GET (and HEAD) only and never reads a request body;
// heads, time and connections are bounded as for the receiver
// (userspace/http_server.h), refusals counted in kspan_admin_refused_total.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "exporter/self_metrics.h"

namespace kspan {

class HttpServer;
struct HttpAnswer;
struct HttpRequestHead;

class AdminServer {
 public:
  explicit AdminServer(MetricsRegistry& metrics);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // `listen` is host:port; port 0 picks a free one (see port()).
  absl::Status Start(const std::string& listen);
  // Ends every connection; waits for no client.
  void Stop();
  int port() const { return port_; }

  // /readyz answers 200 once capture is attached and export runs.
  void SetReady(bool ready) { ready_.store(ready); }
  // /status answers with this JSON (set before Start()).
  void SetStatusProvider(std::function<std::string()> provider) {
    status_provider_ = std::move(provider);
  }

 private:
  HttpAnswer Answer(const HttpRequestHead& head);

  MetricsRegistry& metrics_;
  std::unique_ptr<HttpServer> server_;
  std::atomic<bool> ready_{false};
  std::function<std::string()> status_provider_;
  int port_ = 0;
};

}  // namespace kspan
