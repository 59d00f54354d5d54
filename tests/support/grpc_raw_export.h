// Any bytes as one OTLP/gRPC Export call, through gRPC's generic stub: the
// receiver tests send what no typed client would (malformed, compressed by
// hand, larger than a message may be) and look at the status they get.
#pragma once

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <mutex>

namespace kspan::testing {

inline grpc::Status RawExport(grpc::GenericStub& stub, grpc::ClientContext& context, const grpc::ByteBuffer& request) {
  grpc::ByteBuffer response;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  stub.UnaryCall(&context, "/opentelemetry.proto.collector.trace.v1.TraceService/Export", {}, &request, &response,
                 [&](grpc::Status s) {
                   std::lock_guard lock(mu);
                   status = std::move(s);
                   done = true;
                   cv.notify_all();
                 });
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return done; });
  return status;
}

}  // namespace kspan::testing
