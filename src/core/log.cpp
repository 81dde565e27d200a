// spdlog set-up: text or JSON lines, file reopen, redaction helpers.
#include "agentd/core/log.hpp"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <optional>
#include <vector>

namespace agentd::core {
namespace {

std::mutex g_mutex;
LogConfig g_config;

std::mutex g_secrets_mutex;
std::vector<std::string> g_secrets;

// The payload with every registered secret replaced, or nullopt when it holds none.
std::optional<std::string> scrub(std::string_view payload) {
  std::lock_guard lock(g_secrets_mutex);
  std::optional<std::string> out;
  for (const auto& secret : g_secrets) {
    std::string_view current = out ? std::string_view(*out) : payload;
    auto at = current.find(secret);
    if (at == std::string_view::npos) continue;
    std::string replaced;
    std::size_t from = 0;
    auto mask = redact(secret);
    while (at != std::string_view::npos) {
      replaced.append(current.substr(from, at - from));
      replaced += mask;
      from = at + secret.size();
      at = current.find(secret, from);
    }
    replaced.append(current.substr(from));
    out = std::move(replaced);
  }
  return out;
}

// Wraps the real sink: registered secrets never reach a log line, whatever code logged them.
class RedactingSink final : public spdlog::sinks::sink {
 public:
  explicit RedactingSink(spdlog::sink_ptr inner) : inner_(std::move(inner)) {}
  void log(const spdlog::details::log_msg& msg) override {
    auto clean = scrub(std::string_view(msg.payload.data(), msg.payload.size()));
    if (!clean) {
      inner_->log(msg);
      return;
    }
    spdlog::details::log_msg copy = msg;
    copy.payload = spdlog::string_view_t(clean->data(), clean->size());
    inner_->log(copy);
  }
  void flush() override { inner_->flush(); }
  void set_pattern(const std::string& pattern) override { inner_->set_pattern(pattern); }
  void set_formatter(std::unique_ptr<spdlog::formatter> f) override {
    inner_->set_formatter(std::move(f));
  }

 private:
  spdlog::sink_ptr inner_;
};

void append_escaped(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
}

// One JSON object per line: {"ts","level","msg"}.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    auto t = std::chrono::system_clock::to_time_t(msg.time);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  msg.time.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char ts[64];
    std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(ms));
    std::string line = "{\"ts\":\"";
    line += ts;
    line += "\",\"level\":\"";
    auto lv = spdlog::level::to_string_view(msg.level);
    line.append(lv.data(), lv.size());
    line += "\",\"msg\":\"";
    append_escaped(line, std::string_view(msg.payload.data(), msg.payload.size()));
    line += "\"}\n";
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

void install(const LogConfig& config) {
  spdlog::sink_ptr sink;
  if (config.file.empty()) {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  } else {
    // spdlog would create missing directories; a typo in log.file should fail instead.
    auto parent = std::filesystem::path(config.file).parent_path();
    if (!parent.empty() && !std::filesystem::is_directory(parent)) {
      throw std::runtime_error("directory " + parent.string() + " does not exist");
    }
    sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(config.file, false);
  }
  sink = std::make_shared<RedactingSink>(std::move(sink));
  auto logger = std::make_shared<spdlog::logger>("agentd", sink);
  if (config.format == "json") {
    logger->set_formatter(std::make_unique<JsonFormatter>());
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
  }
  logger->set_level(spdlog::level::from_str(config.level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace

LogConfig parse_log_config(const ConfigNode& node) {
  LogConfig c;
  node.expect_map();
  c.level = node.get_string("level", c.level);
  if (c.level != "trace" && c.level != "debug" && c.level != "info" && c.level != "warn" &&
      c.level != "error" && c.level != "off") {
    node.child("level").fail("expected one of trace, debug, info, warn, error, off");
  }
  c.format = node.get_string("format", c.format);
  if (c.format != "text" && c.format != "json") {
    node.child("format").fail("expected text or json");
  }
  c.file = node.get_string("file", c.file);
  c.access_log = node.get_bool("access_log", c.access_log);
  node.finish();
  return c;
}

void init_logging(const LogConfig& config) {
  std::lock_guard lock(g_mutex);
  g_config = config;
  install(config);
}

void reopen_logs() {
  std::lock_guard lock(g_mutex);
  if (g_config.file.empty()) return;
  spdlog::default_logger()->flush();
  try {
    install(g_config);
  } catch (const std::exception& e) {
    // Keep logging to the file we have rather than die on a signal.
    spdlog::error("cannot reopen log file {}: {} (still writing to the old one)", g_config.file,
                  e.what());
    return;
  }
  spdlog::info("log file reopened");
}

void add_log_secret(std::string secret) {
  if (secret.size() < 8) return;  // too short to replace without mangling ordinary text
  std::lock_guard lock(g_secrets_mutex);
  if (std::find(g_secrets.begin(), g_secrets.end(), secret) == g_secrets.end()) {
    g_secrets.push_back(std::move(secret));
  }
}

std::string redact(std::string_view secret) {
  if (secret.empty()) return "<empty>";
  if (secret.size() < 12) return "<redacted>";
  return "<redacted …" + std::string(secret.substr(secret.size() - 4)) + ">";
}

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  append_escaped(out, s);
  return out;
}

}  // namespace agentd::core
