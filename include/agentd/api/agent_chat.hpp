// Agents and workflows on the OpenAI-compatible face: `model: <agent>` in a chat completion
// runs the agent as an intent; /v1/models lists them.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agentd/agent/engine.hpp"
#include "agentd/api/api.hpp"

namespace agentd::api {

bool is_agent_model(const agent::Engine& engine, const std::string& model);
// Model list entries (with LobeChat's metadata fields) for every agent and workflow.
std::vector<nlohmann::json> agent_models(const agent::Engine& engine);
// A chat completion addressed to an agent (needs the client's `agents:<name>` scope).
boost::asio::awaitable<net::Response> agent_chat(Api& api, agent::Engine& engine, net::Request& req,
                                                 nlohmann::json body);

}  // namespace agentd::api
