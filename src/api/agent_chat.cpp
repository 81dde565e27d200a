// Agents and workflows as models on the OpenAI-compatible face: a chat completion addressed
// to an agent runs it as an intent and answers in Chat Completions' shape (streamed or not),
// so any OpenAI client, LobeChat included, can drive an agent.
#include <spdlog/spdlog.h>

#include "agentd/api/agent_chat.hpp"
#include "agentd/api/intents.hpp"
#include "agentd/net/sse.hpp"

namespace agentd::api {
namespace {

namespace asio = boost::asio;
using net::Request;
using net::Response;
using nlohmann::json;

constexpr std::size_t kPreview = 300;  // characters of tool arguments/results shown as reasoning

std::string clip(std::string s) {
  if (s.size() > kPreview) s = s.substr(0, kPreview) + "…";
  return s;
}

std::string content_text(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::string out;
  if (content.is_array()) {
    for (const auto& b : content) {
      if (b.is_object() && b.value("type", "") == "text") out += b.value("text", "");
    }
  }
  return out;
}

Response chat_error(int status, std::string message, std::string code, std::string param = {}) {
  return agent_error_response({status, std::move(message), std::move(code), std::move(param)});
}

// Turns an intent's events into chat.completion.chunk deltas: the top-level agent's text is the
// content; sub-agents' text, tool calls and results, plans and artifacts are reasoning.
class Assembler {
 public:
  Assembler(std::string id, std::string model, std::int64_t created)
      : id_(std::move(id)), model_(std::move(model)), created_(created) {}

  // The deltas this event produces, and whether it ended the run.
  std::vector<json> on_event(const json& ev, bool& ended) {
    std::vector<json> out;
    std::string type = ev.value("type", "");
    ended = agent::events::terminal(type);
    if (type == agent::events::kLlmDelta) {
      if (ev.contains("delta")) {
        std::string d = ev.value("delta", "");
        if (ev.value("step", "") == "r") {
          streamed_content_ = true;
          out.push_back({{"content", d}});
        } else {
          out.push_back({{"reasoning_content", d}});
        }
      } else if (ev.contains("reasoning")) {
        out.push_back({{"reasoning_content", ev.value("reasoning", "")}});
      }
    } else if (type == agent::events::kToolCall) {
      out.push_back({{"reasoning_content", "\n→ " + ev.value("tool", "") + " " + clip(ev.value("arguments", json::object()).dump()) + "\n"}});
    } else if (type == agent::events::kToolResult) {
      std::string text;
      for (const auto& b : ev.value("content", json::array())) {
        if (b.is_object() && b.value("type", "") == "text") text += b.value("text", "");
      }
      out.push_back({{"reasoning_content", std::string(ev.value("is_error", false) ? "✗ " : "← ") + clip(text) + "\n"}});
    } else if (type == agent::events::kPlan) {
      out.push_back({{"reasoning_content", "\nPlan: " + clip(ev.contains("plan") ? ev["plan"].dump() : ev.value("route", json::object()).dump()) + "\n"}});
    } else if (type == agent::events::kArtifact) {
      out.push_back({{"reasoning_content", "\n[artifact " + ev.value("kind", "") + ": " + ev.value("url", "") + "]\n"}});
    } else if (type == agent::events::kMessage) {
      if (!streamed_content_ && ev.contains("content")) {
        out.push_back({{"content", ev.value("content", "")}});
        streamed_content_ = true;
      }
    } else if (type == agent::events::kCompleted) {
      const json& result = ev.contains("result") ? ev["result"] : json::object();
      if (result.contains("usage")) usage_ = result["usage"];
      if (auto tc = result.find("tool_calls"); tc != result.end() && tc->is_array() && !tc->empty()) {
        std::string text = result.value("text", "");
        if (!text.empty() && !streamed_content_) out.push_back({{"content", text}});
        json calls = json::array();
        for (std::size_t i = 0; i < tc->size(); ++i) {
          json c = (*tc)[i];
          c["index"] = i;
          calls.push_back(std::move(c));
        }
        out.push_back({{"tool_calls", std::move(calls)}});
        finish_ = "tool_calls";
      } else {
        finish_ = "stop";
      }
    } else if (ended) {
      failure_ = ev;
    }
    return out;
  }

  json chunk(json delta, json finish = nullptr) const {
    return {{"id", id_}, {"object", "chat.completion.chunk"}, {"created", created_}, {"model", model_},
            {"choices", json::array({{{"index", 0}, {"delta", std::move(delta)}, {"finish_reason", std::move(finish)}}})}};
  }
  json usage_chunk() const {
    return {{"id", id_}, {"object", "chat.completion.chunk"}, {"created", created_}, {"model", model_},
            {"choices", json::array()}, {"usage", openai_usage()}};
  }
  json openai_usage() const {
    return {{"prompt_tokens", usage_.value("prompt_tokens", 0)},
            {"completion_tokens", usage_.value("completion_tokens", 0)},
            {"total_tokens", usage_.value("total_tokens", 0)}};
  }
  const std::string& finish() const noexcept { return finish_; }
  const json& failure() const noexcept { return failure_; }
  const std::string& id() const noexcept { return id_; }
  const std::string& model() const noexcept { return model_; }
  std::int64_t created() const noexcept { return created_; }

 private:
  std::string id_;
  std::string model_;
  std::int64_t created_;
  bool streamed_content_ = false;
  json usage_ = json::object();
  std::string finish_;
  json failure_;
};

json failure_error(const json& failure) {
  std::string type = failure.value("type", "");
  std::string code = failure.value("code", type == agent::events::kCancelled ? "cancelled" : "agent_failed");
  return {{"error", {{"message", failure.value("reason", std::string("the agent run failed"))},
                     {"type", "server_error"},
                     {"code", code}}}};
}

int failure_status(const json& failure) {
  std::string code = failure.value("code", "");
  if (code == "budget_exceeded" || code == "rate_limited") return 429;
  if (code == "timeout" || code == "step_timeout") return 504;
  if (code == "max_iterations" || code == "bad_model_output") return 422;
  if (failure.value("type", "") == agent::events::kCancelled) return 409;
  return 502;
}

asio::awaitable<void> stream_chat(agent::Engine& engine, std::string intent_id, std::string client,
                                  std::shared_ptr<Assembler> a, bool include_usage,
                                  std::shared_ptr<net::SseStream> out) {
  auto sub = engine.events().subscribe(agent::event_stream(intent_id), "");
  auto push = [&out](const json& j) {
    return out->push({.id = {}, .event = {}, .data = j.dump(), .retry_ms = std::nullopt});
  };
  json first = {{"role", "assistant"}, {"content", ""}};
  if (!sub || !push(a->chunk(first))) co_return;
  for (;;) {
    auto batch = co_await (*sub)->next(256, std::chrono::seconds(1));
    if (out->closed() || !batch) {
      // The client went away (LobeChat's stop button): the run is cancelled.
      auto c = co_await engine.cancel(intent_id, client);
      (void)c;
      co_return;
    }
    for (auto& e : *batch) {
      json ev = json::parse(e.payload, nullptr, false);
      if (!ev.is_object()) continue;
      bool ended = false;
      for (auto& d : a->on_event(ev, ended)) push(a->chunk(std::move(d)));
      if (!ended) continue;
      if (!a->finish().empty()) {
        push(a->chunk(json::object(), a->finish()));
        if (include_usage) push(a->usage_chunk());
      } else {
        push(failure_error(a->failure()));
      }
      out->push({.id = {}, .event = {}, .data = "[DONE]", .retry_ms = std::nullopt});
      out->finish();
      co_return;
    }
  }
}

// Waits for the run and answers one chat.completion.
asio::awaitable<Response> whole_chat(agent::Engine& engine, std::string intent_id,
                                     std::shared_ptr<Assembler> a) {
  auto sub = engine.events().subscribe(agent::event_stream(intent_id), "");
  if (!sub) co_return chat_error(503, "event stream unavailable: " + sub.error().message, "store_unavailable");
  std::string content, reasoning;
  json tool_calls;
  for (;;) {
    auto batch = co_await (*sub)->next(256, std::chrono::seconds(30));
    if (!batch) co_return chat_error(503, "event stream failed: " + batch.error().message, "store_unavailable");
    for (auto& e : *batch) {
      json ev = json::parse(e.payload, nullptr, false);
      if (!ev.is_object()) continue;
      bool ended = false;
      for (auto& d : a->on_event(ev, ended)) {
        if (d.contains("content")) content += d["content"].get<std::string>();
        if (d.contains("reasoning_content")) reasoning += d["reasoning_content"].get<std::string>();
        if (d.contains("tool_calls")) {
          tool_calls = d["tool_calls"];
          for (auto& c : tool_calls) c.erase("index");
        }
      }
      if (!ended) continue;
      if (a->finish().empty()) co_return Response::json(failure_status(a->failure()), failure_error(a->failure()));
      json message = {{"role", "assistant"}, {"content", content.empty() && !tool_calls.is_null() ? json(nullptr) : json(content)}};
      if (!tool_calls.is_null()) message["tool_calls"] = tool_calls;
      if (!reasoning.empty()) message["reasoning_content"] = reasoning;
      json body = {{"id", a->id()}, {"object", "chat.completion"}, {"created", a->created()}, {"model", a->model()},
                   {"choices", json::array({{{"index", 0}, {"message", std::move(message)}, {"finish_reason", a->finish()}, {"logprobs", nullptr}}})},
                   {"usage", a->openai_usage()}};
      co_return Response::json(200, body);
    }
  }
}

}  // namespace

bool is_agent_model(const agent::Engine& engine, const std::string& model) {
  return engine.config().runnable(model);
}

std::vector<json> agent_models(const agent::Engine& engine) {
  std::vector<json> out;
  auto add = [&out](const std::string& name, const std::string& description, const char* kind) {
    out.push_back({{"id", name},
                   {"object", "model"},
                   {"created", 0},
                   {"owned_by", "agentd"},
                   {"displayName", name},
                   {"description", description.empty() ? std::string("agentd ") + kind : description},
                   {"functionCall", true},
                   {"vision", true},
                   {"reasoning", true},
                   {"agentd", {{"kind", kind}}}});
  };
  for (const auto& a : engine.config().agents) add(a.name, a.description, "agent");
  for (const auto& w : engine.config().workflows) add(w.name, w.description, "workflow");
  return out;
}

asio::awaitable<Response> agent_chat(Api& api, agent::Engine& engine, Request& req, json body) {
  std::string model = body.value("model", "");
  const Client* c = api.client_by_name(req.client);
  if (!c || !scope_allows(c->scopes, "agents:" + model)) {
    co_return chat_error(403, "client \"" + req.client + "\" may not run agent \"" + model +
                                  "\" (needs scope agents:" + model + ")", "insufficient_scope", "model");
  }
  auto msgs = body.find("messages");
  if (msgs == body.end() || !msgs->is_array() || msgs->empty()) {
    co_return chat_error(400, "messages must be a non-empty array", "invalid_request", "messages");
  }
  for (std::size_t i = 0; i < msgs->size(); ++i) {
    const json& m = (*msgs)[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      co_return chat_error(400, "messages[" + std::to_string(i) + "] needs a role", "invalid_request",
                           "messages[" + std::to_string(i) + "]");
    }
  }
  if (auto t = body.find("tools"); t != body.end() && !t->is_null() && !t->is_array()) {
    co_return chat_error(400, "tools must be an array", "invalid_request", "tools");
  }
  agent::IntentRequest ir;
  ir.client = req.client;
  ir.allows = [c](const std::string& scope) { return scope_allows(c->scopes, scope); };
  ir.request_id = req.request_id;
  agent::IntentRequest::Chat chat;
  const json& last = msgs->back();
  std::string text;
  if (last.value("role", "") == "user") {
    chat.user = last.contains("content") ? last["content"] : json("");
    chat.messages = json(std::vector<json>(msgs->begin(), msgs->end() - 1));
    text = content_text(chat.user);
    if (text.empty()) text = "(a message without text)";
  } else {
    chat.messages = *msgs;
    text = "(continued after the client's tool results)";
  }
  if (auto t = body.find("tools"); t != body.end() && t->is_array()) chat.tools = *t;
  ir.chat = std::move(chat);
  ir.body = {{"intent", text}, {"agent", model}};
  if (auto u = body.find("user"); u != body.end() && u->is_string()) ir.body["metadata"] = {{"user", *u}};
  bool stream = body.value("stream", false);
  bool include_usage = body.contains("stream_options") && body["stream_options"].is_object() &&
                       body["stream_options"].value("include_usage", false);
  auto started = co_await engine.start(std::move(ir));
  if (!started) co_return agent_error_response(started.error());
  auto a = std::make_shared<Assembler>("chatcmpl-" + started->id, model, started->created_at / 1000);
  if (!stream) {
    Response res = co_await whole_chat(engine, started->id, a);
    res.headers.set("x-agentd-intent-id", started->id);
    co_return res;
  }
  Response res = Response::stream([&engine, id = started->id, client = req.client, a,
                                   include_usage](std::shared_ptr<net::SseStream> out) {
    return stream_chat(engine, id, client, a, include_usage, std::move(out));
  });
  res.headers.set("x-agentd-intent-id", started->id);
  co_return res;
}

}  // namespace agentd::api
