// OpenAI-compatible routes over the gateway: JSON in, JSON or an event stream out, with the
// routing outcome in x-agentd-* response headers.
#include <spdlog/spdlog.h>

#include "agentd/api/agent_chat.hpp"
#include "agentd/api/openai.hpp"
#include "agentd/net/sse.hpp"

namespace agentd::api {
namespace {

namespace asio = boost::asio;
using net::Request;
using net::Response;
using nlohmann::json;

void add_info_headers(Response& res, const ai::CallInfo& info) {
  if (!info.provider.empty()) {
    res.headers.set("x-agentd-provider", info.provider);
    res.headers.set("x-agentd-model", info.model);
  }
  res.headers.set("x-agentd-attempts", std::to_string(info.attempts));
  res.headers.set("x-agentd-cache", info.cache);
  res.headers.set("x-agentd-overhead-us", std::to_string(info.overhead.count()));
}

ai::CallContext context(const Request& req) {
  ai::CallContext ctx;
  ctx.client = req.client;
  ctx.request_id = req.request_id;
  auto cc = req.headers.get("cache-control").value_or("");
  ctx.no_cache = cc.find("no-cache") != std::string_view::npos ||
                 cc.find("no-store") != std::string_view::npos ||
                 req.headers.get("x-agentd-cache").value_or("") == "bypass";
  return ctx;
}

// The client may use this model: `models:<name>` in its scopes.
std::optional<Response> check_model_scope(const Api& api, const Request& req,
                                          const std::string& model) {
  const Client* c = api.client_by_name(req.client);
  if (c && scope_allows(c->scopes, "models:" + model)) return std::nullopt;
  return ai_error_response(ai::Error::forbidden("client \"" + req.client +
                                                "\" may not use model \"" + model +
                                                "\" (needs scope models:" + model + ")"));
}

std::optional<std::string> model_of(const json& body) {
  auto it = body.find("model");
  if (it == body.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) {
    return std::nullopt;
  }
  return it->get<std::string>();
}

// Writes chunks as `data:` events until the end, an error event, or the client leaving.
asio::awaitable<void> pump(std::shared_ptr<ai::ChatStream> s,
                           std::shared_ptr<net::SseStream> out, std::string rid) {
  out->on_close([s](net::SseStream::State why) {
    if (why != net::SseStream::State::finished) s->cancel();
  });
  for (;;) {
    auto next = co_await s->next_text();
    if (!next) {
      const auto& e = next.error();
      if (e.kind == ai::Error::Kind::cancelled) co_return;
      spdlog::warn("rid={} stream failed mid-answer: {}", rid, e.message);
      json err = {{"error",
                   {{"message", e.message}, {"type", e.effective_type()},
                    {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
      out->push({.id = {}, .event = {}, .data = err.dump(), .retry_ms = std::nullopt});
      co_return;
    }
    if (!*next) break;
    if (!out->push({.id = {}, .event = {}, .data = std::move(**next), .retry_ms = std::nullopt})) {
      s->cancel();
      co_return;
    }
  }
  out->push({.id = {}, .event = {}, .data = "[DONE]", .retry_ms = std::nullopt});
}

asio::awaitable<Response> chat_completions(Api& api, ai::Gateway& gw, agent::Engine* engine,
                                           Request& req) {
  auto parsed = net::parse_json_object(req);
  if (parsed.error) co_return std::move(*parsed.error);
  json body = std::move(*parsed.value);
  auto model = model_of(body);
  if (!model) co_return ai_error_response(ai::Error::bad_request("model is required", "model"));
  if (engine && is_agent_model(*engine, *model)) {
    co_return co_await agent_chat(api, *engine, req, std::move(body));
  }
  if (auto denied = check_model_scope(api, req, *model)) co_return std::move(*denied);
  auto ctx = context(req);
  bool stream = body.contains("stream") && body["stream"].is_boolean() && body["stream"].get<bool>();
  if (!stream) {
    ai::CallInfo info;
    auto r = co_await gw.chat_text(ctx, std::move(body), info);
    Response res;
    if (r) {
      res.headers.set("content-type", "application/json");
      res.body = std::move(*r);
    } else {
      res = ai_error_response(r.error());
    }
    add_info_headers(res, info);
    co_return res;
  }
  auto s = co_await gw.chat_stream(ctx, std::move(body));
  if (!s) co_return ai_error_response(s.error());
  std::shared_ptr<ai::ChatStream> shared = std::move(*s);
  Response res = Response::stream([shared, rid = req.request_id](std::shared_ptr<net::SseStream> out) {
    return pump(shared, std::move(out), rid);
  });
  add_info_headers(res, shared->info());
  co_return res;
}

asio::awaitable<Response> list_models(Api& api, ai::Gateway& gw, agent::Engine* engine,
                                      Request& req) {
  const Client* c = api.client_by_name(req.client);
  json data = json::array();
  for (auto& m : gw.models()) {
    if (c && scope_allows(c->scopes, "models:" + m["id"].get<std::string>())) {
      data.push_back(std::move(m));
    }
  }
  if (engine) {
    for (auto& m : agent_models(*engine)) {
      if (c && scope_allows(c->scopes, "agents:" + m["id"].get<std::string>())) {
        data.push_back(std::move(m));
      }
    }
  }
  co_return Response::json(200, {{"object", "list"}, {"data", std::move(data)}});
}

asio::awaitable<Response> get_model(Api& api, ai::Gateway& gw, Request& req) {
  const std::string& id = req.params["id"];
  const Client* c = api.client_by_name(req.client);
  for (auto& m : gw.models()) {
    if (m["id"].get<std::string>() == id && c && scope_allows(c->scopes, "models:" + id)) {
      co_return Response::json(200, m);
    }
  }
  co_return ai_error_response(ai::Error::not_found("The model `" + id + "` does not exist"));
}

asio::awaitable<Response> embeddings(Api& api, ai::Gateway& gw, Request& req) {
  auto parsed = net::parse_json_object(req);
  if (parsed.error) co_return std::move(*parsed.error);
  json body = std::move(*parsed.value);
  auto model = model_of(body);
  if (!model) co_return ai_error_response(ai::Error::bad_request("model is required", "model"));
  if (auto denied = check_model_scope(api, req, *model)) co_return std::move(*denied);
  ai::CallInfo info;
  auto r = co_await gw.embeddings(context(req), std::move(body), info);
  Response res = r ? Response::json(200, *r) : ai_error_response(r.error());
  add_info_headers(res, info);
  co_return res;
}

asio::awaitable<Response> audio(Api& api, ai::Gateway& gw, Request& req, std::string path) {
  ai::RawRequest raw;
  raw.content_type = std::string(req.headers.get("content-type").value_or(""));
  if (path == "speech") {
    auto parsed = net::parse_json_object(req);
    if (parsed.error) co_return std::move(*parsed.error);
    auto model = model_of(*parsed.value);
    if (!model) co_return ai_error_response(ai::Error::bad_request("model is required", "model"));
    if (!parsed.value->contains("input")) {
      co_return ai_error_response(ai::Error::bad_request("input is required", "input"));
    }
    raw.model = *model;
  } else {
    if (!raw.content_type.starts_with("multipart/form-data")) {
      co_return ai_error_response(
          ai::Error::bad_request("expected a multipart/form-data body with file and model"));
    }
    auto model = ai::multipart_field(raw.content_type, req.body, "model");
    if (!model || model->empty()) {
      co_return ai_error_response(ai::Error::bad_request("model is required", "model"));
    }
    raw.model = *model;
  }
  if (auto denied = check_model_scope(api, req, raw.model)) co_return std::move(*denied);
  raw.body = std::move(req.body);
  ai::CallInfo info;
  auto r = co_await gw.audio(context(req), path, std::move(raw), info);
  Response res;
  if (r) {
    res = Response::text(r->status, std::move(r->body), r->content_type);
  } else {
    res = ai_error_response(r.error());
  }
  add_info_headers(res, info);
  co_return res;
}

}  // namespace

Response ai_error_response(const ai::Error& e) {
  json err = {{"message", e.message},
              {"type", e.effective_type()},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  int status = e.status >= 400 && e.status <= 599 ? e.status : 500;
  Response res = Response::json(status, {{"error", std::move(err)}});
  if (e.retry_after) {
    auto secs = (e.retry_after->count() + 999) / 1000;
    res.headers.set("retry-after", std::to_string(std::max<long long>(1, secs)));
  }
  return res;
}

void add_openai_routes(Api& api, ai::Gateway& gw, agent::Engine* engine) {
  auto& r = api.router();
  r.add("POST", "/v1/chat/completions",
        [&api, &gw, engine](Request& req) { return chat_completions(api, gw, engine, req); });
  r.add("GET", "/v1/models",
        [&api, &gw, engine](Request& req) { return list_models(api, gw, engine, req); });
  r.add("GET", "/v1/models/{id*}", [&api, &gw](Request& req) { return get_model(api, gw, req); });
  r.add("POST", "/v1/embeddings", [&api, &gw](Request& req) { return embeddings(api, gw, req); });
  r.add("POST", "/v1/audio/speech",
        [&api, &gw](Request& req) { return audio(api, gw, req, "speech"); });
  r.add("POST", "/v1/audio/transcriptions",
        [&api, &gw](Request& req) { return audio(api, gw, req, "transcriptions"); });
}

}  // namespace agentd::api
