// The multiplexer: one supervised session per upstream server (started eagerly or on first
// use, restarted with backoff, health-checked with pings), their tools, prompts and resources
// merged (tools and prompts under namespaced names), calls checked against argument policies
// and rate/concurrency limits, routed to the owning server and audited.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <spdlog/spdlog.h>

#include <deque>
#include <map>
#include <set>

#include "agentd/core/glob.hpp"
#include "agentd/mcp/multiplexer.hpp"
#include "agentd/mcp/policy.hpp"
#include "session.hpp"

namespace agentd::mcp {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// The audit's args_sha256: SHA-256 of the arguments' compact JSON text (keys sorted), in hex.
// SHA256() would look the algorithm up in OpenSSL 3's provider tables on every call: fetch it
// once.
std::string digest(const json& j) {
  static EVP_MD* const kSha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  auto text = j.dump();
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!kSha256 || EVP_Digest(text.data(), text.size(), d, &n, kSha256, nullptr) != 1) {
    n = SHA256_DIGEST_LENGTH;
    SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), d);
  }
  static constexpr const char* kHex = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (unsigned int i = 0; i < n; ++i) {
    out[2 * i] = kHex[d[i] >> 4];
    out[2 * i + 1] = kHex[d[i] & 15];
  }
  return out;
}

// RFC 6570 templates, as far as resource templates use them: `{var}` matches one or more
// characters up to the next '/', `{+var}`/`{#var}` anything, `{?a,b}`/`{&a}` the rest.
bool template_match(std::string_view tpl, std::string_view uri) {
  if (tpl.empty()) return uri.empty();
  if (tpl.front() != '{') {
    auto brace = tpl.find('{');
    auto lit = tpl.substr(0, brace);
    if (!uri.starts_with(lit)) return false;
    return template_match(tpl.substr(lit.size()), uri.substr(lit.size()));
  }
  auto close = tpl.find('}');
  if (close == std::string_view::npos) return false;
  char op = close > 1 ? tpl[1] : '\0';
  auto rest = tpl.substr(close + 1);
  if (op == '?' || op == '&') return rest.empty() || template_match(rest, std::string_view());
  bool any = op == '+' || op == '#';
  for (std::size_t n = 1; n <= uri.size(); ++n) {
    if (!any && (uri[n - 1] == '/' || uri[n - 1] == '?' || uri[n - 1] == '#')) break;
    if (template_match(rest, uri.substr(n))) return true;
  }
  return false;
}

// Fixed one-minute windows for calls per minute.
struct Window {
  std::int64_t minute = -1;
  std::int64_t count = 0;
  // Takes one call; 0 when allowed, else the seconds until the next window.
  std::int64_t take(std::int64_t rpm) {
    auto now = std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    if (now / 60 != minute) {
      minute = now / 60;
      count = 0;
    }
    if (count >= rpm) return 60 - now % 60;
    ++count;
    return 0;
  }
};

struct ClientState {
  Window window;
  std::int64_t in_flight = 0;
};

struct Upstream {
  explicit Upstream(asio::any_io_executor ex, ServerConfig c) : config(std::move(c)), wake(ex) {}
  ServerConfig config;
  std::shared_ptr<Session> session;
  std::string state = "idle";
  std::string detail;
  std::vector<json> tools;  // upstream definitions as listed
  std::vector<json> resources;
  std::vector<json> templates;  // resource templates
  std::vector<json> prompts;
  json capabilities = json::object();  // what the server declared in initialize
  int restarts = 0;
  Window window;                         // limits.rpm
  std::int64_t in_flight = 0;            // limits.concurrency
  std::deque<asio::steady_timer*> queue;  // calls waiting for a slot
  bool supervised = false;
  asio::steady_timer wake;                  // the supervisor sleeps on it while a session is up
  std::vector<asio::steady_timer*> waiting;  // callers waiting for a (lazy) start
  // The audit's metrics, looked up in the registry once (it keeps them for its lifetime).
  core::Histogram* call_seconds = nullptr;
  std::map<std::string, core::Counter*, std::less<>> calls_by_outcome;

  void settle_waiters() {
    for (auto* t : waiting) t->cancel();
  }
};

// Releases a server's and a client's concurrency slot when a call ends.
struct Slots {
  Upstream* server = nullptr;
  ClientState* client = nullptr;
  Slots() = default;
  Slots(const Slots&) = delete;
  Slots& operator=(const Slots&) = delete;
  ~Slots() {
    if (client) --client->in_flight;
    if (server) {
      --server->in_flight;
      if (!server->queue.empty()) server->queue.front()->cancel();  // the next in line
    }
  }
};

enum class Kind { tool, prompt, resource };

class MultiplexerImpl final : public Multiplexer {
 public:
  MultiplexerImpl(asio::any_io_executor ex, Config config, net::HttpClient& client,
                  core::Registry& metrics)
      : ex_(std::move(ex)), config_(std::move(config)), client_(client), metrics_(metrics) {
    for (const auto& s : config_.servers) {
      upstreams_.push_back(std::make_unique<Upstream>(ex_, s));
    }
  }

  ~MultiplexerImpl() override { *alive_ = false; }

  void start() override {
    for (auto& u : upstreams_) {
      if (!u->config.lazy) supervise(*u);
    }
  }

  asio::awaitable<void> stop() override {
    stopping_ = true;
    for (auto& u : upstreams_) {
      u->wake.cancel();
      for (auto* t : u->queue) t->cancel();
      if (u->session) co_await u->session->close();
      u->state = "stopped";
    }
  }

  std::vector<json> tools(const Visible& visible) const override {
    std::vector<json> out;
    for (const auto& u : upstreams_) {
      if (u->state != "ready") continue;
      for (const auto& t : u->tools) {
        auto name = t.value("name", std::string());
        if (!exposed(*u, name) || (visible && !visible(u->config.name, name))) continue;
        json copy = t;
        copy["name"] = u->config.name + config_.separator + name;
        out.push_back(std::move(copy));
      }
    }
    return out;
  }

  std::vector<json> prompts(const Visible& visible) const override {
    std::vector<json> out;
    for (const auto& u : upstreams_) {
      if (u->state != "ready") continue;
      for (const auto& p : u->prompts) {
        auto name = p.value("name", std::string());
        if (visible && !visible(u->config.name, "prompt:" + name)) continue;
        json copy = p;
        copy["name"] = u->config.name + config_.separator + name;
        out.push_back(std::move(copy));
      }
    }
    return out;
  }

  std::vector<json> resources(const Visible& visible) const override {
    return listed(&Upstream::resources, "uri", visible);
  }

  std::vector<json> resource_templates(const Visible& visible) const override {
    return listed(&Upstream::templates, "uriTemplate", visible);
  }

  std::optional<std::pair<std::string, std::string>> resolve(
      const std::string& namespaced) const override {
    auto at = namespaced.find(config_.separator);
    if (at == std::string::npos) return std::nullopt;
    auto server = namespaced.substr(0, at);
    if (!find(server)) return std::nullopt;
    return std::make_pair(server, namespaced.substr(at + config_.separator.size()));
  }

  asio::awaitable<RpcResult<json>> call_tool(const std::string& namespaced, json arguments,
                                             ToolCall call,
                                             std::shared_ptr<CancelToken> cancel) override {
    auto started = Clock::now();
    auto target = resolve(namespaced);
    if (!target || !exposed(*find(target->first), target->second)) {
      co_return RpcError{RpcError::kInvalidParams, "unknown tool \"" + namespaced + "\"", nullptr};
    }
    auto& u = *find(target->first);
    const auto tool = target->second;
    if (!arguments.is_null() && !arguments.is_object()) {
      co_return RpcError{RpcError::kInvalidParams, "arguments must be an object", nullptr};
    }
    if (arguments.is_null()) arguments = json::object();
    auto args_sha256 = digest(arguments);
    // Policies first: a denial does not depend on whether the server is up.
    if (config_.policy) {
      if (auto denial = config_.policy->check(call.client, namespaced, arguments)) {
        audit(call, u, tool, args_sha256, "denied", started);
        spdlog::warn("rid={} mcp: {} denied for client {} by policy '{}': {}",
                     call.request_id.empty() ? "-" : call.request_id, namespaced,
                     call.client.empty() ? "-" : call.client, denial->rule, denial->message);
        co_return RpcError{RpcError::kForbidden,
                           "denied by policy '" + denial->rule + "': " + denial->message,
                           json{{"rule", denial->rule}}};
      }
    }
    json params = {{"name", tool}, {"arguments", std::move(arguments)}};
    std::string method = "tools/call";
    co_return co_await invoke(u, Kind::tool, tool, std::move(method), std::move(params),
                              std::move(args_sha256), std::move(call), std::move(cancel),
                              started);
  }

  asio::awaitable<RpcResult<json>> get_prompt(const std::string& namespaced, json arguments,
                                              ToolCall call,
                                              std::shared_ptr<CancelToken> cancel) override {
    auto started = Clock::now();
    auto target = resolve(namespaced);
    if (!target) {
      co_return RpcError{RpcError::kInvalidParams, "unknown prompt \"" + namespaced + "\"", nullptr};
    }
    auto& u = *find(target->first);
    if (!arguments.is_null() && !arguments.is_object()) {
      co_return RpcError{RpcError::kInvalidParams, "arguments must be an object", nullptr};
    }
    auto args_sha256 = digest(arguments);
    json params = {{"name", target->second}};
    if (arguments.is_object()) params["arguments"] = std::move(arguments);
    std::string method = "prompts/get";
    co_return co_await invoke(u, Kind::prompt, target->second, std::move(method),
                              std::move(params), std::move(args_sha256), std::move(call),
                              std::move(cancel), started);
  }

  asio::awaitable<RpcResult<json>> read_resource(const std::string& uri, Visible visible,
                                                 ToolCall call,
                                                 std::shared_ptr<CancelToken> cancel) override {
    auto started = Clock::now();
    Upstream* owner = nullptr;
    // A listed URI first, then the first template that matches it (config order).
    for (const auto& u : upstreams_) {
      if (owner) break;
      if (u->state != "ready") continue;
      for (const auto& r : u->resources) {
        if (r.value("uri", std::string()) == uri &&
            (!visible || visible(u->config.name, "resource:" + uri))) {
          owner = u.get();
          break;
        }
      }
    }
    for (const auto& u : upstreams_) {
      if (owner) break;
      if (u->state != "ready") continue;
      for (const auto& t : u->templates) {
        auto tpl = t.value("uriTemplate", std::string());
        if (template_match(tpl, uri) && (!visible || visible(u->config.name, "resource:" + tpl))) {
          owner = u.get();
          break;
        }
      }
    }
    if (!owner) {
      co_return RpcError{RpcError::kResourceNotFound, "Resource not found: " + uri,
                         json{{"uri", uri}}};
    }
    json params = {{"uri", uri}};
    auto args_sha256 = digest(params);
    std::string method = "resources/read";
    co_return co_await invoke(*owner, Kind::resource, uri, std::move(method), std::move(params),
                              std::move(args_sha256), std::move(call), std::move(cancel),
                              started);
  }

  void on_tools_changed(std::function<void()> fn) override { listeners_.push_back(std::move(fn)); }

  void on_list_changed(std::function<void(const std::string&)> fn) override {
    list_listeners_.push_back(std::move(fn));
  }

  void set_sampler(Sampler s) override { sampler_ = std::move(s); }
  void on_audit(std::function<void(const AuditEvent&)> fn) override { audit_sink_ = std::move(fn); }

  std::vector<ServerStatus> status() const override {
    std::vector<ServerStatus> out;
    for (const auto& u : upstreams_) {
      out.push_back({u->config.name, u->state, u->detail, u->tools.size(), u->restarts});
    }
    return out;
  }

 private:
  Upstream* find(const std::string& name) const {
    for (const auto& u : upstreams_) {
      if (u->config.name == name) return u.get();
    }
    return nullptr;
  }

  static bool exposed(const Upstream& u, const std::string& tool) {
    if (u.config.tools.empty()) return true;
    return std::any_of(u.config.tools.begin(), u.config.tools.end(),
                       [&](const std::string& g) { return core::glob_match(g, tool); });
  }

  // Resources or templates of the ready servers; a URI listed twice is kept once (the first
  // server in config order owns it, as for reads).
  std::vector<json> listed(std::vector<json> Upstream::*what, const char* key,
                           const Visible& visible) const {
    std::vector<json> out;
    std::set<std::string> seen;
    for (const auto& u : upstreams_) {
      if (u->state != "ready") continue;
      for (const auto& r : (*u).*what) {
        auto uri = r.value(key, std::string());
        if (visible && !visible(u->config.name, "resource:" + uri)) continue;
        if (seen.insert(uri).second) out.push_back(r);
      }
    }
    return out;
  }

  static const char* noun(Kind k) {
    switch (k) {
      case Kind::tool: return "tool";
      case Kind::prompt: return "prompt";
      case Kind::resource: return "resource";
    }
    return "";
  }

  // Refuses a call over a limit: kLimited with how long to wait.
  static RpcError limited(const std::string& what, std::int64_t retry_after_s) {
    json data = {{"limit", what}};
    if (retry_after_s > 0) data["retry_after_seconds"] = retry_after_s;
    return RpcError{RpcError::kLimited, "rate limited: " + what +
                                            (retry_after_s > 0 ? "; retry in " +
                                                                     std::to_string(retry_after_s) + "s"
                                                               : std::string()),
                    std::move(data)};
  }

  // The shared path of tools/call, prompts/get and resources/read: wait for the server,
  // apply the client's and the server's limits, send, audit.
  asio::awaitable<RpcResult<json>> invoke(Upstream& u, Kind kind, std::string name,
                                          std::string method, json params,
                                          std::string args_sha256, ToolCall call,
                                          std::shared_ptr<CancelToken> cancel,
                                          Clock::time_point started) {
    if (u.state != "ready" && u.state != "stopped") {
      if (!u.supervised) supervise(u);
      // Wait for the start under way (bounded), unless the last one already failed.
      if (u.state != "failed" || u.restarts == 0) {
        asio::steady_timer t(ex_, u.config.init_timeout);
        u.waiting.push_back(&t);
        co_await t.async_wait(kTuple);
        std::erase(u.waiting, &t);
      }
    }
    if (u.state != "ready" || !u.session) {
      audit(call, u, name, args_sha256, "unavailable", started);
      co_return RpcError{RpcError::kConnectionClosed,
                         "server " + u.config.name + " is not available (" + u.state +
                             (u.detail.empty() ? "" : ": " + u.detail) + ")",
                         nullptr};
    }
    if (kind == Kind::tool &&
        !std::any_of(u.tools.begin(), u.tools.end(),
                     [&](const json& t) { return t.value("name", std::string()) == name; })) {
      co_return RpcError{RpcError::kInvalidParams,
                         "unknown tool \"" + u.config.name + config_.separator + name + "\"",
                         nullptr};
    }
    if (kind == Kind::prompt &&
        !std::any_of(u.prompts.begin(), u.prompts.end(),
                     [&](const json& p) { return p.value("name", std::string()) == name; })) {
      co_return RpcError{RpcError::kInvalidParams,
                         "unknown prompt \"" + u.config.name + config_.separator + name + "\"",
                         nullptr};
    }
    auto timeout = u.config.call_timeout;
    Slots slots;
    // The client's limits: refused at once (a client must not hog a shared gateway).
    if (auto cl = config_.clients.find(call.client); cl != config_.clients.end()) {
      const auto& lim = cl->second;
      auto& st = client_state_[call.client];
      if (lim.limits.concurrency > 0 && st.in_flight >= lim.limits.concurrency) {
        audit(call, u, name, args_sha256, "limited", started);
        co_return limited("client " + call.client + " may have " +
                              std::to_string(lim.limits.concurrency) + " MCP calls in flight",
                          0);
      }
      if (lim.limits.rpm > 0) {
        if (auto wait = st.window.take(lim.limits.rpm)) {
          audit(call, u, name, args_sha256, "limited", started);
          co_return limited("client " + call.client + " may make " +
                                std::to_string(lim.limits.rpm) + " MCP calls per minute",
                            wait);
        }
      }
      ++st.in_flight;
      slots.client = &st;
      if (lim.call_timeout.count() > 0) timeout = std::min(timeout, lim.call_timeout);
    }
    // The server's limits: over rpm refused; over concurrency wait in line for a slot.
    if (u.config.limits.rpm > 0) {
      if (auto wait = u.window.take(u.config.limits.rpm)) {
        audit(call, u, name, args_sha256, "limited", started);
        co_return limited("server " + u.config.name + " takes " +
                              std::to_string(u.config.limits.rpm) + " calls per minute",
                          wait);
      }
    }
    if (u.config.limits.concurrency > 0 &&
        (u.in_flight >= u.config.limits.concurrency || !u.queue.empty())) {
      // In line, first come first served: a release wakes the front of the queue.
      auto alive = alive_;
      asio::steady_timer t(ex_, Clock::now() + timeout);
      u.queue.push_back(&t);
      bool got = false;
      for (;;) {
        auto [ec] = co_await t.async_wait(kTuple);
        if (!*alive) co_return RpcError{RpcError::kConnectionClosed, "agentd is stopping", nullptr};
        if (stopping_ || !ec || (cancel && cancel->cancelled())) break;
        if (u.queue.front() == &t && u.in_flight < u.config.limits.concurrency) {
          got = true;
          break;
        }
      }
      std::erase(u.queue, &t);
      // Pass the turn on when a slot is free (we took it or left the line).
      if (!u.queue.empty() && u.in_flight + (got ? 1 : 0) < u.config.limits.concurrency) {
        u.queue.front()->cancel();
      }
      if (!got) {
        if (stopping_) co_return RpcError{RpcError::kConnectionClosed, "agentd is stopping", nullptr};
        if (cancel && cancel->cancelled()) {
          co_return RpcError{RpcError::kInternal, "cancelled by the caller", nullptr};
        }
        audit(call, u, name, args_sha256, "limited", started);
        co_return RpcError{RpcError::kRequestTimeout,
                           "server " + u.config.name + " stayed busy (" +
                               std::to_string(u.config.limits.concurrency) +
                               " calls in flight) for " + std::to_string(timeout.count()) + "ms",
                           json{{"limit", "server concurrency"}}};
      }
      timeout -= std::chrono::duration_cast<milliseconds>(Clock::now() - started);
      if (timeout.count() < 1) timeout = milliseconds(1);
    }
    ++u.in_flight;
    slots.server = &u;
    if (u.state != "ready" || !u.session) {  // went away while we waited in line
      audit(call, u, name, args_sha256, "unavailable", started);
      co_return RpcError{RpcError::kConnectionClosed,
                         "server " + u.config.name + " is not available (" + u.state + ")", nullptr};
    }
    Session::RequestHooks hooks;
    hooks.on_progress = call.on_progress;
    hooks.cancel = cancel;
    hooks.client = call.client;
    hooks.request_id = call.request_id;
    if (config_.elicitation == ElicitationMode::relay) hooks.on_elicit = call.on_elicit;
    auto session = u.session;  // keeps it alive across a restart
    auto r = co_await session->request(std::move(method), std::move(params), timeout,
                                       std::move(hooks));
    std::string outcome = !r ? "error" : (r->value("isError", false) ? "tool_error" : "ok");
    audit(call, u, kind == Kind::tool ? name : std::string(noun(kind)) + ":" + name,
          args_sha256, outcome, started);
    co_return r;
  }

  // Arguments may hold secrets or personal data: the audit keeps a digest, not the values.
  void audit(const ToolCall& call, Upstream& u, const std::string& tool,
             const std::string& args_sha256, const std::string& outcome,
             Clock::time_point started) {
    const auto& server = u.config.name;
    auto took = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started);
    auto ms = static_cast<double>(took.count()) / 1000.0;
    spdlog::info("rid={} mcp audit: client={} server={} tool={} args_sha256={} outcome={} {:.1f}ms",
                 call.request_id.empty() ? "-" : call.request_id,
                 call.client.empty() ? "-" : call.client, server, tool, args_sha256, outcome, ms);
    if (audit_sink_) {
      AuditEvent e;
      e.client = call.client;
      e.request_id = call.request_id;
      e.server = server;
      e.tool = tool;
      e.args_sha256 = args_sha256;
      e.outcome = outcome;
      e.duration = took;
      audit_sink_(e);
    }
    auto calls = u.calls_by_outcome.find(outcome);
    if (calls == u.calls_by_outcome.end()) {
      calls = u.calls_by_outcome
                  .emplace(outcome, &metrics_.counter("agentd_mcp_tool_calls_total",
                                                      "MCP tool calls by server and outcome",
                                                      {{"server", server}, {"outcome", outcome}}))
                  .first;
    }
    calls->second->inc();
    if (!u.call_seconds) {
      u.call_seconds = &metrics_.histogram("agentd_mcp_tool_call_seconds",
                                           "MCP tool call latency by server",
                                           core::latency_buckets(), {{"server", server}});
    }
    u.call_seconds->observe(ms / 1000);
  }

  void changed() {
    for (auto& fn : listeners_) fn();
  }

  void list_changed(const std::string& method) {
    for (auto& fn : list_listeners_) fn(method);
  }

  // A server came up or went down: every list it contributes to changed.
  void all_changed(const Upstream& u) {
    changed();
    if (u.capabilities.contains("resources")) list_changed("notifications/resources/list_changed");
    if (u.capabilities.contains("prompts")) list_changed("notifications/prompts/list_changed");
  }

  void set_state(Upstream& u, std::string state, std::string detail) {
    u.state = std::move(state);
    u.detail = std::move(detail);
    metrics_
        .gauge("agentd_mcp_server_up", "1 while an upstream MCP server is ready",
               {{"server", u.config.name}})
        .set(u.state == "ready" ? 1 : 0);
  }

  std::unique_ptr<Transport> make_transport(const ServerConfig& c) {
    switch (c.transport) {
      case TransportKind::stdio: return make_stdio_transport(ex_, c);
      case TransportKind::streamable_http: return make_http_transport(ex_, c, client_);
      case TransportKind::sse: return make_sse_transport(ex_, c, client_);
    }
    return nullptr;
  }

  void supervise(Upstream& u) {
    u.supervised = true;
    asio::co_spawn(ex_, run(u, alive_), [name = u.config.name](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        spdlog::error("mcp[{}]: supervisor failed: {}", name, ex.what());
      }
    });
  }

  // Pages through a list method (tools/list, prompts/list, ...), keeping the objects of
  // `field` that carry the string `key`.
  asio::awaitable<RpcResult<std::vector<json>>> list_all(Session& s, const ServerConfig& c,
                                                         const char* method, const char* field,
                                                         const char* key) {
    std::vector<json> all;
    json cursor;
    for (int page = 0; page < 100; ++page) {
      json params = json::object();
      if (!cursor.is_null()) params["cursor"] = cursor;
      auto r = co_await s.request(method, std::move(params), c.init_timeout);
      if (!r) co_return r.error();
      if (auto t = r->find(field); t != r->end() && t->is_array()) {
        for (auto& item : *t) {
          if (item.is_object() && item.contains(key) && item[key].is_string()) {
            all.push_back(item);
          }
        }
      }
      auto next = r->find("nextCursor");
      if (next == r->end() || next->is_null()) co_return all;
      cursor = *next;
    }
    co_return all;
  }

  asio::awaitable<RpcResult<std::vector<json>>> list_tools(Session& s, const ServerConfig& c) {
    co_return co_await list_all(s, c, "tools/list", "tools", "name");
  }

  // Resources and prompts, when the server offers them. A failure here is logged, not fatal:
  // the tools still work.
  asio::awaitable<void> list_extras(Upstream& u, bool resources, bool prompts) {
    auto session = u.session;
    if (resources && u.capabilities.contains("resources")) {
      auto r = co_await list_all(*session, u.config, "resources/list", "resources", "uri");
      auto t = co_await list_all(*session, u.config, "resources/templates/list",
                                 "resourceTemplates", "uriTemplate");
      if (r) u.resources = std::move(*r);
      if (t) u.templates = std::move(*t);
      if (!r || !t) {
        spdlog::warn("mcp[{}]: cannot list resources: {}", u.config.name,
                     !r ? r.error().message : t.error().message);
      }
    }
    if (prompts && u.capabilities.contains("prompts")) {
      auto p = co_await list_all(*session, u.config, "prompts/list", "prompts", "name");
      if (p) {
        u.prompts = std::move(*p);
      } else {
        spdlog::warn("mcp[{}]: cannot list prompts: {}", u.config.name, p.error().message);
      }
    }
  }

  void report_collisions(const Upstream& u) {
    for (const auto& t : u.tools) {
      auto name = u.config.name + config_.separator + t.value("name", std::string());
      if (name.size() > 128) {
        spdlog::warn("mcp[{}]: tool name {} is longer than MCP's 128 characters", u.config.name,
                     name);
      }
      for (const auto& other : upstreams_) {
        if (other.get() == &u || other->state != "ready") continue;
        for (const auto& ot : other->tools) {
          if (other->config.name + config_.separator + ot.value("name", std::string()) == name) {
            spdlog::warn("mcp: tool name collision: {} is listed by {} and {}", name,
                         u.config.name, other->config.name);
          }
        }
      }
    }
    for (const auto& r : u.resources) {
      auto uri = r.value("uri", std::string());
      for (const auto& other : upstreams_) {
        if (other.get() == &u || other->state != "ready") continue;
        for (const auto& o : other->resources) {
          if (o.value("uri", std::string()) == uri) {
            spdlog::warn("mcp: resource {} is listed by {} and {}; reads go to the first in config order",
                         uri, u.config.name, other->config.name);
          }
        }
      }
    }
  }

  struct Refresh {
    bool tools = false;
    bool resources = false;
    bool prompts = false;
    bool any() const { return tools || resources || prompts; }
  };

  asio::awaitable<void> run(Upstream& u, std::shared_ptr<bool> alive) {
    milliseconds backoff{500};
    while (*alive && !stopping_) {
      set_state(u, "starting", u.restarts > 0 ? "restart " + std::to_string(u.restarts) : "");
      auto transport = make_transport(u.config);
      auto refresh = std::make_shared<Refresh>();
      Session::Handlers h;
      h.on_tools_changed = [&u, refresh, alive] {
        if (!*alive) return;
        refresh->tools = true;
        u.wake.cancel();
      };
      h.on_list_changed = [&u, refresh, alive](const std::string& method) {
        if (!*alive) return;
        (method == "notifications/prompts/list_changed" ? refresh->prompts : refresh->resources) =
            true;
        u.wake.cancel();
      };
      h.on_closed = [&u, alive](const std::string&) {
        if (*alive) u.wake.cancel();
      };
      if (sampler_ && u.config.sampling) h.on_sampling = sampler_;
      h.elicitation = config_.elicitation == ElicitationMode::relay;
      u.session = std::make_shared<Session>(ex_, u.config, std::move(transport),
                                            config_.protocol_version, std::move(h));
      auto opened = co_await u.session->open();
      RpcResult<std::vector<json>> listed = RpcError{};
      if (opened) {
        auto caps = opened->find("capabilities");
        u.capabilities = caps != opened->end() && caps->is_object() ? *caps : json::object();
        listed = co_await list_tools(*u.session, u.config);
        if (listed) co_await list_extras(u, true, true);
      }
      if (!*alive) co_return;
      if (!opened || !listed) {
        auto why = !opened ? opened.error().message : listed.error().message;
        spdlog::warn("mcp[{}]: cannot start: {} (next try in {}ms)", u.config.name, why,
                     backoff.count());
        co_await u.session->close();
        set_state(u, "failed", why);
        u.settle_waiters();  // waiting callers get the failure now
      } else {
        u.tools = std::move(*listed);
        auto info = opened->value("serverInfo", json::object());
        set_state(u, "ready", info.value("name", std::string()) + " " +
                                  info.value("version", std::string()) + " (" +
                                  opened->value("protocolVersion", std::string()) + ")");
        spdlog::info("mcp[{}]: ready ({} tools, {} resources, {} resource templates, {} prompts) via {}",
                     u.config.name, u.tools.size(), u.resources.size(), u.templates.size(),
                     u.prompts.size(),
                     u.config.transport == TransportKind::stdio ? "stdio" : u.config.url);
        report_collisions(u);
        backoff = milliseconds(500);
        u.settle_waiters();
        all_changed(u);
        co_await serve(u, refresh, alive);
        if (!*alive) co_return;
        u.tools.clear();
        u.resources.clear();
        u.templates.clear();
        u.prompts.clear();
        if (!stopping_) set_state(u, "failed", "connection lost");
        all_changed(u);
      }
      if (stopping_) break;
      ++u.restarts;
      u.wake.expires_after(backoff);
      co_await u.wake.async_wait(kTuple);
      backoff = std::min(backoff * 2, milliseconds(30'000));
    }
  }

  // While the session is up: re-list on list_changed, ping on an interval.
  asio::awaitable<void> serve(Upstream& u, std::shared_ptr<Refresh> refresh,
                              std::shared_ptr<bool> alive) {
    while (*alive && !stopping_ && u.session->alive()) {
      auto interval = u.config.ping_interval.count() > 0 ? u.config.ping_interval
                                                          : milliseconds(std::chrono::hours(24));
      u.wake.expires_after(interval);
      auto [ec] = co_await u.wake.async_wait(kTuple);
      if (!*alive || stopping_ || !u.session->alive()) break;
      if (refresh->any()) {
        auto what = std::exchange(*refresh, Refresh{});
        if (what.tools) {
          auto listed = co_await list_tools(*u.session, u.config);
          if (!*alive) co_return;
          if (listed) {
            u.tools = std::move(*listed);
            changed();
          }
        }
        if (what.resources || what.prompts) {
          co_await list_extras(u, what.resources, what.prompts);
          if (!*alive) co_return;
          if (what.resources) list_changed("notifications/resources/list_changed");
          if (what.prompts) list_changed("notifications/prompts/list_changed");
        }
        continue;
      }
      if (!ec) {  // the interval passed: a health ping
        auto pong = co_await u.session->request("ping", json::object(), std::chrono::seconds(10));
        if (!*alive) co_return;
        if (!pong && u.session->alive()) {
          spdlog::warn("mcp[{}]: ping failed ({}): restarting", u.config.name, pong.error().message);
          co_await u.session->close();
        }
      }
    }
  }

  asio::any_io_executor ex_;
  Config config_;
  net::HttpClient& client_;
  core::Registry& metrics_;
  std::deque<std::unique_ptr<Upstream>> upstreams_;
  std::vector<std::function<void()>> listeners_;
  std::vector<std::function<void(const std::string&)>> list_listeners_;
  std::map<std::string, ClientState> client_state_;
  Sampler sampler_;
  std::function<void(const AuditEvent&)> audit_sink_;
  bool stopping_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace

std::unique_ptr<Multiplexer> make_multiplexer(asio::any_io_executor ex, Config config,
                                              net::HttpClient& client, core::Registry& metrics) {
  return std::make_unique<MultiplexerImpl>(std::move(ex), std::move(config), client, metrics);
}

}  // namespace agentd::mcp
