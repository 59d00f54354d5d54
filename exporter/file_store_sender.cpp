#include "exporter/file_store_sender.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "exporter/otlp_json_writer.h"
#include "exporter/private_files.h"
#include "exporter/status_macros.h"
#include "spdlog/spdlog.h"

namespace kspan {
namespace {

std::string ErrnoName(int err) {
  switch (err) {
    case ENOSPC: return "ENOSPC";
    case EDQUOT: return "EDQUOT";
    case EACCES: return "EACCES";
    case EROFS: return "EROFS";
    case ENOENT: return "ENOENT";
    default: return "EIO";
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<FileStoreSender>> FileStoreSender::Create(
    const FileStoreOptions& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("file store: path is empty");
  std::unique_ptr<FileStoreSender> sender(new FileStoreSender(options));
  KSPAN_RETURN_IF_ERROR(sender->Open());
  spdlog::info("file store: appending OTLP/JSON to {}", options.path);
  return sender;
}

FileStoreSender::FileStoreSender(const FileStoreOptions& options) : options_(options) {}

FileStoreSender::~FileStoreSender() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status FileStoreSender::Open() {
  const std::filesystem::path path(options_.path);
  if (path.has_parent_path()) {
    if (auto s = CreatePrivateDirectories(path.parent_path().string()); !s.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("file store: ", s.message()));
    }
  }
  // Span data: the owner's only (exporter/private_files.h).
  fd_ = ::open(options_.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("file store: cannot open ", options_.path, ": ", std::strerror(errno)));
  }
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  size_ = ec ? 0 : static_cast<std::size_t>(size);
  return absl::OkStatus();
}

absl::Status FileStoreSender::Rotate() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  std::error_code ec;
  // One generation kept: the previous <path>.1 is replaced.
  std::filesystem::rename(options_.path, options_.path + ".1", ec);
  if (ec) {
    spdlog::warn("file store: cannot rotate {}: {}", options_.path, ec.message());
  }
  return Open();
}

ExportResult FileStoreSender::Send(const SpanBatch& batch, Clock::time_point /*deadline*/) {
  // One encoder and line buffer per sending thread, reused from batch to
  // batch: encoding then allocates nothing once they have grown to the
  // largest batch (they keep that much memory).
  thread_local OtlpJsonEncoder encoder;
  thread_local std::string line;
  encoder.Encode(batch.spans, line);
  line += '\n';

  if (fd_ < 0 || (options_.max_bytes > 0 && size_ > 0 &&
                  size_ + line.size() > options_.max_bytes)) {
    if (auto s = fd_ < 0 ? Open() : Rotate(); !s.ok()) {
      return ExportResult::Retryable("EIO", std::string(s.message()));
    }
  }

  std::size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      // Cut a partial line off so the file stays one JSON document per line.
      if (done > 0 && ::ftruncate(fd_, static_cast<off_t>(size_)) != 0) {
        spdlog::warn("file store: cannot truncate {} after a failed write", options_.path);
      }
      return ExportResult::Retryable(
          ErrnoName(err), absl::StrCat("write ", options_.path, ": ", std::strerror(err)));
    }
    done += static_cast<std::size_t>(n);
  }
  size_ += line.size();
  return ExportResult::Success();
}

}  // namespace kspan
