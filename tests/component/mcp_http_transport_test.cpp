// The Streamable HTTP and legacy HTTP+SSE transports: against the real server-everything
// (tests/interop), against scripted in-process servers for the faults (resume, lost session,
// errors, deadlines, floods), and their pure helpers.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "agentd/net/client.hpp"
#include "agentd/net/server.hpp"
#include "agentd/net/sse.hpp"
#include "support/process.hpp"
// Private headers of agentd_mcp (this target has no src/ include path).
#include "mcp/http_transport_util.hpp"
#include "mcp/transport.hpp"

namespace agentd::test {
namespace {

namespace asio = boost::asio;
namespace hd = mcp::http_detail;
using namespace std::chrono_literals;
using mcp::json;
using mcp::Transport;

// ---------------------------------------------------------------------------------------------
// Pure helpers.

TEST(McpHttpHelpers, ResolvesTheEndpointEventAgainstTheSseUrl) {
  const std::string sse = "http://127.0.0.1:8931/sse";
  EXPECT_EQ(hd::resolve_endpoint(sse, "/message?sessionId=ab-12"),
            "http://127.0.0.1:8931/message?sessionId=ab-12");
  EXPECT_EQ(hd::resolve_endpoint(sse, "  /message?sessionId=1\n"),
            "http://127.0.0.1:8931/message?sessionId=1");
  EXPECT_EQ(hd::resolve_endpoint("https://mcp.example.com/v1/sse?key=k", "messages?s=2"),
            "https://mcp.example.com/v1/messages?s=2");
  EXPECT_EQ(hd::resolve_endpoint("https://mcp.example.com/v1/sse", "../post"),
            "https://mcp.example.com/post");
  EXPECT_EQ(hd::resolve_endpoint("https://mcp.example.com/v1/sse", "?sessionId=3"),
            "https://mcp.example.com/v1/sse?sessionId=3");
  EXPECT_EQ(hd::resolve_endpoint("https://mcp.example.com/sse", "HTTPS://mcp.example.com:443/m"),
            "https://mcp.example.com/m");
  EXPECT_EQ(hd::resolve_endpoint("http://[::1]:9000/sse", "/m"), "http://[::1]:9000/m");
  // Elsewhere: refused (the POSTs carry the configured credentials).
  EXPECT_EQ(hd::resolve_endpoint(sse, "http://evil.example/message"), std::nullopt);
  EXPECT_EQ(hd::resolve_endpoint(sse, "//evil.example/message"), std::nullopt);
  EXPECT_EQ(hd::resolve_endpoint(sse, "https://127.0.0.1:8931/message"), std::nullopt);
  EXPECT_EQ(hd::resolve_endpoint(sse, "javascript:alert(1)"), std::nullopt);
  EXPECT_EQ(hd::resolve_endpoint(sse, ""), std::nullopt);
  EXPECT_EQ(hd::resolve_endpoint(sse, "/a b"), std::nullopt);
  EXPECT_EQ(hd::resolve_endpoint("not a url", "/m"), std::nullopt);
}

TEST(McpHttpHelpers, ClassifiesTheAnswerToAPost) {
  using A = hd::PostAnswer;
  EXPECT_EQ(hd::classify_post(202, "", true), A::accepted);
  EXPECT_EQ(hd::classify_post(204, "application/json", false), A::accepted);
  EXPECT_EQ(hd::classify_post(200, "", false), A::accepted);
  EXPECT_EQ(hd::classify_post(200, "application/json; charset=utf-8", true), A::json_body);
  EXPECT_EQ(hd::classify_post(200, "Text/Event-Stream", true), A::event_stream);
  EXPECT_EQ(hd::classify_post(200, "text/html", true), A::unexpected);
  EXPECT_EQ(hd::classify_post(404, "application/json", true), A::session_gone);
  EXPECT_EQ(hd::classify_post(404, "application/json", false), A::http_error);
  EXPECT_EQ(hd::classify_post(400, "application/json", true), A::http_error);
  EXPECT_EQ(hd::classify_post(500, "text/plain", true), A::http_error);
  EXPECT_EQ(hd::classify_post(302, "", true), A::http_error);
  EXPECT_EQ(hd::media_type(" application/JSON ;charset=utf-8"), "application/json");
}

TEST(McpHttpHelpers, ParsesSingleMessagesAndBatches) {
  auto one = hd::parse_messages(R"({"jsonrpc":"2.0","id":1,"result":{}})");
  ASSERT_EQ(one.messages.size(), 1u);
  EXPECT_TRUE(one.error.empty());
  auto batch = hd::parse_messages(R"([{"jsonrpc":"2.0","method":"a"}, 3, {"id":2,"result":1}])");
  ASSERT_EQ(batch.messages.size(), 2u);
  EXPECT_EQ(batch.skipped, 1u);
  EXPECT_EQ(batch.messages[1]["id"], 2);
  EXPECT_TRUE(hd::parse_messages("  \n").messages.empty());
  EXPECT_FALSE(hd::parse_messages("{oops").error.empty());
  EXPECT_EQ(hd::parse_messages("\"text\"").skipped, 1u);

  EXPECT_TRUE(hd::answers(json{{"jsonrpc", "2.0"}, {"id", 7}, {"result", json::object()}}, 7));
  EXPECT_TRUE(hd::answers(json{{"id", "x"}, {"error", {{"code", 1}}}}, "x"));
  EXPECT_FALSE(hd::answers(json{{"id", 7}, {"result", 1}}, 8));
  EXPECT_FALSE(hd::answers(json{{"id", 7}, {"method", "ping"}}, 7));  // a request, not an answer
  EXPECT_FALSE(hd::answers(json{{"method", "notifications/progress"}}, 7));
}

TEST(McpHttpHelpers, SnippetsAreBoundedCleanUtf8) {
  EXPECT_EQ(hd::snippet("  error:\r\n\tbad   thing \n"), "error: bad thing");
  auto long_one = hd::snippet(std::string(1000, 'x'), 50);
  EXPECT_EQ(long_one, std::string(50, 'x') + "...");
  // A cut never splits "é" (2 bytes); invalid bytes become '?'.
  EXPECT_EQ(hd::snippet("abc\xC3\xA9", 4), "abc...");
  EXPECT_EQ(hd::snippet(std::string("a\xFF") + "b\xC3"), "a?b?");
  EXPECT_EQ(hd::snippet("\xE2\x82\xAC ok"), "\xE2\x82\xAC ok");
}

TEST(McpHttpHelpers, TellsASessionComplaintFromOtherBadRequests) {
  EXPECT_TRUE(hd::blames_session(
      400, R"({"error":{"code":-32000,"message":"Bad Request: No valid session ID provided"}})"));
  EXPECT_FALSE(hd::blames_session(400, R"({"error":{"message":"Invalid params"}})"));
  EXPECT_FALSE(hd::blames_session(500, "session store unavailable"));
}

TEST(McpHttpHelpers, HeaderValuesAreBase64WrappedWhenNotPlainAscii) {
  EXPECT_EQ(hd::header_safe("echo"), "echo");
  EXPECT_EQ(hd::header_safe("demo://resource/a b"), "demo://resource/a b");
  EXPECT_EQ(hd::header_safe("caf\xc3\xa9"), "=?base64?Y2Fmw6k=?=");
  EXPECT_EQ(hd::header_safe(" lead"), "=?base64?IGxlYWQ=?=");
  EXPECT_EQ(hd::header_safe("a\nb"), "=?base64?YQpi?=");
  EXPECT_EQ(hd::header_safe("=?base64?x?="), "=?base64?PT9iYXNlNjQ/eD89?=");
}

TEST(McpHttpHelpers, TheDiscoverProbeTellsTheEra) {
  json id = "agentd-discover";
  json modern = {{"jsonrpc", "2.0"}, {"id", id},
                 {"result", {{"supportedVersions", {"2026-07-28"}}, {"capabilities", json::object()}}}};
  auto v = hd::classify_discover(200, {modern}, id);
  EXPECT_EQ(v.kind, hd::EraVerdict::stateless);
  EXPECT_EQ(v.discover["supportedVersions"][0], "2026-07-28");
  // server-everything (SDK 1.x) over HTTP, and mcp-proxy without its modern leg.
  json not_init = {{"jsonrpc", "2.0"}, {"id", nullptr},
                   {"error", {{"code", -32000}, {"message", "Bad Request: Server not initialized"}}}};
  EXPECT_EQ(hd::classify_discover(400, {not_init}, id).kind, hd::EraVerdict::stateful);
  json unknown = {{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", -32601}, {"message", "Method not found"}}}};
  EXPECT_EQ(hd::classify_discover(200, {unknown}, id).kind, hd::EraVerdict::stateful);
  json other_version = {{"jsonrpc", "2.0"}, {"id", id},
                        {"error", {{"code", -32022}, {"data", {{"supported", {"2027-01-01"}}}}}}};
  EXPECT_EQ(hd::classify_discover(400, {other_version}, id).kind, hd::EraVerdict::stateful);
  EXPECT_EQ(hd::classify_discover(405, {}, id).kind, hd::EraVerdict::stateful);
  // No evidence: credentials, server errors, an empty 2xx.
  EXPECT_EQ(hd::classify_discover(401, {}, id).kind, hd::EraVerdict::error);
  EXPECT_NE(hd::classify_discover(403, {}, id).why.find("403"), std::string::npos);
  EXPECT_EQ(hd::classify_discover(503, {not_init}, id).kind, hd::EraVerdict::error);
  EXPECT_EQ(hd::classify_discover(200, {}, id).kind, hd::EraVerdict::error);
}

TEST(McpHttpHelpers, SessionIdsAndBackoff) {
  EXPECT_TRUE(hd::valid_session_id("1868a90c-47f1-4b5e"));
  EXPECT_FALSE(hd::valid_session_id(""));
  EXPECT_FALSE(hd::valid_session_id("has space"));
  EXPECT_FALSE(hd::valid_session_id("tab\there"));
  EXPECT_FALSE(hd::valid_session_id(std::string(2000, 'a')));
  EXPECT_EQ(hd::backoff(0, 250ms, 30s), 250ms);
  EXPECT_EQ(hd::backoff(3, 250ms, 30s), 2000ms);
  EXPECT_EQ(hd::backoff(40, 250ms, 30s), 30s);
  // The server's retry: exactly the first time, a floor later, never beyond the cap.
  EXPECT_EQ(hd::reconnect_delay(0, std::nullopt, 250ms, 30s), 250ms);
  EXPECT_EQ(hd::reconnect_delay(0, 20, 250ms, 30s), 20ms);
  EXPECT_EQ(hd::reconnect_delay(2, 20, 250ms, 30s), 1000ms);
  EXPECT_EQ(hd::reconnect_delay(1, 5000, 250ms, 30s), 5000ms);
  EXPECT_EQ(hd::reconnect_delay(0, 999'999'999, 250ms, 30s), 30s);
}

// ---------------------------------------------------------------------------------------------
// Harness.

// Runs one coroutine (given the shared HTTP client) on a fresh loop, with a hard time limit.
// `body` outlives the coroutine (it is this function's parameter), so capturing is safe.
template <class F>
auto run(F body, std::chrono::seconds limit = 40s) {
  asio::io_context io(1);
  core::Registry metrics;
  auto client = net::make_http_client(io.get_executor(), {}, metrics);
  using R = typename decltype(body(*client))::value_type;
  std::optional<R> out;
  std::exception_ptr failure;
  bool done = false;
  asio::co_spawn(io, body(*client), [&](std::exception_ptr e, R r) {
    done = true;
    if (e) {
      failure = e;
    } else {
      out = std::move(r);
    }
    io.stop();
  });
  io.run_for(limit);
  EXPECT_TRUE(done) << "coroutine did not finish within " << limit.count() << "s";
  if (failure) std::rethrow_exception(failure);
  return out.value_or(R{});
}

asio::awaitable<void> nap(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

json request(int id, const std::string& method, json params = json::object()) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", std::move(params)}};
}

json notification(const std::string& method) { return {{"jsonrpc", "2.0"}, {"method", method}}; }

// Reads messages until the response to `id`; the ones before it go to `before`. An error
// object {"transport_error": ...} when the transport fails.
asio::awaitable<json> response_to(Transport& t, json id, std::vector<json>* before = nullptr) {
  for (;;) {
    auto m = co_await t.receive();
    if (!m) co_return json{{"transport_error", m.error().message}};
    if (hd::answers(*m, id)) co_return *m;
    if (before) before->push_back(std::move(*m));
  }
}

std::string send_error(const mcp::TResult<void>& r) { return r ? "" : r.error().message; }

// initialize + notifications/initialized; returns the InitializeResult or an error text.
asio::awaitable<json> handshake(Transport& t, std::string version) {
  auto started = co_await t.start();
  if (!started) co_return json{{"error", started.error().message}};
  json params = {{"protocolVersion", version},
                 {"capabilities", json::object()},
                 {"clientInfo", {{"name", "agentd-test"}, {"version", "0"}}}};
  auto sent = co_await t.send(request(1, "initialize", std::move(params)));
  if (!sent) co_return json{{"error", sent.error().message}};
  auto r = co_await response_to(t, 1);
  if (!r.contains("result")) co_return json{{"error", r.dump()}};
  t.set_protocol_version(r["result"].value("protocolVersion", version));
  auto note = co_await t.send(notification("notifications/initialized"));
  if (!note) co_return json{{"error", note.error().message}};
  co_return r["result"];
}

// ---------------------------------------------------------------------------------------------
// The real @modelcontextprotocol/server-everything.

struct NodeServer {
  std::unique_ptr<Process> process;
  std::uint16_t port = 0;
  std::string stderr_file;
  std::string problem;  // why it is not running
};

NodeServer start_everything(const std::string& mode) {
  NodeServer s;
  const std::string dir = AGENTD_INTEROP_DIR;
  const std::string bin = dir + "/node_modules/.bin/mcp-server-everything";
  if (!std::filesystem::exists(bin)) {
    s.problem = bin + " is missing: run `npm ci` in tests/interop";
    return s;
  }
  s.port = free_loopback_port();
  s.stderr_file = (std::filesystem::temp_directory_path() /
                   ("agentd-everything-" + mode + "-" + std::to_string(::getpid()) + ".log"))
                      .string();
  s.process = std::make_unique<Process>(bin, std::vector<std::string>{mode},
                                        std::vector<std::string>{"PORT=" + std::to_string(s.port)},
                                        std::vector<std::string>{}, dir, s.stderr_file);
  // Readiness: the port accepts connections (polled, with a deadline).
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!accepts_connections(s.port)) {
    if (s.process->wait(0ms)) {
      s.problem = "server-everything " + mode + " exited; see " + s.stderr_file;
      return s;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      s.problem = "server-everything " + mode + " did not listen within 30s";
      return s;
    }
    std::this_thread::sleep_for(25ms);
  }
  return s;
}

// Skips what the server logged so far (earlier tests), so a wait finds this test's lines.
void drain(Process& p) {
  while (p.read_line(5ms)) {
  }
}

class Everything : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    http_ = new NodeServer(start_everything("streamableHttp"));
    sse_ = new NodeServer(start_everything("sse"));
  }
  static void TearDownTestSuite() {
    for (auto* s : {http_, sse_}) {
      if (s->process) {
        s->process->signal(SIGTERM);
        if (!s->process->wait(5s)) s->process->signal(SIGKILL);
      }
      if (!s->stderr_file.empty()) std::filesystem::remove(s->stderr_file);
      delete s;
    }
    http_ = sse_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(http_->problem.empty()) << http_->problem;
    ASSERT_TRUE(sse_->problem.empty()) << sse_->problem;
  }

  static mcp::ServerConfig config(mcp::TransportKind kind) {
    mcp::ServerConfig c;
    c.name = "everything";
    c.transport = kind;
    c.url = kind == mcp::TransportKind::sse
                ? "http://127.0.0.1:" + std::to_string(sse_->port) + "/sse"
                : "http://127.0.0.1:" + std::to_string(http_->port) + "/mcp";
    c.init_timeout = 20s;
    c.call_timeout = 20s;
    return c;
  }

  static inline NodeServer* http_ = nullptr;
  static inline NodeServer* sse_ = nullptr;
};

std::string text_of(const json& response) {
  try {
    return response.at("result").at("content").at(0).at("text").get<std::string>();
  } catch (...) {
    return "no text in " + response.dump();
  }
}

bool lists_tool(const json& response, const std::string& name) {
  if (!response.contains("result")) return false;
  for (const auto& t : response["result"].value("tools", json::array())) {
    if (t.value("name", "") == name) return true;
  }
  return false;
}

// Every Streamable HTTP revision (2025-11-25 adds priming events with empty data).
class EverythingRevisions : public Everything, public ::testing::WithParamInterface<const char*> {};

TEST_P(EverythingRevisions, InitializesListsAndCallsEcho) {
  auto cfg = config(mcp::TransportKind::streamable_http);
  const std::string version = GetParam();
  auto out = run([&](net::HttpClient& client) -> asio::awaitable<std::vector<std::string>> {
    std::vector<std::string> r;
    auto t = mcp::make_http_transport(co_await asio::this_coro::executor, cfg, client);
    r.push_back(t->describe());
    auto init = co_await handshake(*t, version);  // notifications/initialized → 202
    r.push_back(init.contains("error") ? "init: " + init.dump()
                                       : "version " + init.value("protocolVersion", "?"));
    // server-everything answers 400 to a request without its session id: these prove the
    // id was captured from the initialize answer and echoed.
    auto sent = co_await t->send(request(2, "tools/list"));
    r.push_back("list sent: " + send_error(sent));
    auto list = co_await response_to(*t, 2);
    r.push_back(lists_tool(list, "echo") ? "echo listed" : "no echo in " + list.dump());
    json args = {{"name", "echo"}, {"arguments", {{"message", "hi there"}}}};
    sent = co_await t->send(request(3, "tools/call", std::move(args)));
    r.push_back("call sent: " + send_error(sent));
    r.push_back(text_of(co_await response_to(*t, 3)));
    co_await t->close();
    co_return r;
  });
  ASSERT_EQ(out.size(), 6u) << ::testing::PrintToString(out);
  EXPECT_EQ(out[0], "http: " + cfg.url);
  EXPECT_EQ(out[1], "version " + version);
  EXPECT_EQ(out[2], "list sent: ");
  EXPECT_EQ(out[3], "echo listed");
  EXPECT_EQ(out[4], "call sent: ");
  EXPECT_EQ(out[5], "Echo: hi there");
}

INSTANTIATE_TEST_SUITE_P(Mcp, EverythingRevisions,
                         ::testing::Values("2025-03-26", "2025-06-18", "2025-11-25"));

TEST_F(Everything, ProgressArrivesBeforeTheResultAndCallsOverlap) {
  auto cfg = config(mcp::TransportKind::streamable_http);
  auto out = run([&](net::HttpClient& client) -> asio::awaitable<std::vector<std::string>> {
    std::vector<std::string> r;
    auto t = mcp::make_http_transport(co_await asio::this_coro::executor, cfg, client);
    auto init = co_await handshake(*t, "2025-06-18");
    if (init.contains("error")) co_return std::vector<std::string>{init.dump()};
    co_await t->send(request(2, "tools/list"));
    auto list = co_await response_to(*t, 2);
    std::string long_tool;
    for (const auto& tool : list["result"].value("tools", json::array())) {
      auto name = tool.value("name", "");
      if (name.find("long") != std::string::npos) long_tool = name;
    }
    if (long_tool.empty()) co_return std::vector<std::string>{"no long-running tool"};

    // The long call (SSE answer with progress), then an echo while it runs.
    json long_args = {{"name", long_tool},
                      {"arguments", {{"duration", 1}, {"steps", 3}}},
                      {"_meta", {{"progressToken", "tok-1"}}}};
    r.push_back("long: " + send_error(co_await t->send(request(10, "tools/call", long_args))));
    json echo_args = {{"name", "echo"}, {"arguments", {{"message", "meanwhile"}}}};
    r.push_back("echo: " + send_error(co_await t->send(request(11, "tools/call", echo_args))));

    std::vector<std::string> order;
    int progress = 0;
    bool progress_before_result = false;
    while (order.size() < 2) {
      auto m = co_await t->receive();
      if (!m) co_return std::vector<std::string>{"receive failed: " + m.error().message};
      if (m->value("method", "") == "notifications/progress" &&
          (*m)["params"].value("progressToken", "") == "tok-1") {
        ++progress;
      } else if (hd::answers(*m, 11)) {
        order.push_back("echo=" + text_of(*m));
      } else if (hd::answers(*m, 10)) {
        progress_before_result = progress == 3;
        order.push_back(text_of(*m).find("completed") != std::string::npos ? "long=done"
                                                                           : "long=" + m->dump());
      }
    }
    r.insert(r.end(), order.begin(), order.end());
    r.push_back("progress before result: " + std::string(progress_before_result ? "3" : "no"));
    co_await t->close();
    co_return r;
  });
  ASSERT_EQ(out.size(), 5u) << ::testing::PrintToString(out);
  EXPECT_EQ(out[0], "long: ");
  EXPECT_EQ(out[1], "echo: ");
  EXPECT_EQ(out[2], "echo=Echo: meanwhile");  // answered while the long call was running
  EXPECT_EQ(out[3], "long=done");
  EXPECT_EQ(out[4], "progress before result: 3");
}

TEST_F(Everything, ServerInitiatedMessagesArriveOnTheGetStream) {
  auto cfg = config(mcp::TransportKind::streamable_http);
  auto out = run([&](net::HttpClient& client) -> asio::awaitable<std::vector<std::string>> {
    std::vector<std::string> r;
    auto& log = *http_->process;
    drain(log);
    auto t = mcp::make_http_transport(co_await asio::this_coro::executor, cfg, client);
    auto init = co_await handshake(*t, "2025-06-18");
    if (init.contains("error")) co_return std::vector<std::string>{init.dump()};
    // The first log message goes out at once and is dropped unless the GET stream is there:
    // wait (polling, bounded) until the server logged it. Later ones come every 5 s anyway.
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline) {
      auto line = log.read_line(5ms);
      if (line && line->find("Establishing new SSE stream") != std::string::npos) break;
      if (!line) co_await nap(10ms);
    }
    // Simulated logging: log notifications unrelated to any request (so they can only come
    // on the GET stream), one at once and then every 5 s.
    json toggle = {{"name", "toggle-simulated-logging"}, {"arguments", json::object()}};
    r.push_back("toggle: " + send_error(co_await t->send(request(2, "tools/call", toggle))));
    bool answered = false, logged = false;
    while (!answered || !logged) {
      auto m = co_await t->receive();
      if (!m) co_return std::vector<std::string>{"receive failed: " + m.error().message};
      if (hd::answers(*m, 2)) answered = true;
      if (m->value("method", "") == "notifications/message") logged = true;
    }
    r.push_back("log message received");
    co_await t->send(request(3, "tools/call", toggle));  // stop it again
    co_await response_to(*t, 3);
    co_await t->close();
    co_return r;
  });
  EXPECT_EQ(out, (std::vector<std::string>{"toggle: ", "log message received"}));
}

TEST_F(Everything, CloseDeletesTheSessionAndFailsReceive) {
  auto cfg = config(mcp::TransportKind::streamable_http);
  drain(*http_->process);
  auto out = run([&](net::HttpClient& client) -> asio::awaitable<std::string> {
    auto t = mcp::make_http_transport(co_await asio::this_coro::executor, cfg, client);
    auto init = co_await handshake(*t, "2025-06-18");
    if (init.contains("error")) co_return init.dump();
    co_await t->close();
    auto m = co_await t->receive();
    auto again = co_await t->send(request(5, "ping"));
    co_return std::string(m ? "received after close" : "receive failed") + ", " +
        (again ? "sent after close" : "send failed");
  });
  EXPECT_EQ(out, "receive failed, send failed");
  // The server logs each DELETE it handles.
  EXPECT_TRUE(http_->process->wait_for_line("session termination", 10s))
      << "server-everything saw no DELETE";
}

TEST_F(Everything, LegacySseTransportInitializesListsAndEchoes) {
  auto cfg = config(mcp::TransportKind::sse);
  auto out = run([&](net::HttpClient& client) -> asio::awaitable<std::vector<std::string>> {
    std::vector<std::string> r;
    auto t = mcp::make_sse_transport(co_await asio::this_coro::executor, cfg, client);
    r.push_back(t->describe());
    auto init = co_await handshake(*t, "2024-11-05");
    r.push_back(init.contains("error") ? "init: " + init.dump()
                                       : "version " + init.value("protocolVersion", "?"));
    co_await t->send(request(2, "tools/list"));
    r.push_back(lists_tool(co_await response_to(*t, 2), "echo") ? "echo listed" : "no echo");
    json args = {{"name", "echo"}, {"arguments", {{"message", "old school"}}}};
    r.push_back("call: " + send_error(co_await t->send(request(3, "tools/call", args))));
    r.push_back(text_of(co_await response_to(*t, 3)));
    co_await t->close();
    auto m = co_await t->receive();
    r.push_back(m ? "received after close" : "closed");
    co_return r;
  });
  ASSERT_EQ(out.size(), 6u) << ::testing::PrintToString(out);
  EXPECT_EQ(out[0], "sse: " + cfg.url);
  EXPECT_EQ(out[1], "version 2024-11-05");
  EXPECT_EQ(out[2], "echo listed");
  EXPECT_EQ(out[3], "call: ");
  EXPECT_EQ(out[4], "Echo: old school");
  EXPECT_EQ(out[5], "closed");
}

// ---------------------------------------------------------------------------------------------
// Scripted servers for what a well-behaved server does not do on demand.

struct Seen {
  std::string method, session, version, accept, last_event_id, api_key, rpc_method;
};

asio::awaitable<void> events_then(std::shared_ptr<net::SseStream> s, std::vector<net::SseEvent> ev,
                                  bool drop) {
  for (auto& e : ev) s->push(std::move(e));
  if (!drop) co_return;  // the stream ends cleanly (the producer returns)
  // Let the events reach the client, then reset the connection mid-stream.
  co_await nap(200ms);
  s->close(net::SseStream::State::overflow);
}

net::SseEvent event(std::string id, const json& data, std::optional<int> retry = std::nullopt) {
  return net::SseEvent{.id = std::move(id), .event = {}, .data = data.dump(), .retry_ms = retry};
}

class FakeMcp {
 public:
  // session_gone: 404 for the session (the spec); session_gone_400: the TypeScript SDK
  // examples' 400 "No valid session ID provided".
  enum class Mode { normal, session_gone, session_gone_400 };

  explicit FakeMcp(Mode mode = Mode::normal) : mode_(mode) {
    net::ServerConfig config;
    config.listeners = {{"127.0.0.1", 0, false}};
    config.access_log = false;
    server_ = net::make_http_server(
        io_, config, [this](net::Request& req) { return handle(req); }, metrics_);
    port_ = server_->start().at(0).port;
    thread_ = std::thread([this] { io_.run(); });
  }
  ~FakeMcp() {
    io_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/mcp"; }
  std::vector<Seen> seen() const {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  asio::awaitable<net::Response> handle(net::Request& req) {
    json body = json::parse(req.body, nullptr, false);
    Seen s{req.method,
           std::string(req.headers.get("mcp-session-id").value_or("")),
           std::string(req.headers.get("mcp-protocol-version").value_or("")),
           std::string(req.headers.get("accept").value_or("")),
           std::string(req.headers.get("last-event-id").value_or("")),
           std::string(req.headers.get("x-api-key").value_or("")),
           body.is_object() ? body.value("method", "") : ""};
    int gets = 0;
    {
      std::lock_guard lock(mu_);
      seen_.push_back(s);
      if (req.method == "GET" && s.last_event_id.empty()) gets = ++standalone_gets_;
    }
    if (req.method == "DELETE") co_return net::Response::text(200, "");
    if (req.method == "GET") {
      if (s.last_event_id == "ev-1") {
        // The resumed stream of the POST that dropped: the response.
        json result = {{"content", {{{"type", "text"}, {"text", "resumed"}}}}};
        std::vector<net::SseEvent> ev{
            event("ev-2", {{"jsonrpc", "2.0"}, {"id", resume_id_}, {"result", result}})};
        co_return net::Response::stream([ev](std::shared_ptr<net::SseStream> st) {
          return events_then(std::move(st), ev, false);
        });
      }
      // The standalone stream: two short-lived ones, then 405 (no more).
      if (gets > 2) co_return net::Response::error(405, "no GET stream");
      auto what =
          gets == 1 ? "notifications/tools/list_changed" : "notifications/resources/list_changed";
      std::vector<net::SseEvent> ev{event({}, {{"jsonrpc", "2.0"}, {"method", what}})};
      co_return net::Response::stream([ev](std::shared_ptr<net::SseStream> st) {
        return events_then(std::move(st), ev, false);
      });
    }
    if (!body.is_object()) co_return net::Response::error(400, "not JSON");
    if (s.rpc_method == "server/discover") {  // what a stateful-era SDK server answers
      json e = {{"jsonrpc", "2.0"},
                {"error", {{"code", -32000}, {"message", "Bad Request: Server not initialized"}}},
                {"id", nullptr}};
      co_return net::Response::json(400, e);
    }
    if (s.rpc_method == "initialize") {
      json result = {{"protocolVersion", "2025-06-18"},
                     {"capabilities", json::object()},
                     {"serverInfo", {{"name", "fake"}, {"version", "1"}}}};
      auto r =
          net::Response::json(200, {{"jsonrpc", "2.0"}, {"id", body["id"]}, {"result", result}});
      r.headers.set("Mcp-Session-Id", "fake-session-1");
      co_return r;
    }
    if (mode_ == Mode::session_gone) co_return net::Response::error(404, "session not found");
    if (mode_ == Mode::session_gone_400) {
      json e = {
          {"jsonrpc", "2.0"},
          {"error", {{"code", -32000}, {"message", "Bad Request: No valid session ID provided"}}},
          {"id", nullptr}};
      co_return net::Response::json(400, e);
    }
    if (!body.contains("id")) {
      net::Response r;
      r.status = 202;
      co_return r;
    }
    const json id = body["id"];
    if (s.rpc_method == "tools/list") {
      // A JSON batch: a notification and the response.
      json batch =
          json::array({{{"jsonrpc", "2.0"},
                        {"method", "notifications/message"},
                        {"params", {{"level", "info"}, {"data", "listing"}}}},
                       {{"jsonrpc", "2.0"}, {"id", id}, {"result", {{"tools", json::array()}}}}});
      co_return net::Response::json(200, batch);
    }
    const std::string tool = body["params"].value("name", "");
    if (tool == "resume-after-drop" || tool == "resume-after-end") {
      resume_id_ = id;
      json progress = {{"jsonrpc", "2.0"},
                       {"method", "notifications/progress"},
                       {"params", {{"progressToken", "p"}, {"progress", 1}}}};
      std::vector<net::SseEvent> ev{event("ev-1", progress, 20)};
      bool drop = tool == "resume-after-drop";
      co_return net::Response::stream([ev, drop](std::shared_ptr<net::SseStream> st) {
        return events_then(std::move(st), ev, drop);
      });
    }
    if (tool == "unresumable") {  // no event ids: nothing to resume from
      std::vector<net::SseEvent> ev{event({}, {{"jsonrpc", "2.0"}, {"method", "notifications/x"}})};
      co_return net::Response::stream([ev](std::shared_ptr<net::SseStream> st) {
        return events_then(std::move(st), ev, false);
      });
    }
    if (tool == "explode") {
      co_return net::Response::text(500, "upstream exploded:\n" + std::string(5000, 'x'));
    }
    if (tool == "silent") {
      co_await nap(30s);
      co_return net::Response::json(200, {{"jsonrpc", "2.0"}, {"id", id}, {"result", {}}});
    }
    if (tool == "flood") {
      json batch = json::array();
      for (int i = 0; i < 10'001; ++i) {
        batch.push_back({{"jsonrpc", "2.0"}, {"method", "notifications/message"}});
      }
      co_return net::Response::json(200, batch);
    }
    co_return net::Response::error(400, "unknown tool");
  }

  Mode mode_;
  asio::io_context io_{1};
  core::Registry metrics_;
  std::unique_ptr<net::HttpServer> server_;
  std::uint16_t port_ = 0;
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<Seen> seen_;
  int standalone_gets_ = 0;
  json resume_id_;  // touched only on the server's thread
};

mcp::ServerConfig fake_config(const FakeMcp& fake) {
  mcp::ServerConfig c;
  c.name = "fake";
  c.transport = mcp::TransportKind::streamable_http;
  c.url = fake.url();
  c.headers = {{"X-Api-Key", "secret-key"}};
  c.init_timeout = 5s;
  c.call_timeout = 5s;
  return c;
}

json call(int id, const std::string& tool) {
  return request(id, "tools/call", {{"name", tool}, {"arguments", json::object()}});
}

TEST(McpHttpTransport, SendsTheProtocolHeadersAndFollowsTheGetStream) {
  FakeMcp fake;
  auto cfg = fake_config(fake);
  auto out = run([&](net::HttpClient& client) -> asio::awaitable<std::vector<std::string>> {
    std::vector<std::string> r;
    auto t = mcp::make_http_transport(co_await asio::this_coro::executor, cfg, client);
    r.push_back(t->describe());
    auto init = co_await handshake(*t, "2025-06-18");
    r.push_back(init.contains("error") ? init.dump() : "initialized");
    co_await t->send(request(2, "tools/list"));
    // The JSON batch answer, and what the two GET streams carried (in any order).
    std::set<std::string> got;
    while (got.size() < 4) {
      auto m = co_await t->receive();
      if (!m) co_return std::vector<std::string>{"receive failed: " + m.error().message};
      got.insert(m->contains("method") ? m->value("method", "") : "response " + (*m)["id"].dump());
    }
    r.insert(r.end(), got.begin(), got.end());
    co_await t->close();
    co_return r;
  });
  EXPECT_EQ(out,
            (std::vector<std::string>{"http: " + fake.url(), "initialized", "notifications/message",
                                      "notifications/resources/list_changed",
                                      "notifications/tools/list_changed", "response 2"}));
  auto seen = fake.seen();
  ASSERT_GE(seen.size(), 6u);
  // First the era probe (a stateful-era server refuses it), then initialize: no session yet,
  // no MCP-Protocol-Version (a modern one on initialize is refused), both media types
  // accepted, the configured header.
  EXPECT_EQ(seen[0].rpc_method, "server/discover");
  EXPECT_EQ(seen[0].version, "2026-07-28");
  EXPECT_EQ(seen[0].accept, "application/json, text/event-stream");
  EXPECT_EQ(seen[0].api_key, "secret-key");
  EXPECT_EQ(seen[1].rpc_method, "initialize");
  EXPECT_EQ(seen[1].session, "");
  EXPECT_EQ(seen[1].version, "");
  EXPECT_EQ(seen[1].accept, "application/json, text/event-stream");
  int posts = 0, gets = 0, deletes = 0;
  for (std::size_t i = 2; i < seen.size(); ++i) {
    const auto& s = seen[i];
    EXPECT_EQ(s.session, "fake-session-1") << s.method << " " << s.rpc_method;
    EXPECT_EQ(s.version, "2025-06-18") << s.method << " " << s.rpc_method;
    EXPECT_EQ(s.api_key, "secret-key");
    if (s.method == "POST") ++posts;
    if (s.method == "GET") {
      ++gets;
      EXPECT_EQ(s.accept, "text/event-stream");
    }
    if (s.method == "DELETE") ++deletes;
  }
  EXPECT_EQ(seen[1].api_key, "secret-key");
  EXPECT_EQ(posts, 2);  // notifications/initialized, tools/list
  EXPECT_GE(gets, 2);   // reconnected after the first stream ended
  EXPECT_LE(gets, 3);   // and stopped at 405
  EXPECT_EQ(deletes, 1);
}

class Resume : public ::testing::TestWithParam<const char*> {};

TEST_P(Resume, ADroppedPostStreamResumesWithLastEventId) {
  FakeMcp fake;
  auto cfg = fake_config(fake);
  const std::string tool = GetParam();
  auto out = run([&](net::HttpClient& client) -> asio::awaitable<std::vector<std::string>> {
    std::vector<std::string> r;
    auto t = mcp::make_http_transport(co_await asio::this_coro::executor, cfg, client);
    co_await t->start();
    r.push_back("sent: " + send_error(co_await t->send(call(7, tool))));
    std::vector<json> before;
    auto res = co_await response_to(*t, 7, &before);
    r.push_back(before.size() == 1 ? before[0].value("method", "")
                                   : "before: " + json(before).dump());
    r.push_back(text_of(res));
    co_await t->close();
    co_return r;
  });
  EXPECT_EQ(out, (std::vector<std::string>{"sent: ", "notifications/progress", "resumed"}));
  bool resumed = false;
  for (const auto& s : fake.seen()) {
    if (s.method == "GET" && s.last_event_id == "ev-1") resumed = true;
  }
  EXPECT_TRUE(resumed) << "no GET with Last-Event-ID: ev-1";
}

INSTANTIATE_TEST_SUITE_P(McpHttpTransport, Resume,
                         ::testing::Values("resume-after-drop", "resume-after-end"));

TEST(McpHttpTransport, AStreamWithoutEventIdsThatEndsEarlyYieldsAnErrorResponse) {
  FakeMcp fake;
  auto cfg = fake_config(fake);
  auto out = run([&](net::HttpClient& client) -> asio::awaitable<json> {
    auto t = mcp::make_http_transport(co_await asio::this_coro::executor, cfg, client);
    co_await t->start();
    co_await t->send(call(8, "unresumable"));
    auto res = co_await response_to(*t, 8);
    co_await t->close();
    co_return res;
  });
  ASSERT_TRUE(out.contains("error")) << out.dump();
  EXPECT_EQ(out["error"]["code"], -32000);
  EXPECT_NE(out["error"]["message"].get<std::string>().find("no event id"), std::string::npos)
      << out.dump();
}

class SessionGone : public ::testing::TestWithParam<FakeMcp::Mode> {};

TEST_P(SessionGone, TheErrorSaysTheSessionIsGone) {
  FakeMcp fake(GetParam());
  auto cfg = fake_config(fake);
  auto out = run([&](net::HttpClient& client) -> asio::awaitable<std::vector<std::string>> {
    std::vector<std::string> r;
    auto t = mcp::make_http_transport(co_await asio::this_coro::executor, cfg, client);
    co_await t->start();
    json init = request(1, "initialize", json{{"protocolVersion", "2025-06-18"}});
    co_await t->send(std::move(init));
    co_await response_to(*t, 1);
    t->set_protocol_version("2025-06-18");
    r.push_back(send_error(co_await t->send(request(2, "tools/list"))));
    auto m = co_await t->receive();  // the session above learns it from its reader too
    r.push_back(m ? "received " + m->dump() : m.error().message);
    r.push_back(send_error(co_await t->send(request(3, "tools/list"))));
    co_await t->close();
    co_return r;
  });
  ASSERT_EQ(out.size(), 3u);
  for (const auto& e : out) {
    EXPECT_NE(e.find("session is gone"), std::string::npos) << e;
    EXPECT_EQ(e.find("fake-session-1"), std::string::npos) << "leaks the session id: " << e;
  }
  for (const auto& s : fake.seen()) EXPECT_NE(s.method, "DELETE");  // nothing left to delete
}

INSTANTIATE_TEST_SUITE_P(McpHttpTransport, SessionGone,
                         ::testing::Values(FakeMcp::Mode::session_gone,
                                           FakeMcp::Mode::session_gone_400));

TEST(McpHttpTransport, AnHttpErrorCarriesTheStatusAndABoundedBody) {
  FakeMcp fake;
  auto cfg = fake_config(fake);
  auto out = run([&](net::HttpClient& client) -> asio::awaitable<std::string> {
    auto t = mcp::make_http_transport(co_await asio::this_coro::executor, cfg, client);
    co_await t->start();
    auto r = send_error(co_await t->send(call(4, "explode")));
    // The transport stays usable: one bad answer is that request's failure only.
    co_await t->send(request(5, "tools/list"));
    auto list = co_await response_to(*t, 5);
    co_await t->close();
    co_return r + (list.contains("result") ? " | still usable" : " | " + list.dump());
  });
  EXPECT_NE(out.find("500 Internal Server Error"), std::string::npos) << out;
  EXPECT_NE(out.find("upstream exploded: xxx"), std::string::npos) << out;
  EXPECT_NE(out.find("... | still usable"), std::string::npos) << out;
  EXPECT_LT(out.size(), 600u);
  EXPECT_EQ(out.find("secret-key"), std::string::npos);
}

TEST(McpHttpTransport, CallTimeoutBoundsAServerThatNeverAnswers) {
  FakeMcp fake;
  auto cfg = fake_config(fake);
  cfg.call_timeout = 300ms;
  auto started = std::chrono::steady_clock::now();
  auto out = run([&](net::HttpClient& client) -> asio::awaitable<std::string> {
    auto t = mcp::make_http_transport(co_await asio::this_coro::executor, cfg, client);
    co_await t->start();
    auto r = send_error(co_await t->send(call(6, "silent")));
    co_await t->close();
    co_return r;
  });
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_NE(out.find("timeout"), std::string::npos) << out;
  EXPECT_LT(took, 3s);
}

TEST(McpHttpTransport, AFloodOfMessagesFailsTheTransportInsteadOfGrowing) {
  FakeMcp fake;
  auto cfg = fake_config(fake);
  auto out = run([&](net::HttpClient& client) -> asio::awaitable<std::vector<std::string>> {
    std::vector<std::string> r;
    auto t = mcp::make_http_transport(co_await asio::this_coro::executor, cfg, client);
    co_await t->start();
    r.push_back(send_error(co_await t->send(call(9, "flood"))));
    std::size_t n = 0;
    for (;;) {
      auto m = co_await t->receive();
      if (!m) {
        r.push_back(std::to_string(n) + " then: " + m.error().message);
        break;
      }
      ++n;
    }
    co_await t->close();
    co_return r;
  });
  ASSERT_EQ(out.size(), 2u);
  EXPECT_NE(out[0].find("more than 10000 messages"), std::string::npos) << out[0];
  EXPECT_EQ(out[1].rfind("10000 then: ", 0), 0u) << out[1];
}

TEST(McpHttpTransport, LegacyTransportRefusesAnEndpointOnAnotherOrigin) {
  // A legacy server whose endpoint event points elsewhere.
  asio::io_context io(1);
  core::Registry metrics;
  net::ServerConfig config;
  config.listeners = {{"127.0.0.1", 0, false}};
  config.access_log = false;
  auto server = net::make_http_server(
      io, config,
      [](net::Request&) -> asio::awaitable<net::Response> {
        co_return net::Response::stream([](std::shared_ptr<net::SseStream> s) {
          std::vector<net::SseEvent> ev{net::SseEvent{.id = {},
                                                      .event = "endpoint",
                                                      .data = "http://elsewhere.example/message",
                                                      .retry_ms = {}}};
          return events_then(std::move(s), std::move(ev), false);
        });
      },
      metrics);
  auto port = server->start().at(0).port;
  std::thread th([&] { io.run(); });
  mcp::ServerConfig cfg;
  cfg.name = "legacy";
  cfg.transport = mcp::TransportKind::sse;
  cfg.url = "http://127.0.0.1:" + std::to_string(port) + "/sse";
  cfg.init_timeout = 5s;
  auto out = run([&](net::HttpClient& client) -> asio::awaitable<std::string> {
    auto t = mcp::make_sse_transport(co_await asio::this_coro::executor, cfg, client);
    auto r = co_await t->start();
    co_await t->close();
    co_return r ? "started" : r.error().message;
  });
  io.stop();
  th.join();
  EXPECT_NE(out.find("another origin"), std::string::npos) << out;
}

}  // namespace
}  // namespace agentd::test
