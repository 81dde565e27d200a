// The `mcp` section: upstream MCP servers (stdio children, Streamable HTTP, legacy SSE) and how
// their tools are exposed.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agentd/core/config.hpp"
#include "agentd/net/http.hpp"

namespace agentd::mcp {
class ArgumentPolicy;
}

namespace agentd::mcp {

using std::chrono::milliseconds;

enum class TransportKind { stdio, streamable_http, sse };

// Which MCP era a Streamable HTTP server speaks: the stateful "initialize" era (2025-03-26 to
// 2025-11-25) or the stateless 2026-07-28 revision. `detect` probes with server/discover.
enum class Era { detect, stateful, stateless };

// Calls per minute (fixed one-minute windows) and calls in flight; 0 means no limit.
struct Limits {
  std::int64_t rpm = 0;
  std::int64_t concurrency = 0;
  bool any() const noexcept { return rpm > 0 || concurrency > 0; }
};

struct ServerConfig {
  std::string name;  // [A-Za-z0-9_-]+, no separator inside
  TransportKind transport = TransportKind::stdio;
  // stdio
  std::string command;
  std::vector<std::string> args;
  std::map<std::string, std::string> env;  // added to agentd's environment
  std::string cwd;
  // streamable_http / sse
  std::string url;
  std::vector<net::Header> headers;  // e.g. Authorization for the upstream (never the client's)
  Era era = Era::detect;             // streamable_http only
  // lifecycle
  bool lazy = false;  // start on first use instead of at agentd's start
  milliseconds init_timeout{std::chrono::seconds(30)};
  milliseconds call_timeout{std::chrono::seconds(60)};
  milliseconds ping_interval{std::chrono::seconds(30)};  // 0: no health pings
  std::vector<std::string> tools;  // tool name globs to expose; empty: all
  std::vector<std::string> roots;  // file:// URIs answered to roots/list
  // Calls to this server: over `rpm` are refused; over `concurrency` wait for a slot (bounded
  // by call_timeout), so a server that handles one call at a time is not overrun.
  Limits limits;
  bool sampling = true;  // answer this server's sampling/createMessage (when mcp.sampling is set)
};

// Per client (a name from `clients`): over either limit a call is refused at once.
struct ClientLimits {
  Limits limits;
  milliseconds call_timeout{0};  // 0: the server's call_timeout; else the smaller of the two
};

// sampling/createMessage from upstream servers, answered through the AI routing layer.
struct SamplingConfig {
  std::string model;          // alias or provider/model; empty: sampling is not offered
  bool allow_hints = false;   // use the server's modelPreferences.hints when the gateway knows one
  std::int64_t max_tokens = 4096;  // cap on the server's maxTokens
};

enum class ElicitationMode { relay, decline };

// `/mcp`, agentd's own MCP server face.
struct ServeConfig {
  milliseconds session_idle{std::chrono::minutes(30)};
  std::size_t max_sessions = 10000;
};

struct Config {
  std::vector<ServerConfig> servers;
  std::string separator = "__";  // namespaced tool name: <server><separator><tool>
  std::string protocol_version = "2025-06-18";  // what agentd asks upstream servers for
  std::map<std::string, ClientLimits> clients;    // by client name
  SamplingConfig sampling;
  // elicitation/create from an upstream during a call: relayed to whoever made the call (a
  // /mcp client that declared the capability, or the planner), or declined.
  ElicitationMode elicitation = ElicitationMode::relay;
  ServeConfig serve;
  std::shared_ptr<const ArgumentPolicy> policy;  // mcp.policies; never null after parsing
};

// `client_names`: the configured clients, which `limits` keys must name.
Config parse_config(const core::ConfigNode& node, const std::vector<std::string>& client_names = {});

}  // namespace agentd::mcp
