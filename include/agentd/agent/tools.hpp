// The one tool interface the planner sees. The MCP catalog is the first source; sandboxes and
// internal APIs plug in as further sources without the planner knowing where a tool lives.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace agentd::agent {

using nlohmann::json;

// A tool as the model sees it. `name` is unique across sources and valid as an OpenAI function
// name ([A-Za-z0-9_-]{1,64}).
struct ToolSpec {
  std::string name;
  std::string description;
  json input_schema = json::object();  // JSON Schema of the arguments
  json annotations;                    // MCP-style hints (readOnlyHint, ...); null: none
  std::string source;                  // which source serves it ("mcp", "sandbox", ...)
};

// What a tool call produced. `content` holds MCP-style content blocks ({type: text|image|
// audio|resource|resource_link, ...}); a tool failure is a result with is_error, which goes
// back to the model like any other result.
struct ToolResult {
  json content = json::array();
  json structured;  // structuredContent, when the tool gave one
  bool is_error = false;
  double sandbox_seconds = 0;  // sandbox time the call used (counted into the run's budget)

  static ToolResult error(std::string message);
  // The text the model gets: text blocks joined, other blocks summarized.
  std::string text() const;
};

// Lets a caller stop a call in flight. Callbacks run once, on cancel().
class Cancellation {
 public:
  void cancel();
  bool cancelled() const noexcept { return cancelled_; }
  // Called at once when already cancelled. Returns a handle for forget().
  std::size_t on_cancel(std::function<void()> fn);
  void forget(std::size_t handle);

 private:
  bool cancelled_ = false;
  std::size_t next_ = 0;
  std::vector<std::pair<std::size_t, std::function<void()>>> fns_;
};

// Who calls and how to reach them while the call runs.
struct ToolContext {
  std::string client;      // the intent's client (policy, audit)
  std::string intent_id;
  std::string session_id;  // the intent's session; empty: none
  std::string request_id;  // for logs
  std::shared_ptr<Cancellation> cancel;
  std::function<void(const json& progress)> on_progress;  // may be unset
  // A question for the user (an MCP elicitation's params: {message, requestedSchema}); returns
  // `{action: accept|decline|cancel, content?}`. Unset: the source declines.
  std::function<boost::asio::awaitable<json>(json question)> ask;
  // Publishes an event of the source's own on the intent's stream (tool.output with streamed
  // command output, sandbox.created, ...). May be unset.
  std::function<void(const char* type, json data)> emit;
};

// Which tools an agent may use: MCP servers and name globs from its config, the client's scopes.
struct ToolFilter {
  std::vector<std::string> servers;  // "*" for all; empty: none
  std::vector<std::string> globs;    // over tool names; empty: all of the servers
  std::function<bool(const std::string& scope)> client_allows;  // unset: everything
  bool sandbox = false;              // the agent may use a sandbox (and the client has `sandbox`)
};

class ToolSource {
 public:
  virtual ~ToolSource() = default;
  virtual std::vector<ToolSpec> list(const ToolFilter& filter) const = 0;
  // Whether `name` belongs to this source (whether or not the filter shows it).
  virtual bool owns(const std::string& name) const = 0;
  virtual boost::asio::awaitable<ToolResult> call(const std::string& name, json arguments,
                                                  ToolContext ctx) = 0;
  // The intent ended: free what its calls created (its sandbox), or stop using what its session
  // keeps (the session's sandbox).
  virtual boost::asio::awaitable<void> release(std::string /*intent_id*/) { co_return; }
  // The intent's plan will need this source: get ready (create its sandbox) in the background.
  virtual void prewarm(const std::string& /*intent_id*/, const std::string& /*session_id*/) {}
};

}  // namespace agentd::agent

namespace agentd::mcp {
class Multiplexer;
}
namespace agentd::sandbox {
class Manager;
}

namespace agentd::agent {
// The MCP catalog as a tool source: namespaced names, the multiplexer's policy, limits,
// elicitation relayed to `ask`, progress to `on_progress`.
std::unique_ptr<ToolSource> make_mcp_tools(mcp::Multiplexer& mux);
// Sandboxes as tools (sandbox__exec, __write_file, __read_file, __list_files, __desktop), one
// sandbox per intent, for agents with `sandbox: true` and clients with the `sandbox` scope.
std::unique_ptr<ToolSource> make_sandbox_tools(sandbox::Manager& manager);
}  // namespace agentd::agent
