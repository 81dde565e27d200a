// The fake LLM provider server: scripted actions, recording, and the OpenAI, Anthropic and
// Gemini response formats (plain functions from a Reply to JSON bodies or SSE events).
#include "support/fake_llm.hpp"

#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cctype>
#include <cmath>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "agentd/core/metrics.hpp"
#include "agentd/net/server.hpp"
#include "agentd/net/sse.hpp"

namespace agentd::test {

namespace asio = boost::asio;
using json = nlohmann::json;
using net::Request;
using net::Response;
using net::SseEvent;
using std::chrono::milliseconds;

// ---------------------------------------------------------------------------------------------
// Actions

Action Action::reply(std::string text) {
  Action a;
  a.text = std::move(text);
  return a;
}

Action Action::tools(std::vector<FakeToolCall> calls) {
  Action a;
  a.tool_calls = std::move(calls);
  return a;
}

Action Action::fail(int status, std::string message) {
  Action a;
  a.error = FakeError{};
  a.error->status = status;
  a.error->message = std::move(message);
  return a;
}

Action Action::hanging() {
  Action a;
  a.hang = true;
  return a;
}

namespace {

[[noreturn]] void bad(const std::string& where, const std::string& what) {
  throw std::invalid_argument(where + ": " + what);
}

void only_keys(const json& j, const std::string& where, std::initializer_list<const char*> keys) {
  if (!j.is_object()) bad(where, "expected an object");
  for (const auto& [k, v] : j.items()) {
    bool known = std::any_of(keys.begin(), keys.end(), [&](const char* n) { return k == n; });
    if (!known) bad(where + "." + k, "unknown key");
  }
}

std::string get_string(const json& j, const std::string& where) {
  if (!j.is_string()) bad(where, "expected a string");
  return j.get<std::string>();
}

int get_int(const json& j, const std::string& where, int min) {
  if (!j.is_number_integer()) bad(where, "expected an integer");
  auto v = j.get<long long>();
  if (v < min || v > 1'000'000'000) bad(where, "out of range");
  return static_cast<int>(v);
}

bool get_bool(const json& j, const std::string& where) {
  if (!j.is_boolean()) bad(where, "expected a boolean");
  return j.get<bool>();
}

}  // namespace

Action parse_action(const json& j) {
  only_keys(j, "action",
            {"text", "tool_calls", "reasoning", "error", "delay_ms", "chunk_delay_ms", "cut_after",
             "hang", "usage", "finish_reason"});
  Action a;
  if (j.contains("text")) a.text = get_string(j["text"], "action.text");
  if (j.contains("reasoning")) a.reasoning = get_string(j["reasoning"], "action.reasoning");
  if (j.contains("finish_reason")) {
    a.finish_reason = get_string(j["finish_reason"], "action.finish_reason");
  }
  if (j.contains("delay_ms")) a.delay = milliseconds(get_int(j["delay_ms"], "action.delay_ms", 0));
  if (j.contains("chunk_delay_ms")) {
    a.chunk_delay = milliseconds(get_int(j["chunk_delay_ms"], "action.chunk_delay_ms", 0));
  }
  if (j.contains("cut_after")) a.cut_after = get_int(j["cut_after"], "action.cut_after", 0);
  if (j.contains("hang")) a.hang = get_bool(j["hang"], "action.hang");
  if (j.contains("tool_calls")) {
    const auto& calls = j["tool_calls"];
    if (!calls.is_array()) bad("action.tool_calls", "expected an array");
    for (std::size_t i = 0; i < calls.size(); ++i) {
      std::string where = "action.tool_calls[" + std::to_string(i) + "]";
      only_keys(calls[i], where, {"name", "arguments", "id"});
      if (!calls[i].contains("name")) bad(where + ".name", "required");
      FakeToolCall call;
      call.name = get_string(calls[i]["name"], where + ".name");
      if (calls[i].contains("id")) call.id = get_string(calls[i]["id"], where + ".id");
      if (calls[i].contains("arguments")) {
        const auto& args = calls[i]["arguments"];
        call.arguments = args.is_string() ? args.get<std::string>() : args.dump();
      }
      a.tool_calls.push_back(std::move(call));
    }
  }
  if (j.contains("error")) {
    const auto& e = j["error"];
    only_keys(e, "action.error", {"status", "message", "type", "code", "retry_after", "in_stream"});
    FakeError err;
    if (e.contains("status")) err.status = get_int(e["status"], "action.error.status", 100);
    if (err.status > 599) bad("action.error.status", "out of range");
    if (e.contains("message")) err.message = get_string(e["message"], "action.error.message");
    if (e.contains("type")) err.type = get_string(e["type"], "action.error.type");
    if (e.contains("code")) err.code = get_string(e["code"], "action.error.code");
    if (e.contains("retry_after")) {
      err.retry_after_s = get_int(e["retry_after"], "action.error.retry_after", 0);
    }
    if (e.contains("in_stream")) err.in_stream = get_bool(e["in_stream"], "action.error.in_stream");
    a.error = std::move(err);
  }
  if (j.contains("usage")) {
    const auto& u = j["usage"];
    only_keys(u, "action.usage",
              {"prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"});
    FakeUsage usage;
    if (u.contains("prompt_tokens")) {
      usage.prompt_tokens = get_int(u["prompt_tokens"], "action.usage.prompt_tokens", 0);
    }
    if (u.contains("completion_tokens")) {
      usage.completion_tokens =
          get_int(u["completion_tokens"], "action.usage.completion_tokens", 0);
    }
    if (u.contains("cached_tokens")) {
      usage.cached_tokens = get_int(u["cached_tokens"], "action.usage.cached_tokens", 0);
    }
    if (u.contains("reasoning_tokens")) {
      usage.reasoning_tokens = get_int(u["reasoning_tokens"], "action.usage.reasoning_tokens", 0);
    }
    a.usage = usage;
  }
  return a;
}

ToolLoopPolicy parse_policy(const json& j) {
  only_keys(j, "policy", {"tool_steps", "tool", "delay_ms", "record"});
  ToolLoopPolicy p;
  if (j.contains("tool_steps")) p.tool_steps = get_int(j["tool_steps"], "policy.tool_steps", 0);
  if (j.contains("tool")) p.tool = get_string(j["tool"], "policy.tool");
  if (p.tool.empty()) bad("policy.tool", "must not be empty");
  if (j.contains("delay_ms")) p.delay = milliseconds(get_int(j["delay_ms"], "policy.delay_ms", 0));
  if (j.contains("record")) p.record = get_bool(j["record"], "policy.record");
  return p;
}

Action policy_action(const ToolLoopPolicy& policy, const json& body) {
  int results = 0;
  if (auto m = body.find("messages"); m != body.end() && m->is_array()) {
    for (const auto& msg : *m) {
      if (msg.is_object() && msg.value("role", "") == "tool") ++results;
    }
  }
  Action a;
  a.delay = policy.delay;
  if (results >= policy.tool_steps) {
    a.text = "done after " + std::to_string(results) + " tool steps";
    return a;
  }
  std::string name = policy.tool;
  const std::string suffix = "__" + policy.tool;
  if (auto t = body.find("tools"); t != body.end() && t->is_array()) {
    for (const auto& tool : *t) {
      if (!tool.is_object() || !tool.contains("function") || !tool["function"].is_object())
        continue;
      std::string offered = tool["function"].value("name", "");
      if (offered == policy.tool ||
          (offered.size() > suffix.size() &&
           offered.compare(offered.size() - suffix.size(), suffix.size(), suffix) == 0)) {
        name = offered;
        break;
      }
    }
  }
  json args = {{"message", "step " + std::to_string(results + 1)}};
  a.tool_calls.push_back({name, args.dump(), ""});
  return a;
}

// ---------------------------------------------------------------------------------------------
// Recording

std::string RecordedRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (net::iequals(k, name)) return v;
  }
  return {};
}

json RecordedRequest::json() const {
  return nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
}

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Event data: one line of JSON; bad UTF-8 from a script is replaced rather than thrown on.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json recorded_json(const RecordedRequest& r) {
  json headers = json::object();
  for (const auto& [k, v] : r.headers) headers[k] = v;
  auto parsed = r.json();
  return {{"method", r.method},
          {"path", r.path},
          {"query", r.query},
          {"headers", headers},
          {"body", r.body},
          {"json", parsed.is_discarded() ? json(nullptr) : parsed},
          {"time_ms", std::chrono::duration_cast<milliseconds>(r.time.time_since_epoch()).count()}};
}

// ---------------------------------------------------------------------------------------------
// Reading requests

enum class Provider { openai, anthropic, gemini };

int tokens_for(std::size_t chars) { return std::max(1, static_cast<int>(chars / 4)); }

// Text of an OpenAI/Anthropic `content` (a string or a list of parts with `text`).
std::string content_text(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::string out;
  if (!content.is_array()) return out;
  for (const auto& part : content) {
    if (!part.is_object()) continue;
    if (part.contains("text") && part["text"].is_string()) {
      out += part["text"].get<std::string>();
    } else if (part.value("type", "") == "tool_result" && part.contains("content")) {
      out += content_text(part["content"]);
    }
  }
  return out;
}

std::string gemini_parts_text(const json& parts) {
  std::string out;
  if (!parts.is_array()) return out;
  for (const auto& p : parts) {
    if (!p.is_object()) continue;
    if (p.contains("text") && p["text"].is_string()) {
      out += p["text"].get<std::string>();
    } else if (p.contains("functionResponse")) {
      out += p["functionResponse"].value("response", json::object()).dump();
    }
  }
  return out;
}

// The text of the last user message and the characters of every message (for usage).
struct Prompt {
  std::string last_user;
  std::size_t chars = 0;
};

Prompt read_prompt(Provider p, const json& body) {
  Prompt out;
  if (p == Provider::gemini) {
    if (body.contains("systemInstruction")) {
      out.chars += gemini_parts_text(body["systemInstruction"].value("parts", json())).size();
    }
    for (const auto& c : body.value("contents", json::array())) {
      if (!c.is_object()) continue;
      auto text = gemini_parts_text(c.value("parts", json()));
      out.chars += text.size();
      if (c.value("role", "user") == "user") out.last_user = text;
    }
    return out;
  }
  if (p == Provider::anthropic && body.contains("system")) {
    out.chars += content_text(body["system"]).size();
  }
  for (const auto& m : body.value("messages", json::array())) {
    if (!m.is_object()) continue;
    auto text = content_text(m.value("content", json()));
    out.chars += text.size();
    if (m.value("role", "") == "user") out.last_user = text;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Errors in each provider's format

std::string openai_type(int status) {
  if (status == 429) return "requests";
  if (status >= 500) return "server_error";
  if (status == 403) return "permission_error";
  return "invalid_request_error";
}

json openai_code(int status) {
  switch (status) {
    case 401:
      return "invalid_api_key";
    case 404:
      return "model_not_found";
    case 429:
      return "rate_limit_exceeded";
    default:
      return nullptr;
  }
}

std::string anthropic_type(int status) {
  switch (status) {
    case 400:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 402:
      return "billing_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 504:
      return "timeout_error";
    case 529:
      return "overloaded_error";
    default:
      return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

std::string gemini_status(int status) {
  switch (status) {
    case 400:
      return "INVALID_ARGUMENT";
    case 401:
      return "UNAUTHENTICATED";
    case 403:
      return "PERMISSION_DENIED";
    case 404:
      return "NOT_FOUND";
    case 409:
      return "ABORTED";
    case 429:
      return "RESOURCE_EXHAUSTED";
    case 499:
      return "CANCELLED";
    case 500:
      return "INTERNAL";
    case 501:
      return "UNIMPLEMENTED";
    case 503:
      return "UNAVAILABLE";
    case 504:
      return "DEADLINE_EXCEEDED";
    default:
      return status >= 500 ? "INTERNAL" : "FAILED_PRECONDITION";
  }
}

json error_body(Provider p, const FakeError& e, const std::string& request_id) {
  switch (p) {
    case Provider::openai:
      return {{"error",
               {{"message", e.message},
                {"type", e.type.empty() ? openai_type(e.status) : e.type},
                {"param", nullptr},
                {"code", e.code.empty() ? openai_code(e.status) : json(e.code)}}}};
    case Provider::anthropic:
      return {
          {"type", "error"},
          {"error",
           {{"type", e.type.empty() ? anthropic_type(e.status) : e.type}, {"message", e.message}}},
          {"request_id", request_id}};
    case Provider::gemini:
      return {{"error",
               {{"code", e.status},
                {"message", e.message},
                {"status", e.type.empty() ? gemini_status(e.status) : e.type}}}};
  }
  return {};
}

Response error_response(Provider p, const FakeError& e, const std::string& request_id) {
  auto r = Response::json(e.status, error_body(p, e, request_id));
  if (e.retry_after_s) r.headers.set("retry-after", std::to_string(*e.retry_after_s));
  if (p == Provider::anthropic) r.headers.set("request-id", request_id);
  return r;
}

Response error_response(Provider p, int status, std::string message, const std::string& request_id,
                        std::string type = {}, std::string code = {}) {
  FakeError e;
  e.status = status;
  e.message = std::move(message);
  e.type = std::move(type);
  e.code = std::move(code);
  return error_response(p, e, request_id);
}

SseEvent stream_error_event(Provider p, const FakeError& e, const std::string& request_id) {
  SseEvent ev;
  if (p == Provider::anthropic) ev.event = "error";
  ev.data = dump(error_body(p, e, request_id));
  return ev;
}

// Gemini's own answers for a bad or missing key.
Response gemini_key_error(bool missing) {
  if (missing) {
    return Response::json(
        403, {{"error",
               {{"code", 403},
                {"message",
                 "Method doesn't allow unregistered callers (callers without established "
                 "identity). Please use API Key or other form of API consumer identity to call "
                 "this API."},
                {"status", "PERMISSION_DENIED"}}}});
  }
  json details = json::array({{{"@type", "type.googleapis.com/google.rpc.ErrorInfo"},
                               {"reason", "API_KEY_INVALID"},
                               {"domain", "googleapis.com"},
                               {"metadata", {{"service", "generativelanguage.googleapis.com"}}}}});
  return Response::json(400, {{"error",
                               {{"code", 400},
                                {"message", "API key not valid. Please pass a valid API key."},
                                {"status", "INVALID_ARGUMENT"},
                                {"details", details}}}});
}

// ---------------------------------------------------------------------------------------------
// One answer, rendered per provider

struct Reply {
  std::string id;  // provider-style message id
  long long created = 0;
  std::string model;
  std::optional<std::string> text;
  std::optional<std::string> reasoning;
  std::vector<FakeToolCall> tool_calls;  // ids filled in
  std::string finish;                    // canonical (stop|length|tool_calls|content_filter) or raw
  int prompt_tokens = 1;
  int completion_tokens = 1;
  int cached_tokens = 0;
  int reasoning_tokens = 0;
};

std::string finish_for(Provider p, const std::string& f) {
  static const std::map<std::string, std::pair<std::string, std::string>> kMap{
      {"stop", {"end_turn", "STOP"}},
      {"length", {"max_tokens", "MAX_TOKENS"}},
      {"tool_calls", {"tool_use", "STOP"}},
      {"content_filter", {"refusal", "SAFETY"}}};
  auto it = kMap.find(f);
  if (p == Provider::openai || it == kMap.end()) return f;
  return p == Provider::anthropic ? it->second.first : it->second.second;
}

// True when a cut before byte `i` does not split a UTF-8 sequence.
bool char_boundary(const std::string& s, std::size_t i) {
  return i >= s.size() || (static_cast<unsigned char>(s[i]) & 0xC0) != 0x80;
}

// Pieces of a text as a stream would carry them: words (with their trailing space), long
// words cut about every 12 bytes.
std::vector<std::string> text_pieces(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (std::size_t i = 0; i < s.size(); ++i) {
    cur += s[i];
    if ((s[i] == ' ' || cur.size() >= 12) && char_boundary(s, i + 1)) {
      out.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

// Tool arguments in about three pieces, so a client must reassemble them.
std::vector<std::string> argument_pieces(const std::string& s) {
  std::vector<std::string> out;
  std::size_t step = std::max<std::size_t>(1, (s.size() + 2) / 3);
  std::size_t start = 0;
  while (start < s.size()) {
    std::size_t end = std::min(s.size(), start + step);
    while (!char_boundary(s, end)) ++end;
    out.push_back(s.substr(start, end - start));
    start = end;
  }
  return out;
}

json parse_object_or_empty(const std::string& s) {
  auto j = json::parse(s, nullptr, false);
  return j.is_object() ? j : json::object();
}

// OpenAI --------------------------------------------------------------------------------------

json openai_usage(const Reply& r) {
  return {{"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", r.completion_tokens},
          {"total_tokens", r.prompt_tokens + r.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", r.cached_tokens}, {"audio_tokens", 0}}},
          {"completion_tokens_details",
           {{"reasoning_tokens", r.reasoning_tokens},
            {"audio_tokens", 0},
            {"accepted_prediction_tokens", 0},
            {"rejected_prediction_tokens", 0}}}};
}

json openai_completion(const Reply& r) {
  json message = {{"role", "assistant"},
                  {"content", r.text ? json(*r.text) : json(nullptr)},
                  {"refusal", nullptr},
                  {"annotations", json::array()}};
  if (r.reasoning) message["reasoning_content"] = *r.reasoning;
  if (!r.tool_calls.empty()) {
    json calls = json::array();
    for (const auto& c : r.tool_calls) {
      calls.push_back({{"id", c.id},
                       {"type", "function"},
                       {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
    }
    message["tool_calls"] = calls;
  }
  return {{"id", r.id},
          {"object", "chat.completion"},
          {"created", r.created},
          {"model", r.model},
          {"choices", json::array({{{"index", 0},
                                    {"message", message},
                                    {"logprobs", nullptr},
                                    {"finish_reason", finish_for(Provider::openai, r.finish)}}})},
          {"usage", openai_usage(r)},
          {"service_tier", "default"},
          {"system_fingerprint", "fp_fake"}};
}

std::vector<SseEvent> openai_chunks(const Reply& r, bool include_usage) {
  std::vector<SseEvent> out;
  auto chunk = [&](json delta, json finish) {
    json c = {{"id", r.id},
              {"object", "chat.completion.chunk"},
              {"created", r.created},
              {"model", r.model},
              {"system_fingerprint", "fp_fake"},
              {"choices", json::array({{{"index", 0},
                                        {"delta", std::move(delta)},
                                        {"logprobs", nullptr},
                                        {"finish_reason", std::move(finish)}}})}};
    if (include_usage) c["usage"] = nullptr;
    out.push_back({"", "", dump(c), std::nullopt});
  };
  chunk({{"role", "assistant"}, {"content", ""}, {"refusal", nullptr}}, nullptr);
  if (r.reasoning) {
    for (auto& piece : text_pieces(*r.reasoning)) chunk({{"reasoning_content", piece}}, nullptr);
  }
  if (r.text) {
    for (auto& piece : text_pieces(*r.text)) chunk({{"content", piece}}, nullptr);
  }
  for (std::size_t i = 0; i < r.tool_calls.size(); ++i) {
    const auto& c = r.tool_calls[i];
    json head = {{"index", i},
                 {"id", c.id},
                 {"type", "function"},
                 {"function", {{"name", c.name}, {"arguments", ""}}}};
    chunk({{"tool_calls", json::array({head})}}, nullptr);
    for (auto& piece : argument_pieces(c.arguments)) {
      json part = {{"index", i}, {"function", {{"arguments", piece}}}};
      chunk({{"tool_calls", json::array({part})}}, nullptr);
    }
  }
  chunk(json::object(), finish_for(Provider::openai, r.finish));
  if (include_usage) {
    json c = {{"id", r.id},
              {"object", "chat.completion.chunk"},
              {"created", r.created},
              {"model", r.model},
              {"system_fingerprint", "fp_fake"},
              {"choices", json::array()},
              {"usage", openai_usage(r)}};
    out.push_back({"", "", dump(c), std::nullopt});
  }
  out.push_back({"", "", "[DONE]", std::nullopt});
  return out;
}

// Anthropic -----------------------------------------------------------------------------------

json anthropic_usage(const Reply& r, int output_tokens) {
  return {{"input_tokens", std::max(0, r.prompt_tokens - r.cached_tokens)},
          {"cache_creation_input_tokens", 0},
          {"cache_read_input_tokens", r.cached_tokens},
          {"output_tokens", output_tokens},
          {"service_tier", "standard"}};
}

std::string signature_for(const Reply& r) { return "fake-signature-" + r.id; }

json anthropic_message(const Reply& r) {
  json content = json::array();
  if (r.reasoning) {
    content.push_back(
        {{"type", "thinking"}, {"thinking", *r.reasoning}, {"signature", signature_for(r)}});
  }
  if (r.text) content.push_back({{"type", "text"}, {"text", *r.text}});
  for (const auto& c : r.tool_calls) {
    content.push_back({{"type", "tool_use"},
                       {"id", c.id},
                       {"name", c.name},
                       {"input", parse_object_or_empty(c.arguments)}});
  }
  return {{"id", r.id},
          {"type", "message"},
          {"role", "assistant"},
          {"model", r.model},
          {"content", content},
          {"stop_reason", finish_for(Provider::anthropic, r.finish)},
          {"stop_sequence", nullptr},
          {"usage", anthropic_usage(r, r.completion_tokens)}};
}

std::vector<SseEvent> anthropic_events(const Reply& r) {
  std::vector<SseEvent> out;
  auto ev = [&](const char* type, json data) {
    data["type"] = type;
    out.push_back({"", type, dump(data), std::nullopt});
  };
  json start = anthropic_message(r);
  start["content"] = json::array();
  start["stop_reason"] = nullptr;
  start["usage"] = anthropic_usage(r, 1);
  ev("message_start", {{"message", start}});
  ev("ping", json::object());
  int index = 0;
  if (r.reasoning) {
    ev("content_block_start",
       {{"index", index},
        {"content_block", {{"type", "thinking"}, {"thinking", ""}, {"signature", ""}}}});
    for (auto& piece : text_pieces(*r.reasoning)) {
      ev("content_block_delta",
         {{"index", index}, {"delta", {{"type", "thinking_delta"}, {"thinking", piece}}}});
    }
    ev("content_block_delta",
       {{"index", index},
        {"delta", {{"type", "signature_delta"}, {"signature", signature_for(r)}}}});
    ev("content_block_stop", {{"index", index}});
    ++index;
  }
  if (r.text) {
    ev("content_block_start",
       {{"index", index}, {"content_block", {{"type", "text"}, {"text", ""}}}});
    for (auto& piece : text_pieces(*r.text)) {
      ev("content_block_delta",
         {{"index", index}, {"delta", {{"type", "text_delta"}, {"text", piece}}}});
    }
    ev("content_block_stop", {{"index", index}});
    ++index;
  }
  for (const auto& c : r.tool_calls) {
    ev("content_block_start",
       {{"index", index},
        {"content_block",
         {{"type", "tool_use"}, {"id", c.id}, {"name", c.name}, {"input", json::object()}}}});
    ev("content_block_delta",
       {{"index", index}, {"delta", {{"type", "input_json_delta"}, {"partial_json", ""}}}});
    for (auto& piece : argument_pieces(c.arguments)) {
      ev("content_block_delta",
         {{"index", index}, {"delta", {{"type", "input_json_delta"}, {"partial_json", piece}}}});
    }
    ev("content_block_stop", {{"index", index}});
    ++index;
  }
  ev("message_delta",
     {{"delta",
       {{"stop_reason", finish_for(Provider::anthropic, r.finish)}, {"stop_sequence", nullptr}}},
      {"usage", anthropic_usage(r, r.completion_tokens)}});
  ev("message_stop", json::object());
  return out;
}

// Gemini --------------------------------------------------------------------------------------

json gemini_usage(const Reply& r) {
  json u = {{"promptTokenCount", r.prompt_tokens},
            {"candidatesTokenCount", std::max(0, r.completion_tokens - r.reasoning_tokens)},
            {"totalTokenCount", r.prompt_tokens + r.completion_tokens},
            {"promptTokensDetails",
             json::array({{{"modality", "TEXT"}, {"tokenCount", r.prompt_tokens}}})}};
  if (r.cached_tokens > 0) u["cachedContentTokenCount"] = r.cached_tokens;
  if (r.reasoning_tokens > 0) u["thoughtsTokenCount"] = r.reasoning_tokens;
  return u;
}

json gemini_chunk(const Reply& r, json parts, bool last) {
  json candidate = {{"content", {{"parts", std::move(parts)}, {"role", "model"}}}, {"index", 0}};
  if (last) candidate["finishReason"] = finish_for(Provider::gemini, r.finish);
  json usage =
      last ? gemini_usage(r)
           : json{{"promptTokenCount", r.prompt_tokens}, {"totalTokenCount", r.prompt_tokens}};
  return {{"candidates", json::array({candidate})},
          {"usageMetadata", usage},
          {"modelVersion", r.model},
          {"responseId", r.id}};
}

json gemini_call_part(const FakeToolCall& c) {
  return {{"functionCall", {{"name", c.name}, {"args", parse_object_or_empty(c.arguments)}}}};
}

json gemini_response(const Reply& r) {
  json parts = json::array();
  if (r.reasoning) parts.push_back({{"text", *r.reasoning}, {"thought", true}});
  if (r.text) parts.push_back({{"text", *r.text}});
  for (const auto& c : r.tool_calls) parts.push_back(gemini_call_part(c));
  if (parts.empty()) parts.push_back({{"text", ""}});
  return gemini_chunk(r, std::move(parts), true);
}

std::vector<json> gemini_chunks(const Reply& r) {
  std::vector<json> parts_list;
  if (r.reasoning) {
    for (auto& piece : text_pieces(*r.reasoning)) {
      parts_list.push_back(json::array({{{"text", piece}, {"thought", true}}}));
    }
  }
  if (r.text) {
    for (auto& piece : text_pieces(*r.text)) parts_list.push_back(json::array({{{"text", piece}}}));
  }
  if (!r.tool_calls.empty()) {
    json calls = json::array();
    for (const auto& c : r.tool_calls) calls.push_back(gemini_call_part(c));
    parts_list.push_back(calls);
  }
  if (parts_list.empty()) parts_list.push_back(json::array({{{"text", ""}}}));
  std::vector<json> out;
  for (std::size_t i = 0; i < parts_list.size(); ++i) {
    out.push_back(gemini_chunk(r, std::move(parts_list[i]), i + 1 == parts_list.size()));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Streaming

struct StreamPlan {
  std::vector<SseEvent> events;
  milliseconds chunk_delay{0};
  std::optional<int> cut_after;
  std::optional<SseEvent> error_event;  // sent after the events that were let through
};

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// Parameters by value: the coroutine outlives whatever called it.
asio::awaitable<void> play(StreamPlan plan, std::shared_ptr<net::SseStream> s) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  std::size_t limit = plan.events.size();
  if (plan.cut_after) limit = std::min(limit, static_cast<std::size_t>(*plan.cut_after));
  for (std::size_t i = 0; i < limit; ++i) {
    if (i > 0 && plan.chunk_delay.count() > 0) {
      timer.expires_after(plan.chunk_delay);
      co_await timer.async_wait(kTuple);
    }
    if (!s->push(std::move(plan.events[i]))) co_return;
  }
  if (plan.error_event) {
    if (plan.chunk_delay.count() > 0) {
      timer.expires_after(plan.chunk_delay);
      co_await timer.async_wait(kTuple);
    }
    s->push(std::move(*plan.error_event));
  }
}

Response stream_response(StreamPlan plan) {
  bool cut = plan.cut_after.has_value() || plan.error_event.has_value();
  auto r = Response::stream(
      [plan = std::move(plan)](std::shared_ptr<net::SseStream> s) { return play(plan, s); });
  // A stream that stops early also ends the connection, as an upstream that died would.
  r.close = cut;
  return r;
}

std::vector<SseEvent> data_events(const std::vector<json>& chunks) {
  std::vector<SseEvent> out;
  for (const auto& c : chunks) out.push_back({"", "", dump(c), std::nullopt});
  return out;
}

// ---------------------------------------------------------------------------------------------
// Embeddings, audio

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

// A unit vector that depends only on the text.
std::vector<float> embedding_for(const std::string& text, int dims) {
  std::uint64_t state = fnv1a(text);
  std::vector<float> v(static_cast<std::size_t>(dims));
  double norm = 0;
  for (auto& x : v) {
    state += 0x9e3779b97f4a7c15ULL;  // splitmix64
    std::uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    x = static_cast<float>(static_cast<double>(z >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    norm += static_cast<double>(x) * x;
  }
  norm = std::sqrt(norm);
  if (norm > 0) {
    for (auto& x : v) x = static_cast<float>(x / norm);
  }
  return v;
}

std::string base64(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    std::uint32_t n = (std::uint32_t(std::uint8_t(in[i])) << 16) |
                      (std::uint32_t(std::uint8_t(in[i + 1])) << 8) | std::uint8_t(in[i + 2]);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += kAlphabet[n & 63];
  }
  if (i < in.size()) {
    std::uint32_t n = std::uint32_t(std::uint8_t(in[i])) << 16;
    if (i + 1 < in.size()) n |= std::uint32_t(std::uint8_t(in[i + 1])) << 8;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string floats_base64(const std::vector<float>& v) {
  std::string bytes(v.size() * 4, '\0');
  for (std::size_t i = 0; i < v.size(); ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, &v[i], 4);
    for (int b = 0; b < 4; ++b) bytes[i * 4 + b] = static_cast<char>((bits >> (8 * b)) & 0xff);
  }
  return base64(bytes);
}

constexpr std::string_view kSpeechMarker = "FAKE-SPEECH:";

struct Part {
  std::string name;
  std::optional<std::string> filename;
  std::string content_type;
  std::string data;
};

// multipart/form-data; nullopt when the body does not parse.
std::optional<std::vector<Part>> parse_multipart(const Request& req) {
  auto ct = req.headers.get("content-type");
  if (!ct || !starts_with(lower(*ct), "multipart/form-data")) return std::nullopt;
  auto pos = lower(*ct).find("boundary=");
  if (pos == std::string::npos) return std::nullopt;
  std::string boundary(ct->substr(pos + 9));
  if (auto semi = boundary.find(';'); semi != std::string::npos) boundary.resize(semi);
  if (boundary.size() >= 2 && boundary.front() == '"')
    boundary = boundary.substr(1, boundary.size() - 2);
  if (boundary.empty()) return std::nullopt;
  std::string delim = "--" + boundary;
  std::string_view body = req.body;
  auto at = body.find(delim);
  if (at == std::string_view::npos) return std::nullopt;
  std::vector<Part> parts;
  for (;;) {
    body.remove_prefix(at + delim.size());
    if (starts_with(body, "--")) return parts;
    if (!starts_with(body, "\r\n")) return std::nullopt;
    body.remove_prefix(2);
    auto head_end = body.find("\r\n\r\n");
    if (head_end == std::string_view::npos) return std::nullopt;
    std::string_view head = body.substr(0, head_end);
    body.remove_prefix(head_end + 4);
    at = body.find("\r\n" + delim);
    if (at == std::string_view::npos) return std::nullopt;
    Part part;
    part.data = std::string(body.substr(0, at));
    at += 2;
    while (!head.empty()) {
      auto eol = head.find("\r\n");
      std::string_view line = head.substr(0, eol);
      head = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);
      auto colon = line.find(':');
      if (colon == std::string_view::npos) continue;
      auto name = lower(line.substr(0, colon));
      std::string_view value = line.substr(colon + 1);
      if (name == "content-type") {
        auto first = value.find_first_not_of(' ');
        part.content_type = first == std::string_view::npos ? "" : std::string(value.substr(first));
      } else if (name == "content-disposition") {
        auto param = [&](std::string_view key) -> std::optional<std::string> {
          std::string needle = "; " + std::string(key) + "=\"";
          auto p = value.find(needle);
          if (p == std::string_view::npos) return std::nullopt;
          auto start = p + needle.size();
          auto end = value.find('"', start);
          if (end == std::string_view::npos) return std::nullopt;
          return std::string(value.substr(start, end - start));
        };
        part.name = param("name").value_or("");
        part.filename = param("filename");
      }
    }
    parts.push_back(std::move(part));
  }
}

const Part* find_part(const std::vector<Part>& parts, std::string_view name) {
  for (const auto& p : parts) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

std::string audio_content_type(const std::string& format) {
  if (format == "wav") return "audio/wav";
  if (format == "opus") return "audio/opus";
  if (format == "aac") return "audio/aac";
  if (format == "flac") return "audio/flac";
  if (format == "pcm") return "audio/pcm";
  return "audio/mpeg";
}

// ---------------------------------------------------------------------------------------------
// Routes

enum class Kind { chat, embeddings, models, speech, transcriptions, messages, generate, unknown };

struct Route {
  Kind kind = Kind::unknown;
  Provider provider = Provider::openai;
  std::string model;  // Gemini: from the path
  bool stream = false;
};

Route classify(const Request& req) {
  const std::string& p = req.path;
  bool post = req.method == "POST";
  auto route = [](Kind k, Provider provider) {
    Route r;
    r.kind = k;
    r.provider = provider;
    return r;
  };
  if (post && p == "/v1/chat/completions") return route(Kind::chat, Provider::openai);
  if (post && p == "/v1/embeddings") return route(Kind::embeddings, Provider::openai);
  if (req.method == "GET" && p == "/v1/models") {
    return route(Kind::models,
                 req.headers.get("anthropic-version") ? Provider::anthropic : Provider::openai);
  }
  if (post && p == "/v1/audio/speech") return route(Kind::speech, Provider::openai);
  if (post && p == "/v1/audio/transcriptions") return route(Kind::transcriptions, Provider::openai);
  if (post && p == "/v1/messages") return route(Kind::messages, Provider::anthropic);
  for (std::string_view prefix : {"/v1beta/models/", "/v1/models/", "/v1alpha/models/"}) {
    if (!post || !starts_with(p, prefix)) continue;
    std::string_view rest = std::string_view(p).substr(prefix.size());
    auto colon = rest.rfind(':');
    if (colon == std::string_view::npos || colon == 0) break;
    auto method = rest.substr(colon + 1);
    if (method != "generateContent" && method != "streamGenerateContent") break;
    Route r = route(Kind::generate, Provider::gemini);
    r.model = std::string(rest.substr(0, colon));
    r.stream = method == "streamGenerateContent";
    return r;
  }
  return {};
}

// Why the key is not accepted; nullopt when it is.
enum class KeyProblem { missing, wrong };

std::optional<KeyProblem> check_key(Provider p, const Request& req, const std::string& key) {
  std::optional<std::string> given;
  auto bearer = [&]() -> std::optional<std::string> {
    auto a = req.headers.get("authorization");
    if (!a || a->size() < 7 || !net::iequals(a->substr(0, 7), "Bearer ")) return std::nullopt;
    return std::string(a->substr(7));
  };
  switch (p) {
    case Provider::openai:
      given = bearer();
      if (!given) {
        if (auto k = req.headers.get("api-key")) given = std::string(*k);
      }
      break;
    case Provider::anthropic:
      if (auto k = req.headers.get("x-api-key")) {
        given = std::string(*k);
      } else {
        given = bearer();
      }
      break;
    case Provider::gemini:
      if (auto k = req.headers.get("x-goog-api-key")) {
        given = std::string(*k);
      } else {
        given = req.query_param("key");
      }
      break;
  }
  if (!given || given->empty()) return KeyProblem::missing;
  if (*given != key) return KeyProblem::wrong;
  return std::nullopt;
}

Response key_error(Provider p, KeyProblem why, const std::string& request_id) {
  bool missing = why == KeyProblem::missing;
  switch (p) {
    case Provider::openai:
      if (missing) {
        return error_response(p, 401,
                              "You didn't provide an API key. You need to provide your API key "
                              "in an Authorization header using Bearer auth (i.e. "
                              "Authorization: Bearer YOUR_KEY).",
                              request_id, "invalid_request_error", "");
      }
      return error_response(p, 401, "Incorrect API key provided.", request_id,
                            "invalid_request_error", "invalid_api_key");
    case Provider::anthropic:
      return error_response(p, 401, missing ? "x-api-key header is required" : "invalid x-api-key",
                            request_id);
    case Provider::gemini:
      return gemini_key_error(missing);
  }
  return {};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The server

struct FakeLlm::Impl {
  explicit Impl(FakeLlmOptions o) : options(std::move(o)), api_key(options.api_key) {}

  FakeLlmOptions options;
  mutable std::mutex mu;
  std::string api_key;
  std::deque<Action> queue;
  std::set<std::string> down;
  std::vector<RecordedRequest> recorded;
  std::optional<ToolLoopPolicy> policy;
  std::atomic<std::uint64_t> seq{0};

  // Destroyed first (reverse order): the server, then the loop with any coroutine frames left,
  // none of which touch the state above when destroyed. stop() has joined the thread before.
  asio::io_context io{1};
  core::Registry metrics;
  std::unique_ptr<net::HttpServer> server;
  std::uint16_t port = 0;
  std::thread thread;

  void start();
  void stop();
  asio::awaitable<Response> handle(Request& req);
  Response control(const Request& req);
  asio::awaitable<Response> provider(Request& req);
  Response answer(const Route& route, const Request& req, const json& body,
                  const std::optional<Action>& action);
  Reply make_reply(Provider p, const std::string& model, const json& body,
                   const std::optional<Action>& action);

  void record(const Request& req) {
    RecordedRequest r;
    r.method = req.method;
    r.path = req.path;
    r.query = req.query;
    for (const auto& h : req.headers) r.headers.emplace_back(lower(h.name), h.value);
    r.body = req.body;
    r.time = std::chrono::system_clock::now();
    std::lock_guard lock(mu);
    recorded.push_back(std::move(r));
  }
};

void FakeLlm::Impl::start() {
  net::ServerConfig config;
  config.listeners = {{"127.0.0.1", options.port, false}};
  config.access_log = false;
  config.max_body_bytes = 64 * 1024 * 1024;
  config.max_connections = 16384;  // a benchmark's thousands of concurrent conversations
  config.handler_timeout = std::chrono::hours(24);  // a hanging action hangs
  config.sse_max_queued = 1 << 16;
  // Providers send no SSE comments: a stalled stream must look stalled to the client.
  config.sse_keepalive = std::chrono::hours(24);
  server = net::make_http_server(
      io, config, [this](Request& req) { return handle(req); }, metrics);
  port = server->start().at(0).port;
  thread = std::thread([this] { io.run(); });
}

void FakeLlm::Impl::stop() {
  if (!thread.joinable()) return;
  std::promise<void> done;
  auto finished = done.get_future();
  asio::post(io, [&] { server->shutdown(milliseconds(0), [&done] { done.set_value(); }); });
  finished.wait_for(std::chrono::seconds(5));
  io.stop();
  thread.join();
}

asio::awaitable<Response> FakeLlm::Impl::handle(Request& req) {
  if (starts_with(req.path, "/_fake/")) co_return control(req);
  bool keep = true;
  {
    std::lock_guard lock(mu);
    keep = !policy || policy->record;
  }
  if (keep) record(req);
  co_return co_await provider(req);
}

Response FakeLlm::Impl::control(const Request& req) {
  auto fail = [](int status, std::string message) {
    return Response::json(status, {{"error", {{"message", std::move(message)}}}});
  };
  if (req.method == "GET" && req.path == "/_fake/requests") {
    json out = json::array();
    std::lock_guard lock(mu);
    for (const auto& r : recorded) out.push_back(recorded_json(r));
    return Response::json(200, out);
  }
  if (req.method == "POST" && req.path == "/_fake/reset") {
    std::lock_guard lock(mu);
    queue.clear();
    down.clear();
    recorded.clear();
    policy.reset();
    return Response::json(200, {{"ok", true}});
  }
  if (req.method != "POST" ||
      (req.path != "/_fake/script" && req.path != "/_fake/down" && req.path != "/_fake/policy")) {
    return fail(404, "no control route " + req.method + " " + req.path);
  }
  auto body = json::parse(req.body, nullptr, false);
  if (body.is_discarded()) return fail(400, "body is not valid JSON");
  if (req.path == "/_fake/policy") {
    if (body.is_null() || (body.is_object() && body.value("off", false))) {
      std::lock_guard lock(mu);
      policy.reset();
      return Response::json(200, {{"policy", nullptr}});
    }
    ToolLoopPolicy p;
    try {
      p = parse_policy(body);
    } catch (const std::invalid_argument& e) {
      return fail(400, e.what());
    }
    std::lock_guard lock(mu);
    policy = p;
    return Response::json(200, {{"policy",
                                 {{"tool_steps", p.tool_steps},
                                  {"tool", p.tool},
                                  {"delay_ms", p.delay.count()},
                                  {"record", p.record}}}});
  }
  if (req.path == "/_fake/down") {
    if (!body.is_object() || !body.contains("models") || !body["models"].is_array()) {
      return fail(400, "expected {\"models\": [...]}");
    }
    std::set<std::string> models;
    for (const auto& m : body["models"]) {
      if (!m.is_string()) return fail(400, "models: expected strings");
      models.insert(m.get<std::string>());
    }
    std::lock_guard lock(mu);
    down = std::move(models);
    return Response::json(200, {{"down", down}});
  }
  std::vector<Action> actions;
  try {
    if (body.is_array()) {
      for (const auto& a : body) actions.push_back(parse_action(a));
    } else {
      actions.push_back(parse_action(body));
    }
  } catch (const std::invalid_argument& e) {
    return fail(400, e.what());
  }
  std::lock_guard lock(mu);
  for (auto& a : actions) queue.push_back(std::move(a));
  return Response::json(200, {{"queued", actions.size()}, {"pending", queue.size()}});
}

asio::awaitable<Response> FakeLlm::Impl::provider(Request& req) {
  const std::string& rid = req.request_id;
  Route route = classify(req);
  if (route.kind == Kind::unknown) {
    co_return error_response(Provider::openai, 404,
                             "Invalid URL (" + req.method + " " + req.path + ")", rid,
                             "invalid_request_error", "");
  }
  Provider p = route.provider;
  std::string key;
  {
    std::lock_guard lock(mu);
    key = api_key;
  }
  if (auto why = check_key(p, req, key)) co_return key_error(p, *why, rid);
  if (p == Provider::anthropic && !req.headers.get("anthropic-version")) {
    co_return error_response(p, 400, "anthropic-version: header is required", rid);
  }

  // The body: JSON for most routes, multipart for transcriptions, none for GET.
  json body = json::object();
  std::optional<std::vector<Part>> parts;
  std::string model = route.model;
  if (route.kind == Kind::transcriptions) {
    parts = parse_multipart(req);
    if (!parts) co_return error_response(p, 400, "expected a multipart/form-data body", rid);
    if (const auto* m = find_part(*parts, "model")) model = m->data;
    if (!find_part(*parts, "file")) {
      co_return error_response(p, 400, "you must provide a file", rid);
    }
  } else if (route.kind != Kind::models) {
    body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      co_return error_response(p, 400, "We could not parse the JSON body of your request.", rid);
    }
    if (route.provider != Provider::gemini) model = body.value("model", "");
  }
  if (model.empty() && route.kind != Kind::models) {
    co_return error_response(
        p, 400,
        p == Provider::anthropic ? "model: Field required" : "you must provide a model parameter",
        rid);
  }

  bool is_down = false;
  {
    std::lock_guard lock(mu);
    is_down = down.count(model) > 0;
  }
  if (is_down) {
    co_return error_response(p, 503, "The model " + model + " is unavailable (fake: down)", rid);
  }

  switch (route.kind) {
    case Kind::chat:
      if (!body.contains("messages") || !body["messages"].is_array()) {
        co_return error_response(p, 400, "'messages' is a required property", rid);
      }
      break;
    case Kind::messages:
      if (!body.contains("max_tokens")) {
        co_return error_response(p, 400, "max_tokens: Field required", rid);
      }
      if (!body.contains("messages") || !body["messages"].is_array()) {
        co_return error_response(p, 400, "messages: Field required", rid);
      }
      break;
    case Kind::generate:
      if (!body.contains("contents") || !body["contents"].is_array()) {
        co_return error_response(p, 400,
                                 "* GenerateContentRequest.contents: contents is not "
                                 "specified",
                                 rid);
      }
      break;
    case Kind::embeddings:
      if (!body.contains("input"))
        co_return error_response(p, 400, "'input' is a required property", rid);
      break;
    case Kind::speech:
      if (!body.contains("input") || !body["input"].is_string()) {
        co_return error_response(p, 400, "'input' is a required property", rid);
      }
      break;
    default:
      break;
  }

  std::optional<Action> action;
  {
    std::lock_guard lock(mu);
    if (!queue.empty()) {
      action = std::move(queue.front());
      queue.pop_front();
    } else if (policy && route.kind == Kind::chat && p == Provider::openai) {
      action = policy_action(*policy, body);
    }
  }
  if (action && action->hang) {
    asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::hours(24));
    co_await t.async_wait(kTuple);  // cancelled when the server stops
    co_return error_response(p, 504, "fake: hung for a day", rid);
  }
  if (action && action->delay.count() > 0) {
    asio::steady_timer t(co_await asio::this_coro::executor, action->delay);
    co_await t.async_wait(kTuple);
  }
  bool streaming = route.kind == Kind::generate ? route.stream : body.value("stream", false);
  if (action && action->error && !(action->error->in_stream && streaming)) {
    co_return error_response(p, *action->error, rid);
  }

  if (route.kind == Kind::transcriptions) {
    const Part* file = find_part(*parts, "file");
    std::string text;
    if (action && action->text) {
      text = *action->text;
    } else if (auto at = file->data.find(kSpeechMarker); at != std::string::npos) {
      text = file->data.substr(at + kSpeechMarker.size());
    } else {
      text = "audio of " + std::to_string(file->data.size()) + " bytes";
    }
    const Part* fmt = find_part(*parts, "response_format");
    std::string format = fmt ? fmt->data : "json";
    if (format == "text" || format == "srt" || format == "vtt") {
      co_return Response::text(200, text + "\n", "text/plain; charset=utf-8");
    }
    if (format == "verbose_json") {
      co_return Response::json(200, {{"task", "transcribe"},
                                     {"language", "english"},
                                     {"duration", 1.0},
                                     {"text", text},
                                     {"segments", json::array()}});
    }
    co_return Response::json(200, {{"text", text}});
  }
  co_return answer(route, req, body, action);
}

Reply FakeLlm::Impl::make_reply(Provider p, const std::string& model, const json& body,
                                const std::optional<Action>& action) {
  auto n = ++seq;
  Reply r;
  r.model = model;
  r.created = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  switch (p) {
    case Provider::openai:
      r.id = "chatcmpl-fake" + std::to_string(n);
      break;
    case Provider::anthropic:
      r.id = "msg_fake" + std::to_string(n);
      break;
    case Provider::gemini:
      r.id = "fake-response-" + std::to_string(n);
      break;
  }
  Prompt prompt = read_prompt(p, body);
  if (action) {
    r.text = action->text;
    r.reasoning = action->reasoning;
    r.tool_calls = action->tool_calls;
  }
  if (!r.text && r.tool_calls.empty()) r.text = "echo: " + prompt.last_user;
  for (std::size_t i = 0; i < r.tool_calls.size(); ++i) {
    auto& c = r.tool_calls[i];
    if (!c.id.empty()) continue;
    std::string suffix = std::to_string(n) + "_" + std::to_string(i);
    c.id = p == Provider::anthropic ? "toolu_fake" + suffix : "call_fake" + suffix;
  }
  r.finish = action && action->finish_reason ? *action->finish_reason
             : r.tool_calls.empty()          ? "stop"
                                             : "tool_calls";
  std::size_t out_chars = (r.text ? r.text->size() : 0) + (r.reasoning ? r.reasoning->size() : 0);
  for (const auto& c : r.tool_calls) out_chars += c.name.size() + c.arguments.size();
  r.prompt_tokens = tokens_for(prompt.chars);
  r.completion_tokens = tokens_for(out_chars);
  r.reasoning_tokens = r.reasoning ? tokens_for(r.reasoning->size()) : 0;
  if (action && action->usage) {
    const auto& u = *action->usage;
    if (u.prompt_tokens) r.prompt_tokens = *u.prompt_tokens;
    if (u.completion_tokens) r.completion_tokens = *u.completion_tokens;
    r.cached_tokens = u.cached_tokens;
    r.reasoning_tokens = u.reasoning_tokens;
  }
  return r;
}

Response FakeLlm::Impl::answer(const Route& route, const Request& req, const json& body,
                               const std::optional<Action>& action) {
  Provider p = route.provider;
  const std::string& rid = req.request_id;
  switch (route.kind) {
    case Kind::models: {
      auto created = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
      json data = json::array();
      if (p == Provider::anthropic) {
        for (const auto& m : options.models) {
          data.push_back({{"type", "model"},
                          {"id", m},
                          {"display_name", m},
                          {"created_at", "2025-01-01T00:00:00Z"}});
        }
        return Response::json(
            200,
            {{"data", data},
             {"has_more", false},
             {"first_id", options.models.empty() ? json(nullptr) : json(options.models.front())},
             {"last_id", options.models.empty() ? json(nullptr) : json(options.models.back())}});
      }
      for (const auto& m : options.models) {
        data.push_back(
            {{"id", m}, {"object", "model"}, {"created", created}, {"owned_by", "fake"}});
      }
      return Response::json(200, {{"object", "list"}, {"data", data}});
    }
    case Kind::embeddings: {
      std::vector<std::string> inputs;
      const auto& in = body["input"];
      if (in.is_string()) {
        inputs.push_back(in.get<std::string>());
      } else if (in.is_array() && !in.empty() && in[0].is_number_integer()) {
        inputs.push_back(in.dump());  // one input given as tokens
      } else if (in.is_array()) {
        for (const auto& x : in) inputs.push_back(x.is_string() ? x.get<std::string>() : x.dump());
      } else {
        return error_response(p, 400, "'input' must be a string or an array", rid);
      }
      int dims = body.value("dimensions", 16);
      if (dims < 1 || dims > 4096) return error_response(p, 400, "'dimensions' out of range", rid);
      bool b64 = body.value("encoding_format", "float") == "base64";
      json data = json::array();
      std::size_t chars = 0;
      for (std::size_t i = 0; i < inputs.size(); ++i) {
        auto v = embedding_for(inputs[i], dims);
        chars += inputs[i].size();
        data.push_back({{"object", "embedding"},
                        {"index", i},
                        {"embedding", b64 ? json(floats_base64(v)) : json(v)}});
      }
      int tokens = tokens_for(chars);
      if (action && action->usage && action->usage->prompt_tokens) {
        tokens = *action->usage->prompt_tokens;
      }
      return Response::json(200,
                            {{"object", "list"},
                             {"data", data},
                             {"model", body["model"]},
                             {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}});
    }
    case Kind::speech: {
      std::string audio = "ID3\x04";
      audio.append(6, '\0');
      audio += kSpeechMarker;
      audio += body["input"].get<std::string>();
      return Response::text(200, std::move(audio),
                            audio_content_type(body.value("response_format", "mp3")));
    }
    default:
      break;
  }

  Reply reply =
      make_reply(p, route.model.empty() ? body.value("model", "") : route.model, body, action);
  bool streaming = route.kind == Kind::generate ? route.stream : body.value("stream", false);
  if (!streaming) {
    Response r;
    switch (p) {
      case Provider::openai:
        r = Response::json(200, openai_completion(reply));
        break;
      case Provider::anthropic:
        r = Response::json(200, anthropic_message(reply));
        break;
      case Provider::gemini:
        r = Response::json(200, gemini_response(reply));
        break;
    }
    if (p == Provider::anthropic) r.headers.set("request-id", rid);
    return r;
  }
  if (p == Provider::gemini && req.query_param("alt").value_or("") != "sse") {
    // Without alt=sse Gemini streams one JSON array; sent whole here.
    return Response::json(200, gemini_chunks(reply));
  }
  StreamPlan plan;
  switch (p) {
    case Provider::openai: {
      bool include_usage = body.contains("stream_options") && body["stream_options"].is_object() &&
                           body["stream_options"].value("include_usage", false);
      plan.events = openai_chunks(reply, include_usage);
      break;
    }
    case Provider::anthropic:
      plan.events = anthropic_events(reply);
      break;
    case Provider::gemini:
      plan.events = data_events(gemini_chunks(reply));
      break;
  }
  if (action) {
    plan.chunk_delay = action->chunk_delay;
    plan.cut_after = action->cut_after;
    if (action->error && action->error->in_stream) {
      if (!plan.cut_after) plan.cut_after = 1;
      plan.error_event = stream_error_event(p, *action->error, rid);
    }
  }
  auto r = stream_response(std::move(plan));
  if (p == Provider::anthropic) r.headers.set("request-id", rid);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Public API

FakeLlm::FakeLlm(FakeLlmOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  impl_->start();
}

FakeLlm::~FakeLlm() { impl_->stop(); }

std::uint16_t FakeLlm::port() const noexcept { return impl_->port; }

std::string FakeLlm::url() const { return "http://127.0.0.1:" + std::to_string(impl_->port); }

void FakeLlm::script(Action action) {
  std::lock_guard lock(impl_->mu);
  impl_->queue.push_back(std::move(action));
}

void FakeLlm::script(std::vector<Action> actions) {
  std::lock_guard lock(impl_->mu);
  for (auto& a : actions) impl_->queue.push_back(std::move(a));
}

std::size_t FakeLlm::pending() const {
  std::lock_guard lock(impl_->mu);
  return impl_->queue.size();
}

void FakeLlm::set_down(std::set<std::string> models) {
  std::lock_guard lock(impl_->mu);
  impl_->down = std::move(models);
}

void FakeLlm::set_api_key(std::string key) {
  std::lock_guard lock(impl_->mu);
  impl_->api_key = std::move(key);
}

void FakeLlm::set_policy(std::optional<ToolLoopPolicy> policy) {
  std::lock_guard lock(impl_->mu);
  impl_->policy = std::move(policy);
}

std::vector<RecordedRequest> FakeLlm::requests() const {
  std::lock_guard lock(impl_->mu);
  return impl_->recorded;
}

std::size_t FakeLlm::count() const {
  std::lock_guard lock(impl_->mu);
  return impl_->recorded.size();
}

void FakeLlm::reset() {
  std::lock_guard lock(impl_->mu);
  impl_->queue.clear();
  impl_->down.clear();
  impl_->recorded.clear();
  impl_->policy.reset();
}

}  // namespace agentd::test
