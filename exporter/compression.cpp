#include "exporter/compression.h"

#include <zlib.h>
#include <zstd.h>

#include "absl/strings/str_cat.h"
#include "exporter/status_macros.h"

namespace kspan {

absl::StatusOr<std::string> GzipCompress(std::string_view in) {
  z_stream z{};
  // 15 window bits + 16: a gzip header and trailer, as Content-Encoding: gzip needs.
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return absl::InternalError("deflateInit2 failed");
  }
  std::string out;
  out.resize(deflateBound(&z, static_cast<uLong>(in.size())));
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) return absl::InternalError("gzip compression failed");
  return out;
}

struct GzipInflater::Stream {
  z_stream z{};
  bool ok = false;
};

GzipInflater::GzipInflater() : z_(std::make_unique<Stream>()) {
  // 15 window bits + 32: a gzip or a zlib header, whichever comes.
  z_->ok = inflateInit2(&z_->z, 15 + 32) == Z_OK;
}

GzipInflater::~GzipInflater() {
  if (z_->ok) inflateEnd(&z_->z);
}

absl::Status GzipInflater::Feed(std::string_view in, std::string* out, const MayGrow& may_grow) {
  if (!z_->ok) return absl::InternalError("inflateInit2 failed");
  if (in.empty()) return absl::OkStatus();
  if (finished_) return absl::InvalidArgumentError("data after the end of the gzip stream");
  z_stream& z = z_->z;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  char buf[16 * 1024];
  while (z.avail_in > 0 && !finished_) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof(buf);
    const int rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) return absl::InvalidArgumentError("invalid gzip data");
    const std::size_t n = sizeof(buf) - z.avail_out;
    if (n > 0) {
      KSPAN_RETURN_IF_ERROR(may_grow(n));
      out->append(buf, n);
    }
    if (rc == Z_STREAM_END) {
      finished_ = true;
      if (z.avail_in > 0) return absl::InvalidArgumentError("data after the end of the gzip stream");
    } else if (rc == Z_BUF_ERROR) {
      break;  // no progress possible: the rest comes with the next piece
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> GzipDecompress(std::string_view in, std::size_t max_out) {
  GzipInflater inflater;
  std::string out;
  auto s = inflater.Feed(in, &out, [&](std::size_t more) {
    if (more > max_out - out.size()) {
      return absl::ResourceExhaustedError(absl::StrCat("gzip data inflates to more than ", max_out, " bytes"));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  if (!inflater.finished()) return absl::InvalidArgumentError("truncated gzip data");
  return out;
}

absl::StatusOr<std::string> ZstdCompress(std::string_view in) {
  std::string out;
  out.resize(ZSTD_compressBound(in.size()));
  // Level 3 (zstd's default): most of the ratio at a fraction of gzip's CPU.
  const size_t n = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 3);
  if (ZSTD_isError(n)) return absl::InternalError(ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

absl::StatusOr<std::string> ZstdDecompress(std::string_view in, std::size_t max_out) {
  ZSTD_DCtx* ctx = ZSTD_createDCtx();
  if (ctx == nullptr) return absl::InternalError("ZSTD_createDCtx failed");
  ZSTD_inBuffer input{in.data(), in.size(), 0};
  std::string out;
  char buf[64 * 1024];
  size_t rc = 0;
  // Until the input is consumed and the decoder holds nothing more to flush:
  // a full output buffer means it may, unless the call ended a frame (rc 0:
  // "completely decoded and fully flushed"; calling again would begin
  // another frame and ask for its header, so a frame of exactly the
  // buffer's size would read as truncated).
  bool full = false;
  do {
    ZSTD_outBuffer output{buf, sizeof(buf), 0};
    rc = ZSTD_decompressStream(ctx, &output, &input);
    if (ZSTD_isError(rc)) {
      ZSTD_freeDCtx(ctx);
      return absl::InvalidArgumentError(ZSTD_getErrorName(rc));
    }
    if (output.pos > max_out - out.size()) {
      ZSTD_freeDCtx(ctx);
      return absl::ResourceExhaustedError(
          absl::StrCat("zstd data decompresses to more than ", max_out, " bytes"));
    }
    out.append(buf, output.pos);
    full = output.pos == output.size;
  } while (input.pos < input.size || (full && rc != 0));
  ZSTD_freeDCtx(ctx);
  if (rc != 0) return absl::InvalidArgumentError("truncated zstd data");
  return out;
}

}  // namespace kspan
