// Pure helpers of the HTTP transports (no I/O): answer classification, message parsing, the
// legacy `endpoint` URL resolution, error snippets and reconnect delays.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace agentd::mcp::http_detail {

using nlohmann::json;

// "Application/JSON; charset=utf-8" → "application/json".
std::string media_type(std::string_view content_type);

// What the answer to a POSTed message means (Streamable HTTP).
enum class PostAnswer {
  accepted,      // 202/204 or a 2xx without a body type: nothing to read
  json_body,     // application/json: the message(s) are in the body
  event_stream,  // text/event-stream: messages follow as SSE `message` events
  session_gone,  // 404 to a request that carried Mcp-Session-Id
  http_error,    // any other non-2xx status
  unexpected,    // 2xx with a body type MCP does not define
};
PostAnswer classify_post(int status, std::string_view content_type, bool sent_session);

// Whether a 400 answer to a request that carried Mcp-Session-Id blames the session. The spec
// says 404, but the official TypeScript SDK's example servers (server-everything among them)
// answer an unknown session with 400 "Bad Request: No valid session ID provided".
bool blames_session(int status, std::string_view body);

// The JSON-RPC messages in a body or an SSE event's data: one object, or an array of them
// (2025-03-26 batches). Items that are not objects are dropped and counted in `skipped`;
// `error` is set when the text is not JSON at all. Blank text yields nothing.
struct ParsedMessages {
  std::vector<json> messages;
  std::size_t skipped = 0;
  std::string error;
};
ParsedMessages parse_messages(std::string_view text);

// Whether `message` is the response (result or error) to the request with id `id`.
bool answers(const json& message, const json& id);

// At most `max` bytes of a body for an error message: control characters become spaces,
// runs of whitespace collapse, a cut never splits a UTF-8 sequence and is marked with "...".
std::string snippet(std::string_view body, std::size_t max = 300);

// The legacy transport's `endpoint` event data resolved against the SSE URL (RFC 3986 rules
// for absolute paths, relative paths and query-only references). nullopt when it is not a
// usable URL or names another origin: the POSTs carry the configured credentials, so they
// only go where the SSE stream came from.
std::optional<std::string> resolve_endpoint(std::string_view sse_url, std::string_view endpoint);

// Whether a session id is acceptable (visible ASCII 0x21-0x7E, bounded length).
bool valid_session_id(std::string_view id);

// Reconnect delay: base * 2^attempt, capped.
std::chrono::milliseconds backoff(int attempt, std::chrono::milliseconds base,
                                  std::chrono::milliseconds cap);

// Wait before reconnect number `attempt` (0: the first after a stream that made progress).
// The server's SSE `retry` is honoured (the first time exactly, later as a floor under the
// backoff) but capped at `cap` so that a hostile value cannot park the stream for days.
std::chrono::milliseconds reconnect_delay(int attempt, std::optional<int> retry_ms,
                                          std::chrono::milliseconds base,
                                          std::chrono::milliseconds cap);

// --- the stateless 2026-07-28 revision -----------------------------------------------------

inline constexpr const char* kStatelessVersion = "2026-07-28";

// A value for Mcp-Name: as is when it is plain visible ASCII without surrounding spaces, else
// `=?base64?<base64 of the UTF-8>?=` (also when the value itself looks like that sentinel).
std::string header_safe(std::string_view value);

// What the answer to a server/discover probe says about the server.
struct EraVerdict {
  enum Kind { stateless, stateful, error } kind = error;
  json discover;    // the DiscoverResult, when stateless
  std::string why;  // when error: for logs and the caller
};
// `status`: the HTTP status; `messages`: the JSON-RPC messages of the body (JSON or SSE);
// `probe_id`: the id the probe carried. Network errors, 401/403 and 5xx are errors (no
// evidence either way); a DiscoverResult listing 2026-07-28 is stateless; any other JSON-RPC
// answer or 4xx is the stateful era.
EraVerdict classify_discover(int status, const std::vector<json>& messages, const json& probe_id);

}  // namespace agentd::mcp::http_detail
