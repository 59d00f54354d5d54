#include "tests/support/hostile_collector.h"

#include <httplib.h>
#include <zlib.h>
#include <zstd.h>

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/generic/async_generic_service.h"

namespace kspan::testing {

// --- gRPC -----------------------------------------------------------------

// A generic service: it answers whatever method is called, with bytes it
// never serializes from a message, so an OK can carry garbage.
class HostileGrpcCollector::Service final : public grpc::CallbackGenericService {
 public:
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext*) override {
    HostileGrpcAnswer answer;
    {
      std::lock_guard lock(mu_);
      ++calls_;
      if (!script_.empty()) {
        answer = script_.front();
        if (script_.size() > 1) script_.pop_front();
        last_served_ = script_.size() == 1;
      }
    }
    return new Reactor(std::move(answer));
  }

  void Push(HostileGrpcAnswer a) {
    std::lock_guard lock(mu_);
    if (last_served_) script_.clear();  // a repeated answer gives way
    last_served_ = false;
    script_.push_back(std::move(a));
  }
  int calls() const {
    std::lock_guard lock(mu_);
    return calls_;
  }

 private:
  class Reactor final : public grpc::ServerGenericBidiReactor {
   public:
    explicit Reactor(HostileGrpcAnswer answer) : answer_(std::move(answer)) { StartRead(&request_); }

    void OnReadDone(bool ok) override {
      if (!ok) {
        Finish(grpc::Status(grpc::StatusCode::CANCELLED, "no request"));
        return;
      }
      if (answer_.code != grpc::StatusCode::OK) {
        Finish(grpc::Status(answer_.code, answer_.message, answer_.details));
        return;
      }
      grpc::Slice slice(answer_.body);
      response_ = grpc::ByteBuffer(&slice, 1);
      StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
    }
    void OnDone() override { delete this; }

   private:
    HostileGrpcAnswer answer_;
    grpc::ByteBuffer request_;
    grpc::ByteBuffer response_;
  };

  mutable std::mutex mu_;
  std::deque<HostileGrpcAnswer> script_;
  bool last_served_ = false;  // the only answer left has been given once
  int calls_ = 0;
};

HostileGrpcCollector::HostileGrpcCollector() : service_(std::make_unique<Service>()) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
  builder.RegisterCallbackGenericService(service_.get());
  builder.SetMaxReceiveMessageSize(64 << 20);
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    std::fprintf(stderr, "HostileGrpcCollector: cannot listen\n");
    std::abort();
  }
}

HostileGrpcCollector::~HostileGrpcCollector() {
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_->Wait();
}

std::string HostileGrpcCollector::endpoint() const { return absl::StrCat("http://127.0.0.1:", port_); }
void HostileGrpcCollector::Push(HostileGrpcAnswer answer) { service_->Push(std::move(answer)); }
int HostileGrpcCollector::calls() const { return service_->calls(); }

// --- HTTP -----------------------------------------------------------------

struct HostileHttpCollector::State {
  mutable std::mutex mu;
  std::deque<HostileHttpAnswer> script;
  bool last_served = false;
  int calls = 0;
};

HostileHttpCollector::HostileHttpCollector()
    : state_(std::make_shared<State>()), server_(std::make_unique<httplib::Server>()) {
  auto state = state_;
  server_->Post(R"(/.*)", [state](const httplib::Request&, httplib::Response& res) {
    HostileHttpAnswer a;
    {
      std::lock_guard lock(state->mu);
      ++state->calls;
      if (!state->script.empty()) {
        a = state->script.front();
        if (state->script.size() > 1) state->script.pop_front();
        state->last_served = state->script.size() == 1;
      }
    }
    res.status = a.status;
    for (const auto& [k, v] : a.headers) res.set_header(k, v);
    if (a.zero_bytes > 0) {
      res.set_content_provider(a.zero_bytes, a.content_type,
                               [](size_t, size_t length, httplib::DataSink& sink) {
                                 static const std::string kZeros(64 * 1024, '\0');
                                 return sink.write(kZeros.data(), std::min(length, kZeros.size()));
                               });
    } else {
      res.set_content(a.body, a.content_type);
    }
  });
  port_ = server_->bind_to_any_port("127.0.0.1");
  if (port_ <= 0) {
    std::fprintf(stderr, "HostileHttpCollector: cannot listen\n");
    std::abort();
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  while (!server_->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

HostileHttpCollector::~HostileHttpCollector() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

std::string HostileHttpCollector::base_url() const { return absl::StrCat("http://127.0.0.1:", port_); }

void HostileHttpCollector::Push(HostileHttpAnswer answer) {
  std::lock_guard lock(state_->mu);
  if (state_->last_served) state_->script.clear();
  state_->last_served = false;
  state_->script.push_back(std::move(answer));
}

int HostileHttpCollector::calls() const {
  std::lock_guard lock(state_->mu);
  return state_->calls;
}

// --- payloads -------------------------------------------------------------

namespace {

constexpr std::size_t kMiB = 1 << 20;

void AppendLe32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

}  // namespace

std::string GzipBomb(std::size_t mib) {
  const std::string zeros(kMiB, '\0');
  z_stream z{};
  if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  // A full flush ends the output on a byte boundary with the dictionary
  // reset, so the second MiB's blocks decode the same anywhere they are put.
  auto deflate_mib = [&] {
    std::string out(deflateBound(&z, kMiB) + 64, '\0');
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(zeros.data()));
    z.avail_in = static_cast<uInt>(zeros.size());
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    if (deflate(&z, Z_FULL_FLUSH) != Z_OK || z.avail_in != 0) std::abort();
    out.resize(out.size() - z.avail_out);
    return out;
  };
  std::string out = deflate_mib();  // gzip header + the first MiB
  const std::string block = deflate_mib();
  deflateEnd(&z);
  for (std::size_t i = 1; i < mib; ++i) out += block;
  out.append("\x03\x00", 2);  // final block: fixed Huffman, only end-of-block
  const uLong crc_mib = crc32(0, reinterpret_cast<const Bytef*>(zeros.data()), kMiB);
  uLong crc = crc_mib;
  for (std::size_t i = 1; i < mib; ++i) crc = crc32_combine(crc, crc_mib, kMiB);
  AppendLe32(out, static_cast<std::uint32_t>(crc));
  AppendLe32(out, static_cast<std::uint32_t>(mib * kMiB));  // ISIZE: the length mod 2^32
  return out;
}

std::string ZstdBomb(std::size_t mib) {
  const std::string zeros(kMiB, '\0');
  std::string frame(ZSTD_compressBound(kMiB), '\0');
  const size_t n = ZSTD_compress(frame.data(), frame.size(), zeros.data(), zeros.size(), 19);
  if (ZSTD_isError(n)) std::abort();
  frame.resize(n);
  std::string out;
  out.reserve(n * mib);
  for (std::size_t i = 0; i < mib; ++i) out += frame;
  return out;
}

std::string RetryInfoDetails(std::int64_t seconds, std::int32_t nanos) {
  google::rpc::Status status;
  status.set_code(static_cast<int>(grpc::StatusCode::UNAVAILABLE));
  status.set_message("slow down");
  google::rpc::RetryInfo info;
  info.mutable_retry_delay()->set_seconds(seconds);
  info.mutable_retry_delay()->set_nanos(nanos);
  status.add_details()->PackFrom(info);
  return status.SerializeAsString();
}

}  // namespace kspan::testing
