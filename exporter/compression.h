// Request body compression for the HTTP senders: gzip (zlib) and zstd; and
// decompression of what a peer sent, bounded.
#pragma once

#include <cstddef>
#include <limits>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kspan {

absl::StatusOr<std::string> GzipCompress(std::string_view in);
absl::StatusOr<std::string> ZstdCompress(std::string_view in);

// Inflate at most `max_out` bytes: a few compressed bytes can stand for
// gigabytes (a "bomb"), so what a peer sent is decompressed only up to a
// bound. ResourceExhausted when the data holds more, InvalidArgument when it
// is not valid (or truncated) gzip / zstd.
absl::StatusOr<std::string> GzipDecompress(
    std::string_view in, std::size_t max_out = std::numeric_limits<std::size_t>::max());
absl::StatusOr<std::string> ZstdDecompress(
    std::string_view in, std::size_t max_out = std::numeric_limits<std::size_t>::max());

}  // namespace kspan
