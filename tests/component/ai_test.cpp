// The AI routing layer end to end in-process: agentd's server, gateway and HTTP client against
// the provider test double (tests/support/fake_llm), over real sockets.
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <future>
#include <sstream>
#include <thread>

#include "agentd/ai/gateway.hpp"
#include "agentd/api/api.hpp"
#include "agentd/api/openai.hpp"
#include "agentd/app/config.hpp"
#include "agentd/net/client.hpp"
#include "agentd/net/server.hpp"
#include "agentd/net/sse.hpp"
#include "support/fake_llm.hpp"
#include "support/http_client.hpp"

namespace agentd::test {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kToken = "ai-test-token-0123456789";
constexpr const char* kNarrowToken = "narrow-token-0123456789ab";

// agentd (server + gateway + client) on its own loop thread, configured from YAML whose
// `${FAKE}` is the provider double's URL.
class Agentd {
 public:
  Agentd(const FakeLlm& fake, const std::string& ai_yaml) : Agentd(fake.url(), ai_yaml) {}
  Agentd(const std::string& upstream_url, const std::string& ai_yaml) {
    std::string yaml = std::string("server: {listen: 127.0.0.1:0}\n") +
                       "clients:\n"
                       "  - {name: full, token: " + kToken + ", scopes: ['*']}\n"
                       "  - {name: narrow, token: " + kNarrowToken +
                       ", scopes: ['models:fast']}\n"
                       "log: {level: warn, access_log: false}\n" + ai_yaml;
    for (std::size_t p; (p = yaml.find("${FAKE}")) != std::string::npos;) {
      yaml.replace(p, 7, upstream_url);
    }
    config_ = app::parse_config(core::load_yaml_string(yaml));
    client_ = net::make_http_client(io_.get_executor(), config_.http_client, metrics_);
    gateway_ = ai::make_gateway(io_.get_executor(), config_.ai, *client_, metrics_);
    api_ = std::make_unique<api::Api>(config_.clients, config_.server.cors, metrics_);
    api::add_openai_routes(*api_, *gateway_);
    server_ = net::make_http_server(io_, config_.server, api_->handler(), metrics_);
    port_ = server_->start().at(0).port;
    thread_ = std::thread([this] { io_.run(); });
  }
  ~Agentd() {
    io_.stop();
    thread_.join();
  }
  std::uint16_t port() const { return port_; }
  std::string metrics() const { return metrics_.render(); }

 private:
  boost::asio::io_context io_{1};
  core::Registry metrics_;
  app::Config config_;
  std::unique_ptr<net::HttpClient> client_;
  std::unique_ptr<ai::Gateway> gateway_;
  std::unique_ptr<api::Api> api_;
  std::unique_ptr<net::HttpServer> server_;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

const char* kProviders =
    "ai:\n"
    "  providers:\n"
    "    - {name: oai, kind: openai, base_url: '${FAKE}/v1', api_key: fake-key,\n"
    "       models: [gpt-4o-mini, gpt-4o, text-embedding-3-small, tts-1, whisper-1],\n"
    "       prices: {gpt-4o-mini: {input: 0.15, output: 0.6}}}\n"
    "    - {name: ant, kind: anthropic, base_url: '${FAKE}', api_key: fake-key}\n"
    "    - {name: gem, kind: gemini, base_url: '${FAKE}/v1beta', api_key: fake-key}\n"
    "  retry: {attempts: 2, backoff: 10ms, max_backoff: 50ms}\n";

std::string ai_yaml(const std::string& extra) { return std::string(kProviders) + extra; }

std::optional<HttpResponse> post(std::uint16_t port, const std::string& path, const json& body,
                                 const char* token = kToken,
                                 std::vector<std::pair<std::string, std::string>> extra = {}) {
  auto headers = extra;
  headers.emplace_back("Authorization", std::string("Bearer ") + token);
  headers.emplace_back("Content-Type", "application/json");
  return request(port, "POST", path, headers, body.dump());
}

json chat_body(const std::string& model, const std::string& text = "hi", bool stream = false) {
  json b = {{"model", model}, {"messages", json::array({{{"role", "user"}, {"content", text}}})}};
  if (stream) b["stream"] = true;
  return b;
}

// The `data:` payloads of an event stream body.
std::vector<std::string> data_lines(const std::string& body) {
  std::vector<std::string> out;
  net::SseParser p;
  for (auto& e : p.feed(body)) out.push_back(e.data);
  return out;
}

// Concatenated delta.content of a stream's chunks.
std::string stream_text(const std::vector<std::string>& data) {
  std::string text;
  for (const auto& d : data) {
    if (d == "[DONE]") continue;
    auto j = json::parse(d);
    if (!j.contains("choices")) continue;
    for (auto& c : j["choices"]) {
      if (c.contains("delta") && c["delta"].contains("content") && c["delta"]["content"].is_string()) {
        text += c["delta"]["content"].get<std::string>();
      }
    }
  }
  return text;
}

TEST(Ai, ChatThroughAnAliasAnswersInOpenAiShapeWithRoutingHeaders) {
  FakeLlm fake;
  Agentd d(fake, ai_yaml("  models:\n    - {name: fast, targets: [oai/gpt-4o-mini]}\n"));
  auto r = post(d.port(), "/v1/chat/completions", chat_body("fast", "hello there"));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto j = json::parse(r->body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "echo: hello there");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_GT(j["usage"]["total_tokens"].get<int>(), 0);
  EXPECT_EQ(r->header("x-agentd-provider"), "oai");
  EXPECT_EQ(r->header("x-agentd-model"), "gpt-4o-mini");
  EXPECT_EQ(r->header("x-agentd-attempts"), "1");
  EXPECT_FALSE(r->header("x-agentd-overhead-us").empty());
  // The upstream saw the real model id and our provider key, not the client's token.
  auto reqs = fake.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].path, "/v1/chat/completions");
  EXPECT_EQ(reqs[0].json()["model"], "gpt-4o-mini");
  EXPECT_EQ(reqs[0].header("authorization"), "Bearer fake-key");
}

TEST(Ai, StreamingDeliversChunksThenDoneAndUsageOnlyWhenAsked) {
  FakeLlm fake;
  Agentd d(fake, ai_yaml(""));
  auto r = post(d.port(), "/v1/chat/completions", chat_body("oai/gpt-4o-mini", "stream me", true));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->header("content-type"), "text/event-stream");
  auto data = data_lines(r->body);
  ASSERT_FALSE(data.empty());
  EXPECT_EQ(data.back(), "[DONE]");
  EXPECT_EQ(stream_text(data), "echo: stream me");
  for (const auto& line : data) EXPECT_EQ(line.find("\"usage\":{"), std::string::npos) << line;

  auto body = chat_body("oai/gpt-4o-mini", "count me", true);
  body["stream_options"] = {{"include_usage", true}};
  auto r2 = post(d.port(), "/v1/chat/completions", body);
  ASSERT_TRUE(r2);
  auto data2 = data_lines(r2->body);
  ASSERT_GE(data2.size(), 2u);
  auto usage = json::parse(data2[data2.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_GT(usage["usage"]["completion_tokens"].get<int>(), 0);
}

TEST(Ai, FallbackMovesToTheNextTargetWhenOneIsDown) {
  FakeLlm fake;
  fake.set_down({"gpt-4o"});
  Agentd d(fake, ai_yaml("  models:\n    - {name: smart, targets: [oai/gpt-4o, ant/claude-sonnet-4-5]}\n"));
  auto r = post(d.port(), "/v1/chat/completions", chat_body("smart", "fall"));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["choices"][0]["message"]["content"], "echo: fall");
  EXPECT_EQ(r->header("x-agentd-provider"), "ant");
  EXPECT_EQ(r->header("x-agentd-attempts"), "3");  // two tries on the down target, then one
  auto reqs = fake.requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[2].path, "/v1/messages");
  EXPECT_EQ(reqs[2].header("x-api-key"), "fake-key");
  EXPECT_FALSE(reqs[2].header("anthropic-version").empty());
}

TEST(Ai, RetryHonoursRetryAfterThenSucceedsOnTheSameTarget) {
  FakeLlm fake;
  FakeError e;
  e.status = 429;
  e.message = "slow down";
  e.retry_after_s = 1;
  Action a;
  a.error = e;
  fake.script(a);
  Agentd d(fake, ai_yaml(""));
  auto started = std::chrono::steady_clock::now();
  auto r = post(d.port(), "/v1/chat/completions", chat_body("oai/gpt-4o-mini", "again"));
  auto took = std::chrono::steady_clock::now() - started;
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->header("x-agentd-attempts"), "2");
  EXPECT_GE(took, 900ms);  // waited for Retry-After
  EXPECT_EQ(fake.count(), 2u);
}

TEST(Ai, ClientErrorsFromUpstreamAreNeitherRetriedNorFallenBack) {
  FakeLlm fake;
  FakeError e;
  e.status = 400;
  e.message = "bad parameter foo";
  Action a;
  a.error = e;
  fake.script(a);
  Agentd d(fake, ai_yaml("  models:\n    - {name: smart, targets: [oai/gpt-4o, ant/claude-sonnet-4-5]}\n"));
  auto r = post(d.port(), "/v1/chat/completions", chat_body("smart"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  auto j = json::parse(r->body);
  EXPECT_NE(j["error"]["message"].get<std::string>().find("bad parameter foo"), std::string::npos);
  EXPECT_EQ(fake.count(), 1u);
}

TEST(Ai, EveryTargetFailingReportsEachFailure) {
  FakeLlm fake;
  fake.set_down({"gpt-4o", "claude-sonnet-4-5"});
  Agentd d(fake, ai_yaml("  models:\n    - {name: smart, targets: [oai/gpt-4o, ant/claude-sonnet-4-5]}\n"));
  auto r = post(d.port(), "/v1/chat/completions", chat_body("smart"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  auto msg = json::parse(r->body)["error"]["message"].get<std::string>();
  EXPECT_NE(msg.find("oai/gpt-4o"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ant/claude-sonnet-4-5"), std::string::npos) << msg;
}

TEST(Ai, StreamFallsBackBeforeTheFirstByteOnly) {
  FakeLlm fake;
  fake.set_down({"gpt-4o"});
  Agentd d(fake, ai_yaml("  models:\n    - {name: smart, targets: [oai/gpt-4o, gem/gemini-2.5-flash]}\n"));
  auto r = post(d.port(), "/v1/chat/completions", chat_body("smart", "via gemini", true));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->header("x-agentd-provider"), "gem");
  auto data = data_lines(r->body);
  EXPECT_EQ(stream_text(data), "echo: via gemini");
  EXPECT_EQ(data.back(), "[DONE]");
}

TEST(Ai, MidStreamFailureEndsTheStreamWithAnErrorEvent) {
  FakeLlm fake;
  Action a;
  a.text = "a long answer that will be cut off somewhere in the middle";
  a.cut_after = 4;
  fake.script(a);
  Agentd d(fake, ai_yaml("  models:\n    - {name: smart, targets: [oai/gpt-4o, ant/claude-sonnet-4-5]}\n"));
  auto r = post(d.port(), "/v1/chat/completions", chat_body("smart", "x", true));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  auto data = data_lines(r->body);
  ASSERT_FALSE(data.empty());
  EXPECT_NE(data.back(), "[DONE]");
  auto last = json::parse(data.back());
  ASSERT_TRUE(last.contains("error")) << data.back();
  EXPECT_EQ(fake.count(), 1u);  // no fallback once the client had bytes
}

TEST(Ai, FirstTokenTimeoutIsRetriedThenMovesOn) {
  FakeLlm fake;
  fake.script({Action::hanging(), Action::hanging()});
  Agentd d(fake, ai_yaml("  first_token_timeout: 300ms\n"
                         "  models:\n    - {name: smart, targets: [oai/gpt-4o, ant/claude-sonnet-4-5]}\n"));
  auto started = std::chrono::steady_clock::now();
  auto r = post(d.port(), "/v1/chat/completions", chat_body("smart", "late", true));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  EXPECT_EQ(stream_text(data_lines(r->body)), "echo: late");
  EXPECT_EQ(r->header("x-agentd-provider"), "ant");
}

TEST(Ai, ContextWindowErrorsFallBackToALargerWindow) {
  FakeLlm fake;
  FakeError e;
  e.status = 400;
  e.message = "This model's maximum context length is 8192 tokens.";
  e.code = "context_length_exceeded";
  Action a;
  a.error = e;
  fake.script(a);
  Agentd d(fake, ai_yaml("  models:\n    - name: long\n      targets:\n"
                         "        - {model: oai/gpt-4o-mini, context_window: 8192}\n"
                         "        - {model: oai/gpt-4o, context_window: 8192}\n"
                         "        - {model: gem/gemini-2.5-flash, context_window: 1000000}\n"));
  auto r = post(d.port(), "/v1/chat/completions", chat_body("long"));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->header("x-agentd-provider"), "gem");
  EXPECT_EQ(fake.count(), 2u);  // the second 8k target was skipped
}

TEST(Ai, CircuitBreakerSkipsAFailingTargetDuringItsCooldown) {
  FakeLlm fake;
  fake.set_down({"gpt-4o"});
  Agentd d(fake, ai_yaml("  cooldown: {failures: 2, window: 1m, duration: 1m}\n"
                         "  models:\n    - {name: smart, targets: [oai/gpt-4o, ant/claude-sonnet-4-5]}\n"));
  ASSERT_EQ(post(d.port(), "/v1/chat/completions", chat_body("smart", "one"))->status, 200);
  EXPECT_EQ(fake.count(), 3u);
  auto r = post(d.port(), "/v1/chat/completions", chat_body("smart", "two"));
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->header("x-agentd-attempts"), "1");  // straight to the healthy target
  EXPECT_EQ(fake.count(), 4u);
}

TEST(Ai, BadRequestsGetClearOpenAiErrors) {
  FakeLlm fake;
  Agentd d(fake, ai_yaml("  models:\n    - {name: fast, targets: [oai/gpt-4o-mini]}\n"));
  auto auth = std::vector<std::pair<std::string, std::string>>{
      {"Authorization", std::string("Bearer ") + kToken}, {"Content-Type", "application/json"}};
  auto r = request(d.port(), "POST", "/v1/chat/completions", auth, "{not json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("not valid JSON"), std::string::npos);

  r = post(d.port(), "/v1/chat/completions", {{"model", "fast"}, {"messages", json::array()}});
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(json::parse(r->body)["error"]["param"], "messages");

  auto bad_role = chat_body("fast");
  bad_role["messages"][0]["role"] = "wizard";
  r = post(d.port(), "/v1/chat/completions", bad_role);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(json::parse(r->body)["error"]["param"], "messages[0].role");

  auto hot = chat_body("fast");
  hot["temperature"] = 7;
  r = post(d.port(), "/v1/chat/completions", hot);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(json::parse(r->body)["error"]["param"], "temperature");

  r = post(d.port(), "/v1/chat/completions", chat_body("no-such-model"));
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "model_not_found");

  r = post(d.port(), "/v1/chat/completions", chat_body("oai/gpt-4o-mini"), kNarrowToken);
  EXPECT_EQ(r->status, 403);
  EXPECT_EQ(fake.count(), 0u);  // none of these reached a provider
}

TEST(Ai, ModelsListsAliasesWithLobeChatMetadataFilteredByScope) {
  FakeLlm fake;
  Agentd d(fake, ai_yaml("  models:\n"
                         "    - {name: fast, targets: [oai/gpt-4o-mini], display_name: Fast,\n"
                         "       context_window: 128000, vision: true}\n"
                         "    - {name: smart, targets: [oai/gpt-4o]}\n"));
  auto r = request(d.port(), "GET", "/v1/models", {{"Authorization", std::string("Bearer ") + kToken}});
  ASSERT_EQ(r->status, 200);
  auto j = json::parse(r->body);
  EXPECT_EQ(j["object"], "list");
  bool found = false;
  for (auto& m : j["data"]) {
    if (m["id"] == "fast") {
      found = true;
      EXPECT_EQ(m["displayName"], "Fast");
      EXPECT_EQ(m["contextWindowTokens"], 128000);
      EXPECT_EQ(m["vision"], true);
    }
  }
  EXPECT_TRUE(found);
  EXPECT_GT(j["data"].size(), 3u);  // provider/model entries too

  auto narrow = request(d.port(), "GET", "/v1/models",
                        {{"Authorization", std::string("Bearer ") + kNarrowToken}});
  auto n = json::parse(narrow->body);
  ASSERT_EQ(n["data"].size(), 1u);
  EXPECT_EQ(n["data"][0]["id"], "fast");

  auto one = request(d.port(), "GET", "/v1/models/oai/gpt-4o",
                     {{"Authorization", std::string("Bearer ") + kToken}});
  ASSERT_EQ(one->status, 200);
  EXPECT_EQ(json::parse(one->body)["id"], "oai/gpt-4o");
}

TEST(Ai, ToolCallsStreamThroughAnthropicTranslation) {
  FakeLlm fake;
  fake.script(Action::tools({{"get_weather", R"({"city":"Paris","unit":"c"})", "toolu_1"},
                             {"get_time", R"({"tz":"CET"})", "toolu_2"}}));
  Agentd d(fake, ai_yaml(""));
  auto body = chat_body("ant/claude-sonnet-4-5", "weather?", true);
  body["tools"] = json::array(
      {{{"type", "function"},
        {"function", {{"name", "get_weather"}, {"parameters", {{"type", "object"}}}}}},
       {{"type", "function"},
        {"function", {{"name", "get_time"}, {"parameters", {{"type", "object"}}}}}}});
  auto r = post(d.port(), "/v1/chat/completions", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  std::map<int, std::string> args, names;
  std::string finish;
  for (auto& line : data_lines(r->body)) {
    if (line == "[DONE]") continue;
    auto j = json::parse(line);
    for (auto& c : j["choices"]) {
      if (!c["finish_reason"].is_null()) finish = c["finish_reason"].get<std::string>();
      if (!c["delta"].contains("tool_calls")) continue;
      for (auto& tc : c["delta"]["tool_calls"]) {
        int i = tc["index"].get<int>();
        if (tc["function"].contains("name")) names[i] += tc["function"]["name"].get<std::string>();
        if (tc["function"].contains("arguments")) {
          args[i] += tc["function"]["arguments"].get<std::string>();
        }
      }
    }
  }
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_EQ(names[0], "get_weather");
  EXPECT_EQ(names[1], "get_time");
  EXPECT_EQ(json::parse(args[0]), json::parse(R"({"city":"Paris","unit":"c"})"));
  EXPECT_EQ(json::parse(args[1]), json::parse(R"({"tz":"CET"})"));
  // The upstream got Anthropic's tool shape.
  auto up = fake.requests().at(0).json();
  EXPECT_EQ(up["tools"][0]["name"], "get_weather");
  EXPECT_TRUE(up["tools"][0].contains("input_schema"));
}

TEST(Ai, EmbeddingsAndAudioPassThroughToOpenAiCompatibleProviders) {
  FakeLlm fake;
  Agentd d(fake, ai_yaml(""));
  auto r = post(d.port(), "/v1/embeddings",
                {{"model", "oai/text-embedding-3-small"}, {"input", {"a", "b"}}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto j = json::parse(r->body);
  EXPECT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(fake.requests().back().json()["model"], "text-embedding-3-small");

  r = post(d.port(), "/v1/audio/speech", {{"model", "oai/tts-1"}, {"input", "hi"}, {"voice", "alloy"}});
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->header("content-type"), "audio/mpeg");
  EXPECT_FALSE(r->body.empty());
  EXPECT_EQ(fake.requests().back().json()["model"], "tts-1");

  std::string boundary = "XyZ123";
  std::string mp = "--" + boundary + "\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n" +
                   "oai/whisper-1\r\n--" + boundary +
                   "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\n"
                   "Content-Type: audio/mpeg\r\n\r\nID3fakeaudio\r\n--" + boundary + "--\r\n";
  r = request(d.port(), "POST", "/v1/audio/transcriptions",
              {{"Authorization", std::string("Bearer ") + kToken},
               {"Content-Type", "multipart/form-data; boundary=" + boundary}},
              mp);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_TRUE(json::parse(r->body).contains("text"));
  auto sent = fake.requests().back().body;
  EXPECT_NE(sent.find("\r\n\r\nwhisper-1\r\n"), std::string::npos);  // model id rewritten

  r = post(d.port(), "/v1/audio/speech", {{"model", "ant/claude-sonnet-4-5"}, {"input", "hi"}});
  EXPECT_EQ(r->status, 400);
}

TEST(Ai, MetricsCountAttemptsTokensAndSpend) {
  FakeLlm fake;
  Agentd d(fake, ai_yaml(""));
  ASSERT_EQ(post(d.port(), "/v1/chat/completions", chat_body("oai/gpt-4o-mini", "spend"))->status, 200);
  auto m = d.metrics();
  EXPECT_NE(m.find("agentd_ai_upstream_attempts_total{target=\"oai/gpt-4o-mini\",outcome=\"ok\"} 1"),
            std::string::npos) << m;
  EXPECT_NE(m.find("agentd_ai_tokens_total{target=\"oai/gpt-4o-mini\",kind=\"prompt_tokens\"}"),
            std::string::npos);
  EXPECT_NE(m.find("agentd_ai_spend_usd_total{target=\"oai/gpt-4o-mini\"}"), std::string::npos);
}


TEST(Ai, CacheServesRepeatsAndReplaysStreamsUntilBypassed) {
  FakeLlm fake;
  Agentd d(fake, ai_yaml(""));
  auto first = post(d.port(), "/v1/chat/completions", chat_body("oai/gpt-4o-mini", "cache me"));
  ASSERT_EQ(first->status, 200);
  EXPECT_EQ(first->header("x-agentd-cache"), "miss");
  auto again = post(d.port(), "/v1/chat/completions", chat_body("oai/gpt-4o-mini", "cache me"));
  ASSERT_EQ(again->status, 200);
  EXPECT_EQ(again->header("x-agentd-cache"), "hit");
  EXPECT_EQ(again->body, first->body);
  EXPECT_EQ(fake.count(), 1u);
  // A different parameter is a different answer.
  auto warm = chat_body("oai/gpt-4o-mini", "cache me");
  warm["temperature"] = 0.5;
  EXPECT_EQ(post(d.port(), "/v1/chat/completions", warm)->header("x-agentd-cache"), "miss");
  // Bypass.
  auto bypass = post(d.port(), "/v1/chat/completions", chat_body("oai/gpt-4o-mini", "cache me"),
                     kToken, {{"Cache-Control", "no-cache"}});
  EXPECT_EQ(bypass->header("x-agentd-cache"), "bypass");
  EXPECT_EQ(fake.count(), 3u);

  // Streams are cached as chunks and replayed as a stream, usage chunk on request.
  auto s1 = post(d.port(), "/v1/chat/completions", chat_body("oai/gpt-4o-mini", "replay", true));
  ASSERT_EQ(s1->status, 200);
  auto body = chat_body("oai/gpt-4o-mini", "replay", true);
  body["stream_options"] = {{"include_usage", true}};
  auto s2 = post(d.port(), "/v1/chat/completions", body);
  ASSERT_EQ(s2->status, 200);
  EXPECT_EQ(s2->header("x-agentd-cache"), "hit");
  auto data = data_lines(s2->body);
  EXPECT_EQ(stream_text(data), "echo: replay");
  EXPECT_EQ(data.back(), "[DONE]");
  EXPECT_TRUE(json::parse(data[data.size() - 2]).contains("usage"));
  EXPECT_EQ(fake.count(), 4u);
}

TEST(Ai, IncompleteStreamsAreNotCached) {
  FakeLlm fake;
  Action cut;
  cut.text = "an answer cut off in the middle of it all";
  cut.cut_after = 3;
  fake.script(cut);
  Agentd d(fake, ai_yaml(""));
  auto r1 = post(d.port(), "/v1/chat/completions", chat_body("oai/gpt-4o-mini", "cut", true));
  ASSERT_EQ(r1->status, 200);
  auto r2 = post(d.port(), "/v1/chat/completions", chat_body("oai/gpt-4o-mini", "cut", true));
  EXPECT_EQ(r2->header("x-agentd-cache"), "miss");
  EXPECT_EQ(stream_text(data_lines(r2->body)), "echo: cut");
  EXPECT_EQ(fake.count(), 2u);
}

TEST(Ai, ClientRequestsPerMinuteAre429WithRetryAfter) {
  FakeLlm fake;
  Agentd d(fake, ai_yaml("  cache: {enabled: false}\n  limits:\n    full: {rpm: 2}\n"));
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(post(d.port(), "/v1/chat/completions", chat_body("oai/gpt-4o-mini"))->status, 200);
  }
  auto r = post(d.port(), "/v1/chat/completions", chat_body("oai/gpt-4o-mini"));
  ASSERT_EQ(r->status, 429);
  auto j = json::parse(r->body);
  EXPECT_EQ(j["error"]["code"], "rate_limit_exceeded");
  EXPECT_EQ(j["error"]["type"], "rate_limit_error");
  auto retry = std::stoi(r->header("retry-after"));
  EXPECT_GE(retry, 1);
  EXPECT_LE(retry, 60);
  EXPECT_EQ(fake.count(), 2u);
  // Another client is not affected.
  EXPECT_EQ(post(d.port(), "/v1/chat/completions", chat_body("fast"), kNarrowToken)->status, 404);
}

TEST(Ai, TokensPerMinuteCountTheEstimateUpFront) {
  FakeLlm fake;
  Agentd d(fake, ai_yaml("  cache: {enabled: false}\n  limits:\n    full: {tpm: 100}\n"));
  auto big = chat_body("oai/gpt-4o-mini", std::string(1000, 'x'));  // ~250 tokens
  auto r = post(d.port(), "/v1/chat/completions", big);
  ASSERT_EQ(r->status, 429);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "tokens_rate_limit_exceeded");
  EXPECT_EQ(post(d.port(), "/v1/chat/completions", chat_body("oai/gpt-4o-mini"))->status, 200);
  EXPECT_EQ(fake.count(), 1u);
}

TEST(Ai, AProviderAtItsOwnLimitSendsCallsToTheNextTarget) {
  FakeLlm fake;
  Agentd d(fake, "ai:\n  providers:\n"
                 "    - {name: oai, kind: openai, base_url: '${FAKE}/v1', api_key: fake-key, rpm: 1}\n"
                 "    - {name: ant, kind: anthropic, base_url: '${FAKE}', api_key: fake-key}\n"
                 "  cache: {enabled: false}\n"
                 "  models:\n    - {name: smart, targets: [oai/gpt-4o, ant/claude-sonnet-4-5]}\n");
  EXPECT_EQ(post(d.port(), "/v1/chat/completions", chat_body("smart"))->header("x-agentd-provider"), "oai");
  EXPECT_EQ(post(d.port(), "/v1/chat/completions", chat_body("smart"))->header("x-agentd-provider"), "ant");
  EXPECT_EQ(fake.count(), 2u);  // the limited call never left agentd
}

TEST(Ai, ATargetAtItsOwnLimitSendsCallsToTheNextTarget) {
  FakeLlm fake;
  Agentd d(fake, ai_yaml("  cache: {enabled: false}\n"
                         "  models:\n    - name: smart\n      targets:\n"
                         "        - {model: oai/gpt-4o, rpm: 1}\n"
                         "        - gem/gemini-2.5-flash\n"));
  EXPECT_EQ(post(d.port(), "/v1/chat/completions", chat_body("smart"))->header("x-agentd-provider"), "oai");
  auto r = post(d.port(), "/v1/chat/completions", chat_body("smart"));
  EXPECT_EQ(r->header("x-agentd-provider"), "gem");
  EXPECT_EQ(r->header("x-agentd-attempts"), "1");  // the limited target was skipped, not called
  EXPECT_EQ(fake.count(), 2u);
}

TEST(Ai, ConcurrentRequestsNeverOverspendABudget) {
  FakeLlm fake;
  // $1 per output token, nothing for input; each call may produce at most 1 token: a worst
  // case of $1, so a $10 budget admits exactly 10 however many arrive together.
  std::string yaml = ai_yaml(
      "  cache: {enabled: false}\n"
      "  models:\n    - name: priced\n      targets: [{model: oai/gpt-4o-mini, max_tokens: 1}]\n"
      "  limits:\n    full: {budget_usd_day: 10}\n");
  std::string price = "{input: 0.15, output: 0.6}";
  yaml.replace(yaml.find(price), price.size(), "{input: 0, output: 1000000}");
  Agentd d(fake, yaml);
  std::vector<Action> actions(100);
  for (auto& a : actions) {
    a.delay = 300ms;  // all 100 overlap
    a.usage = FakeUsage{1, 1, 0, 0};
  }
  fake.script(actions);
  std::vector<std::future<int>> results;
  for (int i = 0; i < 100; ++i) {
    results.push_back(std::async(std::launch::async, [&d, i] {
      auto r = post(d.port(), "/v1/chat/completions", chat_body("priced", "n" + std::to_string(i)));
      if (!r) return -1;
      if (r->status == 429) {
        EXPECT_EQ(json::parse(r->body)["error"]["code"], "budget_exceeded");
      }
      return r->status;
    }));
  }
  int ok = 0, limited = 0;
  for (auto& f : results) {
    int st = f.get();
    ok += st == 200;
    limited += st == 429;
  }
  EXPECT_EQ(ok, 10);
  EXPECT_EQ(limited, 90);
  EXPECT_EQ(fake.count(), 10u);
  // Settled at the real cost ($1 each): the budget is spent, the next call is refused.
  EXPECT_EQ(post(d.port(), "/v1/chat/completions", chat_body("priced", "after"))->status, 429);
}

// An OpenAI-compatible upstream that answers every chat completion with the given raw body
// (non-streaming) or the given `data:` payloads (streaming): shapes the double never sends.
class RawUpstream {
 public:
  RawUpstream(std::string body, std::vector<std::string> events) {
    net::ServerConfig config;
    config.listeners = {{"127.0.0.1", 0, false}};
    config.access_log = false;
    server_ = net::make_http_server(
        io_, config,
        [body = std::move(body), events = std::move(events)](net::Request& req) -> boost::asio::awaitable<net::Response> {
          if (req.path.ends_with("/embeddings")) {
            co_return net::Response::text(
                200,
                R"({"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5]}],)"
                R"("model":"m","usage":[1,2]})",
                "application/json");
          }
          if (req.body.find("\"stream\":true") == std::string::npos) {
            co_return net::Response::text(200, body, "application/json");
          }
          co_return net::Response::stream([events](std::shared_ptr<net::SseStream> s) -> boost::asio::awaitable<void> {
            for (const auto& e : events) s->push({.id = {}, .event = {}, .data = e, .retry_ms = {}});
            s->push({.id = {}, .event = {}, .data = "[DONE]", .retry_ms = {}});
            s->close(net::SseStream::State::finished);
            co_return;
          });
        },
        metrics_);
    port_ = server_->start().at(0).port;
    thread_ = std::thread([this] { io_.run(); });
  }
  ~RawUpstream() {
    io_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  boost::asio::io_context io_{1};
  core::Registry metrics_;
  std::unique_ptr<net::HttpServer> server_;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

// A `usage` that is not an object (a provider bug, or a hostile upstream) must neither throw
// in the accounting nor turn a good answer into a 500: the answer passes, nothing is counted.
// Chat (whole and streamed) and embeddings.
TEST(Ai, AnUpstreamUsageThatIsNotAnObjectIsIgnoredNotA500) {
  RawUpstream up(
      R"({"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,)"
      R"("message":{"role":"assistant","content":"fine"},"finish_reason":"stop"}],"usage":"lots"})",
      {R"({"id":"c2","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,)"
       R"("delta":{"content":"fi"},"finish_reason":null}]})",
       R"({"id":"c2","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,)"
       R"("delta":{"content":"ne"},"finish_reason":"stop"}]})",
       R"({"id":"c2","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":7})"});
  Agentd d(up.url(), ai_yaml("  models:\n    - {name: fast, targets: [oai/gpt-4o-mini]}\n"));
  auto r = post(d.port(), "/v1/chat/completions", chat_body("fast"));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto j = json::parse(r->body);
  EXPECT_EQ(j["choices"][0]["message"]["content"], "fine");
  auto e = post(d.port(), "/v1/embeddings", {{"model", "oai/text-embedding-3-small"}, {"input", "x"}});
  ASSERT_TRUE(e);
  ASSERT_EQ(e->status, 200) << e->body;
  EXPECT_EQ(json::parse(e->body)["data"][0]["embedding"][0], 0.5);
  auto body = chat_body("fast", "hi", true);
  body["stream_options"] = {{"include_usage", true}};
  auto s = post(d.port(), "/v1/chat/completions", body);
  ASSERT_TRUE(s);
  ASSERT_EQ(s->status, 200) << s->body;
  auto data = data_lines(s->body);
  EXPECT_EQ(stream_text(data), "fine");
  ASSERT_FALSE(data.empty());
  EXPECT_EQ(data.back(), "[DONE]");
  // No call counted tokens from the bad usage, and all three were counted as answered (the
  // stream when it ended, which may be just after its last byte reached us).
  std::string m;
  for (int i = 0; i < 100; ++i) {
    m = d.metrics();
    if (m.find("agentd_ai_requests_total{outcome=\"ok\"} 3") != std::string::npos) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(m.find("agentd_ai_tokens_total{target=\"oai/gpt-4o-mini\""), std::string::npos) << m;
  EXPECT_NE(m.find("agentd_ai_requests_total{outcome=\"ok\"} 3"), std::string::npos) << m;
}

}  // namespace
}  // namespace agentd::test
