// OTLP/protobuf ExportTraceServiceRequest bodies, as the receiver gets them
// over OTLP/HTTP (after any gzip) and, parsed by gRPC, over OTLP/gRPC: the
// streaming decoder (ids checked, span limits applied as it reads, spans
// kept or refused), from bytes as OTLP/HTTP hands it the body and from a
// stream of pieces as the gRPC receiver does, with default and with tight
// limits; the partial-success answer, and every encoder the received spans
// go on through.
// Seeds: requests of the OpenTelemetry JS SDK (corpus/README.md).
#include <cstddef>
#include <cstdint>

#include "exporter/otlp_decode.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kspan::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kspan;
  // Pieces of 1 to 64 bytes: every field boundary falls between two of them
  // in some input.
  const int block = 1 + static_cast<int>(size % 64);
  auto decoded = fuzz::DecodeProtobufEveryWay(fuzz::AsText(data, size), block);
  if (!decoded.ok()) return 0;
  (void)EncodeExportResponse(decoded->invalid_spans, decoded->invalid_message, OtlpEncoding::kProtobuf);
  fuzz::CheckEncoders(decoded->spans);
  return 0;
}
