// Numbered schema migrations per dialect, compiled in, applied under a cross-instance lock.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <set>

#include "records_sql.hpp"

namespace agentd::store::sql {
namespace {

// clang-format off
// Append new migrations at the end of both lists with the next number; never edit one that
// has shipped (its checksum is recorded and a change is reported by `migrate --status`).
const std::vector<Migration> kSqlite = {
    {1, "init",
#include "migrations/sqlite/0001_init.sql"
    },
};

const std::vector<Migration> kPostgres = {
    {1, "init",
#include "migrations/postgres/0001_init.sql"
    },
};
// clang-format on

// Any fixed 64-bit key: instances of agentd serialise their migrations on it.
constexpr std::int64_t kAdvisoryLockKey = 0x6167656e7464;  // "agentd"

constexpr const char* kCreateTable =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER NOT NULL PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " checksum TEXT NOT NULL,"
    " applied_at BIGINT NOT NULL)";

std::string checksum(const char* sql) {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a: change detection, not security
  for (const char* p = sql; *p; ++p) {
    h ^= static_cast<unsigned char>(*p);
    h *= 1099511628211ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

struct Applied {
  int version;
  std::string name;
  std::string checksum;
  TimeMs at;
};

std::vector<Applied> applied_rows(Conn& conn) {
  std::vector<Applied> out;
  for (const auto& r : conn.query(
           "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version",
           {})) {
    out.push_back({static_cast<int>(r.integer(0)), r.text(1), r.text(2), r.integer(3)});
  }
  return out;
}

bool table_exists(Conn& conn, Dialect d) {
  auto rows = d == Dialect::sqlite
                  ? conn.query(
                        "SELECT name FROM sqlite_master WHERE type = 'table' AND "
                        "name = 'schema_migrations'",
                        {})
                  : conn.query("SELECT to_regclass('schema_migrations')::text", {});
  return !rows.empty() && !rows.front().null(0);
}

int newest_known(Dialect d) {
  int v = 0;
  for (const auto& m : migrations(d)) v = std::max(v, m.version);
  return v;
}

void refuse_newer(const std::vector<Applied>& applied, Dialect d) {
  int known = newest_known(d);
  for (const auto& a : applied) {
    if (a.version > known) {
      throw std::runtime_error("store: the database schema has migration " +
                               std::to_string(a.version) + " (" + a.name +
                               "), newer than this agentd knows (up to " + std::to_string(known) +
                               "); run a newer agentd");
    }
  }
}

// One transaction: applies the first pending migration; false when none is left.
bool apply_next(Conn& conn, Dialect d) {
  conn.begin(Access::migrate);
  try {
    conn.exec_script(kCreateTable);
    auto applied = applied_rows(conn);
    refuse_newer(applied, d);
    std::set<int> done;
    for (const auto& a : applied) done.insert(a.version);
    for (const auto& m : migrations(d)) {
      if (done.count(m.version)) continue;
      conn.exec_script(m.sql);
      Params p{std::int64_t{m.version}, std::string(m.name), checksum(m.sql), now_ms()};
      conn.query(
          "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
          "VALUES ($1, $2, $3, $4)",
          p);
      conn.commit();
      spdlog::info("store: applied migration {:04d}_{}", m.version, m.name);
      return true;
    }
    conn.commit();
    return false;
  } catch (...) {
    conn.rollback();
    throw;
  }
}

std::runtime_error failure(const std::string& what, const std::exception& e) {
  return std::runtime_error(what + ": " + e.what());
}

}  // namespace

const std::vector<Migration>& migrations(Dialect d) {
  return d == Dialect::sqlite ? kSqlite : kPostgres;
}

void apply_migrations(Conn& conn, Dialect d, std::chrono::milliseconds lock_timeout) {
  try {
    if (d == Dialect::postgres) {
      // A session-level lock, held across the per-migration transactions below; a second
      // instance waits here (up to lock_timeout) and then finds nothing left to do.
      conn.begin(Access::write);
      conn.query("SELECT set_config('lock_timeout', $1, false)",
                 Params{std::to_string(lock_timeout.count())});
      conn.query("SELECT pg_advisory_lock($1)", Params{kAdvisoryLockKey});
      conn.commit();
    }
    try {
      while (apply_next(conn, d)) {
      }
    } catch (...) {
      if (d == Dialect::postgres && conn.usable()) {
        try {
          conn.begin(Access::write);
          conn.query("SELECT pg_advisory_unlock($1)", Params{kAdvisoryLockKey});
          conn.commit();
        } catch (const std::exception&) {
          conn.rollback();  // the lock ends with the session anyway
        }
      }
      throw;
    }
    if (d == Dialect::postgres) {
      conn.begin(Access::write);
      conn.query("SELECT pg_advisory_unlock($1)", Params{kAdvisoryLockKey});
      conn.query("SELECT set_config('lock_timeout', '0', false)", {});
      conn.commit();
    }
  } catch (const DbError& e) {
    if (e.kind == DbError::Kind::busy) {
      throw std::runtime_error(
          "store: migrations: another instance holds the migration lock (waited " +
          std::to_string(lock_timeout.count()) + " ms): " + e.what());
    }
    throw failure("store: migrations", e);
  }
}

std::vector<MigrationInfo> read_migrations(Conn* conn, Dialect d) {
  std::vector<Applied> applied;
  if (conn) {
    try {
      conn->begin(Access::read);
      if (table_exists(*conn, d)) applied = applied_rows(*conn);
      conn->commit();
    } catch (const DbError& e) {
      conn->rollback();
      throw failure("store: reading schema_migrations", e);
    }
  }
  std::vector<MigrationInfo> out;
  for (const auto& m : migrations(d)) {
    MigrationInfo info;
    info.version = m.version;
    info.name = m.name;
    for (const auto& a : applied) {
      if (a.version != m.version) continue;
      info.applied = true;
      info.applied_at = a.at;
      info.modified = a.checksum != checksum(m.sql);
    }
    out.push_back(std::move(info));
  }
  for (const auto& a : applied) {
    bool known = std::any_of(migrations(d).begin(), migrations(d).end(),
                             [&](const Migration& m) { return m.version == a.version; });
    if (known) continue;
    MigrationInfo info;
    info.version = a.version;
    info.name = a.name;
    info.applied = true;
    info.applied_at = a.at;
    info.known = false;
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(),
            [](const MigrationInfo& a, const MigrationInfo& b) { return a.version < b.version; });
  return out;
}

}  // namespace agentd::store::sql

namespace agentd::store {

std::size_t MigrationStatus::pending() const {
  return static_cast<std::size_t>(std::count_if(migrations.begin(), migrations.end(),
                                                [](const MigrationInfo& m) { return !m.applied; }));
}

void print_migration_status(const MigrationStatus& status, std::ostream& out) {
  out << "backend: " << status.backend << " (" << status.database << ")\n";
  out << "version  name                  state              applied at (UTC)\n";
  for (const auto& m : status.migrations) {
    std::string state = !m.applied   ? "pending"
                        : !m.known   ? "applied (unknown)"
                        : m.modified ? "applied (modified)"
                                     : "applied";
    std::string when = "-";
    if (m.applied) {
      std::time_t t = static_cast<std::time_t>(m.applied_at / 1000);
      std::tm tm{};
      gmtime_r(&t, &tm);
      char buf[32];
      std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
      when = buf;
    }
    char line[160];
    std::snprintf(line, sizeof line, "%04d     %-21s %-18s %s\n", m.version, m.name.c_str(),
                  state.c_str(), when.c_str());
    out << line;
  }
  out << status.pending() << " pending\n";
}

}  // namespace agentd::store
