// Request body compression for the HTTP senders: gzip (zlib) and zstd.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kspan {

absl::StatusOr<std::string> GzipCompress(std::string_view in);
absl::StatusOr<std::string> GzipDecompress(std::string_view in);
absl::StatusOr<std::string> ZstdCompress(std::string_view in);
absl::StatusOr<std::string> ZstdDecompress(std::string_view in);

}  // namespace kspan
