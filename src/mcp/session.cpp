// MCP client session: JSON-RPC over a Transport.
#include "session.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

namespace agentd::mcp {
namespace {

namespace asio = boost::asio;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

bool supported_version(const std::string& v) {
  return v == "2024-11-05" || v == "2025-03-26" || v == "2025-06-18" || v == "2025-11-25" ||
         v == "2026-07-28";
}

// JSON-RPC ids are numbers or strings; we only send integers.
std::optional<std::int64_t> our_id(const json& id) {
  if (id.is_number_integer()) return id.get<std::int64_t>();
  if (id.is_string()) {
    try {
      std::size_t pos = 0;
      auto v = std::stoll(id.get<std::string>(), &pos);
      if (pos == id.get_ref<const std::string&>().size()) return v;
    } catch (...) {
    }
  }
  return std::nullopt;
}

std::string token_key(const json& token) { return token.is_string() ? token.get<std::string>() : token.dump(); }

}  // namespace

void throw_exception_from_error(const RpcError& e, const boost::source_location&) {
  throw std::runtime_error(e.message);
}

Session::Session(asio::any_io_executor ex, const ServerConfig& config,
                 std::unique_ptr<Transport> transport, std::string protocol_version,
                 Handlers handlers)
    : ex_(std::move(ex)),
      config_(config),
      transport_(std::move(transport)),
      protocol_version_(std::move(protocol_version)),
      handlers_(std::move(handlers)) {}

Session::~Session() = default;

asio::awaitable<RpcResult<json>> Session::open() {
  auto started = co_await transport_->start();
  if (!started) {
    closed_ = true;
    co_return RpcError{RpcError::kConnectionClosed, started.error().message, nullptr};
  }
  reading_ = true;
  asio::co_spawn(ex_, read_loop(), [name = config_.name](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::error("mcp[{}]: reader failed: {}", name, ex.what());
    }
  });
  json capabilities = {{"roots", {{"listChanged", false}}}};
  if (handlers_.on_sampling) capabilities["sampling"] = json::object();
  if (handlers_.elicitation) {
    // 2025-11-25 split elicitation into form and url modes; older revisions know `{}` only.
    capabilities["elicitation"] = protocol_version_ >= "2025-11-25"
                                      ? json{{"form", json::object()}, {"url", json::object()}}
                                      : json::object();
  }
  json params = {{"protocolVersion", protocol_version_},
                 {"capabilities", capabilities},
                 {"clientInfo", {{"name", "agentd"}, {"version", AGENTD_VERSION}}}};
  auto r = co_await request("initialize", std::move(params), config_.init_timeout);
  if (!r) co_return r.error();
  auto version = r->value("protocolVersion", std::string());
  if (!supported_version(version)) {
    co_return RpcError{RpcError::kInvalidRequest,
                       "server " + config_.name + " answered protocol version \"" + version +
                           "\", which agentd does not speak",
                       nullptr};
  }
  transport_->set_protocol_version(version);
  init_result_ = *r;
  co_await notify("notifications/initialized");
  co_return *r;
}

asio::awaitable<RpcResult<json>> Session::request(std::string method, json params,
                                                  std::chrono::milliseconds timeout,
                                                  RequestHooks hooks) {
  // 2026-07-28 servers ask for input by answering `input_required`: agentd fulfils the input
  // requests and sends the request again, with the answers and the server's requestState.
  constexpr int kMaxRounds = 8;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto r = co_await request_once(method, params, timeout, hooks);
  for (int round = 1; r && r->is_object() && r->value("resultType", std::string()) == "input_required";
       ++round) {
    if (round > kMaxRounds) {
      co_return RpcError{RpcError::kInternal,
                         "server " + config_.name + " asked for input more than " +
                             std::to_string(kMaxRounds) + " times in one " + method,
                         nullptr};
    }
    auto answers = co_await fulfil(r->value("inputRequests", json::object()), hooks);
    if (!answers) co_return answers.error();
    if (!params.is_object()) params = json::object();
    params["inputResponses"] = std::move(*answers);
    if (r->contains("requestState")) {
      params["requestState"] = (*r)["requestState"];
    } else {
      params.erase("requestState");
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      co_return RpcError{RpcError::kRequestTimeout,
                         "server " + config_.name + " did not complete " + method + " within " +
                             std::to_string(timeout.count()) + "ms",
                         nullptr};
    }
    r = co_await request_once(method, params, left, hooks);
  }
  co_return r;
}

asio::awaitable<RpcResult<json>> Session::fulfil(json requests, RequestHooks hooks) {
  json out = json::object();
  if (!requests.is_object()) co_return out;
  for (auto& [key, req] : requests.items()) {
    auto method = req.is_object() ? req.value("method", std::string()) : std::string();
    json params = req.is_object() && req.contains("params") ? req["params"] : json::object();
    RpcResult<json> r = RpcError{};
    if (method == "roots/list") {
      json roots = json::array();
      for (const auto& root : config_.roots) roots.push_back({{"uri", root}});
      r = json{{"roots", std::move(roots)}};
    } else if (method == "sampling/createMessage" && handlers_.on_sampling) {
      SamplingRequest sr;
      sr.server = config_.name;
      sr.client = hooks.client;
      sr.request_id = hooks.request_id;
      sr.params = std::move(params);
      r = co_await handlers_.on_sampling(std::move(sr));
    } else if (method == "elicitation/create" && handlers_.elicitation && hooks.on_elicit) {
      r = co_await hooks.on_elicit(std::move(params));
    } else if (method == "elicitation/create") {
      r = json{{"action", "decline"}};
    } else {
      co_return RpcError{RpcError::kInternal,
                         "server " + config_.name + " asked for input agentd cannot give (" +
                             (method.empty() ? std::string("no method") : method) + ")",
                         nullptr};
    }
    if (!r) co_return r.error();
    out[key] = std::move(*r);
  }
  co_return out;
}

asio::awaitable<RpcResult<json>> Session::request_once(std::string method, json params,
                                                       std::chrono::milliseconds timeout,
                                                       RequestHooks hooks) {
  auto cancel = hooks.cancel;
  if (closed_) {
    co_return RpcError{RpcError::kConnectionClosed, "server " + config_.name + " is not connected",
                       nullptr};
  }
  auto id = next_id_++;
  auto w = std::make_shared<Waiter>(ex_);
  w->timer.expires_after(timeout);
  w->method = method;
  std::string token;
  if (hooks.on_progress) {
    token = "agentd-" + std::to_string(id);
    if (!params.is_object()) params = json::object();
    params["_meta"]["progressToken"] = token;
    progress_[token] = id;
  }
  w->hooks = std::move(hooks);
  json msg = {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}};
  if (!params.is_null()) msg["params"] = std::move(params);
  pending_[id] = w;
  if (cancel) {
    std::weak_ptr<Session> weak = weak_from_this();
    cancel->on_cancel([weak, id] {
      if (auto self = weak.lock()) {
        self->finish(id, RpcError{RpcError::kInternal, "cancelled by the caller", nullptr});
        self->send_later({{"jsonrpc", "2.0"},
                          {"method", "notifications/cancelled"},
                          {"params", {{"requestId", id}, {"reason", "cancelled by the caller"}}}});
      }
    });
    if (cancel->cancelled()) finish(id, RpcError{RpcError::kInternal, "cancelled by the caller", nullptr});
  }
  auto sent = co_await transport_->send(std::move(msg));
  if (!sent && !w->outcome) {
    w->outcome = RpcError{RpcError::kConnectionClosed,
                          "cannot send to server " + config_.name + ": " + sent.error().message,
                          nullptr};
  }
  if (!w->outcome) co_await w->timer.async_wait(kTuple);
  pending_.erase(id);
  if (!token.empty()) progress_.erase(token);
  if (cancel) cancel->on_cancel(nullptr);
  if (w->outcome) co_return std::move(*w->outcome);
  // Deadline: tell the server to stop working on it.
  json why = {{"requestId", id}, {"reason", "agentd's deadline for " + method + " passed"}};
  co_await notify("notifications/cancelled", std::move(why));
  co_return RpcError{RpcError::kRequestTimeout,
                     "server " + config_.name + " did not answer " + method + " within " +
                         std::to_string(timeout.count()) + "ms",
                     nullptr};
}

asio::awaitable<void> Session::notify(std::string method, json params) {
  if (closed_) co_return;
  json msg = {{"jsonrpc", "2.0"}, {"method", std::move(method)}};
  if (!params.is_null()) msg["params"] = std::move(params);
  auto r = co_await transport_->send(std::move(msg));
  if (!r) spdlog::warn("mcp[{}]: notification not sent: {}", config_.name, r.error().message);
}

asio::awaitable<void> Session::close() {
  if (closed_ && !reading_) co_return;
  co_await transport_->close();
  closed_ = true;
  fail_all("session closed");
}

void Session::send_later(json message) {
  asio::co_spawn(
      ex_,
      [](std::shared_ptr<Session> self, json m) -> asio::awaitable<void> {
        if (self->closed_) co_return;
        auto r = co_await self->transport_->send(std::move(m));
        if (!r) spdlog::warn("mcp[{}]: message not sent: {}", self->config_.name, r.error().message);
      }(shared_from_this(), std::move(message)),
      asio::detached);
}

void Session::finish(std::int64_t id, RpcResult<json> outcome) {
  auto it = pending_.find(id);
  if (it == pending_.end() || it->second->outcome) return;
  it->second->outcome = std::move(outcome);
  it->second->timer.cancel();
}

void Session::fail_all(const std::string& why) {
  for (auto& [id, w] : pending_) {
    if (w->outcome) continue;
    w->outcome = RpcError{RpcError::kConnectionClosed,
                          "server " + config_.name + " went away: " + why, nullptr};
    w->timer.cancel();
  }
}

void Session::answer(const json& id, RpcResult<json> result) {
  json msg = {{"jsonrpc", "2.0"}, {"id", id}};
  if (result) {
    msg["result"] = std::move(*result);
  } else {
    msg["error"] = {{"code", result.error().code}, {"message", result.error().message}};
  }
  send_later(std::move(msg));
}

std::shared_ptr<Session::Waiter> Session::related_call(const json& tag) const {
  // Streamable HTTP tells which of our requests a server request came with (the transport
  // tags it); stdio does not, so a request is attributed to the only call in flight, if one.
  if (auto ours = our_id(tag)) {
    if (auto it = pending_.find(*ours); it != pending_.end()) return it->second;
  }
  std::shared_ptr<Waiter> only;
  for (const auto& [key, w] : pending_) {
    if (w->method != "tools/call" && w->method != "prompts/get" && w->method != "resources/read") {
      continue;
    }
    if (only) return nullptr;  // several: ambiguous
    only = w;
  }
  return only;
}

asio::awaitable<void> Session::serve_request(json id, std::string method, json params,
                                             std::shared_ptr<Waiter> related) {
  auto self = shared_from_this();
  RpcResult<json> r = RpcError{};
  try {
    if (method == "sampling/createMessage") {
      SamplingRequest req;
      req.server = config_.name;
      if (related) {
        req.client = related->hooks.client;
        req.request_id = related->hooks.request_id;
      }
      req.params = std::move(params);
      r = co_await handlers_.on_sampling(std::move(req));
    } else if (related && related->hooks.on_elicit && !related->outcome) {
      r = co_await related->hooks.on_elicit(std::move(params));
    } else {
      spdlog::info("mcp[{}]: elicitation declined: {}", config_.name,
                   related ? "the caller cannot answer questions"
                           : "no single call in flight it belongs to");
      r = json{{"action", "decline"}};
    }
  } catch (const std::exception& e) {
    spdlog::error("mcp[{}]: {} failed: {}", config_.name, method, e.what());
    r = RpcError{RpcError::kInternal, "agentd failed to answer " + method, nullptr};
  }
  answer(id, std::move(r));
}

void Session::dispatch(json m) {
  if (!m.is_object()) return;
  auto method = m.find("method");
  auto id = m.find("id");
  if (method == m.end()) {
    // A response to one of ours.
    if (id == m.end()) return;
    auto ours = our_id(*id);
    if (!ours) return;
    if (auto e = m.find("error"); e != m.end() && e->is_object()) {
      finish(*ours, RpcError{e->value("code", RpcError::kInternal),
                             e->value("message", std::string("error without a message")),
                             e->contains("data") ? (*e)["data"] : json()});
    } else {
      finish(*ours, m.contains("result") ? m["result"] : json::object());
    }
    return;
  }
  if (!method->is_string()) return;
  const auto& name = method->get_ref<const std::string&>();
  const json params = m.contains("params") ? m["params"] : json::object();
  if (id != m.end()) {
    // The server asks us something.
    if (name == "ping") {
      answer(*id, json::object());
    } else if (name == "roots/list") {
      json roots = json::array();
      for (const auto& r : config_.roots) roots.push_back({{"uri", r}});
      answer(*id, json{{"roots", roots}});
    } else if ((name == "sampling/createMessage" && handlers_.on_sampling) ||
               (name == "elicitation/create" && handlers_.elicitation)) {
      auto related = related_call(m.contains(kRelatedKey) ? m[kRelatedKey] : json());
      asio::co_spawn(ex_, serve_request(*id, name, params, std::move(related)), asio::detached);
    } else {
      answer(*id, RpcError{RpcError::kMethodNotFound,
                           "agentd does not offer " + name + " to upstream servers", nullptr});
    }
    return;
  }
  if (name == "notifications/progress") {
    auto token = params.find("progressToken");
    if (token == params.end()) return;
    auto it = progress_.find(token_key(*token));
    if (it == progress_.end()) return;
    auto w = pending_.find(it->second);
    if (w != pending_.end() && w->second->hooks.on_progress) {
      json p = params;
      p.erase("progressToken");
      w->second->hooks.on_progress(p);
    }
  } else if (name == "notifications/tools/list_changed") {
    if (handlers_.on_tools_changed) handlers_.on_tools_changed();
  } else if (name == "notifications/resources/list_changed" ||
             name == "notifications/prompts/list_changed") {
    if (handlers_.on_list_changed) handlers_.on_list_changed(name);
  } else if (name == "notifications/message") {
    spdlog::info("mcp[{}] log {}: {}", config_.name, params.value("level", std::string("info")),
                 params.contains("data") ? params["data"].dump() : std::string());
  }
}

asio::awaitable<void> Session::read_loop() {
  auto self = shared_from_this();
  for (;;) {
    auto m = co_await transport_->receive();
    if (!m) {
      bool was_open = !closed_;
      closed_ = true;
      reading_ = false;
      fail_all(m.error().message);
      if (was_open && handlers_.on_closed) handlers_.on_closed(m.error().message);
      co_return;
    }
    dispatch(std::move(*m));
  }
}

}  // namespace agentd::mcp
