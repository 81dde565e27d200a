// The `sandbox` section: which backend, its credentials or its limits, and how sandboxes are
// owned and timed out.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "agentd/core/config.hpp"

namespace agentd::sandbox {

using std::chrono::milliseconds;

enum class BackendKind { local, e2b };
// Who owns the sandbox an agent's tools use: the intent, or the intent's session (the intents
// of one conversation share one sandbox; intents without a session_id still get their own).
enum class Scope { intent, session };

struct E2bConfig {
  std::string api_key;             // X-API-KEY (from the environment: ${E2B_API_KEY})
  std::string domain = "e2b.app";  // control plane https://api.<domain>, envd https://<port>-<id>.<domain>
  std::string api_url;             // overrides https://api.<domain> (e.g. a self-hosted E2B)
  // Overrides how envd is reached: requests go to this base URL with the headers
  // E2b-Sandbox-Id / E2b-Sandbox-Port instead of https://<port>-<id>.<domain>.
  std::string sandbox_url;
  std::string template_id = "base";
  std::string desktop_template = "desktop";  // templates with a noVNC stream on port 6080
  milliseconds request_timeout{std::chrono::seconds(30)};
};

struct LocalConfig {
  std::string root_dir;                 // empty: <store.data_dir>/sandboxes
  std::string bwrap = "/usr/bin/bwrap";
  bool allow_network = false;           // sandboxes that ask for the network may have it
  std::int64_t cpu_seconds = 60;        // per command (RLIMIT_CPU)
  std::uint64_t memory_bytes = 1ull << 30;   // per sandbox (cgroup) or per process (RLIMIT_AS)
  std::int64_t max_processes = 128;     // per sandbox (cgroup pids) or per user (RLIMIT_NPROC)
  std::uint64_t max_file_size = 256ull << 20;  // RLIMIT_FSIZE
  std::uint64_t max_disk = 1ull << 30;  // bytes under the work dir, checked on writes
  std::vector<std::string> read_only;   // host paths visible read-only (default: /usr, /etc ...)
  // Run commands with `bash -l -c` (as E2B does): the host's /etc/profile runs first and, on
  // Debian, replaces PATH. Off: `bash -c` in exactly the environment agentd sets.
  bool login_shell = false;
};

struct Config {
  bool enabled = false;  // the section is present
  BackendKind backend = BackendKind::local;
  E2bConfig e2b;
  LocalConfig local;
  milliseconds default_timeout{std::chrono::minutes(10)};  // a sandbox's life unless extended
  std::size_t max_sandboxes = 32;  // alive at once on this instance
  std::size_t max_output = 1 << 20;  // bytes of a command's output given to the model
  Scope scope = Scope::session;
  // A session's sandbox is killed once no intent of the session has used it for this long.
  milliseconds session_idle{std::chrono::minutes(15)};
  // With instances sharing Redis: how often each looks for sandboxes of instances that died
  // (their run is no longer announced) and kills them.
  milliseconds sweep_interval{std::chrono::minutes(1)};
};

// Reads `sandbox` (absent: disabled). Throws ConfigError naming the key.
Config parse_config(const core::ConfigNode& node, const std::string& data_dir);

}  // namespace agentd::sandbox
