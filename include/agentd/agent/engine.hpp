// The planner: runs intents with agents and workflows over the AI routing layer and the tool
// sources, records every step before the next one starts, and publishes typed events that a
// client streams (and resumes with Last-Event-ID).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agentd/agent/config.hpp"
#include "agentd/agent/tools.hpp"
#include "agentd/core/metrics.hpp"
#include "agentd/store/kv.hpp"
#include "agentd/store/records.hpp"

namespace agentd::ai {
class Gateway;
}
namespace agentd::store {
class Blobs;
}

namespace agentd::agent {

// A refusal or failure at the API edge: HTTP status, message, a stable code.
struct Error {
  int status = 500;
  std::string message;
  std::string code;  // e.g. unknown_agent, invalid_mem_ctx, intent_finished
  std::string param;
};
template <class T>
using Outcome = boost::system::result<T, Error>;
[[noreturn]] void throw_exception_from_error(const Error& e, const boost::source_location& loc);

struct IntentRequest {
  std::string client;
  std::function<bool(const std::string& scope)> allows;  // the client's scopes
  std::string request_id;
  json body;  // {intent, agent?, session_id?, memCtx?, attachments?}, validated by start()
  // Set by the OpenAI-compatible face (a chat completion addressed to an agent): the earlier
  // messages, the client's own tools (the run ends when the model calls one of them) and the
  // last user message's content (null when the client is returning tool results). No
  // questions are asked in such a run (they are declined).
  struct Chat {
    json messages = json::array();
    json tools = json::array();
    json user;
  };
  std::optional<Chat> chat;
};

// The stream name of an intent's events in store::EventStreams.
std::string event_stream(const std::string& intent_id);

class Engine {
 public:
  virtual ~Engine() = default;
  // Validates, records the intent (durably) and starts running it; returns the stored intent.
  // Errors: 400 (bad body, unknown agent), 403 (agent not in the client's scopes), 413, 429
  // (too many running), 503 (the durable store is down).
  virtual boost::asio::awaitable<Outcome<store::Intent>> start(IntentRequest request) = 0;
  // The intent (404 for another client's).
  virtual boost::asio::awaitable<Outcome<store::Intent>> get(std::string id, std::string client) = 0;
  // Steps recorded so far.
  virtual boost::asio::awaitable<Outcome<std::vector<store::Step>>> steps(std::string id,
                                                                        std::string client) = 0;
  // 409 when already finished.
  virtual boost::asio::awaitable<Outcome<store::Intent>> cancel(std::string id, std::string client) = 0;
  // Answers the open question (input.required): `{input_id?, action?, content?|text?}`.
  // 409 when the intent is finished or asks nothing.
  virtual boost::asio::awaitable<Outcome<json>> input(std::string id, std::string client, json answer) = 0;
  // Artifacts: metadata and body.
  virtual boost::asio::awaitable<Outcome<std::pair<store::Artifact, std::string>>> artifact(
      std::string id, std::string client) = 0;
  // Resumes or fails (IntentsConfig::on_restart) what this or a dead instance left running.
  virtual boost::asio::awaitable<void> recover() = 0;
  // Cancels nothing: waits up to `grace` for running intents, then leaves them for recover().
  virtual boost::asio::awaitable<void> stop(std::chrono::milliseconds grace) = 0;
  virtual std::size_t running() const noexcept = 0;
  virtual const Config& config() const noexcept = 0;
  // Where the events are (subscribe to event_stream(id) after checking the owner with get()).
  virtual store::EventStreams& events() noexcept = 0;
};

struct Dependencies {
  ai::Gateway& gateway;
  store::Records& records;
  store::EventStreams& events;
  store::Blobs* blobs = nullptr;  // artifacts' bodies; null: artifacts are events only
  std::vector<ToolSource*> tools;
  core::Registry& metrics;
  std::string instance;  // lease owner name; unique per process
  // The scopes of a client by name, for intents resumed after a restart; unset: everything.
  std::function<std::function<bool(const std::string&)>(const std::string& client)> scopes_of;
};

std::unique_ptr<Engine> make_engine(boost::asio::any_io_executor ex, Config config,
                                    Dependencies deps);

// Event types, in the order a run may produce them.
namespace events {
inline constexpr const char* kAccepted = "intent.accepted";
inline constexpr const char* kPlan = "plan";
inline constexpr const char* kStepStarted = "step.started";
inline constexpr const char* kLlmDelta = "llm.delta";
inline constexpr const char* kToolCall = "tool.call";
inline constexpr const char* kToolResult = "tool.result";
inline constexpr const char* kArtifact = "artifact";
inline constexpr const char* kInputRequired = "input.required";
inline constexpr const char* kMessage = "message";
inline constexpr const char* kCompleted = "intent.completed";
inline constexpr const char* kFailed = "intent.failed";
inline constexpr const char* kCancelled = "intent.cancelled";
bool terminal(std::string_view type) noexcept;
}  // namespace events

// Checks memCtx: {vectors?: [{text, score?, source?, ...}], graph?: {entities?, relations?} or
// [{subject, predicate, object}]}; returns the prompt section, or an error naming the field.
Outcome<std::string> render_mem_ctx(const json& mem_ctx);

// A small JSON Schema check for structured answers (type, properties, required, items, enum,
// const, additionalProperties: false, minimum/maximum, minLength/maxLength, minItems/maxItems):
// empty when `value` conforms, else the first problem with its JSON pointer.
std::string validate_json(const json& schema, const json& value);

}  // namespace agentd::agent
