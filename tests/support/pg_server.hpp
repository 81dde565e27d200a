// A private PostgreSQL 15 in a temp dir on a free loopback port, that a test may stop and start
// again (as the `postgres` user when running as root: PostgreSQL refuses to run as root).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace agentd::test {

class PgServer {
 public:
  // initdb and start; throws std::runtime_error (with the server's log) when either fails.
  PgServer();
  ~PgServer();
  PgServer(const PgServer&) = delete;
  PgServer& operator=(const PgServer&) = delete;

  void start();  // waits until it accepts connections
  void stop();   // fast shutdown: sessions are terminated
  int port() const noexcept { return port_; }
  // postgresql://postgres@127.0.0.1:<port>/<db>
  std::string url(const std::string& db = "postgres") const;
  std::string log() const;

 private:
  std::pair<int, std::string> pg(std::vector<std::string> args) const;
  std::string dir_;
  int port_ = 0;
  std::vector<std::string> as_;  // runuser -u postgres -- when root
};

}  // namespace agentd::test
