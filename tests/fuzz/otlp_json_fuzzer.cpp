// OTLP/JSON ExportTraceServiceRequest bodies (the receiver's OTLP/HTTP
// application/json): the JSON reader (hex ids, enums, 64-bit integers as
// strings, nesting bound), the decoder, the partial-success answer, and
// every encoder the received spans go on through.
// Seeds: requests of the OpenTelemetry JS SDK (corpus/otlp_protobuf/README.md).
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
  auto decoded = DecodeExportRequest(fuzz::AsText(data, size), OtlpEncoding::kJson);
  if (!decoded.ok()) return 0;
  FUZZ_CHECK(decoded->invalid_spans >= 0);
  (void)EncodeExportResponse(decoded->invalid_spans, decoded->invalid_message, OtlpEncoding::kJson);
  fuzz::CheckEncoders(decoded->spans);
  return 0;
}
