// The SQLite backend: one file in store.data_dir, WAL, synchronous=FULL, foreign keys on.
#include <sqlite3.h>

#include <cctype>
#include <filesystem>
#include <thread>
#include <unordered_map>

#include "records_sql.hpp"

namespace agentd::store::sql {
namespace {

DbError error_from(sqlite3* db, int rc, const std::string& what) {
  int ext = db ? sqlite3_extended_errcode(db) : rc;
  std::string message = what + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  switch (ext) {
    case SQLITE_CONSTRAINT_FOREIGNKEY:
      return {DbError::Kind::foreign_key, message};
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_UNIQUE:
      return {DbError::Kind::unique, message};
    case SQLITE_CONSTRAINT_CHECK:
    case SQLITE_CONSTRAINT_NOTNULL:
    case SQLITE_CONSTRAINT_DATATYPE:
      return {DbError::Kind::invalid, message};
    default:
      break;
  }
  switch (ext & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return {DbError::Kind::busy, message};
    // Storage trouble: the caller gets `unavailable`; the connection is reopened next time.
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_NOTADB:
      return {DbError::Kind::broken, message};
    case SQLITE_CONSTRAINT:
      return {DbError::Kind::invalid, message};
    default:
      return {DbError::Kind::other, message};
  }
}

class SqliteConn final : public Conn {
 public:
  SqliteConn(const std::string& path, int flags, Access role, std::chrono::milliseconds busy) {
    int rc = sqlite3_open_v2(path.c_str(), &db_, flags | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      DbError e(DbError::Kind::connect,
                "open " + path + ": " + (db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc)));
      sqlite3_close(db_);
      db_ = nullptr;
      throw e;
    }
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, static_cast<int>(busy.count()));
    try {
      if (role != Access::read) set_wal(path, busy);
      // FULL: the WAL is synced at every commit, so an acknowledged write survives a power
      // cut, not only a crash of agentd.
      exec("PRAGMA synchronous=FULL");
      exec("PRAGMA foreign_keys=ON");
      // SQLite's default page cache is 2 MB per connection; what it misses comes from the
      // kernel's page cache, one pread per page. The writer mostly appends (ids and times
      // grow), so 512 KB keeps the hot right edges of its b-trees; readers get 1 MB.
      exec(role == Access::read ? "PRAGMA cache_size=-1024" : "PRAGMA cache_size=-512");
      if (role == Access::read) exec("PRAGMA query_only=ON");
    } catch (const DbError& e) {
      close();
      throw DbError(DbError::Kind::connect, e.what());
    }
  }
  ~SqliteConn() override { close(); }

  void begin(Access access) override {
    // IMMEDIATE takes the write lock now (waiting up to busy_timeout) instead of failing
    // with SQLITE_BUSY halfway through when a read would have to become a write.
    exec(access == Access::read      ? "BEGIN"
         : access == Access::migrate ? "BEGIN EXCLUSIVE"
                                     : "BEGIN IMMEDIATE");
  }
  void commit() override { exec("COMMIT"); }
  void rollback() noexcept override {
    if (db_ && !sqlite3_get_autocommit(db_))
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }

  Rows query(const std::string& sql, const Params& params) override {
    sqlite3_stmt* st = statement(sql);
    struct Reset {
      sqlite3_stmt* s;
      ~Reset() {
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
      }
    } reset{st};
    for (std::size_t i = 0; i < params.size(); ++i) {
      int idx = static_cast<int>(i + 1);
      int rc = SQLITE_OK;
      if (const auto* n = std::get_if<std::int64_t>(&params[i])) {
        rc = sqlite3_bind_int64(st, idx, *n);
      } else if (const auto* s = std::get_if<std::string>(&params[i])) {
        rc = sqlite3_bind_text64(st, idx, s->data(), s->size(), SQLITE_TRANSIENT, SQLITE_UTF8);
      } else {
        rc = sqlite3_bind_null(st, idx);
      }
      if (rc != SQLITE_OK && rc != SQLITE_RANGE) throw error_from(db_, rc, "bind");
    }
    Rows rows;
    for (;;) {
      int rc = sqlite3_step(st);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) throw note(error_from(db_, rc, "query"));
      Row row;
      int n = sqlite3_column_count(st);
      row.cols.reserve(static_cast<std::size_t>(n));
      for (int c = 0; c < n; ++c) {
        if (sqlite3_column_type(st, c) == SQLITE_NULL) {
          row.cols.emplace_back();
        } else {
          const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(st, c));
          row.cols.emplace_back(
              std::string(text, static_cast<std::size_t>(sqlite3_column_bytes(st, c))));
        }
      }
      rows.push_back(std::move(row));
    }
    return rows;
  }

  void exec_script(const std::string& sql) override { exec(sql.c_str()); }

  // WAL: readers never block the writer, and one fsync per commit. It is a property of the
  // file, so writers set it and readers inherit it. Switching needs an exclusive lock, and
  // SQLite answers BUSY at once (no busy handler) while another process holds any lock, as
  // when two instances open a new file together: retry up to the busy timeout.
  void set_wal(const std::string& path, std::chrono::milliseconds busy) {
    auto deadline = std::chrono::steady_clock::now() + busy;
    for (;;) {
      try {
        auto rows = query("PRAGMA journal_mode=WAL", {});
        if (!rows.empty() && rows.front().text(0) == "wal") return;
        throw DbError(DbError::Kind::connect, "open " + path + ": cannot switch to WAL");
      } catch (const DbError& e) {
        if (e.kind != DbError::Kind::busy || std::chrono::steady_clock::now() >= deadline) throw;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  bool usable() const noexcept override { return db_ != nullptr && !broken_; }

 private:
  void exec(const char* sql) {
    char* msg = nullptr;
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &msg);
    sqlite3_free(msg);
    if (rc != SQLITE_OK) throw note(error_from(db_, rc, "exec"));
  }
  DbError note(DbError e) {
    if (e.kind == DbError::Kind::broken) broken_ = true;
    return e;
  }

  sqlite3_stmt* statement(const std::string& sql) {
    auto it = cache_.find(sql);
    if (it != cache_.end()) return it->second;
    std::string text = sqlite_statement(sql);
    sqlite3_stmt* st = nullptr;
    int rc = sqlite3_prepare_v3(db_, text.c_str(), static_cast<int>(text.size()),
                                SQLITE_PREPARE_PERSISTENT, &st, nullptr);
    if (rc != SQLITE_OK) throw note(error_from(db_, rc, "prepare"));
    cache_.emplace(sql, st);
    return st;
  }

  void close() noexcept {
    for (auto& kv : cache_) sqlite3_finalize(kv.second);
    cache_.clear();
    if (db_) sqlite3_close(db_);
    db_ = nullptr;
  }

  sqlite3* db_ = nullptr;
  bool broken_ = false;
  std::unordered_map<std::string, sqlite3_stmt*> cache_;
};

}  // namespace

std::string sqlite_path(const RecordsConfig& config) {
  return (std::filesystem::path(config.data_dir) / "agentd.db").string();
}

std::string sqlite_statement(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  bool quoted = false;
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '\'') quoted = !quoted;
    if (quoted) {
      out += c;
    } else if (c == '$' && i + 1 < in.size() &&
               std::isdigit(static_cast<unsigned char>(in[i + 1]))) {
      out += '?';  // ?N binds parameter N wherever it appears, like $N
    } else if (c == ':' && i + 1 < in.size() && in[i + 1] == ':') {
      i += 2;  // drop "::type": SQLite's columns already have the types
      while (i < in.size() && (std::isalnum(static_cast<unsigned char>(in[i])) || in[i] == '_'))
        ++i;
      --i;
    } else {
      out += c;
    }
  }
  return out;
}

Connector sqlite_connector(const RecordsConfig& config) {
  std::string path = sqlite_path(config);
  auto busy = config.busy_timeout;
  return [path, busy](Access role) -> std::unique_ptr<Conn> {
    return std::make_unique<SqliteConn>(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, role,
                                        busy);
  };
}

std::unique_ptr<Conn> sqlite_open_existing_readonly(const RecordsConfig& config) {
  std::string path = sqlite_path(config);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return nullptr;
  return std::make_unique<SqliteConn>(path, SQLITE_OPEN_READONLY, Access::read,
                                      config.busy_timeout);
}

}  // namespace agentd::store::sql
