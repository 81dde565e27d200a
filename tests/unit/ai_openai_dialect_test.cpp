// The OpenAI dialect (pass-through with model rewriting, Azure options, error classes), the
// shared Retry-After parsing, and Error's retry/fallback policy.
#include <gtest/gtest.h>

#include <boost/system/result.hpp>

#include "ai/dialect.hpp"
#include "ai/dialect_util.hpp"
#include "ai/openai_scan.hpp"

namespace agentd::ai {
namespace {

using namespace std::chrono_literals;

ProviderConfig openai_provider() {
  ProviderConfig p;
  p.name = "openai";
  p.kind = ProviderKind::openai;
  p.base_url = "https://api.openai.com/v1";
  p.api_key = "sk-test-123";
  p.auth = AuthStyle::bearer;
  p.headers = {{"OpenAI-Organization", "org-42"}};
  return p;
}

ProviderConfig azure_provider() {
  ProviderConfig p;
  p.name = "azure";
  p.kind = ProviderKind::openai;
  p.base_url = "https://res.openai.azure.com/openai/deployments/gpt4o/";
  p.api_key = "azure-key";
  p.auth = AuthStyle::api_key_header;
  p.api_version = "2024-10-21";
  p.max_completion_tokens = true;
  return p;
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

net::Headers headers_of(std::initializer_list<std::pair<const char*, const char*>> list) {
  net::Headers h;
  for (auto [k, v] : list) h.add(k, v);
  return h;
}

const json kChatRequest = json::parse(R"({
  "model": "smart",
  "messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris and Rome?"}
  ],
  "max_tokens": 300,
  "temperature": 0.2,
  "stream": true,
  "stream_options": {"include_usage": false},
  "tools": [{"type": "function", "function": {"name": "get_weather",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
})");

TEST(OpenAiDialect, NonStreamingRequestReplacesModelAndDropsStreamFields) {
  auto d = make_dialect(openai_provider());
  auto call = d->chat_request(kChatRequest, "gpt-4o-2024-08-06", false);
  ASSERT_TRUE(call) << call.error().message;
  EXPECT_EQ(call->method, "POST");
  EXPECT_EQ(call->url, "https://api.openai.com/v1/chat/completions");
  EXPECT_EQ(call->headers.get("authorization"), "Bearer sk-test-123");
  EXPECT_EQ(call->headers.get("content-type"), "application/json");
  EXPECT_EQ(call->headers.get("openai-organization"), "org-42");
  auto body = json::parse(call->body);
  EXPECT_EQ(body["model"], "gpt-4o-2024-08-06");
  EXPECT_FALSE(body.contains("stream"));
  EXPECT_FALSE(body.contains("stream_options"));
  EXPECT_EQ(body["max_tokens"], 300);
  EXPECT_EQ(body["messages"], kChatRequest["messages"]);
  EXPECT_EQ(body["tools"], kChatRequest["tools"]);
}

TEST(OpenAiDialect, StreamingRequestForcesUsage) {
  auto d = make_dialect(openai_provider());
  auto call = d->chat_request(kChatRequest, "gpt-4o", true);
  ASSERT_TRUE(call);
  auto body = json::parse(call->body);
  EXPECT_EQ(body["stream"], true);
  EXPECT_EQ(body["stream_options"]["include_usage"], true);
  EXPECT_EQ(call->headers.get("accept"), "text/event-stream");

  json no_options = {{"model", "m"}, {"messages", kChatRequest["messages"]}};
  body = json::parse(d->chat_request(no_options, "gpt-4o", true)->body);
  EXPECT_EQ(body["stream_options"], json({{"include_usage", true}}));
}

TEST(OpenAiDialect, AzureAddsApiVersionKeyHeaderAndMaxCompletionTokens) {
  auto d = make_dialect(azure_provider());
  auto call = d->chat_request(kChatRequest, "gpt-4o", false);
  ASSERT_TRUE(call);
  EXPECT_EQ(call->url,
            "https://res.openai.azure.com/openai/deployments/gpt4o/chat/completions"
            "?api-version=2024-10-21");
  EXPECT_EQ(call->headers.get("api-key"), "azure-key");
  EXPECT_FALSE(call->headers.get("authorization"));
  auto body = json::parse(call->body);
  EXPECT_FALSE(body.contains("max_tokens"));
  EXPECT_EQ(body["max_completion_tokens"], 300);

  auto emb = d->embeddings_request({{"model", "embed"}, {"input", "hi"}}, "text-embedding-3-small");
  ASSERT_TRUE(emb);
  EXPECT_EQ(emb->url,
            "https://res.openai.azure.com/openai/deployments/gpt4o/embeddings"
            "?api-version=2024-10-21");
  EXPECT_EQ(json::parse(emb->body)["model"], "text-embedding-3-small");
  EXPECT_EQ(json::parse(emb->body)["input"], "hi");
}

TEST(OpenAiDialect, EmbeddingsAndNoAuth) {
  auto p = openai_provider();
  p.base_url = "http://127.0.0.1:11434/v1";
  p.auth = AuthStyle::none;
  auto d = make_dialect(p);
  auto call = d->embeddings_request({{"model", "e"}, {"input", json::array({"a", "b"})}}, "nomic");
  ASSERT_TRUE(call);
  EXPECT_EQ(call->url, "http://127.0.0.1:11434/v1/embeddings");
  EXPECT_FALSE(call->headers.get("authorization"));
  EXPECT_FALSE(d->chat_request(json::array(), "m", false));
}

TEST(OpenAiDialect, ResponsePassesThroughWithModelRewritten) {
  auto d = make_dialect(openai_provider());
  auto r = d->chat_response(R"({
    "id": "chatcmpl-AZ9", "object": "chat.completion", "created": 1730000000,
    "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_50cad350e4",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Sunny.",
                 "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1200, "completion_tokens": 5, "total_tokens": 1205,
              "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0}}})",
                            "gpt-4o");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ((*r)["model"], "gpt-4o");
  EXPECT_EQ((*r)["id"], "chatcmpl-AZ9");
  EXPECT_EQ((*r)["choices"][0]["message"]["content"], "Sunny.");
  EXPECT_EQ((*r)["usage"]["prompt_tokens_details"]["cached_tokens"], 1024);
  EXPECT_EQ((*r)["system_fingerprint"], "fp_50cad350e4");
}

TEST(OpenAiDialect, MalformedOrInBandErrorResponses) {
  auto d = make_dialect(openai_provider());
  auto r = d->chat_response("<html>502 Bad Gateway</html>", "gpt-4o");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::connection);
  EXPECT_EQ(r.error().status, 502);
  EXPECT_TRUE(r.error().retryable());

  r = d->chat_response(R"({"id":"x","object":"chat.completion"})", "gpt-4o");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::connection);

  r = d->chat_response(
      R"({"error":{"message":"Rate limit reached for gpt-4o","type":"requests","code":"rate_limit_exceeded"}})",
      "gpt-4o");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::rate_limited);
  EXPECT_EQ(r.error().status, 429);
}

// Two tool calls in parallel, arguments split across chunks, then the usage chunk and [DONE].
constexpr std::string_view kParallelToolStream =
    R"(data: {"id":"chatcmpl-B1","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_paris","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-B1","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": \"Pa"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-B1","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ris\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-B1","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_rome","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-B1","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"city\""}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-B1","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":": \"Rome\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-B1","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}

data: {"id":"chatcmpl-B1","object":"chat.completion.chunk","created":1730000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_1","choices":[],"usage":{"prompt_tokens":1182,"completion_tokens":44,"total_tokens":1226,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}

data: [DONE]

)";

TEST(OpenAiDialect, StreamsParallelToolCallsUsageAndDone) {
  auto d = make_dialect(openai_provider());
  auto tr = d->chat_stream("gpt-4o");
  auto chunks = run_stream(*tr, kParallelToolStream);
  ASSERT_EQ(chunks.size(), 8u);
  EXPECT_TRUE(tr->finished());
  std::map<int, std::string> args, ids;
  for (const auto& c : chunks) {
    EXPECT_EQ(c["model"], "gpt-4o");
    EXPECT_EQ(c["id"], "chatcmpl-B1");
    if (c["choices"].empty()) continue;
    const auto& delta = c["choices"][0]["delta"];
    if (!delta.contains("tool_calls")) continue;
    for (const auto& tc : delta["tool_calls"]) {
      int i = tc["index"].get<int>();
      if (tc.contains("id")) ids[i] = tc["id"].get<std::string>();
      args[i] += tc["function"]["arguments"].get<std::string>();
    }
  }
  EXPECT_EQ(ids[0], "call_paris");
  EXPECT_EQ(ids[1], "call_rome");
  EXPECT_EQ(json::parse(args[0]), json({{"city", "Paris"}}));
  EXPECT_EQ(json::parse(args[1]), json({{"city", "Rome"}}));
  EXPECT_EQ(chunks[6]["choices"][0]["finish_reason"], "tool_calls");
  const auto& usage = chunks[7];
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["prompt_tokens"], 1182);
  EXPECT_EQ(usage["usage"]["completion_tokens"], 44);
  EXPECT_EQ(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 1024);
}

TEST(OpenAiDialect, StreamCutBeforeDoneIsNotFinished) {
  auto d = make_dialect(openai_provider());
  auto tr = d->chat_stream("gpt-4o");
  auto cut = kParallelToolStream.substr(0, kParallelToolStream.find("data: [DONE]"));
  run_stream(*tr, cut);
  EXPECT_FALSE(tr->finished());
}

TEST(OpenAiDialect, UsageOnAContentChunkIsSplitIntoAUsageChunk) {
  auto d = make_dialect(openai_provider());
  auto tr = d->chat_stream("deepseek-chat");
  auto chunks = run_stream(
      *tr,
      R"(data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"deepseek-chat","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10,"prompt_cache_hit_tokens":0}}

data: [DONE]

)");
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_FALSE(chunks[0].contains("usage"));
  EXPECT_EQ(chunks[0]["choices"][0]["delta"]["content"], "Hi");
  EXPECT_TRUE(chunks[1]["choices"].empty());
  EXPECT_EQ(chunks[1]["usage"]["total_tokens"], 10);
  EXPECT_TRUE(tr->finished());
}

TEST(OpenAiDialect, InBandStreamErrorAndGarbage) {
  auto d = make_dialect(openai_provider());
  auto tr = d->chat_stream("gpt-4o");
  net::SseEvent ev;
  ev.data =
      R"({"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}})";
  auto r = tr->on_event(ev);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::server);
  EXPECT_EQ(r.error().status, 500);
  EXPECT_EQ(r.error().message, "The server had an error while processing your request.");

  ev.data = "{not json";
  r = tr->on_event(ev);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::connection);
}

// --- the text path: a SAX scan and the `model` splice instead of a DOM round trip ---

// Every chunk the text path gives, as DOMs, with the facts the gateway reads from them.
std::vector<ChunkText> run_stream_text(StreamTranslator& tr, std::string_view wire) {
  net::SseParser parser;
  std::vector<ChunkText> out;
  for (const auto& ev : parser.feed(wire)) {
    auto chunks = tr.on_event_text(ev);
    EXPECT_TRUE(chunks.has_value()) << (chunks ? "" : chunks.error().message);
    if (!chunks) break;
    for (auto& c : *chunks) out.push_back(std::move(c));
  }
  return out;
}

TEST(OpenAiSplice, ReplacesOnlyTheTopLevelModelAndKeepsTheRestByteForByte) {
  // `model` also inside content (as text) and inside a nested object: neither is touched.
  std::string body =
      R"({"id":"c1","object":"chat.completion","model" : "gpt-4o-2024-08-06","choices":[)"
      R"({"index":0,"message":{"role":"assistant","model":"inner","content":)"
      R"("say \"model\": \"x\" \u00e9\\"},"finish_reason":"stop"}],)"
      R"("usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}})";
  auto d = make_dialect(openai_provider());
  auto r = d->chat_response_text(body, "smart \"quoted\" é");
  ASSERT_TRUE(r) << r.error().message;
  std::string expected = body;
  expected.replace(expected.find("\"gpt-4o-2024-08-06\""), 19, R"("smart \"quoted\" é")");
  EXPECT_EQ(r->body, expected);
  auto doc = json::parse(r->body);
  EXPECT_EQ(doc["model"], "smart \"quoted\" é");
  EXPECT_EQ(doc["choices"][0]["message"]["model"], "inner");
  EXPECT_EQ(doc["choices"][0]["message"]["content"], "say \"model\": \"x\" \u00e9\\");
  ASSERT_TRUE(r->usage);
  EXPECT_EQ((*r->usage)["total_tokens"], 5);
}

TEST(OpenAiSplice, AddsModelWhenAbsentAndLeavesNoUsageWhenNull) {
  auto d = make_dialect(openai_provider());
  auto r = d->chat_response_text(
      R"(  {"choices":[{"message":{"content":"hi"}}],"usage":null}  )", "m");
  ASSERT_TRUE(r) << r.error().message;
  auto doc = json::parse(r->body);
  EXPECT_EQ(doc["model"], "m");
  EXPECT_EQ(doc["choices"][0]["message"]["content"], "hi");
  EXPECT_FALSE(r->usage);
}

TEST(OpenAiSplice, SameErrorsAsTheDomPath) {
  auto d = make_dialect(openai_provider());
  const char* bodies[] = {
      "<html>502 Bad Gateway</html>",
      R"({"id":"x","object":"chat.completion"})",
      R"({"choices":{}})",
      R"({"choices":[],"trailing":1} x)",
      R"({"choices":[{"message":{"content":"cut)",
      "{\"choices\":[],\"bad\":\"\xff\"}",  // invalid UTF-8
      R"({"error":{"message":"Rate limit reached for gpt-4o","type":"requests","code":"rate_limit_exceeded"}})",
      R"({"error":"boom","choices":[]})",
      "",
  };
  for (const char* body : bodies) {
    auto dom = d->chat_response(body, "m");
    auto text = d->chat_response_text(body, "m");
    ASSERT_FALSE(dom) << body;
    ASSERT_FALSE(text) << body;
    EXPECT_EQ(text.error().kind, dom.error().kind) << body;
    EXPECT_EQ(text.error().status, dom.error().status) << body;
    EXPECT_EQ(text.error().message, dom.error().message) << body;
  }
  auto r = d->chat_response_text("{not json", "m");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::connection);
  EXPECT_EQ(r.error().status, 502);
  EXPECT_NE(r.error().message.find("not JSON"), std::string::npos) << r.error().message;
}

TEST(OpenAiSplice, OddShapesAgreeWithTheDomPath) {
  auto d = make_dialect(openai_provider());
  const char* bodies[] = {
      R"({"model":"a","model":"b","choices":[]})",           // duplicate: the DOM keeps the last
      R"({"model":5,"choices":[]})",                         // not a string
      R"({"model":null,"choices":[],"usage":{"total_tokens":1}})",
      R"({"choices":[],"usage":"x"})",                       // usage not an object: none
      R"({"choices":[],"usage":7,"usage":{"total_tokens":2}})",
      R"({"choices":[null,1,"s",[]],"usage":{}})",
      R"({"error":null,"choices":[]})",                      // a null error is no error
  };
  for (const char* body : bodies) {
    auto dom = d->chat_response(body, "gpt");
    auto text = d->chat_response_text(body, "gpt");
    ASSERT_TRUE(dom) << body;
    ASSERT_TRUE(text) << body << ": " << text.error().message;
    EXPECT_EQ(json::parse(text->body), *dom) << body;
    auto u = dom->find("usage");
    if (u != dom->end() && u->is_object()) {
      ASSERT_TRUE(text->usage) << body;
      EXPECT_EQ(*text->usage, *u) << body;
    } else {
      EXPECT_FALSE(text->usage) << body;
    }
  }
}

TEST(OpenAiSplice, StreamChunksMatchTheDomPathAndCarryTheGatewaysFacts) {
  auto d = make_dialect(openai_provider());
  auto dom_tr = d->chat_stream("gpt-4o");
  auto text_tr = d->chat_stream("gpt-4o");
  auto dom = run_stream(*dom_tr, kParallelToolStream);
  auto text = run_stream_text(*text_tr, kParallelToolStream);
  ASSERT_EQ(text.size(), dom.size());
  EXPECT_TRUE(text_tr->finished());
  for (std::size_t i = 0; i < dom.size(); ++i) {
    EXPECT_FALSE(text[i].doc) << i;  // passed through as text, no DOM built
    EXPECT_EQ(json::parse(text[i].text), dom[i]) << i;
    EXPECT_EQ(text[i].meaningful, meaningful_chunk(dom[i])) << i;
    EXPECT_EQ(text[i].usage_only, is_usage_chunk(dom[i])) << i;
  }
  ASSERT_TRUE(text.back().usage);
  EXPECT_EQ((*text.back().usage)["prompt_tokens_details"]["cached_tokens"], 1024);
  // The first chunk (role, no content, an empty tool call's name) commits; the usage chunk too.
  EXPECT_TRUE(text.front().meaningful);
}

TEST(OpenAiSplice, StreamContentBytesEscapesAndNestedModels) {
  constexpr std::string_view kWire =
      R"(data: {"id":"c","model":"up","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}

data: {"id":"c","model":"up","choices":[{"index":0,"delta":{"content":"h\u00e9 \"model\":1","refusal":null},"finish_reason":null}]}

data: {"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"model\":\"x\"}"}}]},"finish_reason":null}]}

data: {"id":"c","model":"up","choices":[{"index":0,"delta":{"reasoning_content":""},"finish_reason":null,"model":"keep"}]}

data: {"id":"c","model":"up","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}

data: [DONE]

)";
  auto d = make_dialect(openai_provider());
  auto text_tr = d->chat_stream("m");
  auto dom_tr = d->chat_stream("m");
  auto text = run_stream_text(*text_tr, kWire);
  auto dom = run_stream(*dom_tr, kWire);
  ASSERT_EQ(text.size(), 6u);  // the last content chunk's usage split off (DOM path)
  ASSERT_EQ(dom.size(), 6u);
  bool expect_meaningful[] = {false, true, true, false, true, true};
  std::size_t content_bytes = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    auto doc = text[i].take_doc();
    EXPECT_EQ(doc, dom[i]) << i;
    EXPECT_EQ(doc["model"], "m") << i;
    EXPECT_EQ(text[i].meaningful, expect_meaningful[i]) << i;
    content_bytes += text[i].content_bytes;
  }
  EXPECT_EQ(content_bytes, std::string("h\u00e9 \"model\":1").size());
  EXPECT_EQ(dom[3]["choices"][0]["model"], "keep");
  EXPECT_TRUE(text[5].usage_only);
  EXPECT_EQ((*text[5].usage)["total_tokens"], 3);

  net::SseEvent ev;
  ev.data = "{not json";
  auto r = d->chat_stream("m")->on_event_text(ev);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::connection);
  ev.data = R"({"error":{"message":"overloaded","type":"server_error"}})";
  r = d->chat_stream("m")->on_event_text(ev);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "overloaded");
}

TEST(OpenAiSplice, RequestBodyIsTheEditedDomsDump) {
  // What chat_request sends equals copying the request, editing it and dumping it.
  auto p = azure_provider();
  for (bool azure : {false, true}) {
    auto d = make_dialect(azure ? p : openai_provider());
    json req = kChatRequest;
    req["a_first"] = "\"quoted\" key order";
    req["weird \"key\""] = json::array({1, 2.5, nullptr, "\u00e9"});
    req["max_completion_tokens"] = nullptr;
    for (bool stream : {false, true}) {
      auto call = d->chat_request(req, "gpt \"4o\"", stream);
      ASSERT_TRUE(call) << call.error().message;
      json expected = req;
      expected["model"] = "gpt \"4o\"";
      if (stream) {
        expected["stream"] = true;
        expected["stream_options"]["include_usage"] = true;
      } else {
        expected.erase("stream");
        expected.erase("stream_options");
      }
      if (azure) {
        expected["max_completion_tokens"] = expected["max_tokens"];
        expected.erase("max_tokens");
      }
      EXPECT_EQ(call->body, expected.dump()) << azure << stream;
    }
  }
}

Error openai_error(int status, std::string_view body, net::Headers h = {}) {
  return make_dialect(openai_provider())->upstream_error(status, h, body);
}

TEST(OpenAiDialect, ContextWindowByCodeOrMessage) {
  auto e = openai_error(
      400,
      R"({"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130512 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}})");
  EXPECT_EQ(e.kind, Error::Kind::context_window);
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "messages");
  EXPECT_FALSE(e.retryable());
  EXPECT_TRUE(e.falls_back());

  e = openai_error(
      400,
      R"({"error":{"message":"Input is too long: too many tokens for this model's context window","type":"BadRequestError","code":null}})");
  EXPECT_EQ(e.kind, Error::Kind::context_window);
  EXPECT_EQ(e.code, "context_length_exceeded");
}

TEST(OpenAiDialect, ErrorClasses) {
  struct Case {
    int status;
    std::string_view body;
    Error::Kind kind;
    bool retry;
    bool fallback;
  };
  const Case cases[] = {
      {400,
       R"({"error":{"message":"Invalid value for 'temperature'","type":"invalid_request_error","param":"temperature","code":"invalid_value"}})",
       Error::Kind::bad_request, false, false},
      {401,
       R"({"error":{"message":"Incorrect API key provided: sk-test.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}})",
       Error::Kind::auth, false, true},
      {403,
       R"({"error":{"message":"Project does not have access to model gpt-5","type":"invalid_request_error","code":"model_not_found"}})",
       Error::Kind::auth, false, true},
      {404,
       R"({"error":{"message":"The model `gpt-9` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}})",
       Error::Kind::not_found, false, true},
      {429,
       R"({"error":{"message":"Rate limit reached for gpt-4o in organization org-42 on tokens per min (TPM).","type":"tokens","param":null,"code":"rate_limit_exceeded"}})",
       Error::Kind::rate_limited, true, true},
      {429,
       R"({"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}})",
       Error::Kind::auth, false, true},
      {500,
       R"({"error":{"message":"The server had an error processing your request.","type":"server_error","param":null,"code":null}})",
       Error::Kind::server, true, true},
      {503,
       R"({"error":{"message":"The engine is currently overloaded, please try again later","type":"server_error"}})",
       Error::Kind::overloaded, true, true},
      {504, "upstream request timeout", Error::Kind::timeout, true, true},
      {400,
       R"({"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400}})",
       Error::Kind::content_filter, false, false},
      {422, R"({"object":"error","message":"unknown field","type":"BadRequestError","code":422})",
       Error::Kind::bad_request, false, false},
  };
  for (const auto& c : cases) {
    auto e = openai_error(c.status, c.body);
    EXPECT_EQ(e.kind, c.kind) << c.status << " " << c.body;
    EXPECT_EQ(e.status, c.status) << c.body;
    EXPECT_EQ(e.retryable(), c.retry) << c.body;
    EXPECT_EQ(e.falls_back(), c.fallback) << c.body;
    EXPECT_FALSE(e.message.empty()) << c.body;
  }
  auto e = openai_error(
      401,
      R"({"error":{"message":"Incorrect API key provided: sk-test.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}})");
  EXPECT_EQ(e.message, "Incorrect API key provided: sk-test.");
  EXPECT_EQ(e.code, "invalid_api_key");
  EXPECT_EQ(e.type, "invalid_request_error");

  e = openai_error(504, "upstream request timeout");
  EXPECT_EQ(e.message, "upstream answered HTTP 504: upstream request timeout");
  e = openai_error(
      422, R"({"object":"error","message":"unknown field","type":"BadRequestError","code":422})");
  EXPECT_EQ(e.message, "unknown field");
}

TEST(OpenAiDialect, RateLimitCarriesRetryAfter) {
  auto e = openai_error(
      429,
      R"({"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}})",
      headers_of({{"retry-after", "20"}, {"retry-after-ms", "1500"}}));
  EXPECT_EQ(e.kind, Error::Kind::rate_limited);
  EXPECT_EQ(e.retry_after, 1500ms);
  e = openai_error(
      429,
      R"({"error":{"message":"quota","type":"insufficient_quota","code":"insufficient_quota"}})",
      headers_of({{"retry-after", "20"}}));
  EXPECT_FALSE(e.retry_after);  // waiting does not refill a quota
}

// --- every dialect, odd shapes ---

// Requests that got past (or around) validation in odd shapes, and upstream bodies that are not
// what the API documents: every dialect answers with a value, never an exception.
TEST(AllDialects, OddShapesNeverThrow) {
  const char* requests[] = {
      R"({"messages":[{"role":"user","content":null}]})",
      R"({"messages":[{"role":"user","content":[null, 3, {"type":3}]}]})",
      R"({"messages":[{"role":"assistant","tool_calls":[null]}]})",
      R"({"messages":[{"role":"assistant","tool_calls":[{"id":1,"function":"f"}]}]})",
      R"({"messages":[{"role":"assistant","tool_calls":{"id":"x"}}]})",
      R"({"messages":[{"role":"assistant","tool_calls":[{"id":"x","function":{"name":"f","arguments":7}}]}]})",
      R"({"messages":[{"role":"tool","tool_call_id":5,"content":{}}]})",
      R"({"messages":[{"role":"user","content":"x"}],"tools":[null,{"function":null}]})",
      R"({"messages":[{"role":"user","content":"x"}],"tools":{"a":1}})",
      R"({"messages":[{"role":"user","content":"x"}],"tool_choice":{"function":5},
          "tools":[{"type":"function","function":{"name":"f","parameters":[]}}]})",
      R"({"messages":[{"role":"user","content":"x"}],"stop":[1,2],"max_tokens":"many"})",
      R"({"messages":[{"role":"user","content":"x"}],"response_format":"json"})",
      R"({"messages":[{"role":"user","content":"x"}],
          "response_format":{"type":"json_schema","json_schema":"s"}})",
      R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:"}}]}]})",
      R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:;base64,AAA"}}]}]})",
      R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":"https://x.test/a.gif"}]}]})",
      R"({"messages":[{"role":"user","content":[{"type":"file","file":{"file_data":"data:text/csv;base64,AAA"}}]}]})",
      R"({"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":null}]}]})",
      R"({"messages":null})",
      R"([])",
      R"("x")",
      R"({"messages":[["user","x"]]})",
      R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{
          "name":"f","parameters":{"type":"object","properties":{"a":{"$ref":"#/$defs/A"}},
          "$defs":{"A":{"type":"object","properties":{"x":{"$ref":"#/$defs/A"},
          "y":{"$ref":"#/$defs/A"},"z":{"$ref":"#/$defs/A"},"w":{"$ref":"#/$defs/A"}}}}}}}]})",
  };
  const char* bodies[] = {
      "",
      "{}",
      "null",
      "[]",
      "\"s\"",
      "{\"error\":\"boom\"}",
      "{\"error\":{\"message\":5}}",
      R"({"type":"error","error":null})",
      R"({"content":[null,1,{"type":"text","text":5},{"type":"tool_use","input":"x"}],
          "usage":{"input_tokens":"5"},"stop_reason":7})",
      R"({"candidates":[null,{"content":{"parts":[null,{"functionCall":5},{"text":1}]},
          "finishReason":3,"index":"0"}],"usageMetadata":"u"})",
      R"({"type":"content_block_delta","index":"0","delta":{"type":"input_json_delta"}})",
      R"({"type":"message_start","message":[]})",
      R"({"choices":[null],"usage":{"prompt_tokens":"x"}})",
  };
  ProviderConfig providers[3] = {openai_provider(), openai_provider(), openai_provider()};
  providers[1].kind = ProviderKind::anthropic;
  providers[2].kind = ProviderKind::gemini;
  for (const auto& p : providers) {
    auto d = make_dialect(p);
    for (const char* text : requests) {
      auto req = json::parse(text);
      for (bool stream : {false, true}) {
        Outcome<UpstreamCall> call = Error{};
        EXPECT_NO_THROW(call = d->chat_request(req, "m", stream)) << text;
        if (!call) {
          EXPECT_EQ(call.error().kind, Error::Kind::bad_request) << text;
          EXPECT_EQ(call.error().status, 400) << text;
          EXPECT_FALSE(call.error().message.empty()) << text;
        }
      }
    }
    for (const char* body : bodies) {
      EXPECT_NO_THROW((void)d->chat_response(body, "m")) << body;
      EXPECT_NO_THROW((void)d->chat_response_text(body, "m")) << body;
      EXPECT_NO_THROW({
        auto e = d->upstream_error(500, {}, body);
        EXPECT_FALSE(e.message.empty()) << body;
      }) << body;
      auto tr = d->chat_stream("m");
      net::SseEvent ev;
      ev.data = body;
      EXPECT_NO_THROW((void)tr->on_event(ev)) << body;
      EXPECT_NO_THROW((void)d->chat_stream("m")->on_event_text(ev)) << body;
      ev.event = "error";
      EXPECT_NO_THROW((void)tr->on_event(ev)) << body;
      EXPECT_NO_THROW((void)d->chat_stream("m")->on_event_text(ev)) << body;
    }
  }
}

// --- Retry-After ---

TEST(RetryAfter, DeltaSecondsAndMilliseconds) {
  EXPECT_EQ(parse_retry_after(headers_of({{"Retry-After", "30"}})), 30s);
  EXPECT_EQ(parse_retry_after(headers_of({{"retry-after", " 0 "}})), 0ms);
  EXPECT_EQ(parse_retry_after(headers_of({{"retry-after", "1.5"}})), 1500ms);
  EXPECT_EQ(parse_retry_after(headers_of({{"retry-after-ms", "250"}})), 250ms);
  EXPECT_EQ(parse_retry_after(headers_of({{"retry-after-ms", "12.6"}})), 13ms);
  EXPECT_EQ(parse_retry_after(headers_of({{"retry-after-ms", "-5"}, {"retry-after", "2"}})), 2s);
  EXPECT_FALSE(parse_retry_after(headers_of({{"retry-after", "soon"}})));
  EXPECT_FALSE(parse_retry_after(headers_of({{"retry-after", "-3"}})));
  EXPECT_FALSE(parse_retry_after(net::Headers{}));
}

TEST(RetryAfter, HttpDateForms) {
  using std::chrono::sys_days;
  auto expected = sys_days(std::chrono::year(1994) / 11 / 6) + 8h + 49min + 37s;
  EXPECT_EQ(detail::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), expected);
  EXPECT_EQ(detail::parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), expected);
  EXPECT_EQ(detail::parse_http_date("Sun Nov  6 08:49:37 1994"), expected);
  EXPECT_FALSE(detail::parse_http_date("Sun, 31 Feb 1994 08:49:37 GMT"));
  EXPECT_FALSE(detail::parse_http_date("Sun, 06 Nov 1994 25:49:37 GMT"));
  EXPECT_FALSE(detail::parse_http_date("tomorrow"));

  auto now = expected - 45s;
  EXPECT_EQ(detail::parse_retry_after_at(
                headers_of({{"retry-after", "Sun, 06 Nov 1994 08:49:37 GMT"}}), now),
            45s);
  // A date in the past means "now".
  EXPECT_EQ(detail::parse_retry_after_at(
                headers_of({{"retry-after", "Sun, 06 Nov 1994 08:49:37 GMT"}}), expected + 1h),
            0ms);
}

TEST(RetryAfter, HttpDateAgainstTheRealClock) {
  std::time_t t = std::time(nullptr) + 120;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  auto d = parse_retry_after(headers_of({{"retry-after", buf}}));
  ASSERT_TRUE(d) << buf;
  EXPECT_GT(*d, 115s);
  EXPECT_LE(*d, 120s);
}

TEST(RetryAfter, OpenAiRateLimitResetHints) {
  // The exhausted limit's reset wins.
  EXPECT_EQ(parse_retry_after(headers_of({{"x-ratelimit-remaining-requests", "0"},
                                          {"x-ratelimit-reset-requests", "6m0s"},
                                          {"x-ratelimit-remaining-tokens", "1500"},
                                          {"x-ratelimit-reset-tokens", "20ms"}})),
            6min);
  EXPECT_EQ(parse_retry_after(headers_of({{"x-ratelimit-remaining-requests", "12"},
                                          {"x-ratelimit-reset-requests", "1s"},
                                          {"x-ratelimit-remaining-tokens", "0"},
                                          {"x-ratelimit-reset-tokens", "1m30.5s"}})),
            90500ms);
  // Nothing exhausted: no hint.
  EXPECT_FALSE(parse_retry_after(
      headers_of({{"x-ratelimit-remaining-requests", "3"}, {"x-ratelimit-reset-requests", "1s"}})));
  // Retry-After beats the hints.
  EXPECT_EQ(parse_retry_after(headers_of({{"retry-after", "4"},
                                          {"x-ratelimit-remaining-tokens", "0"},
                                          {"x-ratelimit-reset-tokens", "9s"}})),
            4s);
}

TEST(RetryAfter, Durations) {
  EXPECT_EQ(detail::parse_duration("34s"), 34s);
  EXPECT_EQ(detail::parse_duration("1.5s"), 1500ms);
  EXPECT_EQ(detail::parse_duration("2h3m4s"), 2h + 3min + 4s);
  EXPECT_EQ(detail::parse_duration("750ms"), 750ms);
  EXPECT_EQ(detail::parse_duration("0"), 0ms);
  EXPECT_FALSE(detail::parse_duration(""));
  EXPECT_FALSE(detail::parse_duration("5"));
  EXPECT_FALSE(detail::parse_duration("5 parsecs"));
}

// --- Error policy ---

TEST(AiError, RetryAndFallbackByKind) {
  struct Case {
    Error::Kind kind;
    bool retry;
    bool fallback;
  };
  const Case cases[] = {
      {Error::Kind::bad_request, false, false}, {Error::Kind::content_filter, false, false},
      {Error::Kind::cancelled, false, false},   {Error::Kind::limit, false, false},
      {Error::Kind::auth, false, true},         {Error::Kind::not_found, false, true},
      {Error::Kind::rate_limited, true, true},  {Error::Kind::overloaded, true, true},
      {Error::Kind::server, true, true},        {Error::Kind::timeout, true, true},
      {Error::Kind::connection, true, true},    {Error::Kind::context_window, false, true},
  };
  for (const auto& c : cases) {
    Error e;
    e.kind = c.kind;
    EXPECT_EQ(e.retryable(), c.retry) << static_cast<int>(c.kind);
    EXPECT_EQ(e.falls_back(), c.fallback) << static_cast<int>(c.kind);
  }
}

TEST(AiError, EffectiveTypeFromStatus) {
  const std::pair<int, const char*> cases[] = {{400, "invalid_request_error"},
                                               {401, "authentication_error"},
                                               {403, "permission_error"},
                                               {404, "not_found_error"},
                                               {429, "rate_limit_error"},
                                               {500, "api_error"},
                                               {502, "api_error"},
                                               {529, "api_error"},
                                               {413, "invalid_request_error"}};
  for (auto [status, type] : cases) {
    Error e;
    e.status = status;
    EXPECT_EQ(e.effective_type(), type) << status;
  }
  Error e;
  e.status = 429;
  e.type = "insufficient_quota";
  EXPECT_EQ(e.effective_type(), "insufficient_quota");
}

TEST(AiError, Factories) {
  auto b = Error::bad_request("temperature must be a number", "temperature");
  EXPECT_EQ(b.status, 400);
  EXPECT_EQ(b.kind, Error::Kind::bad_request);
  EXPECT_EQ(b.param, "temperature");
  EXPECT_EQ(b.effective_type(), "invalid_request_error");
  auto n = Error::not_found("no model gpt-9");
  EXPECT_EQ(n.status, 404);
  EXPECT_EQ(n.kind, Error::Kind::not_found);
  EXPECT_EQ(n.code, "model_not_found");
  auto f = Error::forbidden("key lacks the ai scope");
  EXPECT_EQ(f.status, 403);
  EXPECT_EQ(f.code, "insufficient_scope");
  EXPECT_EQ(f.effective_type(), "permission_error");
  EXPECT_FALSE(f.falls_back());
  EXPECT_FALSE(f.retryable());
}

TEST(AiError, ValueOnAnErrorThrowsErrorException) {
  Outcome<int> r = Error::bad_request("nope", "n");
  try {
    (void)r.value();
    FAIL() << "value() did not throw";
  } catch (const ErrorException& ex) {
    EXPECT_EQ(ex.error.param, "n");
    EXPECT_STREQ(ex.what(), "nope");
  }
}

}  // namespace
}  // namespace agentd::ai
