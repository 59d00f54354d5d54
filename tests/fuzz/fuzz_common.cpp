#include "tests/fuzz/fuzz_common.h"

#include <spdlog/spdlog.h>

#include "exporter/console_sender.h"
#include "exporter/otlp_json.h"
#include "exporter/otlp_json_writer.h"
#include "exporter/otlp_transform.h"
#include "exporter/otlp_wire.h"
#include "exporter/zipkin_sender.h"
#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/util/field_comparator.h"
#include "google/protobuf/util/message_differencer.h"

namespace kspan::fuzz {

void QuietLogs() {
  spdlog::set_level(spdlog::level::off);
  google::protobuf::SetLogHandler(nullptr);  // "invalid UTF-8" on every such input
}

void CheckEncoders(std::span<const Span> spans) {
  const otlp::ExportTraceServiceRequest request = ToExportRequest(spans);
  const std::string proto = request.SerializeAsString();
  FUZZ_CHECK(EncodeExportRequest(spans) == proto);

  const std::string json = EncodeOtlpJson(spans);
  otlp::ExportTraceServiceRequest from_json;
  FUZZ_CHECK(FromOtlpJson(json, from_json).ok());
  // NaN is written as "NaN" and reads back as the canonical NaN, whatever
  // payload bits the sender's NaN had.
  google::protobuf::util::DefaultFieldComparator comparator;
  comparator.set_treat_nan_as_equal(true);
  google::protobuf::util::MessageDifferencer differencer;
  differencer.set_field_comparator(&comparator);
  FUZZ_CHECK(differencer.Compare(request, from_json));

  (void)ToZipkinJson(spans);
  for (const Span& s : spans) (void)FormatConsoleLine(s);
}

}  // namespace kspan::fuzz
