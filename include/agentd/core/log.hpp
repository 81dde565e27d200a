// Logging: spdlog as text or JSON lines, to stderr or a file reopened on SIGHUP; redaction.
#pragma once

#include "agentd/core/config.hpp"

#include <string>
#include <string_view>

namespace agentd::core {

struct LogConfig {
  std::string level = "info";   // trace | debug | info | warn | error | off
  std::string format = "text";  // text | json
  std::string file;             // empty: stderr
  bool access_log = true;       // one line per HTTP request
};

LogConfig parse_log_config(const ConfigNode& node);

// Installs the default logger. Safe to call again (tests, reconfiguration).
void init_logging(const LogConfig& config);

// Reopens the log file (after logrotate moved it); no-op when logging to stderr. When the
// file cannot be reopened the error is logged and the old file is kept.
void reopen_logs();

// Registers a secret (a token, an API key): from now on it is replaced by redact(secret) in
// every log line, whoever logs it. Secrets under 8 characters are ignored.
void add_log_secret(std::string secret);

// What may be shown of a secret: its length class and last four characters at most.
std::string redact(std::string_view secret);

// JSON string escaping for log lines built by hand.
std::string json_escape(std::string_view s);

}  // namespace agentd::core
