// The stdio transport against real MCP servers from npm (server-everything, server-memory) and
// misbehaving children written as small shell scripts: framing, ordering, exits, shutdown,
// environment and working directory.
#include <gtest/gtest.h>
#include <signal.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>

#include "agentd/mcp/config.hpp"
// The transport interface is private to the module (src/mcp); the test target has no src/
// include directory, hence the relative path.
#include "mcp/transport.hpp"

namespace agentd::test {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using mcp::json;
using Clock = std::chrono::steady_clock;

const std::string kInterop = AGENTD_INTEROP_DIR;

#define CO_ASSERT(cond)                            \
  do {                                             \
    if (!(cond)) {                                 \
      ADD_FAILURE() << "assertion failed: " #cond; \
      co_return;                                   \
    }                                              \
  } while (0)

#define CO_ASSERT_OK(r)                                          \
  do {                                                           \
    if (!(r)) {                                                  \
      ADD_FAILURE() << #r << " failed: " << (r).error().message; \
      co_return;                                                 \
    }                                                            \
  } while (0)

// Runs `body(executor, args...)` on its own io_context with a hard time limit; the loop is
// stopped as soon as the body is done (what is left is destroyed with the context).
template <class F, class... Args>
void run(std::chrono::seconds limit, F body, Args... args) {
  asio::io_context io;
  bool done = false;
  std::exception_ptr error;
  asio::co_spawn(io, body(io.get_executor(), std::move(args)...), [&](std::exception_ptr e) {
    done = true;
    error = e;
    io.stop();
  });
  io.run_for(limit);
  EXPECT_TRUE(done) << "the test did not finish within " << limit.count() << "s";
  if (error) std::rethrow_exception(error);
}

// Log lines, captured while also going where they went before.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sinks = previous_->sinks();
    sinks.push_back(std::make_shared<spdlog::sinks::ostream_sink_mt>(out_));
    auto logger = std::make_shared<spdlog::logger>("capture", sinks.begin(), sinks.end());
    logger->set_level(spdlog::level::info);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() const { return out_.str(); }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream out_;
};

mcp::ServerConfig stdio_config(std::string name, std::string command,
                               std::vector<std::string> args = {}) {
  mcp::ServerConfig c;
  c.name = std::move(name);
  c.transport = mcp::TransportKind::stdio;
  c.command = std::move(command);
  c.args = std::move(args);
  return c;
}

json request(int id, std::string method, json params) {
  json m = {{"jsonrpc", "2.0"}, {"id", id}, {"method", std::move(method)}};
  m["params"] = std::move(params);
  return m;
}

json initialize(int id) {
  json params = {{"protocolVersion", "2025-06-18"},
                 {"capabilities", json::object()},
                 {"clientInfo", {{"name", "agentd-test"}, {"version", "0"}}}};
  return request(id, "initialize", std::move(params));
}

json notification(std::string method) {
  return json{{"jsonrpc", "2.0"}, {"method", std::move(method)}};
}

json echo_call(int id, std::string text) {
  json params = {{"name", "echo"}, {"arguments", {{"message", std::move(text)}}}};
  return request(id, "tools/call", std::move(params));
}

// The response to `id`, skipping notifications and other messages on the way.
asio::awaitable<mcp::TResult<json>> receive_id(mcp::Transport& t, int id) {
  for (;;) {
    auto m = co_await t.receive();
    if (!m) co_return m;
    if (!m->contains("method") && m->contains("id") && (*m)["id"] == id) co_return m;
  }
}

std::set<std::string> tool_names(const json& result) {
  std::set<std::string> names;
  for (const auto& tool : result.value("tools", json::array())) {
    names.insert(tool.value("name", std::string()));
  }
  return names;
}

std::string first_text(const json& result) {
  const auto& content = result.value("content", json::array());
  if (content.empty()) return {};
  return content[0].value("text", std::string());
}

bool pid_gone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

// For a process that is not our child: once killed it is reparented, and whether the new parent
// reaps it is not up to us.
bool dead_or_zombie(pid_t pid) {
  if (pid_gone(pid)) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  auto paren = line.rfind(')');
  return paren != std::string::npos && line.size() > paren + 2 && line[paren + 2] == 'Z';
}

asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

// Waits (polling) until `pid` no longer exists, at most `limit`.
asio::awaitable<bool> wait_gone(pid_t pid, std::chrono::milliseconds limit) {
  auto deadline = Clock::now() + limit;
  while (!pid_gone(pid)) {
    if (Clock::now() > deadline) co_return false;
    co_await sleep_for(20ms);
  }
  co_return true;
}

class StdioTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "agentd-stdio-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // A shell script in the temp dir; returns its path.
  std::string script(const std::string& name, const std::string& body, bool executable = true) {
    auto path = dir_ + "/" + name;
    std::ofstream(path) << "#!/bin/sh\n" << body;
    ::chmod(path.c_str(), executable ? 0755 : 0644);
    return path;
  }

  std::string dir_;
};

// --- real servers -------------------------------------------------------------------------

asio::awaitable<void> everything_conversation(asio::any_io_executor ex) {
  auto config =
      stdio_config("everything", kInterop + "/node_modules/.bin/mcp-server-everything", {"stdio"});
  auto t = mcp::make_stdio_transport(ex, config);
  EXPECT_EQ(t->describe(), "stdio: " + kInterop + "/node_modules/.bin/mcp-server-everything stdio");
  auto started = co_await t->start();
  CO_ASSERT_OK(started);

  auto sent = co_await t->send(initialize(1));
  CO_ASSERT_OK(sent);
  auto init = co_await receive_id(*t, 1);
  CO_ASSERT_OK(init);
  EXPECT_EQ((*init)["result"].value("protocolVersion", std::string()), "2025-06-18");
  EXPECT_TRUE((*init)["result"].contains("serverInfo"));
  t->set_protocol_version("2025-06-18");
  sent = co_await t->send(notification("notifications/initialized"));
  CO_ASSERT_OK(sent);

  sent = co_await t->send(request(2, "tools/list", json::object()));
  CO_ASSERT_OK(sent);
  auto list = co_await receive_id(*t, 2);
  CO_ASSERT_OK(list);
  EXPECT_TRUE(tool_names((*list)["result"]).count("echo")) << list->dump();

  sent = co_await t->send(echo_call(3, "hello"));
  CO_ASSERT_OK(sent);
  auto echoed = co_await receive_id(*t, 3);
  CO_ASSERT_OK(echoed);
  EXPECT_EQ(first_text((*echoed)["result"]), "Echo: hello");

  // Two requests in flight: the answers correlate by id, whatever their order.
  sent = co_await t->send(echo_call(4, "four"));
  CO_ASSERT_OK(sent);
  sent = co_await t->send(request(5, "tools/list", json::object()));
  CO_ASSERT_OK(sent);
  std::map<int, json> answers;
  while (answers.size() < 2) {
    auto m = co_await t->receive();
    CO_ASSERT_OK(m);
    if (m->contains("method") || !m->contains("id") || !(*m)["id"].is_number_integer()) continue;
    answers[(*m)["id"].get<int>()] = (*m)["result"];
  }
  EXPECT_EQ(first_text(answers[4]), "Echo: four");
  EXPECT_TRUE(tool_names(answers[5]).count("echo"));

  // The server exits on its own when stdin closes: no signal needed.
  auto before = Clock::now();
  co_await t->close();
  EXPECT_LT(Clock::now() - before, 1900ms);
  auto after = co_await t->receive();
  EXPECT_FALSE(after);
  auto late = co_await t->send(notification("notifications/initialized"));
  EXPECT_FALSE(late);
  co_await t->close();  // twice is fine
}

TEST_F(StdioTransportTest, EverythingServerConversation) { run(60s, everything_conversation); }

asio::awaitable<void> memory_tools(asio::any_io_executor ex, std::string dir) {
  auto config = stdio_config("memory", kInterop + "/node_modules/.bin/mcp-server-memory");
  config.env["MEMORY_FILE_PATH"] = dir + "/memory.jsonl";
  auto t = mcp::make_stdio_transport(ex, config);
  auto started = co_await t->start();
  CO_ASSERT_OK(started);
  auto sent = co_await t->send(initialize(1));
  CO_ASSERT_OK(sent);
  auto init = co_await receive_id(*t, 1);
  CO_ASSERT_OK(init);
  EXPECT_TRUE((*init)["result"].contains("protocolVersion"));
  sent = co_await t->send(notification("notifications/initialized"));
  CO_ASSERT_OK(sent);
  sent = co_await t->send(request(2, "tools/list", json::object()));
  CO_ASSERT_OK(sent);
  auto list = co_await receive_id(*t, 2);
  CO_ASSERT_OK(list);
  EXPECT_TRUE(tool_names((*list)["result"]).count("create_entities")) << list->dump();
  co_await t->close();
}

TEST_F(StdioTransportTest, MemoryServerListsTools) { run(60s, memory_tools, dir_); }

// --- framing ------------------------------------------------------------------------------

asio::awaitable<void> garbage_between_messages(asio::any_io_executor ex, std::string script) {
  auto t = mcp::make_stdio_transport(ex, stdio_config("garbage", "/bin/sh", {script}), 1024);
  auto started = co_await t->start();
  CO_ASSERT_OK(started);
  std::vector<std::string> methods;
  for (;;) {
    auto m = co_await t->receive();
    if (!m) {
      EXPECT_NE(m.error().message.find("exited with code 0"), std::string::npos)
          << m.error().message;
      break;
    }
    methods.push_back(m->value("method", std::string("?")));
    if (methods.back() == "near_limit") {
      EXPECT_EQ((*m)["params"].value("pad", std::string()).size(), 900u);
    }
  }
  std::vector<std::string> want = {"one", "two", "near_limit", "three", "four"};
  EXPECT_EQ(methods, want);
  co_await t->close();
}

TEST_F(StdioTransportTest, GarbageAndHugeLinesAreSkipped) {
  auto path = script("garbage.sh", R"(
printf '%s\n' '{"jsonrpc":"2.0","method":"one"}'
printf '%s\n' 'this is not json'
printf '%s\n' '[1,2,3]'
printf '%s\n' '"a string"'
printf '%s' '{"jsonrpc":"2.0","method":"huge","params":{"pad":"'
head -c 200000 /dev/zero | tr '\0' x
printf '%s\n' '"}}'
printf '%s\r\n' '{"jsonrpc":"2.0","method":"two"}'
printf '\n   \n'
printf '%s' '{"jsonrpc":"2.0","method":"near_limit","params":{"pad":"'
head -c 900 /dev/zero | tr '\0' y
printf '%s\n' '"}}'
head -c 5000 /dev/zero | tr '\0' z
printf '\n%s\n' '{"jsonrpc":"2.0","method":"three","params":{"text":"caf\u00e9"}}'
printf '%s' '{"jsonrpc":"2.0","method":"four"}'
)");
  LogCapture logs;
  run(30s, garbage_between_messages, path);
  auto text = logs.text();
  EXPECT_NE(text.find("mcp[garbage]: skipped a stdout line that is not a JSON object: this is "
                      "not json"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("mcp[garbage]: dropped a stdout line of 200053 bytes"), std::string::npos)
      << text;
  EXPECT_NE(text.find("mcp[garbage]: dropped a stdout line of 5000 bytes"), std::string::npos)
      << text;
}

// Many concurrent send() calls with messages far bigger than a pipe's buffer: `cat` echoes
// every line back, and each one must come back whole and in order.
asio::awaitable<void> send_one(mcp::Transport* t, json message, std::shared_ptr<int> ok) {
  auto r = co_await t->send(std::move(message));
  if (r) ++*ok;
}

asio::awaitable<void> concurrent_sends(asio::any_io_executor ex) {
  auto t = mcp::make_stdio_transport(ex, stdio_config("cat", "cat"));
  auto started = co_await t->start();
  CO_ASSERT_OK(started);
  constexpr int kCount = 20;
  auto ok = std::make_shared<int>(0);
  for (int i = 0; i < kCount; ++i) {
    json params = {{"pad", std::string(100'000 + i, static_cast<char>('a' + i))}};
    asio::co_spawn(ex, send_one(t.get(), request(i, "echo", std::move(params)), ok),
                   asio::detached);
  }
  for (int i = 0; i < kCount; ++i) {
    auto m = co_await t->receive();
    CO_ASSERT_OK(m);
    EXPECT_EQ((*m)["id"], i);
    auto pad = (*m)["params"].value("pad", std::string());
    EXPECT_EQ(pad, std::string(100'000 + i, static_cast<char>('a' + i))) << "message " << i;
  }
  auto deadline = Clock::now() + 5s;
  while (*ok < kCount && Clock::now() < deadline) co_await sleep_for(10ms);
  EXPECT_EQ(*ok, kCount);

  // A receive() pending when close() starts fails instead of hanging.
  auto pending = std::make_shared<std::optional<std::string>>();
  asio::co_spawn(
      ex,
      [](mcp::Transport* tr,
         std::shared_ptr<std::optional<std::string>> out) -> asio::awaitable<void> {
        auto r = co_await tr->receive();
        *out = r ? std::string("a message") : r.error().message;
      }(t.get(), pending),
      asio::detached);
  co_await sleep_for(50ms);
  EXPECT_FALSE(pending->has_value());
  co_await t->close();
  co_await sleep_for(10ms);
  CO_ASSERT(pending->has_value());
  EXPECT_NE((*pending)->find("closed"), std::string::npos) << **pending;
}

TEST_F(StdioTransportTest, ConcurrentSendsDoNotInterleave) { run(30s, concurrent_sends); }

// A server that writes faster than agentd receives is held back in its pipe: the transport
// buffers a bounded amount (here the 64 KiB minimum), not all it is sent.
asio::awaitable<void> backpressure(asio::any_io_executor ex, std::string script, std::string done,
                                   int count) {
  auto t = mcp::make_stdio_transport(
      ex, stdio_config("flood", "/bin/sh", {script, done, std::to_string(count)}), 2048);
  auto started = co_await t->start();
  CO_ASSERT_OK(started);
  co_await sleep_for(1500ms);  // nobody receives
  EXPECT_FALSE(fs::exists(done)) << "the child wrote everything: nothing held it back";
  for (int i = 0; i < count; ++i) {
    auto m = co_await t->receive();
    CO_ASSERT_OK(m);
    if ((*m)["params"]["n"] != i) {
      ADD_FAILURE() << "message " << i << " is " << m->dump().substr(0, 100);
      co_return;
    }
  }
  auto gone = co_await t->receive();
  EXPECT_FALSE(gone);
  EXPECT_TRUE(fs::exists(done));
  co_await t->close();
}

// The child writes more than the transport buffers, then exits while the rest waits in the
// pipe; agentd receives only later (after the transport's drain grace): nothing is lost.
asio::awaitable<void> tail_after_exit(asio::any_io_executor ex, std::string script,
                                      std::string done, int count) {
  auto t = mcp::make_stdio_transport(
      ex, stdio_config("tail", "/bin/sh", {script, done, std::to_string(count)}), 2048);
  auto started = co_await t->start();
  CO_ASSERT_OK(started);
  auto deadline = Clock::now() + 10s;
  while (!fs::exists(done) && Clock::now() < deadline) co_await sleep_for(20ms);
  CO_ASSERT(fs::exists(done));
  co_await sleep_for(1500ms);  // the child has exited; part of its output is still in the pipe
  for (int i = 0; i < count; ++i) {
    auto m = co_await t->receive();
    CO_ASSERT_OK(m);
    if ((*m)["params"]["n"] != i) {
      ADD_FAILURE() << "message " << i << " is " << m->dump().substr(0, 100);
      co_return;
    }
  }
  auto gone = co_await t->receive();
  CO_ASSERT(!gone);
  EXPECT_NE(gone.error().message.find("exited with code 0"), std::string::npos)
      << gone.error().message;
  co_await t->close();
}

// Writes $2 messages of about 1 KB, then creates the file $1.
constexpr const char* kFlood = R"(
pad=$(head -c 1000 /dev/zero | tr '\0' p)
i=0
while [ $i -lt $2 ]; do
  printf '{"jsonrpc":"2.0","method":"m","params":{"n":%d,"pad":"%s"}}\n' $i "$pad"
  i=$((i + 1))
done
touch "$1"
)";

TEST_F(StdioTransportTest, SlowReceiverHoldsBackTheChild) {
  run(60s, backpressure, script("flood.sh", kFlood), dir_ + "/done", 5000);
}

TEST_F(StdioTransportTest, MessagesWrittenBeforeExitAreAllDelivered) {
  // 100 KB: more than the transport's 64 KiB inbox, less than that plus the pipe's buffer.
  run(60s, tail_after_exit, script("flood.sh", kFlood), dir_ + "/done", 100);
}

// --- the child goes away ------------------------------------------------------------------

asio::awaitable<void> exits_mid_conversation(asio::any_io_executor ex, std::string exits,
                                             std::string killed) {
  {
    auto t = mcp::make_stdio_transport(ex, stdio_config("quitter", exits));
    auto started = co_await t->start();
    CO_ASSERT_OK(started);
    auto sent = co_await t->send(request(1, "tools/list", json::object()));
    CO_ASSERT_OK(sent);
    auto answer = co_await t->receive();
    CO_ASSERT_OK(answer);
    EXPECT_EQ((*answer)["id"], 1);
    auto gone = co_await t->receive();
    CO_ASSERT(!gone);
    EXPECT_NE(gone.error().message.find("exited with code 7"), std::string::npos)
        << gone.error().message;
    auto again = co_await t->receive();  // stays failed
    EXPECT_FALSE(again);
    auto late = co_await t->send(request(2, "tools/list", json::object()));
    CO_ASSERT(!late);
    EXPECT_NE(late.error().message.find("exited with code 7"), std::string::npos)
        << late.error().message;
    co_await t->close();
  }
  {
    auto t = mcp::make_stdio_transport(ex, stdio_config("crasher", killed));
    auto started = co_await t->start();
    CO_ASSERT_OK(started);
    auto gone = co_await t->receive();
    CO_ASSERT(!gone);
    EXPECT_NE(gone.error().message.find("exited on signal 9 (SIGKILL)"), std::string::npos)
        << gone.error().message;
    co_await t->close();
  }
}

TEST_F(StdioTransportTest, ChildExitingFailsReceiveWithItsStatus) {
  auto exits = script("exits.sh", R"(
read -r line
printf '%s\n' '{"jsonrpc":"2.0","id":1,"result":{}}'
exit 7
)");
  auto killed = script("killed.sh", "kill -KILL $$\n");
  run(30s, exits_mid_conversation, exits, killed);
}

// Ignores stdin and SIGTERM, and has a child of its own that does too.
constexpr const char* kStubborn = R"(
trap '' TERM
sleep 300 &
printf '{"jsonrpc":"2.0","method":"pid","params":{"pid":%d,"grandchild":%d}}\n' $$ $!
while :; do sleep 1; done
)";

asio::awaitable<void> stubborn_child(asio::any_io_executor ex, std::string script) {
  auto t = mcp::make_stdio_transport(ex, stdio_config("stubborn", "/bin/sh", {script}));
  auto started = co_await t->start();
  CO_ASSERT_OK(started);
  auto hello = co_await t->receive();
  CO_ASSERT_OK(hello);
  auto pid = (*hello)["params"].value("pid", 0);
  auto grandchild = (*hello)["params"].value("grandchild", 0);
  CO_ASSERT(pid > 0 && grandchild > 0);

  // The child never reads stdin: this send blocks in a full pipe until close() ends it.
  auto blocked = std::make_shared<std::optional<bool>>();
  asio::co_spawn(
      ex,
      [](mcp::Transport* tr, std::shared_ptr<std::optional<bool>> out) -> asio::awaitable<void> {
        json big = {{"jsonrpc", "2.0"}, {"method", "big"}, {"params", std::string(1 << 20, 'b')}};
        auto r = co_await tr->send(std::move(big));
        *out = static_cast<bool>(r);
      }(t.get(), blocked),
      asio::detached);
  co_await sleep_for(100ms);
  EXPECT_FALSE(blocked->has_value());

  auto before = Clock::now();
  co_await t->close();
  auto took = Clock::now() - before;
  EXPECT_GT(took, 3500ms);  // stdin closed, 2 s; SIGTERM, 2 s; SIGKILL
  EXPECT_LT(took, 6s);
  EXPECT_TRUE(pid_gone(pid)) << "pid " << pid << " still exists (or is a zombie)";
  // Signals go to the child's process group: what it spawned dies with it.
  auto deadline = Clock::now() + 2s;
  while (!dead_or_zombie(grandchild) && Clock::now() < deadline) co_await sleep_for(20ms);
  EXPECT_TRUE(dead_or_zombie(grandchild)) << "grandchild " << grandchild;
  CO_ASSERT(blocked->has_value());
  EXPECT_FALSE(**blocked);

  auto second = Clock::now();
  co_await t->close();
  EXPECT_LT(Clock::now() - second, 100ms);
}

TEST_F(StdioTransportTest, CloseEscalatesToSigkill) {
  auto path = script("stubborn.sh", kStubborn);
  LogCapture logs;
  run(30s, stubborn_child, path);
  auto text = logs.text();
  EXPECT_NE(text.find("sending SIGTERM"), std::string::npos) << text;
  EXPECT_NE(text.find("sending SIGKILL"), std::string::npos) << text;
}

asio::awaitable<void> destroyed_without_close(asio::any_io_executor ex, std::string script) {
  auto t = mcp::make_stdio_transport(ex, stdio_config("dropped", "/bin/sh", {script}));
  auto started = co_await t->start();
  CO_ASSERT_OK(started);
  auto hello = co_await t->receive();
  CO_ASSERT_OK(hello);
  auto pid = (*hello)["params"].value("pid", 0);
  auto grandchild = (*hello)["params"].value("grandchild", 0);
  CO_ASSERT(pid > 0 && grandchild > 0);
  t.reset();
  // Killed at once and reaped by the loop: no zombie left behind.
  bool gone = co_await wait_gone(pid, 3s);  // (not inside a condition: GCC 12)
  EXPECT_TRUE(gone) << "pid " << pid;
  auto deadline = Clock::now() + 2s;
  while (!dead_or_zombie(grandchild) && Clock::now() < deadline) co_await sleep_for(20ms);
  EXPECT_TRUE(dead_or_zombie(grandchild)) << "grandchild " << grandchild;
}

TEST_F(StdioTransportTest, DestroyedWithoutCloseKillsAndReaps) {
  run(30s, destroyed_without_close, script("stubborn.sh", kStubborn));
}

asio::awaitable<void> start_and_get_pid(asio::any_io_executor ex, std::string script,
                                        std::unique_ptr<mcp::Transport>* keep, int* pid) {
  auto t = mcp::make_stdio_transport(ex, stdio_config("orphan", "/bin/sh", {script}));
  auto started = co_await t->start();
  CO_ASSERT_OK(started);
  auto hello = co_await t->receive();
  CO_ASSERT_OK(hello);
  *pid = (*hello)["params"].value("pid", 0);
  *keep = std::move(t);
}

TEST_F(StdioTransportTest, DestroyedAfterTheLoopStoppedKillsAndReaps) {
  auto path = script("stubborn.sh", kStubborn);
  int pid = 0;
  {
    std::unique_ptr<mcp::Transport> keep;
    asio::io_context io;
    asio::co_spawn(io, start_and_get_pid(io.get_executor(), path, &keep, &pid),
                   [&](std::exception_ptr) { io.stop(); });
    io.run_for(30s);
    ASSERT_GT(pid, 0);
    ASSERT_TRUE(keep);
    // The loop never runs again: the transport, then the context's pending tasks, go away.
    keep.reset();
  }
  EXPECT_TRUE(pid_gone(pid)) << "pid " << pid << " still exists (or is a zombie)";
}

// --- stderr, start-up errors, environment -------------------------------------------------

asio::awaitable<void> noisy_child(asio::any_io_executor ex, std::string script) {
  auto t = mcp::make_stdio_transport(ex, stdio_config("noisy", "/bin/sh", {script}));
  auto started = co_await t->start();
  CO_ASSERT_OK(started);
  for (int i = 0; i < 3; ++i) {
    auto sent = co_await t->send(request(i, "ping", json::object()));
    CO_ASSERT_OK(sent);
    auto back = co_await t->receive();
    CO_ASSERT_OK(back);
    EXPECT_EQ((*back)["id"], i);
  }
  co_await t->close();
}

TEST_F(StdioTransportTest, StderrIsLoggedNotFatal) {
  auto path = script("noisy.sh", R"(
printf 'hello from stderr\n' >&2
head -c 100000 /dev/zero | tr '\0' e >&2
printf '\nescape \033[31m red\n' >&2
while read -r line; do
  printf 'echoing a line\n' >&2
  printf '%s\n' "$line"
done
printf 'no newline at the end' >&2
)");
  LogCapture logs;
  run(30s, noisy_child, path);
  auto text = logs.text();
  EXPECT_NE(text.find("mcp[noisy] stderr: hello from stderr"), std::string::npos) << text;
  EXPECT_NE(text.find("mcp[noisy] stderr: echoing a line"), std::string::npos) << text;
  EXPECT_NE(text.find("mcp[noisy] stderr: escape ?[31m red"), std::string::npos) << text;
  EXPECT_NE(text.find("mcp[noisy] stderr: no newline at the end"), std::string::npos) << text;
  EXPECT_NE(text.find("(100000 bytes)"), std::string::npos) << text;
  // The long line is logged truncated.
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) EXPECT_LT(line.size(), 5000u);
}

asio::awaitable<void> start_errors(asio::any_io_executor ex, std::string dir) {
  {
    auto t = mcp::make_stdio_transport(ex, stdio_config("missing", "agentd-no-such-command-xyz"));
    auto r = co_await t->start();
    CO_ASSERT(!r);
    EXPECT_NE(r.error().message.find("agentd-no-such-command-xyz"), std::string::npos)
        << r.error().message;
    EXPECT_NE(r.error().message.find("not found"), std::string::npos) << r.error().message;
    auto sent = co_await t->send(notification("x"));
    EXPECT_FALSE(sent);
    co_await t->close();
  }
  {
    auto t = mcp::make_stdio_transport(ex, stdio_config("missing", dir + "/no/such/tool"));
    auto r = co_await t->start();
    CO_ASSERT(!r);
    EXPECT_NE(r.error().message.find(dir + "/no/such/tool"), std::string::npos)
        << r.error().message;
  }
  {
    auto t = mcp::make_stdio_transport(ex, stdio_config("noexec", dir + "/plain.sh"));
    auto r = co_await t->start();
    CO_ASSERT(!r);
    EXPECT_NE(r.error().message.find("Permission denied"), std::string::npos) << r.error().message;
  }
  {
    auto config = stdio_config("nocwd", "sh", {"-c", "true"});
    config.cwd = dir + "/no-such-dir";
    auto t = mcp::make_stdio_transport(ex, config);
    auto r = co_await t->start();
    CO_ASSERT(!r);
    EXPECT_NE(r.error().message.find(dir + "/no-such-dir"), std::string::npos) << r.error().message;
  }
  {
    // Executable but not a program: exec itself fails, in the forked child.
    auto t = mcp::make_stdio_transport(ex, stdio_config("badexec", dir + "/not-a-program"));
    auto r = co_await t->start();
    CO_ASSERT(!r);
    EXPECT_NE(r.error().message.find("Exec format error"), std::string::npos) << r.error().message;
    // The child whose exec failed was reaped.
    int status = 0;
    EXPECT_EQ(::waitpid(-1, &status, WNOHANG), -1);
  }
}

TEST_F(StdioTransportTest, StartErrorsNameTheCommand) {
  script("plain.sh", "exit 0\n", false);
  {
    std::ofstream(dir_ + "/not-a-program") << "just some text\n";
    ::chmod((dir_ + "/not-a-program").c_str(), 0755);
  }
  run(30s, start_errors, dir_);
}

asio::awaitable<void> env_and_cwd(asio::any_io_executor ex, std::string dir, std::string script) {
  auto config = stdio_config("env", "sh", {script});  // found through PATH
  config.env["AGENTD_TEST_FOO"] = "bar baz";
  config.env["AGENTD_TEST_OVERRIDE"] = "child";
  config.cwd = dir + "/work";
  auto t = mcp::make_stdio_transport(ex, config);
  EXPECT_EQ(t->describe(), "stdio: sh " + script);  // no environment values
  auto started = co_await t->start();
  CO_ASSERT_OK(started);
  auto m = co_await t->receive();
  CO_ASSERT_OK(m);
  const auto& p = (*m)["params"];
  EXPECT_EQ(fs::canonical(p.value("cwd", std::string("/nonexistent-x"))),
            fs::canonical(dir + "/work"));
  EXPECT_EQ(p.value("foo", std::string()), "bar baz");
  EXPECT_EQ(p.value("override", std::string()), "child");
  EXPECT_EQ(p.value("inherited", std::string()), "from agentd");
  co_await t->close();

  // A relative command with a '/' is relative to the working directory.
  auto relative = stdio_config("relative", "./tool.sh");
  relative.cwd = dir + "/work";
  auto t2 = mcp::make_stdio_transport(ex, relative);
  auto started2 = co_await t2->start();
  CO_ASSERT_OK(started2);
  auto m2 = co_await t2->receive();
  CO_ASSERT_OK(m2);
  EXPECT_EQ(m2->value("method", std::string()), "tool");
  co_await t2->close();
}

TEST_F(StdioTransportTest, EnvironmentAndWorkingDirectoryApply) {
  fs::create_directory(dir_ + "/work");
  auto path = script("env.sh", R"sh(
printf '{"jsonrpc":"2.0","method":"env","params":{"cwd":"%s","foo":"%s","override":"%s","inherited":"%s"}}\n' \
  "$(pwd)" "$AGENTD_TEST_FOO" "$AGENTD_TEST_OVERRIDE" "$AGENTD_TEST_INHERITED"
)sh");
  script("work/tool.sh", "printf '%s\\n' '{\"jsonrpc\":\"2.0\",\"method\":\"tool\"}'\n");
  ::setenv("AGENTD_TEST_OVERRIDE", "parent", 1);
  ::setenv("AGENTD_TEST_INHERITED", "from agentd", 1);
  run(30s, env_and_cwd, dir_, path);
  ::unsetenv("AGENTD_TEST_OVERRIDE");
  ::unsetenv("AGENTD_TEST_INHERITED");
}

}  // namespace
}  // namespace agentd::test
