// Smoke test of the in-process LLM provider double through its C++ API over real sockets.
#include "support/fake_llm.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "support/http_client.hpp"

namespace agentd::test {
namespace {

using json = nlohmann::json;

const std::vector<std::pair<std::string, std::string>> kOpenAi{
    {"Authorization", "Bearer fake-key"}, {"Content-Type", "application/json"}};

std::string chat_body(const std::string& model, const std::string& text, bool stream = false) {
  return json{{"model", model},
              {"stream", stream},
              {"messages", json::array({{{"role", "user"}, {"content", text}}})}}
      .dump();
}

TEST(FakeLlm, ScriptedErrorThenDefaultEcho) {
  FakeLlm fake;
  Action limited = Action::fail(429, "slow down");
  limited.error->retry_after_s = 7;
  fake.script(limited);
  ASSERT_EQ(fake.pending(), 1u);

  auto r1 = request(fake.port(), "POST", "/v1/chat/completions", kOpenAi,
                    chat_body("gpt-4o-mini", "first"));
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->status, 429);
  EXPECT_EQ(r1->header("retry-after"), "7");
  auto e = json::parse(r1->body);
  EXPECT_EQ(e["error"]["message"], "slow down");
  EXPECT_EQ(e["error"]["code"], "rate_limit_exceeded");
  EXPECT_TRUE(e["error"].contains("param"));
  EXPECT_EQ(fake.pending(), 0u);

  auto r2 = request(fake.port(), "POST", "/v1/chat/completions", kOpenAi,
                    chat_body("gpt-4o-mini", "hello fake"));
  ASSERT_TRUE(r2);
  ASSERT_EQ(r2->status, 200);
  auto c = json::parse(r2->body);
  EXPECT_EQ(c["choices"][0]["message"]["content"], "echo: hello fake");
  EXPECT_EQ(c["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(c["usage"]["prompt_tokens"], 2);  // 10 characters
  EXPECT_EQ(c["usage"]["completion_tokens"], 4);

  // The same action rendered by Anthropic's route.
  fake.script(Action::fail(529, "Overloaded"));
  auto r3 = request(fake.port(), "POST", "/v1/messages",
                    {{"x-api-key", "fake-key"}, {"anthropic-version", "2023-06-01"}},
                    R"({"model":"claude-sonnet-4-6","max_tokens":5,"messages":[]})");
  ASSERT_TRUE(r3);
  EXPECT_EQ(r3->status, 529);
  auto a = json::parse(r3->body);
  EXPECT_EQ(a["type"], "error");
  EXPECT_EQ(a["error"]["type"], "overloaded_error");
}

TEST(FakeLlm, RecordsEveryProviderRequest) {
  FakeLlm fake({.api_key = "k2"});
  auto bad = request(fake.port(), "POST", "/v1/chat/completions",
                     {{"Authorization", "Bearer wrong"}}, chat_body("m", "x"));
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 401);
  EXPECT_EQ(json::parse(bad->body)["error"]["code"], "invalid_api_key");

  auto g = request(fake.port(), "POST", "/v1beta/models/gemini-2.5-flash:generateContent?key=k2",
                   {}, R"({"contents":[{"role":"user","parts":[{"text":"hola"}]}]})");
  ASSERT_TRUE(g);
  ASSERT_EQ(g->status, 200) << g->body;
  EXPECT_EQ(json::parse(g->body)["candidates"][0]["content"]["parts"][0]["text"], "echo: hola");

  ASSERT_TRUE(request(fake.port(), "GET", "/_fake/requests"));  // control: not recorded
  ASSERT_EQ(fake.count(), 2u);
  auto reqs = fake.requests();
  EXPECT_EQ(reqs[0].method, "POST");
  EXPECT_EQ(reqs[0].path, "/v1/chat/completions");
  EXPECT_EQ(reqs[0].header("Authorization"), "Bearer wrong");
  EXPECT_EQ(reqs[0].json()["model"], "m");
  EXPECT_EQ(reqs[1].path, "/v1beta/models/gemini-2.5-flash:generateContent");
  EXPECT_EQ(reqs[1].query, "key=k2");
  EXPECT_LE(reqs[0].time, reqs[1].time);

  fake.reset();
  EXPECT_EQ(fake.count(), 0u);
}

TEST(FakeLlm, DownModelsAnswer503WithoutConsumingActions) {
  FakeLlm fake;
  fake.set_down({"gpt-down"});
  fake.script(Action::reply("from the fallback"));
  auto down =
      request(fake.port(), "POST", "/v1/chat/completions", kOpenAi, chat_body("gpt-down", "x"));
  ASSERT_TRUE(down);
  EXPECT_EQ(down->status, 503);
  EXPECT_EQ(json::parse(down->body)["error"]["type"], "server_error");
  EXPECT_EQ(fake.pending(), 1u);

  auto up = request(fake.port(), "POST", "/v1/chat/completions", kOpenAi, chat_body("gpt-up", "x"));
  ASSERT_TRUE(up);
  ASSERT_EQ(up->status, 200);
  EXPECT_EQ(json::parse(up->body)["choices"][0]["message"]["content"], "from the fallback");

  // The same through the control endpoint.
  auto set = request(fake.port(), "POST", "/_fake/down", {}, R"({"models":["gpt-up"]})");
  ASSERT_TRUE(set);
  EXPECT_EQ(set->status, 200);
  auto now_down =
      request(fake.port(), "POST", "/v1/chat/completions", kOpenAi, chat_body("gpt-up", "x"));
  ASSERT_TRUE(now_down);
  EXPECT_EQ(now_down->status, 503);
}

TEST(FakeLlm, ControlScriptRejectsUnknownKeys) {
  FakeLlm fake;
  auto bad = request(fake.port(), "POST", "/_fake/script", {}, R"([{"txt":"typo"}])");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(bad->body.find("action.txt"), std::string::npos) << bad->body;
  auto ok = request(fake.port(), "POST", "/_fake/script", {},
                    R"([{"text":"a"},{"error":{"status":500}}])");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(fake.pending(), 2u);
}

TEST(FakeLlm, CutStreamClosesWithoutDone) {
  FakeLlm fake;
  Action cut = Action::reply("one two three four");
  cut.cut_after = 2;
  fake.script(cut);
  auto conn = Connection::open(fake.port());
  ASSERT_TRUE(conn);
  auto headers = kOpenAi;
  ASSERT_TRUE(conn->send(
      build_request("POST", "/v1/chat/completions", headers, chat_body("gpt-4o-mini", "x", true))));
  auto head = conn->read_head();
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  std::string raw;
  for (int i = 0; i < 50; ++i) {
    auto more = conn->read_some(100ms);
    if (more.empty()) break;
    raw += more;
  }
  EXPECT_TRUE(conn->wait_closed(2s));
  auto body = dechunk(raw);
  EXPECT_NE(body.find("\"content\":\"one \""), std::string::npos) << body;
  EXPECT_EQ(body.find("two"), std::string::npos) << body;
  EXPECT_EQ(body.find("[DONE]"), std::string::npos) << body;
}

// A conversation of the policy's shape: the user's message, then `results` tool rounds.
std::string policy_body(int results, bool stream, const json& tools) {
  json messages = json::array({{{"role", "user"}, {"content", "go"}}});
  for (int i = 1; i <= results; ++i) {
    std::string id = "call_" + std::to_string(i);
    json call = {
        {"id", id}, {"type", "function"}, {"function", {{"name", "x"}, {"arguments", "{}"}}}};
    messages.push_back(
        {{"role", "assistant"}, {"content", nullptr}, {"tool_calls", json::array({call})}});
    messages.push_back({{"role", "tool"}, {"tool_call_id", id}, {"content", "ok"}});
  }
  json body = {
      {"model", "gpt-4o-mini"}, {"stream", stream}, {"messages", messages}, {"tools", tools}};
  if (stream) body["stream_options"] = {{"include_usage", true}};
  return body.dump();
}

// An OpenAI stream put back together: content, the first tool call, finish_reason, usage.
json assemble(const std::string& sse) {
  json out = {{"content", ""},     {"name", ""},       {"arguments", ""},
              {"finish", nullptr}, {"usage", nullptr}, {"done", false}};
  std::size_t at = 0;
  while ((at = sse.find("data: ", at)) != std::string::npos) {
    auto end = sse.find('\n', at);
    std::string data = sse.substr(at + 6, end - at - 6);
    at = end;
    if (data == "[DONE]") {
      out["done"] = true;
      continue;
    }
    auto chunk = json::parse(data);
    if (!chunk["usage"].is_null()) out["usage"] = chunk["usage"];
    for (const auto& c : chunk["choices"]) {
      const auto& d = c["delta"];
      if (d.contains("content") && d["content"].is_string()) {
        out["content"] = out["content"].get<std::string>() + d["content"].get<std::string>();
      }
      if (d.contains("tool_calls")) {
        const auto& f = d["tool_calls"][0]["function"];
        if (f.contains("name")) out["name"] = f["name"];
        out["arguments"] = out["arguments"].get<std::string>() + f.value("arguments", "");
      }
      if (!c["finish_reason"].is_null()) out["finish"] = c["finish_reason"];
    }
  }
  return out;
}

TEST(FakeLlm, PolicyAnswersEachConversationByItsShape) {
  FakeLlm fake;
  auto set = request(fake.port(), "POST", "/_fake/policy", {},
                     R"({"tool_steps":2,"tool":"echo","delay_ms":30,"record":false})");
  ASSERT_TRUE(set);
  ASSERT_EQ(set->status, 200) << set->body;
  json tools = json::array({{{"type", "function"}, {"function", {{"name", "everything__add"}}}},
                            {{"type", "function"}, {"function", {{"name", "everything__echo"}}}}});

  // Non-streaming, no tool result yet: a call of the offered namespaced tool, after the delay.
  auto started = std::chrono::steady_clock::now();
  auto r0 =
      request(fake.port(), "POST", "/v1/chat/completions", kOpenAi, policy_body(0, false, tools));
  EXPECT_GE(std::chrono::steady_clock::now() - started, 30ms);
  ASSERT_TRUE(r0);
  ASSERT_EQ(r0->status, 200) << r0->body;
  auto c0 = json::parse(r0->body)["choices"][0];
  EXPECT_EQ(c0["finish_reason"], "tool_calls");
  const auto& f0 = c0["message"]["tool_calls"][0]["function"];
  EXPECT_EQ(f0["name"], "everything__echo");
  EXPECT_EQ(json::parse(f0["arguments"].get<std::string>()), json({{"message", "step 1"}}));

  // Streaming, one result: the second call as chunks, with the usage chunk; no tool offered,
  // so the name as given.
  auto r1 = request(fake.port(), "POST", "/v1/chat/completions", kOpenAi,
                    policy_body(1, true, json::array()));
  ASSERT_TRUE(r1);
  ASSERT_EQ(r1->status, 200);
  auto s1 = assemble(r1->body);
  EXPECT_EQ(s1["name"], "echo") << r1->body;
  EXPECT_EQ(json::parse(s1["arguments"].get<std::string>()), json({{"message", "step 2"}}));
  EXPECT_EQ(s1["finish"], "tool_calls");
  EXPECT_TRUE(s1["usage"].is_object()) << r1->body;
  EXPECT_TRUE(s1["done"].get<bool>());

  // Two results and more: the final answer, streamed and not.
  auto r2 =
      request(fake.port(), "POST", "/v1/chat/completions", kOpenAi, policy_body(2, true, tools));
  ASSERT_TRUE(r2);
  auto s2 = assemble(r2->body);
  EXPECT_EQ(s2["content"], "done after 2 tool steps") << r2->body;
  EXPECT_EQ(s2["finish"], "stop");
  auto r3 =
      request(fake.port(), "POST", "/v1/chat/completions", kOpenAi, policy_body(3, false, tools));
  ASSERT_TRUE(r3);
  EXPECT_EQ(json::parse(r3->body)["choices"][0]["message"]["content"], "done after 3 tool steps");
  EXPECT_EQ(fake.count(), 0u);  // record: false

  // A scripted action still goes first; with the policy off the default echo is back.
  fake.script(Action::reply("scripted"));
  auto r4 =
      request(fake.port(), "POST", "/v1/chat/completions", kOpenAi, policy_body(0, false, tools));
  ASSERT_TRUE(r4);
  EXPECT_EQ(json::parse(r4->body)["choices"][0]["message"]["content"], "scripted");
  auto off = request(fake.port(), "POST", "/_fake/policy", {}, R"({"off":true})");
  ASSERT_TRUE(off);
  EXPECT_EQ(off->status, 200);
  auto r5 = request(fake.port(), "POST", "/v1/chat/completions", kOpenAi, chat_body("m", "hi"));
  ASSERT_TRUE(r5);
  EXPECT_EQ(json::parse(r5->body)["choices"][0]["message"]["content"], "echo: hi");
  EXPECT_EQ(fake.count(), 1u);  // recorded again

  auto bad = request(fake.port(), "POST", "/_fake/policy", {}, R"({"steps":3})");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(bad->body.find("policy.steps"), std::string::npos) << bad->body;
}

TEST(FakeLlm, StopsPromptlyWithAHangingRequest) {
  auto fake = std::make_unique<FakeLlm>();
  fake->script(Action::hanging());
  auto conn = Connection::open(fake->port());
  ASSERT_TRUE(conn);
  ASSERT_TRUE(conn->send(
      build_request("POST", "/v1/chat/completions", kOpenAi, chat_body("gpt-4o-mini", "x"))));
  EXPECT_FALSE(conn->read_response(300ms));  // no answer
  auto started = std::chrono::steady_clock::now();
  fake.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);
  EXPECT_TRUE(conn->wait_closed(2s));
}

}  // namespace
}  // namespace agentd::test
