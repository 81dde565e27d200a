// The agentd binary itself: start-up lines, tokens, config checking, bind failures, signals.
#include <gtest/gtest.h>
#include <signal.h>
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
