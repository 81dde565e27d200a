// A transport carries JSON-RPC messages to and from one upstream MCP server. Every kind
// (stdio child, Streamable HTTP, legacy HTTP+SSE) looks the same to the session above it: a
// duplex stream of whole messages.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include <memory>
#include <string>

#include "agentd/core/error.hpp"
#include "agentd/mcp/config.hpp"
#include "agentd/net/client.hpp"

namespace agentd::mcp {

using nlohmann::json;

// Why a transport failed: shown to callers and logs, never containing secrets.
struct TransportError {
  std::string message;
};

// A transport may tag a server request with the id of our request it came with (Streamable
// HTTP: it arrived on that request's event stream), under this key. Not a JSON-RPC member.
inline constexpr const char* kRelatedKey = "agentd.related";

template <class T>
using TResult = boost::system::result<T, TransportError>;

class Transport {
 public:
  virtual ~Transport() = default;
  // Spawns the child / checks the endpoint. Idempotent only before close().
  virtual boost::asio::awaitable<TResult<void>> start() = 0;
  // Sends one message (request, notification or response). For Streamable HTTP the answer's
  // messages (a JSON body or an SSE stream) are queued for receive(), in order.
  virtual boost::asio::awaitable<TResult<void>> send(json message) = 0;
  // The next message from the server; an error once the transport is dead (child exited,
  // stream closed for good). Messages that are not JSON objects are logged and skipped.
  virtual boost::asio::awaitable<TResult<json>> receive() = 0;
  // After a successful initialize: remember the negotiated version (sent as
  // MCP-Protocol-Version on HTTP) .
  virtual void set_protocol_version(std::string version) = 0;
  // Ends the transport: stdio closes stdin, then SIGTERM, then SIGKILL; HTTP sends DELETE for
  // its session. Pending receive() calls fail.
  virtual boost::asio::awaitable<void> close() = 0;
  virtual std::string describe() const = 0;  // "stdio: npx ...", "http: https://host/mcp"
};

// stdio: one message per line on the child's stdin/stdout; stderr lines go to the log with the
// server's name. Lines over `max_message_bytes` are dropped with a log line.
std::unique_ptr<Transport> make_stdio_transport(boost::asio::any_io_executor ex,
                                                const ServerConfig& config,
                                                std::size_t max_message_bytes = 16 << 20);

// Streamable HTTP (2025-03-26 and later): POST per message with
// `Accept: application/json, text/event-stream`, Mcp-Session-Id echoed, the GET stream for
// server-initiated messages, Last-Event-ID resume, DELETE on close.
std::unique_ptr<Transport> make_http_transport(boost::asio::any_io_executor ex,
                                               const ServerConfig& config,
                                               net::HttpClient& client);

// Legacy HTTP+SSE (2024-11-05): GET the SSE URL, POST to the `endpoint` event's URL.
std::unique_ptr<Transport> make_sse_transport(boost::asio::any_io_executor ex,
                                              const ServerConfig& config,
                                              net::HttpClient& client);

}  // namespace agentd::mcp
