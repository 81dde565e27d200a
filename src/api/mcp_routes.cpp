// `/mcp`: the multiplexer's catalog as a Streamable HTTP MCP server — sessions bound to the
// authenticated client, JSON-RPC framing, tools/list and tools/call (JSON, or an event stream
// carrying progress), the GET stream for list_changed, and replay after Last-Event-ID.
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cctype>
#include <charconv>
#include <deque>
#include <map>
#include <unordered_map>
#include <variant>

#include "agentd/api/mcp.hpp"
#include "agentd/net/sse.hpp"

namespace agentd::api {
namespace {

namespace asio = boost::asio;
using net::Request;
using net::Response;
using net::SseEvent;
using net::SseStream;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
using RpcError = mcp::RpcError;
using namespace std::chrono_literals;

// What we speak, newest first: the answer to a version we do not know.
constexpr std::array<std::string_view, 3> kVersions{"2025-11-25", "2025-06-18", "2025-03-26"};
// Priming events (an id with empty data) came with 2025-11-25; older clients may choke on them.
constexpr std::string_view kPrimingSince = "2025-11-25";
// Per-session replay ring: recent events of every stream, for Last-Event-ID.
constexpr std::size_t kRingEvents = 64;
constexpr std::size_t kRingBytes = 512 * 1024;  // an event larger than this is not kept
// A tools/call whose stream lost its connection keeps running this long for the client to
// resume (GET + Last-Event-ID); then it is cancelled.
constexpr auto kResumeGrace = 3s;
constexpr int kRetryMs = 1000;  // the `retry` of priming events: how soon to reconnect
constexpr auto kSweepEvery = 1s;
constexpr int kServerError = -32000;  // JSON-RPC bodies of transport-level HTTP errors
constexpr const char* kInstructions =
    "agentd's MCP gateway: the tools of the MCP servers agentd connects to, each name prefixed "
    "with its server's name. The tools listed are those this client's scopes allow.";

std::string to_text(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool supported(std::string_view v) {
  return std::find(kVersions.begin(), kVersions.end(), v) != kVersions.end();
}

json rpc_result(const json& id, json result) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result)}};
}

json rpc_error(const json& id, int code, const std::string& message, const json& data = nullptr) {
  json e = {{"code", code}, {"message", message}};
  if (!data.is_null()) e["data"] = data;
  return {{"jsonrpc", "2.0"}, {"id", id}, {"error", std::move(e)}};
}

json reply(const json& id, mcp::RpcResult<json>&& r) {
  if (r) return rpc_result(id, std::move(*r));
  return rpc_error(id, r.error().code, r.error().message, r.error().data);
}

Response http_error(int status, int code, const std::string& message, const json& id = nullptr) {
  return Response::json(status, rpc_error(id, code, message));
}

Response empty(int status) {
  Response r;
  r.status = status;
  return r;
}

// --- Accept ---------------------------------------------------------------------------

struct Accepts {
  bool json = false;
  bool sse = false;
};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// `q=0` (any number of zero decimals) refuses a type.
bool refused(std::string_view params) {
  while (!params.empty()) {
    auto semi = params.find(';');
    auto p = lower(trim(params.substr(0, semi)));
    params = semi == std::string_view::npos ? std::string_view() : params.substr(semi + 1);
    if (p.starts_with("q=")) {
      auto v = std::string_view(p).substr(2);
      return !v.empty() && v.front() == '0' && v.find_first_not_of("0.") == std::string_view::npos;
    }
  }
  return false;
}

Accepts parse_accept(std::string_view header) {
  Accepts a;
  while (!header.empty()) {
    auto comma = header.find(',');
    auto item = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view() : header.substr(comma + 1);
    auto semi = item.find(';');
    auto type = lower(trim(item.substr(0, semi)));
    if (semi != std::string_view::npos && refused(item.substr(semi + 1))) continue;
    if (type == "application/json" || type == "application/*" || type == "*/*") a.json = true;
    if (type == "text/event-stream" || type == "text/*") a.sse = true;
  }
  return a;
}

// --- JSON-RPC framing -------------------------------------------------------------------

struct Incoming {
  enum class Kind { request, notification, response };
  Kind kind = Kind::request;
  json id;
  std::string method;
  json params;  // an object, or null when absent
};

bool valid_id(const json& id) { return id.is_string() || id.is_number_integer(); }

// One JSON-RPC message from a POST body, or the HTTP answer refusing it.
std::variant<Incoming, Response> read_message(std::string_view body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) {
    return http_error(400, RpcError::kParseError, "Parse error: the body is not valid JSON");
  }
  if (j.is_array()) {
    return http_error(400, RpcError::kInvalidRequest,
                      "Invalid Request: batches are not supported (removed in MCP 2025-06-18); "
                      "send one JSON-RPC message per POST");
  }
  if (!j.is_object()) {
    return http_error(400, RpcError::kInvalidRequest,
                      "Invalid Request: expected a JSON-RPC message object");
  }
  json id = j.contains("id") && valid_id(j["id"]) ? j["id"] : json(nullptr);
  if (!j.contains("jsonrpc") || j["jsonrpc"] != "2.0") {
    return http_error(400, RpcError::kInvalidRequest, "Invalid Request: jsonrpc must be \"2.0\"",
                      id);
  }
  Incoming m;
  if (j.contains("method")) {
    if (!j["method"].is_string()) {
      return http_error(400, RpcError::kInvalidRequest, "Invalid Request: method must be a string",
                        id);
    }
    m.method = j["method"].get<std::string>();
    if (j.contains("params") && !j["params"].is_null()) {
      if (!j["params"].is_object()) {
        return http_error(400, RpcError::kInvalidParams, "Invalid params: params must be an object",
                          id);
      }
      m.params = std::move(j["params"]);
    }
    if (j.contains("id")) {
      if (!valid_id(j["id"])) {
        return http_error(400, RpcError::kInvalidRequest,
                          "Invalid Request: id must be a string or an integer");
      }
      m.kind = Incoming::Kind::request;
      m.id = std::move(id);
    } else {
      m.kind = Incoming::Kind::notification;
    }
    return m;
  }
  if (j.contains("id") && (j.contains("result") || j.contains("error"))) {
    m.kind = Incoming::Kind::response;
    m.id = j["id"];
    m.params = std::move(j);  // the whole response, for the request it answers
    return m;
  }
  return http_error(400, RpcError::kInvalidRequest,
                    "Invalid Request: not a JSON-RPC request, notification or response", id);
}

std::optional<Response> check_version(const Request& req) {
  auto v = req.headers.get("mcp-protocol-version");
  if (!v || supported(*v)) return std::nullopt;
  std::string list;
  for (auto s : kVersions) list += (list.empty() ? "" : ", ") + std::string(s);
  return http_error(400, kServerError,
                    "Bad Request: unsupported MCP-Protocol-Version \"" + std::string(*v) +
                        "\" (supported: " + list + ")");
}

// --- event ids: "<stream>-<sequence>"; stream 0 is the GET stream, POST streams count from 1,
// and the sequence is per session, so ids are unique within a session.

std::string event_id(std::uint64_t stream, std::uint64_t seq) {
  return std::to_string(stream) + "-" + std::to_string(seq);
}

std::optional<std::pair<std::uint64_t, std::uint64_t>> parse_event_id(std::string_view s) {
  auto dash = s.find('-');
  if (dash == std::string_view::npos || dash == 0 || dash + 1 == s.size()) return std::nullopt;
  std::uint64_t stream = 0, seq = 0;
  auto a = std::from_chars(s.data(), s.data() + dash, stream);
  auto b = std::from_chars(s.data() + dash + 1, s.data() + s.size(), seq);
  if (a.ec != std::errc() || a.ptr != s.data() + dash || b.ec != std::errc() ||
      b.ptr != s.data() + s.size()) {
    return std::nullopt;
  }
  return std::pair{stream, seq};
}

std::string new_session_id() {
  unsigned char raw[16];  // 128 bits
  if (RAND_bytes(raw, sizeof raw) != 1) throw std::runtime_error("no randomness for a session id");
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

// --- sessions ---------------------------------------------------------------------------

// One live event-stream connection carrying a logical stream (a POST's or the GET one).
struct Pipe {
  explicit Pipe(std::shared_ptr<SseStream> o) : out(std::move(o)) {}
  std::shared_ptr<SseStream> out;
  asio::steady_timer* parked = nullptr;  // a GET producer waiting for the end
  // Ends the stream once what is queued has been written.
  void end() {
    out->finish();
    if (parked) parked->cancel();
  }
};

struct Kept {
  std::uint64_t stream;
  std::uint64_t seq;
  std::string data;
};

SseEvent make_event(std::uint64_t stream, std::uint64_t seq, std::string data) {
  SseEvent e;
  e.id = event_id(stream, seq);
  e.event = "message";
  e.data = std::move(data);
  return e;
}

struct Call;

// A request agentd sent the client (elicitation/create) and waits on: the client POSTs the
// response.
struct Asked {
  explicit Asked(asio::any_io_executor ex) : wake(std::move(ex)) {}
  asio::steady_timer wake;
  std::optional<json> response;  // the client's JSON-RPC response message
};

struct Session {
  std::string id;
  std::string client;
  std::string version;
  json capabilities = json::object();  // what the client declared in initialize
  std::uint64_t next_ask = 1;
  std::map<std::string, Asked*> asked;  // by dumped request id
  Clock::time_point last_used = Clock::now();
  bool closed = false;
  bool listening = false;  // opened a GET stream: keep that stream's events for replay
  int busy = 0;            // calls in flight and open GET streams: never idle meanwhile
  std::uint64_t next_seq = 1;
  std::uint64_t next_stream = 1;
  std::deque<Kept> ring;
  std::size_t ring_bytes = 0;
  std::map<std::string, Call*> calls;  // in flight, by dumped request id
  std::shared_ptr<Pipe> standalone;    // the open GET stream

  // Sends a message on `stream` (on its live connection, if any) and keeps it for replay.
  SseEvent emit(std::uint64_t stream, std::string data, const std::shared_ptr<Pipe>& live) {
    auto seq = next_seq++;
    if (data.size() <= kRingBytes) {
      ring.push_back({stream, seq, data});
      ring_bytes += data.size();
      while (ring.size() > kRingEvents || ring_bytes > kRingBytes) {
        ring_bytes -= ring.front().data.size();
        ring.pop_front();
      }
    }
    auto e = make_event(stream, seq, std::move(data));
    if (live) live->out->push(e);
    return e;
  }

  // An id with empty data: lets a 2025-11-25 client resume even before the first message.
  SseEvent priming(std::uint64_t stream) {
    SseEvent e;
    e.id = event_id(stream, next_seq++);
    e.retry_ms = kRetryMs;
    return e;
  }

  std::vector<SseEvent> replay(std::uint64_t stream, std::uint64_t after) const {
    std::vector<SseEvent> out;
    for (const auto& k : ring) {
      if (k.stream == stream && k.seq > after) out.push_back(make_event(k.stream, k.seq, k.data));
    }
    return out;
  }

  Call* call_on_stream(std::uint64_t stream) const;
};

// A tools/call in flight; registered in its session for notifications/cancelled and resume.
struct Call : std::enable_shared_from_this<Call> {
  Call(std::shared_ptr<Session> s, json request_id, asio::any_io_executor ex)
      : session(std::move(s)), id(std::move(request_id)), key(id.dump()), grace(std::move(ex)) {
    session->calls[key] = this;
    ++session->busy;
  }
  ~Call() {
    auto it = session->calls.find(key);
    if (it != session->calls.end() && it->second == this) session->calls.erase(it);
    --session->busy;
    session->last_used = Clock::now();
  }
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  std::shared_ptr<Session> session;
  json id;
  std::string key;
  std::uint64_t stream = 0;  // 0: answered with JSON
  std::optional<json> progress_token;
  std::shared_ptr<mcp::CancelToken> token = std::make_shared<mcp::CancelToken>();
  std::shared_ptr<Pipe> carrier;  // the connection its stream is written to, if any
  asio::steady_timer grace;       // runs while the stream has no connection
  std::vector<Asked*> asking;     // elicitations relayed to the client, unanswered yet
  bool done = false;
  bool withdrawn = false;  // the client cancelled it or ended the session: no response
};

Call* Session::call_on_stream(std::uint64_t stream) const {
  for (const auto& [key, c] : calls) {
    if (c->stream == stream && stream != 0) return c;
  }
  return nullptr;
}

// Keeps a session busy (not idle) while a GET stream is open.
struct Busy {
  explicit Busy(std::shared_ptr<Session> s) : session(std::move(s)) { ++session->busy; }
  ~Busy() {
    --session->busy;
    session->last_used = Clock::now();
  }
  Busy(const Busy&) = delete;
  Busy& operator=(const Busy&) = delete;
  std::shared_ptr<Session> session;
};

// The stream of `call` lost its connection: wait for a resume, then give up on the call.
void orphan(const std::shared_ptr<Call>& call, SseStream::State why) {
  if (why == SseStream::State::shutdown) {  // agentd is stopping: nobody will resume
    call->token->cancel();
    return;
  }
  std::weak_ptr<Call> weak = call;
  call->grace.expires_after(kResumeGrace);
  call->grace.async_wait([weak](const boost::system::error_code& ec) {
    auto c = weak.lock();
    if (ec || !c || c->done || c->carrier) return;
    spdlog::info("mcp session {}…: tools/call {} abandoned (not resumed): cancelling it",
                 c->session->id.substr(0, 8), c->key);
    c->token->cancel();
  });
}

// Makes `pipe` the connection of the call's stream (replacing an older one).
void attach(const std::shared_ptr<Call>& call, const std::shared_ptr<Pipe>& pipe) {
  auto old = std::exchange(call->carrier, pipe);
  call->grace.cancel();
  std::weak_ptr<Call> wc = call;
  std::weak_ptr<Pipe> wp = pipe;
  pipe->out->on_close([wc, wp](SseStream::State why) {
    auto c = wc.lock();
    auto p = wp.lock();
    if (!c || !p || c->carrier != p || c->done) return;
    c->carrier.reset();
    orphan(c, why);
  });
  if (old && old != pipe) old->end();
}

// Waits (as a GET stream's producer) until the stream is ended or its connection closes.
asio::awaitable<void> park(std::shared_ptr<Pipe> pipe) {
  asio::steady_timer wake(co_await asio::this_coro::executor);
  struct Unpark {
    Pipe& p;
    ~Unpark() { p.parked = nullptr; }
  } unpark{*pipe};
  pipe->parked = &wake;
  std::weak_ptr<Pipe> wp = pipe;
  pipe->out->on_close([wp](SseStream::State) {
    if (auto p = wp.lock(); p && p->parked) p->parked->cancel();
  });
  while (!pipe->out->closed()) {
    wake.expires_at(asio::steady_timer::time_point::max());
    co_await wake.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

asio::awaitable<void> send_one(std::shared_ptr<SseStream> out, SseEvent e) {
  out->push(std::move(e));
  co_return;
}

asio::awaitable<void> no_events(std::shared_ptr<SseStream>) { co_return; }

// A request's response: JSON, or a one-event stream for a client that takes only streams.
Response answer(Session* s, const Accepts& acc, const json& msg) {
  if (acc.json || !s) return Response::json(200, msg);
  auto e = s->emit(s->next_stream++, to_text(msg), nullptr);
  return Response::stream(
      [e](std::shared_ptr<SseStream> out) { return send_one(std::move(out), e); });
}

class McpServer {
 public:
  McpServer(Api& api, mcp::Multiplexer& mux, McpServerOptions options)
      : api_(api), mux_(mux), options_(options) {}

  mcp::Multiplexer& mux() { return mux_; }

  bool idle(const Session& s, Clock::time_point now) const {
    return s.busy == 0 && now - s.last_used > options_.session_idle;
  }

  // Forgets idle sessions (at most once a second unless forced).
  void sweep(bool force) {
    auto now = Clock::now();
    if (!force && now - last_sweep_ < kSweepEvery) return;
    last_sweep_ = now;
    std::vector<std::shared_ptr<Session>> gone;
    for (const auto& [id, s] : sessions_) {
      if (idle(*s, now)) gone.push_back(s);
    }
    for (auto& s : gone) close(s);
  }

  // Ends the session: its streams end, its calls are cancelled, its id is forgotten (404).
  void close(const std::shared_ptr<Session>& s) {
    if (s->closed) return;
    s->closed = true;
    sessions_.erase(s->id);
    std::vector<std::shared_ptr<Call>> calls;
    for (const auto& [key, c] : s->calls) {
      if (!c->done) calls.push_back(c->shared_from_this());
    }
    for (auto& c : calls) {
      c->withdrawn = true;
      c->grace.cancel();
      if (c->carrier) c->carrier->end();
      c->token->cancel();
    }
    for (auto& [key, a] : s->asked) a->wake.cancel();
    if (s->standalone) std::exchange(s->standalone, nullptr)->end();
    s->ring.clear();
    s->ring_bytes = 0;
    spdlog::debug("mcp session {}… of client {} closed", s->id.substr(0, 8), s->client);
  }

  // The request's session, or the answer: 400 without the header, 404 when unknown, expired,
  // deleted or another client's (so the client initializes again).
  std::variant<std::shared_ptr<Session>, Response> session_of(const Request& req) {
    auto header = req.headers.get("mcp-session-id");
    if (!header || header->empty()) {
      return http_error(400, kServerError,
                        "Bad Request: Mcp-Session-Id header is required (send initialize first)");
    }
    auto it = sessions_.find(std::string(*header));
    if (it == sessions_.end() || it->second->client != req.client) {
      return http_error(404, kServerError, "Session not found: initialize a new session");
    }
    auto s = it->second;
    if (idle(*s, Clock::now())) {
      close(s);
      return http_error(404, kServerError, "Session expired: initialize a new session");
    }
    s->last_used = Clock::now();
    return s;
  }

  Response initialize(const Request& req, const Accepts& acc, const Incoming& msg) {
    const json& p = msg.params;
    if (!p.is_object() || !p.contains("protocolVersion") || !p["protocolVersion"].is_string()) {
      return answer(nullptr, acc,
                    rpc_error(msg.id, RpcError::kInvalidParams,
                              "initialize needs params.protocolVersion (a string)"));
    }
    auto asked = p["protocolVersion"].get<std::string>();
    std::string version = supported(asked) ? asked : std::string(kVersions.front());
    if (sessions_.size() >= options_.max_sessions) sweep(true);
    if (sessions_.size() >= options_.max_sessions) {
      spdlog::warn("mcp: refusing a session for client {}: {} sessions open (max_sessions)",
                   req.client, sessions_.size());
      auto res = http_error(503, kServerError,
                            "Service Unavailable: too many MCP sessions; try again later", msg.id);
      res.headers.set("retry-after", "5");
      return res;
    }
    auto s = std::make_shared<Session>();
    s->id = new_session_id();
    s->client = req.client;
    s->version = version;
    if (p.contains("capabilities") && p["capabilities"].is_object()) {
      s->capabilities = p["capabilities"];
    }
    sessions_.emplace(s->id, s);
    json caps = {{"tools", {{"listChanged", true}}},
                 {"resources", {{"listChanged", true}}},
                 {"prompts", {{"listChanged", true}}}};
    json result = {{"protocolVersion", version},
                   {"capabilities", std::move(caps)},
                   {"serverInfo", {{"name", "agentd"}, {"version", AGENTD_VERSION}}},
                   {"instructions", kInstructions}};
    auto res = answer(s.get(), acc, rpc_result(msg.id, std::move(result)));
    res.headers.set("mcp-session-id", s->id);
    spdlog::debug("rid={} mcp session {}… opened for client {} (protocol {})", req.request_id,
                  s->id.substr(0, 8), req.client, version);
    return res;
  }

  // notifications/cancelled: withdraw that call (no response is sent for it).
  void cancel(Session& s, const json& params) {
    if (!params.is_object() || !params.contains("requestId")) return;
    auto it = s.calls.find(params["requestId"].dump());
    if (it == s.calls.end() || it->second->done) return;
    Call* c = it->second;
    spdlog::debug("mcp session {}…: client cancelled tools/call {}", s.id.substr(0, 8), c->key);
    c->withdrawn = true;
    c->grace.cancel();
    c->token->cancel();
  }

  bool may_use(const std::string& client, const std::string& server, const std::string& tool) {
    const Client* c = api_.client_by_name(client);
    return c && scope_allows(c->scopes, "mcp:" + server + "/" + tool);
  }

  // What `client` may see: its scopes cover mcp:<server>/<name> (see mcp::Visible).
  mcp::Visible visible_to(const std::string& client) {
    const Client* c = api_.client_by_name(client);
    if (!c) return [](const std::string&, const std::string&) { return false; };
    auto scopes = c->scopes;
    return [scopes](const std::string& server, const std::string& name) {
      return scope_allows(scopes, "mcp:" + server + "/" + name);
    };
  }

  static json as_array(std::vector<json> items) {
    json out = json::array();
    for (auto& i : items) out.push_back(std::move(i));
    return out;
  }

  // A client's JSON-RPC response to a request agentd sent it (elicitation): hands it to the
  // waiting call. Unknown ids are ignored.
  void answered(Session& s, const Incoming& msg, json body) {
    auto it = s.asked.find(msg.id.dump());
    if (it == s.asked.end()) return;
    it->second->response = std::move(body);
    it->second->wake.cancel();
  }

  void list_changed(const std::string& method) {
    std::string note = to_text({{"jsonrpc", "2.0"}, {"method", method}});
    for (const auto& [id, s] : sessions_) {
      if (s->listening) s->emit(0, note, s->standalone);
    }
  }

  json tools_for(const std::string& client) {
    const Client* c = api_.client_by_name(client);
    if (!c) return json::array();
    auto visible = [c](const std::string& server, const std::string& tool) {
      return scope_allows(c->scopes, "mcp:" + server + "/" + tool);
    };
    json out = json::array();
    for (auto& t : mux_.tools(visible)) out.push_back(std::move(t));
    return out;
  }

  // Requests answered at once (everything but initialize and tools/call).
  json dispatch(const Request& req, const Incoming& msg) {
    const auto& m = msg.method;
    if (m == "ping") return rpc_result(msg.id, json::object());
    // One page: a cursor is accepted and ignored, and no nextCursor is given.
    if (m == "tools/list") return rpc_result(msg.id, {{"tools", tools_for(req.client)}});
    if (m == "resources/list") {
      return rpc_result(msg.id, {{"resources", as_array(mux_.resources(visible_to(req.client)))}});
    }
    if (m == "resources/templates/list") {
      return rpc_result(msg.id, {{"resourceTemplates",
                                  as_array(mux_.resource_templates(visible_to(req.client)))}});
    }
    if (m == "prompts/list") {
      return rpc_result(msg.id, {{"prompts", as_array(mux_.prompts(visible_to(req.client)))}});
    }
    return rpc_error(msg.id, RpcError::kMethodNotFound, "Method not found: " + m);
  }

  void tools_changed() {
    std::string note =
        to_text({{"jsonrpc", "2.0"}, {"method", "notifications/tools/list_changed"}});
    for (const auto& [id, s] : sessions_) {
      if (s->listening) s->emit(0, note, s->standalone);
    }
  }

 private:
  Api& api_;
  mcp::Multiplexer& mux_;
  McpServerOptions options_;
  std::unordered_map<std::string, std::shared_ptr<Session>> sessions_;
  Clock::time_point last_sweep_ = Clock::now();
};

// Relays an upstream's elicitation/create to the client on the call's stream and waits for
// the client's answer (POSTed back), until the call ends or the session closes.
asio::awaitable<mcp::RpcResult<json>> relay_elicitation(std::weak_ptr<Call> weak, json params) {
  auto call = weak.lock();
  if (!call || call->done || call->withdrawn || call->session->closed) {
    co_return json{{"action", "cancel"}};
  }
  Session& s = *call->session;
  // Form mode needs `elicitation` ({} before 2025-11-25, or with `form`); url mode `url`.
  auto mode = params.is_object() ? params.value("mode", std::string("form")) : std::string("form");
  auto declared = s.capabilities.find("elicitation");
  bool can = declared != s.capabilities.end() && declared->is_object() &&
             (mode == "form" ? (declared->empty() || declared->contains("form"))
                             : declared->contains(mode));
  if (!can) co_return json{{"action", "decline"}};
  Asked asked(co_await asio::this_coro::executor);
  json id = "agentd-elicit-" + std::to_string(s.next_ask++);
  auto key = id.dump();
  s.asked[key] = &asked;
  call->asking.push_back(&asked);
  json request = {{"jsonrpc", "2.0"}, {"id", id}, {"method", "elicitation/create"},
                  {"params", std::move(params)}};
  s.emit(call->stream, to_text(request), call->carrier);
  asked.wake.expires_at(asio::steady_timer::time_point::max());
  co_await asked.wake.async_wait(asio::as_tuple(asio::use_awaitable));
  s.asked.erase(key);
  std::erase(call->asking, &asked);
  if (!asked.response) co_return json{{"action", "cancel"}};  // the call or session ended
  const json& r = *asked.response;
  if (auto e = r.find("error"); e != r.end() && e->is_object()) {
    co_return RpcError{e->value("code", RpcError::kInternal),
                       e->value("message", std::string("the client refused")), nullptr};
  }
  auto result = r.find("result");
  co_return result != r.end() && result->is_object() ? *result : json{{"action", "cancel"}};
}

bool declared_elicitation(const Session& s) { return s.capabilities.contains("elicitation"); }

// The producer of a tools/call answered as an event stream: progress, then the response.
asio::awaitable<void> run_call(std::shared_ptr<McpServer> st, std::shared_ptr<Call> call,
                               std::string name, json args, std::string client, std::string rid,
                               std::shared_ptr<SseStream> out) {
  Session& s = *call->session;
  auto pipe = std::make_shared<Pipe>(out);
  if (s.version >= kPrimingSince) out->push(s.priming(call->stream));
  attach(call, pipe);
  if (call->token->cancelled() || s.closed) {
    call->done = true;
    co_return;
  }
  mcp::ToolCall tc;
  tc.client = std::move(client);
  tc.request_id = rid;
  if (call->progress_token) {
    std::weak_ptr<Call> weak = call;
    tc.on_progress = [weak](const json& progress) {
      auto c = weak.lock();
      if (!c || c->done || c->withdrawn || c->session->closed) return;
      json params = progress.is_object() ? progress : json::object();
      params["progressToken"] = *c->progress_token;
      json note = {
          {"jsonrpc", "2.0"}, {"method", "notifications/progress"}, {"params", std::move(params)}};
      c->session->emit(c->stream, to_text(note), c->carrier);
    };
  }
  if (declared_elicitation(s)) {
    std::weak_ptr<Call> weak = call;
    tc.on_elicit = [weak](json params) { return relay_elicitation(weak, std::move(params)); };
  }
  mcp::RpcResult<json> r = RpcError{};
  try {
    r = co_await st->mux().call_tool(name, std::move(args), std::move(tc), call->token);
  } catch (const std::exception& e) {
    // A bug below us: the client still gets a response, and a resumed stream still ends.
    spdlog::error("rid={} tools/call {} failed: {}", rid, name, e.what());
    r = RpcError{RpcError::kInternal, "internal error (request id " + rid + ")", nullptr};
  }
  call->done = true;
  call->grace.cancel();
  for (auto* a : std::vector<Asked*>(call->asking)) a->wake.cancel();
  if (!call->withdrawn && !s.closed) {
    s.emit(call->stream, to_text(reply(call->id, std::move(r))), call->carrier);
  }
  if (call->carrier) call->carrier->end();
}

asio::awaitable<Response> call_tool(std::shared_ptr<McpServer> st, std::shared_ptr<Session> s,
                                    Request& req, Accepts acc, Incoming msg) {
  const json& p = msg.params;
  if (!p.is_object() || !p.contains("name") || !p["name"].is_string()) {
    co_return answer(
        s.get(), acc,
        rpc_error(msg.id, RpcError::kInvalidParams, "tools/call needs params.name (a string)"));
  }
  auto name = p["name"].get<std::string>();
  json args = json::object();
  if (p.contains("arguments") && !p["arguments"].is_null()) {
    if (!p["arguments"].is_object()) {
      co_return answer(
          s.get(), acc,
          rpc_error(msg.id, RpcError::kInvalidParams, "params.arguments must be an object"));
    }
    args = std::move(msg.params["arguments"]);  // msg is ours
  }
  std::optional<json> token;
  if (p.contains("_meta") && p["_meta"].is_object() && p["_meta"].contains("progressToken")) {
    const auto& t = p["_meta"]["progressToken"];
    if (t.is_string() || t.is_number_integer()) token = t;
  }
  // A tool the client may not see is as unknown as one that does not exist.
  auto where = st->mux().resolve(name);
  if (!where || !st->may_use(req.client, where->first, where->second)) {
    co_return answer(s.get(), acc,
                     rpc_error(msg.id, RpcError::kInvalidParams, "Unknown tool: " + name));
  }
  if (s->calls.contains(msg.id.dump())) {
    co_return answer(s.get(), acc,
                     rpc_error(msg.id, RpcError::kInvalidRequest,
                               "request id " + msg.id.dump() + " is already in use"));
  }
  auto ex = co_await asio::this_coro::executor;
  auto call = std::make_shared<Call>(s, msg.id, ex);
  // An event stream when the client wants progress, or may be asked questions during the call
  // (it declared elicitation); JSON otherwise.
  if (!acc.sse || (!token && !declared_elicitation(*s) && acc.json)) {
    mcp::ToolCall tc;
    tc.client = req.client;
    tc.request_id = req.request_id;
    auto r = co_await st->mux().call_tool(name, std::move(args), std::move(tc), call->token);
    call->done = true;
    // A cancelled request gets no response: an empty stream says so to a client that takes
    // streams (no priming event, so it does not try to resume); a JSON-only client still
    // needs a body, which it ignores.
    if (call->withdrawn && acc.sse) co_return Response::stream(no_events);
    co_return Response::json(200, reply(call->id, std::move(r)));
  }
  call->stream = s->next_stream++;
  call->progress_token = token;
  co_return Response::stream([st, call, name, args, client = req.client,
                              rid = req.request_id](std::shared_ptr<SseStream> out) {
    return run_call(st, call, name, args, client, rid, std::move(out));
  });
}

// resources/read and prompts/get: answered as JSON (cancellable like a call).
asio::awaitable<Response> read_or_get(std::shared_ptr<McpServer> st, std::shared_ptr<Session> s,
                                      Request& req, Accepts acc, Incoming msg) {
  const json& p = msg.params;
  bool read = msg.method == "resources/read";
  const char* key = read ? "uri" : "name";
  if (!p.is_object() || !p.contains(key) || !p[key].is_string()) {
    co_return answer(s.get(), acc,
                     rpc_error(msg.id, RpcError::kInvalidParams,
                               msg.method + " needs params." + key + " (a string)"));
  }
  if (s->calls.contains(msg.id.dump())) {
    co_return answer(s.get(), acc,
                     rpc_error(msg.id, RpcError::kInvalidRequest,
                               "request id " + msg.id.dump() + " is already in use"));
  }
  auto what = p[key].get<std::string>();
  mcp::ToolCall tc;
  tc.client = req.client;
  tc.request_id = req.request_id;
  auto call = std::make_shared<Call>(s, msg.id, co_await asio::this_coro::executor);
  mcp::RpcResult<json> r = RpcError{};
  if (read) {
    r = co_await st->mux().read_resource(what, st->visible_to(req.client), std::move(tc),
                                         call->token);
  } else {
    // A prompt the client may not see is as unknown as one that does not exist.
    auto where = st->mux().resolve(what);
    if (!where || !st->may_use(req.client, where->first, "prompt:" + where->second)) {
      call->done = true;
      co_return answer(s.get(), acc,
                       rpc_error(msg.id, RpcError::kInvalidParams, "Unknown prompt: " + what));
    }
    json args = p.contains("arguments") ? p["arguments"] : json();
    r = co_await st->mux().get_prompt(what, std::move(args), std::move(tc), call->token);
  }
  call->done = true;
  if (call->withdrawn && acc.sse) co_return Response::stream(no_events);
  co_return answer(s.get(), acc, reply(call->id, std::move(r)));
}

asio::awaitable<Response> post_mcp(std::shared_ptr<McpServer> st, Request& req) {
  auto acc = parse_accept(req.headers.get("accept").value_or(""));
  if (!acc.json && !acc.sse) {
    co_return http_error(406, kServerError,
                         "Not Acceptable: Accept must include application/json or "
                         "text/event-stream (MCP clients send both)");
  }
  auto parsed = read_message(req.body);
  if (auto* bad = std::get_if<Response>(&parsed)) co_return std::move(*bad);
  auto& msg = std::get<Incoming>(parsed);
  st->sweep(false);
  if (msg.kind == Incoming::Kind::request && msg.method == "initialize") {
    co_return st->initialize(req, acc, msg);
  }
  auto found = st->session_of(req);
  if (auto* bad = std::get_if<Response>(&found)) co_return std::move(*bad);
  auto s = std::get<std::shared_ptr<Session>>(std::move(found));
  if (auto bad = check_version(req)) co_return std::move(*bad);
  switch (msg.kind) {
    case Incoming::Kind::response:
      st->answered(*s, msg, std::move(msg.params));
      co_return empty(202);
    case Incoming::Kind::notification:
      if (msg.method == "notifications/cancelled") st->cancel(*s, msg.params);
      co_return empty(202);
    case Incoming::Kind::request:
      break;
  }
  if (msg.method == "tools/call") {
    co_return co_await call_tool(st, std::move(s), req, acc, std::move(msg));
  }
  if (msg.method == "resources/read" || msg.method == "prompts/get") {
    co_return co_await read_or_get(st, std::move(s), req, acc, std::move(msg));
  }
  co_return answer(s.get(), acc, st->dispatch(req, msg));
}

// The producer of a GET stream: replay, then list_changed notifications (stream 0) or the
// rest of a tools/call's stream, until it ends or the client leaves.
asio::awaitable<void> run_get(std::shared_ptr<Busy> busy, std::uint64_t stream, std::uint64_t after,
                              bool prime, std::shared_ptr<SseStream> out) {
  auto session = busy->session;
  Session& s = *session;
  if (s.closed) co_return;
  auto pipe = std::make_shared<Pipe>(out);
  if (prime) out->push(s.priming(stream));
  for (auto& e : s.replay(stream, after)) out->push(std::move(e));
  if (stream == 0) {
    // One GET stream per session: a message goes out on one stream only, and a client that
    // reconnects has usually lost the old connection anyway.
    if (auto old = std::exchange(s.standalone, pipe)) old->end();
  } else {
    Call* c = s.call_on_stream(stream);
    if (!c || c->done) co_return;  // everything there is has been replayed
    attach(c->shared_from_this(), pipe);
  }
  co_await park(pipe);
  if (s.standalone == pipe) s.standalone.reset();
}

asio::awaitable<Response> get_mcp(std::shared_ptr<McpServer> st, Request& req) {
  auto acc = parse_accept(req.headers.get("accept").value_or(""));
  if (!acc.sse) {
    co_return http_error(406, kServerError,
                         "Not Acceptable: GET /mcp opens an event stream; send Accept: "
                         "text/event-stream");
  }
  st->sweep(false);
  auto found = st->session_of(req);
  if (auto* bad = std::get_if<Response>(&found)) co_return std::move(*bad);
  auto s = std::get<std::shared_ptr<Session>>(std::move(found));
  if (auto bad = check_version(req)) co_return std::move(*bad);
  std::uint64_t stream = 0;
  std::uint64_t after = s->next_seq - 1;  // a new stream: only what comes next
  bool prime = s->version >= kPrimingSince;
  auto last = req.headers.get("last-event-id");
  if (auto resume = parse_event_id(last.value_or(""))) {
    std::tie(stream, after) = *resume;
    prime = false;
    // A tools/call stream that is over with nothing left to replay: 204 tells an event-stream
    // client to stop reconnecting.
    if (stream != 0 && !s->call_on_stream(stream) && s->replay(stream, after).empty()) {
      co_return empty(204);
    }
  }
  if (stream == 0) s->listening = true;
  auto busy = std::make_shared<Busy>(s);
  co_return Response::stream([busy, stream, after, prime](std::shared_ptr<SseStream> out) {
    return run_get(busy, stream, after, prime, std::move(out));
  });
}

asio::awaitable<Response> delete_mcp(std::shared_ptr<McpServer> st, Request& req) {
  auto found = st->session_of(req);
  if (auto* bad = std::get_if<Response>(&found)) co_return std::move(*bad);
  auto s = std::get<std::shared_ptr<Session>>(std::move(found));
  if (auto bad = check_version(req)) co_return std::move(*bad);
  st->close(s);
  co_return empty(204);
}

}  // namespace

void add_mcp_routes(Api& api, mcp::Multiplexer& mux, McpServerOptions options) {
  auto st = std::make_shared<McpServer>(api, mux, options);
  std::weak_ptr<McpServer> weak = st;
  mux.on_tools_changed([weak] {
    if (auto s = weak.lock()) s->tools_changed();
  });
  mux.on_list_changed([weak](const std::string& method) {
    if (auto s = weak.lock()) s->list_changed(method);
  });
  auto& r = api.router();
  r.add("POST", "/mcp", [st](Request& req) { return post_mcp(st, req); });
  r.add("GET", "/mcp", [st](Request& req) { return get_mcp(st, req); });
  r.add("DELETE", "/mcp", [st](Request& req) { return delete_mcp(st, req); });
}

}  // namespace agentd::api
