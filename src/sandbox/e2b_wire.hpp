// E2B wire pieces without I/O: Connect envelopes (5-byte frames), envd process events,
// base64, error mapping from HTTP statuses and Connect codes, sandbox paths and timestamps.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agentd/net/http.hpp"
#include "agentd/sandbox/sandbox.hpp"

namespace agentd::sandbox::e2b {

constexpr std::uint8_t kEndStreamFlag = 0x02;
constexpr std::uint8_t kCompressedFlag = 0x01;

// One Connect envelope: flags, 4-byte big-endian length, then the message.
std::string encode_frame(std::string_view payload, std::uint8_t flags = 0);

struct Frame {
  std::uint8_t flags = 0;
  std::string payload;
  bool end_stream() const noexcept { return (flags & kEndStreamFlag) != 0; }
};

// Incremental decoder: feed body pieces, get whole frames. A frame over `max_frame` bytes or a
// compressed one (we never ask for compression) is an error; after an error feed() returns
// nothing and error() says why.
class FrameDecoder {
 public:
  explicit FrameDecoder(std::size_t max_frame = 16u << 20) : max_frame_(max_frame) {}
  std::vector<Frame> feed(std::string_view piece);
  const std::string& error() const noexcept { return error_; }
  bool mid_frame() const noexcept { return !buffer_.empty(); }

 private:
  std::string buffer_;
  std::string error_;
  std::size_t max_frame_;
};

std::string base64_encode(std::string_view in);
// Standard or URL-safe alphabet, padding optional (as protojson accepts). nullopt: not base64.
std::optional<std::string> base64_decode(std::string_view in);

// envd's process.ProcessEvent (inside StartResponse/ConnectResponse `event`).
struct ProcessEvent {
  enum class Kind { start, data, end, keepalive, unknown };
  Kind kind = Kind::unknown;
  int pid = 0;
  std::string stream;  // data: stdout | stderr | pty
  std::string data;    // decoded bytes
  int exit_code = 0;   // end: protojson omits 0
  bool exited = false;
  std::string status;  // "exit status 1", "signal: killed"
  std::string error;
};
// Parses one message of a Start/Connect stream: {"event": {...}}. nullopt: malformed.
std::optional<ProcessEvent> parse_process_event(std::string_view message);

// The end-of-stream message: nullopt when it carries no error.
std::optional<Error> parse_end_stream(std::string_view message);

Errc errc_from_connect_code(std::string_view code);
// An HTTP error from the control plane ({code, message}), envd's /files ({code, message}), a
// Connect unary error ({code: "not_found", message}) or E2B's proxy (502 for a sandbox that is
// gone). 401 → unauthorized, 403 → forbidden, 404 → not_found, 409 → conflict, 429 →
// rate_limited (Retry-After seconds), 5xx → unavailable, 400/422 → bad_request.
Error error_from_http(int status, const net::Headers& headers, std::string_view body,
                      std::string_view what);

// A sandbox path as envd takes it: absolute and lexically normalized. Relative paths are under
// `home`. nullopt when `..` would climb above the root.
std::optional<std::string> sandbox_path(std::string_view path, std::string_view home);

// RFC 3339 (as the control plane sends startedAt/endAt) to UTC ms; nullopt when malformed.
std::optional<TimeMs> parse_rfc3339(std::string_view text);

// Percent-encodes a query parameter value.
std::string url_encode(std::string_view s);

}  // namespace agentd::sandbox::e2b
