// Request pipeline: CORS preflight, bearer authentication, routing, scope checks.
#include "agentd/api/api.hpp"

#include <spdlog/spdlog.h>

namespace agentd::api {

using net::Request;
using net::Response;

Api::Api(std::vector<Client> clients, net::CorsConfig cors, core::Registry& metrics)
    : auth_(std::move(clients)), cors_(std::move(cors)), metrics_(metrics) {
  router_.add(
      "GET", "/healthz",
      [](Request&) -> boost::asio::awaitable<Response> {
        co_return Response::json(200, {{"status", "ok"}});
      },
      {.open = true, .scope = {}});
  router_.add(
      "GET", "/readyz",
      [this](Request&) -> boost::asio::awaitable<Response> { co_return readiness(); },
      {.open = false, .scope = "admin"});
  router_.add(
      "GET", "/metrics",
      [this](Request&) -> boost::asio::awaitable<Response> {
        co_return Response::text(200, metrics_.render(), "text/plain; version=0.0.4; charset=utf-8");
      },
      {.open = false, .scope = "admin"});
}

const Client* Api::client_by_name(std::string_view name) const noexcept {
  for (const auto& c : auth_.clients()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

void Api::add_readiness_check(std::string name, std::function<ReadyState()> check) {
  checks_.emplace_back(std::move(name), std::move(check));
}

net::Handler Api::handler() {
  return [this](Request& req) { return handle(req); };
}

Response Api::readiness() const {
  nlohmann::json checks = nlohmann::json::object();
  bool ready = true;
  for (const auto& [name, fn] : checks_) {
    ReadyState s;
    try {
      s = fn();
    } catch (const std::exception& e) {
      s = {false, e.what()};
    }
    ready = ready && s.ok;
    checks[name] = {{"ok", s.ok}, {"detail", s.detail}};
  }
  return Response::json(ready ? 200 : 503,
                        {{"status", ready ? "ready" : "not_ready"}, {"checks", checks}});
}

bool Api::origin_allowed(std::string_view origin) const {
  for (const auto& o : cors_.allow_origins) {
    if (o == "*" || o == origin) return true;
  }
  return false;
}

void Api::add_cors(const Request& req, Response& res) const {
  if (cors_.allow_origins.empty()) return;
  bool wildcard = !cors_.allow_credentials && cors_.allow_origins.size() == 1 &&
                  cors_.allow_origins[0] == "*";
  // With a list of origins the answer depends on Origin, allowed or not: shared caches must
  // not hand one origin's answer to another.
  if (!wildcard) res.headers.add("vary", "origin");
  auto origin = req.headers.get("origin");
  if (!origin || !origin_allowed(*origin)) return;
  res.headers.set("access-control-allow-origin", wildcard ? std::string_view("*") : *origin);
  if (cors_.allow_credentials) res.headers.set("access-control-allow-credentials", "true");
  if (!cors_.expose_headers.empty()) {
    std::string list;
    for (const auto& h : cors_.expose_headers) list += (list.empty() ? "" : ", ") + h;
    res.headers.set("access-control-expose-headers", list);
  }
}

Response Api::preflight(const Request& req) const {
  auto origin = req.headers.get("origin");
  if (!origin_allowed(*origin)) {
    return Response::error(403, "origin " + std::string(*origin) + " is not allowed (server.cors)",
                           {}, "cors_origin_denied");
  }
  auto m = router_.match(*req.headers.get("access-control-request-method"), req.path);
  std::string methods;
  for (const auto& r : router_.routes()) {
    if (router_.match(r.method, req.path).route == &r) {
      methods += (methods.empty() ? "" : ", ") + r.method;
    }
  }
  if (!m.route) {
    auto res = Response::error(methods.empty() ? 404 : 405, "no route for this preflight request");
    if (!methods.empty()) res.headers.set("allow", methods);
    return res;
  }
  Response res;
  res.status = 204;
  res.headers.set("access-control-allow-methods", methods);
  std::string headers;
  for (const auto& h : cors_.allow_headers) headers += (headers.empty() ? "" : ", ") + h;
  res.headers.set("access-control-allow-headers", headers);
  res.headers.set("access-control-max-age",
                  std::to_string(std::chrono::duration_cast<std::chrono::seconds>(cors_.max_age)
                                     .count()));
  return res;
}

boost::asio::awaitable<Response> Api::handle(Request& req) {
  Response res;
  auto origin = req.headers.get("origin");
  if (req.method == "OPTIONS" && origin && req.headers.get("access-control-request-method")) {
    res = preflight(req);
    res.route = "preflight";
    add_cors(req, res);
    co_return res;
  }
  auto m = router_.match(req.method, req.path);
  if (m.route && m.route->options.open) {
    req.params = std::move(m.params);
    res = co_await m.route->handler(req);
  } else {
    auto token = bearer_token(req.headers.get("authorization").value_or(""));
    const Client* client = token.empty() ? nullptr : auth_.authenticate(token);
    if (!client) {
      res = Response::error(401,
                            token.empty() ? "missing bearer token: send Authorization: Bearer <token>"
                                          : "invalid bearer token",
                            {}, token.empty() ? "missing_token" : "invalid_token");
      res.headers.set("www-authenticate", token.empty() ? "Bearer realm=\"agentd\""
                                                        : "Bearer realm=\"agentd\", "
                                                          "error=\"invalid_token\"");
    } else {
      req.client = client->name;
      if (!m.route) {
        if (!m.allowed.empty()) {
          std::string allow;
          for (const auto& a : m.allowed) allow += (allow.empty() ? "" : ", ") + a;
          res = Response::error(405, "method " + req.method + " is not allowed on " + req.path +
                                         " (allowed: " + allow + ")");
          res.headers.set("allow", allow);
        } else {
          res = Response::error(404, "no route for " + req.method + " " + req.path);
        }
      } else if (!m.route->options.scope.empty() &&
                 !scope_allows(client->scopes, m.route->options.scope)) {
        res = Response::error(403, "client \"" + client->name + "\" lacks scope \"" +
                                       m.route->options.scope + "\" for " + req.method + " " +
                                       m.route->pattern,
                              {}, "insufficient_scope");
      } else {
        req.params = std::move(m.params);
        res = co_await m.route->handler(req);
      }
    }
  }
  if (m.route) res.route = m.route->pattern;
  add_cors(req, res);
  co_return res;
}

}  // namespace agentd::api
