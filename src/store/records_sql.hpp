// What the SQLite and PostgreSQL backends share: a connection interface with typed
// parameters, database errors by kind, the executor that runs repository work on the blocking
// pool through a bounded connection pool, and the migration runner.
#pragma once

#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <variant>

#include "agentd/store/records.hpp"

namespace agentd::store::sql {

enum class Dialect { sqlite, postgres };

// Integers bind as integers (SQLite compares them by type); everything else is text.
using Param = std::variant<std::nullptr_t, std::int64_t, std::string>;
using Params = std::vector<Param>;

struct Row {
  std::vector<std::optional<std::string>> cols;
  bool null(std::size_t i) const { return !cols.at(i); }
  std::string text(std::size_t i) const { return cols.at(i).value_or(std::string()); }
  std::int64_t integer(std::size_t i) const;  // 0 for NULL; throws on a non-number
};
using Rows = std::vector<Row>;

// read: a snapshot; write: takes the write lock at begin (SQLite BEGIN IMMEDIATE);
// migrate: exclusive (SQLite BEGIN EXCLUSIVE).
enum class Access { read, write, migrate };

// Every failure a connection reports, sorted by what the executor does with it.
struct DbError : std::runtime_error {
  enum class Kind {
    connect,      // could not connect: the database is down or refuses us
    broken,       // the connection died (or the server is shutting down): reconnect
    retry,        // serialization failure or deadlock: run the transaction again
    busy,         // locked beyond the busy/lock timeout
    timeout,      // statement timeout
    unique,       // unique or primary key violation
    foreign_key,  // a referenced row does not exist
    invalid,      // check / not-null / malformed value
    other,
  };
  DbError(Kind k, const std::string& message, std::string state = {})
      : std::runtime_error(message), kind(k), sqlstate(std::move(state)) {}
  Kind kind;
  std::string sqlstate;
};

// One connection. Used by one thread at a time; all calls may throw DbError.
class Conn {
 public:
  virtual ~Conn() = default;
  virtual void begin(Access access) = 0;
  virtual void commit() = 0;
  virtual void rollback() noexcept = 0;
  // One statement written for PostgreSQL ($1 placeholders, ::type casts); the SQLite backend
  // rewrites it. Statements are prepared once per connection.
  virtual Rows query(const std::string& sql, const Params& params) = 0;
  // Several statements without parameters (migrations), inside the current transaction.
  virtual void exec_script(const std::string& sql) = 0;
  virtual bool usable() const noexcept = 0;
};

// Opens a connection; runs on a blocking-pool thread; throws DbError(connect) on failure.
using Connector = std::function<std::unique_ptr<Conn>(Access)>;

// Backend-specific connectors (sqlite.cpp, postgres.cpp).
std::string sqlite_path(const RecordsConfig& config);
Connector sqlite_connector(const RecordsConfig& config);
// The SQLite form of a PostgreSQL-flavoured statement: $N -> ?N, ::type casts dropped.
std::string sqlite_statement(std::string_view pg_sql);
// Opens an existing database file read-only; nullptr when the file does not exist.
std::unique_ptr<Conn> sqlite_open_existing_readonly(const RecordsConfig& config);
Connector postgres_connector(const RecordsConfig& config);
std::string postgres_conninfo(const RecordsConfig& config);
std::string redact_conninfo(const std::string& conninfo);

// A repository body: runs inside one transaction; a non-empty error code rolls back.
// It must be idempotent when `idempotent` is passed to run() (it may run again after the
// connection dropped with the commit outcome unknown).
using Body = std::function<boost::system::error_code(Conn&)>;

// Runs bodies on the blocking pool, each on a connection leased from a bounded pool (callers
// beyond it wait on the loop, up to pool_timeout) or, for writes with a writer pool (SQLite),
// group-committed by one writer loop (work_batch in records.cpp); retries serialization
// failures and deadlocks, reconnects once on a dropped connection for idempotent work, and fails fast with
// unavailable while the database is down (then tries again after a short backoff).
class Executor {
 public:
  // `write_slots` > 0 gives writes their own pool (SQLite's single writer); 0 shares one.
  Executor(std::string backend, Connector connect, std::size_t read_slots, std::size_t write_slots,
           std::chrono::milliseconds pool_timeout, core::BlockingPool& pool,
           core::Registry& metrics);
  ~Executor();

  asio::awaitable<boost::system::error_code> run(const char* op, Access access, bool idempotent,
                                                 Body body);
  RecordsHealth health() const;
  const std::string& backend() const noexcept;

  struct State;
  struct PendingWrite;
  // With a writer pool (SQLite) writes are group-committed: the writer takes every write
  // waiting for it, up to this many, into one transaction with one commit.
  static constexpr std::size_t kMaxWriteBatch = 256;

 private:
  asio::awaitable<boost::system::error_code> group_write(std::shared_ptr<State> st,
                                                         const char* op, bool idempotent,
                                                         Body body);
  std::shared_ptr<State> state_;
  core::BlockingPool& pool_;
};

// One numbered migration, compiled in (migrations.cpp).
struct Migration {
  int version;
  const char* name;
  const char* sql;
};
const std::vector<Migration>& migrations(Dialect d);

// Applies pending migrations on `conn` under the cross-instance lock (PostgreSQL advisory
// lock; SQLite BEGIN EXCLUSIVE per migration). Throws std::runtime_error.
void apply_migrations(Conn& conn, Dialect d, std::chrono::milliseconds lock_timeout);
// Reads the state; `conn` may be null (no database yet: everything pending).
std::vector<MigrationInfo> read_migrations(Conn* conn, Dialect d);

}  // namespace agentd::store::sql
