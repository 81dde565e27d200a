// agentd's `/mcp` endpoint end to end in-process: the Api pipeline, the MCP routes and the HTTP
// server on port 0, over a scripted multiplexer, driven with raw HTTP over real sockets.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <functional>
#include <set>
#include <thread>

#include "agentd/api/api.hpp"
#include "agentd/api/mcp.hpp"
#include "agentd/net/server.hpp"
#include "agentd/net/sse.hpp"
#include "support/http_client.hpp"

namespace agentd::test {
namespace {

namespace asio = boost::asio;
using nlohmann::json;
using namespace std::chrono_literals;
using Hdrs = std::vector<std::pair<std::string, std::string>>;

constexpr const char* kFull = "mcp-full-token-0123456789";
constexpr const char* kFsOnly = "mcp-fs-only-token-0123456789";
constexpr const char* kWebOnly = "mcp-web-only-token-0123456789";
constexpr const char* kBoth = "application/json, text/event-stream";

// Two servers, `fs` (echo, slow, fail) and `web` (fetch), namespaced as `<server>__<tool>`.
class FakeMux : public mcp::Multiplexer {
 public:
  explicit FakeMux(asio::any_io_executor ex) : ex_(std::move(ex)) {}

  void start() override {}
  asio::awaitable<void> stop() override { co_return; }

  std::vector<json> tools(
      const std::function<bool(const std::string&, const std::string&)>& visible) const override {
    std::vector<json> out;
    for (const auto& [server, tool] : kCatalog) {
      if (!visible(server, tool)) continue;
      out.push_back({{"name", server + "__" + tool},
                     {"description", "the " + tool + " tool of " + server},
                     {"inputSchema", {{"type", "object"}}}});
    }
    return out;
  }

  std::optional<std::pair<std::string, std::string>> resolve(
      const std::string& namespaced) const override {
    auto sep = namespaced.find("__");
    if (sep == std::string::npos) return std::nullopt;
    std::pair<std::string, std::string> p{namespaced.substr(0, sep), namespaced.substr(sep + 2)};
    for (const auto& [server, tool] : kCatalog) {
      if (server == p.first) return p;  // the server exists; the tool may not
    }
    return std::nullopt;
  }

  asio::awaitable<mcp::RpcResult<json>> call_tool(
      const std::string& namespaced, json arguments, mcp::ToolCall call,
      std::shared_ptr<mcp::CancelToken> cancel) override {
    ++calls;
    last_client_is_full = call.client == "full";
    if (namespaced == "fs__echo") {
      co_return text_result(arguments.value("text", std::string()), false);
    }
    if (namespaced == "web__fetch") co_return text_result("fetched", false);
    if (namespaced == "fs__fail") co_return text_result("the tool failed", true);
    if (namespaced == "fs__slow")
      co_return co_await slow(std::move(arguments), std::move(call), cancel);
    if (namespaced == "fs__ask") {
      // Asks the caller a question, like a server's elicitation/create during a call.
      if (!call.on_elicit) co_return text_result("no one to ask: declined", false);
      json question = {{"message", "Your name?"},
                       {"requestedSchema",
                        {{"type", "object"}, {"properties", {{"name", {{"type", "string"}}}}}}}};
      auto answer = co_await call.on_elicit(std::move(question));
      if (!answer) co_return answer.error();
      co_return text_result("answer: " + answer->dump(), false);
    }
    co_return mcp::RpcError{mcp::RpcError::kInvalidParams, "unknown tool", nullptr};
  }

  void on_tools_changed(std::function<void()> fn) override { listeners_.push_back(std::move(fn)); }
  std::vector<mcp::ServerStatus> status() const override { return {}; }

  // fs has one resource, one template and one prompt; web has none.
  std::vector<json> resources(const mcp::Visible& visible) const override {
    if (!visible("fs", "resource:file:///srv/readme.md")) return {};
    return {{{"uri", "file:///srv/readme.md"}, {"name", "readme"}, {"mimeType", "text/markdown"}}};
  }
  std::vector<json> resource_templates(const mcp::Visible& visible) const override {
    if (!visible("fs", "resource:file:///srv/{path}")) return {};
    return {{{"uriTemplate", "file:///srv/{path}"}, {"name", "files"}}};
  }
  std::vector<json> prompts(const mcp::Visible& visible) const override {
    if (!visible("fs", "prompt:review")) return {};
    return {{{"name", "fs__review"}, {"description", "review a file"}}};
  }
  asio::awaitable<mcp::RpcResult<json>> read_resource(const std::string& uri, mcp::Visible visible,
                                                      mcp::ToolCall, std::shared_ptr<mcp::CancelToken>) override {
    if (uri.starts_with("file:///srv/") && visible("fs", "resource:file:///srv/{path}")) {
      json r = {{"contents", json::array({{{"uri", uri}, {"text", "# hello"}}})}};
      co_return r;
    }
    co_return mcp::RpcError{mcp::RpcError::kResourceNotFound, "Resource not found: " + uri, nullptr};
  }
  asio::awaitable<mcp::RpcResult<json>> get_prompt(const std::string& namespaced, json arguments,
                                                   mcp::ToolCall, std::shared_ptr<mcp::CancelToken>) override {
    if (namespaced != "fs__review") {
      co_return mcp::RpcError{mcp::RpcError::kInvalidParams, "unknown prompt", nullptr};
    }
    std::string file = arguments.is_object() ? arguments.value("file", std::string("?")) : "?";
    json r = {{"messages", json::array({{{"role", "user"},
                                         {"content", {{"type", "text"}, {"text", "review " + file}}}}})}};
    co_return r;
  }
  void on_list_changed(std::function<void(const std::string&)> fn) override {
    list_listeners_.push_back(std::move(fn));
  }
  void fire_list(const std::string& method) {
    for (auto& fn : list_listeners_) fn(method);
  }

  void fire() {
    for (auto& fn : listeners_) fn();
  }

  std::atomic<int> calls{0};
  std::atomic<int> slow_started{0};
  std::atomic<int> slow_cancelled{0};
  std::atomic<int> slow_finished{0};
  std::atomic<bool> last_client_is_full{false};

 private:
  static json text_result(const std::string& text, bool error) {
    json r = {{"content", json::array({{{"type", "text"}, {"text", text}}})}};
    if (error) r["isError"] = true;
    return r;
  }

  // `ticks` progress reports `interval` ms apart, then `hold` ms, unless cancelled first.
  asio::awaitable<mcp::RpcResult<json>> slow(json args, mcp::ToolCall call,
                                             std::shared_ptr<mcp::CancelToken> cancel) {
    int ticks = args.value("ticks", 3);
    int interval = args.value("interval", 20);
    int hold = args.value("hold", 0);
    ++slow_started;
    asio::steady_timer t(ex_);
    cancel->on_cancel([&t] { t.cancel(); });
    struct Forget {
      mcp::CancelToken& token;
      ~Forget() { token.on_cancel(nullptr); }
    } forget{*cancel};
    for (int i = 1; i <= ticks && !cancel->cancelled(); ++i) {
      if (call.on_progress) {
        call.on_progress(
            {{"progress", i}, {"total", ticks}, {"message", "step " + std::to_string(i)}});
      }
      t.expires_after(std::chrono::milliseconds(interval));
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (!cancel->cancelled() && hold > 0) {
      t.expires_after(std::chrono::milliseconds(hold));
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (cancel->cancelled()) {
      ++slow_cancelled;
      co_return mcp::RpcError{mcp::RpcError::kInternal, "cancelled by the client", nullptr};
    }
    ++slow_finished;
    co_return text_result("slow done", false);
  }

  static inline const std::vector<std::pair<std::string, std::string>> kCatalog{
      {"fs", "echo"}, {"fs", "slow"}, {"fs", "fail"}, {"fs", "ask"}, {"web", "fetch"}};
  asio::any_io_executor ex_;
  std::vector<std::function<void()>> listeners_;
  std::vector<std::function<void(const std::string&)>> list_listeners_;
};

// agentd's HTTP server with only the MCP routes, on its own loop thread.
class Agentd {
 public:
  explicit Agentd(api::McpServerOptions options = {}) {
    std::vector<api::Client> clients{{"full", kFull, {"*"}},
                                     {"fs", kFsOnly, {"mcp:fs/*"}},
                                     {"web", kWebOnly, {"models:*", "mcp:web/fetch"}}};
    api_ = std::make_unique<api::Api>(clients, net::CorsConfig{}, metrics_);
    api::add_mcp_routes(*api_, mux_, options);
    net::ServerConfig config;
    config.listeners = {{"127.0.0.1", 0, false}};
    config.sse_keepalive = 100ms;  // a vanished client is noticed at the next write
    config.access_log = false;
    server_ = net::make_http_server(io_, config, api_->handler(), metrics_);
    port_ = server_->start().at(0).port;
    thread_ = std::thread([this] { io_.run(); });
  }
  ~Agentd() {
    io_.stop();
    thread_.join();
  }
  std::uint16_t port() const { return port_; }
  FakeMux& mux() { return mux_; }
  void tools_changed() {
    asio::post(io_, [this] { mux_.fire(); });
  }
  void list_changed(std::string method) {
    asio::post(io_, [this, method] { mux_.fire_list(method); });
  }

 private:
  asio::io_context io_{1};
  core::Registry metrics_;
  FakeMux mux_{io_.get_executor()};
  std::unique_ptr<api::Api> api_;
  std::unique_ptr<net::HttpServer> server_;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

// --- client helpers ---------------------------------------------------------------------

Hdrs headers(const char* token, const std::string& session = {}, const std::string& accept = kBoth,
             const std::string& version = {}) {
  Hdrs h{{"Authorization", std::string("Bearer ") + token}, {"Content-Type", "application/json"}};
  if (!accept.empty()) h.emplace_back("Accept", accept);
  if (!session.empty()) h.emplace_back("Mcp-Session-Id", session);
  if (!version.empty()) h.emplace_back("MCP-Protocol-Version", version);
  return h;
}

json rpc(const json& id, const std::string& method, const json& params = json::object()) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}};
}

json notification(const std::string& method, const json& params = json::object()) {
  return {{"jsonrpc", "2.0"}, {"method", method}, {"params", params}};
}

std::optional<HttpResponse> post(std::uint16_t port, const Hdrs& h, const std::string& body) {
  return request(port, "POST", "/mcp", h, body);
}

json init_params(const std::string& version, const json& capabilities = json::object()) {
  return {{"protocolVersion", version},
          {"capabilities", capabilities},
          {"clientInfo", {{"name", "test"}, {"version", "1"}}}};
}

// initialize + notifications/initialized; the session id.
std::string open_session(std::uint16_t port, const char* token,
                         const std::string& version = "2025-06-18",
                         const json& capabilities = json::object()) {
  auto r = post(port, headers(token), rpc(0, "initialize", init_params(version, capabilities)).dump());
  if (!r || r->status != 200) {
    ADD_FAILURE() << "initialize failed: " << (r ? r->body : "no answer");
    return {};
  }
  std::string session = r->header("mcp-session-id");
  EXPECT_FALSE(session.empty());
  auto n = post(port, headers(token, session, kBoth, version),
                notification("notifications/initialized").dump());
  EXPECT_TRUE(n && n->status == 202);
  return session;
}

std::vector<net::SseEvent> parse_events(const std::string& text) {
  net::SseParser p;
  return p.feed(text);
}

// The JSON-RPC messages of an event stream (priming events, with no data, skipped).
std::vector<json> messages(const std::vector<net::SseEvent>& events) {
  std::vector<json> out;
  for (const auto& e : events) {
    if (!e.data.empty()) out.push_back(json::parse(e.data));
  }
  return out;
}

// An event stream read as it arrives.
class EventReader {
 public:
  // Sends `request_text` on a new connection and reads the response head.
  EventReader(std::uint16_t port, const std::string& request_text) {
    conn_ = Connection::open(port);
    if (!conn_ || !conn_->send(request_text)) return;
    head = conn_->read_head(5s);
  }
  // Reads until `pred(events)` holds, the stream ends or `timeout` passes; pred's last value.
  bool until(const std::function<bool(const std::vector<net::SseEvent>&)>& pred,
             std::chrono::milliseconds timeout = 5s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      events = parse_events(dechunk(raw_));
      if (pred(events)) return true;
      if (ended() || !conn_) return false;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left <= 0ms) return false;
      auto got = conn_->read_some(left);
      if (got.empty()) {
        if (std::chrono::steady_clock::now() >= deadline) return false;
        conn_.reset();  // closed by the server
        continue;
      }
      raw_ += got;
    }
  }
  bool wait_end(std::chrono::milliseconds timeout = 5s) {
    until([](const auto&) { return false; }, timeout);
    return ended();
  }
  bool ended() const { return raw_.ends_with("0\r\n\r\n"); }
  void disconnect() { conn_.reset(); }

  std::optional<HttpResponse> head;
  std::vector<net::SseEvent> events;

 private:
  std::unique_ptr<Connection> conn_;
  std::string raw_;
};

bool has_method(const std::vector<net::SseEvent>& events, const std::string& method) {
  for (const auto& m : messages(events)) {
    if (m.value("method", std::string()) == method) return true;
  }
  return false;
}

bool has_response(const std::vector<net::SseEvent>& events) {
  for (const auto& m : messages(events)) {
    if (m.contains("result") || m.contains("error")) return true;
  }
  return false;
}

std::size_t count_progress(const std::vector<net::SseEvent>& events) {
  std::size_t n = 0;
  for (const auto& m : messages(events))
    n += m.value("method", std::string()) == "notifications/progress";
  return n;
}

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

std::string slow_call(int id, const json& args, const json& token = "tok") {
  json params = {{"name", "fs__slow"}, {"arguments", args}};
  if (!token.is_null()) params["_meta"] = {{"progressToken", token}};
  return rpc(id, "tools/call", params).dump();
}

// --- tests ------------------------------------------------------------------------------

TEST(McpServer, InitializeNegotiatesTheVersionAndOpensASession) {
  Agentd d;
  auto r = post(d.port(), headers(kFull), rpc(1, "initialize", init_params("2025-06-18")).dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_NE(r->header("content-type").find("application/json"), std::string::npos);
  auto j = json::parse(r->body);
  EXPECT_EQ(j["jsonrpc"], "2.0");
  EXPECT_EQ(j["id"], 1);
  EXPECT_EQ(j["result"]["protocolVersion"], "2025-06-18");
  EXPECT_EQ(j["result"]["capabilities"]["tools"]["listChanged"], true);
  EXPECT_EQ(j["result"]["serverInfo"]["name"], "agentd");
  EXPECT_EQ(j["result"]["serverInfo"]["version"], AGENTD_VERSION);
  EXPECT_TRUE(j["result"]["instructions"].is_string());
  std::string session = r->header("mcp-session-id");
  EXPECT_GE(session.size(), 32u);  // 128 bits, hex
  for (char c : session) EXPECT_TRUE(c >= 0x21 && c <= 0x7e);

  for (std::string v : {"2025-03-26", "2025-11-25"}) {
    auto again = post(d.port(), headers(kFull), rpc(2, "initialize", init_params(v)).dump());
    ASSERT_TRUE(again && again->status == 200);
    EXPECT_EQ(json::parse(again->body)["result"]["protocolVersion"], v);
    EXPECT_NE(again->header("mcp-session-id"), session);  // every initialize: a new session
  }
  // A version we do not speak: the latest we do.
  auto other =
      post(d.port(), headers(kFull), rpc(3, "initialize", init_params("2024-11-05")).dump());
  ASSERT_TRUE(other && other->status == 200);
  EXPECT_EQ(json::parse(other->body)["result"]["protocolVersion"], "2025-11-25");

  // No token: the Api pipeline's 401.
  auto anon = request(d.port(), "POST", "/mcp", {{"Accept", kBoth}},
                      rpc(1, "initialize", init_params("2025-06-18")).dump());
  ASSERT_TRUE(anon);
  EXPECT_EQ(anon->status, 401);
}

TEST(McpServer, InitializeWithoutAProtocolVersionIsInvalidParams) {
  Agentd d;
  auto r = post(d.port(), headers(kFull), rpc(1, "initialize", json::object()).dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], -32602);
  EXPECT_TRUE(r->header("mcp-session-id").empty());
}

TEST(McpServer, MissingSessionIs400AndUnknownSessionIs404) {
  Agentd d;
  auto missing = post(d.port(), headers(kFull), rpc(1, "tools/list").dump());
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 400);
  EXPECT_EQ(json::parse(missing->body)["error"]["code"], -32000);
  auto unknown = post(d.port(), headers(kFull, "no-such-session"), rpc(1, "tools/list").dump());
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  auto get =
      request(d.port(), "GET", "/mcp", headers(kFull, "no-such-session", "text/event-stream"));
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 404);
}

TEST(McpServer, AnotherClientsSessionIsNotFound) {
  Agentd d;
  auto session = open_session(d.port(), kFull);
  auto r = post(d.port(), headers(kFsOnly, session), rpc(1, "tools/list").dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  auto del = request(d.port(), "DELETE", "/mcp", headers(kFsOnly, session));
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 404);
  // Still alive for its owner.
  auto mine = post(d.port(), headers(kFull, session), rpc(2, "ping").dump());
  ASSERT_TRUE(mine);
  EXPECT_EQ(mine->status, 200);
}

TEST(McpServer, ProtocolVersionHeaderIsChecked) {
  Agentd d;
  auto session = open_session(d.port(), kFull);
  auto bad = post(d.port(), headers(kFull, session, kBoth, "1999-01-01"), rpc(1, "ping").dump());
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(bad->body.find("MCP-Protocol-Version"), std::string::npos);
  auto good = post(d.port(), headers(kFull, session, kBoth, "2025-06-18"), rpc(2, "ping").dump());
  ASSERT_TRUE(good);
  EXPECT_EQ(good->status, 200);
  auto absent = post(d.port(), headers(kFull, session), rpc(3, "ping").dump());
  ASSERT_TRUE(absent);
  EXPECT_EQ(absent->status, 200);
  auto j = json::parse(absent->body);
  EXPECT_EQ(j["id"], 3);
  EXPECT_EQ(j["result"], json::object());
}

TEST(McpServer, NotificationsAndResponsesAreAccepted) {
  Agentd d;
  auto session = open_session(d.port(), kFull);
  auto n = post(d.port(), headers(kFull, session), notification("notifications/whatever").dump());
  ASSERT_TRUE(n);
  EXPECT_EQ(n->status, 202);
  EXPECT_TRUE(n->body.empty());
  json response = {{"jsonrpc", "2.0"}, {"id", "s-1"}, {"result", json::object()}};
  auto r = post(d.port(), headers(kFull, session), response.dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202);
  EXPECT_TRUE(r->body.empty());
  // Cancelling something unknown is ignored.
  auto c = post(d.port(), headers(kFull, session),
                notification("notifications/cancelled", {{"requestId", 99}}).dump());
  ASSERT_TRUE(c);
  EXPECT_EQ(c->status, 202);
}

TEST(McpServer, FramingErrors) {
  Agentd d;
  auto session = open_session(d.port(), kFull);
  auto h = headers(kFull, session);
  auto broken = post(d.port(), h, "{\"jsonrpc\": \"2.0\", ");
  ASSERT_TRUE(broken);
  EXPECT_EQ(broken->status, 400);
  EXPECT_EQ(json::parse(broken->body)["error"]["code"], -32700);
  EXPECT_TRUE(json::parse(broken->body)["id"].is_null());

  auto batch = post(d.port(), h, json::array({rpc(1, "ping"), rpc(2, "ping")}).dump());
  ASSERT_TRUE(batch);
  EXPECT_EQ(batch->status, 400);
  EXPECT_EQ(json::parse(batch->body)["error"]["code"], -32600);

  auto scalar = post(d.port(), h, "42");
  ASSERT_TRUE(scalar);
  EXPECT_EQ(scalar->status, 400);
  EXPECT_EQ(json::parse(scalar->body)["error"]["code"], -32600);

  auto no_version = post(d.port(), h, json{{"id", 5}, {"method", "ping"}}.dump());
  ASSERT_TRUE(no_version);
  EXPECT_EQ(no_version->status, 400);
  EXPECT_EQ(json::parse(no_version->body)["error"]["code"], -32600);
  EXPECT_EQ(json::parse(no_version->body)["id"], 5);

  auto unknown = post(d.port(), h, rpc(6, "sampling/whatever").dump());
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 200);
  EXPECT_EQ(json::parse(unknown->body)["error"]["code"], -32601);
  EXPECT_EQ(json::parse(unknown->body)["id"], 6);

  // Neither JSON nor an event stream accepted.
  auto not_acceptable =
      post(d.port(), headers(kFull, session, "text/plain"), rpc(7, "ping").dump());
  ASSERT_TRUE(not_acceptable);
  EXPECT_EQ(not_acceptable->status, 406);
  auto refused =
      post(d.port(), headers(kFull, session, "application/json;q=0"), rpc(8, "ping").dump());
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 406);

  // resources/subscribe is not offered (no `subscribe` capability): -32601 naming it.
  auto subscribe = post(d.port(), h, rpc(9, "resources/subscribe", {{"uri", "x"}}).dump());
  ASSERT_TRUE(subscribe && subscribe->status == 200);
  EXPECT_EQ(json::parse(subscribe->body)["error"]["message"], "Method not found: resources/subscribe");
}

std::vector<std::string> tool_names(std::uint16_t port, const char* token) {
  auto session = open_session(port, token);
  auto r =
      post(port, headers(token, session), rpc(1, "tools/list", {{"cursor", "ignored"}}).dump());
  std::vector<std::string> names;
  if (!r || r->status != 200) {
    ADD_FAILURE() << "tools/list failed";
    return names;
  }
  auto j = json::parse(r->body);
  EXPECT_FALSE(j["result"].contains("nextCursor"));
  for (const auto& t : j["result"]["tools"]) names.push_back(t["name"].get<std::string>());
  return names;
}

TEST(McpServer, ToolsListIsFilteredByScopes) {
  Agentd d;
  using V = std::vector<std::string>;
  EXPECT_EQ(tool_names(d.port(), kFull),
            (V{"fs__echo", "fs__slow", "fs__fail", "fs__ask", "web__fetch"}));
  EXPECT_EQ(tool_names(d.port(), kFsOnly), (V{"fs__echo", "fs__slow", "fs__fail", "fs__ask"}));
  EXPECT_EQ(tool_names(d.port(), kWebOnly), (V{"web__fetch"}));
}

TEST(McpServer, ToolsCallAnswersJson) {
  Agentd d;
  auto session = open_session(d.port(), kFull);
  auto h = headers(kFull, session);
  auto echo = post(
      d.port(), h,
      rpc("a", "tools/call", {{"name", "fs__echo"}, {"arguments", {{"text", "hello"}}}}).dump());
  ASSERT_TRUE(echo);
  ASSERT_EQ(echo->status, 200) << echo->body;
  EXPECT_NE(echo->header("content-type").find("application/json"), std::string::npos);
  auto j = json::parse(echo->body);
  EXPECT_EQ(j["id"], "a");
  EXPECT_EQ(j["result"]["content"][0]["text"], "hello");
  EXPECT_TRUE(d.mux().last_client_is_full.load());

  auto fail = post(d.port(), h, rpc(2, "tools/call", {{"name", "fs__fail"}}).dump());
  ASSERT_TRUE(fail && fail->status == 200);
  auto f = json::parse(fail->body);
  EXPECT_EQ(f["result"]["isError"], true);  // a tool error is a result, not a JSON-RPC error
  EXPECT_FALSE(f.contains("error"));

  auto unknown = post(d.port(), h, rpc(3, "tools/call", {{"name", "nope__tool"}}).dump());
  ASSERT_TRUE(unknown && unknown->status == 200);
  EXPECT_EQ(json::parse(unknown->body)["error"]["code"], -32602);

  auto no_name = post(d.port(), h, rpc(4, "tools/call", {{"arguments", json::object()}}).dump());
  ASSERT_TRUE(no_name && no_name->status == 200);
  EXPECT_EQ(json::parse(no_name->body)["error"]["code"], -32602);

  auto bad_args =
      post(d.port(), h, rpc(5, "tools/call", {{"name", "fs__echo"}, {"arguments", "text"}}).dump());
  ASSERT_TRUE(bad_args && bad_args->status == 200);
  EXPECT_EQ(json::parse(bad_args->body)["error"]["code"], -32602);
}

TEST(McpServer, AToolOutsideTheClientsScopesLooksUnknown) {
  Agentd d;
  auto session = open_session(d.port(), kWebOnly);
  auto h = headers(kWebOnly, session);
  int before = d.mux().calls.load();
  auto hidden = post(d.port(), h, rpc(1, "tools/call", {{"name", "fs__echo"}}).dump());
  auto absent = post(d.port(), h, rpc(1, "tools/call", {{"name", "zz__echo"}}).dump());
  ASSERT_TRUE(hidden && absent);
  auto a = json::parse(hidden->body);
  auto b = json::parse(absent->body);
  EXPECT_EQ(a["error"]["code"], -32602);
  EXPECT_EQ(b["error"]["code"], -32602);
  EXPECT_EQ(a["error"]["message"], "Unknown tool: fs__echo");
  EXPECT_EQ(b["error"]["message"], "Unknown tool: zz__echo");
  EXPECT_EQ(d.mux().calls.load(), before);  // never reached the multiplexer
  auto allowed = post(d.port(), h, rpc(2, "tools/call", {{"name", "web__fetch"}}).dump());
  ASSERT_TRUE(allowed);
  EXPECT_EQ(json::parse(allowed->body)["result"]["content"][0]["text"], "fetched");
}

TEST(McpServer, ToolsCallWithAProgressTokenStreamsProgressThenTheResult) {
  Agentd d;
  auto session = open_session(d.port(), kFull);
  auto r = post(d.port(), headers(kFull, session), slow_call(7, {{"ticks", 3}}, "tok-1"));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->header("content-type"), "text/event-stream");
  auto events = parse_events(r->body);
  auto msgs = messages(events);
  ASSERT_EQ(msgs.size(), 4u) << r->body;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(msgs[i]["method"], "notifications/progress");
    EXPECT_EQ(msgs[i]["params"]["progressToken"], "tok-1");
    EXPECT_EQ(msgs[i]["params"]["progress"], i + 1);
    EXPECT_EQ(msgs[i]["params"]["total"], 3);
  }
  EXPECT_EQ(msgs[3]["id"], 7);
  EXPECT_EQ(msgs[3]["result"]["content"][0]["text"], "slow done");
  std::set<std::string> ids;
  for (const auto& e : events) {
    EXPECT_FALSE(e.id.empty());
    ids.insert(e.id);
  }
  EXPECT_EQ(ids.size(), events.size());  // unique within the session

  // Without a progress token, or accepting only JSON: a JSON answer.
  auto plain = post(d.port(), headers(kFull, session), slow_call(8, {{"ticks", 2}}, nullptr));
  ASSERT_TRUE(plain && plain->status == 200);
  EXPECT_EQ(json::parse(plain->body)["result"]["content"][0]["text"], "slow done");
  auto json_only =
      post(d.port(), headers(kFull, session, "application/json"), slow_call(9, {{"ticks", 2}}, 5));
  ASSERT_TRUE(json_only && json_only->status == 200);
  EXPECT_EQ(json::parse(json_only->body)["id"], 9);
}

TEST(McpServer, StreamsOf2025_11_25SessionsStartWithAPrimingEvent) {
  Agentd d;
  auto session = open_session(d.port(), kFull, "2025-11-25");
  auto r =
      post(d.port(), headers(kFull, session, kBoth, "2025-11-25"), slow_call(1, {{"ticks", 1}}));
  ASSERT_TRUE(r && r->status == 200);
  auto events = parse_events(r->body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_FALSE(events[0].id.empty());
  EXPECT_TRUE(events[0].data.empty());
  EXPECT_EQ(events[0].retry_ms, 1000);
  EXPECT_EQ(json::parse(events.back().data)["id"], 1);
}

TEST(McpServer, NotificationsCancelledEndsTheCall) {
  Agentd d;
  auto session = open_session(d.port(), kFull);
  EventReader call(d.port(), build_request("POST", "/mcp", headers(kFull, session),
                                           slow_call(42, {{"ticks", 1}, {"hold", 20000}})));
  ASSERT_TRUE(call.head);
  ASSERT_EQ(call.head->status, 200);
  ASSERT_TRUE(call.until([](const auto& ev) { return count_progress(ev) >= 1; }));
  auto c =
      post(d.port(), headers(kFull, session),
           notification("notifications/cancelled", {{"requestId", 42}, {"reason", "test"}}).dump());
  ASSERT_TRUE(c);
  EXPECT_EQ(c->status, 202);
  EXPECT_TRUE(eventually([&] { return d.mux().slow_cancelled.load() == 1; }, 5s));
  ASSERT_TRUE(call.wait_end(5s));
  EXPECT_FALSE(has_response(call.events));  // a cancelled request gets no response
  EXPECT_EQ(d.mux().slow_finished.load(), 0);
}

// A call that would be answered with JSON: no response after a cancel (an empty event stream)
// when the client takes streams; a JSON error, which it ignores, when it takes only JSON.
TEST(McpServer, NotificationsCancelledAlsoEndsAJsonCall) {
  Agentd d;
  auto session = open_session(d.port(), kFull);
  int n = 0;
  for (std::string accept : {kBoth, "application/json"}) {
    auto conn = Connection::open(d.port());
    ASSERT_TRUE(conn);
    ASSERT_TRUE(conn->send(build_request("POST", "/mcp", headers(kFull, session, accept),
                                         slow_call(5, {{"ticks", 0}, {"hold", 20000}}, nullptr))));
    ++n;
    ASSERT_TRUE(eventually([&] { return d.mux().slow_started.load() == n; }, 5s));
    auto c = post(d.port(), headers(kFull, session),
                  notification("notifications/cancelled", {{"requestId", 5}}).dump());
    ASSERT_TRUE(c && c->status == 202);
    auto r = conn->read_response(5s);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    if (accept == kBoth) {
      EXPECT_EQ(r->header("content-type"), "text/event-stream");
      EXPECT_TRUE(parse_events(r->body).empty());
    } else {
      EXPECT_TRUE(json::parse(r->body).contains("error"));
    }
    EXPECT_EQ(d.mux().slow_cancelled.load(), n);
  }
}

TEST(McpServer, ARequestIdInUseByACallInFlightIsRefused) {
  Agentd d;
  auto session = open_session(d.port(), kFull);
  auto conn = Connection::open(d.port());
  ASSERT_TRUE(conn);
  ASSERT_TRUE(conn->send(build_request("POST", "/mcp", headers(kFull, session),
                                       slow_call(1, {{"ticks", 0}, {"hold", 20000}}, nullptr))));
  ASSERT_TRUE(eventually([&] { return d.mux().slow_started.load() == 1; }, 5s));
  auto twin =
      post(d.port(), headers(kFull, session),
           rpc(1, "tools/call", {{"name", "fs__echo"}, {"arguments", {{"text", "x"}}}}).dump());
  ASSERT_TRUE(twin && twin->status == 200);
  EXPECT_EQ(json::parse(twin->body)["error"]["code"], -32600);
  // The same id as a string is another id.
  auto other =
      post(d.port(), headers(kFull, session),
           rpc("1", "tools/call", {{"name", "fs__echo"}, {"arguments", {{"text", "x"}}}}).dump());
  ASSERT_TRUE(other && other->status == 200);
  EXPECT_EQ(json::parse(other->body)["result"]["content"][0]["text"], "x");
  auto c = post(d.port(), headers(kFull, session),
                notification("notifications/cancelled", {{"requestId", 1}}).dump());
  ASSERT_TRUE(c && c->status == 202);
  auto r = conn->read_response(5s);
  ASSERT_TRUE(r);
  EXPECT_EQ(d.mux().slow_cancelled.load(), 1);
}

TEST(McpServer, AClientThatDisconnectsMidCallCancelsIt) {
  Agentd d;
  auto session = open_session(d.port(), kFull);
  {
    EventReader call(d.port(), build_request("POST", "/mcp", headers(kFull, session),
                                             slow_call(1, {{"ticks", 1}, {"hold", 30000}})));
    ASSERT_TRUE(call.head && call.head->status == 200);
    ASSERT_TRUE(call.until([](const auto& ev) { return count_progress(ev) >= 1; }));
    call.disconnect();
  }
  // Noticed at the next keepalive write, then cancelled once the resume grace (3 s) passes.
  EXPECT_TRUE(eventually([&] { return d.mux().slow_cancelled.load() == 1; }, 10s));
  EXPECT_EQ(d.mux().slow_finished.load(), 0);
}

TEST(McpServer, AnInterruptedCallStreamResumesWithLastEventId) {
  Agentd d;
  auto session = open_session(d.port(), kFull, "2025-11-25");
  auto h = headers(kFull, session, kBoth, "2025-11-25");
  std::string last_id;
  {
    EventReader call(d.port(), build_request("POST", "/mcp", h,
                                             slow_call(3, {{"ticks", 4}, {"interval", 150}})));
    ASSERT_TRUE(call.head && call.head->status == 200);
    ASSERT_TRUE(call.until([](const auto& ev) { return count_progress(ev) >= 1; }));
    for (const auto& e : call.events) {
      if (!e.data.empty()) last_id = e.id;  // the first progress event
    }
    call.disconnect();
  }
  ASSERT_FALSE(last_id.empty());
  Hdrs get = headers(kFull, session, "text/event-stream", "2025-11-25");
  get.emplace_back("Last-Event-ID", last_id);
  EventReader resumed(d.port(), build_request("GET", "/mcp", get));
  ASSERT_TRUE(resumed.head);
  ASSERT_EQ(resumed.head->status, 200);
  ASSERT_TRUE(resumed.wait_end(5s));
  auto msgs = messages(resumed.events);
  ASSERT_EQ(msgs.size(), 4u);  // progress 2..4, then the response
  for (int i = 0; i < 3; ++i) EXPECT_EQ(msgs[i]["params"]["progress"], i + 2);
  EXPECT_EQ(msgs[3]["id"], 3);
  EXPECT_EQ(msgs[3]["result"]["content"][0]["text"], "slow done");
  EXPECT_EQ(d.mux().slow_cancelled.load(), 0);

  // Resuming after the response: nothing left, and 204 tells the client to stop.
  Hdrs after = headers(kFull, session, "text/event-stream", "2025-11-25");
  after.emplace_back("Last-Event-ID", resumed.events.back().id);
  auto done = request(d.port(), "GET", "/mcp", after);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->status, 204);
}

TEST(McpServer, GetStreamReceivesListChangedAndReplaysMissedOnes) {
  Agentd d;
  auto a = open_session(d.port(), kFull);
  auto b = open_session(d.port(), kFsOnly);
  auto bad_accept = request(d.port(), "GET", "/mcp", headers(kFull, a, "application/json"));
  ASSERT_TRUE(bad_accept);
  EXPECT_EQ(bad_accept->status, 406);

  EventReader sa(d.port(), build_request("GET", "/mcp", headers(kFull, a, "text/event-stream")));
  EventReader sb(d.port(), build_request("GET", "/mcp", headers(kFsOnly, b, "text/event-stream")));
  ASSERT_TRUE(sa.head && sb.head);
  ASSERT_EQ(sa.head->status, 200);
  ASSERT_EQ(sb.head->status, 200);
  EXPECT_EQ(sa.head->header("content-type"), "text/event-stream");
  d.tools_changed();
  auto changed = [](const auto& ev) { return has_method(ev, "notifications/tools/list_changed"); };
  ASSERT_TRUE(sa.until(changed));
  ASSERT_TRUE(sb.until(changed));
  std::string seen = sa.events.back().id;
  ASSERT_FALSE(seen.empty());

  // Drop the stream, miss one, come back with Last-Event-ID: it is replayed.
  sa.disconnect();
  d.tools_changed();
  ASSERT_TRUE(sb.until([](const auto& ev) {
    std::size_t n = 0;
    for (const auto& m : messages(ev))
      n += m.value("method", std::string()) == "notifications/tools/list_changed";
    return n >= 2;
  }));
  Hdrs resume = headers(kFull, a, "text/event-stream");
  resume.emplace_back("Last-Event-ID", seen);
  EventReader again(d.port(), build_request("GET", "/mcp", resume));
  ASSERT_TRUE(again.head && again.head->status == 200);
  ASSERT_TRUE(again.until(changed));
  EXPECT_NE(again.events.back().id, seen);
}

TEST(McpServer, DeleteEndsTheSession) {
  Agentd d;
  auto session = open_session(d.port(), kFull);
  EventReader listening(d.port(),
                        build_request("GET", "/mcp", headers(kFull, session, "text/event-stream")));
  ASSERT_TRUE(listening.head && listening.head->status == 200);
  auto del = request(d.port(), "DELETE", "/mcp", headers(kFull, session));
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 204);
  EXPECT_TRUE(listening.wait_end(5s));  // its GET stream ends too
  auto after = post(d.port(), headers(kFull, session), rpc(1, "tools/list").dump());
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 404);
  auto twice = request(d.port(), "DELETE", "/mcp", headers(kFull, session));
  ASSERT_TRUE(twice);
  EXPECT_EQ(twice->status, 404);
  auto no_header = request(d.port(), "DELETE", "/mcp", headers(kFull));
  ASSERT_TRUE(no_header);
  EXPECT_EQ(no_header->status, 400);
}

TEST(McpServer, DeletingASessionCancelsItsCalls) {
  Agentd d;
  auto session = open_session(d.port(), kFull);
  EventReader call(d.port(), build_request("POST", "/mcp", headers(kFull, session),
                                           slow_call(1, {{"ticks", 1}, {"hold", 20000}})));
  ASSERT_TRUE(call.until([](const auto& ev) { return count_progress(ev) >= 1; }));
  auto del = request(d.port(), "DELETE", "/mcp", headers(kFull, session));
  ASSERT_TRUE(del && del->status == 204);
  EXPECT_TRUE(eventually([&] { return d.mux().slow_cancelled.load() == 1; }, 5s));
  EXPECT_TRUE(call.wait_end(5s));
}

TEST(McpServer, MaxSessionsIsEnforced) {
  api::McpServerOptions options;
  options.max_sessions = 2;
  Agentd d(options);
  auto a = open_session(d.port(), kFull);
  auto b = open_session(d.port(), kFsOnly);
  auto third =
      post(d.port(), headers(kFull), rpc(9, "initialize", init_params("2025-06-18")).dump());
  ASSERT_TRUE(third);
  EXPECT_EQ(third->status, 503);
  auto j = json::parse(third->body);
  EXPECT_EQ(j["id"], 9);
  EXPECT_TRUE(j.contains("error"));
  EXPECT_TRUE(third->header("mcp-session-id").empty());
  auto del = request(d.port(), "DELETE", "/mcp", headers(kFull, a));
  ASSERT_TRUE(del && del->status == 204);
  auto fourth =
      post(d.port(), headers(kFull), rpc(10, "initialize", init_params("2025-06-18")).dump());
  ASSERT_TRUE(fourth);
  EXPECT_EQ(fourth->status, 200);
}

TEST(McpServer, IdleSessionsExpire) {
  api::McpServerOptions options;
  options.session_idle = 200ms;
  options.max_sessions = 1;
  Agentd d(options);
  auto a = open_session(d.port(), kFull);
  std::this_thread::sleep_for(400ms);  // let it go idle
  auto r = post(d.port(), headers(kFull, a), rpc(1, "ping").dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  // The slot is free again.
  auto b = open_session(d.port(), kFull);
  EXPECT_FALSE(b.empty());
}

TEST(McpServer, AClientAcceptingOnlyEventStreamsGetsStreamedAnswers) {
  Agentd d;
  auto r = post(d.port(), headers(kFull, {}, "text/event-stream"),
                rpc(1, "initialize", init_params("2025-06-18")).dump());
  ASSERT_TRUE(r && r->status == 200);
  EXPECT_EQ(r->header("content-type"), "text/event-stream");
  EXPECT_FALSE(r->header("mcp-session-id").empty());
  auto msgs = messages(parse_events(r->body));
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0]["result"]["protocolVersion"], "2025-06-18");
  auto list = post(d.port(), headers(kFull, r->header("mcp-session-id"), "text/event-stream"),
                   rpc(2, "tools/list").dump());
  ASSERT_TRUE(list && list->status == 200);
  auto events = parse_events(list->body);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_FALSE(events[0].id.empty());
  EXPECT_EQ(json::parse(events[0].data)["result"]["tools"].size(), 5u);
}

}  // namespace
}  // namespace agentd::test

namespace agentd::test {
namespace {

TEST(McpServer, ResourcesAndPromptsAreServedAndFilteredByScopes) {
  Agentd d;
  auto r = post(d.port(), headers(kFull), rpc(1, "initialize", init_params("2025-06-18")).dump());
  ASSERT_TRUE(r && r->status == 200);
  auto caps = json::parse(r->body)["result"]["capabilities"];
  EXPECT_EQ(caps["resources"]["listChanged"], true);
  EXPECT_EQ(caps["prompts"]["listChanged"], true);

  auto fs = open_session(d.port(), kFsOnly);
  auto list = post(d.port(), headers(kFsOnly, fs), rpc(2, "resources/list").dump());
  ASSERT_TRUE(list && list->status == 200);
  EXPECT_EQ(json::parse(list->body)["result"]["resources"][0]["uri"], "file:///srv/readme.md");
  auto tpl = post(d.port(), headers(kFsOnly, fs), rpc(3, "resources/templates/list").dump());
  EXPECT_EQ(json::parse(tpl->body)["result"]["resourceTemplates"][0]["uriTemplate"],
            "file:///srv/{path}");
  auto read = post(d.port(), headers(kFsOnly, fs),
                   rpc(4, "resources/read", {{"uri", "file:///srv/a.txt"}}).dump());
  EXPECT_EQ(json::parse(read->body)["result"]["contents"][0]["text"], "# hello");
  auto prompts = post(d.port(), headers(kFsOnly, fs), rpc(5, "prompts/list").dump());
  EXPECT_EQ(json::parse(prompts->body)["result"]["prompts"][0]["name"], "fs__review");
  auto got = post(d.port(), headers(kFsOnly, fs),
                  rpc(6, "prompts/get", {{"name", "fs__review"}, {"arguments", {{"file", "a.c"}}}})
                      .dump());
  EXPECT_EQ(json::parse(got->body)["result"]["messages"][0]["content"]["text"], "review a.c");
  auto bad = post(d.port(), headers(kFsOnly, fs), rpc(7, "resources/read", json::object()).dump());
  EXPECT_EQ(json::parse(bad->body)["error"]["code"], -32602);

  // web may call web__fetch only: no resources, no prompts, and reading or getting fails.
  auto web = open_session(d.port(), kWebOnly);
  auto none = post(d.port(), headers(kWebOnly, web), rpc(8, "resources/list").dump());
  EXPECT_TRUE(json::parse(none->body)["result"]["resources"].empty());
  auto no_prompts = post(d.port(), headers(kWebOnly, web), rpc(9, "prompts/list").dump());
  EXPECT_TRUE(json::parse(no_prompts->body)["result"]["prompts"].empty());
  auto denied = post(d.port(), headers(kWebOnly, web),
                     rpc(10, "resources/read", {{"uri", "file:///srv/a.txt"}}).dump());
  EXPECT_EQ(json::parse(denied->body)["error"]["code"], -32002);
  auto hidden = post(d.port(), headers(kWebOnly, web),
                     rpc(11, "prompts/get", {{"name", "fs__review"}}).dump());
  EXPECT_EQ(json::parse(hidden->body)["error"]["code"], -32602);
  EXPECT_EQ(json::parse(hidden->body)["error"]["message"], "Unknown prompt: fs__review");
}

TEST(McpServer, ResourceAndPromptListChangesReachTheGetStream) {
  Agentd d;
  auto session = open_session(d.port(), kFull);
  std::string get = "GET /mcp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kFull) +
                    "\r\nAccept: text/event-stream\r\nMcp-Session-Id: " + session + "\r\n\r\n";
  EventReader stream(d.port(), get);
  ASSERT_TRUE(stream.head && stream.head->status == 200);
  d.list_changed("notifications/resources/list_changed");
  d.list_changed("notifications/prompts/list_changed");
  EXPECT_TRUE(stream.until([](const auto& ev) {
    return has_method(ev, "notifications/resources/list_changed") &&
           has_method(ev, "notifications/prompts/list_changed");
  }));
}

TEST(McpServer, ElicitationIsRelayedToAClientThatDeclaredIt) {
  Agentd d;
  auto session = open_session(d.port(), kFull, "2025-06-18", {{"elicitation", json::object()}});
  // No progress token: the call still becomes a stream, since the client may be asked.
  auto body = rpc(21, "tools/call", {{"name", "fs__ask"}, {"arguments", json::object()}}).dump();
  std::string req = "POST /mcp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kFull) +
                    "\r\nAccept: " + kBoth + "\r\nContent-Type: application/json\r\n"
                    "Mcp-Session-Id: " + session + "\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\n\r\n" + body;
  EventReader call(d.port(), req);
  ASSERT_TRUE(call.head && call.head->status == 200);
  ASSERT_TRUE(call.until([](const auto& ev) { return has_method(ev, "elicitation/create"); }));
  json asked;
  for (const auto& m : messages(call.events)) {
    if (m.value("method", std::string()) == "elicitation/create") asked = m;
  }
  ASSERT_TRUE(asked.contains("id"));
  EXPECT_EQ(asked["params"]["message"], "Your name?");
  json response = {{"jsonrpc", "2.0"},
                   {"id", asked["id"]},
                   {"result", {{"action", "accept"}, {"content", {{"name", "Ada"}}}}}};
  auto ack = post(d.port(), headers(kFull, session), response.dump());
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->status, 202);
  ASSERT_TRUE(call.until([](const auto& ev) { return has_response(ev); }));
  json result;
  for (const auto& m : messages(call.events)) {
    if (m.contains("result")) result = m;
  }
  EXPECT_EQ(result["id"], 21);
  auto text = result["result"]["content"][0]["text"].get<std::string>();
  EXPECT_NE(text.find("\"accept\""), std::string::npos) << text;
  EXPECT_NE(text.find("Ada"), std::string::npos) << text;
}

TEST(McpServer, AClientThatDidNotDeclareElicitationIsNotAsked) {
  Agentd d;
  auto session = open_session(d.port(), kFull);
  auto r = post(d.port(), headers(kFull, session),
                rpc(22, "tools/call", {{"name", "fs__ask"}, {"arguments", json::object()}}).dump());
  ASSERT_TRUE(r && r->status == 200);
  EXPECT_EQ(r->header("content-type"), "application/json");
  EXPECT_EQ(json::parse(r->body)["result"]["content"][0]["text"], "no one to ask: declined");
}

TEST(McpServer, AnElicitationUnansweredWhenTheSessionEndsIsCancelled) {
  Agentd d;
  auto session = open_session(d.port(), kFull, "2025-11-25", {{"elicitation", {{"form", json::object()}}}});
  auto body = rpc(23, "tools/call", {{"name", "fs__ask"}, {"arguments", json::object()}}).dump();
  std::string req = "POST /mcp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kFull) +
                    "\r\nAccept: " + kBoth + "\r\nContent-Type: application/json\r\n"
                    "Mcp-Session-Id: " + session + "\r\nMCP-Protocol-Version: 2025-11-25\r\n"
                    "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  EventReader call(d.port(), req);
  ASSERT_TRUE(call.until([](const auto& ev) { return has_method(ev, "elicitation/create"); }));
  Hdrs h = headers(kFull, session);
  auto del = request(d.port(), "DELETE", "/mcp", h, "");
  ASSERT_TRUE(del && del->status == 204);
  EXPECT_TRUE(call.wait_end());
  EXPECT_FALSE(has_response(call.events));  // the call was withdrawn with its session
}

}  // namespace
}  // namespace agentd::test
