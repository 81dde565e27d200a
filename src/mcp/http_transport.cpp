// HTTP transports to upstream MCP servers over agentd's outbound client: Streamable HTTP
// (2025-03-26 and later) and the legacy HTTP+SSE transport (2024-11-05).
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agentd/net/sse.hpp"
#include "http_transport_util.hpp"
#include "transport.hpp"

namespace agentd::mcp {

// ---------------------------------------------------------------------------------------------
// Pure helpers.

namespace http_detail {
namespace {

char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string_view trim(std::string_view s) {
  auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// Length of the valid UTF-8 sequence starting at s[i], 0 when invalid (RFC 3629 table).
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  auto at = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = at(i);
  if (c < 0x80) return 1;
  std::size_t n;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (at(i + 1) < lo || at(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k) {
    if (at(i + k) < 0x80 || at(i + k) > 0xBF) return 0;
  }
  return n;
}

// RFC 3986 5.2.4 on an absolute path.
std::string remove_dot_segments(std::string_view path) {
  std::vector<std::string_view> segs;
  bool trailing_slash = false;
  std::size_t pos = 1;  // path starts with '/'
  while (pos <= path.size()) {
    auto next = path.find('/', pos);
    std::string_view seg =
        path.substr(pos, next == std::string_view::npos ? std::string_view::npos : next - pos);
    bool last = next == std::string_view::npos;
    if (seg == ".") {
      trailing_slash = last;
    } else if (seg == "..") {
      if (!segs.empty()) segs.pop_back();
      trailing_slash = last;
    } else {
      segs.push_back(seg);
      trailing_slash = false;
    }
    if (last) break;
    pos = next + 1;
  }
  std::string out;
  for (auto s : segs) {
    out += '/';
    out += s;
  }
  if (trailing_slash || out.empty()) out += '/';
  return out;
}

}  // namespace

std::string media_type(std::string_view content_type) {
  auto semi = content_type.find(';');
  auto t = trim(content_type.substr(0, semi));
  std::string out(t);
  std::transform(out.begin(), out.end(), out.begin(), ascii_lower);
  return out;
}

PostAnswer classify_post(int status, std::string_view content_type, bool sent_session) {
  if (status == 404 && sent_session) return PostAnswer::session_gone;
  if (status < 200 || status > 299) return PostAnswer::http_error;
  if (status == 202 || status == 204) return PostAnswer::accepted;
  auto type = media_type(content_type);
  if (type == "text/event-stream") return PostAnswer::event_stream;
  if (type == "application/json") return PostAnswer::json_body;
  if (type.empty()) return PostAnswer::accepted;
  return PostAnswer::unexpected;
}

bool blames_session(int status, std::string_view body) {
  if (status != 400) return false;
  std::string lower(body.substr(0, 4096));
  std::transform(lower.begin(), lower.end(), lower.begin(), ascii_lower);
  return lower.find("session") != std::string::npos;
}

ParsedMessages parse_messages(std::string_view text) {
  ParsedMessages out;
  if (trim(text).empty()) return out;
  json v = json::parse(text, nullptr, false);
  if (v.is_discarded()) {
    out.error = "not JSON: " + snippet(text, 120);
    return out;
  }
  if (v.is_array()) {
    for (auto& item : v) {
      if (item.is_object()) {
        out.messages.push_back(std::move(item));
      } else {
        ++out.skipped;
      }
    }
  } else if (v.is_object()) {
    out.messages.push_back(std::move(v));
  } else {
    ++out.skipped;
  }
  return out;
}

bool answers(const json& message, const json& id) {
  if (!message.is_object() || message.contains("method")) return false;
  if (!message.contains("result") && !message.contains("error")) return false;
  auto it = message.find("id");
  return it != message.end() && *it == id;
}

std::string snippet(std::string_view body, std::size_t max) {
  std::string out;
  bool space = false;
  bool cut = false;
  for (std::size_t i = 0; i < body.size();) {
    unsigned char c = static_cast<unsigned char>(body[i]);
    std::size_t n = utf8_sequence(body, i);
    if (n == 0) {  // not UTF-8: would break the JSON this message may end up in
      c = '?';
      n = 1;
    } else if (n == 1 && (c < 0x20 || c == 0x7F)) {
      c = ' ';
    }
    if (n == 1 && c == ' ') {
      if (!out.empty() && !space && out.size() < max) out += ' ';
      space = true;
      ++i;
      continue;
    }
    space = false;
    if (out.size() + n > max) {
      cut = true;
      break;
    }
    if (n == 1) {
      out += static_cast<char>(c);
    } else {
      out.append(body.substr(i, n));
    }
    i += n;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (cut) out += "...";
  return out;
}

std::optional<std::string> resolve_endpoint(std::string_view sse_url, std::string_view endpoint) {
  auto base = net::parse_url(sse_url);
  if (!base) return std::nullopt;
  auto ref = trim(endpoint);
  if (auto hash = ref.find('#'); hash != std::string_view::npos) ref = ref.substr(0, hash);
  if (ref.empty()) return std::nullopt;
  for (char c : ref) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7F) return std::nullopt;
  }
  auto same_origin = [&](const std::string& absolute) -> std::optional<std::string> {
    auto u = net::parse_url(absolute);
    if (!u || u->origin() != base->origin()) return std::nullopt;
    auto q = u->target.find('?');
    std::string path = remove_dot_segments(std::string_view(u->target).substr(0, q));
    std::string query = q == std::string::npos ? std::string() : u->target.substr(q);
    return u->scheme + "://" + u->host_header() + path + query;
  };
  // An absolute URL: a scheme before any '/' or '?'.
  auto colon = ref.find(':');
  auto delim = ref.find_first_of("/?");
  if (colon != std::string_view::npos && (delim == std::string_view::npos || colon < delim)) {
    std::string scheme(ref.substr(0, colon));
    std::transform(scheme.begin(), scheme.end(), scheme.begin(), ascii_lower);
    return same_origin(scheme + std::string(ref.substr(colon)));
  }
  if (ref.starts_with("//")) return same_origin(base->scheme + ":" + std::string(ref));
  std::string_view base_target = base->target;
  std::string_view base_path = base_target.substr(0, base_target.find('?'));
  auto q = ref.find('?');
  std::string_view ref_path = ref.substr(0, q);
  std::string query = q == std::string_view::npos ? std::string() : std::string(ref.substr(q));
  std::string path;
  if (ref_path.empty()) {
    path = std::string(base_path);
  } else if (ref_path.front() == '/') {
    path = std::string(ref_path);
  } else {
    path = std::string(base_path.substr(0, base_path.rfind('/') + 1)) + std::string(ref_path);
  }
  return base->scheme + "://" + base->host_header() + remove_dot_segments(path) + query;
}

bool valid_session_id(std::string_view id) {
  if (id.empty() || id.size() > 1024) return false;
  return std::all_of(id.begin(), id.end(), [](char c) { return c >= 0x21 && c <= 0x7E; });
}

std::chrono::milliseconds backoff(int attempt, std::chrono::milliseconds base,
                                  std::chrono::milliseconds cap) {
  auto d = base;
  for (int i = 0; i < attempt && d < cap; ++i) d *= 2;
  return std::min(d, cap);
}

std::chrono::milliseconds reconnect_delay(int attempt, std::optional<int> retry_ms,
                                          std::chrono::milliseconds base,
                                          std::chrono::milliseconds cap) {
  std::optional<std::chrono::milliseconds> retry;
  if (retry_ms && *retry_ms >= 0) retry = std::min(std::chrono::milliseconds(*retry_ms), cap);
  if (attempt <= 0) return retry.value_or(base);
  auto d = backoff(attempt, base, cap);
  return retry ? std::max(d, *retry) : d;
}

std::string header_safe(std::string_view value) {
  bool plain = !value.empty() && value.front() != ' ' && value.back() != ' ' &&
               std::all_of(value.begin(), value.end(), [](char c) { return c >= 0x20 && c <= 0x7E; }) &&
               !(value.starts_with("=?base64?") && value.ends_with("?="));
  if (plain) return std::string(value);
  std::string out((value.size() + 2) / 3 * 4 + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(value.data()),
                          static_cast<int>(value.size()));
  out.resize(static_cast<std::size_t>(n));
  return "=?base64?" + out + "?=";
}

EraVerdict classify_discover(int status, const std::vector<json>& messages, const json& probe_id) {
  EraVerdict v;
  if (status == 401 || status == 403) {
    v.why = "server/discover was refused with " + std::to_string(status) +
            " (check the server's headers/credentials)";
    return v;
  }
  if (status >= 500) {
    v.why = "server/discover answered " + std::to_string(status);
    return v;
  }
  const json* answer = nullptr;
  for (const auto& m : messages) {
    if (answers(m, probe_id)) answer = &m;
  }
  if (!answer) {
    // A 4xx without a JSON-RPC answer is a server that does not know the method or the era.
    if (status >= 400) {
      v.kind = EraVerdict::stateful;
    } else {
      v.why = "server/discover answered " + std::to_string(status) + " without a JSON-RPC response";
    }
    return v;
  }
  if (auto r = answer->find("result"); r != answer->end() && r->is_object()) {
    auto versions = r->find("supportedVersions");
    if (versions != r->end() && versions->is_array() &&
        std::find(versions->begin(), versions->end(), json(kStatelessVersion)) != versions->end()) {
      v.kind = EraVerdict::stateless;
      v.discover = *r;
      return v;
    }
  }
  // -32022 lists the versions the server takes; only ours would make it stateless, and we
  // asked for ours. Any other error (-32601, "Server not initialized", a missing session...)
  // comes from a stateful-era server.
  v.kind = EraVerdict::stateful;
  return v;
}

}  // namespace http_detail

// ---------------------------------------------------------------------------------------------
// Shared machinery of both transports.

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using namespace boost::asio::experimental::awaitable_operators;
using http_detail::PostAnswer;
using std::chrono::milliseconds;

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

constexpr std::size_t kMaxQueued = 10'000;  // messages waiting for receive()
constexpr int kMaxResumes = 5;              // resume attempts in a row that bring no new event
constexpr int kMaxGetFailures = 10;         // GET stream attempts in a row that fail
constexpr milliseconds kConnectTimeout = 5s;
constexpr milliseconds kStreamIdle = 1h;  // long-lived GET streams may be quiet for long
constexpr milliseconds kStreamTotal = 24h * 30;
constexpr milliseconds kDeleteTimeout = 5s;
constexpr milliseconds kCloseGrace = 2s;  // close() waits this long for background tasks
constexpr milliseconds kBackoffBase = 250ms;
constexpr milliseconds kBackoffCap = 30s;
constexpr int kConnectionClosed = -32000;  // JSON-RPC code for "the answer was lost"

TResult<void> ok() { return TResult<void>(boost::system::in_place_value); }

// Messages from the server waiting for receive(): bounded, and failed once for good.
class Inbox {
 public:
  explicit Inbox(asio::any_io_executor ex)
      : wake_(std::move(ex), asio::steady_timer::time_point::max()) {}

  // False when failed or full (the caller then fails the transport).
  bool push(json m) {
    if (failed_ || queue_.size() >= kMaxQueued) return false;
    queue_.push_back(std::move(m));
    wake_.cancel();  // wakes receive(); the expiry stays at "never"
    return true;
  }

  // Queued messages are still handed out before the error unless `drop_queued`.
  void fail(const std::string& why, bool drop_queued) {
    if (drop_queued) queue_.clear();
    if (failed_) return;
    failed_ = why;
    wake_.cancel();
  }
  bool failed() const noexcept { return failed_.has_value(); }

  asio::awaitable<TResult<json>> pop() {
    for (;;) {
      if (!queue_.empty()) {
        json m = std::move(queue_.front());
        queue_.pop_front();
        co_return m;
      }
      if (failed_) co_return TransportError{*failed_};
      co_await wake_.async_wait(kTuple);
    }
  }

 private:
  asio::steady_timer wake_;
  std::deque<json> queue_;
  std::optional<std::string> failed_;
};

// State of one transport, shared with the background tasks it spawns (each holds a
// shared_ptr, so a task that outlives close() by a moment still finds it).
struct State {
  State(asio::any_io_executor e, const ServerConfig& c, net::HttpClient& cl, const char* kind)
      : ex(e),
        config(c),
        client(cl),
        label(std::string(kind) + ": " + c.url),
        inbox(e),
        tasks_done(e),
        endpoint_wait(e) {}

  asio::any_io_executor ex;
  ServerConfig config;
  net::HttpClient& client;
  std::string label;  // describe(): no header values, they hold secrets
  Inbox inbox;
  std::map<std::uint64_t, std::shared_ptr<net::ClientStream>> streams;  // cancelled by close()
  std::uint64_t next_stream = 0;
  std::set<asio::steady_timer*> naps;  // backoff waits, cut short by close()
  asio::steady_timer tasks_done;
  int tasks = 0;
  bool closed = false;
  std::optional<std::string> dead;  // why the transport failed for good
  // Streamable HTTP
  std::string session_id;
  std::string protocol_version;
  bool get_started = false;
  bool session_lost = false;
  // The stateless 2026-07-28 revision: no session; every request carries the _meta envelope.
  bool probed = false;
  bool stateless = false;
  json client_capabilities = json::object();
  json client_info = json::object();
  std::map<std::string, std::uint64_t> call_streams;  // request id (dumped) → tracked stream
  std::map<std::string, asio::steady_timer*> call_aborts;  // requests still waiting for headers
  // Legacy HTTP+SSE
  bool started = false;
  std::string endpoint;
  asio::steady_timer endpoint_wait;

  const std::string& name() const { return config.name; }
  bool stopped() const noexcept { return closed || dead.has_value(); }

  std::uint64_t track(std::shared_ptr<net::ClientStream> s) {
    streams[++next_stream] = std::move(s);
    return next_stream;
  }
  void untrack(std::uint64_t id) { streams.erase(id); }

  void stop_background() {
    for (auto& [id, t] : call_aborts) t->cancel();
    for (auto& [id, s] : streams) s->cancel();
    for (auto* t : naps) t->cancel();
    endpoint_wait.cancel();
  }

  // The transport is unusable from now on: receive() fails after the queued messages.
  void fail(const std::string& why) {
    if (stopped()) return;
    spdlog::warn("mcp[{}]: {} failed: {}", name(), label, why);
    dead = why;
    inbox.fail(why, false);
    stop_background();
  }

  void session_gone() {
    session_lost = true;
    fail(
        "the MCP session is gone: the server no longer knows its Mcp-Session-Id (a new "
        "session must be initialized)");
  }

  void push(json m) {
    if (inbox.push(std::move(m)) || inbox.failed()) return;
    fail("more than " + std::to_string(kMaxQueued) +
         " messages from the server are waiting to be received");
  }

  // Queues the message(s) of a body or event; true when one answers `answer_id`.
  bool deliver(std::string_view text, const json& answer_id) {
    auto parsed = http_detail::parse_messages(text);
    if (!parsed.error.empty()) {
      spdlog::warn("mcp[{}]: skipped a message from {}: {}", name(), label, parsed.error);
    }
    if (parsed.skipped > 0) {
      spdlog::warn("mcp[{}]: skipped {} message(s) from {} that are not JSON objects", name(),
                   parsed.skipped, label);
    }
    bool found = false;
    for (auto& m : parsed.messages) {
      if (!answer_id.is_null() && http_detail::answers(m, answer_id)) found = true;
      if (!answer_id.is_null() && m.contains("method") && m.contains("id")) {
        m[kRelatedKey] = answer_id;  // a server request made while answering ours
      }
      push(std::move(m));
    }
    return found;
  }

  // Backoff wait; false when the transport stopped meanwhile.
  asio::awaitable<bool> nap(milliseconds d) {
    asio::steady_timer t(ex, d);
    naps.insert(&t);
    co_await t.async_wait(kTuple);
    naps.erase(&t);
    co_return !stopped();
  }

  std::optional<TransportError> unusable() const {
    if (closed) return TransportError{label + ": the transport is closed"};
    if (dead) return TransportError{*dead};
    return std::nullopt;
  }

  net::ClientRequest request(std::string method, std::string url, net::ClientTimeouts t) const {
    net::ClientRequest r;
    r.method = std::move(method);
    r.url = std::move(url);
    r.timeouts = t;
    for (const auto& h : config.headers) r.headers.add(h.name, h.value);
    return r;
  }

  // 2026-07-28: the per-request envelope in params._meta, and the headers that mirror it.
  void add_envelope(json& message) const {
    json& params = message["params"];
    if (!params.is_object()) params = json::object();
    json& meta = params["_meta"];
    if (!meta.is_object()) meta = json::object();
    meta["io.modelcontextprotocol/protocolVersion"] = http_detail::kStatelessVersion;
    meta["io.modelcontextprotocol/clientCapabilities"] = client_capabilities;
    meta["io.modelcontextprotocol/clientInfo"] = client_info;
  }
  static void add_stateless_headers(net::ClientRequest& r, const json& message) {
    auto method = message.value("method", std::string());
    r.headers.set("MCP-Protocol-Version", http_detail::kStatelessVersion);
    r.headers.set("Mcp-Method", method);
    const json& p = message.contains("params") ? message["params"] : json();
    const char* key = method == "resources/read"                              ? "uri"
                      : (method == "tools/call" || method == "prompts/get") ? "name"
                                                                            : nullptr;
    if (key && p.is_object() && p.contains(key) && p[key].is_string()) {
      r.headers.set("Mcp-Name", http_detail::header_safe(p[key].get_ref<const std::string&>()));
    }
  }

  // Mcp-Session-Id and MCP-Protocol-Version, once known.
  void add_session_headers(net::ClientRequest& r) const {
    if (!session_id.empty()) r.headers.set("Mcp-Session-Id", session_id);
    if (!protocol_version.empty()) r.headers.set("MCP-Protocol-Version", protocol_version);
  }
};

// A bounded exchange: the whole of it (an SSE answer included) within `limit`.
net::ClientTimeouts exchange_timeouts(milliseconds limit) {
  net::ClientTimeouts t;
  t.connect = std::min(kConnectTimeout, limit);
  t.first_byte = limit;
  t.idle = limit;
  t.total = limit;
  return t;
}

// A long-lived event stream.
net::ClientTimeouts stream_timeouts(milliseconds first_byte) {
  net::ClientTimeouts t;
  t.connect = std::min(kConnectTimeout, first_byte);
  t.first_byte = first_byte;
  t.idle = kStreamIdle;
  t.total = kStreamTotal;
  return t;
}

bool is_event_stream(const net::ClientStream& s) {
  return http_detail::media_type(s.headers().get("content-type").value_or("")) ==
         "text/event-stream";
}

std::string status_text(int status) {
  return std::to_string(status) + " " + std::string(net::reason_phrase(status));
}

// Reads at most a few KiB of a body nobody needs whole; the connection of a longer one is
// closed rather than drained.
asio::awaitable<std::string> read_some_of(net::ClientStream& s) {
  constexpr std::size_t kEnough = 4096;
  std::string body;
  for (;;) {
    auto piece = co_await s.read();
    if (!piece || piece->empty()) break;
    body += *piece;
    if (body.size() >= kEnough) {
      s.cancel();
      break;
    }
  }
  co_return body;
}

// "answered 500 Internal Server Error: <snippet>".
std::string answer_text(int status, std::string_view body) {
  std::string text = "answered " + status_text(status);
  if (!body.empty()) text += ": " + http_detail::snippet(body);
  return text;
}

asio::awaitable<std::string> answered(net::ClientStream& s) {
  auto body = co_await read_some_of(s);
  co_return answer_text(s.status(), body);
}

// Starts a background task the transport owns: counted (close() waits for it), its failure
// logged.
void spawn(const std::shared_ptr<State>& s, asio::awaitable<void> task, const char* what) {
  ++s->tasks;
  asio::co_spawn(s->ex, std::move(task), [s, what](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        spdlog::error("mcp[{}]: {} of {} failed: {}", s->name(), what, s->label, x.what());
      } catch (...) {
        spdlog::error("mcp[{}]: {} of {} failed", s->name(), what, s->label);
      }
    }
    if (--s->tasks == 0) s->tasks_done.cancel();
  });
}

// Waits (bounded) until the background tasks have seen the cancellation and ended.
asio::awaitable<void> drain_tasks(std::shared_ptr<State> s) {
  auto deadline = std::chrono::steady_clock::now() + kCloseGrace;
  while (s->tasks > 0 && std::chrono::steady_clock::now() < deadline) {
    s->tasks_done.expires_at(deadline);
    co_await s->tasks_done.async_wait(kTuple);
  }
}

// Reads one event stream to its end, handing each event to `on_event`. nullopt: the body
// ended normally.
template <class OnEvent>
asio::awaitable<std::optional<net::ClientError>> pump(net::ClientStream& stream,
                                                      net::SseParser& parser, OnEvent on_event) {
  for (;;) {
    auto piece = co_await stream.read();
    if (!piece) co_return piece.error();
    if (piece->empty()) co_return std::nullopt;
    for (const auto& e : parser.feed(*piece)) on_event(e);
  }
}

// ---------------------------------------------------------------------------------------------
// Streamable HTTP.

// Follows the SSE answer to one POST: queues its messages, and when it drops before the
// response to `request_id` arrived, resumes with GET + Last-Event-ID (a bounded number of
// times in a row without progress, and never past the call's deadline). When the response is
// lost for good, an error response is queued in its place so the caller does not wait for
// its deadline.
asio::awaitable<void> follow_post_stream(std::shared_ptr<State> s,
                                         std::shared_ptr<net::ClientStream> stream, json request_id,
                                         milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::string last_id;
  std::optional<int> retry;
  bool answer_seen = request_id.is_null();
  int attempts = 0;
  std::string why;
  for (;;) {
    if (stream) {
      auto token = s->track(stream);
      // 2026-07-28 cancels a request by closing its response stream.
      const auto key = request_id.dump();
      if (s->stateless && !request_id.is_null()) s->call_streams[key] = token;
      net::SseParser parser;
      auto end = co_await pump(*stream, parser, [&](const net::SseEvent& e) {
        if (e.retry_ms) retry = *e.retry_ms;
        if (e.event != "message" && !e.event.empty()) return;
        if (s->deliver(e.data, request_id)) answer_seen = true;
      });
      s->untrack(token);
      if (auto it = s->call_streams.find(key); it != s->call_streams.end() && it->second == token) {
        s->call_streams.erase(it);
      }
      if (!parser.last_event_id().empty() && parser.last_event_id() != last_id) {
        last_id = parser.last_event_id();
        attempts = 0;
      }
      if (s->stopped() || answer_seen) co_return;
      if (end && end->kind == net::ClientError::Kind::timeout) {
        why = net::describe(*end);
        break;  // the deadline of the call itself passed: nothing left to resume for
      }
      why = end ? net::describe(*end) : "the event stream ended before the response";
      stream.reset();
    }
    if (last_id.empty()) {
      why += " (no event id to resume from)";
      break;
    }
    if (attempts >= kMaxResumes) {
      why += " (gave up resuming after " + std::to_string(kMaxResumes) + " attempts)";
      break;
    }
    auto delay = http_detail::reconnect_delay(attempts, retry, kBackoffBase, kBackoffCap);
    if (std::chrono::steady_clock::now() + delay >= deadline) {
      why += " (the call's deadline passes before a resume could help)";
      break;
    }
    ++attempts;
    if (!co_await s->nap(delay)) co_return;
    auto req = s->request("GET", s->config.url, exchange_timeouts(limit));
    req.headers.set("Accept", "text/event-stream");
    req.headers.set("Last-Event-ID", last_id);
    s->add_session_headers(req);
    auto opened = co_await s->client.open(std::move(req));
    if (s->stopped()) {
      if (opened) (*opened)->cancel();
      co_return;
    }
    if (!opened) {
      why = "resuming failed: " + net::describe(opened.error());
      continue;
    }
    std::shared_ptr<net::ClientStream> resumed = std::move(*opened);
    if (resumed->status() == 404 && !s->session_id.empty()) {
      s->session_gone();
      co_return;
    }
    if (resumed->status() / 100 != 2 || !is_event_stream(*resumed)) {
      auto body = co_await read_some_of(*resumed);
      if (!s->session_id.empty() && http_detail::blames_session(resumed->status(), body)) {
        s->session_gone();
        co_return;
      }
      why = "resuming with GET: " + answer_text(resumed->status(), body);
      if (resumed->status() == 405) attempts = kMaxResumes;  // the server cannot resume
      continue;
    }
    spdlog::debug("mcp[{}]: resumed an event stream of {}", s->name(), s->label);
    stream = std::move(resumed);
  }
  spdlog::warn("mcp[{}]: lost the response to request {} from {}: {}", s->name(), request_id.dump(),
               s->label, why);
  json error = {{"code", kConnectionClosed}, {"message", "the response was lost: " + why}};
  s->push(json{{"jsonrpc", "2.0"}, {"id", request_id}, {"error", std::move(error)}});
}

// The optional GET stream for server-initiated messages; reconnects with backoff when it
// drops, stops for good on 405 (the server offers none).
asio::awaitable<void> listen_get(std::shared_ptr<State> s) {
  std::string last_id;
  std::optional<int> retry;
  int failures = 0;
  while (!s->stopped()) {
    auto req = s->request("GET", s->config.url, stream_timeouts(s->config.call_timeout));
    req.headers.set("Accept", "text/event-stream");
    if (!last_id.empty()) req.headers.set("Last-Event-ID", last_id);
    s->add_session_headers(req);
    auto opened = co_await s->client.open(std::move(req));
    if (s->stopped()) {
      if (opened) (*opened)->cancel();
      co_return;
    }
    std::string why;
    if (!opened) {
      why = net::describe(opened.error());
    } else {
      std::shared_ptr<net::ClientStream> stream = std::move(*opened);
      int status = stream->status();
      if (status == 405) {
        spdlog::debug("mcp[{}]: {} offers no GET stream", s->name(), s->label);
        co_return;
      }
      if (status == 404 && !s->session_id.empty()) {
        s->session_gone();
        co_return;
      }
      if (status / 100 != 2 || !is_event_stream(*stream)) {
        auto body = co_await read_some_of(*stream);
        if (!s->session_id.empty() && http_detail::blames_session(status, body)) {
          s->session_gone();
          co_return;
        }
        why = "GET " + answer_text(status, body);
      } else {
        auto token = s->track(stream);
        net::SseParser parser;
        bool got_any = false;
        auto end = co_await pump(*stream, parser, [&](const net::SseEvent& e) {
          got_any = true;
          if (e.retry_ms) retry = *e.retry_ms;
          if (e.event == "message") s->deliver(e.data, json());
        });
        s->untrack(token);
        if (!parser.last_event_id().empty()) last_id = parser.last_event_id();
        if (s->stopped()) co_return;
        if (got_any) failures = 0;
        why = end ? net::describe(*end) : "the server ended it";
      }
    }
    if (++failures > kMaxGetFailures) {
      spdlog::warn("mcp[{}]: giving up the GET stream of {} after {} attempts: {}", s->name(),
                   s->label, kMaxGetFailures, why);
      co_return;
    }
    auto delay = http_detail::reconnect_delay(failures - 1, retry, kBackoffBase, kBackoffCap);
    spdlog::debug("mcp[{}]: GET stream of {} dropped ({}); reconnecting in {}ms", s->name(),
                  s->label, why, delay.count());
    if (!co_await s->nap(delay)) co_return;
  }
}

// ---------------------------------------------------------------------------------------------
// The stateless 2026-07-28 revision.

// The JSON-RPC messages of a whole answer body, JSON or an event stream.
std::vector<json> body_messages(std::string_view content_type, const std::string& body) {
  std::vector<json> out;
  auto take = [&](std::string_view text) {
    for (auto& m : http_detail::parse_messages(text).messages) out.push_back(std::move(m));
  };
  if (http_detail::media_type(content_type) == "text/event-stream") {
    net::SseParser parser;
    for (const auto& e : parser.feed(body)) take(e.data);
    for (const auto& e : parser.feed("\n\n")) take(e.data);  // an unterminated last event
  } else {
    take(body);
  }
  return out;
}

// Probes with server/discover: the DiscoverResult of a stateless server, nullopt for a
// stateful-era one, or an error (no evidence either way: the caller retries later).
asio::awaitable<TResult<std::optional<json>>> probe_era(std::shared_ptr<State> s) {
  json probe = {{"jsonrpc", "2.0"}, {"id", "agentd-discover"}, {"method", "server/discover"}};
  s->add_envelope(probe);
  auto req = s->request("POST", s->config.url, exchange_timeouts(s->config.init_timeout));
  req.headers.set("Content-Type", "application/json");
  req.headers.set("Accept", "application/json, text/event-stream");
  State::add_stateless_headers(req, probe);
  req.body = probe.dump();
  auto r = co_await s->client.request(std::move(req));
  if (s->closed) co_return *s->unusable();
  if (!r) {
    co_return TransportError{"server/discover to " + s->config.url +
                             " failed: " + net::describe(r.error())};
  }
  auto type = r->headers.get("content-type").value_or("");
  auto verdict =
      http_detail::classify_discover(r->status, body_messages(type, r->body), probe["id"]);
  switch (verdict.kind) {
    case http_detail::EraVerdict::stateless:
      co_return std::optional<json>(std::move(verdict.discover));
    case http_detail::EraVerdict::stateful:
      co_return std::optional<json>();
    case http_detail::EraVerdict::error:
      break;
  }
  co_return TransportError{s->config.url + ": " + verdict.why};
}

// The InitializeResult agentd's session expects, made from a DiscoverResult.
json initialize_result(const json& id, const json& discover) {
  json info = json::object();
  if (auto m = discover.find("_meta"); m != discover.end() && m->is_object()) {
    info = m->value("io.modelcontextprotocol/serverInfo", json::object());
  }
  json result = {{"protocolVersion", http_detail::kStatelessVersion},
                 {"capabilities", discover.value("capabilities", json::object())},
                 {"serverInfo", std::move(info)}};
  if (discover.contains("instructions")) result["instructions"] = discover["instructions"];
  return {{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result)}};
}

// 2026-07-28 has no GET stream: list changes come on a long-lived subscriptions/listen POST.
// Reconnects with backoff; stops when the server does not offer it.
asio::awaitable<void> listen_stateless(std::shared_ptr<State> s) {
  int failures = 0;
  std::uint64_t round = 0;
  while (!s->stopped()) {
    json filter = {{"toolsListChanged", true},
                   {"promptsListChanged", true},
                   {"resourcesListChanged", true}};
    json listen = {{"jsonrpc", "2.0"},
                   {"id", "agentd-listen-" + std::to_string(++round)},
                   {"method", "subscriptions/listen"},
                   {"params", {{"notifications", std::move(filter)}}}};
    s->add_envelope(listen);
    auto req = s->request("POST", s->config.url, stream_timeouts(s->config.call_timeout));
    req.headers.set("Content-Type", "application/json");
    req.headers.set("Accept", "application/json, text/event-stream");
    State::add_stateless_headers(req, listen);
    req.body = listen.dump();
    auto opened = co_await s->client.open(std::move(req));
    if (s->stopped()) {
      if (opened) (*opened)->cancel();
      co_return;
    }
    std::string why;
    if (!opened) {
      why = net::describe(opened.error());
    } else {
      std::shared_ptr<net::ClientStream> stream = std::move(*opened);
      int status = stream->status();
      if (status / 100 != 2 || !is_event_stream(*stream)) {
        auto body = co_await read_some_of(*stream);
        if (status == 404 || status == 405 || body.find("-32601") != std::string::npos) {
          spdlog::debug("mcp[{}]: {} offers no subscriptions/listen", s->name(), s->label);
          co_return;
        }
        why = "subscriptions/listen " + answer_text(status, body);
      } else {
        auto token = s->track(stream);
        net::SseParser parser;
        bool got_any = false;
        auto end = co_await pump(*stream, parser, [&](const net::SseEvent& e) {
          got_any = true;
          // Notifications only; the acknowledgement and the final result are for us.
          for (auto& m : http_detail::parse_messages(e.data).messages) {
            if (m.contains("method") && !m.contains("id") &&
                m["method"] != "notifications/subscriptions/acknowledged") {
              s->push(std::move(m));
            }
          }
        });
        s->untrack(token);
        if (s->stopped()) co_return;
        if (got_any) failures = 0;
        why = end ? net::describe(*end) : "the server ended it";
      }
    }
    if (++failures > kMaxGetFailures) {
      spdlog::warn("mcp[{}]: giving up subscriptions/listen at {} after {} attempts: {}",
                   s->name(), s->label, kMaxGetFailures, why);
      co_return;
    }
    auto delay = http_detail::reconnect_delay(failures - 1, std::nullopt, kBackoffBase, kBackoffCap);
    spdlog::debug("mcp[{}]: subscriptions/listen of {} ended ({}); again in {}ms", s->name(),
                  s->label, why, delay.count());
    if (!co_await s->nap(delay)) co_return;
  }
}

// One message in the stateless era. Notifications have no HTTP meaning there except
// notifications/cancelled, which becomes closing that request's response.
asio::awaitable<TResult<void>> send_stateless(std::shared_ptr<State> s, json message) {
  std::string method = message.value("method", std::string());
  json request_id = message.contains("id") && message.contains("method") ? message["id"] : json();
  if (request_id.is_null()) {
    if (method == "notifications/cancelled" && message.contains("params") &&
        message["params"].is_object() && message["params"].contains("requestId")) {
      auto key = message["params"]["requestId"].dump();
      if (auto it = s->call_streams.find(key); it != s->call_streams.end()) {
        if (auto st = s->streams.find(it->second); st != s->streams.end()) st->second->cancel();
      }
      if (auto it = s->call_aborts.find(key); it != s->call_aborts.end()) it->second->cancel();
    }
    co_return ok();  // initialized, responses to server requests: nothing to send
  }
  // `ping` is gone in 2026-07-28; server/discover is the cheap liveness check.
  if (method == "ping") message["method"] = method = "server/discover";
  s->add_envelope(message);
  auto limit = s->config.call_timeout;
  auto req = s->request("POST", s->config.url, exchange_timeouts(limit));
  req.headers.set("Content-Type", "application/json");
  req.headers.set("Accept", "application/json, text/event-stream");
  State::add_stateless_headers(req, message);
  req.body = message.dump(-1, ' ', false, json::error_handler_t::replace);
  // A JSON answer comes with its headers, so the wait for them can be long: a cancel before
  // they arrive abandons the connection (closing it is how 2026-07-28 cancels).
  const auto key = request_id.dump();
  asio::steady_timer abort(s->ex, asio::steady_timer::time_point::max());
  s->call_aborts[key] = &abort;
  auto raced = co_await (s->client.open(std::move(req)) || abort.async_wait(kTuple));
  s->call_aborts.erase(key);
  if (raced.index() == 1) co_return ok();  // cancelled: the caller has its answer already
  auto opened = std::get<0>(std::move(raced));
  if (s->closed) {
    if (opened) (*opened)->cancel();
    co_return *s->unusable();
  }
  if (!opened) {
    co_return TransportError{"POST to " + s->config.url +
                             " failed: " + net::describe(opened.error())};
  }
  std::shared_ptr<net::ClientStream> stream = std::move(*opened);
  const int status = stream->status();
  auto type = stream->headers().get("content-type").value_or("");
  if (status / 100 == 2 && is_event_stream(*stream)) {
    spawn(s, follow_post_stream(s, std::move(stream), request_id, limit), "event stream");
    co_return ok();
  }
  // A JSON answer, including the JSON-RPC errors that come with 4xx statuses (404 -32601,
  // 400 -32020...): read it while the stream stays cancellable.
  auto token = s->track(stream);
  s->call_streams[key] = token;
  auto body = co_await stream->read_all();
  s->untrack(token);
  s->call_streams.erase(key);
  if (s->closed) co_return *s->unusable();
  if (!body) {
    json error = {{"code", kConnectionClosed},
                  {"message", "the response was lost: " + net::describe(body.error())}};
    s->push(json{{"jsonrpc", "2.0"}, {"id", request_id}, {"error", std::move(error)}});
    co_return ok();
  }
  bool answered = false;
  for (auto& m : body_messages(type, *body)) {
    if (http_detail::answers(m, request_id)) answered = true;
    s->push(std::move(m));
  }
  if (!answered) {
    co_return TransportError{"POST to " + s->config.url + " " + answer_text(status, *body)};
  }
  co_return ok();
}

class HttpTransport final : public Transport {
 public:
  HttpTransport(asio::any_io_executor ex, const ServerConfig& config, net::HttpClient& client)
      : s_(std::make_shared<State>(std::move(ex), config, client, "http")) {}

  ~HttpTransport() override {
    s_->closed = true;
    s_->inbox.fail(s_->label + ": the transport is closed", true);
    s_->stop_background();
  }

  asio::awaitable<TResult<void>> start() override {
    auto s = s_;
    if (auto e = s->unusable()) co_return *e;
    if (!net::parse_url(s->config.url)) {
      co_return TransportError{"not an http(s) URL: " + s->config.url};
    }
    co_return ok();
  }

  asio::awaitable<TResult<void>> send(json message) override {
    auto s = s_;
    if (auto e = s->unusable()) co_return *e;
    std::string method;
    json request_id;
    if (message.is_object()) {
      if (auto m = message.find("method"); m != message.end() && m->is_string()) {
        method = m->get<std::string>();
        if (auto id = message.find("id"); id != message.end()) request_id = *id;
      }
    }
    const bool initialize = method == "initialize";
    const bool is_request = !request_id.is_null();
    if (initialize && !s->probed && s->config.era != Era::stateful) {
      // Which era? server/discover answers it (and is all a stateless server needs).
      s->probed = true;
      if (const json& p = message.value("params", json::object()); p.is_object()) {
        s->client_capabilities = p.value("capabilities", json::object());
        s->client_info = p.value("clientInfo", json::object());
      }
      auto verdict = co_await probe_era(s);
      if (!verdict) co_return verdict.error();
      if (*verdict) {
        s->stateless = true;
        s->protocol_version = http_detail::kStatelessVersion;
        spdlog::debug("mcp[{}]: {} speaks {} (stateless)", s->name(), s->label,
                      http_detail::kStatelessVersion);
        s->push(initialize_result(request_id, **verdict));
        spawn(s, listen_stateless(s), "subscriptions/listen");
        co_return ok();
      }
      if (s->config.era == Era::stateless) {
        co_return TransportError{s->config.url + " does not speak " +
                                 std::string(http_detail::kStatelessVersion) +
                                 " (era: stateless is configured)"};
      }
    }
    if (s->stateless) co_return co_await send_stateless(s, std::move(message));
    auto limit = initialize ? s->config.init_timeout : s->config.call_timeout;
    auto req = s->request("POST", s->config.url, exchange_timeouts(limit));
    // A new session starts without a session id.
    if (!initialize) s->add_session_headers(req);
    req.headers.set("Content-Type", "application/json");
    req.headers.set("Accept", "application/json, text/event-stream");
    req.body = message.dump(-1, ' ', false, json::error_handler_t::replace);
    const bool sent_session = req.headers.get("mcp-session-id").has_value();

    auto opened = co_await s->client.open(std::move(req));
    if (s->closed) {
      if (opened) (*opened)->cancel();
      co_return *s->unusable();
    }
    if (!opened) {
      co_return TransportError{"POST to " + s->config.url +
                               " failed: " + net::describe(opened.error())};
    }
    std::shared_ptr<net::ClientStream> stream = std::move(*opened);
    const int status = stream->status();
    if (initialize && status / 100 == 2) {
      if (auto sid = stream->headers().get("mcp-session-id")) {
        if (http_detail::valid_session_id(*sid)) {
          s->session_id = std::string(*sid);
        } else {
          spdlog::warn("mcp[{}]: {} sent an invalid Mcp-Session-Id; ignored", s->name(), s->label);
        }
      }
    }
    auto type = stream->headers().get("content-type").value_or("");
    switch (http_detail::classify_post(status, type, sent_session)) {
      case PostAnswer::session_gone:
        co_await read_some_of(*stream);
        s->session_gone();
        co_return *s->unusable();
      case PostAnswer::http_error: {
        auto body = co_await read_some_of(*stream);
        if (sent_session && http_detail::blames_session(status, body)) {
          s->session_gone();
          co_return *s->unusable();
        }
        co_return TransportError{"POST to " + s->config.url + " " + answer_text(status, body)};
      }
      case PostAnswer::accepted:
        co_await read_some_of(*stream);
        if (is_request) {
          co_return TransportError{"POST to " + s->config.url + " answered " + status_text(status) +
                                   " to " + method + " without a response"};
        }
        break;
      case PostAnswer::json_body: {
        auto body = co_await stream->read_all();
        if (!body) {
          co_return TransportError{"reading the answer of " + s->config.url +
                                   " failed: " + net::describe(body.error())};
        }
        s->deliver(*body, json());
        if (auto e = s->unusable()) co_return *e;
        break;
      }
      case PostAnswer::event_stream:
        spawn(s, follow_post_stream(s, std::move(stream), request_id, limit), "event stream");
        break;
      case PostAnswer::unexpected:
        co_await read_some_of(*stream);
        if (is_request) {
          co_return TransportError{"POST to " + s->config.url + " answered with Content-Type " +
                                   http_detail::snippet(type, 80) +
                                   " (expected application/json or text/event-stream)"};
        }
        break;
    }
    // Initialization is complete: listen for server-initiated messages too.
    if (method == "notifications/initialized" && !s->get_started) {
      s->get_started = true;
      spawn(s, listen_get(s), "GET stream");
    }
    co_return ok();
  }

  asio::awaitable<TResult<json>> receive() override {
    auto s = s_;
    co_return co_await s->inbox.pop();
  }

  void set_protocol_version(std::string version) override {
    s_->protocol_version = std::move(version);
  }

  asio::awaitable<void> close() override {
    auto s = s_;
    if (s->closed) co_return;
    const bool end_session = !s->session_id.empty() && !s->session_lost;
    s->closed = true;
    s->inbox.fail(s->label + ": the transport is closed", true);
    s->stop_background();
    if (end_session) {
      auto req = s->request("DELETE", s->config.url, exchange_timeouts(kDeleteTimeout));
      s->add_session_headers(req);
      auto r = co_await s->client.request(std::move(req));
      if (!r) {
        spdlog::debug("mcp[{}]: DELETE of the session at {} failed: {}", s->name(), s->label,
                      net::describe(r.error()));
      } else if (r->status / 100 != 2 && r->status != 405 && r->status != 404) {
        spdlog::debug("mcp[{}]: DELETE of the session at {} answered {}", s->name(), s->label,
                      r->status);
      }
    }
    co_await drain_tasks(s);
  }

  std::string describe() const override { return s_->label; }

 private:
  std::shared_ptr<State> s_;
};

// ---------------------------------------------------------------------------------------------
// Legacy HTTP+SSE.

// Reads the one GET stream: the `endpoint` event, then `message` events. Its end is the end
// of the legacy session (it cannot be resumed).
asio::awaitable<void> follow_legacy_stream(std::shared_ptr<State> s,
                                           std::shared_ptr<net::ClientStream> stream) {
  auto token = s->track(stream);
  net::SseParser parser;
  auto end = co_await pump(*stream, parser, [&](const net::SseEvent& e) {
    if (s->stopped()) return;
    if (e.event == "endpoint") {
      auto url = http_detail::resolve_endpoint(s->config.url, e.data);
      if (!url) {
        s->fail("the endpoint event names an unusable URL or another origin: " +
                http_detail::snippet(e.data, 200));
        return;
      }
      s->endpoint = std::move(*url);
      s->endpoint_wait.cancel();
    } else if (e.event == "message") {
      s->deliver(e.data, json());
    }
  });
  s->untrack(token);
  if (s->stopped()) co_return;
  s->fail("the event stream ended" + (end ? ": " + net::describe(*end) : std::string()) +
          " (a legacy SSE session cannot be resumed)");
}

class SseTransport final : public Transport {
 public:
  SseTransport(asio::any_io_executor ex, const ServerConfig& config, net::HttpClient& client)
      : s_(std::make_shared<State>(std::move(ex), config, client, "sse")) {}

  ~SseTransport() override {
    s_->closed = true;
    s_->inbox.fail(s_->label + ": the transport is closed", true);
    s_->stop_background();
  }

  asio::awaitable<TResult<void>> start() override {
    auto s = s_;
    if (auto e = s->unusable()) co_return *e;
    if (s->started) co_return ok();
    auto req = s->request("GET", s->config.url, stream_timeouts(s->config.init_timeout));
    req.headers.set("Accept", "text/event-stream");
    auto opened = co_await s->client.open(std::move(req));
    if (s->closed) {
      if (opened) (*opened)->cancel();
      co_return *s->unusable();
    }
    if (!opened) {
      co_return TransportError{"GET " + s->config.url +
                               " failed: " + net::describe(opened.error())};
    }
    std::shared_ptr<net::ClientStream> stream = std::move(*opened);
    if (stream->status() / 100 != 2) {
      auto text = co_await answered(*stream);
      co_return TransportError{"GET " + s->config.url + " " + text};
    }
    if (!is_event_stream(*stream)) {
      stream->cancel();
      co_return TransportError{"GET " + s->config.url + " did not answer with an event stream"};
    }
    s->started = true;
    spawn(s, follow_legacy_stream(s, std::move(stream)), "event stream");
    s->endpoint_wait.expires_after(s->config.init_timeout);
    while (s->endpoint.empty() && !s->stopped()) {
      auto [ec] = co_await s->endpoint_wait.async_wait(kTuple);
      if (!ec) break;  // the deadline passed
    }
    if (!s->endpoint.empty() && !s->stopped()) co_return ok();
    if (auto e = s->unusable()) co_return *e;
    s->fail("no endpoint event within " + std::to_string(s->config.init_timeout.count()) + "ms");
    co_return *s->unusable();
  }

  asio::awaitable<TResult<void>> send(json message) override {
    auto s = s_;
    if (auto e = s->unusable()) co_return *e;
    if (s->endpoint.empty()) co_return TransportError{s->label + ": not started"};
    bool initialize = message.is_object() && message.value("method", json()) == "initialize";
    auto req =
        s->request("POST", s->endpoint,
                   exchange_timeouts(initialize ? s->config.init_timeout : s->config.call_timeout));
    req.headers.set("Content-Type", "application/json");
    req.body = message.dump(-1, ' ', false, json::error_handler_t::replace);
    auto r = co_await s->client.open(std::move(req));
    if (s->closed) {
      if (r) (*r)->cancel();
      co_return *s->unusable();
    }
    if (!r) {
      co_return TransportError{"POST to the endpoint of " + s->config.url +
                               " failed: " + net::describe(r.error())};
    }
    if ((*r)->status() / 100 != 2) {
      auto text = co_await answered(**r);
      co_return TransportError{"POST to the endpoint of " + s->config.url + " " + text};
    }
    co_await read_some_of(**r);  // "Accepted": the reply comes on the event stream
    co_return ok();
  }

  asio::awaitable<TResult<json>> receive() override {
    auto s = s_;
    co_return co_await s->inbox.pop();
  }

  // 2024-11-05 defines no version header.
  void set_protocol_version(std::string version) override {
    s_->protocol_version = std::move(version);
  }

  asio::awaitable<void> close() override {
    auto s = s_;
    if (s->closed) co_return;
    s->closed = true;
    s->inbox.fail(s->label + ": the transport is closed", true);
    s->stop_background();
    co_await drain_tasks(s);
  }

  std::string describe() const override { return s_->label; }

 private:
  std::shared_ptr<State> s_;
};

}  // namespace

std::unique_ptr<Transport> make_http_transport(asio::any_io_executor ex, const ServerConfig& config,
                                               net::HttpClient& client) {
  return std::make_unique<HttpTransport>(std::move(ex), config, client);
}

std::unique_ptr<Transport> make_sse_transport(asio::any_io_executor ex, const ServerConfig& config,
                                              net::HttpClient& client) {
  return std::make_unique<SseTransport>(std::move(ex), config, client);
}

}  // namespace agentd::mcp
