// The `mcp` section: upstream MCP servers (stdio children, Streamable HTTP, legacy SSE) and how
// their tools are exposed.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "agentd/core/config.hpp"
#include "agentd/net/http.hpp"

namespace agentd::mcp {

using std::chrono::milliseconds;

enum class TransportKind { stdio, streamable_http, sse };

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
  // lifecycle
  bool lazy = false;  // start on first use instead of at agentd's start
  milliseconds init_timeout{std::chrono::seconds(30)};
  milliseconds call_timeout{std::chrono::seconds(60)};
  milliseconds ping_interval{std::chrono::seconds(30)};  // 0: no health pings
  std::vector<std::string> tools;  // tool name globs to expose; empty: all
  std::vector<std::string> roots;  // file:// URIs answered to roots/list
};

struct Config {
  std::vector<ServerConfig> servers;
  std::string separator = "__";  // namespaced tool name: <server><separator><tool>
  std::string protocol_version = "2025-06-18";  // what agentd asks upstream servers for
};

Config parse_config(const core::ConfigNode& node);

}  // namespace agentd::mcp
