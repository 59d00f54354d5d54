#include "tests/support/otlp_test_server.h"

#include <cstdio>
#include <cstdlib>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace kspan::testing {
namespace {

using opentelemetry::proto::collector::trace::v1::ExportTraceServiceResponse;
using opentelemetry::proto::collector::trace::v1::TraceService;

std::string Hex(const std::string& bytes) { return absl::BytesToHexString(bytes); }

const otlp_proto::AnyValue* Find(
    const google::protobuf::RepeatedPtrField<opentelemetry::proto::common::v1::KeyValue>& attrs,
    std::string_view key) {
  for (const auto& kv : attrs) {
    if (kv.key() == key) return &kv.value();
  }
  return nullptr;
}

}  // namespace

std::string ReceivedSpan::trace_id_hex() const { return Hex(span.trace_id()); }
std::string ReceivedSpan::span_id_hex() const { return Hex(span.span_id()); }
std::string ReceivedSpan::parent_span_id_hex() const { return Hex(span.parent_span_id()); }

const otlp_proto::AnyValue* ReceivedSpan::Attribute(std::string_view key) const {
  if (const auto* v = Find(span.attributes(), key)) return v;
  return ResourceAttribute(key);
}

const otlp_proto::AnyValue* ReceivedSpan::ResourceAttribute(std::string_view key) const {
  return Find(resource.attributes(), key);
}

class OtlpTestServer::Service final : public TraceService::Service {
 public:
  grpc::Status Export(grpc::ServerContext* context,
                      const otlp_proto::ExportTraceServiceRequest* request,
                      ExportTraceServiceResponse* response) override {
    ScriptedResponse answer;
    {
      std::lock_guard lock(mu_);
      ++calls_;
      last_metadata_.clear();
      for (const auto& [key, value] : context->client_metadata()) {
        last_metadata_.emplace(std::string(key.data(), key.size()),
                               std::string(value.data(), value.size()));
      }
      if (!script_.empty()) {
        answer = std::move(script_.front());
        script_.pop_front();
      } else {
        answer.delay = default_delay_;
      }
    }
    cv_.notify_all();
    if (answer.delay.count() > 0) {
      // Sleep in small steps so a cancelled call or Shutdown() ends it.
      const auto until = std::chrono::steady_clock::now() + answer.delay;
      std::unique_lock lock(mu_);
      while (!stopping_ && !context->IsCancelled() && std::chrono::steady_clock::now() < until) {
        cv_.wait_for(lock, std::chrono::milliseconds(5));
      }
      if (stopping_ || context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    if (!answer.status.ok()) return answer.status;
    if (answer.rejected_spans != 0 || !answer.error_message.empty()) {
      response->mutable_partial_success()->set_rejected_spans(answer.rejected_spans);
      response->mutable_partial_success()->set_error_message(answer.error_message);
    }
    {
      std::lock_guard lock(mu_);
      std::size_t n = 0;
      for (const auto& rs : request->resource_spans()) {
        for (const auto& ss : rs.scope_spans()) {
          n += static_cast<std::size_t>(ss.spans_size());
          if (tap_) {
            for (const auto& span : ss.spans()) tap_(span);
          }
        }
      }
      span_count_ += n;
      if (!tap_) requests_.push_back(*request);
    }
    cv_.notify_all();
    return grpc::Status::OK;
  }

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::deque<ScriptedResponse> script_;
  std::chrono::milliseconds default_delay_{0};
  std::vector<otlp_proto::ExportTraceServiceRequest> requests_;
  std::function<void(const otlp_proto::Span&)> tap_;
  std::size_t span_count_ = 0;  // spans of the requests answered OK
  std::multimap<std::string, std::string> last_metadata_;
  int calls_ = 0;
  bool stopping_ = false;
};

std::string HostForUrl(const std::string& address) {
  return address.find(':') != std::string::npos ? absl::StrCat("[", address, "]") : address;
}

OtlpTestServer::OtlpTestServer(int port, std::string bind_address)
    : OtlpTestServer(port, grpc::InsecureServerCredentials(), std::move(bind_address)) {}

OtlpTestServer::OtlpTestServer(int port, std::shared_ptr<grpc::ServerCredentials> credentials,
                               std::string bind_address)
    : service_(std::make_unique<Service>()), bind_address_(std::move(bind_address)) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(HostForUrl(bind_address_), ":", port), credentials, &port_);
  builder.RegisterService(service_.get());
  // The OTLP specification recommends receivers accept 64 MiB.
  builder.SetMaxReceiveMessageSize(64 << 20);
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    std::fprintf(stderr, "OtlpTestServer: cannot listen on %s:%d\n", bind_address_.c_str(), port);
    std::abort();
  }
}

OtlpTestServer::~OtlpTestServer() { Shutdown(); }

std::string OtlpTestServer::endpoint() const {
  return absl::StrCat("http://", HostForUrl(bind_address_), ":", port_);
}

void OtlpTestServer::PushResponse(ScriptedResponse response) {
  std::lock_guard lock(service_->mu_);
  service_->script_.push_back(std::move(response));
}

void OtlpTestServer::SetDefaultDelay(std::chrono::milliseconds delay) {
  std::lock_guard lock(service_->mu_);
  service_->default_delay_ = delay;
}

std::vector<otlp_proto::ExportTraceServiceRequest> OtlpTestServer::requests() const {
  std::lock_guard lock(service_->mu_);
  return service_->requests_;
}

namespace {

std::vector<ReceivedSpan> Flatten(const std::vector<otlp_proto::ExportTraceServiceRequest>& reqs) {
  std::vector<ReceivedSpan> out;
  for (const auto& req : reqs) {
    for (const auto& rs : req.resource_spans()) {
      for (const auto& ss : rs.scope_spans()) {
        for (const auto& span : ss.spans()) out.push_back({span, rs.resource(), ss.scope()});
      }
    }
  }
  return out;
}

}  // namespace

std::vector<ReceivedSpan> OtlpTestServer::spans() const { return Flatten(requests()); }

int OtlpTestServer::export_calls() const {
  std::lock_guard lock(service_->mu_);
  return service_->calls_;
}

std::multimap<std::string, std::string> OtlpTestServer::last_metadata() const {
  std::lock_guard lock(service_->mu_);
  return service_->last_metadata_;
}

bool OtlpTestServer::WaitForSpans(
    const std::function<bool(const std::vector<ReceivedSpan>&)>& done,
    std::chrono::milliseconds timeout) const {
  const auto until = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lock(service_->mu_);
  for (;;) {
    if (done(Flatten(service_->requests_))) return true;
    if (service_->cv_.wait_until(lock, until) == std::cv_status::timeout) {
      return done(Flatten(service_->requests_));
    }
  }
}

bool OtlpTestServer::WaitForSpanCount(std::size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(service_->mu_);
  return service_->cv_.wait_for(lock, timeout, [&] { return service_->span_count_ >= n; });
}

void OtlpTestServer::SetSpanTap(std::function<void(const otlp_proto::Span&)> tap) {
  std::lock_guard lock(service_->mu_);
  service_->tap_ = std::move(tap);
}

bool OtlpTestServer::WaitForExportCalls(int n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(service_->mu_);
  return service_->cv_.wait_for(lock, timeout, [&] { return service_->calls_ >= n; });
}

void OtlpTestServer::Shutdown() {
  if (!server_) return;
  {
    std::lock_guard lock(service_->mu_);
    service_->stopping_ = true;
  }
  service_->cv_.notify_all();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_->Wait();
  server_.reset();
}

}  // namespace kspan::testing
