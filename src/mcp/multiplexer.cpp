// The multiplexer: one supervised session per upstream server (started eagerly or on first
// use, restarted with backoff, health-checked with pings), their tools merged under
// namespaced names, calls routed to the owning server and audited.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <openssl/sha.h>
#include <spdlog/spdlog.h>

#include <deque>

#include "agentd/core/glob.hpp"
#include "agentd/mcp/multiplexer.hpp"
#include "session.hpp"

namespace agentd::mcp {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

std::string digest(const json& j) {
  auto text = j.dump();
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), d);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 8; ++i) {
    out += kHex[d[i] >> 4];
    out += kHex[d[i] & 15];
  }
  return out;
}

struct Upstream {
  explicit Upstream(asio::any_io_executor ex, ServerConfig c) : config(std::move(c)), wake(ex) {}
  ServerConfig config;
  std::shared_ptr<Session> session;
  std::string state = "idle";
  std::string detail;
  std::vector<json> tools;  // upstream definitions as listed
  int restarts = 0;
  bool supervised = false;
  asio::steady_timer wake;                  // the supervisor sleeps on it while a session is up
  std::vector<asio::steady_timer*> waiting;  // callers waiting for a (lazy) start

  void settle_waiters() {
    for (auto* t : waiting) t->cancel();
  }
};

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
      if (u->session) co_await u->session->close();
      u->state = "stopped";
    }
  }

  std::vector<json> tools(const std::function<bool(const std::string&, const std::string&)>&
                              visible) const override {
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
    if (!target) {
      co_return RpcError{RpcError::kInvalidParams, "unknown tool \"" + namespaced + "\"", nullptr};
    }
    auto& u = *find(target->first);
    const auto& tool = target->second;
    if (!exposed(u, tool)) {
      co_return RpcError{RpcError::kInvalidParams, "unknown tool \"" + namespaced + "\"", nullptr};
    }
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
      audit(call, u.config.name, tool, arguments, "unavailable", started);
      co_return RpcError{RpcError::kConnectionClosed,
                         "server " + u.config.name + " is not available (" + u.state +
                             (u.detail.empty() ? "" : ": " + u.detail) + ")",
                         nullptr};
    }
    if (!std::any_of(u.tools.begin(), u.tools.end(),
                     [&](const json& t) { return t.value("name", std::string()) == tool; })) {
      co_return RpcError{RpcError::kInvalidParams, "unknown tool \"" + namespaced + "\"", nullptr};
    }
    if (!arguments.is_null() && !arguments.is_object()) {
      co_return RpcError{RpcError::kInvalidParams, "arguments must be an object", nullptr};
    }
    json params = {{"name", tool}, {"arguments", arguments.is_null() ? json::object() : arguments}};
    auto session = u.session;  // keeps it alive across a restart
    auto r = co_await session->request("tools/call", std::move(params), u.config.call_timeout,
                                       call.on_progress, cancel);
    std::string outcome = !r ? "error" : (r->value("isError", false) ? "tool_error" : "ok");
    audit(call, u.config.name, tool, arguments, outcome, started);
    co_return r;
  }

  void on_tools_changed(std::function<void()> fn) override { listeners_.push_back(std::move(fn)); }

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

  void audit(const ToolCall& call, const std::string& server, const std::string& tool,
             const json& arguments, const std::string& outcome, Clock::time_point started) {
    auto ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
    // Arguments may hold secrets or personal data: the audit keeps a digest, not the values.
    spdlog::info("rid={} mcp audit: client={} server={} tool={} args_sha256={} outcome={} {:.1f}ms",
                 call.request_id.empty() ? "-" : call.request_id,
                 call.client.empty() ? "-" : call.client, server, tool, digest(arguments), outcome,
                 ms);
    metrics_
        .counter("agentd_mcp_tool_calls_total", "MCP tool calls by server and outcome",
                 {{"server", server}, {"outcome", outcome}})
        .inc();
    metrics_
        .histogram("agentd_mcp_tool_call_seconds", "MCP tool call latency by server",
                   core::latency_buckets(), {{"server", server}})
        .observe(ms / 1000);
  }

  void changed() {
    for (auto& fn : listeners_) fn();
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

  // Pages through tools/list.
  asio::awaitable<RpcResult<std::vector<json>>> list_tools(Session& s, const ServerConfig& c) {
    std::vector<json> all;
    json cursor;
    for (int page = 0; page < 100; ++page) {
      json params = json::object();
      if (!cursor.is_null()) params["cursor"] = cursor;
      auto r = co_await s.request("tools/list", std::move(params), c.init_timeout);
      if (!r) co_return r.error();
      if (auto t = r->find("tools"); t != r->end() && t->is_array()) {
        for (auto& tool : *t) {
          if (tool.is_object() && tool.contains("name") && tool["name"].is_string()) {
            all.push_back(tool);
          }
        }
      }
      auto next = r->find("nextCursor");
      if (next == r->end() || next->is_null()) co_return all;
      cursor = *next;
    }
    co_return all;
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
  }

  asio::awaitable<void> run(Upstream& u, std::shared_ptr<bool> alive) {
    milliseconds backoff{500};
    while (*alive && !stopping_) {
      set_state(u, "starting", u.restarts > 0 ? "restart " + std::to_string(u.restarts) : "");
      auto transport = make_transport(u.config);
      auto refresh = std::make_shared<bool>(false);
      Session::Handlers h;
      h.on_tools_changed = [this, &u, refresh, alive] {
        if (!*alive) return;
        *refresh = true;
        u.wake.cancel();
      };
      h.on_closed = [&u, alive](const std::string&) {
        if (*alive) u.wake.cancel();
      };
      u.session = std::make_shared<Session>(ex_, u.config, std::move(transport),
                                            config_.protocol_version, std::move(h));
      auto opened = co_await u.session->open();
      RpcResult<std::vector<json>> listed = RpcError{};
      if (opened) listed = co_await list_tools(*u.session, u.config);
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
                                  info.value("version", std::string()));
        spdlog::info("mcp[{}]: ready ({} tools) via {}", u.config.name, u.tools.size(),
                     u.config.transport == TransportKind::stdio ? "stdio" : u.config.url);
        report_collisions(u);
        backoff = milliseconds(500);
        u.settle_waiters();
        changed();
        co_await serve(u, refresh, alive);
        if (!*alive) co_return;
        u.tools.clear();
        if (!stopping_) set_state(u, "failed", "connection lost");
        changed();
      }
      if (stopping_) break;
      ++u.restarts;
      u.wake.expires_after(backoff);
      co_await u.wake.async_wait(kTuple);
      backoff = std::min(backoff * 2, milliseconds(30'000));
    }
  }

  // While the session is up: re-list on list_changed, ping on an interval.
  asio::awaitable<void> serve(Upstream& u, std::shared_ptr<bool> refresh,
                              std::shared_ptr<bool> alive) {
    while (*alive && !stopping_ && u.session->alive()) {
      auto interval = u.config.ping_interval.count() > 0 ? u.config.ping_interval
                                                          : milliseconds(std::chrono::hours(24));
      u.wake.expires_after(interval);
      auto [ec] = co_await u.wake.async_wait(kTuple);
      if (!*alive || stopping_ || !u.session->alive()) break;
      if (*refresh) {
        *refresh = false;
        auto listed = co_await list_tools(*u.session, u.config);
        if (!*alive) co_return;
        if (listed) {
          u.tools = std::move(*listed);
          changed();
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
  bool stopping_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace

std::unique_ptr<Multiplexer> make_multiplexer(asio::any_io_executor ex, Config config,
                                              net::HttpClient& client, core::Registry& metrics) {
  return std::make_unique<MultiplexerImpl>(std::move(ex), std::move(config), client, metrics);
}

}  // namespace agentd::mcp
