// One intent's run (private to the agent module): the journal, the event writer, questions to
// the user, budgets, and the agents/workflows it executes.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "agentd/agent/engine.hpp"

namespace agentd::agent {

namespace asio = boost::asio;

enum class IntentOutcome { completed, failed, cancelled, abandoned };
std::string_view to_string(IntentOutcome o) noexcept;

// What a run needs from the engine.
class RunHost {
 public:
  virtual ~RunHost() = default;
  virtual const Config& config() const noexcept = 0;
  virtual const Dependencies& deps() const noexcept = 0;
  virtual const std::vector<ToolSource*>& tool_sources() const noexcept = 0;
  virtual void finished(const std::string& id, IntentOutcome outcome) = 0;
  virtual void observe_overhead(std::chrono::nanoseconds d) = 0;
};

class Run {
 public:
  virtual ~Run() = default;
  virtual const std::string& id() const noexcept = 0;
  virtual bool done() const noexcept = 0;
  // Queues an event for the intent's stream (written in order, in the background).
  virtual void emit(const char* type, json data) = 0;
  // Cancels the run and returns once its final state is recorded.
  virtual asio::awaitable<void> cancel_and_wait() = 0;
  // Stops without recording an outcome (shutdown, lease lost): left for recovery.
  virtual void abandon() = 0;
  // Answers the open question; the reply to POST /input.
  virtual Outcome<json> answer(json answer) = 0;
};

// `resume`: the intent was recorded earlier; its recorded steps are replayed, not redone.
std::shared_ptr<Run> make_run(RunHost& host, asio::any_io_executor ex, store::Intent intent,
                              std::function<bool(const std::string&)> allows,
                              std::string request_id, bool resume);
asio::awaitable<void> run_intent(std::shared_ptr<Run> run);

}  // namespace agentd::agent
