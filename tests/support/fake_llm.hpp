// A test double of the LLM providers (OpenAI Chat Completions, Anthropic Messages, Google
// Gemini) speaking their wire formats on 127.0.0.1, scripted per request, recording every call.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace agentd::test {

// Routes (all on one port):
//   OpenAI     POST /v1/chat/completions (stream:true → SSE ending with `data: [DONE]`;
//                   stream_options.include_usage → a last chunk with `usage` and no choices)
//              POST /v1/embeddings, GET /v1/models, POST /v1/audio/speech,
//              POST /v1/audio/transcriptions (multipart; `{text}`, or plain text when
//                   response_format=text)
//   Anthropic  POST /v1/messages (needs `anthropic-version`; stream:true → message_start, ping,
//                   content_block_start/delta/stop..., message_delta, message_stop)
//   Gemini     POST /v1beta/models/{model}:generateContent,
//              POST /v1beta/models/{model}:streamGenerateContent?alt=sse (also under /v1/)
//   Control    POST /_fake/script, POST /_fake/down, GET /_fake/requests, POST /_fake/reset,
//              POST /_fake/policy (no API key; never recorded, never consume an action)
//
// Keys: OpenAI routes take `Authorization: Bearer K` (or Azure's `api-key: K`); Anthropic takes
// `x-api-key: K` or `Authorization: Bearer K` (the 1.x SDK sends the latter); Gemini takes
// `x-goog-api-key: K` or `?key=K`. A wrong or missing key answers in the provider's own format:
// OpenAI 401 invalid_api_key, Anthropic 401 authentication_error, and, as Gemini really does,
// 400 INVALID_ARGUMENT (reason API_KEY_INVALID) for a wrong key and 403 PERMISSION_DENIED for
// none.
//
// Order of checks per provider request: record it; key (and Anthropic's anthropic-version);
// body parses and names a model (400); model in the down set (503 in the route's format);
// required fields (400); only then the next action is consumed (or the default answer given
// when the queue is empty). Any provider route consumes actions, /v1/models included.
//
// Default answer: text "echo: <text of the last user message>", finish "stop", usage
// prompt = max(1, chars of every message's text / 4), completion = max(1, chars of output / 4).
//
// Action JSON (POST /_fake/script takes one object or an array; every key optional, unknown
// keys are rejected with 400):
//   {
//     "text": "hello",                       // reply text (default: the echo, unless tool calls)
//     "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_1"}],
//                                            // arguments: object, or a string sent verbatim
//                                            // (lets a test send broken JSON); id optional
//     "reasoning": "thinking...",            // OpenAI delta.reasoning_content, Anthropic
//                                            // thinking block, Gemini part with thought:true
//     "error": {"status": 429, "message": "slow down", "type": "rate_limit_error",
//               "code": "rate_limit_exceeded", "retry_after": 2, "in_stream": false},
//                                            // type/code default per provider from status;
//                                            // retry_after → `retry-after` header (seconds);
//                                            // in_stream: a streaming request gets 200, the first
//                                            // `cut_after` events (default 1), then the
//                                            // provider's error event, then the end
//     "delay_ms": 100,                       // before the response headers
//     "chunk_delay_ms": 20,                  // between stream events
//     "cut_after": 3,                        // stream: stop after N events and close the
//                                            // connection (no [DONE] / message_stop / finish)
//     "hang": true,                          // never answer (until the server stops)
//     "usage": {"prompt_tokens": 10, "completion_tokens": 5, "cached_tokens": 4,
//               "reasoning_tokens": 0},      // OpenAI meaning: prompt includes cached; Anthropic
//                                            // gets input_tokens = prompt - cached and
//                                            // cache_read_input_tokens = cached
//     "finish_reason": "length"              // stop | length | tool_calls | content_filter are
//                                            // mapped per provider (Anthropic end_turn,
//                                            // max_tokens, tool_use, refusal; Gemini STOP,
//                                            // MAX_TOKENS, STOP, SAFETY); anything else verbatim
//   }
// Stream "events" counted by cut_after/chunk_delay are SSE events: for OpenAI every chunk and
// the [DONE] line, for Anthropic every event including ping, for Gemini every chunk.
//
// POST /_fake/down {"models": ["m1", ...]} replaces the down set.
// GET /_fake/requests → [{"method","path","query","headers":{lower-case name: value},
//                         "body","json" (parsed body or null),"time_ms"}]
// POST /_fake/reset clears the queue, the down set, the recording and the policy.
//
// Policy: a stateless answer for many concurrent conversations, where one FIFO queue cannot say
// which conversation an action is for. Used when the queue is empty, on OpenAI chat completions
// only (other routes keep the default answer). Each request is answered from its own messages:
// while it holds fewer than `tool_steps` tool results (`role: "tool"` messages), one call of
// `tool` with {"message": "step K"} (K = results + 1); then the text "done after N tool steps".
// The call names the offered tool (the request's `tools`) called `tool` or ending in `__<tool>`
// (an MCP gateway's namespaced name), else `tool` as given.
// POST /_fake/policy {"tool_steps": 3, "tool": "echo", "delay_ms": 0, "record": true}
//   (every key optional, these are the defaults; unknown keys are rejected with 400);
//   `delay_ms` before each answer, as a model's latency; `record: false` keeps the requests
//   it answers out of the recording (a long benchmark would otherwise grow it without end).
// POST /_fake/policy {"off": true} (or null) turns it off.

struct FakeToolCall {
  std::string name;
  std::string arguments = "{}";  // JSON text, sent as is
  std::string id;                // empty: generated
};

struct FakeError {
  int status = 500;
  std::string message = "fake upstream error";
  std::string type;  // provider error type (Gemini: status string); empty: derived from status
  std::string code;  // OpenAI `code`; empty: derived from status (or null)
  std::optional<int> retry_after_s;
  bool in_stream = false;
};

struct FakeUsage {
  std::optional<int> prompt_tokens;
  std::optional<int> completion_tokens;
  int cached_tokens = 0;
  int reasoning_tokens = 0;
};

struct Action {
  std::optional<std::string> text;
  std::vector<FakeToolCall> tool_calls;
  std::optional<std::string> reasoning;
  std::optional<FakeError> error;
  std::chrono::milliseconds delay{0};
  std::chrono::milliseconds chunk_delay{0};
  std::optional<int> cut_after;
  bool hang = false;
  std::optional<FakeUsage> usage;
  std::optional<std::string> finish_reason;

  static Action reply(std::string text);
  static Action tools(std::vector<FakeToolCall> calls);
  static Action fail(int status, std::string message = "fake upstream error");
  static Action hanging();
};

// Parses one action object (the JSON above); throws std::invalid_argument naming the key.
Action parse_action(const nlohmann::json& j);

struct ToolLoopPolicy {
  int tool_steps = 3;
  std::string tool = "echo";
  std::chrono::milliseconds delay{0};
  bool record = true;
};

// Parses a policy object (the JSON above, without "off"); throws std::invalid_argument.
ToolLoopPolicy parse_policy(const nlohmann::json& j);

// The action the policy takes for one OpenAI chat completions request body.
Action policy_action(const ToolLoopPolicy& policy, const nlohmann::json& body);

struct RecordedRequest {
  std::string method;
  std::string path;                                          // percent-decoded, without the query
  std::string query;                                         // raw
  std::vector<std::pair<std::string, std::string>> headers;  // lower-case names, in order
  std::string body;
  std::chrono::system_clock::time_point time;

  std::string header(std::string_view name) const;  // "" when absent
  nlohmann::json json() const;                      // parsed body; null when not JSON
};

struct FakeLlmOptions {
  std::string api_key = "fake-key";
  std::uint16_t port = 0;
  std::vector<std::string> models{"gpt-4o-mini", "gpt-4o", "text-embedding-3-small",
                                  "claude-sonnet-4-6", "gemini-2.5-flash"};  // GET /v1/models
};

class FakeLlm {
 public:
  explicit FakeLlm(FakeLlmOptions options = {});  // listening when it returns
  ~FakeLlm();                                     // stops the server and joins its thread
  FakeLlm(const FakeLlm&) = delete;
  FakeLlm& operator=(const FakeLlm&) = delete;

  std::uint16_t port() const noexcept;
  std::string url() const;  // http://127.0.0.1:PORT

  void script(Action action);  // appended to the queue
  void script(std::vector<Action> actions);
  std::size_t pending() const;  // actions not consumed yet
  void set_down(std::set<std::string> models);
  void set_api_key(std::string key);
  void set_policy(std::optional<ToolLoopPolicy> policy);  // nullopt: off

  std::vector<RecordedRequest> requests() const;  // snapshot, oldest first
  std::size_t count() const;
  void reset();  // queue, down set, recording and policy

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace agentd::test
