// The MCP multiplexer: sessions with many upstream MCP servers, merged into one catalog of
// namespaced tools (`<server><separator><tool>`), called in-process by the planner and over
// `/mcp` by clients.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agentd/core/metrics.hpp"
#include "agentd/mcp/config.hpp"
#include "agentd/net/client.hpp"

namespace agentd::mcp {

using nlohmann::json;

// A JSON-RPC error, as it goes back to an MCP client.
struct RpcError {
  int code = -32603;
  std::string message;
  json data;  // null: none

  static constexpr int kParseError = -32700;
  static constexpr int kInvalidRequest = -32600;
  static constexpr int kMethodNotFound = -32601;
  static constexpr int kInvalidParams = -32602;
  static constexpr int kInternal = -32603;
  static constexpr int kConnectionClosed = -32000;  // the upstream went away mid-call
  static constexpr int kRequestTimeout = -32001;    // the upstream did not answer in time
  static constexpr int kForbidden = -32003;         // agentd's policy refused the call
  static constexpr int kLimited = -32004;           // a rate or concurrency limit refused it
  static constexpr int kResourceNotFound = -32002;  // MCP's code for resources/read
};

template <class T>
using RpcResult = boost::system::result<T, RpcError>;

[[noreturn]] void throw_exception_from_error(const RpcError& e, const boost::source_location& loc);

struct ToolCall {
  std::string client;      // who calls (for policy, audit, logs)
  std::string request_id;  // for logs
  // Progress from upstream (`notifications/progress` params without the token), when the
  // caller wants it. Called on the loop thread.
  std::function<void(const json& progress)> on_progress;
  // The upstream asked for user input during this call (`elicitation/create` params as sent):
  // returns the ElicitResult to relay back (`{action: accept|decline|cancel, content?}`) or an
  // error. Unset: agentd declines for the caller.
  std::function<boost::asio::awaitable<RpcResult<json>>(json params)> on_elicit;
};

// An upstream server's sampling/createMessage, for the AI routing layer to answer.
struct SamplingRequest {
  std::string server;   // who asks
  std::string client;   // the caller of the tool call it belongs to, when agentd can tell
  std::string request_id;
  json params;          // CreateMessageRequest params as sent
};
// Returns a CreateMessageResult, or an error sent back to the server.
using Sampler = std::function<boost::asio::awaitable<RpcResult<json>>(SamplingRequest)>;

// One audited call (tools/call, prompts/get, resources/read): who, what, a digest of the
// arguments (never their values), how it ended and how long it took.
struct AuditEvent {
  std::string client;
  std::string request_id;
  std::string server;
  std::string tool;         // the upstream name; "prompt:<name>" / "resource:<uri>" otherwise
  std::string args_sha256;  // 64 hex characters
  std::string outcome;      // ok | tool_error | error | unavailable | denied | limited
  std::chrono::microseconds duration{0};
};

// Which catalog entries a caller may see: (server, name), where name is an upstream tool's
// name, "prompt:<name>" for a prompt or "resource:<uri>" for a resource or template.
using Visible = std::function<bool(const std::string& server, const std::string& name)>;

// Lets a caller abandon a call in flight (a client's notifications/cancelled, a closed
// stream): the upstream gets notifications/cancelled and the call returns
// RpcError{kInternal, "cancelled ..."} at once.
class CancelToken {
 public:
  void cancel() {
    cancelled_ = true;
    if (on_cancel_) on_cancel_();
  }
  bool cancelled() const noexcept { return cancelled_; }
  void on_cancel(std::function<void()> fn) { on_cancel_ = std::move(fn); }

 private:
  bool cancelled_ = false;
  std::function<void()> on_cancel_;
};

struct ServerStatus {
  std::string name;
  std::string state;  // starting | ready | failed | stopped | idle (lazy, not started yet)
  std::string detail;  // last error, or the server's name/version when ready
  std::size_t tools = 0;
  int restarts = 0;
};

class Multiplexer {
 public:
  virtual ~Multiplexer() = default;
  // Starts every eager server (in the background: returns at once).
  virtual void start() = 0;
  // Stops every server (stdio children closed, HTTP sessions deleted).
  virtual boost::asio::awaitable<void> stop() = 0;

  // The catalog: MCP tool definitions with namespaced names, of the ready servers, filtered by
  // `visible(server, upstream tool name)`. Annotations and output schemas are kept.
  virtual std::vector<json> tools(
      const std::function<bool(const std::string& server, const std::string& tool)>& visible)
      const = 0;
  // Splits a namespaced name into (server, upstream tool); nullopt when no server matches.
  virtual std::optional<std::pair<std::string, std::string>> resolve(
      const std::string& namespaced) const = 0;
  // tools/call on the owning server: the upstream's CallToolResult (tool errors are results
  // with isError: true), or an RpcError (unknown tool, upstream down, timeout, cancelled).
  virtual boost::asio::awaitable<RpcResult<json>> call_tool(const std::string& namespaced,
                                                            json arguments, ToolCall call,
                                                            std::shared_ptr<CancelToken> cancel) = 0;
  // Called (on the loop) whenever the catalog changes: a server came up or went down, or sent
  // notifications/tools/list_changed.
  virtual void on_tools_changed(std::function<void()> fn) = 0;

  // Resources and resource templates of the ready servers, URIs as the servers gave them
  // (a read is routed to the server that listed the URI or whose template matches it).
  virtual std::vector<json> resources(const Visible&) const { return {}; }
  virtual std::vector<json> resource_templates(const Visible&) const { return {}; }
  // Prompts under namespaced names, like tools.
  virtual std::vector<json> prompts(const Visible&) const { return {}; }
  virtual boost::asio::awaitable<RpcResult<json>> read_resource(const std::string& uri,
                                                                Visible /*visible*/, ToolCall /*call*/,
                                                                std::shared_ptr<CancelToken> /*cancel*/) {
    co_return RpcError{RpcError::kResourceNotFound, "Resource not found: " + uri, nullptr};
  }
  virtual boost::asio::awaitable<RpcResult<json>> get_prompt(const std::string& namespaced,
                                                             json /*arguments*/, ToolCall /*call*/,
                                                             std::shared_ptr<CancelToken> /*cancel*/) {
    co_return RpcError{RpcError::kInvalidParams, "unknown prompt \"" + namespaced + "\"", nullptr};
  }
  // `method` is notifications/resources/list_changed or notifications/prompts/list_changed.
  virtual void on_list_changed(std::function<void(const std::string& method)>) {}
  // Sampling requests from upstream servers go to `sampler` (agentd then declares the
  // sampling capability to servers started afterwards). Unset: -32601 to the server.
  virtual void set_sampler(Sampler) {}
  // Every audited call, after its audit log line (the durable audit log, when the store has
  // one). Called on the loop.
  virtual void on_audit(std::function<void(const AuditEvent&)>) {}
  virtual std::vector<ServerStatus> status() const = 0;
};

std::unique_ptr<Multiplexer> make_multiplexer(boost::asio::any_io_executor ex, Config config,
                                              net::HttpClient& client, core::Registry& metrics);

}  // namespace agentd::mcp
