// The intents API: start, inspect, stream (and resume), cancel, answer; artifacts.
#include <spdlog/spdlog.h>

#include "agentd/api/intents.hpp"
#include "agentd/net/sse.hpp"

namespace agentd::api {
namespace {

namespace asio = boost::asio;
using net::Request;
using net::Response;
using nlohmann::json;

json intent_json(const store::Intent& i) {
  json out = {{"id", i.id},
              {"object", "intent"},
              {"status", store::to_string(i.status)},
              {"agent", i.agent},
              {"session_id", i.session_id.empty() ? json(nullptr) : json(i.session_id)},
              {"created_at", i.created_at},
              {"updated_at", i.updated_at},
              {"events_url", "/v1/intents/" + i.id + "/events"}};
  if (!i.result.is_null()) out["result"] = i.result;
  if (!i.error.empty()) out["error"] = i.error;
  return out;
}

std::function<bool(const std::string&)> scopes_of(const Api& api, const std::string& client) {
  const Client* c = api.client_by_name(client);
  if (!c) return [](const std::string&) { return false; };
  return [c](const std::string& scope) { return scope_allows(c->scopes, scope); };
}

// Forwards the intent's events from `after` until its final event, the client leaving, or the
// stream failing. When the stream has nothing (trimmed, or kept in-process by an instance that
// restarted), the final state comes from the durable record.
asio::awaitable<void> pump(agent::Engine& engine, std::string id, std::string client, std::string after,
                           std::shared_ptr<net::SseStream> out) {
  auto sub = engine.events().subscribe(agent::event_stream(id), after);
  if (!sub) {
    json err = {{"type", "error"}, {"message", sub.error().message}};
    out->push({.id = {}, .event = "error", .data = err.dump(), .retry_ms = std::nullopt});
    out->finish();
    co_return;
  }
  auto wait = std::min<std::chrono::milliseconds>(engine.config().intents.keepalive, std::chrono::seconds(5));
  for (;;) {
    auto batch = co_await (*sub)->next(256, wait);
    if (out->closed()) co_return;
    if (!batch) {
      json err = {{"type", "error"}, {"message", "event stream failed: " + batch.error().message}};
      out->push({.id = {}, .event = "error", .data = err.dump(), .retry_ms = std::nullopt});
      out->finish();
      co_return;
    }
    if (batch->empty()) {
      auto i = co_await engine.get(id, client);
      if (!i) continue;
      if (store::is_terminal(i->status)) {
        auto more = co_await engine.events().read(agent::event_stream(id), (*sub)->last_id(), 1);
        if (more && !more->empty()) continue;
        std::string type = i->status == store::IntentStatus::completed ? agent::events::kCompleted
                           : i->status == store::IntentStatus::cancelled ? agent::events::kCancelled
                                                                         : agent::events::kFailed;
        json ev = {{"type", type}, {"intent_id", id}, {"ts", i->updated_at}, {"replayed_from", "record"}};
        if (!i->result.is_null()) ev["result"] = i->result;
        if (!i->error.empty()) ev["reason"] = i->error;
        out->push({.id = {}, .event = type, .data = ev.dump(), .retry_ms = std::nullopt});
        out->finish();
        co_return;
      }
      continue;
    }
    for (auto& e : *batch) {
      json parsed = json::parse(e.payload, nullptr, false);
      std::string type = parsed.is_object() ? parsed.value("type", "message") : "message";
      bool last = agent::events::terminal(type);
      if (!out->push({.id = e.id, .event = type, .data = std::move(e.payload), .retry_ms = std::nullopt})) co_return;
      if (last) {
        out->finish();
        co_return;
      }
    }
  }
}

bool wants_stream(const Request& req) {
  auto accept = req.headers.get("accept").value_or("");
  return accept.find("text/event-stream") != std::string_view::npos;
}

asio::awaitable<Response> start(Api& api, agent::Engine& engine, Request& req) {
  if (req.body.size() > engine.config().intents.max_body_bytes) {
    co_return agent_error_response({413, "the body is larger than intents.max_body_size (" +
                                             std::to_string(engine.config().intents.max_body_bytes) + " bytes)",
                                    "body_too_large", ""});
  }
  auto parsed = net::parse_json_object(req);
  if (parsed.error) co_return std::move(*parsed.error);
  agent::IntentRequest ir;
  ir.client = req.client;
  ir.allows = scopes_of(api, req.client);
  ir.request_id = req.request_id;
  ir.body = std::move(*parsed.value);
  auto started = co_await engine.start(std::move(ir));
  if (!started) co_return agent_error_response(started.error());
  const auto& intent = *started;
  if (!wants_stream(req)) {
    Response res = Response::json(202, intent_json(intent));
    res.headers.set("location", "/v1/intents/" + intent.id);
    co_return res;
  }
  Response res = Response::stream([&engine, id = intent.id, client = req.client](std::shared_ptr<net::SseStream> out) {
    return pump(engine, id, client, "", std::move(out));
  });
  res.headers.set("x-agentd-intent-id", intent.id);
  res.headers.set("location", "/v1/intents/" + intent.id);
  co_return res;
}

asio::awaitable<Response> get_intent(agent::Engine& engine, Request& req) {
  auto i = co_await engine.get(req.params["id"], req.client);
  if (!i) co_return agent_error_response(i.error());
  json out = intent_json(*i);
  if (req.query_param("include").value_or("") == "steps") {
    auto steps = co_await engine.steps(i->id, req.client);
    if (!steps) co_return agent_error_response(steps.error());
    json list = json::array();
    for (const auto& s : *steps) {
      list.push_back({{"seq", s.seq}, {"kind", s.kind}, {"data", s.data}, {"created_at", s.created_at}});
    }
    out["steps"] = std::move(list);
  }
  co_return Response::json(200, out);
}

asio::awaitable<Response> events(agent::Engine& engine, Request& req) {
  auto i = co_await engine.get(req.params["id"], req.client);
  if (!i) co_return agent_error_response(i.error());
  std::string after(req.headers.get("last-event-id").value_or(""));
  if (after.empty()) after = req.query_param("after").value_or("");
  if (!after.empty() && !store::StreamId::parse(after)) {
    co_return agent_error_response({400, "Last-Event-ID \"" + after + "\" is not an event id of this API",
                                    "invalid_event_id", "Last-Event-ID"});
  }
  co_return Response::stream([&engine, id = i->id, client = req.client, after](std::shared_ptr<net::SseStream> out) {
    return pump(engine, id, client, after, std::move(out));
  });
}

asio::awaitable<Response> cancel(agent::Engine& engine, Request& req) {
  auto i = co_await engine.cancel(req.params["id"], req.client);
  if (!i) co_return agent_error_response(i.error());
  co_return Response::json(200, intent_json(*i));
}

asio::awaitable<Response> input(agent::Engine& engine, Request& req) {
  auto parsed = net::parse_json_object(req);
  if (parsed.error) co_return std::move(*parsed.error);
  auto r = co_await engine.input(req.params["id"], req.client, std::move(*parsed.value));
  if (!r) co_return agent_error_response(r.error());
  co_return Response::json(200, *r);
}

asio::awaitable<Response> artifact(agent::Engine& engine, Request& req) {
  auto a = co_await engine.artifact(req.params["id"], req.client);
  if (!a) co_return agent_error_response(a.error());
  auto& [meta, body] = *a;
  Response res = Response::text(200, std::move(body), meta.mime.empty() ? "application/octet-stream" : meta.mime);
  res.headers.set("x-agentd-artifact-kind", meta.kind);
  res.headers.set("x-agentd-intent-id", meta.intent_id);
  res.headers.set("etag", "\"" + meta.sha256 + "\"");
  res.headers.set("x-content-type-options", "nosniff");
  // An html/svg artifact is the model's output: keep it from running as agentd's origin.
  res.headers.set("content-security-policy", "sandbox");
  co_return res;
}

constexpr int kRetryAfterSeconds = 2;

}  // namespace

Response agent_error_response(const agent::Error& e) {
  int status = e.status >= 400 && e.status <= 599 ? e.status : 500;
  if (status == 499) status = 409;
  json err = {{"message", e.message},
              {"type", std::string(net::error_type_for(status))},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)}};
  Response res = Response::json(status, {{"error", std::move(err)}});
  // The durable store down (its calls fail fast for at most 2 s before it is tried again) or
  // agentd shutting down: worth retrying shortly, here or on another instance.
  if (status == 503) res.headers.set("retry-after", std::to_string(kRetryAfterSeconds));
  return res;
}

void add_intent_routes(Api& api, agent::Engine& engine) {
  auto& r = api.router();
  r.add("POST", "/v1/intents", [&api, &engine](Request& req) { return start(api, engine, req); });
  r.add("GET", "/v1/intents/{id}", [&engine](Request& req) { return get_intent(engine, req); });
  r.add("GET", "/v1/intents/{id}/events", [&engine](Request& req) { return events(engine, req); });
  r.add("POST", "/v1/intents/{id}/cancel", [&engine](Request& req) { return cancel(engine, req); });
  r.add("POST", "/v1/intents/{id}/input", [&engine](Request& req) { return input(engine, req); });
  r.add("GET", "/v1/artifacts/{id}", [&engine](Request& req) { return artifact(engine, req); });
}

}  // namespace agentd::api
