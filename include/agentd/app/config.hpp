// The whole daemon configuration: every module's section, loaded and validated in one place.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "agentd/agent/config.hpp"
#include "agentd/ai/config.hpp"
#include "agentd/api/auth.hpp"
#include "agentd/core/config.hpp"
#include "agentd/core/log.hpp"
#include "agentd/mcp/config.hpp"
#include "agentd/sandbox/config.hpp"
#include "agentd/net/client.hpp"
#include "agentd/store/blobs.hpp"
#include "agentd/store/kv.hpp"
#include "agentd/store/records.hpp"
#include "agentd/net/server.hpp"

namespace agentd::app {

struct StoreConfig {
  std::string data_dir = "./data";  // tokens, SQLite, blobs
  store::KvConfig kv;               // cache, counters, event streams: in-process or Redis
  store::RecordsConfig records;     // durable records: SQLite in data_dir, or PostgreSQL
  store::BlobsConfig blobs;         // content-addressed bodies in <data_dir>/blobs
};

struct Config {
  net::ServerConfig server;
  std::vector<api::Client> clients;
  core::LogConfig log;
  StoreConfig store;
  net::ClientConfig http_client;
  ai::Config ai;
  mcp::Config mcp;
  agent::Config agent;  // the agents, workflows and intents sections
  sandbox::Config sandbox;
};

// The shipped config/agentd.yaml, compiled in: what agentd runs on without -c.
std::string_view embedded_config();

// Validates a loaded document (after substitution and overrides); throws ConfigError.
Config parse_config(const YAML::Node& root);

// Reads `file` (or the embedded defaults when empty), applies `--set` overrides, substitutes
// the environment, validates. Throws ConfigError naming the key.
Config load_config(const std::string& file, const std::vector<std::string>& overrides,
                   const core::EnvLookup& env);

}  // namespace agentd::app
