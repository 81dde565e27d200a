// Parsing and cross-checking of the agents, workflows and intents sections.
#include "agentd/agent/config.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>

#include "agentd/core/error.hpp"

namespace agentd::agent {
namespace {

using core::ConfigNode;

bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > 48) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
  });
}

// A YAML value as JSON: plain scalars become booleans, numbers or null when they read as such.
json yaml_to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: {
      json out = json::object();
      for (const auto& kv : n) out[kv.first.as<std::string>()] = yaml_to_json(kv.second);
      return out;
    }
    case YAML::NodeType::Sequence: {
      json out = json::array();
      for (const auto& v : n) out.push_back(yaml_to_json(v));
      return out;
    }
    case YAML::NodeType::Scalar: {
      const std::string& s = n.Scalar();
      if (n.Tag() == "!") return s;  // quoted: a string
      if (s == "true") return true;
      if (s == "false") return false;
      if (s == "null" || s == "~") return nullptr;
      auto j = json::parse(s, nullptr, false);
      if (!j.is_discarded() && j.is_number()) return j;
      return s;
    }
    default:
      return nullptr;
  }
}

// output_schema: a YAML map, or a JSON document in a string.
json parse_schema(const ConfigNode& node) {
  json schema;
  if (node.is_scalar()) {
    schema = json::parse(node.as_string(), nullptr, false);
    if (schema.is_discarded()) node.fail("expected a JSON Schema (a map, or JSON text)");
  } else {
    schema = yaml_to_json(node.yaml());
  }
  if (!schema.is_object()) node.fail("expected a JSON Schema object");
  if (schema.value("type", "object") != "object") {
    node.fail("a structured answer must be an object (type: object)");
  }
  return schema;
}

Budget parse_budget(const ConfigNode& node) {
  node.expect_map();
  Budget b;
  b.tokens = node.get_int("tokens", 0, 0, std::int64_t{1} << 50);
  if (auto n = node.get("usd")) b.usd = n->as_number(0, 1e9);
  if (auto n = node.get("sandbox_seconds")) b.sandbox_seconds = n->as_number(0, 1e9);
  node.finish();
  return b;
}

void parse_name(const ConfigNode& node, std::string& out) {
  auto n = node.required("name");
  out = n.as_string();
  if (!valid_name(out)) n.fail("expected 1-48 letters, digits, '-' or '_'");
}

AgentConfig parse_agent(const ConfigNode& node, const ConfigContext& ctx) {
  node.expect_map();
  AgentConfig a;
  parse_name(node, a.name);
  a.description = node.get_string("description");
  a.instruction = node.get_string("instruction", "You are a helpful assistant.");
  auto model = node.required("model");
  a.model = model.as_string();
  if (ctx.model_known && !ctx.model_known(a.model)) {
    model.fail("\"" + a.model + "\" is neither an ai.models alias nor <provider>/<model> of ai.providers");
  }
  a.servers = node.get_strings("servers");
  for (std::size_t i = 0; i < a.servers.size(); ++i) {
    const auto& s = a.servers[i];
    if (s != "*" && std::find(ctx.mcp_servers.begin(), ctx.mcp_servers.end(), s) == ctx.mcp_servers.end()) {
      node.child("servers").fail("entry " + std::to_string(i) + ": unknown MCP server \"" + s +
                                 "\" (not in mcp.servers)");
    }
  }
  a.tools = node.get_strings("tools");
  a.agents = node.get_strings("agents");
  a.max_iterations = static_cast<int>(node.get_int("max_iterations", a.max_iterations, 1, 1000));
  if (auto n = node.get("temperature")) a.temperature = n->as_number(0, 2);
  if (auto n = node.get("top_p")) a.top_p = n->as_number(0, 1);
  if (auto n = node.get("max_tokens")) a.max_tokens = n->as_int(1, 10'000'000);
  if (auto n = node.get("output_schema")) a.output_schema = parse_schema(*n);
  a.ask_user = node.get_bool("ask_user", a.ask_user);
  a.sandbox = node.get_bool("sandbox", a.sandbox);
  if (a.sandbox && !ctx.sandbox) node.child("sandbox").fail("needs the sandbox section (sandbox: {backend: local})");
  a.parallel_tool_calls = node.get_bool("parallel_tool_calls", a.parallel_tool_calls);
  if (auto n = node.get("budget")) a.budget = parse_budget(*n);
  node.finish();
  return a;
}

// For a key that is absent (ConfigNode::child would give an invalid node to fail on).
[[noreturn]] void fail_missing(const ConfigNode& node, std::string_view key, const std::string& message) {
  throw ConfigError(node.path() + "." + std::string(key), message);
}

WorkflowKind parse_kind(const ConfigNode& node) {
  auto s = node.as_string();
  if (s == "chain") return WorkflowKind::chain;
  if (s == "parallel") return WorkflowKind::parallel;
  if (s == "router") return WorkflowKind::router;
  if (s == "evaluator_optimizer") return WorkflowKind::evaluator_optimizer;
  if (s == "orchestrator") return WorkflowKind::orchestrator;
  node.fail("expected chain, parallel, router, evaluator_optimizer or orchestrator, got \"" + s + "\"");
}

WorkflowConfig parse_workflow(const ConfigNode& node, const ConfigContext& ctx) {
  node.expect_map();
  WorkflowConfig w;
  parse_name(node, w.name);
  w.description = node.get_string("description");
  w.kind = parse_kind(node.required("kind"));
  w.steps = node.get_strings("steps");
  w.fan_in = node.get_string("fan_in");
  w.instruction = node.get_string("instruction");
  w.generator = node.get_string("generator");
  w.evaluator = node.get_string("evaluator");
  if (auto n = node.get("model")) {
    w.model = n->as_string();
    if (ctx.model_known && !ctx.model_known(w.model)) {
      n->fail("\"" + w.model + "\" is neither an ai.models alias nor <provider>/<model> of ai.providers");
    }
  }
  if (auto n = node.get("min_rating")) {
    w.min_rating = n->as_string();
    static const std::set<std::string, std::less<>> kRatings{"poor", "fair", "good", "excellent"};
    if (!kRatings.contains(w.min_rating)) n->fail("expected poor, fair, good or excellent");
  }
  w.max_iterations = static_cast<int>(node.get_int("max_iterations", w.max_iterations, 1, 100));
  switch (w.kind) {
    case WorkflowKind::chain:
    case WorkflowKind::parallel:
      if (w.steps.empty()) fail_missing(node, "steps", "a " + std::string(to_string(w.kind)) + " needs steps");
      break;
    case WorkflowKind::router:
    case WorkflowKind::orchestrator:
      if (w.steps.empty()) fail_missing(node, "steps", "needs the agents it may choose from");
      if (w.model.empty()) fail_missing(node, "model", "a " + std::string(to_string(w.kind)) + " needs a model");
      break;
    case WorkflowKind::evaluator_optimizer:
      if (w.generator.empty()) fail_missing(node, "generator", "is required");
      if (w.evaluator.empty()) fail_missing(node, "evaluator", "is required");
      break;
  }
  node.finish();
  return w;
}

IntentsConfig parse_intents(const ConfigNode& node) {
  node.expect_map();
  IntentsConfig c;
  c.default_agent = node.get_string("default_agent");
  c.timeout = node.get_duration("timeout", c.timeout);
  c.step_timeout = node.get_duration("step_timeout", c.step_timeout);
  c.input_timeout = node.get_duration("input_timeout", c.input_timeout);
  if (auto n = node.get("budget")) c.budget = parse_budget(*n);
  if (auto n = node.get("on_restart")) {
    auto s = n->as_string();
    if (s == "resume") {
      c.on_restart = OnRestart::resume;
    } else if (s == "fail") {
      c.on_restart = OnRestart::fail;
    } else {
      n->fail("expected resume or fail, got \"" + s + "\"");
    }
  }
  c.max_running = static_cast<std::size_t>(node.get_int("max_running", static_cast<std::int64_t>(c.max_running), 1, 1'000'000));
  c.max_intent_bytes = node.get_size("max_intent_size", c.max_intent_bytes);
  c.max_body_bytes = node.get_size("max_body_size", c.max_body_bytes);
  c.max_events = static_cast<std::size_t>(node.get_int("max_events", static_cast<std::int64_t>(c.max_events), 100, 10'000'000));
  c.event_retention = node.get_duration("event_retention", c.event_retention);
  c.session_max_tokens = node.get_int("session_max_tokens", c.session_max_tokens, 0, 100'000'000);
  c.session_max_messages = node.get_int("session_max_messages", c.session_max_messages, 1, 100'000);
  c.lease = node.get_duration("lease", c.lease);
  c.keepalive = node.get_duration("keepalive", c.keepalive);
  if (c.timeout.count() <= 0) node.child("timeout").fail("must be positive");
  if (c.step_timeout.count() <= 0) node.child("step_timeout").fail("must be positive");
  if (c.lease < std::chrono::seconds(2)) node.child("lease").fail("must be at least 2s");
  node.finish();
  return c;
}

}  // namespace

std::string_view to_string(WorkflowKind k) noexcept {
  switch (k) {
    case WorkflowKind::chain: return "chain";
    case WorkflowKind::parallel: return "parallel";
    case WorkflowKind::router: return "router";
    case WorkflowKind::evaluator_optimizer: return "evaluator_optimizer";
    case WorkflowKind::orchestrator: return "orchestrator";
  }
  return "chain";
}

const AgentConfig* Config::agent(std::string_view name) const noexcept {
  for (const auto& a : agents) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

const WorkflowConfig* Config::workflow(std::string_view name) const noexcept {
  for (const auto& w : workflows) {
    if (w.name == name) return &w;
  }
  return nullptr;
}

Config parse_config(const ConfigNode* agents, const ConfigNode* workflows,
                    const ConfigNode* intents, const ConfigContext& ctx) {
  Config c;
  std::set<std::string, std::less<>> names;
  auto unique = [&names](const ConfigNode& item, const std::string& name) {
    if (!names.insert(name).second) {
      item.child("name").fail("\"" + name + "\" is already the name of an agent or workflow");
    }
  };
  std::vector<ConfigNode> agent_nodes;
  std::vector<ConfigNode> workflow_nodes;
  if (agents) {
    agent_nodes = agents->items();
    for (const auto& item : agent_nodes) {
      c.agents.push_back(parse_agent(item, ctx));
      unique(item, c.agents.back().name);
    }
  }
  if (workflows) {
    workflow_nodes = workflows->items();
    for (const auto& item : workflow_nodes) {
      c.workflows.push_back(parse_workflow(item, ctx));
      unique(item, c.workflows.back().name);
    }
  }
  if (intents) c.intents = parse_intents(*intents);

  // References: every name a workflow or agent uses must exist, and nothing may reach itself.
  std::map<std::string, std::vector<std::string>, std::less<>> uses;
  for (std::size_t i = 0; i < c.agents.size(); ++i) {
    const auto& a = c.agents[i];
    for (const auto& ref : a.agents) {
      if (!c.runnable(ref)) {
        agent_nodes[i].child("agents").fail("unknown agent or workflow \"" + ref + "\"");
      }
    }
    uses[a.name] = a.agents;
  }
  for (std::size_t i = 0; i < c.workflows.size(); ++i) {
    const auto& w = c.workflows[i];
    std::vector<std::pair<std::string, std::string>> refs;
    for (const auto& s : w.steps) refs.emplace_back("steps", s);
    if (!w.fan_in.empty()) refs.emplace_back("fan_in", w.fan_in);
    if (!w.generator.empty()) refs.emplace_back("generator", w.generator);
    if (!w.evaluator.empty()) refs.emplace_back("evaluator", w.evaluator);
    for (const auto& [key, ref] : refs) {
      if (!c.runnable(ref)) {
        workflow_nodes[i].child(key).fail("unknown agent or workflow \"" + ref + "\"");
      }
      uses[w.name].push_back(ref);
    }
  }
  // Depth-first search for a cycle: 0 unvisited, 1 on the path, 2 done.
  std::map<std::string, int, std::less<>> mark;
  std::function<std::string(const std::string&)> cycle_from = [&](const std::string& n) -> std::string {
    int& m = mark[n];
    if (m == 1) return n;
    if (m == 2) return {};
    m = 1;
    for (const auto& next : uses[n]) {
      if (auto found = cycle_from(next); !found.empty()) return found;
    }
    mark[n] = 2;
    return {};
  };
  for (const auto& [name, refs] : uses) {
    if (auto found = cycle_from(name); !found.empty()) {
      const ConfigNode* where = workflows ? workflows : agents;
      where->fail("\"" + found + "\" reaches itself through its steps or agents-as-tools");
    }
  }
  if (!c.intents.default_agent.empty() && !c.runnable(c.intents.default_agent)) {
    intents->child("default_agent").fail("unknown agent or workflow \"" + c.intents.default_agent + "\"");
  }
  return c;
}

}  // namespace agentd::agent
