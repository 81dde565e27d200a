// The planner's engine: intents in, runs of agents and workflows, a journal of steps (recorded
// before the next step starts, replayed on resume), events out.
#include "agentd/agent/engine.hpp"

#include <openssl/sha.h>
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <deque>
#include <map>
#include <unordered_map>

#include "agentd/ai/gateway.hpp"
#include "agentd/core/glob.hpp"
#include "agentd/store/blobs.hpp"
#include "runner.hpp"

namespace agentd::agent {

void throw_exception_from_error(const Error& e, const boost::source_location&) {
  throw std::runtime_error(e.message);
}

std::string event_stream(const std::string& intent_id) { return "intent:" + intent_id; }

bool events::terminal(std::string_view type) noexcept {
  return type == kCompleted || type == kFailed || type == kCancelled;
}

namespace {

Error bad(std::string message, std::string param = {}, std::string code = "invalid_request") {
  return Error{400, std::move(message), std::move(code), std::move(param)};
}

// A durable-record call that failed, as the API answers it: the store down or too slow
// (unavailable: the records fail fast while the database is unreachable; timeout) is a 503 the
// client may retry (the API adds Retry-After); anything else is a 500.
Error store_error(const boost::system::error_code& ec, std::string_view backend,
                  std::string_view what) {
  if (ec == make_error_code(Errc::unavailable) || ec == make_error_code(Errc::timeout)) {
    return Error{503,
                 std::string(what) + ": the durable store (" + std::string(backend) + ") is " +
                     (ec == make_error_code(Errc::timeout) ? "too slow" : "unavailable") +
                     "; try again later",
                 "store_unavailable", ""};
  }
  return Error{500, std::string(what) + ": " + ec.message(), "store_error", ""};
}

bool valid_session_id(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':';
  });
}

// The attachments as text for the user message: [{name?, mime?, text? | url? | artifact_id?}].
Outcome<std::string> render_attachments(const json& a) {
  if (a.is_null()) return std::string();
  if (!a.is_array()) return bad("attachments must be an array", "attachments");
  if (a.size() > 100) return bad("attachments: at most 100", "attachments");
  std::string out;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const json& at = a[i];
    std::string where = "attachments[" + std::to_string(i) + "]";
    if (!at.is_object()) return bad(where + " must be an object", where);
    for (const auto& [k, v] : at.items()) {
      if (k != "name" && k != "mime" && k != "text" && k != "url" && k != "artifact_id") {
        return bad(where + ": unknown key \"" + k + "\" (expected name, mime, text, url, artifact_id)",
                   where + "." + k);
      }
      if (!v.is_string()) return bad(where + "." + k + " must be a string", where + "." + k);
    }
    if (!at.contains("text") && !at.contains("url") && !at.contains("artifact_id")) {
      return bad(where + " needs text, url or artifact_id", where);
    }
    out += "\n### Attachment: " + at.value("name", "attachment " + std::to_string(i + 1));
    if (at.contains("mime")) out += " (" + at["mime"].get<std::string>() + ")";
    out += "\n";
    if (at.contains("url")) out += "URL: " + at["url"].get<std::string>() + "\n";
    if (at.contains("artifact_id")) out += "Artifact: " + at["artifact_id"].get<std::string>() + "\n";
    if (at.contains("text")) out += at["text"].get<std::string>() + "\n";
  }
  return out;
}

class EngineImpl final : public Engine, public RunHost {
 public:
  EngineImpl(asio::any_io_executor ex, Config config, Dependencies deps)
      : ex_(ex), config_(std::move(config)), deps_(std::move(deps)), sweep_(ex),
        started_(deps_.metrics.counter("agentd_intents_started_total", "Intents accepted", {})),
        running_gauge_(deps_.metrics.gauge("agentd_intents_running", "Intents running on this instance", {})),
        step_overhead_(deps_.metrics.histogram(
            "agentd_agent_step_overhead_seconds",
            "Orchestration time per step, excluding model and tool time",
            {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
             0.5, 1, 2.5, 5})) {
    for (auto* s : deps_.tools) tools_.push_back(s);
  }

  // RunHost
  const Config& config() const noexcept override { return config_; }
  const Dependencies& deps() const noexcept override { return deps_; }
  const std::vector<ToolSource*>& tool_sources() const noexcept override { return tools_; }
  void finished(const std::string& id, IntentOutcome outcome) override {
    running_.erase(id);
    // What the intent's tool calls created (its sandbox) goes with it; an abandoned run keeps
    // it for the resume.
    if (outcome != IntentOutcome::abandoned) {
      for (auto* s : tools_) {
        asio::co_spawn(ex_, s->release(id), [id](std::exception_ptr e) {
          if (e) spdlog::warn("intent {}: tool source cleanup failed", id);
        });
      }
    }
    if (outcome != IntentOutcome::abandoned) {
      expiring_.emplace_back(std::chrono::steady_clock::now() + config_.intents.event_retention, id);
    }
    running_gauge_.set(static_cast<double>(running_.size()));
    deps_.metrics.counter("agentd_intents_finished_total", "Intents finished, by outcome",
                          {{"outcome", std::string(to_string(outcome))}}).inc();
    if (stopping_ && running_.empty()) sweep_.cancel();
  }
  void observe_overhead(std::chrono::nanoseconds d) override {
    step_overhead_.observe(std::chrono::duration<double>(d).count());
  }

  asio::awaitable<Outcome<store::Intent>> start(IntentRequest req) override {
    const json& body = req.body;
    if (!body.is_object()) co_return bad("the body must be a JSON object");
    for (const auto& [k, v] : body.items()) {
      if (k != "intent" && k != "agent" && k != "session_id" && k != "memCtx" && k != "attachments" &&
          k != "metadata") {
        co_return bad("unknown key \"" + k + "\" (expected intent, agent, session_id, memCtx, attachments, metadata)", k);
      }
    }
    auto it = body.find("intent");
    if (it == body.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) {
      co_return bad("intent is required: a non-empty string", "intent");
    }
    if (it->get_ref<const std::string&>().size() > config_.intents.max_intent_bytes) {
      co_return Error{413, "intent is longer than " + std::to_string(config_.intents.max_intent_bytes) + " bytes",
                      "intent_too_large", "intent"};
    }
    std::string agent = config_.intents.default_agent;
    if (agent.empty() && !config_.agents.empty()) agent = config_.agents.front().name;
    if (auto a = body.find("agent"); a != body.end() && !a->is_null()) {
      if (!a->is_string()) co_return bad("agent must be a string", "agent");
      agent = a->get<std::string>();
    }
    if (agent.empty()) co_return Error{400, "no agents are configured", "unknown_agent", "agent"};
    if (!config_.runnable(agent)) {
      co_return Error{400, "unknown agent \"" + agent + "\"", "unknown_agent", "agent"};
    }
    if (req.allows && !req.allows("agents:" + agent)) {
      co_return Error{403, "client \"" + req.client + "\" may not run agent \"" + agent +
                               "\" (needs scope agents:" + agent + ")",
                      "insufficient_scope", "agent"};
    }
    std::string session;
    if (auto s = body.find("session_id"); s != body.end() && !s->is_null()) {
      if (!s->is_string() || !valid_session_id(s->get<std::string>())) {
        co_return bad("session_id must be 1-128 letters, digits, '-', '_', '.' or ':'", "session_id");
      }
      session = s->get<std::string>();
    }
    if (auto m = render_mem_ctx(body.value("memCtx", json())); !m) co_return m.error();
    if (auto a = render_attachments(body.value("attachments", json())); !a) co_return a.error();
    if (auto m = body.find("metadata"); m != body.end() && !m->is_object() && !m->is_null()) {
      co_return bad("metadata must be an object", "metadata");
    }
    if (stopping_) co_return Error{503, "agentd is shutting down", "shutting_down", ""};
    if (running_.size() >= config_.intents.max_running) {
      co_return Error{429, "too many intents running (" + std::to_string(running_.size()) + ")",
                      "too_many_intents", ""};
    }
    if (!session.empty()) {
      auto s = co_await deps_.records.get_session(session);
      if (s && s->client != req.client) {
        co_return Error{403, "session \"" + session + "\" belongs to another client", "forbidden_session", "session_id"};
      }
      if (!s && s.error() != make_error_code(Errc::not_found)) {
        co_return store_error(s.error(), deps_.records.backend(), "cannot read the session");
      }
    }
    store::Intent intent;
    intent.client = req.client;
    intent.agent = agent;
    intent.session_id = session;
    // The run starts right after the record (max_running was checked above): recorded as
    // running at once, which saves a write (and a commit) per intent.
    intent.status = store::IntentStatus::running;
    intent.input = body;
    if (req.chat) {
      intent.input["_chat"] = {{"messages", std::move(req.chat->messages)},
                               {"tools", std::move(req.chat->tools)},
                               {"user", std::move(req.chat->user)}};
    }
    intent.owner = deps_.instance;
    intent.lease_until = store::now_ms() + config_.intents.lease.count();
    auto created = co_await deps_.records.create_intent(std::move(intent));
    if (!created) {
      co_return store_error(created.error(), deps_.records.backend(), "cannot record the intent");
    }
    started_.inc();
    auto run = make_run(*this, ex_, *created, req.allows, req.request_id, false);
    running_[created->id] = run;
    running_gauge_.set(static_cast<double>(running_.size()));
    run->emit(events::kAccepted, {{"agent", agent}, {"session_id", session}});
    launch(run);
    co_return *created;
  }

  asio::awaitable<Outcome<store::Intent>> get(std::string id, std::string client) override {
    auto r = co_await deps_.records.get_intent(id);
    if (!r) {
      if (r.error() == make_error_code(Errc::not_found)) co_return not_found(id);
      co_return store_error(r.error(), deps_.records.backend(), "cannot read the intent");
    }
    if (r->client != client) co_return not_found(id);
    co_return *r;
  }

  asio::awaitable<Outcome<std::vector<store::Step>>> steps(std::string id, std::string client) override {
    auto i = co_await get(id, client);
    if (!i) co_return i.error();
    auto r = co_await deps_.records.list_steps(id, 0);
    if (!r) co_return store_error(r.error(), deps_.records.backend(), "cannot read the steps");
    co_return *r;
  }

  asio::awaitable<Outcome<store::Intent>> cancel(std::string id, std::string client) override {
    auto i = co_await get(id, client);
    if (!i) co_return i.error();
    if (store::is_terminal(i->status)) {
      co_return Error{409, "intent " + id + " is already " + std::string(store::to_string(i->status)),
                      "intent_finished", ""};
    }
    if (auto it = running_.find(id); it != running_.end()) {
      auto run = it->second;
      co_await run->cancel_and_wait();
    } else {
      // Not running here: on another instance, or orphaned. Record it; the owner stops at its
      // next step (its writes then conflict).
      store::IntentUpdate up;
      up.status = store::IntentStatus::cancelled;
      up.error = "cancelled by the client";
      auto u = co_await deps_.records.update_intent(id, std::move(up));
      if (u) {
        json ev = {{"type", events::kCancelled}, {"intent_id", id}, {"ts", store::now_ms()},
                   {"reason", "cancelled by the client"}};
        (void)co_await deps_.events.append(event_stream(id), ev.dump());
      }
    }
    co_return co_await get(id, client);
  }

  asio::awaitable<Outcome<json>> input(std::string id, std::string client, json answer) override {
    auto i = co_await get(id, client);
    if (!i) co_return i.error();
    if (store::is_terminal(i->status)) {
      co_return Error{409, "intent " + id + " is already " + std::string(store::to_string(i->status)),
                      "intent_finished", ""};
    }
    auto it = running_.find(id);
    if (it == running_.end()) {
      co_return Error{409, "intent " + id + " is not running on this instance", "not_waiting", ""};
    }
    co_return it->second->answer(std::move(answer));
  }

  asio::awaitable<Outcome<std::pair<store::Artifact, std::string>>> artifact(std::string id,
                                                                            std::string client) override {
    auto a = co_await deps_.records.get_artifact(id);
    if (!a) {
      if (a.error() == make_error_code(Errc::not_found)) {
        co_return Error{404, "no artifact " + id, "not_found", ""};
      }
      co_return store_error(a.error(), deps_.records.backend(), "cannot read the artifact");
    }
    if (!a->intent_id.empty()) {
      auto owner = co_await get(a->intent_id, client);
      if (!owner) co_return Error{404, "no artifact " + id, "not_found", ""};
    }
    if (!deps_.blobs) co_return Error{404, "artifact bodies are not stored", "not_found", ""};
    auto body = co_await deps_.blobs->get(a->sha256);
    if (!body) co_return Error{503, "artifact body unavailable: " + body.error().message, "store_unavailable", ""};
    co_return std::make_pair(std::move(*a), std::move(*body));
  }

  asio::awaitable<void> recover() override {
    auto list = co_await deps_.records.list_unfinished_intents(1000);
    if (!list) {
      spdlog::warn("intents: cannot list unfinished intents: {}", list.error().message());
      co_return;
    }
    for (auto& intent : *list) {
      if (running_.contains(intent.id) || stopping_) continue;
      auto until = store::now_ms() + config_.intents.lease.count();
      auto claimed = co_await deps_.records.claim_intent(intent.id, deps_.instance, until);
      if (!claimed || !*claimed) continue;
      if (running_.contains(intent.id)) continue;
      if (config_.intents.on_restart == OnRestart::fail || !config_.runnable(intent.agent)) {
        std::string why = config_.runnable(intent.agent)
                              ? "agentd restarted while the intent ran (intents.on_restart: fail)"
                              : "agent \"" + intent.agent + "\" is no longer configured";
        store::IntentUpdate up;
        up.status = store::IntentStatus::failed;
        up.error = why;
        if (co_await deps_.records.update_intent(intent.id, std::move(up))) {
          json ev = {{"type", events::kFailed}, {"intent_id", intent.id}, {"ts", store::now_ms()},
                     {"code", "restarted"}, {"reason", why}};
          (void)co_await deps_.events.append(event_stream(intent.id), ev.dump());
        }
        spdlog::info("intent {}: failed at recovery: {}", intent.id, why);
        continue;
      }
      spdlog::info("intent {}: resuming after a restart (agent {})", intent.id, intent.agent);
      auto allows = deps_.scopes_of ? deps_.scopes_of(intent.client) : nullptr;
      auto run = make_run(*this, ex_, intent, allows, store::new_id(), true);
      running_[intent.id] = run;
      running_gauge_.set(static_cast<double>(running_.size()));
      launch(run);
    }
  }

  // Renews the leases of what runs here, and picks up what a dead instance left.
  asio::awaitable<void> maintain() {
    auto period = config_.intents.lease / 3;
    auto last_recover = std::chrono::steady_clock::now();
    while (!stopping_) {
      sweep_.expires_after(period);
      co_await sweep_.async_wait(asio::as_tuple(asio::use_awaitable));
      if (stopping_) break;
      std::vector<std::shared_ptr<Run>> runs;
      for (auto& [id, r] : running_) runs.push_back(r);
      auto until = store::now_ms() + config_.intents.lease.count();
      for (auto& r : runs) {
        auto ok = co_await deps_.records.claim_intent(r->id(), deps_.instance, until);
        if (ok && !*ok && !r->done()) {
          spdlog::warn("intent {}: lease lost (finished or taken by another instance): stopping", r->id());
          r->abandon();
        }
      }
      co_await drop_expired_events();
      if (std::chrono::steady_clock::now() - last_recover >= config_.intents.lease) {
        last_recover = std::chrono::steady_clock::now();
        co_await recover();
      }
    }
  }

  // Finished intents' event streams are dropped after intents.event_retention (their final
  // state stays in the durable record, from which a late reader gets the final event).
  asio::awaitable<void> drop_expired_events() {
    auto now = std::chrono::steady_clock::now();
    while (!expiring_.empty() && expiring_.front().first <= now) {
      std::string id = std::move(expiring_.front().second);
      expiring_.pop_front();
      auto r = co_await deps_.events.trim(event_stream(id), 0, std::chrono::milliseconds(1));
      if (!r) spdlog::warn("intent {}: events not dropped: {}", id, r.error().message);
    }
  }

  void start_maintenance() {
    asio::co_spawn(ex_, maintain(), [](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        spdlog::error("intents: maintenance loop failed: {}", ex.what());
      }
    });
  }

  asio::awaitable<void> stop(std::chrono::milliseconds grace) override {
    stopping_ = true;
    sweep_.cancel();
    auto deadline = std::chrono::steady_clock::now() + grace;
    asio::steady_timer t(ex_);
    while (!running_.empty() && std::chrono::steady_clock::now() < deadline) {
      t.expires_after(std::chrono::milliseconds(20));
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    // What still runs stays recorded as running: the next start (or another instance) resumes it
    // at once, since the leases are given up.
    std::vector<std::string> left;
    for (auto& [id, r] : running_) {
      r->abandon();
      left.push_back(id);
    }
    for (const auto& id : left) {
      (void)co_await deps_.records.claim_intent(id, deps_.instance, store::now_ms());
    }
    // The abandoned runs stop at their next step: give them a moment to do so.
    auto settle = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (!running_.empty() && std::chrono::steady_clock::now() < settle) {
      t.expires_after(std::chrono::milliseconds(20));
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (!running_.empty()) {
      spdlog::info("intents: {} still running at shutdown; they resume at the next start", running_.size());
    }
  }

  std::size_t running() const noexcept override { return running_.size(); }
  store::EventStreams& events() noexcept override { return deps_.events; }

 private:
  static Error not_found(const std::string& id) { return Error{404, "no intent " + id, "not_found", ""}; }

  void launch(std::shared_ptr<Run> run) {
    asio::co_spawn(ex_, run_intent(run), [this, run](std::exception_ptr e) {
      if (!e) return;
      std::string what = "unknown exception";
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        what = ex.what();
      } catch (...) {
      }
      spdlog::error("intent {}: run failed: {}", run->id(), what);
      // A bug must not leave the intent running forever: it ends failed, visibly.
      if (!run->done()) {
        asio::co_spawn(ex_, fail_after_crash(run->id(), "internal error: " + what),
                       [](std::exception_ptr) {});
      }
    });
  }

  asio::awaitable<void> fail_after_crash(std::string id, std::string why) {
    store::IntentUpdate up;
    up.status = store::IntentStatus::failed;
    up.error = why;
    if (co_await deps_.records.update_intent(id, std::move(up))) {
      json ev = {{"type", events::kFailed}, {"intent_id", id}, {"ts", store::now_ms()},
                 {"code", "internal_error"}, {"reason", why}};
      (void)co_await deps_.events.append(event_stream(id), ev.dump());
    }
    if (running_.contains(id)) finished(id, IntentOutcome::failed);
  }

  asio::any_io_executor ex_;
  Config config_;
  Dependencies deps_;
  std::vector<ToolSource*> tools_;
  std::unordered_map<std::string, std::shared_ptr<Run>> running_;
  asio::steady_timer sweep_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, std::string>> expiring_;
  bool stopping_ = false;
  core::Counter& started_;
  core::Gauge& running_gauge_;
  core::Histogram& step_overhead_;
};

}  // namespace

std::unique_ptr<Engine> make_engine(asio::any_io_executor ex, Config config, Dependencies deps) {
  auto e = std::make_unique<EngineImpl>(ex, std::move(config), std::move(deps));
  e->start_maintenance();
  return e;
}

}  // namespace agentd::agent
