// gRPC declares grpc::internal::GrpcByteBufferPeer a friend of ByteBuffer
// for its own tests and defines it only there. kspan defines it, once, here:
// it is the one way to reach the bytes of a compressed message (every C++
// read path of a ByteBuffer, ProtoBufferReader and Dump, inflates it whole
// and without a limit), and the C buffer's layout is public C API
// (grpc/impl/codegen/grpc_types.h). Include this header, never define the
// class elsewhere (one definition for the program).
#pragma once

#include "grpc/byte_buffer.h"
#include "grpcpp/support/byte_buffer.h"

namespace grpc::internal {

class GrpcByteBufferPeer {
 public:
  explicit GrpcByteBufferPeer(ByteBuffer* bb) : bb_(bb) {}
  grpc_byte_buffer* c_buffer() { return bb_->c_buffer(); }
  // Hands `raw` (owned from now on) to the ByteBuffer; tests use it to send
  // bytes that are already compressed.
  void set_buffer(grpc_byte_buffer* raw) { bb_->set_buffer(raw); }

 private:
  ByteBuffer* bb_;
};

}  // namespace grpc::internal
