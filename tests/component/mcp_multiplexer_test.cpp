// The multiplexer against real MCP servers from npm (server-everything, server-memory,
// server-filesystem) and a scriptable SDK-built server (tests/interop/mcp_test_server.mjs):
// catalog, calls, progress, deadlines, cancellation, crashes and restarts, list_changed, roots,
// lazy and failing servers.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "agentd/mcp/multiplexer.hpp"
#include "support/process.hpp"
#include "support/tls_cert.hpp"

namespace agentd::test {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using mcp::json;

const std::string kInterop = AGENTD_INTEROP_DIR;

mcp::ServerConfig node_server(std::string name, std::vector<std::string> args) {
  mcp::ServerConfig s;
  s.name = std::move(name);
  s.transport = mcp::TransportKind::stdio;
  s.command = "node";
  s.args = std::move(args);
  s.cwd = kInterop;
  s.init_timeout = 20s;
  s.call_timeout = 10s;
  return s;
}

mcp::ServerConfig test_server(std::string name = "test") {
  return node_server(std::move(name), {kInterop + "/mcp_test_server.mjs"});
}

mcp::ServerConfig everything() {
  return node_server("everything",
                     {kInterop + "/node_modules/@modelcontextprotocol/server-everything/dist/index.js",
                      "stdio"});
}

// Runs `body(mux)` on a loop with the multiplexer started (after `setup(mux)`: a sampler must
// be set by then), with a hard time limit.
template <class S, class F>
auto run_with(mcp::Config config, S setup, F body) {
  asio::io_context io(1);
  core::Registry metrics;
  auto client = net::make_http_client(io.get_executor(), {}, metrics);
  auto mux = mcp::make_multiplexer(io.get_executor(), std::move(config), *client, metrics);
  setup(*mux);
  mux->start();
  using R = typename decltype(body(*mux))::value_type;
  std::promise<R> out;
  asio::co_spawn(
      io,
      [](mcp::Multiplexer& m, F b) -> asio::awaitable<R> {
        auto r = co_await b(m);
        co_await m.stop();
        co_return r;
      }(*mux, std::move(body)),
      [&](std::exception_ptr e, R r) {
        if (e) {
          out.set_exception(e);
        } else {
          out.set_value(std::move(r));
        }
        io.stop();
      });
  io.run_for(60s);
  auto f = out.get_future();
  EXPECT_EQ(f.wait_for(0s), std::future_status::ready) << "test coroutine did not finish in time";
  return f.get();
}

// The same without a setup step.
template <class F>
auto run(mcp::Config config, F body) {
  return run_with(std::move(config), [](mcp::Multiplexer&) {}, std::move(body));
}

asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

// Waits until `server` is in `state` (and, when given, has restarted at least `restarts`).
asio::awaitable<bool> wait_state(mcp::Multiplexer& m, std::string server, std::string state,
                                 int restarts = 0, std::chrono::milliseconds limit = 30s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    for (const auto& s : m.status()) {
      if (s.name == server && s.state == state && s.restarts >= restarts) co_return true;
    }
    co_await sleep_for(50ms);
  }
  co_return false;
}

// One-key arguments, built outside the co_await (GCC 12 rejects braced lists there).
json args(const std::string& key, json value) {
  json j = json::object();
  j[key] = std::move(value);
  return j;
}

std::string text_of(const mcp::RpcResult<json>& r) {
  if (!r) return "error " + std::to_string(r.error().code) + ": " + r.error().message;
  std::string out;
  for (const auto& c : r->value("content", json::array())) out += c.value("text", std::string());
  return out;
}

std::vector<std::string> names(const std::vector<json>& tools) {
  std::vector<std::string> out;
  for (const auto& t : tools) out.push_back(t["name"].get<std::string>());
  return out;
}

bool has(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

TEST(McpMux, CatalogMergesRealServersUnderNamespacedNames) {
  mcp::Config c;
  auto dir = make_temp_dir("agentd-mcp-memory-");
  auto memory = node_server(
      "memory", {kInterop + "/node_modules/@modelcontextprotocol/server-memory/dist/index.js"});
  memory.env["MEMORY_FILE_PATH"] = dir + "/memory.jsonl";
  c.servers = {everything(), memory, test_server()};
  auto out = run(c, [](mcp::Multiplexer& m) -> asio::awaitable<std::string> {
    for (auto s : {"everything", "memory", "test"}) {
      if (!co_await wait_state(m, s, "ready")) co_return std::string(s) + " not ready";
    }
    auto all = names(m.tools({}));
    std::string missing;
    for (auto n : {"everything__echo", "memory__create_entities", "test__echo", "test__sleep"}) {
      if (!has(all, n)) missing += std::string(n) + " ";
    }
    if (!missing.empty()) co_return "missing: " + missing;
    // Annotations are kept.
    for (const auto& t : m.tools({})) {
      if (t["name"] == "test__echo" && !t["annotations"].value("readOnlyHint", false)) {
        co_return std::string("annotations lost");
      }
    }
    // Visibility filter (a client's scopes).
    auto only_memory = names(m.tools([](const std::string& s, const std::string&) {
      return s == "memory";
    }));
    for (const auto& n : only_memory) {
      if (n.rfind("memory__", 0) != 0) co_return "filter leaked " + n;
    }
    auto echo = co_await m.call_tool("everything__echo", args("message", "hi there"), mcp::ToolCall(), nullptr);
    auto mine = co_await m.call_tool("test__echo", args("text", "mine"), mcp::ToolCall(), nullptr);
    json entities = {{"entities", json::array({{{"name", "agentd"},
                                                {"entityType", "daemon"},
                                                {"observations", json::array({"written in C++"})}}})}};
    auto created = co_await m.call_tool("memory__create_entities", entities, mcp::ToolCall(), nullptr);
    co_return text_of(echo) + " | " + text_of(mine) + " | " +
        (created && !created->value("isError", false) ? "created" : text_of(created));
  });
  EXPECT_EQ(out, "Echo: hi there | mine | created");
}

TEST(McpMux, ProgressReachesTheCaller) {
  mcp::Config c;
  c.servers = {test_server()};
  auto out = run(c, [](mcp::Multiplexer& m) -> asio::awaitable<std::string> {
    if (!co_await wait_state(m, "test", "ready")) co_return std::string("not ready");
    auto seen = std::make_shared<std::vector<double>>();
    mcp::ToolCall call;
    call.on_progress = [seen](const json& p) { seen->push_back(p.value("progress", 0.0)); };
    auto r = co_await m.call_tool("test__sleep", args("ms", 400), call, nullptr);
    co_return text_of(r) + " progress=" + std::to_string(seen->size());
  });
  EXPECT_EQ(out, "slept 400 progress=4");
}

TEST(McpMux, DeadlinesAndCancellationEndCallsAndTheServerStaysUsable) {
  mcp::Config c;
  auto s = test_server();
  s.call_timeout = 300ms;
  c.servers = {s};
  auto out = run(c, [](mcp::Multiplexer& m) -> asio::awaitable<std::string> {
    if (!co_await wait_state(m, "test", "ready")) co_return std::string("not ready");
    auto t0 = std::chrono::steady_clock::now();
    auto slow = co_await m.call_tool("test__sleep", args("ms", 5000), mcp::ToolCall(), nullptr);
    bool quick = std::chrono::steady_clock::now() - t0 < 2s;
    std::string a = slow ? "answered" : std::to_string(slow.error().code);
    // A caller that gives up: the upstream is told and the call returns at once.
    auto token = std::make_shared<mcp::CancelToken>();
    asio::steady_timer t(co_await asio::this_coro::executor, 100ms);
    t.async_wait([token](const boost::system::error_code& ec) {
      if (!ec) token->cancel();
    });
    auto cancelled = co_await m.call_tool("test__sleep", args("ms", 250), mcp::ToolCall(), token);
    std::string b = cancelled ? "answered" : cancelled.error().message;
    auto after = co_await m.call_tool("test__echo", args("text", "still here"), mcp::ToolCall(), nullptr);
    co_return a + (quick ? " quick" : " slow") + " | " + b + " | " + text_of(after);
  });
  EXPECT_EQ(out, "-32001 quick | cancelled by the caller | still here");
}

TEST(McpMux, AChildThatCrashesMidCallFailsTheCallAndIsRestarted) {
  mcp::Config c;
  c.servers = {test_server()};
  auto out = run(c, [](mcp::Multiplexer& m) -> asio::awaitable<std::string> {
    if (!co_await wait_state(m, "test", "ready")) co_return std::string("not ready");
    auto crash = co_await m.call_tool("test__crash", json::object(), mcp::ToolCall(), nullptr);
    std::string a = crash ? "answered" : std::to_string(crash.error().code);
    if (!co_await wait_state(m, "test", "ready", 1)) co_return a + " | no restart";
    auto again = co_await m.call_tool("test__echo", args("text", "back"), mcp::ToolCall(), nullptr);
    auto fail = co_await m.call_tool("test__fail", json::object(), mcp::ToolCall(), nullptr);
    co_return a + " | " + text_of(again) + " | " +
        (fail && fail->value("isError", false) ? "tool error is a result" : "?");
  });
  EXPECT_EQ(out, "-32000 | back | tool error is a result");
}

TEST(McpMux, ListChangedRefreshesTheCatalogAndTellsListeners) {
  mcp::Config c;
  c.servers = {test_server()};
  auto out = run(c, [](mcp::Multiplexer& m) -> asio::awaitable<std::string> {
    if (!co_await wait_state(m, "test", "ready")) co_return std::string("not ready");
    auto fired = std::make_shared<int>(0);
    m.on_tools_changed([fired] { ++*fired; });
    if (has(names(m.tools({})), "test__extra")) co_return std::string("extra already there");
    co_await m.call_tool("test__grow", json::object(), mcp::ToolCall(), nullptr);
    for (int i = 0; i < 100 && !has(names(m.tools({})), "test__extra"); ++i) co_await sleep_for(50ms);
    auto r = co_await m.call_tool("test__extra", json::object(), mcp::ToolCall(), nullptr);
    co_return text_of(r) + (*fired > 0 ? " notified" : " silent");
  });
  EXPECT_EQ(out, "extra! notified");
}

TEST(McpMux, LazyServersStartOnFirstUseAndFailuresAreClear) {
  mcp::Config c;
  auto lazy = test_server("lazy");
  lazy.lazy = true;
  auto broken = test_server("broken");
  broken.command = "/nonexistent/agentd-no-such-binary";
  broken.init_timeout = 2s;
  auto filtered = test_server("filtered");
  filtered.tools = {"ec*"};
  c.servers = {lazy, broken, filtered};
  auto out = run(c, [](mcp::Multiplexer& m) -> asio::awaitable<std::string> {
    std::string lazy_state;
    for (const auto& s : m.status()) {
      if (s.name == "lazy") lazy_state = s.state;
    }
    auto r = co_await m.call_tool("lazy__echo", args("text", "woke"), mcp::ToolCall(), nullptr);
    if (!co_await wait_state(m, "broken", "failed")) co_return std::string("broken not failed");
    auto b = co_await m.call_tool("broken__echo", json::object(), mcp::ToolCall(), nullptr);
    if (!co_await wait_state(m, "filtered", "ready")) co_return std::string("filtered not ready");
    auto visible = names(m.tools({}));
    auto hidden = co_await m.call_tool("filtered__sleep", args("ms", 1), mcp::ToolCall(), nullptr);
    auto unknown = co_await m.call_tool("nosuch__tool", json::object(), mcp::ToolCall(), nullptr);
    co_return lazy_state + " | " + text_of(r) + " | " + (b ? "?" : std::to_string(b.error().code)) +
        " | " + (has(visible, "filtered__echo") && !has(visible, "filtered__sleep") ? "filtered" : "?") +
        " | " + (hidden ? "?" : std::to_string(hidden.error().code)) + " | " +
        (unknown ? "?" : std::to_string(unknown.error().code));
  });
  EXPECT_EQ(out, "idle | woke | -32000 | filtered | -32602 | -32602");
}


// --- resources, prompts, sampling, elicitation, limits, policies ---------------------------

// Waits until the catalog lists `tool` (servers register some tools after initialize).
asio::awaitable<bool> wait_tool(mcp::Multiplexer& m, std::string tool) {
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (has(names(m.tools(nullptr)), tool)) co_return true;
    co_await sleep_for(50ms);
  }
  co_return false;
}

// server-filesystem started with no directory of its own: it asks agentd for roots/list after
// initialize and may only touch what the configured roots name. Writes and reads inside work;
// a path outside, a `..` escape and a symlink out of the root are refused by the server.
asio::awaitable<std::string> filesystem_round(mcp::Multiplexer& m, std::string dir) {
  if (!co_await wait_state(m, "fs", "ready")) co_return "not ready: " + std::string("fs");
  if (!co_await wait_tool(m, "fs__list_allowed_directories")) co_return std::string("no tools");
  // The server takes its roots from agentd after `initialized`: wait until it has them.
  std::string allowed;
  for (int i = 0; i < 100 && allowed.find(dir) == std::string::npos; ++i) {
    allowed = text_of(co_await m.call_tool("fs__list_allowed_directories", json::object(),
                                           mcp::ToolCall(), nullptr));
    if (allowed.find(dir) == std::string::npos) co_await sleep_for(100ms);
  }
  if (allowed.find(dir) == std::string::npos) co_return "roots never applied: " + allowed;
  std::string r;
  json write = {{"path", dir + "/note.txt"}, {"content", "written through agentd"}};
  auto wrote = co_await m.call_tool("fs__write_file", std::move(write), mcp::ToolCall(), nullptr);
  r += (wrote && !wrote->value("isError", false) ? "wrote" : "write failed: " + text_of(wrote)) + "\n";
  r += text_of(co_await m.call_tool("fs__read_text_file", args("path", dir + "/note.txt"),
                                    mcp::ToolCall(), nullptr)) + "\n";
  auto denied = [](const mcp::RpcResult<json>& res) {
    return res && res->value("isError", false) ? "denied" : "NOT denied: " + text_of(res);
  };
  r += std::string("outside ") + denied(co_await m.call_tool("fs__read_text_file",
                                                             args("path", "/etc/hostname"),
                                                             mcp::ToolCall(), nullptr)) + "\n";
  r += std::string("dotdot ") + denied(co_await m.call_tool("fs__read_text_file",
                                                            args("path", dir + "/../../etc/hostname"),
                                                            mcp::ToolCall(), nullptr)) + "\n";
  r += std::string("symlink ") + denied(co_await m.call_tool("fs__read_text_file",
                                                             args("path", dir + "/escape/hostname"),
                                                             mcp::ToolCall(), nullptr));
  co_return r;
}

TEST(McpMux, FilesystemServerWorksInsideTheConfiguredRootsOnly) {
  auto dir = std::filesystem::canonical(make_temp_dir("agentd-mcp-fs-")).string();
  std::filesystem::create_directory_symlink("/etc", dir + "/escape");
  mcp::Config c;
  auto fs = node_server(
      "fs", {kInterop + "/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js"});
  fs.roots = {"file://" + dir};
  c.servers = {fs};
  auto out = run(c, [dir](mcp::Multiplexer& m) { return filesystem_round(m, dir); });
  EXPECT_EQ(out, "wrote\nwritten through agentd\noutside denied\ndotdot denied\nsymlink denied") << out;
  std::ifstream in(dir + "/note.txt");
  std::string on_disk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(on_disk, "written through agentd");
  std::filesystem::remove_all(dir);
}

TEST(McpMux, ResourcesAndPromptsOfARealServerAreListedReadAndRouted) {
  mcp::Config c;
  c.servers = {everything()};
  auto out = run(c, [](mcp::Multiplexer& m) -> asio::awaitable<std::string> {
    if (!co_await wait_state(m, "everything", "ready")) co_return std::string("not ready");
    std::string r;
    auto resources = m.resources(nullptr);
    bool static_doc = std::any_of(resources.begin(), resources.end(), [](const json& x) {
      return x.value("uri", std::string()).starts_with("demo://resource/static/document/");
    });
    r += static_doc ? "static " : "no-static ";
    auto templates = m.resource_templates(nullptr);
    bool dyn = std::any_of(templates.begin(), templates.end(), [](const json& x) {
      return x.value("uriTemplate", std::string()) == "demo://resource/dynamic/text/{resourceId}";
    });
    r += dyn ? "template " : "no-template ";
    // A URI matched by a template is routed to its server.
    auto read = co_await m.read_resource("demo://resource/dynamic/text/7", nullptr,
                                         mcp::ToolCall(), nullptr);
    r += read && read->contains("contents") &&
                 (*read)["contents"][0].value("uri", std::string()) ==
                     "demo://resource/dynamic/text/7"
             ? "read "
             : "unread(" + (read ? read->dump() : read.error().message) + ") ";
    auto missing = co_await m.read_resource("nope://nothing", nullptr, mcp::ToolCall(), nullptr);
    r += missing ? "found?! " : std::to_string(missing.error().code) + " ";
    // A caller that may not see resources cannot read them either.
    mcp::Visible none = [](const std::string&, const std::string&) { return false; };
    auto hidden = co_await m.read_resource("demo://resource/dynamic/text/7", none,
                                           mcp::ToolCall(), nullptr);
    r += hidden ? "visible?! " : std::to_string(hidden.error().code) + " ";
    auto prompts = names(m.prompts(nullptr));
    r += has(prompts, "everything__simple-prompt") ? "prompt " : "no-prompt ";
    r += m.prompts(none).empty() ? "filtered " : "unfiltered ";
    auto got = co_await m.get_prompt("everything__simple-prompt", json(), mcp::ToolCall(), nullptr);
    r += got && got->contains("messages") && !(*got)["messages"].empty() ? "got" : "not-got";
    auto bad = co_await m.get_prompt("everything__no-such-prompt", json(), mcp::ToolCall(), nullptr);
    r += bad ? " bad?!" : " " + std::to_string(bad.error().code);
    co_return r;
  });
  EXPECT_EQ(out, "static template read -32002 -32002 prompt filtered got -32602");
}

asio::awaitable<mcp::RpcResult<json>> fake_sample(
    std::shared_ptr<std::vector<mcp::SamplingRequest>> seen, mcp::SamplingRequest req) {
  seen->push_back(std::move(req));
  json result = {{"role", "assistant"},
                 {"content", {{"type", "text"}, {"text", "sampled answer 42"}}},
                 {"model", "fake-model"},
                 {"stopReason", "endTurn"}};
  co_return result;
}

asio::awaitable<mcp::RpcResult<json>> fake_elicit(std::shared_ptr<int> asked, json params) {
  ++*asked;
  bool schema = params.contains("requestedSchema");
  json answer = {{"action", "accept"},
                 {"content", {{"name", schema ? "Ada Lovelace" : "no schema"}, {"check", true}}}};
  co_return answer;
}

TEST(McpMux, SamplingRequestsOfAServerGoToTheSamplerWithTheCallerNamed) {
  mcp::Config c;
  c.servers = {everything()};
  auto seen = std::make_shared<std::vector<mcp::SamplingRequest>>();
  auto setup = [seen](mcp::Multiplexer& m) {
    m.set_sampler([seen](mcp::SamplingRequest req) { return fake_sample(seen, std::move(req)); });
  };
  auto out = run_with(c, setup, [](mcp::Multiplexer& m) -> asio::awaitable<std::string> {
    if (!co_await wait_tool(m, "everything__trigger-sampling-request")) {
      co_return std::string("no sampling tool (capability not declared?)");
    }
    mcp::ToolCall call;
    call.client = "alice";
    json a = {{"prompt", "hello"}, {"maxTokens", 50}};
    auto r = co_await m.call_tool("everything__trigger-sampling-request", std::move(a), call,
                                  nullptr);
    co_return text_of(r);
  });
  EXPECT_NE(out.find("sampled answer 42"), std::string::npos) << out;
  ASSERT_EQ(seen->size(), 1u);
  EXPECT_EQ((*seen)[0].server, "everything");
  EXPECT_EQ((*seen)[0].client, "alice");
  EXPECT_EQ((*seen)[0].params.value("maxTokens", 0), 50);
  EXPECT_NE((*seen)[0].params.dump().find("hello"), std::string::npos);
}

TEST(McpMux, WithoutASamplerSamplingIsNotOffered) {
  mcp::Config c;
  c.servers = {everything()};
  auto out = run(c, [](mcp::Multiplexer& m) -> asio::awaitable<std::string> {
    if (!co_await wait_state(m, "everything", "ready")) co_return std::string("not ready");
    co_await sleep_for(500ms);  // time for tools registered after initialize
    co_return has(names(m.tools(nullptr)), "everything__trigger-sampling-request")
        ? std::string("offered")
        : std::string("not offered");
  });
  EXPECT_EQ(out, "not offered");
}

asio::awaitable<std::string> elicit_twice(mcp::Multiplexer& m, std::shared_ptr<int> asked) {
  if (!co_await wait_tool(m, "everything__trigger-elicitation-request")) {
    co_return std::string("no elicitation tool");
  }
  mcp::ToolCall call;
  call.on_elicit = [asked](json params) { return fake_elicit(asked, std::move(params)); };
  auto accepted = co_await m.call_tool("everything__trigger-elicitation-request", json::object(),
                                       call, nullptr);
  auto declined = co_await m.call_tool("everything__trigger-elicitation-request", json::object(),
                                       mcp::ToolCall(), nullptr);
  co_return text_of(accepted) + "\n---\n" + text_of(declined);
}

TEST(McpMux, ElicitationIsRelayedToTheCallerOrDeclined) {
  mcp::Config c;
  c.servers = {everything()};
  auto asked = std::make_shared<int>(0);
  auto out = run(c, [asked](mcp::Multiplexer& m) { return elicit_twice(m, asked); });
  EXPECT_EQ(*asked, 1);
  EXPECT_NE(out.find("Ada Lovelace"), std::string::npos) << out;
  EXPECT_NE(out.find("declined"), std::string::npos) << out;
}

TEST(McpMux, ElicitationModeDeclineDoesNotDeclareTheCapability) {
  mcp::Config c;
  c.servers = {everything()};
  c.elicitation = mcp::ElicitationMode::decline;
  auto out = run(c, [](mcp::Multiplexer& m) -> asio::awaitable<std::string> {
    if (!co_await wait_state(m, "everything", "ready")) co_return std::string("not ready");
    co_await sleep_for(500ms);
    co_return has(names(m.tools(nullptr)), "everything__trigger-elicitation-request")
        ? std::string("offered")
        : std::string("not offered");
  });
  EXPECT_EQ(out, "not offered");
}

TEST(McpMux, ServerConcurrencyQueuesCallsAndClientLimitsRefuseThem) {
  mcp::Config c;
  auto s = test_server();
  s.limits.concurrency = 1;
  c.servers = {s};
  mcp::ClientLimits bob;
  bob.limits.rpm = 3;
  c.clients["bob"] = bob;
  mcp::ClientLimits carol;
  carol.limits.concurrency = 1;
  c.clients["carol"] = carol;
  auto out = run(c, [](mcp::Multiplexer& m) -> asio::awaitable<std::string> {
    if (!co_await wait_state(m, "test", "ready")) co_return std::string("not ready");
    auto ex = co_await asio::this_coro::executor;
    auto results = std::make_shared<std::vector<std::string>>();
    auto sleeper = [](mcp::Multiplexer* mux, std::string cl, int d,
                      std::shared_ptr<std::vector<std::string>> sink) -> asio::awaitable<void> {
      mcp::ToolCall call;
      call.client = cl;
      auto r = co_await mux->call_tool("test__sleep", args("ms", d), call, nullptr);
      sink->push_back(r ? text_of(r) : std::to_string(r.error().code));
    };
    std::string r;
    // Server concurrency 1: the second call waits for the first, both succeed.
    auto t0 = std::chrono::steady_clock::now();
    auto done = std::make_shared<int>(0);
    for (int i = 0; i < 2; ++i) {
      asio::co_spawn(ex, sleeper(&m, "dave", 300, results),
                     [done](std::exception_ptr) { ++*done; });
    }
    while (*done < 2) co_await sleep_for(20ms);
    auto took = std::chrono::steady_clock::now() - t0;
    r += (*results)[0] + "," + (*results)[1] + (took >= 580ms ? " queued" : " overlapped");
    // Client concurrency 1: the second call at once is refused.
    results->clear();
    *done = 0;
    for (int i = 0; i < 2; ++i) {
      asio::co_spawn(ex, sleeper(&m, "carol", 200, results),
                     [done](std::exception_ptr) { ++*done; });
    }
    while (*done < 2) co_await sleep_for(20ms);
    std::sort(results->begin(), results->end());
    r += " | " + (*results)[0] + "," + (*results)[1];
    // Client rpm 3: the fourth call in the minute is refused, saying when to retry.
    mcp::ToolCall call;
    call.client = "bob";
    std::string last;
    for (int i = 0; i < 4; ++i) {
      auto e = co_await m.call_tool("test__echo", args("text", "x"), call, nullptr);
      if (!e) {
        last = std::to_string(e.error().code) + " " +
               (e.error().data.contains("retry_after_seconds") ? "retry" : "no-retry") + " " +
               (e.error().message.find("bob") != std::string::npos ? "named" : "unnamed");
      } else {
        last = "ok" + std::to_string(i);
      }
    }
    r += " | " + last;
    co_return r;
  });
  EXPECT_EQ(out, "slept 300,slept 300 queued | -32004,slept 200 | -32004 retry named");
}

// --- the stateless 2026-07-28 revision ----------------------------------------------------

// A node HTTP server on a free loopback port, stopped at the end of the test.
struct NodeHttp {
  std::unique_ptr<Process> process;
  std::uint16_t port = 0;
  std::string problem;
  ~NodeHttp() {
    if (!process) return;
    process->signal(SIGTERM);
    if (!process->wait(5s)) process->signal(SIGKILL);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port) + "/mcp"; }
};

// `program` looked up in PATH (Process runs exact paths).
std::string in_path(const std::string& program) {
  std::string path = std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin";
  for (std::size_t at = 0; at <= path.size();) {
    auto colon = path.find(':', at);
    auto dir = path.substr(at, colon == std::string::npos ? std::string::npos : colon - at);
    auto candidate = std::filesystem::path(dir.empty() ? "." : dir) / program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
    if (colon == std::string::npos) break;
    at = colon + 1;
  }
  return program;
}

// Starts `args` (after `node`, in tests/interop) with PORT substituted; ready once the port
// takes connections.
std::unique_ptr<NodeHttp> start_node_http(std::vector<std::string> args,
                                          std::vector<std::string> env = {}) {
  auto n = std::make_unique<NodeHttp>();
  n->port = free_loopback_port();
  for (auto* list : {&args, &env}) {
    for (auto& a : *list) {
      if (auto at = a.rfind("PORT"); at != std::string::npos && a.substr(at) == "PORT" &&
                                    (at == 0 || a[at - 1] == '=')) {
        a = a.substr(0, at) + std::to_string(n->port);
      }
    }
  }
  // mcp-proxy reads options from MCP_PROXY_* variables: none may leak in.
  std::vector<std::string> unset;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    if (kv.starts_with("MCP_PROXY_")) unset.push_back(kv.substr(0, kv.find('=')));
  }
  n->process = std::make_unique<Process>(in_path("node"), args, env, unset, kInterop);
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!accepts_connections(n->port)) {
    if (n->process->wait(0ms)) {
      n->problem = "exited before listening";
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      n->problem = "did not listen within 30s";
      break;
    }
    std::this_thread::sleep_for(25ms);
  }
  return n;
}

mcp::ServerConfig http_server(std::string name, std::string url) {
  mcp::ServerConfig s;
  s.name = std::move(name);
  s.transport = mcp::TransportKind::streamable_http;
  s.url = std::move(url);
  s.init_timeout = 20s;
  s.call_timeout = 10s;
  return s;
}

std::string detail_of(const mcp::Multiplexer& m, const std::string& server) {
  for (const auto& s : m.status()) {
    if (s.name == server) return s.state + ": " + s.detail;
  }
  return "unknown";
}

asio::awaitable<std::string> stateless_round(mcp::Multiplexer& m, std::shared_ptr<int> asked) {
  if (!co_await wait_state(m, "st", "ready")) co_return "not ready: " + detail_of(m, "st");
  std::string r = detail_of(m, "st") + "\n";
  auto tools = names(m.tools(nullptr));
  for (const char* t : {"st__echo", "st__slow", "st__ask-llm", "st__confirm"}) {
    if (!has(tools, t)) r += std::string("missing ") + t + "\n";
  }
  r += text_of(co_await m.call_tool("st__echo", args("text", "héllo stateless"), mcp::ToolCall(), nullptr)) + "\n";
  // Input requests: sampling through the sampler, elicitation through the caller, roots
  // from the config.
  mcp::ToolCall call;
  call.client = "carol";
  r += text_of(co_await m.call_tool("st__ask-llm", args("prompt", "2+2?"), call, nullptr)) + "\n";
  call.on_elicit = [asked](json params) { return fake_elicit(asked, std::move(params)); };
  r += text_of(co_await m.call_tool("st__confirm", json::object(), call, nullptr)) + "\n";
  auto prompt = co_await m.get_prompt("st__greet", args("who", "Ada"), mcp::ToolCall(), nullptr);
  r += (prompt ? (*prompt)["messages"][0]["content"]["text"].get<std::string>() : prompt.error().message) + "\n";
  auto motd = co_await m.read_resource("test://motd", nullptr, mcp::ToolCall(), nullptr);
  r += (motd ? (*motd)["contents"][0]["text"].get<std::string>() : motd.error().message) + "\n";
  // Cancelling closes the request's response stream; the call returns at once.
  auto token = std::make_shared<mcp::CancelToken>();
  asio::steady_timer t(co_await asio::this_coro::executor, 200ms);
  t.async_wait([token](const boost::system::error_code& ec) {
    if (!ec) token->cancel();
  });
  auto t0 = std::chrono::steady_clock::now();
  auto cancelled = co_await m.call_tool("st__slow", args("ms", 8000), mcp::ToolCall(), token);
  r += (cancelled ? std::string("answered") : cancelled.error().message) +
       (std::chrono::steady_clock::now() - t0 < 2s ? " quickly" : " slowly") + "\n";
  // The session still works (a health ping is server/discover now).
  r += text_of(co_await m.call_tool("st__echo", args("text", "after"), mcp::ToolCall(), nullptr));
  co_return r;
}

TEST(McpMuxStateless, A2026ServerIsDetectedAndItsInputRequestsAreAnswered) {
  auto server = start_node_http({kInterop + "/mcp_stateless_server.mjs", "PORT"});
  ASSERT_TRUE(server->problem.empty()) << server->problem;
  mcp::Config c;
  auto st = http_server("st", server->url());
  st.roots = {"file:///srv/work"};
  st.ping_interval = 300ms;  // exercises server/discover as the health check
  c.servers = {st};
  auto seen = std::make_shared<std::vector<mcp::SamplingRequest>>();
  auto asked = std::make_shared<int>(0);
  auto out = run_with(
      c,
      [seen](mcp::Multiplexer& m) {
        m.set_sampler([seen](mcp::SamplingRequest req) { return fake_sample(seen, std::move(req)); });
      },
      [asked](mcp::Multiplexer& m) { return stateless_round(m, asked); });
  EXPECT_NE(out.find("ready: agentd-stateless-test 1.0.0 (2026-07-28)"), std::string::npos) << out;
  EXPECT_EQ(out.find("missing"), std::string::npos) << out;
  EXPECT_NE(out.find("héllo stateless"), std::string::npos) << out;
  EXPECT_NE(out.find("llm said: sampled answer 42 (state asked-llm)"), std::string::npos) << out;
  EXPECT_NE(out.find("confirmed: {\"check\":true,\"name\":\"Ada Lovelace\"}"), std::string::npos) << out;
  EXPECT_NE(out.find("file:///srv/work"), std::string::npos) << out;
  EXPECT_NE(out.find("hello Ada"), std::string::npos) << out;
  EXPECT_NE(out.find("message of the day"), std::string::npos) << out;
  EXPECT_NE(out.find("cancelled by the caller quickly"), std::string::npos) << out;
  EXPECT_TRUE(out.ends_with("after")) << out;
  EXPECT_EQ(*asked, 1);
  ASSERT_EQ(seen->size(), 1u);
  EXPECT_EQ((*seen)[0].client, "carol");
  EXPECT_EQ((*seen)[0].server, "st");
}

TEST(McpMuxStateless, EraStatefulSkipsTheProbeAndAStatelessOnlyServerRefusesIt) {
  auto server = start_node_http({kInterop + "/mcp_stateless_server.mjs", "PORT"});
  ASSERT_TRUE(server->problem.empty()) << server->problem;
  mcp::Config c;
  auto st = http_server("st", server->url());
  st.era = mcp::Era::stateful;
  c.servers = {st};
  auto out = run(c, [](mcp::Multiplexer& m) -> asio::awaitable<std::string> {
    co_await wait_state(m, "st", "failed", 0, 10s);
    co_return detail_of(m, "st");
  });
  // The server answers a 2025 initialize with -32022 and the versions it takes.
  EXPECT_NE(out.find("failed"), std::string::npos) << out;
  EXPECT_NE(out.find("2026-07-28"), std::string::npos) << out;
}

asio::awaitable<std::string> proxy_round(mcp::Multiplexer& m) {
  if (!co_await wait_state(m, "proxy", "ready")) co_return "not ready: " + detail_of(m, "proxy");
  std::string r = detail_of(m, "proxy") + "\n";
  r += text_of(co_await m.call_tool("proxy__echo", args("message", "through mcp-proxy"),
                                    mcp::ToolCall(), nullptr)) + "\n";
  auto progress = std::make_shared<int>(0);
  mcp::ToolCall call;
  call.on_progress = [progress](const json&) { ++*progress; };
  json long_args = {{"duration", 1}, {"steps", 4}};
  auto done = co_await m.call_tool("proxy__trigger-long-running-operation", std::move(long_args),
                                   call, nullptr);
  // server-everything reports steps as it goes; the last one may race its own result.
  r += text_of(done) + (*progress >= 3 ? " progress relayed" : " progress=" + std::to_string(*progress)) + "\n";
  auto prompts = names(m.prompts(nullptr));
  r += has(prompts, "proxy__simple-prompt") ? "prompts\n" : "no prompts\n";
  auto read = co_await m.read_resource("demo://resource/dynamic/text/5", nullptr, mcp::ToolCall(), nullptr);
  r += read ? "read" : read.error().message;
  co_return r;
}

TEST(McpMuxStateless, McpProxyIsSpokenWithInThe2026Era) {
  auto proxy = start_node_http(
      {kInterop + "/node_modules/mcp-proxy/dist/bin/mcp-proxy.mjs", "--host", "127.0.0.1", "--port",
       "PORT", "--server", "stream", "--streamEndpoint", "/mcp", "--", "node",
       kInterop + "/node_modules/@modelcontextprotocol/server-everything/dist/index.js", "stdio"});
  ASSERT_TRUE(proxy->problem.empty()) << proxy->problem;
  mcp::Config c;
  c.servers = {http_server("proxy", proxy->url())};
  auto out = run(c, [](mcp::Multiplexer& m) { return proxy_round(m); });
  EXPECT_NE(out.find("(2026-07-28)"), std::string::npos) << out;
  EXPECT_NE(out.find("Echo: through mcp-proxy"), std::string::npos) << out;
  EXPECT_NE(out.find("Long running operation completed"), std::string::npos) << out;
  EXPECT_NE(out.find("progress relayed"), std::string::npos) << out;
  EXPECT_NE(out.find("prompts\n"), std::string::npos) << out;
  EXPECT_TRUE(out.ends_with("read")) << out;
}

// Sampling, elicitation and roots from server-everything over HTTP: its requests arrive on
// the event stream of the tools/call they belong to (Streamable HTTP) or on the one SSE stream
// (legacy), and still reach the right caller.
asio::awaitable<std::string> server_requests_round(mcp::Multiplexer& m, std::string server,
                                                   std::shared_ptr<int> asked) {
  auto tool = [&](const char* t) { return server + "__" + t; };
  if (!co_await wait_tool(m, tool("trigger-elicitation-request"))) {
    co_return "no elicitation tool: " + detail_of(m, server);
  }
  std::string r;
  mcp::ToolCall call;
  call.client = "dora";
  json sample = {{"prompt", "over http"}, {"maxTokens", 20}};
  r += text_of(co_await m.call_tool(tool("trigger-sampling-request"), std::move(sample), call,
                                    nullptr)) + "\n";
  call.on_elicit = [asked](json params) { return fake_elicit(asked, std::move(params)); };
  r += text_of(co_await m.call_tool(tool("trigger-elicitation-request"), json::object(), call,
                                    nullptr)) + "\n";
  if (co_await wait_tool(m, tool("get-roots-list"))) {
    r += text_of(co_await m.call_tool(tool("get-roots-list"), json::object(), call, nullptr));
  } else {
    r += "no roots tool";
  }
  co_return r;
}

class McpMuxOverHttp : public ::testing::TestWithParam<const char*> {};

TEST_P(McpMuxOverHttp, ServerRequestsReachTheCallerOfTheirCall) {
  const std::string mode = GetParam();  // streamableHttp | sse
  auto server = start_node_http(
      {kInterop + "/node_modules/@modelcontextprotocol/server-everything/dist/index.js", mode},
      {"PORT=PORT"});
  ASSERT_TRUE(server->problem.empty()) << server->problem;
  mcp::Config c;
  auto s = http_server("ev", "http://127.0.0.1:" + std::to_string(server->port) +
                                 (mode == "sse" ? "/sse" : "/mcp"));
  if (mode == "sse") s.transport = mcp::TransportKind::sse;
  s.roots = {"file:///srv/project"};
  c.servers = {s};
  auto seen = std::make_shared<std::vector<mcp::SamplingRequest>>();
  auto asked = std::make_shared<int>(0);
  auto out = run_with(
      c,
      [seen](mcp::Multiplexer& m) {
        m.set_sampler([seen](mcp::SamplingRequest req) { return fake_sample(seen, std::move(req)); });
      },
      [asked](mcp::Multiplexer& m) { return server_requests_round(m, "ev", asked); });
  EXPECT_NE(out.find("sampled answer 42"), std::string::npos) << out;
  EXPECT_NE(out.find("Ada Lovelace"), std::string::npos) << out;
  EXPECT_NE(out.find("file:///srv/project"), std::string::npos) << out;
  EXPECT_EQ(*asked, 1);
  ASSERT_EQ(seen->size(), 1u);
  EXPECT_EQ((*seen)[0].client, "dora");
}

INSTANTIATE_TEST_SUITE_P(Transports, McpMuxOverHttp, ::testing::Values("streamableHttp", "sse"));

}  // namespace
}  // namespace agentd::test
