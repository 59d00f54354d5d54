#include "exporter/dead_letter_store.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "exporter/status_macros.h"

namespace kspan {

absl::StatusOr<std::unique_ptr<DeadLetterStore>> DeadLetterStore::Open(const std::string& path,
                                                                       std::size_t max_bytes) {
  // Dead letters are rare and precious: every one is fsynced.
  auto db = SqliteDb::Open(path, "FULL");
  if (!db.ok()) return db.status();
  std::unique_ptr<DeadLetterStore> store(new DeadLetterStore(max_bytes, *std::move(db)));
  KSPAN_RETURN_IF_ERROR(
      store->db_->Exec("CREATE TABLE IF NOT EXISTS dead_letters ("
                       " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                       " destination TEXT NOT NULL, reason TEXT NOT NULL, code TEXT NOT NULL,"
                       " message TEXT NOT NULL, created_unix_ms INTEGER NOT NULL,"
                       " spans INTEGER NOT NULL, payload BLOB NOT NULL)"));
  auto st = store->db_->Prepare("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM dead_letters");
  if (!st.ok()) return st.status();
  if ((*st)->Step() == SQLITE_ROW) store->bytes_ = static_cast<std::size_t>((*st)->Int(0));
  return store;
}

absl::StatusOr<std::size_t> DeadLetterStore::Put(const DeadLetter& meta,
                                                 const std::string& payload) {
  std::lock_guard lock(mu_);
  if (max_bytes_ > 0 && payload.size() > max_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        db_->path(), ": batch of ", payload.size(), " bytes exceeds the dead-letter bound"));
  }
  KSPAN_RETURN_IF_ERROR(db_->Exec("BEGIN IMMEDIATE"));
  auto fail = [&](absl::Status s) {
    (void)db_->Exec("ROLLBACK");
    return s;
  };
  std::size_t evicted = 0;
  std::size_t bytes = bytes_;
  if (max_bytes_ > 0) {
    auto oldest = db_->Prepare("SELECT id, LENGTH(payload) FROM dead_letters ORDER BY id");
    if (!oldest.ok()) return fail(oldest.status());
    auto del = db_->Prepare("DELETE FROM dead_letters WHERE id = ?1");
    if (!del.ok()) return fail(del.status());
    std::vector<std::pair<std::int64_t, std::size_t>> victims;
    while (bytes + payload.size() > max_bytes_ && (*oldest)->Step() == SQLITE_ROW) {
      victims.emplace_back((*oldest)->Int(0), static_cast<std::size_t>((*oldest)->Int(1)));
      bytes -= std::min(bytes, victims.back().second);
    }
    (*oldest)->Reset();
    for (const auto& [id, size] : victims) {
      (*del)->Reset();
      (*del)->Bind(1, id);
      if (const int rc = (*del)->Step(); rc != SQLITE_DONE) return fail(db_->Error(rc, "evict"));
      ++evicted;
    }
  }
  auto ins = db_->Prepare(
      "INSERT INTO dead_letters(destination, reason, code, message, created_unix_ms, spans,"
      " payload) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)");
  if (!ins.ok()) return fail(ins.status());
  const std::int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count();
  (*ins)->Bind(1, meta.destination);
  (*ins)->Bind(2, meta.reason);
  (*ins)->Bind(3, meta.code);
  (*ins)->Bind(4, meta.message);
  (*ins)->Bind(5, meta.created_unix_ms != 0 ? meta.created_unix_ms : now_ms);
  (*ins)->Bind(6, static_cast<std::int64_t>(meta.spans));
  (*ins)->BindBlob(7, payload);
  if (const int rc = (*ins)->Step(); rc != SQLITE_DONE) return fail(db_->Error(rc, "insert"));
  if (auto s = db_->Exec("COMMIT"); !s.ok()) return fail(s);
  bytes_ = bytes + payload.size();
  return evicted;
}

absl::StatusOr<std::vector<DeadLetter>> DeadLetterStore::List() {
  std::lock_guard lock(mu_);
  auto st = db_->Prepare(
      "SELECT id, destination, reason, code, message, created_unix_ms, spans, LENGTH(payload)"
      " FROM dead_letters ORDER BY id");
  if (!st.ok()) return st.status();
  std::vector<DeadLetter> out;
  int rc;
  while ((rc = (*st)->Step()) == SQLITE_ROW) {
    DeadLetter d;
    d.id = (*st)->Int(0);
    d.destination = (*st)->Text(1);
    d.reason = (*st)->Text(2);
    d.code = (*st)->Text(3);
    d.message = (*st)->Text(4);
    d.created_unix_ms = (*st)->Int(5);
    d.spans = static_cast<std::size_t>((*st)->Int(6));
    d.bytes = static_cast<std::size_t>((*st)->Int(7));
    out.push_back(std::move(d));
  }
  if (rc != SQLITE_DONE) return db_->Error(rc, "list");
  return out;
}

absl::StatusOr<std::string> DeadLetterStore::Load(std::int64_t id) {
  std::lock_guard lock(mu_);
  auto st = db_->Prepare("SELECT payload FROM dead_letters WHERE id = ?1");
  if (!st.ok()) return st.status();
  (*st)->Bind(1, id);
  if ((*st)->Step() != SQLITE_ROW) return absl::NotFoundError(absl::StrCat("dead letter ", id));
  return (*st)->Blob(0);
}

absl::Status DeadLetterStore::Remove(std::int64_t id) {
  std::lock_guard lock(mu_);
  auto size = db_->Prepare("SELECT LENGTH(payload) FROM dead_letters WHERE id = ?1");
  if (!size.ok()) return size.status();
  (*size)->Bind(1, id);
  std::size_t n = 0;
  if ((*size)->Step() == SQLITE_ROW) n = static_cast<std::size_t>((*size)->Int(0));
  auto st = db_->Prepare("DELETE FROM dead_letters WHERE id = ?1");
  if (!st.ok()) return st.status();
  (*st)->Bind(1, id);
  if (const int rc = (*st)->Step(); rc != SQLITE_DONE) return db_->Error(rc, "remove");
  bytes_ -= std::min(bytes_, n);
  return absl::OkStatus();
}

std::size_t DeadLetterStore::bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

}  // namespace kspan
