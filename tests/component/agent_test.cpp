// The agent planner end to end: the agentd binary runs agents and workflows against the
// scripted LLM double (in this process) and server-everything (agentd's stdio child), driven
// through /v1/intents, its event streams, cancel, input and artifacts; and an agent with a local
// (bubblewrap) sandbox across a SIGKILL of agentd and its restart.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "support/fake_llm.hpp"
#include "support/http_client.hpp"
#include "support/pg_server.hpp"
#include "support/process.hpp"
#include "support/tls_cert.hpp"

namespace agentd::test {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using Hdrs = std::vector<std::pair<std::string, std::string>>;
using Clock = std::chrono::steady_clock;

const std::string kBinary = AGENTD_BINARY;
const std::string kInterop = AGENTD_INTEROP_DIR;
const std::string kAlice = "sk-agent-alice-0123456789";
const std::string kBob = "sk-agent-bob-0123456789";
const std::string kLimited = "sk-agent-limited-0123456789";

struct Options {
  bool mcp = false;     // server-everything as a stdio child, and the agents that use it
  std::string intents;  // extra keys of the intents section, as "key: value, ..." (flow style)
  bool sandbox = false;  // a local (bubblewrap) sandbox backend, and the agent `coder` using it
};

// `postgres`: store.postgres (empty: SQLite in the data dir); `sandbox_keys`: extra keys of the
// sandbox section, as "key: value, ..." (flow style).
std::string config_yaml(const std::string& fake_url, const std::string& data_dir,
                        const Options& o, const std::string& postgres = {},
                        const std::string& sandbox_keys = {}) {
  std::string y = R"(server: { listen: 127.0.0.1:0 }
clients:
  - { name: alice, token: )" +
                  kAlice + R"(, scopes: ["*"] }
  - { name: bob, token: )" +
                  kBob + R"(, scopes: ["*"] }
  - { name: limited, token: )" +
                  kLimited + R"(, scopes: ["agents:plain"] }
log: { level: warn, access_log: false }
store: { data_dir: )" +
                  data_dir + (postgres.empty() ? "" : ", postgres: \"" + postgres + "\"") + R"( }
ai:
  providers: [{ name: fake, kind: openai, base_url: )" +
                  fake_url + R"(/v1, api_key: fake-key }]
  models: [{ name: m, targets: [fake/gpt-4o-mini] }]
  retry: { attempts: 1 }
  cache: { enabled: false }  # every model call reaches the double and takes its scripted answer
agents:
  - { name: plain, model: m, instruction: "You are plain.", max_iterations: 3 }
  - { name: a, model: m, instruction: "You are agent A.", description: "drafts" }
  - { name: b, model: m, instruction: "You are agent B.", description: "reviews" }
  - { name: c, model: m, instruction: "You are agent C.", description: "merges" }
  - { name: boss, model: m, instruction: "You delegate.", agents: [a], max_iterations: 4 }
  - { name: asker, model: m, instruction: "You ask.", ask_user: true, max_iterations: 4 }
  - { name: grader, model: m, instruction: "You grade." }
  - name: structured
    model: m
    instruction: "You count."
    output_schema: { type: object, properties: { n: { type: integer } }, required: [n] }
)";
  if (o.mcp) {
    y +=
        R"(  - { name: tooler, model: m, instruction: "You use tools.", servers: [everything], max_iterations: 4 }
  - { name: serial, model: m, servers: [everything], parallel_tool_calls: false }
mcp:
  servers:
    - name: everything
      transport: stdio
      command: node
      args: [)" +
        kInterop + R"(/node_modules/@modelcontextprotocol/server-everything/dist/index.js, stdio]
      cwd: )" +
        kInterop + R"(
      call_timeout: 30s
)";
  }
  if (o.sandbox) {
    y +=
        R"(  - { name: coder, model: m, instruction: "You run code.", sandbox: true, max_iterations: 4 }
sandbox:
  backend: local
  local: { cpu_seconds: 30, memory: 256MiB, max_processes: 32 }
)";
    if (!sandbox_keys.empty()) {
      for (std::size_t pos = 0; pos < sandbox_keys.size();) {
        auto end = std::min(sandbox_keys.find(", ", pos), sandbox_keys.size());
        y += "  " + sandbox_keys.substr(pos, end - pos) + "\n";
        pos = end + 2;
      }
    }
  }
  y += R"(workflows:
  - { name: chain1, kind: chain, steps: [a, b] }
  - { name: par, kind: parallel, steps: [a, b], fan_in: c }
  - { name: route1, kind: router, steps: [a, b], model: m }
  - { name: evo, kind: evaluator_optimizer, generator: a, evaluator: grader, min_rating: good }
  - { name: orch, kind: orchestrator, steps: [a, b], model: m, max_iterations: 3 }
)";
  // The intents section: these keys, replaced or added to by o.intents ("k: v, k: v").
  std::map<std::string, std::string> intents{
      {"default_agent", "plain"}, {"timeout", "60s"},  {"step_timeout", "20s"},
      {"input_timeout", "20s"},   {"keepalive", "1s"}, {"max_intent_size", "1KiB"},
      {"max_body_size", "16KiB"}};
  for (std::size_t pos = 0; pos < o.intents.size();) {
    auto end = std::min(o.intents.find(", ", pos), o.intents.size());
    auto item = o.intents.substr(pos, end - pos);
    auto colon = item.find(": ");
    intents[item.substr(0, colon)] = item.substr(colon + 2);
    pos = end + 2;
  }
  y += "intents:\n";
  for (const auto& [k, v] : intents) y += "  " + k + ": " + v + "\n";
  return y;
}

struct Event {
  std::string id;
  std::string type;
  json data;
};

// Splits SSE text into events (comments and partial trailing events are left out).
std::vector<Event> parse_sse(const std::string& text, std::size_t* consumed = nullptr) {
  std::vector<Event> out;
  std::size_t pos = 0;
  for (std::size_t end; (end = text.find("\n\n", pos)) != std::string::npos; pos = end + 2) {
    Event e;
    std::string data;
    std::size_t lp = pos;
    while (lp < end) {
      auto le = std::min(text.find('\n', lp), end);
      std::string line = text.substr(lp, le - lp);
      lp = le + 1;
      if (line.rfind("id: ", 0) == 0) e.id = line.substr(4);
      if (line.rfind("event: ", 0) == 0) e.type = line.substr(7);
      if (line.rfind("data: ", 0) == 0) data += line.substr(6);
    }
    if (e.type.empty() && data.empty()) continue;  // a keepalive comment
    e.data = json::parse(data, nullptr, false);
    out.push_back(std::move(e));
  }
  if (consumed) *consumed = pos;
  return out;
}

// Stream ids are "<ms>-<seq>".
std::pair<std::uint64_t, std::uint64_t> stream_id(const std::string& id) {
  auto dash = id.find('-');
  if (dash == std::string::npos) return {0, 0};
  return {std::stoull(id.substr(0, dash)), std::stoull(id.substr(dash + 1))};
}

void expect_increasing_ids(const std::vector<Event>& events) {
  for (std::size_t i = 1; i < events.size(); ++i) {
    EXPECT_LT(stream_id(events[i - 1].id), stream_id(events[i].id))
        << events[i - 1].id << " then " << events[i].id;
  }
}

bool is_terminal(const std::string& type) {
  return type == "intent.completed" || type == "intent.failed" || type == "intent.cancelled";
}

// Reads an event stream as it comes: chunked framing undone, events handed out one by one.
class EventReader {
 public:
  EventReader(std::unique_ptr<Connection> c, HttpResponse head)
      : conn_(std::move(c)), head_(std::move(head)) {}
  const HttpResponse& head() const { return head_; }

  // The next event, or nullopt when none arrives within `timeout` (or the stream ends).
  std::optional<Event> next(std::chrono::milliseconds timeout = 20s) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
      if (!ready_.empty()) {
        Event e = std::move(ready_.front());
        ready_.erase(ready_.begin());
        return e;
      }
      if (ended_) return std::nullopt;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left <= 0ms) return std::nullopt;
      std::string got = conn_->read_some(left);
      if (got.empty()) return std::nullopt;
      raw_ += got;
      decode();
    }
  }
  // Every event up to and including the final one.
  std::vector<Event> until_terminal(std::chrono::milliseconds timeout = 30s) {
    std::vector<Event> out;
    auto deadline = Clock::now() + timeout;
    while (auto e = next(
               std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()))) {
      out.push_back(*e);
      if (is_terminal(e->type)) break;
    }
    return out;
  }
  std::optional<Event> until(const std::string& type, std::vector<Event>* seen = nullptr) {
    while (auto e = next()) {
      if (seen) seen->push_back(*e);
      if (e->type == type) return e;
      if (is_terminal(e->type)) break;
    }
    return std::nullopt;
  }

 private:
  void decode() {
    for (;;) {
      auto eol = raw_.find("\r\n");
      if (eol == std::string::npos) return;
      std::size_t size = std::stoul(raw_.substr(0, eol), nullptr, 16);
      if (raw_.size() < eol + 2 + size + 2) return;
      body_.append(raw_, eol + 2, size);
      raw_.erase(0, eol + 2 + size + 2);
      if (size == 0) ended_ = true;
      std::size_t used = 0;
      for (auto& e : parse_sse(body_, &used)) ready_.push_back(std::move(e));
      body_.erase(0, used);
    }
  }
  std::unique_ptr<Connection> conn_;
  HttpResponse head_;
  std::string raw_, body_;
  std::vector<Event> ready_;
  bool ended_ = false;
};

// One agentd process (restartable on the same data dir) and the LLM double it talks to.
class Agentd {
 public:
  explicit Agentd(Options o = {}, const std::string& postgres = {}, const std::string& sandbox_keys = {})
      : dir_(make_temp_dir("agentd-agent-")) {
    std::ofstream(dir_ + "/agentd.yaml") << config_yaml(fake.url(), dir_ + "/data", o, postgres, sandbox_keys);
    start();
  }
  ~Agentd() {
    if (process_) {
      process_->signal(SIGKILL);
      process_->wait(10s);
    }
  }

  void start() {
    process_ = std::make_unique<Process>(
        kBinary, std::vector<std::string>{"-c", dir_ + "/agentd.yaml"}, std::vector<std::string>{},
        std::vector<std::string>{"AGENTD_TOKEN"}, dir_, dir_ + "/stderr.log");
    std::string seen;
    auto line = process_->wait_for_line("agentd listening on ", 30s, &seen);
    ASSERT_TRUE(line) << seen << log();
    std::smatch m;
    ASSERT_TRUE(std::regex_search(*line, m, std::regex("127\\.0\\.0\\.1:([0-9]+)"))) << *line;
    port = static_cast<std::uint16_t>(std::stoi(m[1]));
  }
  void kill() {
    process_->signal(SIGKILL);
    process_->wait(10s);
    process_.reset();
  }
  std::string data_dir() const { return dir_ + "/data"; }
  std::string log() const {
    std::ifstream in(dir_ + "/stderr.log");
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }

  HttpResponse call(const std::string& method, const std::string& path,
                    const std::string& body = {}, const std::string& token = kAlice,
                    Hdrs extra = {}) {
    Hdrs h = std::move(extra);
    if (!token.empty()) h.emplace_back("Authorization", "Bearer " + token);
    if (!body.empty()) h.emplace_back("Content-Type", "application/json");
    auto r = request(port, method, path, h, body);
    EXPECT_TRUE(r) << method << " " << path << " got no response";
    return r.value_or(HttpResponse{});
  }
  json call_json(const std::string& method, const std::string& path, const json& body = nullptr,
                 const std::string& token = kAlice) {
    auto r = call(method, path, body.is_null() ? std::string() : body.dump(), token);
    return json::parse(r.body, nullptr, false);
  }

  // POST /v1/intents without streaming: the new intent's id ("" on failure).
  std::string start_intent(const json& body, const std::string& token = kAlice) {
    auto r = call("POST", "/v1/intents", body.dump(), token);
    EXPECT_EQ(r.status, 202) << r.body;
    return json::parse(r.body, nullptr, false).value("id", "");
  }
  // POST /v1/intents with Accept: text/event-stream.
  std::unique_ptr<EventReader> stream_intent(const json& body) {
    return open_stream("POST", "/v1/intents", body.dump(), {});
  }
  std::unique_ptr<EventReader> events(const std::string& id,
                                      const std::string& last_event_id = {}) {
    Hdrs h;
    if (!last_event_id.empty()) h.emplace_back("Last-Event-ID", last_event_id);
    return open_stream("GET", "/v1/intents/" + id + "/events", {}, std::move(h));
  }
  // Every event of a finished (or finishing) intent, from the start.
  std::vector<Event> all_events(const std::string& id) {
    auto s = events(id);
    return s ? s->until_terminal() : std::vector<Event>{};
  }

  json intent(const std::string& id, const std::string& query = {}) {
    return call_json("GET", "/v1/intents/" + id + query);
  }
  // Polls until the intent's status is `status` (or final); its JSON.
  json wait_status(const std::string& id, const std::string& status,
                   std::chrono::milliseconds timeout = 30s) {
    auto deadline = Clock::now() + timeout;
    json i;
    while (Clock::now() < deadline) {
      i = intent(id);
      auto s = i.value("status", "");
      if (s == status || s == "completed" || s == "failed" || s == "cancelled") return i;
      std::this_thread::sleep_for(50ms);
    }
    return i;
  }

  // Waits until the MCP catalog lists `tool` (server-everything starts in the background).
  void wait_tool(const std::string& tool) {
    Hdrs h{{"Authorization", "Bearer " + kAlice},
           {"Content-Type", "application/json"},
           {"Accept", "application/json, text/event-stream"}};
    auto init = request(
        port, "POST", "/mcp", h,
        R"({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",)"
        R"("capabilities":{},"clientInfo":{"name":"agent_test","version":"1"}}})");
    ASSERT_TRUE(init && init->status == 200) << (init ? init->body : "no response");
    h.emplace_back("Mcp-Session-Id", init->header("mcp-session-id"));
    auto deadline = Clock::now() + 30s;
    while (Clock::now() < deadline) {
      auto list =
          request(port, "POST", "/mcp", h, R"({"jsonrpc":"2.0","id":2,"method":"tools/list"})");
      if (list && list->body.find("\"" + tool + "\"") != std::string::npos) return;
      std::this_thread::sleep_for(100ms);
    }
    FAIL() << tool << " never appeared in the catalog\n" << log();
  }

  // The chat requests the double received, oldest first.
  std::vector<json> chats() const {
    std::vector<json> out;
    for (const auto& r : fake.requests()) {
      if (r.path == "/v1/chat/completions") out.push_back(r.json());
    }
    return out;
  }
  void wait_chats(std::size_t n, std::chrono::milliseconds timeout = 20s) const {
    auto deadline = Clock::now() + timeout;
    while (chats().size() < n && Clock::now() < deadline) std::this_thread::sleep_for(20ms);
    ASSERT_GE(chats().size(), n);
  }

  FakeLlm fake;
  std::uint16_t port = 0;

 private:
  std::unique_ptr<EventReader> open_stream(const std::string& method, const std::string& path,
                                           const std::string& body, Hdrs h) {
    auto c = Connection::open(port);
    if (!c) {
      ADD_FAILURE() << "cannot connect";
      return nullptr;
    }
    h.emplace_back("Authorization", "Bearer " + kAlice);
    h.emplace_back("Accept", "text/event-stream");
    if (!body.empty()) h.emplace_back("Content-Type", "application/json");
    c->send(build_request(method, path, h, body));
    auto head = c->read_head(10s);
    if (!head) {
      ADD_FAILURE() << method << " " << path << ": no response head";
      return nullptr;
    }
    return std::make_unique<EventReader>(std::move(c), std::move(*head));
  }

  std::string dir_;
  std::unique_ptr<Process> process_;
};

std::vector<std::string> types(const std::vector<Event>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) {
    if (e.type != "llm.delta") out.push_back(e.type);
  }
  return out;
}

const Event* find(const std::vector<Event>& events, const std::string& type, std::size_t nth = 0) {
  for (const auto& e : events) {
    if (e.type == type && nth-- == 0) return &e;
  }
  return nullptr;
}

std::size_t index_of(const std::vector<Event>& events, const std::string& type,
                     std::size_t nth = 0) {
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (events[i].type == type && nth-- == 0) return i;
  }
  return events.size();
}

// Whether the events end with `type` (and, when given, that event's `code`).
::testing::AssertionResult ends_with(const std::vector<Event>& ev, const std::string& type,
                                     const std::string& code = {}) {
  if (ev.empty()) return ::testing::AssertionFailure() << "no events";
  const Event& last = ev.back();
  if (last.type != type || (!code.empty() && last.data.value("code", "") != code)) {
    return ::testing::AssertionFailure() << "ends with " << last.type << " " << last.data.dump();
  }
  return ::testing::AssertionSuccess();
}

// The tool messages of a chat request.
std::vector<json> tool_messages(const json& chat) {
  std::vector<json> out;
  for (const auto& m : chat["messages"]) {
    if (m.value("role", "") == "tool") out.push_back(m);
  }
  return out;
}

std::string system_prompt(const json& chat) { return chat["messages"][0].value("content", ""); }
std::string last_user(const json& chat) {
  std::string out;
  for (const auto& m : chat["messages"]) {
    if (m.value("role", "") == "user") out = m.value("content", "");
  }
  return out;
}

FakeToolCall tool(std::string name, std::string arguments, std::string id = {}) {
  return FakeToolCall{std::move(name), std::move(arguments), std::move(id)};
}

Action usage(Action a, int prompt, int completion) {
  a.usage = FakeUsage{prompt, completion, 0, 0};
  return a;
}

// --- the tool loop ---------------------------------------------------------------------------

TEST(AgentToolLoop, EchoThroughServerEverythingEndToEnd) {
  Agentd d({true, ""});
  d.wait_tool("everything__echo");
  d.fake.script({Action::tools({tool("everything__echo", R"({"message":"hi there"})", "call_e1")}),
                 Action::reply("The tool said hi.")});
  auto s = d.stream_intent({{"intent", "say hi"}, {"agent", "tooler"}});
  ASSERT_TRUE(s);
  EXPECT_EQ(s->head().status, 200);
  EXPECT_NE(s->head().header("x-agentd-intent-id"), "");
  auto ev = s->until_terminal();
  ASSERT_TRUE(ends_with(ev, "intent.completed"));
  EXPECT_EQ(types(ev), (std::vector<std::string>{"intent.accepted", "step.started", "tool.call",
                                                 "tool.result", "message", "intent.completed"}));
  expect_increasing_ids(ev);
  const Event* call = find(ev, "tool.call");
  ASSERT_TRUE(call);
  EXPECT_EQ(call->data["tool"], "everything__echo");
  EXPECT_EQ(call->data["arguments"]["message"], "hi there");
  const Event* result = find(ev, "tool.result");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->data["is_error"], false);
  EXPECT_EQ(result->data["content"][0]["text"], "Echo: hi there");
  EXPECT_EQ(ev.back().data["result"]["text"], "The tool said hi.");
  std::string id = ev.back().data["intent_id"].get<std::string>();

  auto chats = d.chats();
  ASSERT_EQ(chats.size(), 2u);
  EXPECT_EQ(chats[0]["model"], "gpt-4o-mini");
  EXPECT_NE(chats[0]["tools"].dump().find("everything__echo"), std::string::npos);
  EXPECT_EQ(chats[0]["tool_choice"], "auto");
  EXPECT_EQ(system_prompt(chats[0]), "You use tools.");
  auto tools = tool_messages(chats[1]);
  ASSERT_EQ(tools.size(), 1u);
  EXPECT_EQ(tools[0]["tool_call_id"], "call_e1");
  EXPECT_EQ(tools[0]["content"], "Echo: hi there");

  auto got = d.intent(id, "?include=steps");
  EXPECT_EQ(got["status"], "completed");
  EXPECT_EQ(got["result"]["text"], "The tool said hi.");
  std::vector<std::string> kinds;
  for (const auto& st : got["steps"]) kinds.push_back(st["kind"].get<std::string>());
  EXPECT_EQ(kinds, (std::vector<std::string>{"llm", "tool_result", "llm", "message"}));
}

// A metric's value from /metrics (Prometheus text), -1 when absent.
double metric(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return -1;
}

TEST(AgentMetrics, StepOverheadLeavesOutModelAndToolTimeAndReadsUpToSeconds) {
  Agentd d({true, ""});
  d.wait_tool("everything__echo");
  auto slow_call = Action::tools({tool("everything__echo", R"({"message":"slow"})", "call_s1")});
  slow_call.delay = 400ms;
  auto slow_reply = Action::reply("done");
  slow_reply.delay = 400ms;
  d.fake.script({slow_call, slow_reply});
  auto r = d.call("POST", "/v1/intents", json{{"intent", "be slow"}, {"agent", "tooler"}}.dump());
  ASSERT_EQ(r.status, 202) << r.body;
  auto started = json::parse(r.body, nullptr, false);
  // Recorded as running from the start: no separate accepted -> running write.
  EXPECT_EQ(started["status"], "running");
  auto done = d.wait_status(started.value("id", ""), "completed");
  ASSERT_EQ(done["status"], "completed") << done.dump();
  auto m = d.call("GET", "/metrics").body;
  // Two model turns (the tool call, then the answer); 800 ms of model time is not overhead,
  // while each turn's records are.
  EXPECT_EQ(metric(m, "agentd_agent_step_overhead_seconds_count"), 2);
  double sum = metric(m, "agentd_agent_step_overhead_seconds_sum");
  EXPECT_GT(sum, 0);
  EXPECT_LT(sum, 0.6);  // well below the 0.8 s the model took, even on a loaded ASan build
  // Buckets up to seconds, so that a p99 of queued records can be read.
  EXPECT_GE(metric(m, "agentd_agent_step_overhead_seconds_bucket{le=\"5\"}"), 2) << m;
}

TEST(AgentToolLoop, ParallelToolCallsRunConcurrentlyUnlessTheAgentSaysNot) {
  Agentd d({true, ""});
  d.wait_tool("everything__get-sum");
  auto two = Action::tools({tool("everything__get-sum", R"({"a":1,"b":2})"),
                            tool("everything__echo", R"({"message":"x"})")});
  d.fake.script({two, Action::reply("both done"), two, Action::reply("one by one")});

  auto par = d.all_events(d.start_intent({{"intent", "two things"}, {"agent", "tooler"}}));
  // Both calls start before either result comes back.
  EXPECT_LT(index_of(par, "tool.call", 1), index_of(par, "tool.result", 0))
      << ::testing::PrintToString(types(par));
  ASSERT_EQ(par.back().type, "intent.completed");
  auto serial = d.all_events(d.start_intent({{"intent", "two things"}, {"agent", "serial"}}));
  EXPECT_LT(index_of(serial, "tool.result", 0), index_of(serial, "tool.call", 1))
      << ::testing::PrintToString(types(serial));
  ASSERT_EQ(serial.back().type, "intent.completed");

  auto chats = d.chats();
  ASSERT_EQ(chats.size(), 4u);
  EXPECT_FALSE(chats[0].contains("parallel_tool_calls"));
  EXPECT_EQ(chats[2]["parallel_tool_calls"], false);
  // Results go back in the order of the calls, whichever finished first.
  for (int i : {1, 3}) {
    auto tools = tool_messages(chats[i]);
    ASSERT_EQ(tools.size(), 2u);
    EXPECT_EQ(tools[0]["content"], "The sum of 1 and 2 is 3.");
    EXPECT_EQ(tools[1]["content"], "Echo: x");
  }
}

TEST(AgentToolLoop, ToolErrorsUnknownToolsAndBadArgumentsGoBackToTheModel) {
  Agentd d({true, ""});
  d.wait_tool("everything__get-sum");
  d.fake.script({Action::tools({tool("everything__get-sum", R"({"a":"one","b":2})", "c1"),
                                tool("nope__missing", R"({})", "c2"),
                                tool("everything__echo", R"({"message": )", "c3"),
                                tool("everything__echo", R"([1,2])", "c4")}),
                 Action::reply("recovered")});
  auto ev = d.all_events(d.start_intent({{"intent", "break things"}, {"agent", "tooler"}}));
  ASSERT_TRUE(ends_with(ev, "intent.completed"));
  std::size_t errors = 0;
  for (const auto& e : ev) errors += e.type == "tool.result" && e.data["is_error"] == true;
  EXPECT_EQ(errors, 4u);
  auto chats = d.chats();
  ASSERT_EQ(chats.size(), 2u);
  auto tools = tool_messages(chats[1]);
  ASSERT_EQ(tools.size(), 4u);
  EXPECT_EQ(tools[0]["tool_call_id"], "c1");
  EXPECT_NE(tools[0]["content"].get<std::string>().find("number"), std::string::npos) << tools[0];
  EXPECT_EQ(tools[1]["content"], "there is no tool \"nope__missing\" available to this agent");
  EXPECT_NE(tools[2]["content"].get<std::string>().find("are not a JSON object"), std::string::npos)
      << tools[2];
  EXPECT_NE(tools[3]["content"].get<std::string>().find("are not a JSON object"), std::string::npos)
      << tools[3];
}

// Arguments that parse but have the wrong types for agentd's own tools (agents-as-tools,
// ask_user) are errors for the model too, not a run that never ends.
TEST(AgentToolLoop, WrongArgumentTypesForBuiltInToolsAreErrorResults) {
  Agentd d;
  d.fake.script(
      {Action::tools({tool("agent__a", R"({"input": 5})")}), Action::reply("boss gave up")});
  auto ev = d.all_events(d.start_intent({{"intent", "delegate"}, {"agent", "boss"}}));
  ASSERT_TRUE(ends_with(ev, "intent.completed")) << d.log();
  const Event* r = find(ev, "tool.result");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->data["is_error"], true);
  EXPECT_EQ(r->data["content"][0]["text"], "the arguments of agent__a need \"input\": a string");

  d.fake.script({Action::tools({tool("ask_user", R"({"question": ["what", "now"]})")}),
                 Action::reply("no question")});
  ev = d.all_events(d.start_intent({{"intent", "ask badly"}, {"agent", "asker"}}));
  ASSERT_TRUE(ends_with(ev, "intent.completed")) << d.log();
  EXPECT_FALSE(find(ev, "input.required"));
}

TEST(AgentLimits, IterationCapFailsTheIntent) {
  Agentd d;
  for (int i = 0; i < 3; ++i) d.fake.script(Action::tools({tool("nothing_here", "{}")}));
  auto id = d.start_intent({{"intent", "loop forever"}, {"agent", "plain"}});
  auto ev = d.all_events(id);
  ASSERT_TRUE(ends_with(ev, "intent.failed", "max_iterations"));
  EXPECT_EQ(d.chats().size(), 3u);
  auto i = d.intent(id);
  EXPECT_EQ(i["status"], "failed");
  EXPECT_NE(i["error"].get<std::string>().find("max_iterations (3)"), std::string::npos) << i;
}

TEST(AgentLimits, TokenBudgetStopsTheRun) {
  Agentd d({false, "budget: { tokens: 300 }"});
  d.fake.script(usage(Action::tools({tool("nothing_here", "{}")}), 250, 100));
  auto id = d.start_intent({{"intent", "spend"}});
  auto ev = d.all_events(id);
  ASSERT_TRUE(ends_with(ev, "intent.failed", "budget_exceeded"));
  EXPECT_EQ(ev.back().data["usage"]["total_tokens"], 350);
  ASSERT_EQ(d.chats().size(), 1u) << "no model call once the budget is spent";
  EXPECT_EQ(d.chats()[0]["max_tokens"], 300) << "a call is capped by what is left";
  EXPECT_EQ(d.intent(id)["status"], "failed");
}

TEST(AgentLimits, DeadlinesEndStepsQuestionsAndIntents) {
  Agentd d({false, "timeout: 2s, step_timeout: 1s, input_timeout: 1s, max_running: 1"});
  // A model that never answers: the step's deadline. Meanwhile the instance is full.
  d.fake.script(Action::hanging());
  auto t0 = Clock::now();
  auto id = d.start_intent({{"intent", "hang"}});
  auto busy = d.call("POST", "/v1/intents", R"({"intent":"one more"})");
  EXPECT_EQ(busy.status, 429) << busy.body;
  auto ev = d.all_events(id);
  ASSERT_TRUE(ends_with(ev, "intent.failed", "step_timeout"));
  EXPECT_LT(Clock::now() - t0, 1900ms);

  // A question nobody answers: the model is told so, and goes on.
  d.fake.script({Action::tools({tool("ask_user", R"({"question":"anyone?"})")}),
                 Action::reply("nobody home")});
  ev = d.all_events(d.start_intent({{"intent", "ask"}, {"agent", "asker"}}));
  ASSERT_TRUE(ends_with(ev, "intent.completed"));
  ASSERT_EQ(d.chats().size(), 3u);
  EXPECT_EQ(tool_messages(d.chats()[2])[0]["content"], "The user did not answer (cancel).");

  // Every step within its deadline, but together longer than the intent's.
  Action slow = Action::tools({tool("nothing_here", "{}")});
  slow.delay = 700ms;
  d.fake.script({slow, slow, slow, slow});
  ev = d.all_events(d.start_intent({{"intent", "slowly"}, {"agent", "asker"}}));
  ASSERT_TRUE(ends_with(ev, "intent.failed", "timeout"));
}

// --- cancel, input -----------------------------------------------------------------------------

TEST(AgentCancel, CancelWhileTheModelHangs) {
  Agentd d;
  d.fake.script(Action::hanging());
  auto id = d.start_intent({{"intent", "wait forever"}});
  d.wait_chats(1);
  auto t0 = Clock::now();
  auto r = d.call("POST", "/v1/intents/" + id + "/cancel");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_LT(Clock::now() - t0, 3s);
  EXPECT_EQ(json::parse(r.body)["status"], "cancelled");
  auto ev = d.all_events(id);
  ASSERT_TRUE(ends_with(ev, "intent.cancelled"));
  EXPECT_EQ(d.intent(id)["status"], "cancelled");

  // Finished: neither cancel nor input applies any more.
  r = d.call("POST", "/v1/intents/" + id + "/cancel");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "intent_finished");
  r = d.call("POST", "/v1/intents/" + id + "/input", R"({"text":"late"})");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "intent_finished");
  // Another client sees no such intent.
  EXPECT_EQ(d.call("POST", "/v1/intents/" + id + "/cancel", "", kBob).status, 404);
}

TEST(AgentCancel, CancelStopsALongToolCall) {
  Agentd d({true, ""});
  d.wait_tool("everything__trigger-long-running-operation");
  d.fake.script(Action::tools(
      {tool("everything__trigger-long-running-operation", R"({"duration":20,"steps":20})")}));
  auto s = d.stream_intent({{"intent", "take your time"}, {"agent", "tooler"}});
  ASSERT_TRUE(s);
  auto call = s->until("tool.call");
  ASSERT_TRUE(call);
  std::string id = call->data["intent_id"].get<std::string>();
  auto t0 = Clock::now();
  EXPECT_EQ(d.call("POST", "/v1/intents/" + id + "/cancel").status, 200);
  EXPECT_LT(Clock::now() - t0, 5s);
  std::vector<Event> rest = s->until_terminal();
  ASSERT_TRUE(ends_with(rest, "intent.cancelled"));
  EXPECT_FALSE(find(rest, "tool.result")) << "a cancelled call has no result";
  EXPECT_EQ(d.chats().size(), 1u);
}

TEST(AgentInput, AskUserWaitsForTheAnswerAndTheModelGetsIt) {
  Agentd d;
  d.fake.script({Action::tools({tool("ask_user", R"({"question":"Which city?"})", "ask1")}),
                 Action::reply("Paris it is")});
  auto s = d.stream_intent({{"intent", "weather please"}, {"agent", "asker"}});
  ASSERT_TRUE(s);
  auto q = s->until("input.required");
  ASSERT_TRUE(q);
  std::string id = q->data["intent_id"].get<std::string>();
  EXPECT_EQ(q->data["kind"], "question");
  EXPECT_EQ(q->data["message"], "Which city?");
  std::string input_id = q->data["input_id"].get<std::string>();
  EXPECT_EQ(d.intent(id)["status"], "waiting_input");
  EXPECT_NE(d.chats()[0]["tools"].dump().find("ask_user"), std::string::npos);

  // Bad answers are refused and the question stays open.
  EXPECT_EQ(d.call("POST", "/v1/intents/" + id + "/input", R"({"action":"maybe"})").status, 400);
  EXPECT_EQ(d.call("POST", "/v1/intents/" + id + "/input", R"({"action":"accept"})").status, 400);
  EXPECT_EQ(
      d.call("POST", "/v1/intents/" + id + "/input", R"({"input_id":"in_nope","text":"x"})").status,
      409);
  EXPECT_EQ(d.call("POST", "/v1/intents/" + id + "/input", R"({"text":"Paris"})", kBob).status,
            404);
  auto r = d.call("POST", "/v1/intents/" + id + "/input",
                  json{{"input_id", input_id}, {"text", "Paris"}}.dump());
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["input_id"], input_id);

  auto rest = s->until_terminal();
  ASSERT_TRUE(ends_with(rest, "intent.completed"));
  auto chats = d.chats();
  ASSERT_EQ(chats.size(), 2u);
  auto tools = tool_messages(chats[1]);
  ASSERT_EQ(tools.size(), 1u);
  EXPECT_EQ(tools[0]["content"], "Paris");
  // Nothing is asked any more.
  EXPECT_EQ(d.call("POST", "/v1/intents/" + id + "/input", R"({"text":"again"})").status, 409);

  // Cancelled while it waits for the answer.
  d.fake.script(Action::tools({tool("ask_user", R"({"question":"Still there?"})")}));
  s = d.stream_intent({{"intent", "ask again"}, {"agent", "asker"}});
  ASSERT_TRUE(s);
  q = s->until("input.required");
  ASSERT_TRUE(q);
  id = q->data["intent_id"].get<std::string>();
  r = d.call("POST", "/v1/intents/" + id + "/cancel");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["status"], "cancelled");
  ASSERT_TRUE(ends_with(s->until_terminal(), "intent.cancelled"));
  EXPECT_EQ(d.chats().size(), 3u);
}

TEST(AgentInput, McpElicitationIsRelayedAndAnsweredThroughInput) {
  Agentd d({true, ""});
  d.wait_tool("everything__trigger-elicitation-request");
  d.fake.script({Action::tools({tool("everything__trigger-elicitation-request", "{}")}),
                 Action::reply("thanks")});
  auto s = d.stream_intent({{"intent", "sign me up"}, {"agent", "tooler"}});
  ASSERT_TRUE(s);
  auto q = s->until("input.required");
  ASSERT_TRUE(q) << d.log();
  EXPECT_EQ(q->data["kind"], "elicitation");
  EXPECT_EQ(q->data["schema"]["properties"]["name"]["type"], "string");
  std::string id = q->data["intent_id"].get<std::string>();
  json answer = {{"input_id", q->data["input_id"]},
                 {"action", "accept"},
                 {"content", {{"name", "Ada"}, {"check", true}}}};
  auto r = d.call("POST", "/v1/intents/" + id + "/input", answer.dump());
  EXPECT_EQ(r.status, 200) << r.body;
  auto rest = s->until_terminal();
  ASSERT_TRUE(ends_with(rest, "intent.completed")) << d.log();
  const Event* result = find(rest, "tool.result");
  ASSERT_TRUE(result);
  EXPECT_NE(result->data["content"].dump().find("- Name: Ada"), std::string::npos) << result->data;
  auto chats = d.chats();
  ASSERT_EQ(chats.size(), 2u);
  EXPECT_NE(tool_messages(chats[1])[0]["content"].get<std::string>().find("Name: Ada"),
            std::string::npos);
}

// --- event streams -----------------------------------------------------------------------------

TEST(AgentEvents, ResumeAfterADroppedConnectionMissesAndRepeatsNothing) {
  Agentd d;
  Action slow = Action::reply("one two three four five six seven eight nine ten");
  slow.chunk_delay = 30ms;
  d.fake.script(slow);
  std::string id;
  std::vector<Event> first;
  {
    auto s = d.stream_intent({{"intent", "count slowly"}});
    ASSERT_TRUE(s);
    for (int i = 0; i < 4; ++i) {
      auto e = s->next();
      ASSERT_TRUE(e);
      first.push_back(*e);
    }
    id = first[0].data["intent_id"].get<std::string>();
  }  // the connection drops mid-run
  ASSERT_FALSE(is_terminal(first.back().type));
  auto resumed = d.events(id, first.back().id);
  ASSERT_TRUE(resumed);
  auto rest = resumed->until_terminal();
  ASSERT_TRUE(ends_with(rest, "intent.completed"));

  std::vector<Event> joined = first;
  joined.insert(joined.end(), rest.begin(), rest.end());
  expect_increasing_ids(joined);
  auto full = d.all_events(id);
  ASSERT_EQ(joined.size(), full.size());
  for (std::size_t i = 0; i < full.size(); ++i) {
    EXPECT_EQ(joined[i].id, full[i].id);
    EXPECT_EQ(joined[i].data, full[i].data);
  }
  std::string text;
  for (const auto& e : first) text += e.data.value("delta", "");
  for (const auto& e : rest) text += e.data.value("delta", "");
  EXPECT_EQ(text, "one two three four five six seven eight nine ten");

  // The same through ?after=, and a bad id is refused.
  auto after = d.call("GET", "/v1/intents/" + id + "/events?after=" + first.back().id);
  EXPECT_EQ(parse_sse(after.body).size(), rest.size());
  EXPECT_EQ(
      d.call("GET", "/v1/intents/" + id + "/events", "", kAlice, {{"Last-Event-ID", "not-an-id"}})
          .status,
      400);
}

// --- restarts ----------------------------------------------------------------------------------

TEST(AgentRestart, ResumesFromTheLastRecordedStepAfterSigkill) {
  Agentd d({true, "lease: 2s"});
  d.wait_tool("everything__echo");
  d.fake.script({Action::tools({tool("everything__echo", R"({"message":"once"})", "call_once")}),
                 Action::hanging()});
  auto id = d.start_intent({{"intent", "survive a crash"}, {"agent", "tooler"}});
  d.wait_chats(2);  // the tool ran and was recorded; the model hangs on the second call
  auto before = d.intent(id, "?include=steps");
  ASSERT_EQ(before["steps"].size(), 2u) << before;
  d.kill();

  d.fake.script(Action::reply("done after the restart"));
  d.start();
  auto i = d.wait_status(id, "completed");
  EXPECT_EQ(i["status"], "completed") << i << d.log();
  EXPECT_EQ(i["result"]["text"], "done after the restart");
  auto chats = d.chats();
  ASSERT_EQ(chats.size(), 3u) << "the first model call is not redone";
  auto tools = tool_messages(chats[2]);
  ASSERT_EQ(tools.size(), 1u);
  EXPECT_EQ(tools[0]["tool_call_id"], "call_once");
  EXPECT_EQ(tools[0]["content"], "Echo: once");
  auto steps = d.intent(id, "?include=steps")["steps"];
  std::vector<std::string> kinds;
  for (const auto& st : steps) kinds.push_back(st["kind"].get<std::string>());
  EXPECT_EQ(kinds, (std::vector<std::string>{"llm", "tool_result", "llm", "message"}));
  auto ev = d.all_events(id);
  ASSERT_TRUE(ends_with(ev, "intent.completed"));
}

TEST(AgentRestart, OnRestartFailEndsTheIntentWithAReason) {
  Agentd d({false, "lease: 2s, on_restart: fail"});
  d.fake.script(Action::hanging());
  auto id = d.start_intent({{"intent", "doomed"}});
  d.wait_chats(1);
  d.kill();
  d.start();
  auto i = d.wait_status(id, "failed");
  EXPECT_EQ(i["status"], "failed") << i;
  EXPECT_NE(i.value("error", "").find("on_restart: fail"), std::string::npos) << i;
  auto ev = d.all_events(id);
  ASSERT_TRUE(ends_with(ev, "intent.failed", "restarted"));
  EXPECT_EQ(d.chats().size(), 1u);
}

// --- the durable store down ---------------------------------------------------------------------

// The error body and headers of a 503 for new work while the durable store is down.
void expect_store_unavailable(const HttpResponse& r, std::chrono::steady_clock::duration took) {
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_LT(took, 3s) << "the refusal must not wait for the database";
  auto body = json::parse(r.body, nullptr, false);
  ASSERT_TRUE(body.is_object()) << r.body;
  const auto& e = body["error"];
  EXPECT_EQ(e.value("code", ""), "store_unavailable") << r.body;
  EXPECT_EQ(e.value("type", ""), "server_error") << r.body;
  EXPECT_NE(e.value("message", "").find("durable store (postgres) is unavailable"), std::string::npos)
      << r.body;
  EXPECT_FALSE(r.header("retry-after").empty()) << "no Retry-After";
  EXPECT_GE(std::atoi(r.header("retry-after").c_str()), 1);
}

// PostgreSQL stopped mid-run: new intents (and agents addressed as models) get 503 at once;
// what was acknowledged before, done or running, is there afterwards; nothing is restarted on
// agentd's side.
TEST(AgentStore, PostgresDownRefusesNewWorkWith503AndNothingAcknowledgedIsLost) {
  PgServer pg;
  Agentd d({false, "lease: 2s"}, pg.url());
  d.fake.script(Action::reply("stored before the outage"));
  auto done = d.start_intent({{"intent", "before"}});
  ASSERT_EQ(d.wait_status(done, "completed")["status"], "completed");
  // Acknowledged, and its model answers only once the database is gone: its step cannot be
  // recorded, so the run stops and is resumed when the database is back.
  Action slow = Action::reply("answered during the outage");
  slow.delay = 2500ms;
  d.fake.script({slow, Action::reply("answered after the outage"), Action::reply("after")});
  auto running = d.start_intent({{"intent", "during"}});
  ASSERT_FALSE(running.empty());
  d.wait_chats(2);

  pg.stop();
  for (int i = 0; i < 3; ++i) {
    auto t0 = Clock::now();
    auto r = d.call("POST", "/v1/intents", R"({"intent":"refused"})");
    expect_store_unavailable(r, Clock::now() - t0);
    t0 = Clock::now();
    auto chat = d.call("POST", "/v1/chat/completions",
                       R"({"model":"plain","messages":[{"role":"user","content":"refused too"}]})");
    expect_store_unavailable(chat, Clock::now() - t0);
  }
  auto t0 = Clock::now();
  auto read = d.call("GET", "/v1/intents/" + done);
  expect_store_unavailable(read, Clock::now() - t0);
  // Informational in /readyz: AI and MCP traffic needs no durable write and goes on.
  auto ready = d.call("GET", "/readyz");
  EXPECT_NE(ready.body.find("postgres unavailable"), std::string::npos) << ready.body;

  // The slow answer arrives while the database is still down: its step is not recorded.
  auto until = Clock::now() + 15s;
  while (d.log().find("step not recorded") == std::string::npos && Clock::now() < until) {
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_NE(d.log().find("step not recorded"), std::string::npos) << d.log();

  pg.start();
  // Recovers by itself: the next intent is accepted within the records' retry window.
  HttpResponse again;
  auto deadline = Clock::now() + 20s;
  do {
    std::this_thread::sleep_for(200ms);
    again = d.call("POST", "/v1/intents", R"({"intent":"after"})");
  } while (again.status == 503 && Clock::now() < deadline);
  ASSERT_EQ(again.status, 202) << again.body << d.log();
  auto after = json::parse(again.body, nullptr, false).value("id", "");
  // Both acknowledged intents are there: the finished one as it was, the interrupted one
  // resumed (its unrecorded model call asked again) and finished.
  auto before = d.intent(done);
  EXPECT_EQ(before["status"], "completed") << before;
  EXPECT_EQ(before["result"]["text"], "stored before the outage") << before;
  auto resumed = d.wait_status(running, "completed", 30s);
  EXPECT_EQ(resumed["status"], "completed") << resumed << d.log();
  EXPECT_EQ(d.wait_status(after, "completed")["status"], "completed");
  // before, during (answered while the database was down: not recorded), during again after
  // the recovery, after; none of the refused requests reached the model.
  EXPECT_EQ(d.chats().size(), 4u) << d.log();
  EXPECT_NE(d.call("GET", "/readyz").body.find("postgres: ok"), std::string::npos);
}

// --- sandboxes (local backend): budget, a crash and the restart -------------------------------

// Host pids of the live processes whose command line contains `marker` (a zombie has none), or
// with `at_start`, begins with it.
std::vector<int> pids_with(const std::string& marker, bool at_start = false) {
  std::vector<int> out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc", ec), end; !ec && it != end;
       it.increment(ec)) {
    auto name = it->path().filename().string();
    if (name.empty() ||
        !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    std::ifstream f(it->path() / "cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    auto at = cmdline.find(marker);
    if (at != std::string::npos && (!at_start || at == 0)) out.push_back(std::stoi(name));
  }
  return out;
}

// Polls `cond` until it holds (true) or `timeout` passes (false).
template <class F>
bool eventually(F cond, std::chrono::milliseconds timeout = 15s) {
  auto deadline = Clock::now() + timeout;
  while (!cond()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
  return true;
}

bool exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::exists(path, ec);
}

// A local sandbox's footprint on the host: its directory and the cgroups its metadata names.
struct Footprint {
  std::string dir;
  std::vector<std::string> cgroups;
};

Footprint footprint(const Agentd& d, const std::string& sandbox_id) {
  Footprint f{d.data_dir() + "/sandboxes/" + sandbox_id, {}};
  std::ifstream in(f.dir + "/sandbox.json");
  auto meta = json::parse(in, nullptr, false);
  if (meta.is_object() && meta.contains("cgroups")) {
    for (const auto& c : meta["cgroups"]) f.cgroups.push_back(c.get<std::string>());
  }
  return f;
}

std::size_t sandboxes_on_disk(const Agentd& d) {
  std::error_code ec;
  std::size_t n = 0;
  for (std::filesystem::directory_iterator it(d.data_dir() + "/sandboxes", ec), end;
       !ec && it != end; it.increment(ec)) {
    ++n;
  }
  return n;
}

// Starts an intent of `coder` whose first tool call runs `cmd` in its sandbox, and waits until
// the command printed "started": the sandbox's id.
std::string start_sandboxed(Agentd& d, const json& exec_args, std::string& intent_id) {
  d.fake.script(Action::tools({tool("sandbox__exec", exec_args.dump(), "call_exec")}));
  intent_id = d.start_intent({{"intent", "run something long"}, {"agent", "coder"}});
  auto s = d.events(intent_id);
  if (!s) return {};
  std::vector<Event> seen;
  auto created = s->until("sandbox.created", &seen);
  EXPECT_TRUE(created) << testing::PrintToString(types(seen)) << d.log();
  if (!created) return {};
  auto out = s->until("tool.output", &seen);
  EXPECT_TRUE(out && out->data.value("data", "").find("started") != std::string::npos)
      << testing::PrintToString(types(seen)) << d.log();
  return created->data.value("sandbox_id", "");
}

TEST(AgentSandbox, SandboxSecondsBudgetStopsTheRun) {
  ASSERT_EQ(::access("/usr/bin/bwrap", X_OK), 0) << "no bubblewrap (scripts/test installs it)";
  Agentd d({false, "budget: { sandbox_seconds: 1 }", true});
  d.fake.script(Action::tools({tool("sandbox__exec", R"({"cmd":"sleep 1.2; echo slept"})")}));
  auto id = d.start_intent({{"intent", "spend sandbox time"}, {"agent", "coder"}});
  auto ev = d.all_events(id);
  ASSERT_TRUE(ends_with(ev, "intent.failed", "budget_exceeded")) << d.log();
  EXPECT_GE(ev.back().data["usage"].value("sandbox_seconds", 0.0), 1.0) << ev.back().data;
  EXPECT_NE(ev.back().data.dump().find("sandbox-time budget"), std::string::npos) << ev.back().data;
  EXPECT_EQ(d.chats().size(), 1u) << "no model call once the sandbox time is spent";
  EXPECT_TRUE(eventually([&] { return sandboxes_on_disk(d) == 0; })) << "killed with its intent";
}

// The intents of one session share its sandbox (files written by one are there for the next);
// an intent without a session gets its own, killed when it ends; the session's is killed once
// no intent used it for session_idle.
TEST(AgentSandboxSessions, IntentsOfASessionShareItsSandboxUntilItGoesIdle) {
  ASSERT_EQ(::access("/usr/bin/bwrap", X_OK), 0) << "no bubblewrap (scripts/test installs it)";
  Agentd d({false, "", true}, "", "session_idle: 5s");
  d.fake.script({Action::tools({tool("sandbox__write_file", R"({"path":"notes.txt","content":"kept across intents"})")}),
                 Action::reply("wrote it"),
                 Action::tools({tool("sandbox__exec", R"({"cmd":"cat notes.txt"})")}),
                 Action::reply("read it"),
                 Action::tools({tool("sandbox__exec", R"({"cmd":"cat notes.txt"})")}),
                 Action::reply("not there")});
  auto created_in = [](const std::vector<Event>& ev) {
    std::vector<std::string> ids;
    for (const auto& e : ev) {
      if (e.type == "sandbox.created") ids.push_back(e.data.value("sandbox_id", ""));
    }
    return ids;
  };
  auto output_of = [](const std::vector<Event>& ev) {
    std::string out;
    for (const auto& e : ev) {
      if (e.type == "tool.output") out += e.data.value("data", "");
    }
    return out;
  };
  auto first = d.start_intent({{"intent", "write a note"}, {"agent", "coder"}, {"session_id", "proj-1"}});
  auto ev1 = d.all_events(first);
  ASSERT_TRUE(ends_with(ev1, "intent.completed")) << d.log();
  auto made = created_in(ev1);
  ASSERT_EQ(made.size(), 1u);
  EXPECT_EQ(sandboxes_on_disk(d), 1u) << "the session's sandbox outlives the intent";

  auto second = d.start_intent({{"intent", "read the note"}, {"agent", "coder"}, {"session_id", "proj-1"}});
  auto ev2 = d.all_events(second);
  ASSERT_TRUE(ends_with(ev2, "intent.completed")) << d.log();
  EXPECT_TRUE(created_in(ev2).empty()) << "the second intent created a sandbox of its own";
  EXPECT_NE(output_of(ev2).find("kept across intents"), std::string::npos) << output_of(ev2);

  auto third = d.start_intent({{"intent", "read it without a session"}, {"agent", "coder"}});
  auto ev3 = d.all_events(third);
  ASSERT_TRUE(ends_with(ev3, "intent.completed")) << d.log();
  auto own = created_in(ev3);
  ASSERT_EQ(own.size(), 1u);
  EXPECT_NE(own[0], made[0]);
  EXPECT_EQ(output_of(ev3).find("kept across intents"), std::string::npos) << output_of(ev3);
  EXPECT_TRUE(eventually([&] { return !exists(d.data_dir() + "/sandboxes/" + own[0]); }))
      << "an intent's own sandbox goes with it";
  EXPECT_TRUE(exists(d.data_dir() + "/sandboxes/" + made[0]));

  // No intent of proj-1 for session_idle (5 s since the second ended): killed, files removed.
  EXPECT_TRUE(eventually([&] { return sandboxes_on_disk(d) == 0; }, 10s)) << d.log();
  auto metrics = d.call("GET", "/metrics").body;
  EXPECT_NE(metrics.find("agentd_sandbox_idle_killed_total{backend=\"local\"} 1"), std::string::npos);
}

TEST(AgentSandboxRestart, SigkillLeavesNothingOnceRestartedAndOnRestartFailEndsTheIntent) {
  ASSERT_EQ(::access("/usr/bin/bwrap", X_OK), 0) << "no bubblewrap (scripts/test installs it)";
  Agentd d({false, "lease: 2s, on_restart: fail", true});
  // A command that keeps running, with a background child that ignores SIGHUP and SIGTERM; the
  // marker (a sleep's argument) finds them among the host's processes.
  const std::string marker = "4321." + std::to_string(::getpid()) + "1";
  const std::string cmd =
      "(trap '' HUP TERM; sleep " + marker + ") & echo started; sleep " + marker;
  std::string id;
  auto sandbox_id = start_sandboxed(d, {{"cmd", cmd}}, id);
  ASSERT_FALSE(sandbox_id.empty());
  auto fp = footprint(d, sandbox_id);
  ASSERT_TRUE(exists(fp.dir + "/work"));
  for (const auto& c : fp.cgroups) ASSERT_TRUE(exists(c)) << c;
  ASSERT_TRUE(eventually([&] { return pids_with("sleep " + marker, true).size() == 2; }))
      << "the command and its background child run: " << testing::PrintToString(pids_with(marker));

  d.kill();
  // What the crash left on disk (the restart is what removes it).
  EXPECT_TRUE(exists(fp.dir + "/sandbox.json"));
  for (const auto& c : fp.cgroups) EXPECT_TRUE(exists(c)) << c;

  d.start();
  auto i = d.wait_status(id, "failed");
  EXPECT_EQ(i["status"], "failed") << i << d.log();
  EXPECT_NE(i.value("error", "").find("on_restart: fail"), std::string::npos) << i;
  ASSERT_TRUE(ends_with(d.all_events(id), "intent.failed", "restarted"));
  EXPECT_TRUE(eventually([&] { return pids_with(marker).empty(); }))
      << testing::PrintToString(pids_with(marker));
  EXPECT_TRUE(eventually([&] { return !exists(fp.dir); })) << fp.dir << "\n" << d.log();
  for (const auto& c : fp.cgroups) EXPECT_TRUE(eventually([&] { return !exists(c); })) << c;
  EXPECT_EQ(sandboxes_on_disk(d), 0u);
  EXPECT_EQ(d.chats().size(), 1u);
}

TEST(AgentSandboxRestart, AResumedIntentRunsInAFreshSandboxAndTheOldOneIsRemoved) {
  ASSERT_EQ(::access("/usr/bin/bwrap", X_OK), 0) << "no bubblewrap (scripts/test installs it)";
  Agentd d({false, "lease: 2s", true});
  const std::string marker = "4321." + std::to_string(::getpid()) + "2";
  std::string id;
  auto first =
      start_sandboxed(d, {{"cmd", "echo started; sleep " + marker}, {"timeout_seconds", 6}}, id);
  ASSERT_FALSE(first.empty());
  auto fp = footprint(d, first);
  ASSERT_TRUE(exists(fp.dir + "/work"));
  ASSERT_FALSE(pids_with(marker).empty());

  d.kill();
  // The dead run's lease runs out before the restart: the restart's recovery resumes the intent
  // at once, while its cleanup of what the dead run left is still under way.
  std::this_thread::sleep_for(2500ms);
  EXPECT_TRUE(exists(fp.dir + "/sandbox.json"));
  d.fake.script(Action::reply("done after the restart"));
  d.start();
  auto i = d.wait_status(id, "completed", 40s);
  EXPECT_EQ(i["status"], "completed") << i << d.log();
  EXPECT_EQ(i["result"]["text"], "done after the restart");
  // The tool call in flight ran again (at-least-once), in a new sandbox, until its timeout.
  auto ev = d.all_events(id);
  std::vector<std::string> created;
  for (const auto& e : ev) {
    if (e.type == "sandbox.created") created.push_back(e.data.value("sandbox_id", ""));
  }
  ASSERT_FALSE(created.empty()) << testing::PrintToString(types(ev));
  EXPECT_NE(created.back(), first);
  // Nothing of either sandbox is left: the old one removed by the restart, the new one with
  // its intent.
  EXPECT_TRUE(eventually([&] { return pids_with(marker).empty(); }))
      << testing::PrintToString(pids_with(marker));
  EXPECT_TRUE(eventually([&] { return !exists(fp.dir); })) << fp.dir << "\n" << d.log();
  for (const auto& c : fp.cgroups) EXPECT_TRUE(eventually([&] { return !exists(c); })) << c;
  EXPECT_TRUE(eventually([&] { return sandboxes_on_disk(d) == 0; })) << d.log();
}

// --- sessions ----------------------------------------------------------------------------------

TEST(AgentSessions, HistoryReachesTheNextIntentAndStaysWithItsClient) {
  Agentd d;
  d.fake.script({Action::reply("first answer"), Action::reply("second answer")});
  auto first = d.start_intent({{"intent", "first question"}, {"session_id", "sess-1"}});
  EXPECT_EQ(d.wait_status(first, "completed")["status"], "completed");
  auto second = d.start_intent({{"intent", "second question"}, {"session_id", "sess-1"}});
  EXPECT_EQ(d.wait_status(second, "completed")["status"], "completed");
  auto chats = d.chats();
  ASSERT_EQ(chats.size(), 2u);
  const auto& msgs = chats[1]["messages"];
  ASSERT_EQ(msgs.size(), 4u) << msgs;
  EXPECT_EQ(msgs[1], (json{{"role", "user"}, {"content", "first question"}}));
  EXPECT_EQ(msgs[2], (json{{"role", "assistant"}, {"content", "first answer"}}));
  EXPECT_EQ(msgs[3], (json{{"role", "user"}, {"content", "second question"}}));
  EXPECT_EQ(d.intent(second)["session_id"], "sess-1");

  auto r = d.call("POST", "/v1/intents", R"({"intent":"let me in","session_id":"sess-1"})", kBob);
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "forbidden_session");
  EXPECT_EQ(d.call("POST", "/v1/intents", R"({"intent":"x","session_id":"bad id!"})").status, 400);
}

// --- workflows ---------------------------------------------------------------------------------

TEST(AgentWorkflows, ChainPassesEachOutputOn) {
  Agentd d;
  d.fake.script({Action::reply("A out"), Action::reply("B out")});
  auto ev = d.all_events(d.start_intent({{"intent", "start here"}, {"agent", "chain1"}}));
  ASSERT_TRUE(ends_with(ev, "intent.completed"));
  EXPECT_EQ(ev.back().data["result"]["text"], "B out");
  auto chats = d.chats();
  ASSERT_EQ(chats.size(), 2u);
  EXPECT_EQ(system_prompt(chats[0]), "You are agent A.");
  EXPECT_EQ(last_user(chats[0]), "start here");
  EXPECT_EQ(system_prompt(chats[1]), "You are agent B.");
  EXPECT_EQ(last_user(chats[1]), "A out");
  EXPECT_EQ(find(ev, "step.started")->data["workflow"], "chain1");
}

TEST(AgentWorkflows, ParallelFansOutConcurrentlyAndFansIn) {
  Agentd d;
  Action slow =
      Action::reply("branch");  // both branches wait 400 ms: together, not one after the other
  slow.delay = 400ms;
  d.fake.script({slow, slow, Action::reply("merged")});
  auto t0 = Clock::now();
  auto ev = d.all_events(d.start_intent({{"intent", "do both"}, {"agent", "par"}}));
  ASSERT_TRUE(ends_with(ev, "intent.completed"));
  EXPECT_EQ(ev.back().data["result"]["text"], "merged");
  EXPECT_LT(Clock::now() - t0, 3s);
  std::vector<RecordedRequest> reqs;
  for (auto& r : d.fake.requests()) {
    if (r.path == "/v1/chat/completions") reqs.push_back(std::move(r));
  }
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_LT(std::chrono::abs(reqs[0].time - reqs[1].time), 300ms) << "the branches start together";
  std::set<std::string> branches{system_prompt(reqs[0].json()), system_prompt(reqs[1].json())};
  EXPECT_EQ(branches, (std::set<std::string>{"You are agent A.", "You are agent B."}));
  auto fan = reqs[2].json();
  EXPECT_EQ(system_prompt(fan), "You are agent C.");
  EXPECT_NE(last_user(fan).find("Task:\ndo both"), std::string::npos) << last_user(fan);
  EXPECT_NE(last_user(fan).find("## a\nbranch"), std::string::npos);
  EXPECT_NE(last_user(fan).find("## b\nbranch"), std::string::npos);
}

TEST(AgentWorkflows, RouterPicksAnAgentWithAForcedCall) {
  Agentd d;
  d.fake.script({Action::tools({tool("route", R"({"agent":"b","reason":"it reviews"})")}),
                 Action::reply("B answered")});
  auto ev = d.all_events(d.start_intent({{"intent", "review this"}, {"agent", "route1"}}));
  ASSERT_TRUE(ends_with(ev, "intent.completed"));
  EXPECT_EQ(ev.back().data["result"]["text"], "B answered");
  const Event* plan = find(ev, "plan");
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->data["route"]["agent"], "b");
  auto chats = d.chats();
  ASSERT_EQ(chats.size(), 2u);
  EXPECT_EQ(chats[0]["tool_choice"]["function"]["name"], "route");
  EXPECT_NE(system_prompt(chats[0]).find("- b: reviews"), std::string::npos);
  EXPECT_EQ(system_prompt(chats[1]), "You are agent B.");

  // A choice outside the candidates fails the intent.
  d.fake.script(Action::tools({tool("route", R"({"agent":"zed"})")}));
  ev = d.all_events(d.start_intent({{"intent", "review this"}, {"agent", "route1"}}));
  ASSERT_TRUE(ends_with(ev, "intent.failed", "bad_model_output"));
}

TEST(AgentWorkflows, EvaluatorOptimizerRevisesUntilTheRatingIsGoodEnough) {
  Agentd d;
  d.fake.script(
      {Action::reply("draft 1"), Action::reply(R"({"rating":"poor","feedback":"add detail"})"),
       Action::reply("draft 2"), Action::reply(R"({"rating":"excellent","feedback":"fine"})")});
  auto ev = d.all_events(d.start_intent({{"intent", "write it"}, {"agent", "evo"}}));
  ASSERT_TRUE(ends_with(ev, "intent.completed"));
  EXPECT_EQ(ev.back().data["result"]["text"], "draft 2");
  auto chats = d.chats();
  ASSERT_EQ(chats.size(), 4u);
  EXPECT_EQ(chats[1]["response_format"]["type"], "json_schema");
  EXPECT_NE(last_user(chats[1]).find("draft 1"), std::string::npos);
  EXPECT_NE(last_user(chats[2]).find("add detail"), std::string::npos);
  std::size_t evaluations = 0;
  for (const auto& e : ev) evaluations += e.type == "message" && e.data.contains("evaluation");
  EXPECT_EQ(evaluations, 2u);
}

TEST(AgentWorkflows, OrchestratorPlansRunsAndReplans) {
  Agentd d;
  d.fake.script(
      {Action::tools({tool(
           "plan",
           R"({"steps":[{"agent":"a","task":"t1"},{"agent":"b","task":"t2"}],"done":false})")}),
       Action::reply("r1"), Action::reply("r2"),
       Action::tools({tool("plan", R"({"steps":[],"done":true,"answer":"all done"})")})});
  auto ev = d.all_events(d.start_intent({{"intent", "big job"}, {"agent", "orch"}}));
  ASSERT_TRUE(ends_with(ev, "intent.completed"));
  EXPECT_EQ(ev.back().data["result"]["text"], "all done");
  const Event* plan = find(ev, "plan");
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->data["plan"]["steps"][0]["agent"], "a");
  EXPECT_TRUE(find(ev, "plan", 1));
  auto chats = d.chats();
  ASSERT_EQ(chats.size(), 4u);
  EXPECT_EQ(last_user(chats[1]), "t1");
  EXPECT_EQ(last_user(chats[2]), "t2");
  EXPECT_NE(last_user(chats[3]).find("Results so far"), std::string::npos);
  EXPECT_NE(last_user(chats[3]).find("r2"), std::string::npos);
}

TEST(AgentWorkflows, AgentsAsTools) {
  Agentd d;
  d.fake.script({Action::tools({tool("agent__a", R"({"input":"sub task"})")}),
                 Action::reply("sub result"), Action::reply("boss final")});
  auto ev = d.all_events(d.start_intent({{"intent", "delegate it"}, {"agent", "boss"}}));
  ASSERT_TRUE(ends_with(ev, "intent.completed"));
  EXPECT_EQ(ev.back().data["result"]["text"], "boss final");
  const Event* r = find(ev, "tool.result");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->data["content"][0]["text"], "sub result");
  auto chats = d.chats();
  ASSERT_EQ(chats.size(), 3u);
  EXPECT_NE(chats[0]["tools"].dump().find("agent__a"), std::string::npos);
  EXPECT_EQ(system_prompt(chats[1]), "You are agent A.");
  EXPECT_EQ(last_user(chats[1]), "sub task");
  EXPECT_EQ(tool_messages(chats[2])[0]["content"], "sub result");
}

TEST(AgentWorkflows, StructuredOutputIsValidatedAndReaskedOnce) {
  Agentd d;
  d.fake.script(Action::reply("```json\n{\"n\": 3}\n```"));
  auto ev = d.all_events(d.start_intent({{"intent", "count"}, {"agent", "structured"}}));
  ASSERT_TRUE(ends_with(ev, "intent.completed"));
  EXPECT_EQ(ev.back().data["result"]["text"], R"({"n":3})");
  EXPECT_EQ(d.chats()[0]["response_format"]["json_schema"]["schema"]["required"],
            json::array({"n"}));

  d.fake.script({Action::reply("three"), Action::reply(R"({"n": 3})")});
  ev = d.all_events(d.start_intent({{"intent", "count"}, {"agent", "structured"}}));
  ASSERT_TRUE(ends_with(ev, "intent.completed"));
  EXPECT_EQ(ev.back().data["result"]["text"], R"({"n":3})");
  ASSERT_EQ(d.chats().size(), 3u);
  EXPECT_NE(last_user(d.chats()[2]).find("does not match the required JSON Schema"),
            std::string::npos);

  d.fake.script({Action::reply(R"({"n": "x"})"), Action::reply("still wrong")});
  ev = d.all_events(d.start_intent({{"intent", "count"}, {"agent", "structured"}}));
  ASSERT_TRUE(ends_with(ev, "intent.failed", "bad_model_output"));
  EXPECT_EQ(d.chats().size(), 5u);
}

// --- artifacts ---------------------------------------------------------------------------------

TEST(AgentArtifacts, HtmlFromTheAnswerIsServedSandboxedToItsClientOnly) {
  Agentd d;
  d.fake.script(Action::reply("Here you go:\n```html\n<p>hi</p>\n```\nEnjoy."));
  auto ev = d.all_events(d.start_intent({{"intent", "make a page"}}));
  const Event* art = find(ev, "artifact");
  ASSERT_TRUE(art);
  EXPECT_EQ(art->data["kind"], "html");
  std::string aid = art->data["artifact_id"].get<std::string>();
  EXPECT_EQ(art->data["url"], "/v1/artifacts/" + aid);
  ASSERT_TRUE(ends_with(ev, "intent.completed"));
  EXPECT_EQ(ev.back().data["result"]["artifacts"], json::array({aid}));
  auto r = d.call("GET", "/v1/artifacts/" + aid);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "<p>hi</p>");
  EXPECT_NE(r.header("content-type").find("text/html"), std::string::npos);
  EXPECT_EQ(r.header("content-security-policy"), "sandbox");
  EXPECT_EQ(r.header("x-content-type-options"), "nosniff");
  EXPECT_EQ(d.call("GET", "/v1/artifacts/" + aid, "", kBob).status, 404);
  EXPECT_EQ(d.call("GET", "/v1/artifacts/0123456789abcdef0123456789abcdef").status, 404);

  // An empty block is no artifact (and does not swallow the text after it).
  d.fake.script(
      Action::reply("Nothing here:\n```html\n```\nbut this:\n```python\nprint(1)\n```\n"));
  ev = d.all_events(d.start_intent({{"intent", "make code"}}));
  ASSERT_TRUE(ends_with(ev, "intent.completed"));
  ASSERT_EQ(ev.back().data["result"]["artifacts"].size(), 1u) << ev.back().data;
  art = find(ev, "artifact");
  ASSERT_TRUE(art);
  EXPECT_EQ(art->data["kind"], "code");
  EXPECT_EQ(art->data["name"], "snippet.python");
  EXPECT_EQ(d.call("GET", "/v1/artifacts/" + art->data["artifact_id"].get<std::string>()).body,
            "print(1)");
}

TEST(AgentArtifacts, AnImageFromAToolBecomesAnImageArtifact) {
  Agentd d({true, ""});
  d.wait_tool("everything__get-tiny-image");
  d.fake.script(
      {Action::tools({tool("everything__get-tiny-image", "{}")}), Action::reply("see the image")});
  auto ev = d.all_events(d.start_intent({{"intent", "show me"}, {"agent", "tooler"}}));
  const Event* art = find(ev, "artifact");
  ASSERT_TRUE(art) << ::testing::PrintToString(types(ev));
  EXPECT_EQ(art->data["kind"], "image");
  EXPECT_EQ(art->data["mime"], "image/png");
  auto r = d.call("GET", "/v1/artifacts/" + art->data["artifact_id"].get<std::string>());
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "image/png");
  EXPECT_EQ(r.body.substr(0, 4), "\x89PNG");
  EXPECT_EQ(r.body.substr(r.body.size() - 8), std::string("IEND\xae\x42\x60\x82", 8))
      << "the whole image";
  // The model is told about the image, not sent its bytes.
  auto tools = tool_messages(d.chats()[1]);
  ASSERT_EQ(tools.size(), 1u);
  EXPECT_NE(tools[0]["content"].get<std::string>().find("[image image/png"), std::string::npos)
      << tools[0];
}

// --- bad input ---------------------------------------------------------------------------------

TEST(AgentBadInput, IsRefusedWithTheRightStatusAndField) {
  Agentd d;
  auto err = [&d](const std::string& body, const std::string& token = kAlice) {
    auto r = d.call("POST", "/v1/intents", body, token);
    auto j = json::parse(r.body, nullptr, false);
    json e = j.is_object() && j.contains("error") ? j["error"] : json::object();
    return std::make_tuple(
        r.status, e.value("code", json()).is_string() ? e["code"].get<std::string>() : "",
        e.value("param", json()).is_string() ? e["param"].get<std::string>() : "");
  };
  using R = std::tuple<int, std::string, std::string>;
  EXPECT_EQ(err(R"({"intent":"x","agent":"ghost"})"), (R{400, "unknown_agent", "agent"}));
  EXPECT_EQ(err(R"({"intent":"x","agent":"a"})", kLimited),
            (R{403, "insufficient_scope", "agent"}));
  EXPECT_EQ(std::get<0>(err(R"({"intent":"x","agent":"plain"})", kLimited)), 202);
  EXPECT_EQ(err(R"({"intent":"x","memCtx":{"vectors":"nope"}})"),
            (R{400, "invalid_mem_ctx", "memCtx.vectors"}));
  EXPECT_EQ(err(R"({"intent":"x","memCtx":{"graph":[{"subject":"s"}]}})"),
            (R{400, "invalid_mem_ctx", "memCtx.graph[0]"}));
  EXPECT_EQ(err(R"({"intent":"x","memCtx":[]})"), (R{400, "invalid_mem_ctx", "memCtx"}));
  EXPECT_EQ(err(json{{"intent", std::string(1025, 'x')}}.dump()),
            (R{413, "intent_too_large", "intent"}));
  EXPECT_EQ(
      std::get<0>(
          err(json{{"intent", "x"}, {"metadata", {{"pad", std::string(17 * 1024, 'p')}}}}.dump())),
      413);
  EXPECT_EQ(std::get<0>(err(R"({"intent":"x",)")), 400);
  EXPECT_EQ(std::get<0>(err(R"(["intent"])")), 400);
  EXPECT_EQ(err(R"({"intent":"x","colour":"red"})"), (R{400, "invalid_request", "colour"}));
  EXPECT_EQ(err(R"({"intent":""})"), (R{400, "invalid_request", "intent"}));
  EXPECT_EQ(err(R"({"intent":"x","attachments":[{"name":"n"}]})"),
            (R{400, "invalid_request", "attachments[0]"}));
  EXPECT_EQ(err(R"({"intent":"x","metadata":"m"})"), (R{400, "invalid_request", "metadata"}));
  EXPECT_EQ(d.call("POST", "/v1/intents", R"({"intent":"x"})", "").status, 401);
  EXPECT_EQ(d.call("POST", "/v1/intents", R"({"intent":"x"})", "sk-wrong-token-0000000000").status,
            401);
  EXPECT_EQ(d.call("GET", "/v1/intents/nope").status, 404);
  EXPECT_EQ(d.call("GET", "/v1/intents/nope/events").status, 404);
  EXPECT_EQ(d.call("POST", "/v1/intents/nope/cancel").status, 404);
  EXPECT_EQ(d.call("POST", "/v1/intents/nope/input", R"({"text":"x"})").status, 404);
}

TEST(AgentBadInput, MemoryContextAndAttachmentsReachThePrompt) {
  Agentd d;
  json body = {{"intent", "what do I like?"},
               {"memCtx",
                {{"vectors", {{{"text", "likes green tea"}, {"score", 0.5}}}},
                 {"graph", {{"Ada", "owns", "Rex"}}}}},
               {"attachments",
                {{{"name", "notes.txt"}, {"mime", "text/plain"}, {"text", "attached words"}}}}};
  auto id = d.start_intent(body);
  EXPECT_EQ(d.wait_status(id, "completed")["status"], "completed");
  auto chats = d.chats();
  ASSERT_EQ(chats.size(), 1u);
  auto sys = system_prompt(chats[0]);
  EXPECT_NE(sys.find("## Memory context"), std::string::npos) << sys;
  EXPECT_NE(sys.find("(score 0.500) likes green tea"), std::string::npos) << sys;
  EXPECT_NE(sys.find("- Ada owns Rex"), std::string::npos) << sys;
  auto user = last_user(chats[0]);
  EXPECT_NE(user.find("### Attachment: notes.txt (text/plain)"), std::string::npos) << user;
  EXPECT_NE(user.find("attached words"), std::string::npos) << user;
}

}  // namespace
}  // namespace agentd::test
