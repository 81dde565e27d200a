// The PostgreSQL backend: libpqxx 6.4 connections with prepared statements, errors sorted by
// SQLSTATE into what the executor retries, reconnects or reports.
#include <poll.h>

#include <algorithm>
#include <pqxx/pqxx>
#include <unordered_map>

#include "records_sql.hpp"

namespace agentd::store::sql {
namespace {

DbError::Kind kind_of_sqlstate(const std::string& s) {
  if (s == "40001" || s == "40P01") return DbError::Kind::retry;  // serialization, deadlock
  if (s.rfind("08", 0) == 0) return DbError::Kind::broken;        // connection exception
  // admin_shutdown, crash_shutdown, cannot_connect_now: the session is going away.
  if (s == "57P01" || s == "57P02" || s == "57P03") return DbError::Kind::broken;
  if (s == "53300") return DbError::Kind::connect;  // too_many_connections
  if (s == "57014") return DbError::Kind::timeout;  // query_canceled
  if (s == "55P03") return DbError::Kind::busy;     // lock_not_available
  if (s == "23505") return DbError::Kind::unique;
  if (s == "23503") return DbError::Kind::foreign_key;
  if (s.rfind("23", 0) == 0 || s.rfind("22", 0) == 0) return DbError::Kind::invalid;
  return DbError::Kind::other;
}

class PgConn final : public Conn {
 public:
  PgConn(const std::string& conninfo, std::chrono::milliseconds statement_timeout) {
    try {
      conn_ = std::make_unique<pqxx::connection>(conninfo);
      // The executor reconnects (and repeats only what is safe to repeat); libpqxx's own
      // silent reconnect would lose the session settings below and, in 6.4, leaks a result
      // when BEGIN meets a connection the server closed.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
      conn_->inhibit_reactivation(true);
#pragma GCC diagnostic pop
      if (statement_timeout.count() > 0) {
        pqxx::nontransaction n(*conn_);
        n.exec("SET statement_timeout = " + std::to_string(statement_timeout.count()));
      }
    } catch (const pqxx::sql_error& e) {
      throw DbError(DbError::Kind::connect, e.what(), e.sqlstate());
    } catch (const std::exception& e) {
      throw DbError(DbError::Kind::connect, e.what());
    }
  }
  ~PgConn() override { rollback(); }

  void begin(Access) override {
    guard([&] { tx_ = std::make_unique<pqxx::work>(*conn_); });
  }
  void commit() override {
    guard([&] {
      tx_->commit();
      tx_.reset();
    });
  }
  void rollback() noexcept override {
    if (!tx_) return;
    try {
      tx_->abort();
    } catch (const std::exception&) {
      broken_ = true;  // could not even roll back: start over with a new connection
    }
    tx_.reset();
  }

  Rows query(const std::string& sql, const Params& params) override {
    Rows rows;
    guard([&] {
      auto it = prepared_.find(sql);
      if (it == prepared_.end()) {
        std::string name = "agentd_" + std::to_string(prepared_.size() + 1);
        conn_->prepare(name, sql);
        it = prepared_.emplace(sql, std::move(name)).first;
      }
      // Text parameters; PostgreSQL infers their types from the statement.
      std::vector<std::string> storage;
      storage.reserve(params.size());
      std::vector<const char*> values;
      values.reserve(params.size());
      for (const auto& p : params) {
        if (const auto* n = std::get_if<std::int64_t>(&p)) {
          storage.push_back(std::to_string(*n));
        } else if (const auto* s = std::get_if<std::string>(&p)) {
          storage.push_back(*s);
        } else {
          storage.emplace_back();
        }
      }
      for (std::size_t i = 0; i < params.size(); ++i) {
        values.push_back(std::holds_alternative<std::nullptr_t>(params[i]) ? nullptr
                                                                           : storage[i].c_str());
      }
      pqxx::result r = tx_->exec_prepared(it->second, pqxx::prepare::make_dynamic_params(values));
      rows.reserve(r.size());
      for (const auto& row : r) {
        Row out;
        out.cols.reserve(row.size());
        for (const auto& f : row) {
          if (f.is_null()) {
            out.cols.emplace_back();
          } else {
            out.cols.emplace_back(std::string(f.c_str(), f.size()));
          }
        }
        rows.push_back(std::move(out));
      }
    });
    return rows;
  }

  void exec_script(const std::string& sql) override {
    guard([&] { tx_->exec(sql); });
  }

  // An idle connection has nothing to read unless the server sent an error and closed it
  // (restart, admin shutdown, idle timeout): then it is dropped here, before libpqxx 6.4 meets
  // it in BEGIN, where a broken connection leaks the error result.
  bool usable() const noexcept override {
    if (broken_ || !conn_ || !conn_->is_open()) return false;
    if (tx_) return true;
    pollfd p{conn_->sock(), POLLIN, 0};
    int n = ::poll(&p, 1, 0);
    return n == 0;
  }

 private:
  template <class F>
  void guard(F&& f) {
    try {
      f();
    } catch (const pqxx::broken_connection& e) {
      fail(DbError::Kind::broken, e.what(), {});
    } catch (const pqxx::in_doubt_error& e) {
      fail(DbError::Kind::broken, e.what(), {});
    } catch (const pqxx::transaction_rollback& e) {
      fail(DbError::Kind::retry, e.what(), {});
    } catch (const pqxx::sql_error& e) {
      fail(kind_of_sqlstate(e.sqlstate()), e.what(), e.sqlstate());
    } catch (const pqxx::failure& e) {
      fail(conn_->is_open() ? DbError::Kind::other : DbError::Kind::broken, e.what(), {});
    } catch (const pqxx::usage_error& e) {
      fail(DbError::Kind::other, e.what(), {});
    }
  }
  [[noreturn]] void fail(DbError::Kind k, const std::string& what, const std::string& state) {
    if (k == DbError::Kind::broken) broken_ = true;
    throw DbError(k, what, state);
  }

  std::unique_ptr<pqxx::connection> conn_;
  std::unique_ptr<pqxx::work> tx_;
  std::unordered_map<std::string, std::string> prepared_;
  bool broken_ = false;
};

bool is_uri(const std::string& s) {
  return s.rfind("postgresql://", 0) == 0 || s.rfind("postgres://", 0) == 0;
}

std::string uri_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

bool has_key(const std::string& conninfo, const std::string& key) {
  if (is_uri(conninfo)) {
    auto q = conninfo.find('?');
    if (q == std::string::npos) return false;
    std::string query = "&" + conninfo.substr(q + 1);
    return query.find("&" + key + "=") != std::string::npos;
  }
  // key=value form: keys start the string or follow whitespace.
  for (std::size_t pos = conninfo.find(key + "="); pos != std::string::npos;
       pos = conninfo.find(key + "=", pos + 1)) {
    if (pos == 0 || std::isspace(static_cast<unsigned char>(conninfo[pos - 1]))) return true;
  }
  return false;
}

void add_key(std::string& conninfo, const std::string& key, const std::string& value) {
  if (has_key(conninfo, key)) return;  // what the operator wrote wins
  if (is_uri(conninfo)) {
    conninfo += conninfo.find('?') == std::string::npos ? '?' : '&';
    conninfo += key + "=" + uri_encode(value);
  } else {
    std::string quoted;
    for (char c : value) {
      if (c == '\'' || c == '\\') quoted += '\\';
      quoted += c;
    }
    if (!conninfo.empty()) conninfo += ' ';
    conninfo += key + "='" + quoted + "'";
  }
}

}  // namespace

std::string postgres_conninfo(const RecordsConfig& config) {
  std::string s = config.postgres;
  auto seconds = std::max<std::int64_t>(
      2, (config.connect_timeout.count() + 999) / 1000);  // libpq's minimum is 2 s
  add_key(s, "connect_timeout", std::to_string(seconds));
  add_key(s, "application_name", config.application_name);
  return s;
}

std::string redact_conninfo(const std::string& conninfo) {
  std::string s = conninfo;
  if (is_uri(s)) {
    // scheme://user:password@host -> scheme://user@host
    auto start = s.find("://") + 3;
    auto at = s.find('@', start);
    auto slash = s.find('/', start);
    if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
      auto colon = s.find(':', start);
      if (colon != std::string::npos && colon < at) s.erase(colon, at - colon);
    }
    auto pw = s.find("password=");
    if (pw != std::string::npos) {
      auto end = s.find('&', pw);
      s.replace(pw, (end == std::string::npos ? s.size() : end) - pw, "password=***");
    }
    return s;
  }
  auto pw = s.find("password=");
  while (pw != std::string::npos) {
    if (pw == 0 || std::isspace(static_cast<unsigned char>(s[pw - 1]))) {
      auto v = pw + 9;
      auto end = v;
      if (end < s.size() && s[end] == '\'') {
        ++end;
        while (end < s.size() && s[end] != '\'') end += s[end] == '\\' ? 2 : 1;
        ++end;
      } else {
        while (end < s.size() && !std::isspace(static_cast<unsigned char>(s[end]))) ++end;
      }
      s.replace(v, std::min(end, s.size()) - v, "***");
    }
    pw = s.find("password=", pw + 1);
  }
  return s;
}

Connector postgres_connector(const RecordsConfig& config) {
  std::string conninfo = postgres_conninfo(config);
  auto statement_timeout = config.statement_timeout;
  return [conninfo, statement_timeout](Access) -> std::unique_ptr<Conn> {
    return std::make_unique<PgConn>(conninfo, statement_timeout);
  };
}

}  // namespace agentd::store::sql
