// One intent's run: the tool loop of an agent, the workflows composed of agents, the journal
// that records each step before the next starts (and replays recorded steps on resume),
// questions to the user, budgets, artifacts, and the ordered event writer.
#include "runner.hpp"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <ctime>
#include <deque>
#include <map>
#include <unordered_map>

#include "agentd/ai/gateway.hpp"
#include "agentd/core/glob.hpp"
#include "agentd/store/blobs.hpp"

namespace agentd::agent {

std::string_view to_string(IntentOutcome o) noexcept {
  switch (o) {
    case IntentOutcome::completed: return "completed";
    case IntentOutcome::failed: return "failed";
    case IntentOutcome::cancelled: return "cancelled";
    case IntentOutcome::abandoned: return "abandoned";
  }
  return "failed";
}

namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kAskUser = "ask_user";
constexpr const char* kAgentToolPrefix = "agent__";
constexpr std::size_t kMaxToolText = 256 * 1024;  // what one tool result may put in the prompt

std::string hex(const unsigned char* p, std::size_t n) {
  static const char* d = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    out += d[p[i] >> 4];
    out += d[p[i] & 15];
  }
  return out;
}

// A stable 32-hex id derived from parts (artifact ids stay the same when a step is replayed).
std::string derived_id(const std::string& a, const std::string& b) {
  std::string in = a + "\n" + b;
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(in.data()), in.size(), md);
  return hex(md, 16);
}

std::optional<std::string> base64_decode(const std::string& in) {
  std::string clean;
  for (char c : in) {
    if (c != '\n' && c != '\r' && c != ' ') clean += c;
  }
  if (clean.size() % 4 != 0) return std::nullopt;
  std::string out(clean.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(clean.data()),
                          static_cast<int>(clean.size()));
  if (n < 0) return std::nullopt;
  std::size_t pad = 0;
  if (!clean.empty() && clean.back() == '=') ++pad;
  if (clean.size() > 1 && clean[clean.size() - 2] == '=') ++pad;
  out.resize(static_cast<std::size_t>(n) - pad);
  return out;
}

std::int64_t estimate_tokens(const std::string& s) { return static_cast<std::int64_t>(s.size() / 4 + 1); }

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

// Kind and MIME type of a fenced block's language tag; nullopt: not an artifact.
std::optional<std::pair<std::string, std::string>> fence_kind(const std::string& lang) {
  if (lang.empty()) return std::nullopt;
  if (lang == "html") return std::make_pair("html", "text/html");
  if (lang == "svg") return std::make_pair("svg", "image/svg+xml");
  if (lang == "mermaid") return std::make_pair("mermaid", "text/vnd.mermaid");
  if (lang == "markdown" || lang == "md") return std::make_pair("markdown", "text/markdown");
  if (lang == "json") return std::make_pair("json", "application/json");
  if (lang == "console" || lang == "terminal" || lang == "shell-session") {
    return std::make_pair("terminal", "text/plain");
  }
  return std::make_pair("code", "text/plain");
}

struct Fence {
  std::string lang;
  std::string body;
};

std::vector<Fence> fenced_blocks(const std::string& text) {
  std::vector<Fence> out;
  std::size_t pos = 0;
  while ((pos = text.find("```", pos)) != std::string::npos) {
    if (pos > 0 && text[pos - 1] != '\n') {
      pos += 3;
      continue;
    }
    auto eol = text.find('\n', pos);
    if (eol == std::string::npos) break;
    std::string lang = text.substr(pos + 3, eol - pos - 3);
    while (!lang.empty() && (lang.back() == ' ' || lang.back() == '\r')) lang.pop_back();
    if (auto sp = lang.find(' '); sp != std::string::npos) lang.resize(sp);
    auto close = text.find("\n```", eol);
    if (close == std::string::npos) break;
    // close == eol: an empty block (and close - eol - 1 would wrap around).
    if (close > eol) out.push_back({lang, text.substr(eol + 1, close - eol - 1)});
    pos = close + 4;
  }
  return out;
}

// A FIFO lock for coroutines on one thread.
class AsyncLock {
 public:
  explicit AsyncLock(asio::any_io_executor ex) : ex_(ex) {}
  asio::awaitable<void> lock() {
    if (!locked_) {
      locked_ = true;
      co_return;
    }
    auto t = std::make_shared<asio::steady_timer>(ex_, asio::steady_timer::time_point::max());
    waiters_.push_back(t);
    co_await t->async_wait(asio::as_tuple(asio::use_awaitable));
  }
  void unlock() {
    if (waiters_.empty()) {
      locked_ = false;
      return;
    }
    auto next = waiters_.front();  // ownership passes on
    waiters_.pop_front();
    next->cancel();
  }

 private:
  asio::any_io_executor ex_;
  bool locked_ = false;
  std::deque<std::shared_ptr<asio::steady_timer>> waiters_;
};

// Runs tasks concurrently and waits for all.
asio::awaitable<void> run_all(asio::any_io_executor ex, std::vector<asio::awaitable<void>> tasks) {
  if (tasks.empty()) co_return;
  auto left = std::make_shared<std::size_t>(tasks.size());
  auto done = std::make_shared<asio::steady_timer>(ex, asio::steady_timer::time_point::max());
  for (auto& t : tasks) {
    asio::co_spawn(ex, std::move(t), [left, done](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& err) {
          spdlog::error("agent: a parallel branch failed: {}", err.what());
        }
      }
      if (--*left == 0) done->cancel();
    });
  }
  co_await done->async_wait(asio::as_tuple(asio::use_awaitable));
}

// Calls `fn` if `d` passes before it is destroyed.
class Watchdog {
 public:
  Watchdog(asio::any_io_executor ex, std::chrono::milliseconds d, std::function<void()> fn)
      : timer_(std::make_shared<asio::steady_timer>(ex, d)), alive_(std::make_shared<bool>(true)) {
    timer_->async_wait([alive = alive_, fn = std::move(fn)](boost::system::error_code ec) {
      if (!ec && *alive) fn();
    });
  }
  ~Watchdog() {
    *alive_ = false;
    timer_->cancel();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  std::shared_ptr<asio::steady_timer> timer_;
  std::shared_ptr<bool> alive_;
};

struct ModelTurn {
  json message;  // the assistant message (content, tool_calls)
  json usage;
  double cost = 0;
};

struct ToolCallReq {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text as the model wrote it
};

// How a tool name offered to an agent is served.
struct Offered {
  enum class Kind { source, agent, ask_user, client } kind = Kind::source;
  ToolSource* source = nullptr;
  std::string agent;
};

enum class Stop { none, cancelled, timeout, abandoned };

class RunImpl final : public Run, public std::enable_shared_from_this<RunImpl> {
 public:
  RunImpl(RunHost& host, asio::any_io_executor ex, store::Intent intent,
          std::function<bool(const std::string&)> allows, std::string rid, bool resume)
      : host_(host), ex_(ex), intent_(std::move(intent)), allows_(std::move(allows)),
        rid_(std::move(rid)), resume_(resume), cancel_(std::make_shared<Cancellation>()),
        step_lock_(ex), deadline_(ex), finished_(ex, asio::steady_timer::time_point::max()),
        writer_idle_(ex, asio::steady_timer::time_point::max()) {}

  const std::string& id() const noexcept override { return intent_.id; }
  bool done() const noexcept override { return done_; }

  void emit(const char* type, json data) override {
    data["type"] = type;
    data["intent_id"] = intent_.id;
    data["ts"] = store::now_ms();
    outbox_.push_back(data.dump());
    if (!writing_) {
      writing_ = true;
      asio::co_spawn(ex_, write_events(shared_from_this()), [](std::exception_ptr) {});
    }
  }

  asio::awaitable<void> cancel_and_wait() override {
    if (!done_) {
      stop(Stop::cancelled);
      co_await finished_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }

  void abandon() override { stop(Stop::abandoned); }

  Outcome<json> answer(json body) override {
    if (questions_.empty()) {
      return Error{409, "intent " + intent_.id + " is not waiting for input", "not_waiting", ""};
    }
    if (!body.is_object()) return Error{400, "the body must be a JSON object", "invalid_request", ""};
    std::shared_ptr<Question> q;
    if (auto it = body.find("input_id"); it != body.end() && !it->is_null()) {
      if (!it->is_string()) return Error{400, "input_id must be a string", "invalid_request", "input_id"};
      auto found = questions_.find(it->get<std::string>());
      if (found == questions_.end()) {
        return Error{409, "no open question " + it->get<std::string>(), "not_waiting", "input_id"};
      }
      q = found->second;
    } else {
      q = questions_.begin()->second;
    }
    json reply;
    if (auto a = body.find("action"); a != body.end()) {
      if (!a->is_string() || (*a != "accept" && *a != "decline" && *a != "cancel")) {
        return Error{400, "action must be accept, decline or cancel", "invalid_request", "action"};
      }
      reply["action"] = *a;
    } else {
      reply["action"] = "accept";
    }
    if (auto t = body.find("text"); t != body.end()) {
      if (!t->is_string()) return Error{400, "text must be a string", "invalid_request", "text"};
      reply["content"] = {{"text", *t}};
    }
    if (auto c = body.find("content"); c != body.end() && !c->is_null()) {
      if (!c->is_object()) return Error{400, "content must be an object", "invalid_request", "content"};
      reply["content"] = *c;
    }
    if (reply["action"] == "accept" && !reply.contains("content")) {
      return Error{400, "an accepted answer needs text or content", "invalid_request", "content"};
    }
    for (const auto& [k, v] : body.items()) {
      if (k != "input_id" && k != "action" && k != "text" && k != "content") {
        return Error{400, "unknown key \"" + k + "\" (expected input_id, action, text, content)",
                     "invalid_request", k};
      }
    }
    q->answer = reply;
    q->answered = true;
    q->timer.cancel();
    return json{{"input_id", q->id}, {"accepted", true}};
  }

  // ---- the run ----

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    const auto& cfg = host_.config();
    deadline_.expires_after(cfg.intents.timeout);
    deadline_.async_wait([w = weak_from_this()](boost::system::error_code ec) {
      if (auto s = w.lock(); s && !ec) s->stop(Stop::timeout);
    });
    if (resume_) {
      auto steps = co_await records().list_steps(intent_.id, 0);
      if (!steps) {
        spdlog::warn("intent {}: cannot read its steps to resume: {}", intent_.id, steps.error().message());
        co_return co_await finish_abandoned();
      }
      for (auto& s : *steps) {
        seq_ = std::max(seq_, s.seq);
        if (auto p = s.data.find("path"); p != s.data.end() && p->is_string()) {
          replay_[p->get<std::string>()] = s.data;
        }
      }
    }
    if (intent_.status != store::IntentStatus::running) {
      store::IntentUpdate up;
      up.status = store::IntentStatus::running;
      (void)co_await records().update_intent(intent_.id, std::move(up));
    }
    const json& body = intent_.input;
    std::string text = body.value("intent", "");
    auto mem = render_mem_ctx(body.value("memCtx", json()));
    mem_section_ = mem ? *mem : std::string();
    std::string input = text;
    if (auto att = body.find("attachments"); att != body.end() && att->is_array()) {
      for (const auto& a : *att) {
        input += "\n\n### Attachment: " + a.value("name", std::string("attachment"));
        if (a.contains("mime")) input += " (" + a.value("mime", "") + ")";
        if (a.contains("url")) input += "\nURL: " + a.value("url", "");
        if (a.contains("artifact_id")) input += "\nArtifact: " + a.value("artifact_id", "");
        if (a.contains("text")) input += "\n" + a.value("text", "");
      }
    }
    if (!intent_.session_id.empty()) co_await load_history();
    if (auto chat = body.find("_chat"); chat != body.end() && chat->is_object()) {
      // The OpenAI-compatible face: the conversation comes with the request, the client's own
      // tools are offered to the top-level agent, and nobody can answer a question mid-run.
      chat_ = true;
      if (auto m = chat->find("messages"); m != chat->end() && m->is_array()) history_.assign(m->begin(), m->end());
      if (auto t = chat->find("tools"); t != chat->end() && t->is_array()) client_tools_ = *t;
      if (auto u = chat->find("user"); u != chat->end()) chat_user_ = *u;
    }

    auto out = co_await run_named(intent_.agent, input, "r", true);
    if (stop_ == Stop::abandoned) co_return co_await finish_abandoned();
    if (!out && out.error().code == "client_tool_calls") {
      json result = {{"text", pending_text_}, {"tool_calls", pending_client_calls_},
                     {"usage", usage_json()}, {"artifacts", artifacts_}};
      co_await end(store::IntentStatus::completed, events::kCompleted, "", "", result);
    } else if (out) {
      co_await complete(text, *out);
    } else if (stop_ == Stop::cancelled || (out.error().code == "cancelled" && stop_ != Stop::timeout)) {
      co_await end(store::IntentStatus::cancelled, events::kCancelled, "cancelled",
                   "cancelled by the client");
    } else if (stop_ == Stop::timeout) {
      co_await end(store::IntentStatus::failed, events::kFailed, "timeout",
                   "the intent ran longer than intents.timeout (" +
                       std::to_string(cfg.intents.timeout.count()) + " ms)");
    } else {
      co_await end(store::IntentStatus::failed, events::kFailed, out.error().code, out.error().message);
    }
  }

 private:
  struct Question {
    explicit Question(asio::any_io_executor ex) : timer(ex) {}
    std::string id;
    json answer;
    bool answered = false;
    asio::steady_timer timer;
  };

  store::Records& records() { return host_.deps().records; }

  void stop(Stop why) {
    if (done_ || stop_ != Stop::none) return;
    stop_ = why;
    cancel_->cancel();
  }

  Error stopped_error() const {
    switch (stop_) {
      case Stop::timeout: return Error{504, "the intent timed out", "timeout", ""};
      case Stop::abandoned: return Error{503, "the run was abandoned", "abandoned", ""};
      default: return Error{499, "cancelled", "cancelled", ""};
    }
  }

  static asio::awaitable<void> write_events(std::shared_ptr<RunImpl> self) {
    auto& streams = self->host_.deps().events;
    std::string stream = event_stream(self->intent_.id);
    while (!self->outbox_.empty()) {
      std::string payload = std::move(self->outbox_.front());
      self->outbox_.pop_front();
      auto r = co_await streams.append(stream, std::move(payload));
      if (!r) spdlog::warn("intent {}: event not stored: {}", self->intent_.id, r.error().message);
    }
    self->writing_ = false;
    self->writer_idle_.cancel();
  }

  asio::awaitable<void> flush_events() {
    while (writing_) {
      writer_idle_.expires_at(asio::steady_timer::time_point::max());
      co_await writer_idle_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }

  // The journal: a recorded step's data when resuming, else nullopt.
  const json* replayed(const std::string& path) const {
    auto it = replay_.find(path);
    return it == replay_.end() ? nullptr : &it->second;
  }

  Clock::duration external_time() const {
    return external_total_ + (external_in_flight_ > 0 ? Clock::now() - external_since_ : Clock::duration{});
  }
  // Held around a call to the model or a tool (not around what agentd does with the result).
  struct ExternalSpan {
    explicit ExternalSpan(RunImpl& r) : run(r) {
      if (run.external_in_flight_++ == 0) run.external_since_ = Clock::now();
    }
    ~ExternalSpan() {
      if (--run.external_in_flight_ == 0) run.external_total_ += Clock::now() - run.external_since_;
    }
    ExternalSpan(const ExternalSpan&) = delete;
    ExternalSpan& operator=(const ExternalSpan&) = delete;
    RunImpl& run;
  };

  // Records a step; false (and the run is abandoned) when the store refuses it.
  asio::awaitable<bool> record(const std::string& path, std::string kind, json data) {
    data["path"] = path;
    co_await step_lock_.lock();
    store::Step step;
    step.intent_id = intent_.id;
    step.seq = seq_ + 1;
    step.kind = std::move(kind);
    step.data = std::move(data);
    auto r = co_await records().append_step(std::move(step));
    if (r) ++seq_;
    step_lock_.unlock();
    if (!r) {
      if (r.error() == make_error_code(Errc::conflict)) {
        spdlog::info("intent {}: step refused (the intent was finished elsewhere): stopping", intent_.id);
      } else {
        spdlog::error("intent {}: step not recorded ({}): the run stops and resumes when the store is back",
                      intent_.id, r.error().message());
      }
      stop(Stop::abandoned);
      co_return false;
    }
    co_return true;
  }

  asio::awaitable<void> load_history() {
    const auto& cfg = host_.config().intents;
    auto msgs = co_await records().list_messages(intent_.session_id,
                                                 static_cast<std::size_t>(cfg.session_max_messages));
    if (!msgs) co_return;
    std::int64_t budget = cfg.session_max_tokens > 0 ? cfg.session_max_tokens : 96'000;
    std::int64_t used = 0;
    std::deque<json> kept;
    for (auto it = msgs->rbegin(); it != msgs->rend(); ++it) {
      used += it->tokens;
      if (used > budget && !kept.empty()) break;
      kept.push_front({{"role", it->role}, {"content", it->content}});
    }
    history_.assign(kept.begin(), kept.end());
  }

  // ---- agents and workflows ----

  asio::awaitable<Outcome<std::string>> run_named(const std::string& name, std::string input,
                                                  std::string path, bool top) {
    const auto& cfg = host_.config();
    if (const auto* a = cfg.agent(name)) co_return co_await run_agent(*a, std::move(input), path, top, nullptr);
    if (const auto* w = cfg.workflow(name)) co_return co_await run_workflow(*w, std::move(input), path, top);
    co_return Error{400, "unknown agent \"" + name + "\"", "unknown_agent", ""};
  }

  asio::awaitable<Outcome<std::string>> run_workflow(const WorkflowConfig& w, std::string input,
                                                     std::string path, bool top) {
    if (!replayed(path + "/start")) {
      emit(events::kStepStarted, {{"step", path}, {"workflow", w.name}, {"kind", to_string(w.kind)}});
    }
    switch (w.kind) {
      case WorkflowKind::chain: {
        std::string cur = std::move(input);
        for (std::size_t i = 0; i < w.steps.size(); ++i) {
          auto r = co_await run_named(w.steps[i], cur, path + "/s" + std::to_string(i), top && i == 0);
          if (!r) co_return r;
          cur = std::move(*r);
        }
        co_return cur;
      }
      case WorkflowKind::parallel: {
        auto outs = std::make_shared<std::vector<Outcome<std::string>>>(
            w.steps.size(), Outcome<std::string>(Error{500, "not run", "internal", ""}));
        std::vector<asio::awaitable<void>> tasks;
        for (std::size_t i = 0; i < w.steps.size(); ++i) {
          tasks.push_back(branch(shared_from_this(), w.steps[i], input, path + "/p" + std::to_string(i), outs, i));
        }
        co_await run_all(ex_, std::move(tasks));
        std::string joined;
        for (std::size_t i = 0; i < outs->size(); ++i) {
          if (!(*outs)[i]) co_return (*outs)[i].error();
          joined += "## " + w.steps[i] + "\n" + *(*outs)[i] + "\n\n";
        }
        if (w.fan_in.empty()) co_return joined;
        std::string fan = "Task:\n" + input + "\n\nResults from each branch:\n\n" + joined;
        co_return co_await run_named(w.fan_in, fan, path + "/fan_in", false);
      }
      case WorkflowKind::router: {
        std::string choice;
        std::string route_path = path + "/route";
        if (const auto* r = replayed(route_path)) {
          choice = r->value("agent", "");
        } else {
          json agents_enum = w.steps;
          json schema = {{"type", "object"},
                         {"properties", {{"agent", {{"type", "string"}, {"enum", agents_enum}}},
                                         {"reason", {{"type", "string"}}}}},
                         {"required", json::array({"agent"})}};
          std::string menu;
          for (const auto& s : w.steps) menu += "- " + s + ": " + describe(s) + "\n";
          json messages = json::array();
          messages.push_back({{"role", "system"},
                              {"content", "Route the user's request to the one agent best suited to it. "
                                          "Agents:\n" + menu + w.instruction}});
          messages.push_back({{"role", "user"}, {"content", input}});
          auto d = co_await decide(w.model, std::move(messages), "route", "Choose the agent", schema, w.name);
          if (!d) co_return d.error();
          choice = d->value("agent", "");
          if (std::find(w.steps.begin(), w.steps.end(), choice) == w.steps.end()) {
            co_return Error{502, "router " + w.name + " chose an unknown agent \"" + choice + "\"", "bad_model_output", ""};
          }
          json data = {{"agent", choice}, {"reason", d->value("reason", "")}};
          emit(events::kPlan, {{"step", path}, {"workflow", w.name}, {"route", data}});
          if (!co_await record(route_path, "route", data)) co_return stopped_error();
        }
        co_return co_await run_named(choice, input, path + "/to", top);
      }
      case WorkflowKind::evaluator_optimizer:
        co_return co_await evaluate_optimize(w, std::move(input), path, top);
      case WorkflowKind::orchestrator:
        co_return co_await orchestrate(w, std::move(input), path);
    }
    co_return Error{500, "unknown workflow kind", "internal", ""};
  }

  static asio::awaitable<void> branch(std::shared_ptr<RunImpl> self, std::string name, std::string input,
                                      std::string path, std::shared_ptr<std::vector<Outcome<std::string>>> outs,
                                      std::size_t i) {
    (*outs)[i] = co_await self->run_named(name, std::move(input), std::move(path), false);
  }

  // A plan with a step for an agent that uses a sandbox: the sandbox is created while the
  // planner's next model call and the earlier steps run.
  void prewarm_for(const json& plan) {
    if (!plan.contains("steps") || !plan["steps"].is_array()) return;
    for (const auto& step : plan["steps"]) {
      const auto* a = host_.config().agent(step.value("agent", ""));
      if (a && a->sandbox) {
        for (auto* src : host_.tool_sources()) src->prewarm(intent_.id, intent_.session_id);
        return;
      }
    }
  }

  std::string describe(const std::string& name) const {
    const auto& cfg = host_.config();
    if (const auto* a = cfg.agent(name)) return a->description.empty() ? a->instruction.substr(0, 200) : a->description;
    if (const auto* w = cfg.workflow(name)) return w->description.empty() ? std::string(to_string(w->kind)) : w->description;
    return {};
  }

  static int rating_rank(const std::string& r) {
    if (r == "poor") return 0;
    if (r == "fair") return 1;
    if (r == "good") return 2;
    if (r == "excellent") return 3;
    return -1;
  }

  asio::awaitable<Outcome<std::string>> evaluate_optimize(const WorkflowConfig& w, std::string input,
                                                          std::string path, bool top) {
    auto draft = co_await run_named(w.generator, input, path + "/gen0", top);
    if (!draft) co_return draft;
    static const json kGrade = {
        {"type", "object"},
        {"properties", {{"rating", {{"type", "string"}, {"enum", {"poor", "fair", "good", "excellent"}}}},
                        {"feedback", {{"type", "string"}}}}},
        {"required", {"rating", "feedback"}}};
    for (int round = 0; round < w.max_iterations; ++round) {
      std::string task = "Rate this response to the task, and say how to improve it.\n\nTask:\n" + input +
                         "\n\nResponse:\n" + *draft;
      std::string eval_path = path + "/eval" + std::to_string(round);
      auto grade_text = co_await run_evaluator(w.evaluator, task, eval_path, kGrade);
      if (!grade_text) co_return grade_text.error();
      json grade = json::parse(*grade_text, nullptr, false);
      std::string rating = grade.is_object() ? grade.value("rating", "") : "";
      emit(events::kMessage, {{"step", eval_path}, {"workflow", w.name}, {"evaluation", grade}});
      if (rating_rank(rating) >= rating_rank(w.min_rating)) break;
      if (round + 1 == w.max_iterations) break;
      std::string revise = "Task:\n" + input + "\n\nYour previous response:\n" + *draft +
                           "\n\nFeedback (" + rating + "):\n" + (grade.is_object() ? grade.value("feedback", "") : "") +
                           "\n\nWrite an improved response.";
      draft = co_await run_named(w.generator, revise, path + "/gen" + std::to_string(round + 1), false);
      if (!draft) co_return draft;
    }
    co_return draft;
  }

  // The evaluator is an agent run with the grading schema (or a workflow whose answer is parsed).
  asio::awaitable<Outcome<std::string>> run_evaluator(const std::string& name, std::string task,
                                                      std::string path, const json& schema) {
    if (const auto* a = host_.config().agent(name)) co_return co_await run_agent(*a, std::move(task), path, false, &schema);
    co_return co_await run_named(name, std::move(task), std::move(path), false);
  }

  asio::awaitable<Outcome<std::string>> orchestrate(const WorkflowConfig& w, std::string input, std::string path) {
    json workers = w.steps;
    json schema = {
        {"type", "object"},
        {"properties",
         {{"steps", {{"type", "array"},
                     {"items", {{"type", "object"},
                                {"properties", {{"agent", {{"type", "string"}, {"enum", workers}}},
                                                {"task", {{"type", "string"}}}}},
                                {"required", {"agent", "task"}}}}}},
          {"done", {{"type", "boolean"}}},
          {"answer", {{"type", "string"}}}}},
        {"required", {"steps", "done"}}};
    std::string menu;
    for (const auto& s : w.steps) menu += "- " + s + ": " + describe(s) + "\n";
    std::string results;
    std::string last;
    for (int round = 0; round < w.max_iterations; ++round) {
      std::string plan_path = path + "/plan" + std::to_string(round);
      json plan;
      if (const auto* r = replayed(plan_path)) {
        plan = (*r)["plan"];
      } else {
        json messages = json::array();
        messages.push_back(
            {{"role", "system"},
             {"content", "You plan work for a team of agents. Break the objective into steps, each "
                         "assigned to one agent with a self-contained task. After results come back, "
                         "plan the remaining steps, or set done with the final answer.\nAgents:\n" +
                             menu + w.instruction}});
        std::string user = "Objective:\n" + input;
        if (!results.empty()) user += "\n\nResults so far:\n" + results;
        messages.push_back({{"role", "user"}, {"content", user}});
        auto d = co_await decide(w.model, std::move(messages), "plan", "Submit the plan", schema, w.name);
        if (!d) co_return d.error();
        plan = *d;
        emit(events::kPlan, {{"step", plan_path}, {"workflow", w.name}, {"round", round}, {"plan", plan}});
        prewarm_for(plan);
        json data = {{"plan", plan}};
        if (!co_await record(plan_path, "plan", data)) co_return stopped_error();
      }
      const json& steps = plan.contains("steps") && plan["steps"].is_array() ? plan["steps"] : json::array();
      for (std::size_t i = 0; i < steps.size(); ++i) {
        std::string agent = steps[i].value("agent", "");
        if (std::find(w.steps.begin(), w.steps.end(), agent) == w.steps.end()) {
          co_return Error{502, "orchestrator " + w.name + " assigned a step to an unknown agent \"" + agent + "\"",
                          "bad_model_output", ""};
        }
        auto r = co_await run_named(agent, steps[i].value("task", ""),
                                    plan_path + "/s" + std::to_string(i), false);
        if (!r) co_return r;
        last = *r;
        results += "### Step " + std::to_string(round + 1) + "." + std::to_string(i + 1) + " (" + agent +
                   "): " + steps[i].value("task", "") + "\n" + *r + "\n\n";
      }
      if (plan.value("done", false) || steps.empty()) {
        auto answer = plan.value("answer", "");
        co_return answer.empty() ? last : answer;
      }
    }
    co_return last;
  }

  // A forced function call that returns structured arguments (routing, planning, grading):
  // portable across providers, unlike response_format.
  asio::awaitable<Outcome<json>> decide(const std::string& model, json messages, const char* fn,
                                        const char* what, const json& schema, const std::string& who) {
    json tools = json::array();
    tools.push_back({{"type", "function"},
                     {"function", {{"name", fn}, {"description", what}, {"parameters", schema}}}});
    json choice = {{"type", "function"}, {"function", {{"name", fn}}}};
    auto turn = co_await call_model(model, std::move(messages), std::move(tools), std::move(choice), nullptr,
                                    who, "", false, Budget{});
    if (!turn) co_return turn.error();
    const json& calls = turn->message.contains("tool_calls") ? turn->message["tool_calls"] : json::array();
    for (const auto& c : calls) {
      if (c["function"].value("name", "") != fn) continue;
      json args = json::parse(c["function"].value("arguments", "{}"), nullptr, false);
      if (!args.is_object()) break;
      if (auto problem = validate_json(schema, args); !problem.empty()) {
        co_return Error{502, who + ": the model's " + std::string(fn) + " does not match its schema: " + problem,
                        "bad_model_output", ""};
      }
      co_return args;
    }
    // Some models answer in text: accept a JSON object there too.
    json text = json::parse(turn->message.value("content", json("")).is_string()
                                ? turn->message.value("content", std::string())
                                : std::string(),
                            nullptr, false);
    if (text.is_object() && validate_json(schema, text).empty()) co_return text;
    co_return Error{502, who + ": the model did not call " + std::string(fn), "bad_model_output", ""};
  }

  // Tools an agent is offered, and how each is served.
  std::vector<ToolSpec> offered_tools(const AgentConfig& a, std::map<std::string, Offered>& how, bool top) {
    std::vector<ToolSpec> out;
    if (top) {
      for (const auto& t : client_tools_) {
        if (!t.is_object() || !t.contains("function") || !t["function"].is_object()) continue;
        const json& f = t["function"];
        ToolSpec spec;
        spec.name = f.value("name", "");
        if (spec.name.empty() || how.contains(spec.name)) continue;
        spec.description = f.value("description", "");
        spec.input_schema = f.contains("parameters") ? f["parameters"] : json{{"type", "object"}};
        spec.source = "client";
        how[spec.name] = Offered{Offered::Kind::client, nullptr, {}};
        out.push_back(std::move(spec));
      }
    }
    ToolFilter filter;
    filter.servers = a.servers;
    filter.globs = a.tools;
    filter.client_allows = allows_;
    filter.sandbox = a.sandbox;
    for (auto* src : host_.tool_sources()) {
      for (auto& spec : src->list(filter)) {
        if (how.contains(spec.name)) continue;
        how[spec.name] = Offered{Offered::Kind::source, src, {}};
        out.push_back(std::move(spec));
      }
    }
    for (const auto& sub : a.agents) {
      ToolSpec spec;
      spec.name = kAgentToolPrefix + sub;
      spec.description = "Delegate a task to the " + sub + " agent: " + describe(sub);
      spec.input_schema = {{"type", "object"},
                           {"properties", {{"input", {{"type", "string"}, {"description", "the task, self-contained"}}}}},
                           {"required", {"input"}}};
      spec.source = "agent";
      how[spec.name] = Offered{Offered::Kind::agent, nullptr, sub};
      out.push_back(std::move(spec));
    }
    if (a.ask_user && !chat_) {
      ToolSpec spec;
      spec.name = kAskUser;
      spec.description = "Ask the user a question and wait for the answer. Use only when the task cannot go on without it.";
      spec.input_schema = {{"type", "object"},
                           {"properties", {{"question", {{"type", "string"}}}}},
                           {"required", {"question"}}};
      spec.source = "user";
      how[spec.name] = Offered{Offered::Kind::ask_user, nullptr, {}};
      out.push_back(std::move(spec));
    }
    return out;
  }

  std::string system_prompt(const AgentConfig& a) const {
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char date[16], clock[16];
    std::strftime(date, sizeof date, "%Y-%m-%d", &tm);
    std::strftime(clock, sizeof clock, "%H:%M UTC", &tm);
    std::string s = a.instruction;
    s = replace_all(s, "{{date}}", date);
    s = replace_all(s, "{{time}}", clock);
    s = replace_all(s, "{{client}}", intent_.client);
    s = replace_all(s, "{{agent}}", a.name);
    s = replace_all(s, "{{intent_id}}", intent_.id);
    if (!mem_section_.empty()) s += "\n\n" + mem_section_;
    return s;
  }

  asio::awaitable<Outcome<std::string>> run_agent(const AgentConfig& a, std::string input, std::string path,
                                                  bool top, const json* schema_override) {
    const json& schema = schema_override ? *schema_override : a.output_schema;
    if (!replayed(path + "/llm1")) {
      emit(events::kStepStarted, {{"step", path}, {"agent", a.name}, {"kind", "agent"}});
    }
    std::map<std::string, Offered> how;
    auto tools = offered_tools(a, how, top);
    json tool_defs = json::array();
    for (const auto& t : tools) {
      tool_defs.push_back({{"type", "function"},
                           {"function", {{"name", t.name}, {"description", t.description}, {"parameters", t.input_schema}}}});
    }
    json messages = json::array();
    messages.push_back({{"role", "system"}, {"content", system_prompt(a)}});
    if (top) {
      for (const auto& h : history_) messages.push_back(h);
    }
    if (top && chat_) {
      // The request's last user message as sent (it may hold images); none when the client
      // is returning its tools' results.
      if (!chat_user_.is_null()) messages.push_back({{"role", "user"}, {"content", chat_user_}});
    } else {
      messages.push_back({{"role", "user"}, {"content", std::move(input)}});
    }
    bool reasked = false;
    Budget spent_here;
    for (int iter = 1; iter <= a.max_iterations; ++iter) {
      // Overhead = the step's wall time minus model and tool time measured around the calls
      // themselves: the records' waits, events and tool-result bookkeeping count.
      auto t0 = Clock::now();
      auto ext0 = external_time();
      auto overhead = [&] { return Clock::now() - t0 - (external_time() - ext0); };
      if (cancel_->cancelled()) co_return stopped_error();
      std::string llm_path = path + "/llm" + std::to_string(iter);
      json msg;
      if (const auto* r = replayed(llm_path)) {
        msg = (*r)["message"];
        account((*r).value("usage", json()), (*r).value("cost_usd", 0.0), spent_here);
      } else {
        json choice = tool_defs.empty() ? json() : json("auto");
        auto turn = co_await call_model(a.model, messages, tool_defs, choice, &a, a.name, llm_path, true, a.budget,
                                        &spent_here, schema.is_null() ? nullptr : &schema);
        if (!turn) co_return turn.error();
        msg = turn->message;
        json data = {{"agent", a.name}, {"message", msg}, {"usage", turn->usage}, {"cost_usd", turn->cost}};
        if (!co_await record(llm_path, "llm", std::move(data))) co_return stopped_error();
      }
      messages.push_back(msg);
      std::vector<ToolCallReq> calls;
      if (auto tc = msg.find("tool_calls"); tc != msg.end() && tc->is_array()) {
        for (const auto& c : *tc) {
          calls.push_back({c.value("id", ""), c["function"].value("name", ""), c["function"].value("arguments", "")});
        }
      }
      if (calls.empty()) {
        std::string text = msg.value("content", json("")).is_string() ? msg.value("content", std::string()) : "";
        if (!schema.is_null()) {
          json parsed = json::parse(strip_fence(text), nullptr, false);
          std::string problem = parsed.is_discarded() ? "the answer is not JSON" : validate_json(schema, parsed);
          if (!problem.empty()) {
            if (reasked) {
              co_return Error{502, "agent " + a.name + ": the structured answer does not match output_schema: " + problem,
                              "bad_model_output", ""};
            }
            reasked = true;
            messages.push_back({{"role", "user"},
                                {"content", "Your answer does not match the required JSON Schema (" + problem +
                                                "). Answer again with only a JSON object that matches:\n" + schema.dump()}});
            host_.observe_overhead(overhead());
            continue;
          }
          text = parsed.dump();
        }
        host_.observe_overhead(overhead());
        co_return text;
      }
      if (top && chat_) {
        // A call of one of the client's own tools ends the run: the client runs it and sends the
        // results in its next request, which continues the conversation.
        bool client_call = std::any_of(calls.begin(), calls.end(), [&how](const ToolCallReq& c) {
          auto h = how.find(c.name);
          return h != how.end() && h->second.kind == Offered::Kind::client;
        });
        if (client_call) {
          pending_client_calls_ = msg["tool_calls"];
          pending_text_ = msg.value("content", json("")).is_string() ? msg.value("content", std::string()) : "";
          co_return Error{200, "the client's tools were called", "client_tool_calls", ""};
        }
      }
      auto results = co_await run_tools(a, how, calls, path + "/t" + std::to_string(iter));
      if (cancel_->cancelled()) co_return stopped_error();
      for (std::size_t i = 0; i < calls.size(); ++i) {
        messages.push_back({{"role", "tool"}, {"tool_call_id", calls[i].id}, {"content", results[i]}});
      }
      host_.observe_overhead(overhead());
    }
    co_return Error{422, "agent " + a.name + " reached max_iterations (" + std::to_string(a.max_iterations) +
                             ") without a final answer",
                    "max_iterations", ""};
  }

  static std::string strip_fence(const std::string& text) {
    auto blocks = fenced_blocks("\n" + text);
    if (blocks.size() == 1 && (blocks[0].lang.empty() || blocks[0].lang == "json")) return blocks[0].body;
    return text;
  }

  json usage_json() const {
    json u = {{"prompt_tokens", tokens_in_}, {"completion_tokens", tokens_out_}, {"total_tokens", tokens_},
              {"cost_usd", usd_}};
    if (sandbox_seconds_ > 0) u["sandbox_seconds"] = sandbox_seconds_;
    return u;
  }

  void account(const json& usage, double cost, Budget& agent_spent) {
    std::int64_t t = 0;
    if (usage.is_object()) {
      std::int64_t in = usage.value("prompt_tokens", std::int64_t{0});
      std::int64_t out = usage.value("completion_tokens", std::int64_t{0});
      t = usage.value("total_tokens", in + out);
      tokens_in_ += in;
      tokens_out_ += out;
    }
    tokens_ += t;
    usd_ += cost;
    agent_spent.tokens += t;
    agent_spent.usd += cost;
  }

  // Remaining tokens under the intent's and the agent's budgets (nullopt: unlimited), or a
  // budget error when one is exhausted.
  Outcome<std::optional<std::int64_t>> remaining(const Budget& agent_budget, const Budget& agent_spent) const {
    const auto& b = host_.config().intents.budget;
    if ((b.sandbox_seconds > 0 && sandbox_seconds_ >= b.sandbox_seconds) ||
        (agent_budget.sandbox_seconds > 0 && sandbox_seconds_ >= agent_budget.sandbox_seconds)) {
      return Error{402, "the sandbox-time budget is spent: " + std::to_string(sandbox_seconds_) + " s used",
                   "budget_exceeded", ""};
    }
    if ((b.usd > 0 && usd_ >= b.usd) || (agent_budget.usd > 0 && agent_spent.usd >= agent_budget.usd)) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.6f", usd_);
      return Error{402, "the budget is spent: $" + std::string(buf) + " used", "budget_exceeded", ""};
    }
    std::optional<std::int64_t> left;
    if (b.tokens > 0) left = b.tokens - tokens_;
    if (agent_budget.tokens > 0) {
      auto l = agent_budget.tokens - agent_spent.tokens;
      left = left ? std::min(*left, l) : l;
    }
    if (left && *left <= 0) {
      return Error{402, "the token budget is spent: " + std::to_string(tokens_) + " tokens used", "budget_exceeded", ""};
    }
    return left;
  }

  asio::awaitable<Outcome<ModelTurn>> call_model(const std::string& model, json messages, json tools, json tool_choice,
                                                 const AgentConfig* a, const std::string& who, const std::string& path,
                                                 bool stream_deltas, Budget agent_budget,
                                                 Budget* agent_spent = nullptr, const json* schema = nullptr) {
    Budget none;
    auto left = remaining(agent_budget, agent_spent ? *agent_spent : none);
    if (!left) co_return left.error();
    json req = {{"model", model}, {"messages", std::move(messages)}, {"stream", true},
                {"stream_options", {{"include_usage", true}}}};
    if (!tools.empty()) {
      req["tools"] = std::move(tools);
      if (!tool_choice.is_null()) req["tool_choice"] = std::move(tool_choice);
      if (a && !a->parallel_tool_calls) req["parallel_tool_calls"] = false;
    }
    if (a) {
      if (a->temperature) req["temperature"] = *a->temperature;
      if (a->top_p) req["top_p"] = *a->top_p;
      if (a->max_tokens) req["max_tokens"] = *a->max_tokens;
    }
    if (*left) {
      auto cap = req.contains("max_tokens") ? std::min<std::int64_t>(req["max_tokens"].get<std::int64_t>(), **left) : **left;
      req["max_tokens"] = cap;
    }
    if (schema) {
      req["response_format"] = {{"type", "json_schema"},
                                {"json_schema", {{"name", "answer"}, {"schema", *schema}, {"strict", false}}}};
    }
    ai::CallContext ctx;
    ctx.client = intent_.client;
    ctx.request_id = rid_;
    // A run acts on what the model answers (tool calls): an earlier answer to the same
    // conversation must not stand in for a fresh one.
    ctx.no_cache = true;
    ctx.dom_chunks = true;  // read below with next()
    const auto timeout = host_.config().intents.step_timeout;
    bool timed_out = false;
    std::unique_ptr<ai::ChatStream> stream;
    {
      using namespace asio::experimental::awaitable_operators;
      auto waiter = std::make_shared<asio::steady_timer>(ex_, timeout);
      auto handle = cancel_->on_cancel([waiter] { waiter->cancel(); });
      ExternalSpan model_time(*this);
      auto first = co_await (host_.deps().gateway.chat_stream(ctx, std::move(req)) ||
                             waiter->async_wait(asio::as_tuple(asio::use_awaitable)));
      cancel_->forget(handle);
      if (first.index() == 1) {
        if (cancel_->cancelled()) co_return stopped_error();
        co_return Error{504, who + ": the model gave no answer within intents.step_timeout", "step_timeout", ""};
      }
      auto& got = std::get<0>(first);
      if (!got) {
        const auto& e = got.error();
        co_return Error{e.status >= 400 ? e.status : 502, who + ": model call failed: " + e.message,
                        e.kind == ai::Error::Kind::limit ? "rate_limited" : "model_error", ""};
      }
      stream = std::move(*got);
    }
    auto* s = stream.get();
    auto handle = cancel_->on_cancel([s] { s->cancel(); });
    Watchdog dog(ex_, timeout, [s, &timed_out] {
      timed_out = true;
      s->cancel();
    });
    std::string text;
    json calls = json::array();
    json usage;
    for (;;) {
      std::optional<ExternalSpan> model_time;
      model_time.emplace(*this);
      auto next = co_await s->next();
      model_time.reset();
      if (!next) {
        cancel_->forget(handle);
        if (cancel_->cancelled()) co_return stopped_error();
        if (timed_out) co_return Error{504, who + ": the model's answer took longer than intents.step_timeout", "step_timeout", ""};
        co_return Error{502, who + ": the model's stream failed: " + next.error().message, "model_error", ""};
      }
      if (!*next) break;
      const json& chunk = **next;
      if (auto u = chunk.find("usage"); u != chunk.end() && u->is_object()) usage = *u;
      auto ch = chunk.find("choices");
      if (ch == chunk.end() || !ch->is_array() || ch->empty()) continue;
      const json& delta = (*ch)[0].contains("delta") ? (*ch)[0]["delta"] : json::object();
      if (auto c = delta.find("content"); c != delta.end() && c->is_string() && !c->get_ref<const std::string&>().empty()) {
        text += c->get<std::string>();
        if (stream_deltas) emit(events::kLlmDelta, {{"step", path}, {"agent", who}, {"delta", *c}});
      }
      if (auto r = delta.find("reasoning_content"); r != delta.end() && r->is_string() && stream_deltas) {
        emit(events::kLlmDelta, {{"step", path}, {"agent", who}, {"reasoning", *r}});
      }
      if (auto tc = delta.find("tool_calls"); tc != delta.end() && tc->is_array()) {
        for (const auto& piece : *tc) {
          std::size_t idx = piece.value("index", calls.size());
          while (calls.size() <= idx) {
            calls.push_back({{"id", ""}, {"type", "function"}, {"function", {{"name", ""}, {"arguments", ""}}}});
          }
          json& call = calls[idx];
          if (auto id = piece.find("id"); id != piece.end() && id->is_string()) call["id"] = *id;
          if (auto f = piece.find("function"); f != piece.end() && f->is_object()) {
            if (auto n = f->find("name"); n != f->end() && n->is_string()) {
              call["function"]["name"] = call["function"]["name"].get<std::string>() + n->get<std::string>();
            }
            if (auto ar = f->find("arguments"); ar != f->end() && ar->is_string()) {
              call["function"]["arguments"] = call["function"]["arguments"].get<std::string>() + ar->get<std::string>();
            }
          }
        }
      }
    }
    cancel_->forget(handle);
    ModelTurn turn;
    turn.message = {{"role", "assistant"}, {"content", text.empty() && !calls.empty() ? json(nullptr) : json(text)}};
    for (std::size_t i = 0; i < calls.size(); ++i) {
      if (calls[i]["id"].get<std::string>().empty()) calls[i]["id"] = "call_" + derived_id(path, std::to_string(i)).substr(0, 12);
    }
    if (!calls.empty()) turn.message["tool_calls"] = calls;
    const auto& info = s->info();
    turn.usage = info.usage ? *info.usage : usage;
    turn.cost = info.cost_usd;
    Budget ignored;
    account(turn.usage, turn.cost, agent_spent ? *agent_spent : ignored);
    co_return turn;
  }

  // Runs the calls (concurrently unless the agent says otherwise); each result is recorded.
  asio::awaitable<std::vector<std::string>> run_tools(const AgentConfig& a, const std::map<std::string, Offered>& how,
                                                      const std::vector<ToolCallReq>& calls, std::string path) {
    auto results = std::make_shared<std::vector<std::string>>(calls.size());
    if (a.parallel_tool_calls && calls.size() > 1) {
      std::vector<asio::awaitable<void>> tasks;
      for (std::size_t i = 0; i < calls.size(); ++i) {
        tasks.push_back(one_tool(shared_from_this(), &a, &how, calls[i], path + "." + std::to_string(i), results, i));
      }
      co_await run_all(ex_, std::move(tasks));
    } else {
      for (std::size_t i = 0; i < calls.size(); ++i) {
        co_await one_tool(shared_from_this(), &a, &how, calls[i], path + "." + std::to_string(i), results, i);
        if (cancel_->cancelled()) break;
      }
    }
    co_return std::move(*results);
  }

  static asio::awaitable<void> one_tool(std::shared_ptr<RunImpl> self, const AgentConfig* a,
                                        const std::map<std::string, Offered>* how, ToolCallReq call,
                                        std::string path, std::shared_ptr<std::vector<std::string>> results,
                                        std::size_t i) {
    if (const auto* r = self->replayed(path)) {
      (*results)[i] = r->value("text", "");
      co_return;
    }
    json args = json::parse(call.arguments.empty() ? std::string("{}") : call.arguments, nullptr, false);
    self->emit(events::kToolCall, {{"step", path}, {"agent", a->name}, {"call_id", call.id}, {"tool", call.name},
                                   {"arguments", args.is_discarded() ? json(call.arguments) : args}});
    ToolResult result;
    auto it = how->find(call.name);
    if (args.is_discarded() || !args.is_object()) {
      result = ToolResult::error("the arguments of " + call.name + " are not a JSON object: " + call.arguments.substr(0, 200));
    } else if (it == how->end()) {
      result = ToolResult::error("there is no tool \"" + call.name + "\" available to this agent");
    } else if (it->second.kind != Offered::Kind::source && !string_arg(args, it->second.kind)) {
      // json::value would throw on another type, and the run would never end.
      result = ToolResult::error("the arguments of " + call.name + " need \"" + arg_name(it->second.kind) +
                                 "\": a string");
    } else if (it->second.kind == Offered::Kind::agent) {
      auto out = co_await self->run_named(it->second.agent, *string_arg(args, it->second.kind), path + "/agent", false);
      result = out ? ToolResult{json::array({{{"type", "text"}, {"text", *out}}}), json(), false}
                   : ToolResult::error(it->second.agent + " failed: " + out.error().message);
    } else if (it->second.kind == Offered::Kind::ask_user) {
      json q = {{"message", *string_arg(args, it->second.kind)}};
      auto ans = co_await self->ask(std::move(q), "question", path + "/ask");
      std::string text;
      if (ans.value("action", "") == "accept" && ans.contains("content")) {
        const json& c = ans["content"];
        text = c.contains("text") && c["text"].is_string() ? c["text"].get<std::string>() : c.dump();
      } else {
        text = "The user did not answer (" + ans.value("action", std::string("cancel")) + ").";
      }
      result = ToolResult{json::array({{{"type", "text"}, {"text", text}}}), json(), false};
    } else {
      ToolContext ctx;
      ctx.client = self->intent_.client;
      ctx.intent_id = self->intent_.id;
      ctx.session_id = self->intent_.session_id;
      ctx.request_id = self->rid_;
      ctx.cancel = std::make_shared<Cancellation>();
      auto child = ctx.cancel;
      auto handle = self->cancel_->on_cancel([child] { child->cancel(); });
      std::weak_ptr<RunImpl> weak = self;
      ctx.on_progress = [weak, path, tool = call.name](const json& p) {
        if (auto s = weak.lock()) s->emit("tool.progress", {{"step", path}, {"tool", tool}, {"progress", p}});
      };
      ctx.emit = [weak, path, tool = call.name](const char* type, json data) {
        if (auto s = weak.lock()) {
          data["step"] = path;
          data["tool"] = tool;
          s->emit(type, std::move(data));
        }
      };
      int asked = 0;
      ctx.ask = [weak, path, &asked](json question) -> asio::awaitable<json> {
        return elicit(weak, std::move(question), path + "/elicit" + std::to_string(++asked));
      };
      bool timed_out = false;
      {
        Watchdog dog(self->ex_, self->host_.config().intents.step_timeout, [child, &timed_out] {
          timed_out = true;
          child->cancel();
        });
        ExternalSpan tool_time(*self);
        result = co_await it->second.source->call(call.name, std::move(args), std::move(ctx));
      }
      self->cancel_->forget(handle);
      if (timed_out) result = ToolResult::error(call.name + " took longer than intents.step_timeout and was cancelled");
    }
    if (self->cancel_->cancelled()) co_return;
    self->sandbox_seconds_ += result.sandbox_seconds;
    std::string text = result.text();
    if (text.size() > kMaxToolText) text = text.substr(0, kMaxToolText) + "\n[truncated]";
    if (result.is_error && text.empty()) text = "error";
    json data = {{"tool", call.name}, {"call_id", call.id}, {"is_error", result.is_error}, {"text", text}};
    if (!co_await self->record(path, "tool_result", std::move(data))) co_return;
    json ev = {{"step", path}, {"agent", a->name}, {"call_id", call.id}, {"tool", call.name},
               {"is_error", result.is_error}, {"content", result.content}};
    if (!result.structured.is_null()) ev["structured"] = result.structured;
    self->emit(events::kToolResult, std::move(ev));
    co_await self->tool_artifacts(result, path);
    (*results)[i] = std::move(text);
  }

  // The one argument of agentd's own tools: agent__<name> {input}, ask_user {question}.
  static std::string arg_name(Offered::Kind kind) { return kind == Offered::Kind::agent ? "input" : "question"; }
  static std::optional<std::string> string_arg(const json& args, Offered::Kind kind) {
    auto a = args.find(arg_name(kind));
    if (a == args.end() || !a->is_string()) return std::nullopt;
    return a->get<std::string>();
  }

  static asio::awaitable<json> elicit(std::weak_ptr<RunImpl> weak, json question, std::string path) {
    auto self = weak.lock();
    if (!self) co_return json{{"action", "cancel"}};
    co_return co_await self->ask(std::move(question), "elicitation", std::move(path));
  }

  // A question to the user: input.required, then the answer from POST /input (or cancel on
  // timeout). Recorded, so a resumed run does not ask again.
  asio::awaitable<json> ask(json question, std::string kind, std::string path) {
    if (const auto* r = replayed(path)) co_return (*r)["answer"];
    if (chat_) co_return json{{"action", "decline"}};
    auto q = std::make_shared<Question>(ex_);
    q->id = "in_" + derived_id(intent_.id, path).substr(0, 16);
    questions_[q->id] = q;
    store::IntentUpdate up;
    up.status = store::IntentStatus::waiting_input;
    (void)co_await records().update_intent(intent_.id, std::move(up));
    json ev = {{"step", path}, {"input_id", q->id}, {"kind", kind}, {"message", question.value("message", "")}};
    if (auto s = question.find("requestedSchema"); s != question.end()) ev["schema"] = *s;
    emit(events::kInputRequired, std::move(ev));
    q->timer.expires_after(host_.config().intents.input_timeout);
    auto handle = cancel_->on_cancel([q] { q->timer.cancel(); });
    co_await q->timer.async_wait(asio::as_tuple(asio::use_awaitable));
    cancel_->forget(handle);
    questions_.erase(q->id);
    json answer = q->answered ? q->answer : json{{"action", "cancel"}};
    if (cancel_->cancelled()) co_return answer;
    json data = {{"input_id", q->id}, {"answer", answer}};
    if (!co_await record(path, "input", std::move(data))) co_return answer;
    store::IntentUpdate back;
    back.status = store::IntentStatus::running;
    (void)co_await records().update_intent(intent_.id, std::move(back));
    co_return answer;
  }

  // ---- artifacts ----

  asio::awaitable<std::optional<std::string>> store_artifact(std::string kind, std::string mime, std::string name,
                                                             std::string bytes, const std::string& key) {
    auto* blobs = host_.deps().blobs;
    if (!blobs) co_return std::nullopt;
    auto size = bytes.size();
    auto put = co_await blobs->put(std::move(bytes), mime, store::BlobTtl::artifact);
    if (!put) {
      spdlog::warn("intent {}: artifact not stored: {}", intent_.id, put.error().message);
      co_return std::nullopt;
    }
    store::Artifact art;
    art.id = derived_id(intent_.id, key);
    art.intent_id = intent_.id;
    art.kind = kind;
    art.mime = mime;
    art.sha256 = put->sha256;
    art.size = static_cast<std::int64_t>(size);
    art.name = name;
    auto created = co_await records().create_artifact(art);
    if (!created) {
      spdlog::warn("intent {}: artifact record failed: {}", intent_.id, created.error().message());
      co_return std::nullopt;
    }
    artifacts_.push_back(art.id);
    emit(events::kArtifact, {{"artifact_id", art.id}, {"kind", kind}, {"mime", mime}, {"name", name},
                             {"size", size}, {"url", "/v1/artifacts/" + art.id}});
    co_return art.id;
  }

  asio::awaitable<void> tool_artifacts(const ToolResult& r, const std::string& path) {
    if (!r.content.is_array()) co_return;
    for (std::size_t i = 0; i < r.content.size(); ++i) {
      const json& b = r.content[i];
      if (!b.is_object()) continue;
      std::string type = b.value("type", "");
      std::string key = path + "#" + std::to_string(i);
      if ((type == "image" || type == "audio") && b.contains("data") && b["data"].is_string()) {
        auto bytes = base64_decode(b["data"].get<std::string>());
        if (!bytes) continue;
        std::string mime = b.value("mimeType", type == "image" ? "image/png" : "audio/wav");
        co_await store_artifact(type == "image" ? "image" : "audio", mime, type, std::move(*bytes), key);
      } else if (type == "resource" && b.contains("resource") && b["resource"].is_object()) {
        const json& res = b["resource"];
        std::string mime = res.value("mimeType", "text/plain");
        std::string kind = mime == "text/html" ? "html" : mime == "image/svg+xml" ? "svg"
                         : mime == "text/markdown" ? "markdown" : mime == "application/json" ? "json" : "file";
        if (res.contains("text") && res["text"].is_string()) {
          co_await store_artifact(kind, mime, res.value("uri", ""), res["text"].get<std::string>(), key);
        } else if (res.contains("blob") && res["blob"].is_string()) {
          if (auto bytes = base64_decode(res["blob"].get<std::string>())) {
            co_await store_artifact(kind, mime, res.value("uri", ""), std::move(*bytes), key);
          }
        }
      }
    }
  }

  // ---- the end ----

  asio::awaitable<void> complete(const std::string& intent_text, const std::string& answer) {
    auto blocks = fenced_blocks("\n" + answer);
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      auto kind = fence_kind(blocks[i].lang);
      if (!kind) continue;
      std::string name = kind->first == "code" ? "snippet." + blocks[i].lang : kind->first;
      co_await store_artifact(kind->first, kind->second, name, blocks[i].body, "answer#" + std::to_string(i));
    }
    if (!replayed("final")) {
      json data = {{"text", answer}};
      if (!co_await record("final", "message", std::move(data))) co_return co_await finish_abandoned();
    }
    emit(events::kMessage, {{"role", "assistant"}, {"content", answer}});
    if (!intent_.session_id.empty()) {
      std::vector<store::Message> msgs(2);
      msgs[0].role = "user";
      msgs[0].content = intent_text;
      msgs[0].tokens = estimate_tokens(intent_text);
      msgs[0].intent_id = intent_.id;
      msgs[1].role = "assistant";
      msgs[1].content = answer;
      msgs[1].tokens = estimate_tokens(answer);
      msgs[1].intent_id = intent_.id;
      auto appended = co_await records().append_messages(intent_.session_id, intent_.client, std::move(msgs));
      if (!appended) spdlog::warn("intent {}: session not updated: {}", intent_.id, appended.error().message());
      store::SessionTrim trim;
      trim.keep_messages = host_.config().intents.session_max_messages;
      (void)co_await records().trim_session(intent_.session_id, trim);
    }
    json result = {{"text", answer}, {"usage", usage_json()},
                   {"artifacts", artifacts_}};
    co_await end(store::IntentStatus::completed, events::kCompleted, "", "", result);
  }

  asio::awaitable<void> end(store::IntentStatus status, const char* type, std::string code, std::string reason,
                            json result = nullptr) {
    store::IntentUpdate up;
    up.status = status;
    if (!result.is_null()) up.result = result;
    if (!reason.empty()) up.error = reason;
    auto r = co_await records().update_intent(intent_.id, std::move(up));
    if (!r && r.error() != make_error_code(Errc::conflict)) {
      spdlog::error("intent {}: final state not recorded ({}): left for recovery", intent_.id, r.error().message());
      co_return co_await finish_abandoned();
    }
    json ev = json::object();
    if (!result.is_null()) ev["result"] = result;
    if (!code.empty()) ev["code"] = code;
    if (!reason.empty()) ev["reason"] = reason;
    ev["usage"] = usage_json();
    if (r) emit(type, std::move(ev));
    co_await finish(status == store::IntentStatus::completed   ? IntentOutcome::completed
                    : status == store::IntentStatus::cancelled ? IntentOutcome::cancelled
                                                               : IntentOutcome::failed);
  }

  asio::awaitable<void> finish_abandoned() { co_await finish(IntentOutcome::abandoned); }

  asio::awaitable<void> finish(IntentOutcome how) {
    done_ = true;
    deadline_.cancel();
    co_await flush_events();
    if (how != IntentOutcome::abandoned) {
      (void)co_await host_.deps().events.trim(event_stream(intent_.id), host_.config().intents.max_events,
                                               std::chrono::milliseconds(0));
    }
    host_.finished(intent_.id, how);
    finished_.cancel();
  }

  RunHost& host_;
  asio::any_io_executor ex_;
  store::Intent intent_;
  std::function<bool(const std::string&)> allows_;
  std::string rid_;
  bool resume_;
  std::shared_ptr<Cancellation> cancel_;
  Stop stop_ = Stop::none;
  bool done_ = false;
  std::unordered_map<std::string, json> replay_;
  std::int64_t seq_ = 0;
  // Model and tool time: the clock runs while at least one model or tool call is in flight
  // (parallel tool calls overlap and count once). A step's overhead is its wall time minus the
  // time this clock ran in it, so it includes waiting for the step's records and events.
  int external_in_flight_ = 0;
  Clock::time_point external_since_;
  Clock::duration external_total_{};
  AsyncLock step_lock_;
  std::deque<std::string> outbox_;
  bool writing_ = false;
  std::int64_t tokens_ = 0;
  double sandbox_seconds_ = 0;
  std::int64_t tokens_in_ = 0;
  std::int64_t tokens_out_ = 0;
  double usd_ = 0;
  std::map<std::string, std::shared_ptr<Question>> questions_;
  std::string mem_section_;
  std::vector<json> history_;
  bool chat_ = false;
  json client_tools_ = json::array();
  json chat_user_;
  json pending_client_calls_;
  std::string pending_text_;
  std::vector<std::string> artifacts_;
  asio::steady_timer deadline_;
  asio::steady_timer finished_;
  asio::steady_timer writer_idle_;
};

}  // namespace

std::shared_ptr<Run> make_run(RunHost& host, asio::any_io_executor ex, store::Intent intent,
                              std::function<bool(const std::string&)> allows, std::string request_id,
                              bool resume) {
  return std::make_shared<RunImpl>(host, ex, std::move(intent), std::move(allows), std::move(request_id), resume);
}

asio::awaitable<void> run_intent(std::shared_ptr<Run> run) {
  auto impl = std::static_pointer_cast<RunImpl>(run);
  co_await impl->run();
}

}  // namespace agentd::agent
