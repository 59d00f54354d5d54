// The local store: OTLP/JSON, one ExportTraceServiceRequest per line (the
// format the OpenTelemetry Collector's file exporter writes and its otlpjson
// receiver reads), appended to a file that rotates to <path>.1.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "exporter/export_config.h"
#include "exporter/sender.h"

namespace kspan {

class FileStoreSender final : public SpanSender {
 public:
  // Creates the parent directories and opens the file for appending.
  static absl::StatusOr<std::unique_ptr<FileStoreSender>> Create(const FileStoreOptions& options);
  ~FileStoreSender() override;

  // Disk errors are retryable (a full disk may get space back); a line is
  // never left half-written.
  ExportResult Send(const SpanBatch& batch, Clock::time_point deadline) override;

 private:
  explicit FileStoreSender(const FileStoreOptions& options);
  absl::Status Open();
  absl::Status Rotate();

  FileStoreOptions options_;
  int fd_ = -1;  // O_APPEND; plain write(2) so a failed write leaves no buffered tail
  std::size_t size_ = 0;
};

}  // namespace kspan
