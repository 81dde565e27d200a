// The Gemini dialect: request translation, answers, SSE events and errors, against fixtures
// in the generateContent wire format.
#include <gtest/gtest.h>

#include <map>

#include "ai/dialect.hpp"

namespace agentd::ai {
namespace {

using namespace std::chrono_literals;

ProviderConfig gemini_provider() {
  ProviderConfig p;
  p.name = "gemini";
  p.kind = ProviderKind::gemini;
  p.base_url = "https://generativelanguage.googleapis.com/v1beta";
  p.api_key = "AIza-test";
  p.auth = AuthStyle::x_goog_api_key;
  return p;
}

json translate(const json& request) {
  auto call = make_dialect(gemini_provider())->chat_request(request, "gemini-2.5-flash", false);
  EXPECT_TRUE(call) << (call ? "" : call.error().message);
  return call ? json::parse(call->body) : json();
}

Error translate_error(const json& request) {
  auto call = make_dialect(gemini_provider())->chat_request(request, "gemini-2.5-flash", false);
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

TEST(GeminiDialect, UrlsAndAuth) {
  json req = {{"model", "g"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}};
  auto d = make_dialect(gemini_provider());
  auto call = d->chat_request(req, "gemini-2.5-flash", false);
  ASSERT_TRUE(call);
  EXPECT_EQ(
      call->url,
      "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent");
  EXPECT_EQ(call->headers.get("x-goog-api-key"), "AIza-test");
  EXPECT_EQ(json::parse(call->body),
            json::parse(R"({"contents":[{"role":"user","parts":[{"text":"Hi"}]}]})"));
  call = d->chat_request(req, "models/gemini-2.5-pro", true);
  ASSERT_TRUE(call);
  EXPECT_EQ(call->url,
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:"
            "streamGenerateContent?alt=sse");

  auto vertex = gemini_provider();
  vertex.base_url =
      "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/"
      "publishers/google";
  vertex.auth = AuthStyle::bearer;
  vertex.api_key = "ya29.token";
  call = make_dialect(vertex)->chat_request(req, "gemini-2.5-flash", false);
  ASSERT_TRUE(call);
  EXPECT_EQ(call->headers.get("authorization"), "Bearer ya29.token");
  EXPECT_FALSE(call->headers.get("x-goog-api-key"));
  EXPECT_TRUE(call->url.ends_with("/publishers/google/models/gemini-2.5-flash:generateContent"));
}

TEST(GeminiDialect, FullConversationTranslation) {
  auto req = json::parse(R"({
    "model": "smart",
    "messages": [
      {"role": "system", "content": "You are a weather bot."},
      {"role": "user", "content": [
        {"type": "text", "text": "Compare these skies."},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/sky.PNG?size=large"}}
      ]},
      {"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_a", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
        {"id": "call_b", "type": "function",
         "function": {"name": "get_forecast", "arguments": "{\"city\":\"Rome\",\"days\":2}"},
         "extra_content": {"google": {"thought_signature": "c2lnbmF0dXJl"}}}
      ]},
      {"role": "tool", "tool_call_id": "call_a", "content": "{\"temp_c\": 18, \"sky\": \"cloudy\"}"},
      {"role": "tool", "tool_call_id": "call_b", "content": "sunny all week"},
      {"role": "assistant", "content": "Paris is cloudy, Rome sunny."},
      {"role": "user", "content": "Thanks"}
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather",
      "description": "Current weather",
      "parameters": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": false,
        "properties": {
          "city": {"type": "string", "format": "hostname", "minLength": 1},
          "unit": {"type": ["string", "null"], "enum": ["C", "F"]},
          "when": {"$ref": "#/$defs/When"},
          "tags": {"type": "array", "items": {"type": "string", "const": "x"}},
          "properties": {"type": "object", "properties": {"type": {"type": "string"}},
                         "additionalProperties": {"type": "string"}}
        },
        "required": ["city"],
        "$defs": {"When": {"type": "string", "format": "date-time", "examples": ["2025-01-01T00:00:00Z"]}}
      }}},
      {"type": "function", "function": {"name": "get_forecast",
        "parameters": {"type": "object", "properties": {}}}}],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "temperature": 0.4, "top_p": 0.8, "max_tokens": 100, "max_completion_tokens": 800,
    "stop": ["END", "STOP"], "n": 2, "seed": 42, "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema":
      {"type": "object", "properties": {"summary": {"type": "string"}},
       "additionalProperties": false}}},
    "user": "u-1", "parallel_tool_calls": true
  })");
  auto body = translate(req);
  auto expected = json::parse(R"({
    "systemInstruction": {"parts": [{"text": "You are a weather bot."}]},
    "contents": [
      {"role": "user", "parts": [
        {"text": "Compare these skies."},
        {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/sky.PNG?size=large"}}
      ]},
      {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "get_forecast", "args": {"city": "Rome", "days": 2}},
         "thoughtSignature": "c2lnbmF0dXJl"}
      ]},
      {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather",
                              "response": {"content": {"temp_c": 18, "sky": "cloudy"}}}},
        {"functionResponse": {"name": "get_forecast", "response": {"content": "sunny all week"}}}
      ]},
      {"role": "model", "parts": [{"text": "Paris is cloudy, Rome sunny."}]},
      {"role": "user", "parts": [{"text": "Thanks"}]}
    ],
    "tools": [{"functionDeclarations": [
      {"name": "get_weather", "description": "Current weather",
       "parameters": {
         "type": "object",
         "properties": {
           "city": {"type": "string", "minLength": 1},
           "unit": {"type": "string", "nullable": true, "enum": ["C", "F"]},
           "when": {"type": "string", "format": "date-time"},
           "tags": {"type": "array", "items": {"type": "string", "enum": ["x"]}},
           "properties": {"type": "object", "properties": {"type": {"type": "string"}}}
         },
         "required": ["city"]}},
      {"name": "get_forecast"}
    ]}],
    "toolConfig": {"functionCallingConfig": {"mode": "ANY",
                                             "allowedFunctionNames": ["get_weather"]}},
    "generationConfig": {
      "temperature": 0.4, "topP": 0.8, "maxOutputTokens": 800,
      "stopSequences": ["END", "STOP"], "candidateCount": 2, "seed": 42,
      "presencePenalty": 0.5, "frequencyPenalty": -0.5,
      "responseMimeType": "application/json",
      "responseSchema": {"type": "object", "properties": {"summary": {"type": "string"}}}
    }
  })");
  EXPECT_EQ(body, expected) << body.dump(2);
}

TEST(GeminiDialect, ToolChoiceModesAndJsonObject) {
  json base = json::parse(R"({"model":"m","messages":[{"role":"user","content":"x"}],
    "tools":[{"type":"function","function":{"name":"f",
      "parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}]})");
  const std::pair<const char*, const char*> modes[] = {
      {"auto", "AUTO"}, {"none", "NONE"}, {"required", "ANY"}};
  for (auto [choice, mode] : modes) {
    json r = base;
    r["tool_choice"] = choice;
    EXPECT_EQ(translate(r)["toolConfig"]["functionCallingConfig"], json({{"mode", mode}}));
  }
  json r = base;
  r["response_format"] = {{"type", "json_object"}};
  r["stop"] = "DONE";
  auto g = translate(r)["generationConfig"];
  EXPECT_EQ(g, json::parse(R"({"responseMimeType":"application/json","stopSequences":["DONE"]})"));
}

TEST(GeminiDialect, RejectsWhatGenerateContentCannotExpress) {
  auto e = translate_error(json::parse(R"({"model":"m","messages":[
    {"role":"tool","tool_call_id":"call_unknown","content":"42"}]})"));
  EXPECT_EQ(e.param, "messages[0].tool_call_id");
  EXPECT_NE(e.message.find("call_unknown"), std::string::npos);

  e = translate_error(json::parse(R"({"model":"m","messages":[{"role":"user","content":"x"},
    {"role":"assistant","tool_calls":[{"id":"c1","type":"function",
      "function":{"name":"f","arguments":"city=Paris"}}]}]})"));
  EXPECT_EQ(e.param, "messages[1].tool_calls[0].function.arguments");
  EXPECT_EQ(e.kind, Error::Kind::bad_request);

  e = translate_error(json::parse(R"({"model":"m","messages":[{"role":"user","content":[
    {"type":"image_url","image_url":{"url":"file:///etc/passwd"}}]}]})"));
  EXPECT_EQ(e.param, "messages[0].content[0].image_url.url");

  e = translate_error(
      json::parse(R"({"model":"m","messages":[{"role":"narrator","content":"x"}]})"));
  EXPECT_EQ(e.param, "messages[0].role");
  e = translate_error(
      json::parse(R"({"model":"m","messages":[{"role":"user","content":{"text":"x"}}]})"));
  EXPECT_EQ(e.param, "messages[0].content");
  e = translate_error(
      json::parse(R"({"model":"m","messages":[{"role":"user","content":[{"text":"x"}]}]})"));
  EXPECT_EQ(e.param, "messages[0].content[0].type");
  e = translate_error(json::parse(R"({"model":"m","messages":[{"role":"user","content":"x"}],
    "temperature":"hot"})"));
  EXPECT_EQ(e.param, "temperature");
  e = translate_error(json::parse(R"({"model":"m","messages":[{"role":"user","content":"x"}],
    "response_format":{"type":"xml"}})"));
  EXPECT_EQ(e.param, "response_format.type");
}

TEST(GeminiDialect, ToolResultFallsBackToTheMessageName) {
  // A tool result whose call is not in the history but that names its function.
  auto body = translate(json::parse(R"({"model":"m","messages":[
    {"role":"user","content":"x"},
    {"role":"tool","tool_call_id":"c9","name":"lookup","content":[{"type":"text","text":"[1,2]"}]}]})"));
  EXPECT_EQ(body["contents"][0]["parts"][1],
            json::parse(R"({"functionResponse":{"name":"lookup","response":{"content":[1,2]}}})"));
}

TEST(GeminiDialect, ResponseWithThoughtsFunctionCallsAndUsage) {
  auto d = make_dialect(gemini_provider());
  auto r = d->chat_response(R"({
    "candidates": [{
      "content": {"role": "model", "parts": [
        {"text": "Comparing two cities.", "thought": true},
        {"text": "Let me look."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
         "thoughtSignature": "c2ln"},
        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}
      ]},
      "finishReason": "STOP", "index": 0, "safetyRatings": []
    }],
    "usageMetadata": {"promptTokenCount": 1200, "candidatesTokenCount": 40,
                      "thoughtsTokenCount": 25, "cachedContentTokenCount": 1024,
                      "totalTokenCount": 1265},
    "modelVersion": "gemini-2.5-flash", "responseId": "mTEtaN2bJ9zDz7IP"
  })",
                            "gemini-2.5-flash");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ((*r)["model"], "gemini-2.5-flash");
  EXPECT_EQ((*r)["object"], "chat.completion");
  EXPECT_EQ((*r)["id"], "mTEtaN2bJ9zDz7IP");
  const auto& choice = (*r)["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_EQ(choice["message"]["content"], "Let me look.");
  EXPECT_EQ(choice["message"]["reasoning_content"], "Comparing two cities.");
  const auto& calls = choice["message"]["tool_calls"];
  ASSERT_EQ(calls.size(), 2u);
  for (const auto& c : calls) {
    EXPECT_TRUE(c["id"].get<std::string>().starts_with("call_"));
    EXPECT_EQ(c["id"].get<std::string>().size(), 29u);
    EXPECT_EQ(c["type"], "function");
    EXPECT_EQ(c["function"]["name"], "get_weather");
  }
  EXPECT_NE(calls[0]["id"], calls[1]["id"]);
  EXPECT_EQ(calls[0]["function"]["arguments"], R"({"city":"Paris"})");
  EXPECT_EQ(calls[0]["extra_content"]["google"]["thought_signature"], "c2ln");
  EXPECT_FALSE(calls[1].contains("extra_content"));
  EXPECT_EQ((*r)["usage"], json::parse(R"({"prompt_tokens":1200,"completion_tokens":65,
      "total_tokens":1265,"prompt_tokens_details":{"cached_tokens":1024},
      "completion_tokens_details":{"reasoning_tokens":25}})"));
}

TEST(GeminiDialect, FinishReasonsAndBlockedPrompts) {
  auto d = make_dialect(gemini_provider());
  const std::pair<const char*, const char*> cases[] = {{"STOP", "stop"},
                                                       {"MAX_TOKENS", "length"},
                                                       {"SAFETY", "content_filter"},
                                                       {"RECITATION", "content_filter"},
                                                       {"BLOCKLIST", "content_filter"},
                                                       {"PROHIBITED_CONTENT", "content_filter"},
                                                       {"SPII", "content_filter"},
                                                       {"OTHER", "stop"}};
  for (auto [reason, finish] : cases) {
    json body = {{"candidates",
                  {{{"content", {{"role", "model"}, {"parts", {{{"text", "ok"}}}}}},
                    {"finishReason", reason}}}},
                 {"usageMetadata", {{"promptTokenCount", 3}, {"candidatesTokenCount", 1}}}};
    auto r = d->chat_response(body.dump(), "g");
    ASSERT_TRUE(r);
    EXPECT_EQ((*r)["choices"][0]["finish_reason"], finish) << reason;
    EXPECT_EQ((*r)["usage"],
              json::parse(R"({"prompt_tokens":3,"completion_tokens":1,"total_tokens":4})"));
  }
  // A candidate stopped by safety before any text.
  auto r = d->chat_response(R"({"candidates":[{"finishReason":"SAFETY","index":0}]})", "g");
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["choices"][0]["message"]["content"], "");
  EXPECT_EQ((*r)["choices"][0]["finish_reason"], "content_filter");

  r = d->chat_response(R"({"promptFeedback":{"blockReason":"SAFETY","safetyRatings":[]},
    "usageMetadata":{"promptTokenCount":8,"totalTokenCount":8}})",
                       "g");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::content_filter);
  EXPECT_EQ(r.error().status, 400);
  EXPECT_NE(r.error().message.find("SAFETY"), std::string::npos);
  EXPECT_FALSE(r.error().falls_back());

  r = d->chat_response("[]", "g");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::connection);
}

// Text in two deltas, then two function calls in separate events (Gemini sends each call
// whole), the finish with usage last.
constexpr std::string_view kStream =
    R"(data: {"candidates": [{"content": {"parts": [{"text": "Checking "}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 90,"totalTokenCount": 90},"modelVersion": "gemini-2.5-flash","responseId": "resp-1"}

data: {"candidates": [{"content": {"parts": [{"text": "both."}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 90,"totalTokenCount": 92},"modelVersion": "gemini-2.5-flash","responseId": "resp-1"}

data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather","args": {"city": "Paris"}}}],"role": "model"},"index": 0}],"modelVersion": "gemini-2.5-flash","responseId": "resp-1"}

data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather","args": {"city": "Rome"}}}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 90,"candidatesTokenCount": 30,"thoughtsTokenCount": 12,"cachedContentTokenCount": 64,"totalTokenCount": 132},"modelVersion": "gemini-2.5-flash","responseId": "resp-1"}

)";

TEST(GeminiDialect, StreamsTextToolCallsFinishAndUsage) {
  auto d = make_dialect(gemini_provider());
  auto tr = d->chat_stream("gemini-2.5-flash");
  net::SseParser parser;
  std::vector<json> chunks;
  for (const auto& ev : parser.feed(kStream)) {
    EXPECT_FALSE(tr->finished());
    auto r = tr->on_event(ev);
    ASSERT_TRUE(r) << r.error().message;
    for (auto& c : *r) chunks.push_back(std::move(c));
  }
  EXPECT_TRUE(tr->finished());
  // role, 2 text, 2 tool calls, finish, usage
  ASSERT_EQ(chunks.size(), 7u);
  for (const auto& c : chunks) {
    EXPECT_EQ(c["id"], "resp-1");
    EXPECT_EQ(c["created"], chunks[0]["created"]);
    EXPECT_EQ(c["model"], "gemini-2.5-flash");
    EXPECT_EQ(c["object"], "chat.completion.chunk");
  }
  EXPECT_EQ(chunks[0]["choices"][0]["delta"], json({{"role", "assistant"}, {"content", ""}}));
  EXPECT_EQ(chunks[1]["choices"][0]["delta"]["content"], "Checking ");
  EXPECT_EQ(chunks[2]["choices"][0]["delta"]["content"], "both.");
  for (int i = 0; i < 2; ++i) {
    const auto& tc = chunks[3 + i]["choices"][0]["delta"]["tool_calls"];
    ASSERT_EQ(tc.size(), 1u);
    EXPECT_EQ(tc[0]["index"], i);
    EXPECT_TRUE(tc[0]["id"].get<std::string>().starts_with("call_"));
    EXPECT_EQ(tc[0]["type"], "function");
    EXPECT_EQ(tc[0]["function"]["name"], "get_weather");
    EXPECT_EQ(json::parse(tc[0]["function"]["arguments"].get<std::string>()),
              json({{"city", i == 0 ? "Paris" : "Rome"}}));
  }
  EXPECT_EQ(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_TRUE(chunks[6]["choices"].empty());
  EXPECT_EQ(chunks[6]["usage"], json::parse(R"({"prompt_tokens":90,"completion_tokens":42,
      "total_tokens":132,"prompt_tokens_details":{"cached_tokens":64},
      "completion_tokens_details":{"reasoning_tokens":12}})"));
}

TEST(GeminiDialect, StreamCutBeforeFinishIsNotFinished) {
  auto d = make_dialect(gemini_provider());
  auto tr = d->chat_stream("g");
  auto chunks = run_stream(
      *tr,
      kStream.substr(
          0, kStream.find("data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": "
                          "{\"name\": \"get_weather\",\"args\": {\"city\": \"Rome\"")));
  EXPECT_FALSE(tr->finished());
  EXPECT_EQ(chunks.size(), 4u);
}

TEST(GeminiDialect, StreamThoughtsAndInBandErrors) {
  auto d = make_dialect(gemini_provider());
  auto tr = d->chat_stream("g");
  auto chunks = run_stream(
      *tr,
      R"(data: {"candidates":[{"content":{"parts":[{"text":"Hmm.","thought":true}],"role":"model"},"index":0}]}

data: {"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"},"finishReason":"MAX_TOKENS","index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":1}}

)");
  ASSERT_EQ(chunks.size(), 5u);
  EXPECT_EQ(chunks[1]["choices"][0]["delta"], json({{"reasoning_content", "Hmm."}}));
  EXPECT_EQ(chunks[2]["choices"][0]["delta"], json({{"content", "Hi"}}));
  EXPECT_EQ(chunks[3]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(chunks[4]["usage"]["total_tokens"], 6);

  tr = d->chat_stream("g");
  net::SseEvent ev;
  ev.data =
      R"({"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}})";
  auto r = tr->on_event(ev);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::overloaded);
  EXPECT_EQ(r.error().status, 503);

  ev.data = R"({"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"}})";
  r = d->chat_stream("g")->on_event(ev);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::content_filter);
}

TEST(GeminiDialect, ErrorClasses) {
  struct Case {
    int status;
    const char* name;
    const char* message;
    Error::Kind kind;
  };
  const Case cases[] = {
      {400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unknown name \"foo\"",
       Error::Kind::bad_request},
      {400, "INVALID_ARGUMENT",
       "The input token count (1209044) exceeds the maximum number of tokens allowed (1048576).",
       Error::Kind::context_window},
      {401, "UNAUTHENTICATED", "Request had invalid authentication credentials.",
       Error::Kind::auth},
      {403, "PERMISSION_DENIED", "Permission denied on resource project p.", Error::Kind::auth},
      {404, "NOT_FOUND", "models/gemini-9 is not found for API version v1beta",
       Error::Kind::not_found},
      {429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).",
       Error::Kind::rate_limited},
      {500, "INTERNAL", "An internal error has occurred.", Error::Kind::server},
      {503, "UNAVAILABLE", "The model is overloaded. Please try again later.",
       Error::Kind::overloaded},
      {504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete.",
       Error::Kind::timeout},
  };
  auto d = make_dialect(gemini_provider());
  for (const auto& c : cases) {
    json body = {{"error", {{"code", c.status}, {"message", c.message}, {"status", c.name}}}};
    auto e = d->upstream_error(c.status, {}, body.dump());
    EXPECT_EQ(e.kind, c.kind) << c.message;
    EXPECT_EQ(e.status, c.status) << c.message;
    EXPECT_EQ(e.message, c.message);
    EXPECT_EQ(e.code, c.kind == Error::Kind::context_window ? "context_length_exceeded" : c.name);
  }
}

TEST(GeminiDialect, RetryInfoAndInvalidKey) {
  auto d = make_dialect(gemini_provider());
  auto e = d->upstream_error(429, {}, R"({"error":{"code":429,
    "message":"You exceeded your current quota, please check your plan and billing details.",
    "status":"RESOURCE_EXHAUSTED","details":[
      {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests"}]},
      {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"34s"}]}})");
  EXPECT_EQ(e.kind, Error::Kind::rate_limited);
  EXPECT_EQ(e.retry_after, 34s);

  net::Headers h;
  h.set("retry-after", "5");
  e = d->upstream_error(429, h,
                        R"([{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED",
    "details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"34s"}]}}])");
  EXPECT_EQ(e.retry_after, 5s);  // the header wins; the array form (stream endpoint) is read

  e = d->upstream_error(
      400, {}, R"({"error":{"code":400,"message":"API key not valid. Please pass a valid API key.",
    "status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo",
    "reason":"API_KEY_INVALID","domain":"googleapis.com"}]}})");
  EXPECT_EQ(e.kind, Error::Kind::auth);
  EXPECT_EQ(e.status, 401);
  EXPECT_TRUE(e.falls_back());
  EXPECT_FALSE(e.retryable());

  e = d->upstream_error(500, {}, "");
  EXPECT_EQ(e.kind, Error::Kind::server);
  EXPECT_EQ(e.message, "upstream answered HTTP 500");
}

TEST(GeminiDialect, NoEmbeddings) {
  auto r = make_dialect(gemini_provider())->embeddings_request({{"input", "x"}}, "g");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::bad_request);
}

}  // namespace
}  // namespace agentd::ai
