// Span builders shared by the exporter tests.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "exporter/span.h"

namespace kspan::testing {

inline TraceId MakeTraceId(std::uint8_t seed) {
  TraceId id{};
  for (std::size_t i = 0; i < id.size(); ++i) id[i] = static_cast<std::uint8_t>(seed + i);
  return id;
}

inline SpanId MakeSpanId(std::uint8_t seed) {
  SpanId id{};
  for (std::size_t i = 0; i < id.size(); ++i) id[i] = static_cast<std::uint8_t>(seed + 0x10 + i);
  return id;
}

inline std::shared_ptr<const Resource> MakeResource(const std::string& service, std::int64_t pid) {
  return std::make_shared<const Resource>(
      Resource{{{"service.name", service}, {"process.pid", std::int64_t{pid}}}});
}

// A kernel-style client span; `n` makes ids and name unique.
inline Span MakeSpan(int n, std::shared_ptr<const Resource> resource = nullptr) {
  Span s;
  s.trace_id = MakeTraceId(static_cast<std::uint8_t>(n));
  s.span_id = MakeSpanId(static_cast<std::uint8_t>(n));
  s.name = "connect-" + std::to_string(n);
  s.kind = SpanKind::kClient;
  s.start_unix_nano = 1'700'000'000'000'000'000ull + static_cast<std::uint64_t>(n) * 1000;
  s.end_unix_nano = s.start_unix_nano + 231'000;
  s.attributes = {{"network.peer.address", std::string("127.0.0.1")},
                  {"network.peer.port", std::int64_t{8080}},
                  {"span.index", std::int64_t{n}}};
  s.status_code = StatusCode::kOk;
  s.resource = resource ? std::move(resource) : MakeResource("curl", 1234);
  s.scope = KernelScope();
  return s;
}

}  // namespace kspan::testing
