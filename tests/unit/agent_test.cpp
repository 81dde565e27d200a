// The planner's pure parts: the agents/workflows/intents config (errors name the key), the
// memory-context prompt section, and the JSON Schema subset of structured answers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agentd/agent/engine.hpp"
#include "agentd/app/config.hpp"
#include "agentd/core/error.hpp"

namespace agentd {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

// An AI provider with one alias and one MCP server, for the agent sections to refer to.
const std::string kBase = R"(
ai:
  providers: [{ name: p, kind: openai, base_url: "http://127.0.0.1:9/v1", api_key: k }]
  models: [{ name: m, targets: [p/gpt-4o-mini] }]
mcp:
  servers: [{ name: fs, transport: stdio, command: node }]
)";

app::Config parse(const std::string& sections) {
  return app::parse_config(core::load_yaml_string(kBase + sections));
}

std::string error_of(const std::string& sections) {
  try {
    parse(sections);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(AgentConfig, ParsesAgentsWorkflowsAndIntents) {
  auto c = parse(R"(
agents:
  - name: helper
    model: m
    servers: [fs]
    tools: ["fs__read*"]
    max_iterations: 4
    temperature: 0.2
    max_tokens: 500
    ask_user: true
    parallel_tool_calls: false
    budget: { tokens: 1000, usd: 0.5 }
    output_schema: { type: object, properties: { n: { type: integer } }, required: [n] }
  - { name: other, model: p/gpt-4o, agents: [helper] }
workflows:
  - { name: both, kind: parallel, steps: [helper, other], fan_in: other }
  - { name: pick, kind: router, steps: [helper, both], model: m }
  - { name: better, kind: evaluator_optimizer, generator: helper, evaluator: other, min_rating: excellent }
intents: { default_agent: pick, lease: 2s, on_restart: fail, max_intent_size: 1KiB, budget: { tokens: 99 } }
)");
  ASSERT_EQ(c.agent.agents.size(), 2u);
  const auto* h = c.agent.agent("helper");
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->servers, std::vector<std::string>{"fs"});
  EXPECT_EQ(h->max_iterations, 4);
  EXPECT_EQ(h->temperature, 0.2);
  EXPECT_TRUE(h->ask_user);
  EXPECT_FALSE(h->parallel_tool_calls);
  EXPECT_EQ(h->budget.tokens, 1000);
  EXPECT_EQ(h->output_schema["properties"]["n"]["type"], "integer");
  EXPECT_EQ(h->output_schema["required"], json::array({"n"}));
  ASSERT_NE(c.agent.workflow("better"), nullptr);
  EXPECT_EQ(c.agent.workflow("better")->min_rating, "excellent");
  EXPECT_EQ(c.agent.workflow("pick")->kind, agent::WorkflowKind::router);
  EXPECT_EQ(c.agent.intents.default_agent, "pick");
  EXPECT_EQ(c.agent.intents.on_restart, agent::OnRestart::fail);
  EXPECT_EQ(c.agent.intents.max_intent_bytes, 1024u);
  EXPECT_EQ(c.agent.intents.budget.tokens, 99);
  EXPECT_EQ(c.agent.intents.lease, std::chrono::seconds(2));
}

TEST(AgentConfig, UnknownKeysAreRejectedWithTheirPath) {
  EXPECT_THAT(error_of("agents: [{ name: a, model: m, bogus: 1 }]\n"),
              HasSubstr("agents[0].bogus: unknown key"));
  EXPECT_THAT(error_of("workflows: [{ name: w, kind: chain, steps: [a], colour: red }]\nagents: [{ "
                       "name: a, model: m }]\n"),
              HasSubstr("workflows[0].colour: unknown key"));
  EXPECT_THAT(error_of("intents: { lease_time: 3s }\n"),
              HasSubstr("intents.lease_time: unknown key"));
  EXPECT_THAT(error_of("agents: [{ name: a, model: m, budget: { tokenz: 1 } }]\n"),
              HasSubstr("agents[0].budget.tokenz: unknown key"));
}

TEST(AgentConfig, UnknownModelServerAgentOrWorkflowIsAnError) {
  EXPECT_THAT(error_of("agents: [{ name: a, model: nope }]\n"),
              HasSubstr("agents[0].model: \"nope\" is neither an ai.models alias"));
  EXPECT_THAT(error_of("agents: [{ name: a, model: q/gpt-4o }]\n"), HasSubstr("agents[0].model"));
  EXPECT_THAT(error_of("agents: [{ name: a }]\n"), HasSubstr("agents[0].model"));
  EXPECT_THAT(error_of("agents: [{ name: a, model: m, servers: [fs, web] }]\n"),
              HasSubstr("agents[0].servers: entry 1: unknown MCP server \"web\""));
  EXPECT_THAT(error_of("agents: [{ name: a, model: m, agents: [ghost] }]\n"),
              HasSubstr("agents[0].agents: unknown agent or workflow \"ghost\""));
  EXPECT_THAT(error_of("agents: [{ name: a, model: m }]\nworkflows: [{ name: w, kind: chain, "
                       "steps: [a, b] }]\n"),
              HasSubstr("workflows[0].steps: unknown agent or workflow \"b\""));
  EXPECT_THAT(error_of("agents: [{ name: a, model: m }]\n"
                       "workflows: [{ name: w, kind: parallel, steps: [a], fan_in: z }]\n"),
              HasSubstr("workflows[0].fan_in: unknown agent or workflow \"z\""));
  EXPECT_THAT(error_of("agents: [{ name: a, model: m }]\n"
                       "workflows: [{ name: w, kind: router, steps: [a], model: gpt-5 }]\n"),
              HasSubstr("workflows[0].model: \"gpt-5\""));
  EXPECT_THAT(error_of("agents: [{ name: a, model: m }]\nintents: { default_agent: b }\n"),
              HasSubstr("intents.default_agent: unknown agent or workflow \"b\""));
}

TEST(AgentConfig, CyclesThroughStepsOrAgentsAsToolsAreRejected) {
  EXPECT_THAT(error_of("agents: [{ name: a, model: m, agents: [a] }]\n"),
              HasSubstr("\"a\" reaches itself"));
  EXPECT_THAT(error_of("agents: [{ name: a, model: m, agents: [w] }]\n"
                       "workflows: [{ name: w, kind: chain, steps: [a] }]\n"),
              HasSubstr("reaches itself"));
  EXPECT_THAT(
      error_of("agents: [{ name: a, model: m }]\n"
               "workflows:\n"
               "  - { name: w1, kind: chain, steps: [a, w2] }\n"
               "  - { name: w2, kind: evaluator_optimizer, generator: w1, evaluator: a }\n"),
      HasSubstr("reaches itself"));
  // A diamond is not a cycle.
  EXPECT_EQ(error_of("agents: [{ name: a, model: m }, { name: b, model: m, agents: [a] }]\n"
                     "workflows: [{ name: w, kind: parallel, steps: [a, b], fan_in: a }]\n"),
            "");
}

TEST(AgentConfig, BadKindsNamesAndValues) {
  EXPECT_THAT(
      error_of(
          "agents: [{ name: a, model: m }]\nworkflows: [{ name: w, kind: loop, steps: [a] }]\n"),
      HasSubstr("workflows[0].kind: expected chain, parallel, router, evaluator_optimizer or "
                "orchestrator, got \"loop\""));
  EXPECT_THAT(error_of("agents: [{ name: a, model: m }]\nworkflows: [{ name: w, kind: chain }]\n"),
              HasSubstr("workflows[0].steps: a chain needs steps"));
  EXPECT_THAT(
      error_of(
          "agents: [{ name: a, model: m }]\nworkflows: [{ name: w, kind: router, steps: [a] }]\n"),
      HasSubstr("workflows[0].model: a router needs a model"));
  EXPECT_THAT(error_of("agents: [{ name: a, model: m }]\n"
                       "workflows: [{ name: w, kind: evaluator_optimizer, evaluator: a }]\n"),
              HasSubstr("workflows[0].generator: is required"));
  EXPECT_THAT(
      error_of("agents: [{ name: a, model: m }]\n"
               "workflows: [{ name: w, kind: evaluator_optimizer, generator: a, evaluator: a, "
               "min_rating: great }]\n"),
      HasSubstr("workflows[0].min_rating: expected poor, fair, good or excellent"));
  EXPECT_THAT(error_of("agents: [{ name: \"a b\", model: m }]\n"),
              HasSubstr("agents[0].name: expected 1-48"));
  EXPECT_THAT(
      error_of(
          "agents: [{ name: a, model: m }]\nworkflows: [{ name: a, kind: chain, steps: [a] }]\n"),
      HasSubstr("workflows[0].name: \"a\" is already the name"));
  EXPECT_THAT(error_of("agents: [{ name: a, model: m, max_iterations: 0 }]\n"),
              HasSubstr("agents[0].max_iterations"));
  EXPECT_THAT(error_of("agents: [{ name: a, model: m, output_schema: { type: array } }]\n"),
              HasSubstr("agents[0].output_schema: a structured answer must be an object"));
  EXPECT_THAT(error_of("agents: [{ name: a, model: m, output_schema: \"{not json\" }]\n"),
              HasSubstr("agents[0].output_schema: expected a JSON Schema"));
  EXPECT_THAT(error_of("intents: { lease: 1s }\n"),
              HasSubstr("intents.lease: must be at least 2s"));
  EXPECT_THAT(error_of("intents: { on_restart: retry }\n"),
              HasSubstr("intents.on_restart: expected resume or fail, got \"retry\""));
  EXPECT_THAT(error_of("intents: { timeout: 0s }\n"),
              HasSubstr("intents.timeout: must be positive"));
}

TEST(AgentConfig, OutputSchemaMayBeJsonText) {
  auto c = parse(
      R"(agents: [{ name: a, model: m, output_schema: '{"type":"object","required":["x"]}' }])");
  EXPECT_EQ(c.agent.agents[0].output_schema["required"], json::array({"x"}));
}

// --- memCtx ---------------------------------------------------------------------------------

std::string mem_error_param(const json& m) {
  auto r = agent::render_mem_ctx(m);
  if (r) return "(rendered)";
  EXPECT_EQ(r.error().status, 400);
  EXPECT_EQ(r.error().code, "invalid_mem_ctx");
  return r.error().param;
}

TEST(MemCtx, RendersVectorsAndGraphFacts) {
  EXPECT_EQ(*agent::render_mem_ctx(nullptr), "");
  EXPECT_EQ(*agent::render_mem_ctx(json::object()), "");
  auto r = agent::render_mem_ctx(json::parse(R"({
    "vectors": [{"text": "Ada likes tea", "score": 0.9, "source": "notes"}, "plain hit"],
    "graph": {"entities": [{"name": "Ada", "entityType": "person", "observations": ["a", "b"]}],
              "relations": [{"from": "Ada", "relationType": "knows", "to": "Bob"}, ["Bob", "owns", "Rex"]]}})"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_THAT(*r, HasSubstr("## Memory context"));
  EXPECT_THAT(*r, HasSubstr("- (score 0.900) [notes] Ada likes tea\n"));
  EXPECT_THAT(*r, HasSubstr("- plain hit\n"));
  EXPECT_THAT(*r, HasSubstr("- Ada (person): a; b\n"));
  EXPECT_THAT(*r, HasSubstr("- Ada knows Bob\n"));
  EXPECT_THAT(*r, HasSubstr("- Bob owns Rex\n"));
  auto triples = agent::render_mem_ctx(
      json::parse(R"({"graph": [{"subject": "s", "predicate": "p", "object": 3}]})"));
  ASSERT_TRUE(triples);
  EXPECT_THAT(*triples, HasSubstr("- s p 3\n"));
}

TEST(MemCtx, ErrorsNameTheField) {
  EXPECT_EQ(mem_error_param("text"), "memCtx");
  EXPECT_EQ(mem_error_param(json::parse(R"({"vector": []})")), "memCtx.vector");
  EXPECT_EQ(mem_error_param(json::parse(R"({"vectors": "x"})")), "memCtx.vectors");
  EXPECT_EQ(mem_error_param(json::parse(R"({"vectors": ["ok", {"txt": "no"}]})")),
            "memCtx.vectors[1]");
  EXPECT_EQ(mem_error_param(json::parse(R"({"vectors": [{"text": "t", "score": "high"}]})")),
            "memCtx.vectors[0].score");
  EXPECT_EQ(mem_error_param(json::parse(R"({"graph": "facts"})")), "memCtx.graph");
  EXPECT_EQ(mem_error_param(json::parse(R"({"graph": [["a", "b"]]})")), "memCtx.graph[0]");
  EXPECT_EQ(mem_error_param(json::parse(R"({"graph": [{"subject": "a", "object": "b"}]})")),
            "memCtx.graph[0]");
  EXPECT_EQ(mem_error_param(json::parse(R"({"graph": {"nodes": []}})")), "memCtx.graph.nodes");
  EXPECT_EQ(mem_error_param(json::parse(R"({"graph": {"entities": {}}})")),
            "memCtx.graph.entities");
  EXPECT_EQ(mem_error_param(json::parse(R"({"graph": {"entities": [{"type": "x"}]}})")),
            "memCtx.graph.entities[0]");
  EXPECT_EQ(mem_error_param(json::parse(R"({"graph": {"relations": [1]}})")),
            "memCtx.graph.relations[0]");
  json many = {{"vectors", json::array()}};
  for (int i = 0; i < 1001; ++i) many["vectors"].push_back("hit");
  EXPECT_EQ(mem_error_param(many), "memCtx.vectors");
}

// --- validate_json ---------------------------------------------------------------------------

TEST(ValidateJson, AcceptsConformingValues) {
  auto schema =
      json::parse(R"({"type": "object", "required": ["n", "tags"], "additionalProperties": false,
    "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 10},
                   "tags": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 3},
                   "kind": {"enum": ["a", "b"]}, "v": {"const": 2}, "opt": {"type": ["string", "null"]}}})");
  EXPECT_EQ(
      agent::validate_json(
          schema, json::parse(R"({"n": 3, "tags": ["x"], "kind": "a", "v": 2, "opt": null})")),
      "");
  EXPECT_EQ(agent::validate_json(schema, json::parse(R"({"n": 3.0, "tags": []})")), "");
  EXPECT_EQ(agent::validate_json(json(), json::parse(R"([1, "x"])")), "");  // no schema
}

TEST(ValidateJson, ReportsTheFirstProblemWithItsPointer) {
  auto schema = json::parse(R"({"type": "object", "required": ["n"], "additionalProperties": false,
    "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 10},
                   "list": {"type": "array", "items": {"type": "object", "properties": {"s": {"type": "string", "maxLength": 2}}},
                            "minItems": 1},
                   "kind": {"enum": ["a", "b"]}, "v": {"const": 2}}})");
  auto check = [&schema](const char* value) {
    return agent::validate_json(schema, json::parse(value));
  };
  EXPECT_EQ(check(R"("text")"), "/: expected \"object\", got string");
  EXPECT_EQ(check(R"({})"), "/: missing required property \"n\"");
  EXPECT_EQ(check(R"({"n": 2.5})"), "/n: expected \"integer\", got number");
  EXPECT_EQ(check(R"({"n": 0})"), "/n: below the minimum 1");
  EXPECT_EQ(check(R"({"n": 11})"), "/n: above the maximum 10");
  EXPECT_EQ(check(R"({"n": 1, "extra": true})"), "/: unexpected property \"extra\"");
  EXPECT_EQ(check(R"({"n": 1, "list": []})"), "/list: fewer than 1 items");
  EXPECT_EQ(check(R"({"n": 1, "list": [{"s": "ok"}, {"s": "long"}]})"), "/list/1/s: longer than 2");
  EXPECT_EQ(check(R"({"n": 1, "kind": "c"})"), "/kind: \"c\" is not one of [\"a\",\"b\"]");
  EXPECT_EQ(check(R"({"n": 1, "v": 3})"), "/v: expected 2");
}

TEST(ValidateJson, StringLengthsCountCharactersNotBytes) {
  // JSON Schema counts characters (code points): "héllo" is 5 long, though 6 bytes in UTF-8.
  auto schema = json::parse(R"({"type": "string", "minLength": 5, "maxLength": 5})");
  EXPECT_EQ(agent::validate_json(schema, "h\xc3\xa9llo"), "");
  EXPECT_EQ(agent::validate_json(schema, "\xe2\x82\xac\xe2\x82\xac"), "/: shorter than 5");
}

}  // namespace
}  // namespace agentd
