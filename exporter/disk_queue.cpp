#include "exporter/disk_queue.h"

#include <algorithm>
#include <climits>

#include "absl/strings/str_cat.h"
#include "exporter/otlp_transform.h"
#include "exporter/status_macros.h"

namespace kspan {

std::string_view FsyncPragma(FsyncPolicy policy) {
  switch (policy) {
    case FsyncPolicy::kFull: return "FULL";
    case FsyncPolicy::kNormal: return "NORMAL";
    case FsyncPolicy::kOff: return "OFF";
  }
  return "FULL";
}

std::optional<std::vector<Span>> DecodeStoredBatch(std::string_view payload) {
  otlp::ExportTraceServiceRequest request;
  if (payload.size() > static_cast<std::size_t>(INT_MAX) ||
      !request.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return std::nullopt;
  }
  return FromExportRequest(request);
}

absl::StatusOr<std::unique_ptr<DiskQueue>> DiskQueue::Open(const DiskQueueOptions& options) {
  auto db = SqliteDb::Open(options.path, FsyncPragma(options.fsync));
  if (!db.ok()) return db.status();
  std::unique_ptr<DiskQueue> q(new DiskQueue(options, *std::move(db)));
  KSPAN_RETURN_IF_ERROR(q->Prepare());
  return q;
}

absl::Status DiskQueue::Prepare() {
  KSPAN_RETURN_IF_ERROR(
      db_->Exec("CREATE TABLE IF NOT EXISTS batches ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " spans INTEGER NOT NULL,"
                " attempts INTEGER NOT NULL DEFAULT 0,"
                " payload BLOB NOT NULL)"));
  auto prep = [&](std::string_view sql, std::unique_ptr<SqliteStatement>* out) -> absl::Status {
    auto st = db_->Prepare(sql);
    if (!st.ok()) return st.status();
    *out = *std::move(st);
    return absl::OkStatus();
  };
  KSPAN_RETURN_IF_ERROR(prep("INSERT INTO batches(spans, payload) VALUES(?1, ?2)", &insert_));
  KSPAN_RETURN_IF_ERROR(prep("SELECT payload FROM batches WHERE id = ?1", &load_));
  KSPAN_RETURN_IF_ERROR(
      prep("UPDATE batches SET attempts = attempts + 1 WHERE id = ?1", &attempt_));
  KSPAN_RETURN_IF_ERROR(prep("DELETE FROM batches WHERE id = ?1", &remove_));
  auto total = db_->Prepare("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM batches");
  if (!total.ok()) return total.status();
  if ((*total)->Step() == SQLITE_ROW) {
    batches_ = static_cast<std::size_t>((*total)->Int(0));
    bytes_ = static_cast<std::size_t>((*total)->Int(1));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::int64_t>> DiskQueue::Append(const std::vector<Item>& items) {
  std::lock_guard lock(mu_);
  std::size_t add = 0;
  for (const auto& it : items) add += it.payload.size();
  if (options_.max_bytes > 0 && bytes_ + add > options_.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(options_.path, ": disk queue full (",
                                                     bytes_, " of ", options_.max_bytes, " bytes)"));
  }
  KSPAN_RETURN_IF_ERROR(db_->Exec("BEGIN IMMEDIATE"));
  std::vector<std::int64_t> ids;
  ids.reserve(items.size());
  for (const auto& it : items) {
    insert_->Reset();
    insert_->Bind(1, static_cast<std::int64_t>(it.spans));
    insert_->BindBlob(2, it.payload);
    const int rc = insert_->Step();
    insert_->Reset();
    if (rc != SQLITE_DONE) {
      auto err = db_->Error(rc, "insert");
      (void)db_->Exec("ROLLBACK");
      return err;
    }
    ids.push_back(sqlite3_last_insert_rowid(db_->raw()));
  }
  if (auto s = db_->Exec("COMMIT"); !s.ok()) {
    (void)db_->Exec("ROLLBACK");
    return s;
  }
  bytes_ += add;
  batches_ += items.size();
  return ids;
}

absl::StatusOr<std::vector<DiskQueue::Row>> DiskQueue::List() {
  std::lock_guard lock(mu_);
  auto st = db_->Prepare("SELECT id, spans, LENGTH(payload), attempts FROM batches ORDER BY id");
  if (!st.ok()) return st.status();
  std::vector<Row> rows;
  int rc;
  while ((rc = (*st)->Step()) == SQLITE_ROW) {
    rows.push_back({(*st)->Int(0), static_cast<std::size_t>((*st)->Int(1)),
                    static_cast<std::size_t>((*st)->Int(2)), (*st)->Int(3)});
  }
  if (rc != SQLITE_DONE) return db_->Error(rc, "list");
  return rows;
}

absl::StatusOr<std::string> DiskQueue::Load(std::int64_t id) {
  std::lock_guard lock(mu_);
  load_->Reset();
  load_->Bind(1, id);
  const int rc = load_->Step();
  if (rc != SQLITE_ROW) {
    load_->Reset();
    if (rc == SQLITE_DONE) return absl::NotFoundError(absl::StrCat("batch ", id, " not found"));
    return db_->Error(rc, "load");
  }
  std::string payload = load_->Blob(0);
  load_->Reset();
  return payload;
}

absl::Status DiskQueue::MarkAttempted(std::int64_t id) {
  std::lock_guard lock(mu_);
  attempt_->Reset();
  attempt_->Bind(1, id);
  const int rc = attempt_->Step();
  attempt_->Reset();
  return rc == SQLITE_DONE ? absl::OkStatus() : db_->Error(rc, "mark attempted");
}

absl::Status DiskQueue::Remove(std::int64_t id, std::size_t bytes) {
  std::lock_guard lock(mu_);
  remove_->Reset();
  remove_->Bind(1, id);
  const int rc = remove_->Step();
  remove_->Reset();
  if (rc != SQLITE_DONE) return db_->Error(rc, "remove");
  if (sqlite3_changes(db_->raw()) > 0) {
    bytes_ -= std::min(bytes_, bytes);
    if (batches_ > 0) --batches_;
  }
  return absl::OkStatus();
}

std::size_t DiskQueue::bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

std::size_t DiskQueue::batches() const {
  std::lock_guard lock(mu_);
  return batches_;
}

}  // namespace kspan
