// The `agents`, `workflows` and `intents` sections: what the planner can run, and how intents
// behave (deadlines, budgets, restarts, sessions).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agentd/core/config.hpp"

namespace agentd::agent {

using nlohmann::json;
using std::chrono::milliseconds;

// Stops a runaway run: 0 means no limit.
struct Budget {
  std::int64_t tokens = 0;  // prompt + completion tokens over every model call of the intent
  double usd = 0;           // estimated cost (the AI layer's price table)
  double sandbox_seconds = 0;  // time commands ran in sandboxes
  bool any() const noexcept { return tokens > 0 || usd > 0 || sandbox_seconds > 0; }
};

// One LLM-driven agent: a system instruction, a model, and the tools it may use.
struct AgentConfig {
  std::string name;  // [A-Za-z0-9_-]+; also how clients address it (scope agents:<name>)
  std::string description;
  // Templated: {{date}}, {{time}}, {{client}}, {{agent}}, {{intent_id}}; the memory context is
  // appended as its own section.
  std::string instruction;
  std::string model;                 // an ai.models alias or <provider>/<model>
  std::vector<std::string> servers;  // MCP servers whose tools it may use ("*": all)
  std::vector<std::string> tools;    // globs over namespaced tool names; empty: all of `servers`
  std::vector<std::string> agents;   // agents or workflows it may call as tools (agents-as-tools)
  int max_iterations = 10;           // model calls per run of this agent
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<std::int64_t> max_tokens;  // per model call
  json output_schema;          // JSON Schema of a structured answer; null: free text
  bool ask_user = false;       // may ask the user a question (input.required)
  bool sandbox = false;        // may use a sandbox (sandbox__* tools; the client needs `sandbox`)
  bool parallel_tool_calls = true;
  Budget budget;  // per run of this agent; the intent's budget applies on top
};

enum class WorkflowKind { chain, parallel, router, evaluator_optimizer, orchestrator };
std::string_view to_string(WorkflowKind k) noexcept;

// A composition of agents and other workflows, addressed like an agent.
struct WorkflowConfig {
  std::string name;
  std::string description;
  WorkflowKind kind = WorkflowKind::chain;
  // chain: run in order, each getting the previous output; parallel: fan-out on the same input;
  // router: the candidates; orchestrator: the workers the planner may assign steps to.
  std::vector<std::string> steps;
  std::string fan_in;     // parallel: gets every branch's output (empty: outputs joined)
  std::string model;      // router / orchestrator: the model that routes or plans
  std::string instruction;  // router / orchestrator: added to the built-in prompt
  std::string generator;  // evaluator_optimizer
  std::string evaluator;  // evaluator_optimizer: answers {rating, feedback}
  std::string min_rating = "good";  // poor | fair | good | excellent
  int max_iterations = 3;  // evaluator_optimizer: refinements; orchestrator: plan rounds
};

enum class OnRestart { resume, fail };

struct IntentsConfig {
  std::string default_agent;  // when a request names none; empty: the first agent
  milliseconds timeout{std::chrono::minutes(10)};        // a whole intent
  milliseconds step_timeout{std::chrono::minutes(2)};    // one model call or tool call
  milliseconds input_timeout{std::chrono::minutes(10)};  // waiting for POST /input
  Budget budget;                                         // per intent
  OnRestart on_restart = OnRestart::resume;
  std::size_t max_running = 1000;            // intents running at once on this instance
  std::size_t max_intent_bytes = 64 * 1024;  // the intent text
  std::size_t max_body_bytes = 1024 * 1024;  // the whole POST body (memCtx, attachments)
  std::size_t max_events = 10000;            // kept per intent's event stream
  milliseconds event_retention{std::chrono::hours(1)};  // a finished intent's events, then dropped
  std::int64_t session_max_tokens = 0;  // history sent to the model; 0: 3/4 of 128k tokens
  std::int64_t session_max_messages = 200;  // kept per session
  milliseconds lease{std::chrono::seconds(30)};  // ownership of a running intent
  milliseconds keepalive{std::chrono::seconds(15)};  // SSE comment interval
};

struct Config {
  std::vector<AgentConfig> agents;
  std::vector<WorkflowConfig> workflows;
  IntentsConfig intents;

  const AgentConfig* agent(std::string_view name) const noexcept;
  const WorkflowConfig* workflow(std::string_view name) const noexcept;
  bool runnable(std::string_view name) const noexcept { return agent(name) || workflow(name); }
};

// What the validation needs to know about the rest of the configuration.
struct ConfigContext {
  std::vector<std::string> mcp_servers;
  std::function<bool(const std::string&)> model_known;  // unset: every model accepted
  bool sandbox = false;  // the sandbox section is configured
};

// Reads the three top-level sections (each may be absent). Throws ConfigError naming the key:
// unknown keys, bad names, unknown models, servers, agents or workflows, cycles between
// workflows and agents-as-tools.
Config parse_config(const core::ConfigNode* agents, const core::ConfigNode* workflows,
                    const core::ConfigNode* intents, const ConfigContext& ctx);

}  // namespace agentd::agent
