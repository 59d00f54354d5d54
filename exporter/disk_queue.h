// The crash-safe part of a destination's queue: serialized batches (OTLP
// protobuf ExportTraceServiceRequest) in SQLite, WAL mode. A batch counts as
// accepted once Append() returned: the row is committed, so it survives
// kill -9 (and, with fsync FULL, power loss). Rows are removed only after the
// destination accepted them or they went to the dead-letter store:
// delivery is at-least-once; `attempts` tells after a restart which rows may
// already have been delivered (possible duplicates).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "exporter/export_config.h"
#include "exporter/span.h"
#include "exporter/sqlite_db.h"

namespace kspan {

class DiskQueue {
 public:
  struct Row {
    std::int64_t id = 0;
    std::size_t spans = 0;
    std::size_t bytes = 0;
    std::int64_t attempts = 0;  // sends started before (a previous run's included)
  };
  struct Item {
    std::string payload;
    std::size_t spans = 0;
  };

  static absl::StatusOr<std::unique_ptr<DiskQueue>> Open(const DiskQueueOptions& options);

  // One transaction for all items. ResourceExhausted when max_bytes would be
  // exceeded or the disk is full; Unavailable when the file is unwritable.
  // Nothing is stored on error.
  absl::StatusOr<std::vector<std::int64_t>> Append(const std::vector<Item>& items);
  // Every row, oldest first (start-up recovery).
  absl::StatusOr<std::vector<Row>> List();
  absl::StatusOr<std::string> Load(std::int64_t id);
  absl::Status MarkAttempted(std::int64_t id);
  // `bytes`: the row's payload size (Row::bytes), for the running total.
  absl::Status Remove(std::int64_t id, std::size_t bytes);

  std::size_t bytes() const;
  std::size_t batches() const;
  const std::string& path() const { return options_.path; }

 private:
  DiskQueue(const DiskQueueOptions& options, std::unique_ptr<SqliteDb> db)
      : options_(options), db_(std::move(db)) {}
  absl::Status Prepare();

  const DiskQueueOptions options_;
  mutable std::mutex mu_;  // one connection, used from several threads
  std::unique_ptr<SqliteDb> db_;
  std::unique_ptr<SqliteStatement> insert_, load_, attempt_, remove_;
  std::size_t bytes_ = 0;
  std::size_t batches_ = 0;
};

std::string_view FsyncPragma(FsyncPolicy policy);

// A stored batch (a disk-queue row's payload, or a dead letter's) back into
// spans, kernel and app spans told apart by their scope as
// FromExportRequest() does; nullopt when the bytes are not an
// ExportTraceServiceRequest (a corrupted row). The file is only as trusted as
// the disk, so this is one of the parsers tests/fuzz covers.
std::optional<std::vector<Span>> DecodeStoredBatch(std::string_view payload);

}  // namespace kspan
