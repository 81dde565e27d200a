// The Anthropic Messages dialect: request translation, answers, stream events and errors,
// against fixtures in Anthropic's documented wire format.
#include <gtest/gtest.h>

#include <map>

#include "ai/dialect.hpp"

namespace agentd::ai {
namespace {

using namespace std::chrono_literals;

ProviderConfig anthropic_provider() {
  ProviderConfig p;
  p.name = "anthropic";
  p.kind = ProviderKind::anthropic;
  p.base_url = "https://api.anthropic.com";
  p.api_key = "sk-ant-test";
  p.auth = AuthStyle::x_api_key;
  p.default_max_tokens = 4096;
  return p;
}

json translate(const json& request, bool stream = false, ProviderConfig p = anthropic_provider()) {
  auto call = make_dialect(p)->chat_request(request, "claude-sonnet-4-5", stream);
  EXPECT_TRUE(call) << (call ? "" : call.error().message);
  return call ? json::parse(call->body) : json();
}

Error translate_error(const json& request) {
  auto call = make_dialect(anthropic_provider())->chat_request(request, "claude", false);
  EXPECT_FALSE(call);
  return call ? Error{} : call.error();
}

std::vector<json> run_stream(StreamTranslator& tr, std::string_view wire) {
  net::SseParser parser;
  std::vector<json> out;
  for (const auto& ev : parser.feed(wire)) {
    auto chunks = tr.on_event(ev);
    EXPECT_TRUE(chunks.has_value()) << (chunks ? "" : chunks.error().message);
    if (!chunks) break;
    for (auto& c : *chunks) out.push_back(std::move(c));
  }
  return out;
}

TEST(AnthropicDialect, UrlHeadersAndDefaults) {
  json req = {{"model", "c"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}};
  auto d = make_dialect(anthropic_provider());
  auto call = d->chat_request(req, "claude-sonnet-4-5", false);
  ASSERT_TRUE(call);
  EXPECT_EQ(call->url, "https://api.anthropic.com/v1/messages");
  EXPECT_EQ(call->headers.get("x-api-key"), "sk-ant-test");
  EXPECT_EQ(call->headers.get("anthropic-version"), "2023-06-01");
  EXPECT_EQ(call->headers.get("content-type"), "application/json");
  EXPECT_FALSE(call->headers.get("authorization"));
  auto body = json::parse(call->body);
  EXPECT_EQ(body, json::parse(R"({"model":"claude-sonnet-4-5","max_tokens":4096,
      "messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}]})"));

  // The newer SDK form: bearer auth and a configured version; extra headers are added.
  auto p = anthropic_provider();
  p.auth = AuthStyle::bearer;
  p.api_version = "2026-10-21";
  p.headers = {{"anthropic-beta", "prompt-caching-2024-07-31"}};
  call = make_dialect(p)->chat_request(req, "claude", true);
  ASSERT_TRUE(call);
  EXPECT_EQ(call->headers.get("authorization"), "Bearer sk-ant-test");
  EXPECT_FALSE(call->headers.get("x-api-key"));
  EXPECT_EQ(call->headers.get("anthropic-version"), "2026-10-21");
  EXPECT_EQ(call->headers.get("anthropic-beta"), "prompt-caching-2024-07-31");
  EXPECT_EQ(json::parse(call->body)["stream"], true);
}

TEST(AnthropicDialect, FullConversationTranslation) {
  auto req = json::parse(R"({
    "model": "smart",
    "messages": [
      {"role": "system", "content": "You are a weather bot."},
      {"role": "developer", "content": [{"type": "text", "text": "Answer in metric units."}]},
      {"role": "user", "content": [
        {"type": "text", "text": "Compare these skies."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/rome.jpg", "detail": "high"}}
      ]},
      {"role": "user", "content": "And the weather?"},
      {"role": "assistant", "content": "Checking both.", "tool_calls": [
        {"id": "toolu_01A", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
        {"id": "toolu_01B", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\",\"days\":2}"}}
      ]},
      {"role": "tool", "tool_call_id": "toolu_01A", "content": "18C, cloudy"},
      {"role": "tool", "tool_call_id": "toolu_01B", "content": [{"type": "text", "text": "24C, sunny"}]},
      {"role": "user", "content": "Summarise."}
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather",
      "description": "Current weather for a city",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"]}}}],
    "tool_choice": "required",
    "parallel_tool_calls": false,
    "max_completion_tokens": 512,
    "max_tokens": 100,
    "temperature": 1.5,
    "top_p": 0.9,
    "stop": "END",
    "user": "user-7",
    "frequency_penalty": 0.5,
    "presence_penalty": 0.1,
    "logit_bias": {"50256": -100},
    "seed": 7,
    "stream_options": {"include_usage": true}
  })");
  auto body = translate(req);
  auto expected = json::parse(R"({
    "model": "claude-sonnet-4-5",
    "max_tokens": 512,
    "temperature": 1.0,
    "top_p": 0.9,
    "stop_sequences": ["END"],
    "metadata": {"user_id": "user-7"},
    "system": "You are a weather bot.\n\nAnswer in metric units.",
    "messages": [
      {"role": "user", "content": [
        {"type": "text", "text": "Compare these skies."},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/rome.jpg"}},
        {"type": "text", "text": "And the weather?"}
      ]},
      {"role": "assistant", "content": [
        {"type": "text", "text": "Checking both."},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Rome", "days": 2}}
      ]},
      {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C, cloudy"},
        {"type": "tool_result", "tool_use_id": "toolu_01B", "content": [{"type": "text", "text": "24C, sunny"}]},
        {"type": "text", "text": "Summarise."}
      ]}
    ],
    "tools": [{"name": "get_weather", "description": "Current weather for a city",
               "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                "required": ["city"]}}],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": true}
  })");
  EXPECT_EQ(body, expected) << body.dump(2);
}

TEST(AnthropicDialect, ToolChoiceVariantsAndStopLists) {
  json base = json::parse(R"({"model":"m","messages":[{"role":"user","content":"x"}],
    "tools":[{"type":"function","function":{"name":"lookup"}}]})");
  auto with = [&](const json& tc) {
    json r = base;
    r["tool_choice"] = tc;
    return translate(r);
  };
  EXPECT_EQ(with("auto")["tool_choice"], json({{"type", "auto"}}));
  EXPECT_EQ(with("none")["tool_choice"], json({{"type", "none"}}));
  EXPECT_EQ(with(json::parse(R"({"type":"function","function":{"name":"lookup"}})"))["tool_choice"],
            json({{"type", "tool"}, {"name", "lookup"}}));
  // A tool without parameters still gets an object schema.
  EXPECT_EQ(with("auto")["tools"][0]["input_schema"],
            json::parse(R"({"type":"object","properties":{}})"));

  json r = base;
  r["parallel_tool_calls"] = false;
  EXPECT_EQ(translate(r)["tool_choice"],
            json({{"type", "auto"}, {"disable_parallel_tool_use", true}}));
  r["stop"] = {"\n\nHuman:", "STOP"};
  EXPECT_EQ(translate(r)["stop_sequences"], json({"\n\nHuman:", "STOP"}));

  r = base;
  r["tool_choice"] = "sometimes";
  EXPECT_EQ(translate_error(r).param, "tool_choice");
}

TEST(AnthropicDialect, ResponseFormatJsonSchemaBecomesAForcedTool) {
  auto req = json::parse(R"({"model":"m","messages":[{"role":"user","content":"Extract."}],
    "response_format":{"type":"json_schema","json_schema":{"name":"person","strict":true,
      "schema":{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},
                "required":["name","age"],"additionalProperties":false}}}})");
  auto body = translate(req);
  ASSERT_EQ(body["tools"].size(), 1u);
  EXPECT_EQ(body["tools"][0]["name"], "json_output");
  EXPECT_EQ(body["tools"][0]["input_schema"], req["response_format"]["json_schema"]["schema"]);
  EXPECT_EQ(body["tool_choice"], json({{"type", "tool"}, {"name", "json_output"}}));

  req["response_format"] = {{"type", "json_object"}};
  json system_message = {{"role", "system"}, {"content", "Be exact."}};
  req["messages"].insert(req["messages"].begin(), system_message);
  body = translate(req);
  EXPECT_FALSE(body.contains("tools"));
  auto system = body["system"].get<std::string>();
  EXPECT_TRUE(system.starts_with("Be exact.\n\n")) << system;
  EXPECT_NE(system.find("JSON object"), std::string::npos) << system;

  req["response_format"] = {{"type", "json_schema"},
                            {"json_schema", {{"name", "list"}, {"schema", {{"type", "array"}}}}}};
  EXPECT_EQ(translate_error(req).param, "response_format.json_schema.schema");
}

TEST(AnthropicDialect, RejectsWhatMessagesCannotExpress) {
  auto e = translate_error(
      json::parse(R"({"model":"m","n":2,"messages":[{"role":"user","content":"x"}]})"));
  EXPECT_EQ(e.kind, Error::Kind::bad_request);
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "n");

  e = translate_error(json::parse(R"({"model":"m","messages":[{"role":"user","content":"x"},
    {"role":"assistant","tool_calls":[{"id":"t1","type":"function",
      "function":{"name":"f","arguments":"{\"city\": Paris}"}}]}]})"));
  EXPECT_EQ(e.param, "messages[1].tool_calls[0].function.arguments");
  EXPECT_NE(e.message.find("not valid JSON"), std::string::npos) << e.message;

  e = translate_error(json::parse(R"({"model":"m","messages":[{"role":"user","content":"x"},
    {"role":"assistant","tool_calls":[{"id":"t1","type":"function",
      "function":{"name":"f","arguments":"[1,2]"}}]}]})"));
  EXPECT_EQ(e.param, "messages[1].tool_calls[0].function.arguments");

  e = translate_error(json::parse(R"({"model":"m","messages":[{"role":"critic","content":"x"}]})"));
  EXPECT_EQ(e.param, "messages[0].role");
  e = translate_error(
      json::parse(R"({"model":"m","messages":[{"role":"function","name":"f","content":"x"}]})"));
  EXPECT_EQ(e.param, "messages[0].role");
  e = translate_error(json::parse(R"({"model":"m","messages":[{"content":"x"}]})"));
  EXPECT_EQ(e.param, "messages[0].role");

  e = translate_error(json::parse(R"({"model":"m","messages":[{"role":"user","content":[
    {"type":"text","text":"look"},
    {"type":"image_url","image_url":{"url":"ftp://example.com/cat.png"}}]}]})"));
  EXPECT_EQ(e.param, "messages[0].content[1].image_url.url");
  e = translate_error(json::parse(R"({"model":"m","messages":[{"role":"user","content":[
    {"type":"image_url","image_url":{"url":"data:image/png,rawbytes"}}]}]})"));
  EXPECT_EQ(e.param, "messages[0].content[0].image_url.url");
  e = translate_error(json::parse(R"({"model":"m","messages":[{"role":"user","content":[
    {"type":"image_url"}]}]})"));
  EXPECT_EQ(e.param, "messages[0].content[0].image_url.url");
  e = translate_error(json::parse(R"({"model":"m","messages":[{"role":"user","content":[
    {"type":"input_audio","input_audio":{"data":"AAA","format":"wav"}}]}]})"));
  EXPECT_EQ(e.param, "messages[0].content[0].type");

  e = translate_error(json::parse(R"({"model":"m","messages":[{"role":"user","content":42}]})"));
  EXPECT_EQ(e.param, "messages[0].content");
  e = translate_error(json::parse(R"({"model":"m","messages":[{"role":"tool","content":"x"}]})"));
  EXPECT_EQ(e.param, "messages[0].tool_call_id");
  e = translate_error(json::parse(R"({"model":"m","messages":"hello"})"));
  EXPECT_EQ(e.param, "messages");
  e = translate_error(json::parse(R"({"model":"m","messages":[{"role":"system","content":[
    {"type":"image_url","image_url":{"url":"https://x.test/a.png"}}]}]})"));
  EXPECT_EQ(e.param, "messages[0].content");
}

TEST(AnthropicDialect, OddButValidShapesDoNotCrash) {
  // null content, assistant turn with only tool calls and empty-string arguments, content parts
  // with empty text: all translate, empty pieces left out.
  auto body = translate(json::parse(R"({"model":"m","messages":[
    {"role":"user","content":[{"type":"text","text":""},{"type":"text","text":"hi"}]},
    {"role":"assistant","content":null,"tool_calls":[{"id":"t1","type":"function",
      "function":{"name":"now","arguments":""}}]},
    {"role":"tool","tool_call_id":"t1","content":""},
    {"role":"user","content":null}]})"));
  EXPECT_EQ(body["messages"], json::parse(R"([
    {"role":"user","content":[{"type":"text","text":"hi"}]},
    {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"now","input":{}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1"}]}])"));
}

TEST(AnthropicDialect, ResponseWithThinkingTextToolUseAndCachedUsage) {
  auto d = make_dialect(anthropic_provider());
  auto r = d->chat_response(R"({
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
      {"type": "thinking", "thinking": "The user wants two cities.", "signature": "EqQBCgIYAhIM"},
      {"type": "text", "text": "Let me check both."},
      {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
      {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Rome", "days": 2}}
    ],
    "stop_reason": "tool_use", "stop_sequence": null,
    "usage": {"input_tokens": 50, "cache_creation_input_tokens": 200,
              "cache_read_input_tokens": 1000, "output_tokens": 80}
  })",
                            "claude-sonnet-4-5");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ((*r)["object"], "chat.completion");
  EXPECT_EQ((*r)["model"], "claude-sonnet-4-5");
  EXPECT_EQ((*r)["id"], "msg_01XFDUDYJgAACzvnptvVoYEL");
  const auto& choice = (*r)["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_EQ(choice["message"]["role"], "assistant");
  EXPECT_EQ(choice["message"]["content"], "Let me check both.");
  EXPECT_EQ(choice["message"]["reasoning_content"], "The user wants two cities.");
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 2u);
  EXPECT_EQ(choice["message"]["tool_calls"][1],
            json::parse(R"({"id":"toolu_01B","type":"function","function":{"name":"get_weather",
                          "arguments":"{\"city\":\"Rome\",\"days\":2}"}})"));
  EXPECT_EQ((*r)["usage"], json::parse(R"({"prompt_tokens":1250,"completion_tokens":80,
      "total_tokens":1330,"prompt_tokens_details":{"cached_tokens":1000}})"));
}

TEST(AnthropicDialect, StopReasonsAndJsonOutput) {
  auto d = make_dialect(anthropic_provider());
  const std::pair<const char*, const char*> cases[] = {{"end_turn", "stop"},
                                                       {"stop_sequence", "stop"},
                                                       {"max_tokens", "length"},
                                                       {"tool_use", "tool_calls"},
                                                       {"refusal", "content_filter"}};
  for (auto [stop, finish] : cases) {
    json body = {{"id", "msg_1"},       {"type", "message"},
                 {"role", "assistant"}, {"content", {{{"type", "text"}, {"text", "ok"}}}},
                 {"stop_reason", stop}, {"usage", {{"input_tokens", 3}, {"output_tokens", 1}}}};
    auto r = d->chat_response(body.dump(), "claude");
    ASSERT_TRUE(r);
    EXPECT_EQ((*r)["choices"][0]["finish_reason"], finish) << stop;
    EXPECT_FALSE((*r)["usage"].contains("prompt_tokens_details"));
  }

  auto r = d->chat_response(R"({"id":"msg_2","type":"message","role":"assistant","content":[
    {"type":"tool_use","id":"toolu_9","name":"json_output","input":{"name":"Ada","age":36}}],
    "stop_reason":"tool_use","usage":{"input_tokens":10,"output_tokens":12}})",
                            "claude");
  ASSERT_TRUE(r);
  const auto& msg = (*r)["choices"][0]["message"];
  EXPECT_EQ(json::parse(msg["content"].get<std::string>()), json({{"name", "Ada"}, {"age", 36}}));
  EXPECT_FALSE(msg.contains("tool_calls"));
  EXPECT_EQ((*r)["choices"][0]["finish_reason"], "stop");

  r = d->chat_response(R"({"type":"message","content":"oops"})", "claude");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::connection);
}

// A text block, then two tool_use blocks whose inputs arrive in pieces (Anthropic's format).
constexpr std::string_view kToolStream = R"(event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay, checking"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" both."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Pa"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ris\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_02Rome","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":" \"Rome\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

)";

TEST(AnthropicDialect, StreamsTextAndParallelToolCalls) {
  auto d = make_dialect(anthropic_provider());
  auto tr = d->chat_stream("claude-sonnet-4-5");
  net::SseParser parser;
  std::vector<json> chunks;
  for (const auto& ev : parser.feed(kToolStream)) {
    EXPECT_FALSE(tr->finished()) << "finished before message_stop";
    auto r = tr->on_event(ev);
    ASSERT_TRUE(r) << r.error().message;
    for (auto& c : *r) chunks.push_back(std::move(c));
  }
  EXPECT_TRUE(tr->finished());
  // role, 2 text, tool 0 start, 2 args, tool 1 start, 2 args, finish, usage
  ASSERT_EQ(chunks.size(), 11u);
  for (const auto& c : chunks) {
    EXPECT_EQ(c["id"], chunks[0]["id"]);
    EXPECT_EQ(c["created"], chunks[0]["created"]);
    EXPECT_EQ(c["model"], "claude-sonnet-4-5");
    EXPECT_EQ(c["object"], "chat.completion.chunk");
  }
  EXPECT_EQ(chunks[0]["choices"][0]["delta"], json({{"role", "assistant"}, {"content", ""}}));
  std::string text;
  std::map<int, std::string> args, ids, names;
  for (const auto& c : chunks) {
    if (c["choices"].empty()) continue;
    const auto& delta = c["choices"][0]["delta"];
    if (delta.contains("content")) text += delta["content"].get<std::string>();
    if (!delta.contains("tool_calls")) continue;
    for (const auto& tc : delta["tool_calls"]) {
      int i = tc["index"].get<int>();
      if (tc.contains("id")) {
        ids[i] = tc["id"].get<std::string>();
        names[i] = tc["function"]["name"].get<std::string>();
        EXPECT_EQ(tc["type"], "function");
      }
      args[i] += tc["function"]["arguments"].get<std::string>();
    }
  }
  EXPECT_EQ(text, "Okay, checking both.");
  ASSERT_EQ(ids.size(), 2u);  // indexes 0 and 1: tool calls counted, not blocks
  EXPECT_EQ(ids[0], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
  EXPECT_EQ(ids[1], "toolu_02Rome");
  EXPECT_EQ(names[1], "get_weather");
  EXPECT_EQ(json::parse(args[0]), json({{"city", "Paris"}}));
  EXPECT_EQ(json::parse(args[1]), json({{"city", "Rome"}}));
  EXPECT_EQ(chunks[9]["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_TRUE(chunks[10]["choices"].empty());
  EXPECT_EQ(chunks[10]["usage"], json::parse(R"({"prompt_tokens":2572,"completion_tokens":89,
      "total_tokens":2661,"prompt_tokens_details":{"cached_tokens":2000}})"));
}

TEST(AnthropicDialect, StreamsThinkingAndJsonOutput) {
  auto d = make_dialect(anthropic_provider());
  auto tr = d->chat_stream("claude");
  auto chunks = run_stream(*tr, R"(event: message_start
data: {"type":"message_start","message":{"id":"msg_x","type":"message","role":"assistant","content":[],"usage":{"input_tokens":20,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Need an object."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCg=="}}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_j","name":"json_output","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"name\": \"Ada\""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":", \"age\": 36}"}}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":30}}

event: message_stop
data: {"type":"message_stop"}

)");
  ASSERT_EQ(chunks.size(), 6u);
  EXPECT_EQ(chunks[1]["choices"][0]["delta"], json({{"reasoning_content", "Need an object."}}));
  std::string content = chunks[2]["choices"][0]["delta"]["content"].get<std::string>() +
                        chunks[3]["choices"][0]["delta"]["content"].get<std::string>();
  EXPECT_EQ(json::parse(content), json({{"name", "Ada"}, {"age", 36}}));
  EXPECT_EQ(chunks[4]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(chunks[5]["usage"]["completion_tokens"], 30);
  EXPECT_FALSE(chunks[5]["usage"].contains("prompt_tokens_details"));
  EXPECT_TRUE(tr->finished());
}

TEST(AnthropicDialect, StreamErrorEvent) {
  auto d = make_dialect(anthropic_provider());
  auto tr = d->chat_stream("claude");
  net::SseParser parser;
  auto evs = parser.feed(
      "event: error\n"
      "data: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": "
      "\"Overloaded\"}}\n\n");
  ASSERT_EQ(evs.size(), 1u);
  auto r = tr->on_event(evs[0]);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::overloaded);
  EXPECT_EQ(r.error().status, 529);
  EXPECT_EQ(r.error().message, "Overloaded");
  EXPECT_TRUE(r.error().retryable());
  EXPECT_FALSE(tr->finished());

  net::SseEvent garbage;
  garbage.data = "<html>";
  EXPECT_EQ(d->chat_stream("c")->on_event(garbage).error().kind, Error::Kind::connection);
}

TEST(AnthropicDialect, ErrorClasses) {
  struct Case {
    int status;
    const char* type;
    const char* message;
    Error::Kind kind;
  };
  const Case cases[] = {
      {400, "invalid_request_error", "messages: roles must alternate", Error::Kind::bad_request},
      {400, "invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum",
       Error::Kind::context_window},
      {401, "authentication_error", "invalid x-api-key", Error::Kind::auth},
      {403, "permission_error", "Your API key does not have permission", Error::Kind::auth},
      {404, "not_found_error", "model: claude-9", Error::Kind::not_found},
      {413, "request_too_large", "Request exceeds the maximum allowed number of bytes.",
       Error::Kind::bad_request},
      {429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit",
       Error::Kind::rate_limited},
      {500, "api_error", "Internal server error", Error::Kind::server},
      {529, "overloaded_error", "Overloaded", Error::Kind::overloaded},
      {400, "invalid_request_error", "Your credit balance is too low to access the Anthropic API.",
       Error::Kind::auth},
  };
  auto d = make_dialect(anthropic_provider());
  for (const auto& c : cases) {
    json body = {{"type", "error"}, {"error", {{"type", c.type}, {"message", c.message}}}};
    auto e = d->upstream_error(c.status, {}, body.dump());
    EXPECT_EQ(e.kind, c.kind) << c.message;
    EXPECT_EQ(e.status, c.status) << c.message;
    EXPECT_EQ(e.message, c.message);
  }
  net::Headers h;
  h.set("retry-after", "30");
  auto e = d->upstream_error(
      429, h, R"({"type":"error","error":{"type":"rate_limit_error","message":"slow down"}})");
  EXPECT_EQ(e.retry_after, 30s);
  EXPECT_TRUE(e.retryable());
  e = d->upstream_error(
      400, {},
      R"({"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"}})");
  EXPECT_EQ(e.code, "context_length_exceeded");
  EXPECT_FALSE(e.retryable());
  EXPECT_TRUE(e.falls_back());
  e = d->upstream_error(502, {}, "<html><body>Bad gateway</body></html>");
  EXPECT_EQ(e.kind, Error::Kind::server);
  EXPECT_EQ(e.status, 502);
  // A 200 body that is an error still comes back as one.
  auto r = d->chat_response(
      R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})", "claude");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::overloaded);
}

TEST(AnthropicDialect, NoEmbeddings) {
  auto r = make_dialect(anthropic_provider())->embeddings_request({{"input", "x"}}, "claude");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::bad_request);
}

}  // namespace
}  // namespace agentd::ai
