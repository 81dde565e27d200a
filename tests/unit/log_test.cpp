// Logging: secrets never reach a line, a failed reopen keeps the old file, a missing
// directory is an error rather than created.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "agentd/core/log.hpp"

namespace agentd::core {
namespace {

namespace fs = std::filesystem;

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

fs::path temp_dir() {
  auto d = fs::temp_directory_path() / ("agentd-log-test-" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(Log, RegisteredSecretsAreRedactedInEveryLine) {
  auto dir = temp_dir();
  LogConfig c;
  c.file = (dir / "a.log").string();
  c.format = "json";
  init_logging(c);
  add_log_secret("sk-live-0123456789abcdef");
  add_log_secret("short");  // ignored: too short to replace safely
  spdlog::warn("upstream said: Incorrect API key provided: sk-live-0123456789abcdef (twice: "
               "sk-live-0123456789abcdef) short");
  spdlog::default_logger()->flush();
  auto text = read(dir / "a.log");
  EXPECT_EQ(text.find("sk-live-0123456789abcdef"), std::string::npos) << text;
  EXPECT_NE(text.find("<redacted …cdef> (twice: <redacted …cdef>) short"), std::string::npos)
      << text;
  init_logging(LogConfig{});
  fs::remove_all(dir);
}

TEST(Log, AFailedReopenKeepsTheOldFile) {
  auto dir = temp_dir();
  auto logs = dir / "logs";
  fs::create_directories(logs);
  LogConfig c;
  c.file = (logs / "agentd.log").string();
  init_logging(c);
  spdlog::info("before");
  // The directory disappears (replaced by a file): reopening cannot work.
  fs::rename(logs, dir / "moved");
  std::ofstream(logs) << "not a directory";
  EXPECT_NO_THROW(reopen_logs());
  spdlog::info("after");
  spdlog::default_logger()->flush();
  auto text = read(dir / "moved" / "agentd.log");
  EXPECT_NE(text.find("before"), std::string::npos);
  EXPECT_NE(text.find("cannot reopen log file"), std::string::npos) << text;
  EXPECT_NE(text.find("after"), std::string::npos);
  init_logging(LogConfig{});
  fs::remove_all(dir);
}

TEST(Log, AMissingDirectoryIsAnErrorNotCreated) {
  auto dir = temp_dir();
  LogConfig c;
  c.file = (dir / "nope" / "agentd.log").string();
  EXPECT_THROW(init_logging(c), std::runtime_error);
  EXPECT_FALSE(fs::exists(dir / "nope"));
  init_logging(LogConfig{});
  fs::remove_all(dir);
}

}  // namespace
}  // namespace agentd::core
