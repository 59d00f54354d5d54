// Request body compression for the HTTP senders: gzip (zlib) and zstd.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kspan {

absl::StatusOr<std::string> GzipCompress(std::string_view in);
absl::StatusOr<std::string> GzipDecompress(std::string_view in);
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
absl::StatusOr<std::string> ZstdDecompress(std::string_view in);

}  // namespace kspan
