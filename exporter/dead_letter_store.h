// The dead-letter store: batches a destination gave up on (the backend
// refused them permanently, or max elapsed time ran out), kept on disk in
// SQLite as OTLP protobuf so `kspan dlq replay` can send them again later.
// Bounded by bytes: beyond it the oldest entries are evicted (counted).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "exporter/sqlite_db.h"

namespace kspan {

struct DeadLetter {
  std::int64_t id = 0;
  std::string destination;
  std::string reason;   // permanent_error | retry_exhausted
  std::string code;     // e.g. INVALID_ARGUMENT, HTTP 400
  std::string message;  // the backend's message (no payload)
  std::int64_t created_unix_ms = 0;
  std::size_t spans = 0;
  std::size_t bytes = 0;
};

class DeadLetterStore {
 public:
  static absl::StatusOr<std::unique_ptr<DeadLetterStore>> Open(const std::string& path,
                                                               std::size_t max_bytes);

  // Stores one batch; evicts the oldest entries if needed to stay within
  // max_bytes (their number is returned). Fails if the batch alone is larger
  // than max_bytes or the disk refuses it.
  absl::StatusOr<std::size_t> Put(const DeadLetter& meta, const std::string& payload);
  absl::StatusOr<std::vector<DeadLetter>> List();
  absl::StatusOr<std::string> Load(std::int64_t id);
  absl::Status Remove(std::int64_t id);
  std::size_t bytes() const;

 private:
  DeadLetterStore(std::size_t max_bytes, std::unique_ptr<SqliteDb> db)
      : max_bytes_(max_bytes), db_(std::move(db)) {}

  const std::size_t max_bytes_;
  mutable std::mutex mu_;
  std::unique_ptr<SqliteDb> db_;
  std::size_t bytes_ = 0;
};

}  // namespace kspan
