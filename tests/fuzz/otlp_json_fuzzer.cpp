// OTLP/JSON ExportTraceServiceRequest bodies (the receiver's OTLP/HTTP
// application/json): the JSON reader (hex ids, enums, 64-bit integers as
// strings, nesting bound, memory budget), the decoder with default and with
// tight span limits, the partial-success answer, and every encoder the
// received spans go on through.
// Seeds: requests of the OpenTelemetry JS SDK (corpus/README.md).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "exporter/otlp_decode.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kspan::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kspan;
  const std::string_view body = fuzz::AsText(data, size);
  const SpanLimits tight = fuzz::TightLimits();
  auto limited = DecodeExportRequest(body, OtlpEncoding::kJson, tight);
  if (limited.ok()) fuzz::CheckWithinLimits(*limited, tight, size);
  auto decoded = DecodeExportRequest(body, OtlpEncoding::kJson);
  if (!decoded.ok()) return 0;
  fuzz::CheckWithinLimits(*decoded, SpanLimits{}, size);
  FUZZ_CHECK(limited.ok() && limited->spans.size() == decoded->spans.size());
  (void)EncodeExportResponse(decoded->invalid_spans, decoded->invalid_message, OtlpEncoding::kJson);
  fuzz::CheckEncoders(decoded->spans);
  return 0;
}
