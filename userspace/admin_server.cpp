#include "userspace/admin_server.h"

#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "userspace/http_server.h"

namespace kspan {

namespace {
// Its clients are Prometheus, `kspan status` and health checks: small
// requests, few at once.
constexpr std::size_t kMaxHeaderBytes = 8 * 1024;
constexpr int kMaxConnections = 64;
constexpr std::chrono::milliseconds kRequestTimeout{10000};

HttpAnswer Text(int status, std::string body, std::string type = "text/plain") {
  HttpAnswer a;
  a.status = status;
  a.body = std::move(body);
  a.content_type = std::move(type);
  return a;
}
}  // namespace

AdminServer::AdminServer(MetricsRegistry& metrics) : metrics_(metrics) {}

AdminServer::~AdminServer() { Stop(); }

HttpAnswer AdminServer::Answer(const HttpRequestHead& head) {
  if (head.method != "GET" && head.method != "HEAD") {
    HttpAnswer a = Text(405, "only GET is allowed\n");
    a.headers.emplace_back("Allow", "GET, HEAD");
    return a;
  }
  HttpAnswer a;
  if (head.path == "/metrics") {
    a = Text(200, metrics_.RenderPrometheus(), "text/plain; version=0.0.4; charset=utf-8");
  } else if (head.path == "/healthz") {
    a = Text(200, "ok\n");
  } else if (head.path == "/status" && status_provider_) {
    a = Text(200, status_provider_(), "application/json");
  } else if (head.path == "/readyz") {
    a = ready_.load() ? Text(200, "ready\n") : Text(503, "starting\n");
  } else {
    a = Text(404, "not found\n");
  }
  if (head.method == "HEAD") a.body.clear();
  return a;
}

absl::Status AdminServer::Start(const std::string& listen) {
  auto colon = listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("admin.listen: '", listen, "' is not host:port"));
  }
  HttpServerOptions o;
  o.name = "admin";
  o.max_header_bytes = kMaxHeaderBytes;
  o.max_body_bytes = 0;  // no route reads a body
  o.request_timeout = kRequestTimeout;
  o.max_connections = kMaxConnections;
  o.threads = 1;
  o.handler = [this](const HttpRequestHead& head) {
    HttpDecision d;
    d.answer = Answer(head);
    return d;
  };
  o.on_refused = [this](HttpRefusal r) {
    metrics_
        .GetCounter("kspan_admin_refused_total",
                    "Requests or connections the admin endpoint refused to bound its memory and time, by reason.",
                    {{"reason", std::string(HttpRefusalName(r))}})
        .Add();
  };
  auto server = HttpServer::Start(listen, std::move(o));
  if (!server.ok()) {
    return absl::UnavailableError(absl::StrCat("admin.listen: cannot listen on ", listen, " (address in use?): ",
                                               std::string(server.status().message())));
  }
  server_ = *std::move(server);
  port_ = server_->port();
  spdlog::info("admin endpoint on http://{}/metrics (port {})", listen, port_);
  return absl::OkStatus();
}

void AdminServer::Stop() {
  if (server_) server_->Stop();
}

}  // namespace kspan
