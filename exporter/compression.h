// Request body compression for the HTTP senders: gzip (zlib) and zstd; and
// decompression of what a peer sent, bounded.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <limits>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kspan {

absl::StatusOr<std::string> GzipCompress(std::string_view in);
// Inflates gzip (or zlib) data that arrives in pieces, asking before each
// piece of output (at most 16 KiB) whether it may be kept: what compressed
// input from a peer grows to is bounded while inflating, not found out after
// (a 1 MB gzip bomb inflates to 1 GiB).
class GzipInflater {
 public:
  // Called with the size of the next piece of output; a non-OK status stops
  // inflating and is returned by Feed.
  using MayGrow = std::function<absl::Status(std::size_t more)>;

  GzipInflater();
  ~GzipInflater();
  GzipInflater(const GzipInflater&) = delete;
  GzipInflater& operator=(const GzipInflater&) = delete;

  // Appends what `in` inflates to to *out. InvalidArgument for data that is
  // not gzip/zlib or continues past the end of the stream.
  absl::Status Feed(std::string_view in, std::string* out, const MayGrow& may_grow);
  // The end of the compressed stream was seen (a shorter input is truncated).
  bool finished() const { return finished_; }

 private:
  struct Stream;
  std::unique_ptr<Stream> z_;
  bool finished_ = false;
};

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
