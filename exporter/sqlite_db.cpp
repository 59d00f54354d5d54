#include "exporter/sqlite_db.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "exporter/private_files.h"
#include "exporter/status_macros.h"

namespace kspan {

absl::StatusOr<std::unique_ptr<SqliteDb>> SqliteDb::Open(const std::string& path,
                                                         std::string_view synchronous) {
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    KSPAN_RETURN_IF_ERROR(CreatePrivateDirectories(parent.string()));
  }
  // SQLite creates a database 0644 (less the umask) and gives its -wal and
  // -shm the database's mode: created here 0600 first, all three are the
  // owner's only. An empty file is an empty database to SQLite.
  KSPAN_RETURN_IF_ERROR(CreatePrivateFile(path));
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  std::unique_ptr<SqliteDb> db(new SqliteDb(path, raw));
  if (rc != SQLITE_OK) return db->Error(rc, "open");
  sqlite3_busy_timeout(raw, 5000);
  // WAL: a commit is one append to the log, readers never block the writer,
  // and a killed process leaves a log that the next open replays.
  KSPAN_RETURN_IF_ERROR(db->Exec("PRAGMA journal_mode=WAL"));
  KSPAN_RETURN_IF_ERROR(db->Exec(absl::StrCat("PRAGMA synchronous=", std::string(synchronous))));
  return db;
}

SqliteDb::~SqliteDb() { sqlite3_close_v2(db_); }

absl::Status SqliteDb::Exec(std::string_view sql) {
  char* err = nullptr;
  const int rc = sqlite3_exec(db_, std::string(sql).c_str(), nullptr, nullptr, &err);
  sqlite3_free(err);
  if (rc != SQLITE_OK) return Error(rc, sql.substr(0, 40));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SqliteStatement>> SqliteDb::Prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) return Error(rc, "prepare");
  return std::make_unique<SqliteStatement>(db_, stmt);
}

absl::Status SqliteDb::Error(int rc, std::string_view what) const {
  const std::string msg = absl::StrCat(path_, ": ", std::string(what), ": ", sqlite3_errstr(rc));
  switch (rc & 0xff) {
    case SQLITE_FULL: return absl::ResourceExhaustedError(msg);
    case SQLITE_IOERR:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return absl::UnavailableError(msg);
    default: return absl::InternalError(msg);
  }
}

}  // namespace kspan
