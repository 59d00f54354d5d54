#include "userspace/id_generator.h"

#include <cstring>

namespace kspan {
namespace {

template <std::size_t N>
void Fill(absl::BitGen& gen, std::array<std::uint8_t, N>& id) {
  do {
    for (std::size_t i = 0; i < N; i += 8) {
      std::uint64_t r = absl::Uniform<std::uint64_t>(gen);
      std::memcpy(id.data() + i, &r, std::min<std::size_t>(8, N - i));
    }
  } while (!IsValid(id));  // all-zero is invalid in W3C trace context
}

}  // namespace

TraceId IdGenerator::NewTraceId() {
  TraceId id;
  Fill(gen_, id);
  return id;
}

SpanId IdGenerator::NewSpanId() {
  SpanId id;
  Fill(gen_, id);
  return id;
}

}  // namespace kspan
