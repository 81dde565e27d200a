// spdlog set-up: text or JSON lines, file reopen, redaction helpers.
#include "agentd/core/log.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>
#include <mutex>

namespace agentd::core {
namespace {

std::mutex g_mutex;
LogConfig g_config;

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
    sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(config.file, false);
  }
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
  install(g_config);
  spdlog::info("log file reopened");
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
