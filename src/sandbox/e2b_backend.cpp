// The `e2b` backend: E2B's control-plane REST API (X-API-KEY) for the sandboxes' lives, and
// the in-sandbox daemon envd (Connect RPC in JSON, /files) for commands and files. Every call
// goes through agentd's shared HttpClient with request_timeout on every phase.
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <deque>
#include <map>
#include <random>

#include "agentd/net/client.hpp"
#include "agentd/sandbox/manager.hpp"
#include "e2b_wire.hpp"

namespace agentd::sandbox {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr int kEnvdPort = 49983;
constexpr int kDesktopPort = 6080;
constexpr std::string_view kHome = "/home/user";
constexpr std::string_view kOwnerKey = "agentd_owner";  // metadata naming the owner
constexpr int kMaxReattach = 5;
constexpr int kMaxListPages = 100;

TimeMs now_ms() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

long long seconds_up(milliseconds d) {
  return std::max<long long>(1, (d.count() + 999) / 1000);
}

Error client_error(const net::ClientError& e, std::string_view what) {
  Error out;
  out.message = std::string(what) + ": " + net::describe(e);
  switch (e.kind) {
    case net::ClientError::Kind::timeout: out.code = Errc::timeout; break;
    case net::ClientError::Kind::too_large: out.code = Errc::payload_too_large; break;
    case net::ClientError::Kind::cancelled: out.code = Errc::cancelled; break;
    case net::ClientError::Kind::bad_url: out.code = Errc::internal; break;
    default: out.code = Errc::unavailable; break;  // resolve, connect, tls, protocol, closed
  }
  return out;
}

Error make_error(Errc code, std::string message) { return Error{code, std::move(message), {}}; }

// Dotted versions ("0.5.2"); an unknown (empty) version counts as new enough.
bool version_at_least(std::string_view v, std::string_view min) {
  if (v.empty()) return true;
  auto next = [](std::string_view& s) {
    long n = 0;
    while (!s.empty() && s.front() >= '0' && s.front() <= '9') {
      n = n * 10 + (s.front() - '0');
      s.remove_prefix(1);
    }
    if (!s.empty()) s.remove_prefix(1);  // the dot (or a suffix such as "-beta")
    return n;
  };
  for (int i = 0; i < 3; ++i) {
    long a = next(v), b = next(min);
    if (a != b) return a > b;
  }
  return true;
}
constexpr std::string_view kEnvdCloseStdin = "0.5.2";  // the SDK's ENVD_ENVD_CLOSE

// 128 + signal for envd's "signal: killed" style statuses (Go's ProcessState.String()).
int exit_code_of(const e2b::ProcessEvent& end) {
  static const std::map<std::string_view, int> kSignals = {
      {"hangup", 1},  {"interrupt", 2}, {"quit", 3},        {"aborted", 6},
      {"killed", 9},  {"terminated", 15}, {"broken pipe", 13}, {"segmentation fault", 11},
      {"alarm clock", 14}, {"user defined signal 1", 10}, {"user defined signal 2", 12}};
  constexpr std::string_view kPrefix = "signal: ";
  if (end.status.rfind(kPrefix, 0) == 0) {
    std::string_view name = std::string_view(end.status).substr(kPrefix.size());
    if (auto core = name.find(" (core dumped)"); core != std::string_view::npos) name = name.substr(0, core);
    auto it = kSignals.find(name);
    return it == kSignals.end() ? 128 : 128 + it->second;
  }
  return end.exit_code;
}

// What the backend knows about one sandbox's envd.
struct Envd {
  std::string token;
  std::string domain;  // empty: the configured one
  std::string template_id;
  std::string version;
};

// State shared by the backend and the processes it started (a process may outlive a call).
struct Shared {
  asio::any_io_executor ex;
  E2bConfig config;
  milliseconds default_timeout;
  net::HttpClient& http;
  core::Registry& metrics;
  std::map<std::string, Envd, std::less<>> envd;

  Shared(asio::any_io_executor e, const Config& c, net::HttpClient& h, core::Registry& m)
      : ex(std::move(e)), config(c.e2b), default_timeout(c.default_timeout), http(h), metrics(m) {}

  milliseconds rt() const { return config.request_timeout; }

  net::ClientTimeouts timeouts() const {
    net::ClientTimeouts t;
    t.connect = t.first_byte = t.idle = t.total = rt();
    return t;
  }

  // Streams: keepalives every K s, so a stream silent for 2K+1 s (or request_timeout) is dead.
  long long keepalive_s() const { return std::clamp<long long>(rt().count() / 2000, 1, 50); }
  milliseconds stream_idle() const {
    return std::max(rt(), milliseconds((2 * keepalive_s() + 1) * 1000));
  }

  std::string api_base() const {
    std::string base = config.api_url.empty() ? "https://api." + config.domain : config.api_url;
    while (!base.empty() && base.back() == '/') base.pop_back();
    return base;
  }

  std::string domain_of(const Envd& e) const { return e.domain.empty() ? config.domain : e.domain; }

  void count(std::string_view op, bool ok) {
    metrics
        .counter("agentd_sandbox_e2b_requests_total", "Calls to E2B by operation and outcome",
                 {{"op", std::string(op)}, {"outcome", ok ? "ok" : "error"}})
        .inc();
  }

  net::ClientRequest api_request(std::string method, const std::string& path, std::string body) {
    net::ClientRequest r;
    r.method = std::move(method);
    r.url = api_base() + path;
    r.headers.set("X-API-KEY", config.api_key);
    r.headers.set("Accept", "application/json");
    if (!body.empty()) r.headers.set("Content-Type", "application/json");
    r.body = std::move(body);
    r.timeouts = timeouts();
    return r;
  }

  net::ClientRequest envd_request(const std::string& id, const Envd& e, std::string method,
                                  const std::string& path) {
    net::ClientRequest r;
    r.method = std::move(method);
    if (config.sandbox_url.empty()) {
      r.url = "https://" + std::to_string(kEnvdPort) + "-" + id + "." + domain_of(e) + path;
    } else {
      std::string base = config.sandbox_url;
      while (!base.empty() && base.back() == '/') base.pop_back();
      r.url = base + path;
      r.headers.set("E2b-Sandbox-Id", id);
      r.headers.set("E2b-Sandbox-Port", std::to_string(kEnvdPort));
    }
    if (!e.token.empty()) r.headers.set("X-Access-Token", e.token);
    r.timeouts = timeouts();
    return r;
  }

  // One control-plane exchange; a non-2xx status becomes an Error.
  asio::awaitable<Result<net::ClientResponse>> api(std::string op, net::ClientRequest req) {
    auto res = co_await http.request(std::move(req));
    if (!res) {
      count(op, false);
      co_return client_error(res.error(), "e2b " + op);
    }
    if (res->status < 200 || res->status > 299) {
      count(op, false);
      co_return e2b::error_from_http(res->status, res->headers, res->body, "e2b " + op);
    }
    count(op, true);
    co_return std::move(*res);
  }

  // envd's access token and domain: known from create/resume, else asked of the control plane.
  asio::awaitable<Result<Envd>> envd_of(std::string id) {
    if (auto it = envd.find(id); it != envd.end()) co_return it->second;
    auto res = co_await api("info", api_request("GET", "/sandboxes/" + e2b::url_encode(id), ""));
    if (!res) co_return res.error();
    auto j = json::parse(res->body, nullptr, false);
    if (!j.is_object()) co_return make_error(Errc::upstream, "e2b info: the answer is not JSON");
    Envd e;
    e.token = j.value("envdAccessToken", std::string());
    if (j.contains("domain") && j["domain"].is_string()) e.domain = j["domain"].get<std::string>();
    e.template_id = j.value("templateID", std::string());
    e.version = j.value("envdVersion", std::string());
    envd[id] = e;
    co_return e;
  }

  // A Connect unary call to envd.
  asio::awaitable<Result<json>> rpc(std::string id, std::string method, json body) {
    auto e = co_await envd_of(id);
    if (!e) co_return e.error();
    auto req = envd_request(id, *e, "POST", "/" + method);
    req.headers.set("Content-Type", "application/json");
    req.headers.set("Connect-Protocol-Version", "1");
    req.headers.set("Connect-Timeout-Ms", std::to_string(rt().count()));
    req.body = body.dump();
    auto res = co_await http.request(std::move(req));
    std::string op = method.substr(method.find('/') + 1);
    if (!res) {
      count(op, false);
      co_return client_error(res.error(), "envd " + method);
    }
    if (res->status != 200) {
      count(op, false);
      co_return e2b::error_from_http(res->status, res->headers, res->body, "envd " + method);
    }
    count(op, true);
    auto j = json::parse(res->body, nullptr, false);
    if (!j.is_object()) co_return make_error(Errc::upstream, "envd " + method + ": not JSON");
    co_return j;
  }

  // Opens a Connect server stream (Start or Connect); non-200 answers become an Error.
  asio::awaitable<Result<std::unique_ptr<net::ClientStream>>> open_stream(std::string id,
                                                                          std::string method,
                                                                          json body,
                                                                          milliseconds total) {
    auto e = co_await envd_of(id);
    if (!e) co_return e.error();
    auto req = envd_request(id, *e, "POST", "/process.Process/" + method);
    req.headers.set("Content-Type", "application/connect+json");
    req.headers.set("Connect-Protocol-Version", "1");
    req.headers.set("Keepalive-Ping-Interval", std::to_string(keepalive_s()));
    req.body = e2b::encode_frame(body.dump());
    req.timeouts.idle = stream_idle();
    req.timeouts.total = std::max(total, rt());
    auto s = co_await http.open(std::move(req));
    if (!s) {
      count(method, false);
      co_return client_error(s.error(), "envd process." + method);
    }
    auto& stream = *s;
    if (stream->status() != 200) {
      auto text = co_await stream->read_all();
      count(method, false);
      co_return e2b::error_from_http(stream->status(), stream->headers(),
                                     text ? *text : std::string(), "envd process." + method);
    }
    auto ctype = stream->headers().get("content-type").value_or("");
    if (ctype.rfind("application/connect+json", 0) != 0) {
      count(method, false);
      stream->cancel();
      co_return make_error(Errc::upstream, "envd process." + method + ": unexpected content type '" +
                                               std::string(ctype) + "'");
    }
    count(method, true);
    co_return std::move(stream);
  }
};

json selector(int pid) { return json{{"process", {{"pid", pid}}}}; }

// A command in an E2B sandbox: the Start stream, re-attached with Connect when it drops.
class E2bProcess final : public Process {
 public:
  E2bProcess(std::shared_ptr<Shared> shared, std::string id, int pid,
             std::unique_ptr<net::ClientStream> stream, e2b::FrameDecoder decoder,
             std::deque<e2b::Frame> frames, Clock::time_point deadline)
      : shared_(std::move(shared)),
        id_(std::move(id)),
        pid_(pid),
        stream_(std::move(stream)),
        decoder_(std::move(decoder)),
        frames_(std::move(frames)),
        deadline_(deadline) {
    ExecEvent started;
    started.kind = ExecEvent::Kind::started;
    started.pid = pid_;
    pending_.push_back(std::move(started));
  }

  ~E2bProcess() override {
    if (stream_) stream_->cancel();
  }

  int pid() const noexcept override { return pid_; }

  asio::awaitable<Result<std::optional<ExecEvent>>> next() override {
    for (;;) {
      if (!pending_.empty()) {
        ExecEvent ev = std::move(pending_.front());
        pending_.pop_front();
        co_return std::optional<ExecEvent>(std::move(ev));
      }
      if (done_) co_return std::optional<ExecEvent>();
      if (!frames_.empty()) {
        e2b::Frame f = std::move(frames_.front());
        frames_.pop_front();
        handle(f);
        continue;
      }
      if (!stream_) {
        co_await reattach();
        continue;
      }
      auto piece = co_await stream_->read();
      if (!piece) {
        const auto& err = piece.error();
        bool exec_deadline = err.kind == net::ClientError::Kind::timeout &&
                             Clock::now() >= deadline_ && !timed_out_;
        if (exec_deadline) {
          co_await kill_for_timeout();
        } else {
          spdlog::info("e2b {}: process {} stream dropped: {}", id_, pid_, net::describe(err));
        }
        drop_stream();
        continue;
      }
      if (piece->empty()) {  // the body ended without an end-of-stream message
        drop_stream();
        continue;
      }
      for (auto& f : decoder_.feed(*piece)) frames_.push_back(std::move(f));
      if (!decoder_.error().empty()) {
        finish_with_error(-1, "envd stream: " + decoder_.error());
      }
    }
  }

  asio::awaitable<Result<void>> send_stdin(std::string data) override {
    json body = selector(pid_);
    body["input"] = {{"stdin", e2b::base64_encode(data)}};
    auto r = co_await shared_->rpc(id_, "process.Process/SendInput", std::move(body));
    if (!r) co_return r.error();
    co_return Result<void>();
  }

  asio::awaitable<Result<void>> close_stdin() override {
    if (auto it = shared_->envd.find(id_);
        it != shared_->envd.end() && !version_at_least(it->second.version, kEnvdCloseStdin)) {
      co_return make_error(Errc::conflict, "envd " + it->second.version +
                                               " cannot close stdin (needs " +
                                               std::string(kEnvdCloseStdin) + ")");
    }
    auto r = co_await shared_->rpc(id_, "process.Process/CloseStdin", selector(pid_));
    if (!r) co_return r.error();
    co_return Result<void>();
  }

  asio::awaitable<Result<void>> signal(int sig) override {
    // envd's Signal enum has SIGTERM and SIGKILL only.
    if (sig != 9 && sig != 15) {
      co_return make_error(Errc::bad_request, "envd can send SIGTERM (15) and SIGKILL (9) only");
    }
    json body = selector(pid_);
    body["signal"] = sig == 9 ? "SIGNAL_SIGKILL" : "SIGNAL_SIGTERM";
    auto r = co_await shared_->rpc(id_, "process.Process/SendSignal", std::move(body));
    if (!r) co_return r.error();
    co_return Result<void>();
  }

 private:
  void drop_stream() {
    if (stream_) stream_->cancel();
    stream_.reset();
    decoder_ = e2b::FrameDecoder();
  }

  void finish_with_error(int code, std::string why) {
    drop_stream();
    if (done_) return;
    ExecEvent ev;
    ev.kind = ExecEvent::Kind::exited;
    ev.pid = pid_;
    ev.exit_code = timed_out_ ? 128 + 9 : code;
    ev.timed_out = timed_out_;
    ev.error = std::move(why);
    pending_.push_back(std::move(ev));
    done_ = true;
  }

  void handle(const e2b::Frame& f) {
    if (done_) return;
    if (f.end_stream()) {
      auto err = e2b::parse_end_stream(f.payload);
      // A clean end of stream without an end event: the stream is over but the process may
      // not be (envd ended the RPC): re-attach to learn how it ends.
      if (!err) {
        drop_stream();
        return;
      }
      finish_with_error(-1, err->message);
      return;
    }
    auto ev = e2b::parse_process_event(f.payload);
    if (!ev) {
      finish_with_error(-1, "envd sent a malformed process event");
      return;
    }
    using Kind = e2b::ProcessEvent::Kind;
    switch (ev->kind) {
      case Kind::start:  // the first event of Start, and of every Connect re-attach
      case Kind::keepalive:
      case Kind::unknown:
        return;
      case Kind::data: {
        if (ev->data.empty()) return;
        ExecEvent out;
        out.kind = ev->stream == "stderr" ? ExecEvent::Kind::stderr_data : ExecEvent::Kind::stdout_data;
        out.pid = pid_;
        out.data = std::move(ev->data);
        pending_.push_back(std::move(out));
        return;
      }
      case Kind::end: {
        ExecEvent out;
        out.kind = ExecEvent::Kind::exited;
        out.pid = pid_;
        out.exit_code = exit_code_of(*ev);
        out.timed_out = timed_out_;
        out.error = ev->error;
        pending_.push_back(std::move(out));
        done_ = true;
        drop_stream();
        return;
      }
    }
  }

  asio::awaitable<void> kill_for_timeout() {
    timed_out_ = true;
    json body = selector(pid_);
    body["signal"] = "SIGNAL_SIGKILL";
    auto r = co_await shared_->rpc(id_, "process.Process/SendSignal", std::move(body));
    if (!r && r.error().code != Errc::not_found) {
      spdlog::warn("e2b {}: could not kill timed-out process {}: {}", id_, pid_, r.error().message);
    }
  }

  // Connect{process:{pid}}: a fresh stream of the same process. Output written while no one
  // was attached is not replayed by envd.
  asio::awaitable<void> reattach() {
    if (Clock::now() >= deadline_ && !timed_out_) co_await kill_for_timeout();
    if (reattached_ >= kMaxReattach) {
      finish_with_error(-1, "lost the process stream " + std::to_string(kMaxReattach) +
                                " times; giving up on process " + std::to_string(pid_));
      co_return;
    }
    if (reattached_ > 0) {
      asio::steady_timer backoff(shared_->ex, milliseconds(100 * reattached_));
      co_await backoff.async_wait(kTuple);
    }
    ++reattached_;
    auto left = std::chrono::duration_cast<milliseconds>(deadline_ - Clock::now());
    milliseconds total = timed_out_ ? shared_->rt() : std::max(left, milliseconds(1));
    auto s = co_await shared_->open_stream(id_, "Connect", selector(pid_), total);
    if (!s) {
      spdlog::info("e2b {}: re-attaching to process {} failed: {}", id_, pid_, s.error().message);
      if (s.error().code == Errc::not_found) {
        finish_with_error(-1, timed_out_ ? "killed after the command's timeout"
                                         : "the process stream was lost and the process has "
                                           "ended meanwhile (exit code unknown)");
      } else if (reattached_ >= kMaxReattach) {
        finish_with_error(-1, "cannot re-attach to process " + std::to_string(pid_) + ": " +
                                  s.error().message);
      }
      co_return;
    }
    stream_ = std::move(*s);
    decoder_ = e2b::FrameDecoder();
  }

  std::shared_ptr<Shared> shared_;
  std::string id_;
  int pid_;
  std::unique_ptr<net::ClientStream> stream_;
  e2b::FrameDecoder decoder_;
  std::deque<e2b::Frame> frames_;
  std::deque<ExecEvent> pending_;
  Clock::time_point deadline_;
  bool done_ = false;
  bool timed_out_ = false;
  int reattached_ = 0;
};

Info info_from(const json& j) {
  Info info;
  info.id = j.value("sandboxID", std::string());
  info.backend = "e2b";
  info.template_id = j.value("templateID", std::string());
  info.state = j.value("state", std::string("running"));
  if (auto t = j.find("startedAt"); t != j.end() && t->is_string()) {
    info.started_at = e2b::parse_rfc3339(t->get<std::string>()).value_or(0);
  }
  if (auto t = j.find("endAt"); t != j.end() && t->is_string()) {
    info.end_at = e2b::parse_rfc3339(t->get<std::string>()).value_or(0);
  }
  if (auto m = j.find("metadata"); m != j.end() && m->is_object()) {
    for (const auto& [k, v] : m->items()) {
      if (v.is_string()) info.metadata[k] = v.get<std::string>();
    }
  }
  if (auto o = info.metadata.find(std::string(kOwnerKey)); o != info.metadata.end()) info.owner = o->second;
  return info;
}

std::string random_boundary() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s = "agentd-";
  for (int i = 0; i < 24; ++i) s += kHex[rng() % 16];
  return s;
}

class E2bBackend final : public Backend {
 public:
  E2bBackend(asio::any_io_executor ex, const Config& config, net::HttpClient& http,
             core::Registry& metrics)
      : s_(std::make_shared<Shared>(std::move(ex), config, http, metrics)) {}

  std::string_view name() const noexcept override { return "e2b"; }

  asio::awaitable<Result<Info>> create(CreateOptions options) override {
    std::string tmpl = options.template_id.empty() ? s_->config.template_id : options.template_id;
    json metadata = json::object();
    for (const auto& [k, v] : options.metadata) metadata[k] = v;
    if (!options.owner.empty()) metadata[std::string(kOwnerKey)] = options.owner;
    json env = json::object();
    for (const auto& [k, v] : options.env) env[k] = v;
    json body = {{"templateID", tmpl},
                 {"timeout", seconds_up(options.timeout)},
                 {"metadata", metadata},
                 {"envVars", env},
                 {"allow_internet_access", options.network}};
    auto res = co_await s_->api("create", s_->api_request("POST", "/v2/sandboxes", body.dump()));
    if (!res) co_return res.error();
    auto j = json::parse(res->body, nullptr, false);
    if (!j.is_object() || !j.contains("sandboxID") || !j["sandboxID"].is_string()) {
      co_return make_error(Errc::upstream, "e2b create: the answer has no sandboxID");
    }
    Envd e;
    e.token = j.value("envdAccessToken", std::string());
    if (j.contains("domain") && j["domain"].is_string()) e.domain = j["domain"].get<std::string>();
    e.template_id = j.value("templateID", tmpl);
    e.version = j.value("envdVersion", std::string());
    Info info;
    info.id = j["sandboxID"].get<std::string>();
    info.backend = "e2b";
    info.template_id = e.template_id;
    info.state = "running";
    info.started_at = now_ms();
    info.end_at = info.started_at + seconds_up(options.timeout) * 1000;
    for (const auto& [k, v] : metadata.items()) info.metadata[k] = v.get<std::string>();
    info.owner = options.owner;
    s_->envd[info.id] = std::move(e);
    co_return info;
  }

  asio::awaitable<Result<void>> kill(std::string id) override {
    auto res = co_await s_->api("kill", s_->api_request("DELETE", "/sandboxes/" + e2b::url_encode(id), ""));
    s_->envd.erase(id);
    if (!res) co_return res.error();
    co_return Result<void>();
  }

  asio::awaitable<Result<void>> set_timeout(std::string id, milliseconds timeout) override {
    json body = {{"timeout", seconds_up(timeout)}};
    auto res = co_await s_->api(
        "timeout", s_->api_request("POST", "/sandboxes/" + e2b::url_encode(id) + "/timeout", body.dump()));
    if (!res) co_return res.error();
    co_return Result<void>();
  }

  asio::awaitable<Result<std::vector<Info>>> list() override {
    std::vector<Info> out;
    std::string token;
    for (int page = 0; page < kMaxListPages; ++page) {
      std::string path = "/v2/sandboxes?limit=100";
      if (!token.empty()) path += "&nextToken=" + e2b::url_encode(token);
      auto res = co_await s_->api("list", s_->api_request("GET", path, ""));
      if (!res) co_return res.error();
      auto j = json::parse(res->body, nullptr, false);
      if (!j.is_array()) co_return make_error(Errc::upstream, "e2b list: the answer is not an array");
      for (const auto& item : j) {
        if (item.is_object()) out.push_back(info_from(item));
      }
      auto next = res->headers.get("x-next-token");
      if (!next || next->empty()) co_return out;
      token = std::string(*next);
    }
    co_return make_error(Errc::upstream, "e2b list: more than " + std::to_string(kMaxListPages) +
                                             " pages");
  }

  asio::awaitable<Result<void>> pause(std::string id) override {
    auto res = co_await s_->api(
        "pause", s_->api_request("POST", "/sandboxes/" + e2b::url_encode(id) + "/pause", "{}"));
    if (!res) co_return res.error();
    co_return Result<void>();
  }

  // The SDK resumes with POST /v2/sandboxes/{id}/connect (which answers with a fresh token).
  asio::awaitable<Result<void>> resume(std::string id) override {
    json body = {{"timeout", seconds_up(s_->default_timeout)}};
    auto res = co_await s_->api(
        "resume",
        s_->api_request("POST", "/v2/sandboxes/" + e2b::url_encode(id) + "/connect", body.dump()));
    if (!res) co_return res.error();
    auto j = json::parse(res->body, nullptr, false);
    if (j.is_object()) {
      Envd& e = s_->envd[id];
      e.token = j.value("envdAccessToken", e.token);
      if (j.contains("domain") && j["domain"].is_string()) e.domain = j["domain"].get<std::string>();
      e.template_id = j.value("templateID", e.template_id);
      e.version = j.value("envdVersion", e.version);
    }
    co_return Result<void>();
  }

  asio::awaitable<Result<std::unique_ptr<Process>>> start(std::string id,
                                                          ExecOptions options) override {
    json process = {{"cmd", "/bin/bash"}, {"args", json::array({"-l", "-c", options.cmd})}};
    json envs = json::object();
    for (const auto& [k, v] : options.env) envs[k] = v;
    process["envs"] = envs;
    if (!options.cwd.empty()) {
      auto cwd = e2b::sandbox_path(options.cwd, kHome);
      if (!cwd) co_return make_error(Errc::bad_request, "cwd leaves the sandbox: " + options.cwd);
      process["cwd"] = *cwd;
    }
    if (options.stdin_data) {  // checked before anything runs
      auto e = co_await s_->envd_of(id);
      if (!e) co_return e.error();
      if (!version_at_least(e->version, kEnvdCloseStdin)) {
        co_return make_error(Errc::conflict, "envd " + e->version + " cannot close stdin (needs " +
                                                 std::string(kEnvdCloseStdin) + "): no stdin_data");
      }
    }
    json body = {{"process", process}, {"stdin", true}};
    auto deadline = Clock::now() + options.timeout;
    auto opened = co_await s_->open_stream(id, "Start", std::move(body), options.timeout);
    if (!opened) co_return opened.error();
    std::unique_ptr<net::ClientStream> stream = std::move(*opened);

    // The first event names the pid; what came with it stays for the process.
    e2b::FrameDecoder decoder;
    std::deque<e2b::Frame> frames;
    int pid = 0;
    while (pid == 0) {
      auto piece = co_await stream->read();
      if (!piece) co_return client_error(piece.error(), "envd process.Start");
      if (piece->empty()) co_return make_error(Errc::unavailable, "envd process.Start: the stream ended before the process started");
      for (auto& f : decoder.feed(*piece)) frames.push_back(std::move(f));
      if (!decoder.error().empty()) co_return make_error(Errc::upstream, "envd process.Start: " + decoder.error());
      while (!frames.empty() && pid == 0) {
        e2b::Frame f = std::move(frames.front());
        frames.pop_front();
        if (f.end_stream()) {
          auto err = e2b::parse_end_stream(f.payload);
          if (err) co_return *err;
          co_return make_error(Errc::upstream, "envd process.Start: the stream ended before the process started");
        }
        auto ev = e2b::parse_process_event(f.payload);
        if (!ev) co_return make_error(Errc::upstream, "envd process.Start: a malformed event");
        if (ev->kind == e2b::ProcessEvent::Kind::start) pid = ev->pid;
        if (ev->kind == e2b::ProcessEvent::Kind::start && pid == 0) {
          co_return make_error(Errc::upstream, "envd process.Start: start event without a pid");
        }
      }
    }
    auto proc = std::make_unique<E2bProcess>(s_, id, pid, std::move(stream), std::move(decoder),
                                             std::move(frames), deadline);
    if (options.stdin_data) {
      if (!options.stdin_data->empty()) {
        auto w = co_await proc->send_stdin(std::move(*options.stdin_data));
        if (!w) co_return w.error();
      }
      auto c = co_await proc->close_stdin();
      if (!c) co_return c.error();
    }
    std::unique_ptr<Process> out = std::move(proc);
    co_return out;
  }

  asio::awaitable<Result<std::string>> read_file(std::string id, std::string path,
                                                 std::size_t max_bytes) override {
    auto p = e2b::sandbox_path(path, kHome);
    if (!p) co_return make_error(Errc::bad_request, "path leaves the sandbox: " + path);
    auto e = co_await s_->envd_of(id);
    if (!e) co_return e.error();
    auto req = s_->envd_request(id, *e, "GET", "/files?path=" + e2b::url_encode(*p));
    auto opened = co_await s_->http.open(std::move(req));
    if (!opened) {
      s_->count("read_file", false);
      co_return client_error(opened.error(), "envd GET /files");
    }
    auto& stream = *opened;
    if (stream->status() != 200) {
      auto text = co_await stream->read_all();
      s_->count("read_file", false);
      co_return e2b::error_from_http(stream->status(), stream->headers(),
                                     text ? *text : std::string(), "envd GET /files " + *p);
    }
    std::string data;
    for (;;) {
      auto piece = co_await stream->read();
      if (!piece) {
        s_->count("read_file", false);
        co_return client_error(piece.error(), "envd GET /files");
      }
      if (piece->empty()) break;
      if (data.size() + piece->size() > max_bytes) {
        stream->cancel();
        co_return make_error(Errc::payload_too_large,
                             *p + " is larger than " + std::to_string(max_bytes) + " bytes");
      }
      data += *piece;
    }
    s_->count("read_file", true);
    co_return data;
  }

  asio::awaitable<Result<void>> write_file(std::string id, std::string path,
                                           std::string data) override {
    auto p = e2b::sandbox_path(path, kHome);
    if (!p) co_return make_error(Errc::bad_request, "path leaves the sandbox: " + path);
    auto e = co_await s_->envd_of(id);
    if (!e) co_return e.error();
    // multipart (field `file`) works with every envd version; octet-stream needs >= 0.5.7.
    std::string boundary = random_boundary();
    std::string body = "--" + boundary + "\r\n" +
                       "Content-Disposition: form-data; name=\"file\"; filename=\"" + *p +
                       "\"\r\nContent-Type: application/octet-stream\r\n\r\n";
    body += data;
    body += "\r\n--" + boundary + "--\r\n";
    auto req = s_->envd_request(id, *e, "POST", "/files?path=" + e2b::url_encode(*p));
    req.headers.set("Content-Type", "multipart/form-data; boundary=" + boundary);
    req.body = std::move(body);
    auto res = co_await s_->http.request(std::move(req));
    if (!res) {
      s_->count("write_file", false);
      co_return client_error(res.error(), "envd POST /files");
    }
    if (res->status < 200 || res->status > 299) {
      s_->count("write_file", false);
      co_return e2b::error_from_http(res->status, res->headers, res->body, "envd POST /files " + *p);
    }
    s_->count("write_file", true);
    co_return Result<void>();
  }

  asio::awaitable<Result<std::vector<FileEntry>>> list_files(std::string id, std::string path,
                                                             int depth) override {
    auto p = e2b::sandbox_path(path, kHome);
    if (!p) co_return make_error(Errc::bad_request, "path leaves the sandbox: " + path);
    json body = {{"path", *p}, {"depth", std::max(1, depth)}};
    auto r = co_await s_->rpc(id, "filesystem.Filesystem/ListDir", std::move(body));
    if (!r) co_return r.error();
    std::vector<FileEntry> out;
    auto entries = r->find("entries");
    if (entries == r->end() || !entries->is_array()) co_return out;  // protojson omits []
    for (const auto& en : *entries) {
      if (!en.is_object()) continue;
      FileEntry f;
      f.name = en.value("name", std::string());
      f.path = en.value("path", std::string());
      std::string type = en.value("type", std::string());
      f.type = type == "FILE_TYPE_DIRECTORY" ? "dir" : type == "FILE_TYPE_SYMLINK" ? "symlink" : "file";
      if (auto sz = en.find("size"); sz != en.end()) {
        if (sz->is_number_unsigned() || sz->is_number_integer()) {
          f.size = sz->get<std::uint64_t>();
        } else if (sz->is_string()) {
          f.size = std::strtoull(sz->get<std::string>().c_str(), nullptr, 10);
        }
      }
      out.push_back(std::move(f));
    }
    co_return out;
  }

  asio::awaitable<Result<void>> remove(std::string id, std::string path) override {
    auto p = e2b::sandbox_path(path, kHome);
    if (!p) co_return make_error(Errc::bad_request, "path leaves the sandbox: " + path);
    if (*p == "/" || *p == kHome) co_return make_error(Errc::bad_request, "refusing to remove " + *p);
    json body = {{"path", *p}};
    auto r = co_await s_->rpc(id, "filesystem.Filesystem/Remove", std::move(body));
    if (!r) co_return r.error();
    co_return Result<void>();
  }

  std::optional<std::string> desktop_url(const std::string& id) const override {
    auto it = s_->envd.find(id);
    if (it == s_->envd.end() || it->second.template_id != s_->config.desktop_template) {
      return std::nullopt;
    }
    return "https://" + std::to_string(kDesktopPort) + "-" + id + "." + s_->domain_of(it->second) +
           "/vnc.html?autoconnect=true&resize=scale";
  }

 private:
  std::shared_ptr<Shared> s_;
};

}  // namespace

std::unique_ptr<Backend> make_e2b_backend(asio::any_io_executor ex, const Config& config,
                                          net::HttpClient& client, core::Registry& metrics) {
  return std::make_unique<E2bBackend>(std::move(ex), config, client, metrics);
}

}  // namespace agentd::sandbox
