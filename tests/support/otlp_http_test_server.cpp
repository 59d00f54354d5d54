#include "tests/support/otlp_http_test_server.h"

#include <httplib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "exporter/compression.h"
#include "exporter/otlp_json.h"
#include "google/rpc/status.pb.h"

namespace kspan::testing {

struct OtlpHttpTestServer::State {
  mutable std::mutex mu;
  mutable std::condition_variable cv;
  std::deque<HttpScriptedResponse> script;
  std::chrono::milliseconds default_delay{0};
  std::vector<RecordedHttpRequest> requests;
  std::vector<bool> accepted;  // per request: answered 2xx
  bool stopping = false;
};

using opentelemetry::proto::collector::trace::v1::ExportTraceServiceResponse;

OtlpHttpTestServer::OtlpHttpTestServer(std::optional<HttpServerTls> tls, std::string bind_address)
    : state_(std::make_shared<State>()), bind_address_(std::move(bind_address)) {
  if (tls) {
    tls_ = true;
    server_ = std::make_unique<httplib::SSLServer>(
        tls->cert_file.c_str(), tls->key_file.c_str(),
        tls->client_ca_file.empty() ? nullptr : tls->client_ca_file.c_str());
  } else {
    server_ = std::make_unique<httplib::Server>();
  }
  auto state = state_;
  server_->Post(R"(/.*)", [state](const httplib::Request& req, httplib::Response& res) {
    RecordedHttpRequest r;
    r.path = req.path;
    r.remote_addr = req.remote_addr;
    r.at = std::chrono::steady_clock::now();
    for (const auto& [k, v] : req.headers) r.headers.emplace(absl::AsciiStrToLower(k), v);
    r.content_type = req.get_header_value("Content-Type");
    r.content_encoding = req.get_header_value("Content-Encoding");
    r.body = req.body;
    // cpp-httplib inflates gzip itself; zstd is ours to undo.
    if (r.content_encoding == "zstd") {
      auto d = ZstdDecompress(req.body);
      r.body = d.ok() ? *d : std::string();
    }
    const bool json = r.content_type.find("json") != std::string::npos;
    if (r.path == "/v1/traces" || r.path.find("/v1/traces") != std::string::npos ||
        r.path == "/custom/traces") {
      otlp_proto::ExportTraceServiceRequest m;
      if (json ? FromOtlpJson(r.body, m).ok() : m.ParseFromString(r.body)) r.otlp = std::move(m);
    }
    HttpScriptedResponse answer;
    {
      std::lock_guard lock(state->mu);
      if (!state->script.empty()) {
        answer = std::move(state->script.front());
        state->script.pop_front();
      } else {
        answer.delay = state->default_delay;
      }
    }
    if (answer.delay.count() > 0) {
      std::unique_lock lock(state->mu);
      state->cv.wait_for(lock, answer.delay, [&] { return state->stopping; });
    }
    res.status = answer.status;
    for (const auto& [k, v] : answer.headers) res.set_header(k, v);
    const std::string type = json ? "application/json" : "application/x-protobuf";
    if (answer.status >= 200 && answer.status < 300) {
      if (r.otlp) {
        ExportTraceServiceResponse resp;
        if (answer.rejected_spans != 0 || !answer.error_message.empty()) {
          resp.mutable_partial_success()->set_rejected_spans(answer.rejected_spans);
          resp.mutable_partial_success()->set_error_message(answer.error_message);
        }
        res.set_content(json ? ToOtlpJson(resp) : resp.SerializeAsString(), type);
      }
    } else if (!answer.status_message.empty()) {
      google::rpc::Status st;
      st.set_code(14);
      st.set_message(answer.status_message);
      res.set_content(json ? ToOtlpJson(st) : st.SerializeAsString(), type);
    }
    {
      std::lock_guard lock(state->mu);
      state->requests.push_back(std::move(r));
      state->accepted.push_back(answer.status >= 200 && answer.status < 300);
    }
    state->cv.notify_all();
  });
  port_ = server_->bind_to_any_port(bind_address_);
  if (port_ <= 0) {
    std::fprintf(stderr, "OtlpHttpTestServer: cannot listen on %s\n", bind_address_.c_str());
    std::abort();
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  // stop() before the accept loop runs would be lost: wait for it.
  while (!server_->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

OtlpHttpTestServer::~OtlpHttpTestServer() { Stop(); }

void OtlpHttpTestServer::Stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(state_->mu);
    state_->stopping = true;
  }
  state_->cv.notify_all();
  server_->stop();
  thread_.join();
}

std::string OtlpHttpTestServer::base_url() const {
  return absl::StrCat(tls_ ? "https" : "http", "://", HostForUrl(bind_address_), ":", port_);
}

void OtlpHttpTestServer::PushResponse(HttpScriptedResponse r) {
  std::lock_guard lock(state_->mu);
  state_->script.push_back(std::move(r));
}

void OtlpHttpTestServer::SetDefaultDelay(std::chrono::milliseconds d) {
  std::lock_guard lock(state_->mu);
  state_->default_delay = d;
}

std::vector<RecordedHttpRequest> OtlpHttpTestServer::requests() const {
  std::lock_guard lock(state_->mu);
  return state_->requests;
}

int OtlpHttpTestServer::calls() const {
  std::lock_guard lock(state_->mu);
  return static_cast<int>(state_->requests.size());
}

std::vector<ReceivedSpan> OtlpHttpTestServer::spans() const {
  std::lock_guard lock(state_->mu);
  std::vector<ReceivedSpan> out;
  for (std::size_t i = 0; i < state_->requests.size(); ++i) {
    if (!state_->accepted[i] || !state_->requests[i].otlp) continue;
    for (const auto& rs : state_->requests[i].otlp->resource_spans()) {
      for (const auto& ss : rs.scope_spans()) {
        for (const auto& span : ss.spans()) out.push_back({span, rs.resource(), ss.scope()});
      }
    }
  }
  return out;
}

bool OtlpHttpTestServer::WaitForCalls(int n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(state_->mu);
  return state_->cv.wait_for(lock, timeout,
                             [&] { return static_cast<int>(state_->requests.size()) >= n; });
}

bool OtlpHttpTestServer::WaitForSpanCount(std::size_t n, std::chrono::milliseconds timeout) const {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (spans().size() >= n) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return spans().size() >= n;
}

TestPki MakeTestPki(const std::string& dir) {
  std::filesystem::create_directories(dir);
  TestPki p;
  p.ca_cert = dir + "/ca.pem";
  p.ca_key = dir + "/ca.key";
  p.server_cert = dir + "/server.pem";
  p.server_key = dir + "/server.key";
  p.client_cert = dir + "/client.pem";
  p.client_key = dir + "/client.key";
  p.other_ca_cert = dir + "/other-ca.pem";
  const std::string d = dir;
  const std::string script = absl::StrCat(
      "set -e; cd '", d, "';",
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
      "-subj '/CN=kspan test CA' 2>/dev/null;",
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem -days 2 "
      "-subj '/CN=unrelated CA' 2>/dev/null;",
      "printf 'subjectAltName=DNS:localhost,DNS:otlp.test,IP:127.0.0.1\\n' > server.ext;",
      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
      "-subj '/CN=localhost' 2>/dev/null;",
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem "
      "-days 2 -extfile server.ext 2>/dev/null;",
      "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr "
      "-subj '/CN=kspan client' 2>/dev/null;",
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem "
      "-days 2 2>/dev/null;");
  if (std::system(("sh -c \"" + script + "\"").c_str()) != 0) {
    std::fprintf(stderr, "MakeTestPki: openssl failed in %s\n", dir.c_str());
    std::abort();
  }
  return p;
}

}  // namespace kspan::testing
