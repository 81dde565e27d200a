// A private PostgreSQL server for tests: initdb, pg_ctl start/stop, as `postgres` when root.
#include "support/pg_server.hpp"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "support/process.hpp"
#include "support/tls_cert.hpp"

namespace agentd::test {
namespace {

namespace fs = std::filesystem;
const std::string kBin = "/usr/lib/postgresql/15/bin/";

std::pair<int, std::string> run(std::vector<std::string> argv) {
  std::string program = argv.front();
  argv.erase(argv.begin());
  return run_command(program, argv);
}

}  // namespace

PgServer::PgServer() : port_(static_cast<int>(free_loopback_port())) {
  dir_ = make_temp_dir("agentd-pg-");
  // The postgres user must reach the data dir: /tmp/x is 0700 from mkdtemp.
  fs::permissions(dir_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                            fs::perms::others_read | fs::perms::others_exec);
  if (::geteuid() == 0) {
    as_ = {"/usr/sbin/runuser", "-u", "postgres", "--"};
    run({"/bin/chown", "postgres:postgres", dir_});
  }
  auto [code, out] =
      pg({kBin + "initdb", "-N", "-D", dir_ + "/data", "-U", "postgres", "--auth=trust"});
  if (code != 0) throw std::runtime_error("initdb failed: " + out);
  start();
}

PgServer::~PgServer() {
  stop();
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

void PgServer::start() {
  auto [code, out] = pg({kBin + "pg_ctl", "-D", dir_ + "/data", "-l", dir_ + "/pg.log", "-w", "-t",
                         "60", "start", "-o",
                         "-c listen_addresses=127.0.0.1 -p " + std::to_string(port_) + " -k " +
                             dir_ + " -c max_connections=60"});
  if (code != 0) throw std::runtime_error("pg_ctl start failed: " + out + log());
}

void PgServer::stop() {
  pg({kBin + "pg_ctl", "-D", dir_ + "/data", "-m", "fast", "-w", "-t", "60", "stop"});
}

std::string PgServer::url(const std::string& db) const {
  return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/" + db;
}

std::string PgServer::log() const {
  std::ifstream f(dir_ + "/pg.log");
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::pair<int, std::string> PgServer::pg(std::vector<std::string> args) const {
  std::vector<std::string> all = as_;
  all.insert(all.end(), args.begin(), args.end());
  return run(all);
}

}  // namespace agentd::test
