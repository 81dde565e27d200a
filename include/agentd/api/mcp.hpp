// `/mcp`: the multiplexer's catalog as a Streamable HTTP MCP server for authenticated clients.
#pragma once

#include <chrono>

#include "agentd/api/api.hpp"
#include "agentd/mcp/multiplexer.hpp"

namespace agentd::api {

struct McpServerOptions {
  std::chrono::milliseconds session_idle{std::chrono::minutes(30)};  // idle sessions expire
  std::size_t max_sessions = 10000;
};

// Registers POST, GET and DELETE /mcp on `api`. A client sees and may call a tool when it
// holds `mcp:<server>/<tool glob>` (`mcp:*` for all). `mux` must outlive `api`.
void add_mcp_routes(Api& api, mcp::Multiplexer& mux, McpServerOptions options = {});

}  // namespace agentd::api
