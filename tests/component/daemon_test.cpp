// The agentd binary itself: start-up lines, tokens, config checking, bind failures, signals,
// migrations, and what lands in its durable records.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/tls_cert.hpp"

namespace agentd::test {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

const std::string kBinary = AGENTD_BINARY;
const std::string kShippedConfig = std::string(AGENTD_SOURCE_DIR) + "/config/agentd.yaml";

struct Started {
  std::unique_ptr<Process> process;
  std::string url;
  std::uint16_t port = 0;
  std::string output;  // stdout up to the listening line
};

Started start(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
              const std::string& cwd = {}) {
  Started s;
  s.process = std::make_unique<Process>(kBinary, args, env, std::vector<std::string>{"AGENTD_TOKEN"},
                                        cwd, cwd.empty() ? std::string() : cwd + "/stderr.log");
  auto line = s.process->wait_for_line("agentd listening on ", 30s, &s.output);
  if (!line) return s;
  std::smatch m;
  std::regex re("agentd listening on (https?://127\\.0\\.0\\.1:([0-9]+))");
  if (std::regex_search(*line, m, re)) {
    s.url = m[1];
    s.port = static_cast<std::uint16_t>(std::stoi(m[2]));
  }
  return s;
}

TEST(Daemon, StartsOnShippedDefaultsGeneratesATokenAndStopsOnSigterm) {
  auto dir = make_temp_dir("agentd-daemon-");
  auto s = start({"--set", "server.listen=127.0.0.1:0"}, {}, dir);
  ASSERT_NE(s.port, 0) << s.output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(s.output, m, std::regex("token for client \"local\": (agd_[A-Za-z0-9_-]+)")))
      << s.output;
  std::string token = m[1];

  auto file = dir + "/data/tokens/local.token";
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::ifstream in(file);
  std::string stored;
  std::getline(in, stored);
  EXPECT_EQ(stored, token);

  auto r = request(s.port, "GET", "/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  r = request(s.port, "GET", "/metrics", {{"Authorization", "Bearer " + token}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("agentd_build_info"), std::string::npos);

  s.process->signal(SIGTERM);
  EXPECT_EQ(s.process->wait(10s), 0);

  // A restart keeps the token and does not print it again.
  auto again = start({"--set", "server.listen=127.0.0.1:0"}, {}, dir);
  ASSERT_NE(again.port, 0) << again.output;
  EXPECT_EQ(again.output.find(token), std::string::npos);
  EXPECT_NE(again.output.find("uses the token saved in"), std::string::npos);
  r = request(again.port, "GET", "/readyz", {{"Authorization", "Bearer " + token}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  again.process->signal(SIGINT);
  EXPECT_EQ(again.process->wait(10s), 0);
}

TEST(Daemon, TokenFromTheEnvironmentIsUsedAndNotStored) {
  auto dir = make_temp_dir("agentd-daemon-");
  const std::string token = "env-token-0123456789abcdef";
  auto s = start({"-c", kShippedConfig, "--set", "server.listen=127.0.0.1:0"},
                 {"AGENTD_TOKEN=" + token}, dir);
  ASSERT_NE(s.port, 0) << s.output;
  EXPECT_EQ(s.output.find(token), std::string::npos);
  EXPECT_FALSE(fs::exists(dir + "/data/tokens/local.token"));
  auto r = request(s.port, "GET", "/readyz", {{"Authorization", "Bearer " + token}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  // The token never reaches the log.
  s.process->signal(SIGTERM);
  EXPECT_EQ(s.process->wait(10s), 0);
  std::ifstream log(dir + "/stderr.log");
  std::string all((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(all.find("GET /readyz 200"), std::string::npos) << all;
  EXPECT_EQ(all.find(token), std::string::npos);
}

TEST(Daemon, ServesHttpsWithATlsConfig) {
  auto dir = make_temp_dir("agentd-daemon-");
  auto cert = make_test_cert();
  auto s = start({"--set", "server.listen=https://127.0.0.1:0", "--set",
                  "server.tls.cert=" + cert.cert_file, "--set", "server.tls.key=" + cert.key_file,
                  "--set", "server.shutdown_grace=1s"},
                 {}, dir);
  ASSERT_EQ(s.url.rfind("https://", 0), 0u) << s.output;
  auto r = request(s.port, "GET", "/healthz", {}, {}, TlsClientOptions{cert.cert_file});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  s.process->signal(SIGTERM);
  EXPECT_EQ(s.process->wait(10s), 0);
}

TEST(Daemon, SighupReloadsTheCertificateAndSurvivesBadFiles) {
  auto dir = make_temp_dir("agentd-daemon-");
  auto first = make_test_cert();
  auto second = make_test_cert();
  fs::copy_file(first.cert_file, dir + "/cert.pem");
  fs::copy_file(first.key_file, dir + "/key.pem");
  auto s = start({"--set", "server.listen=https://127.0.0.1:0", "--set",
                  "server.tls.cert=" + dir + "/cert.pem", "--set", "server.tls.key=" + dir + "/key.pem",
                  "--set", "server.shutdown_grace=1s"},
                 {}, dir);
  ASSERT_EQ(s.url.rfind("https://", 0), 0u) << s.output;
  ASSERT_TRUE(request(s.port, "GET", "/healthz", {}, {}, TlsClientOptions{first.cert_file}));
  EXPECT_FALSE(request(s.port, "GET", "/healthz", {}, {}, TlsClientOptions{second.cert_file}));

  // Renewed files, then SIGHUP: new connections get the new certificate.
  fs::copy_file(second.cert_file, dir + "/cert.pem", fs::copy_options::overwrite_existing);
  fs::copy_file(second.key_file, dir + "/key.pem", fs::copy_options::overwrite_existing);
  s.process->signal(SIGHUP);
  bool renewed = false;
  for (int i = 0; i < 100 && !renewed; ++i) {
    renewed = request(s.port, "GET", "/healthz", {}, {}, TlsClientOptions{second.cert_file}).has_value();
    if (!renewed) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(renewed);

  // A broken key: the reload fails, is logged, and the daemon keeps serving the last good one.
  std::ofstream(dir + "/key.pem") << "garbage\n";
  s.process->signal(SIGHUP);
  std::this_thread::sleep_for(300ms);
  auto r = request(s.port, "GET", "/healthz", {}, {}, TlsClientOptions{second.cert_file});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  s.process->signal(SIGTERM);
  EXPECT_EQ(s.process->wait(10s), 0);
  std::ifstream err(dir + "/stderr.log");
  std::string log((std::istreambuf_iterator<char>(err)), std::istreambuf_iterator<char>());
  EXPECT_NE(log.find("TLS not reloaded"), std::string::npos) << log;
}

TEST(Daemon, CheckConfigAcceptsTheShippedFile) {
  auto [code, out] = run_command(kBinary, {"--check-config", kShippedConfig});
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find(": OK"), std::string::npos);
}

TEST(Daemon, CheckConfigNamesTheBadKeyAndExits2) {
  auto dir = make_temp_dir("agentd-check-");
  std::string file = dir + "/bad.yaml";
  std::ofstream(file) << "server:\n  listen: 127.0.0.1:8080\n  timeouts:\n    idle: forever\n";
  auto [code, out] = run_command(kBinary, {"--check-config", file});
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("server.timeouts.idle: expected a duration"), std::string::npos) << out;

  std::ofstream(file) << "server:\n  lisen: 127.0.0.1:8080\n";
  std::tie(code, out) = run_command(kBinary, {"--check-config", file});
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("server.lisen: unknown key (did you mean \"listen\"?)"), std::string::npos)
      << out;

  std::tie(code, out) = run_command(kBinary, {"--check-config", file + ".missing"});
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("cannot read"), std::string::npos) << out;
}

TEST(Daemon, OverridesApplyToCheckConfigToo) {
  auto [code, out] = run_command(kBinary, {"--check-config", kShippedConfig, "--set",
                                           "server.limits.max_connections=0"});
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("server.limits.max_connections: must be between 1 and"), std::string::npos)
      << out;
}

TEST(Daemon, PortInUseExits1WithAClearMessage) {
  auto dir = make_temp_dir("agentd-daemon-");
  auto first = start({"--set", "server.listen=127.0.0.1:0"}, {}, dir);
  ASSERT_NE(first.port, 0);
  auto [code, out] = run_command(
      kBinary, {"--set", "server.listen=127.0.0.1:" + std::to_string(first.port)}, {}, dir);
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("cannot listen on http://127.0.0.1:" + std::to_string(first.port)),
            std::string::npos)
      << out;
  first.process->signal(SIGTERM);
  EXPECT_EQ(first.process->wait(10s), 0);
}

TEST(Daemon, UnknownArgumentIsAUsageError) {
  auto [code, out] = run_command(kBinary, {"--frobnicate"});
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("usage: agentd"), std::string::npos);
}

}  // namespace
}  // namespace agentd::test

// --- the durable store: migrations, the spend ledger and the MCP audit log ----------------

namespace agentd::test {
namespace {

using Hdrs = std::vector<std::pair<std::string, std::string>>;

// Rows of a query on the daemon's SQLite file, each row's columns joined with '|'.
std::vector<std::string> rows(const std::string& db, const std::string& sql) {
  std::vector<std::string> out;
  sqlite3* h = nullptr;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    ADD_FAILURE() << "cannot open " << db;
    sqlite3_close(h);
    return out;
  }
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    ADD_FAILURE() << sqlite3_errmsg(h);
  } else {
    while (sqlite3_step(st) == SQLITE_ROW) {
      std::string row;
      for (int i = 0; i < sqlite3_column_count(st); ++i) {
        auto* t = sqlite3_column_text(st, i);
        row += (i ? "|" : "") + std::string(t ? reinterpret_cast<const char*>(t) : "NULL");
      }
      out.push_back(row);
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(h);
  return out;
}

TEST(DaemonStore, MigrateStatusThenMigrate) {
  auto dir = make_temp_dir("agentd-migrate-");
  auto set = "store.data_dir=" + dir + "/data";
  auto [pending_rc, pending] = run_command(kBinary, {"migrate", "--status", "--set", set});
  EXPECT_EQ(pending_rc, 3) << pending;
  EXPECT_NE(pending.find("pending"), std::string::npos) << pending;
  auto [rc, applied] = run_command(kBinary, {"migrate", "--set", set});
  EXPECT_EQ(rc, 0) << applied;
  auto [status_rc, status] = run_command(kBinary, {"migrate", "--status", "--set", set});
  EXPECT_EQ(status_rc, 0) << status;
  EXPECT_NE(status.find("0 pending"), std::string::npos) << status;
  EXPECT_EQ(status.find("token"), std::string::npos) << "migrate must not generate tokens";
}

TEST(DaemonStore, SpendAndMcpCallsLandInTheDurableRecords) {
  auto dir = make_temp_dir("agentd-ledger-");
  Process fake(FAKE_LLM_BINARY, {"--api-key", "sk-upstream-ledger"});
  auto fake_line = fake.wait_for_line("fake_llm listening on ", 30s);
  ASSERT_TRUE(fake_line);
  auto fake_url = fake_line->substr(fake_line->find("http://"));
  std::ofstream(dir + "/agentd.yaml") << R"(server: { listen: 127.0.0.1:0 }
clients:
  - { name: ledger-client, token: sk-agentd-ledger-0123456789, scopes: ["*"] }
log: { level: warn, access_log: false }
store: { data_dir: )" << dir << R"(/data }
ai:
  providers:
    - name: oai
      kind: openai
      base_url: )" << fake_url << R"(/v1
      api_key: sk-upstream-ledger
      prices: { gpt-4o-mini: { input: 0.15, output: 0.6 } }
  models: [{ name: fast, targets: [oai/gpt-4o-mini] }]
mcp:
  servers:
    - name: test
      transport: stdio
      command: node
      args: [)" << AGENTD_INTEROP_DIR << R"(/mcp_test_server.mjs]
      cwd: )" << AGENTD_INTEROP_DIR << "\n";
  auto s = start({"-c", dir + "/agentd.yaml"}, {}, dir);
  ASSERT_NE(s.port, 0) << s.output;
  Hdrs auth{{"Authorization", "Bearer sk-agentd-ledger-0123456789"},
            {"Content-Type", "application/json"}};
  auto chat = request(s.port, "POST", "/v1/chat/completions", auth,
                      R"({"model":"fast","messages":[{"role":"user","content":"count me"}]})");
  ASSERT_TRUE(chat);
  EXPECT_EQ(chat->status, 200) << chat->body;

  Hdrs mcp = auth;
  mcp.emplace_back("Accept", "application/json, text/event-stream");
  auto init = request(s.port, "POST", "/mcp", mcp,
                      R"({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})");
  ASSERT_TRUE(init && init->status == 200);
  mcp.emplace_back("Mcp-Session-Id", init->header("mcp-session-id"));
  // The upstream starts in the background: retry until the tool is there.
  std::optional<HttpResponse> call;
  for (int i = 0; i < 100; ++i) {
    call = request(s.port, "POST", "/mcp", mcp,
                   R"({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"test__echo","arguments":{"text":"audited"}}})");
    if (call && call->body.find("\"audited\"") != std::string::npos) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(call);
  EXPECT_NE(call->body.find("\"audited\""), std::string::npos) << call->body;
  s.process->signal(SIGTERM);
  EXPECT_EQ(s.process->wait(15s), 0);

  auto db = dir + "/data/agentd.db";
  auto spend = rows(db, "SELECT client, provider, model, tokens_in > 0, cost_micro_usd > 0 FROM spend_ledger");
  ASSERT_EQ(spend.size(), 1u);
  EXPECT_EQ(spend[0], "ledger-client|oai|gpt-4o-mini|1|1");
  auto audit = rows(db, "SELECT client, server, tool, outcome, length(args_sha256) FROM audit_log "
                        "WHERE outcome = 'ok'");
  ASSERT_FALSE(audit.empty());
  EXPECT_EQ(audit.back(), "ledger-client|test|echo|ok|64");
}

}  // namespace
}  // namespace agentd::test
