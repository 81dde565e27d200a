// The E2B double: control plane, envd's Connect RPCs and /files, host processes standing for
// sandbox processes, scripted faults and recording. One translation unit, like fake_llm.
#include "support/fake_e2b.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cctype>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "agentd/core/metrics.hpp"
#include "agentd/net/server.hpp"
#include "agentd/net/sse.hpp"

namespace agentd::test {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using json = nlohmann::json;
using net::Request;
using net::Response;
using std::chrono::milliseconds;
using SysClock = std::chrono::system_clock;

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// ---------------------------------------------------------------------------------------------
// Faults

FakeE2bFault FakeE2bFault::fail(std::string path, int status, std::string message) {
  FakeE2bFault f;
  f.path = std::move(path);
  f.status = status;
  f.message = std::move(message);
  return f;
}

FakeE2bFault FakeE2bFault::hanging(std::string path) {
  FakeE2bFault f;
  f.path = std::move(path);
  f.hang = true;
  return f;
}

namespace {

[[noreturn]] void bad(const std::string& where, const std::string& what) {
  throw std::invalid_argument(where + ": " + what);
}

void only_keys(const json& j, const std::string& where, std::initializer_list<const char*> keys) {
  if (!j.is_object()) bad(where, "expected an object");
  for (const auto& [k, v] : j.items()) {
    bool known = std::any_of(keys.begin(), keys.end(), [&](const char* n) { return k == n; });
    if (!known) bad(where + "." + k, "unknown key");
  }
}

std::string get_string(const json& j, const std::string& where) {
  if (!j.is_string()) bad(where, "expected a string");
  return j.get<std::string>();
}

int get_int(const json& j, const std::string& where, int min, int max = 1'000'000'000) {
  if (!j.is_number_integer()) bad(where, "expected an integer");
  auto v = j.get<long long>();
  if (v < min || v > max) bad(where, "out of range");
  return static_cast<int>(v);
}

}  // namespace

FakeE2bFault parse_fake_e2b_fault(const json& j) {
  only_keys(j, "fault",
            {"method", "path", "status", "message", "retry_after", "connect_code", "delay_ms",
             "hang", "drop_after", "reset_after", "end_error"});
  FakeE2bFault f;
  if (j.contains("method")) f.method = get_string(j["method"], "fault.method");
  if (j.contains("path")) f.path = get_string(j["path"], "fault.path");
  if (j.contains("status")) f.status = get_int(j["status"], "fault.status", 100, 599);
  if (j.contains("message")) f.message = get_string(j["message"], "fault.message");
  if (j.contains("retry_after")) f.retry_after_s = get_int(j["retry_after"], "fault.retry_after", 0);
  if (j.contains("connect_code")) f.connect_code = get_string(j["connect_code"], "fault.connect_code");
  if (j.contains("delay_ms")) f.delay = milliseconds(get_int(j["delay_ms"], "fault.delay_ms", 0));
  if (j.contains("hang")) {
    if (!j["hang"].is_boolean()) bad("fault.hang", "expected a boolean");
    f.hang = j["hang"].get<bool>();
  }
  if (j.contains("drop_after")) f.drop_after = get_int(j["drop_after"], "fault.drop_after", 0);
  if (j.contains("reset_after")) f.reset_after = get_int(j["reset_after"], "fault.reset_after", 0);
  if (j.contains("end_error")) {
    const auto& e = j["end_error"];
    only_keys(e, "fault.end_error", {"code", "message", "after"});
    FakeE2bEndError err;
    if (e.contains("code")) err.code = get_string(e["code"], "fault.end_error.code");
    if (e.contains("message")) err.message = get_string(e["message"], "fault.end_error.message");
    if (e.contains("after")) err.after = get_int(e["after"], "fault.end_error.after", 0);
    f.end_error = err;
  }
  return f;
}

// ---------------------------------------------------------------------------------------------
// Recording and small helpers

std::string FakeE2bRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (net::iequals(k, name)) return v;
  }
  return {};
}

json FakeE2bRequest::json() const {
  return nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
}

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    unsigned v = (static_cast<unsigned char>(in[i]) << 16) |
                 (static_cast<unsigned char>(in[i + 1]) << 8) | static_cast<unsigned char>(in[i + 2]);
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (i < in.size()) {
    unsigned v = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += i + 1 < in.size() ? kB64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// Standard or URL-safe alphabet, padding optional (protojson accepts both).
std::optional<std::string> base64_decode(std::string_view in) {
  std::string out;
  unsigned acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+' || c == '-') v = 62;
    else if (c == '/' || c == '_') v = 63;
    else if (c == '=') break;
    else return std::nullopt;
    acc = (acc << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

// One Connect envelope: flags, 4-byte big-endian length, the message.
std::string frame(std::uint8_t flags, const std::string& payload) {
  std::string out(5, '\0');
  out[0] = static_cast<char>(flags);
  auto n = static_cast<std::uint32_t>(payload.size());
  out[1] = static_cast<char>((n >> 24) & 0xff);
  out[2] = static_cast<char>((n >> 16) & 0xff);
  out[3] = static_cast<char>((n >> 8) & 0xff);
  out[4] = static_cast<char>(n & 0xff);
  return out + payload;
}

std::string rfc3339(SysClock::time_point t) {
  auto ms = std::chrono::duration_cast<milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(ms % 1000));
  return out;
}

std::string random_hex(std::size_t n) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s += kHex[rng() % 16];
  return s;
}

// Lexically normalized absolute path; `..` stops at the root.
std::string normalize(const std::string& path) {
  std::vector<std::string> parts;
  std::stringstream ss(path);
  std::string part;
  while (std::getline(ss, part, '/')) {
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  std::string out;
  for (const auto& p : parts) out += "/" + p;
  return out.empty() ? "/" : out;
}

constexpr std::string_view kHome = "/home/user";

// A sandbox path (absolute, or relative to /home/user) as an absolute sandbox path.
std::string sandbox_path(const std::string& p) {
  if (p.empty()) return std::string(kHome);
  if (p[0] == '/') return normalize(p);
  return normalize(std::string(kHome) + "/" + p);
}

std::string connect_code_for(int status) {
  switch (status) {
    case 400: return "invalid_argument";
    case 401: return "unauthenticated";
    case 403: return "permission_denied";
    case 404: return "not_found";
    case 409: return "already_exists";
    case 429: return "resource_exhausted";
    case 499: return "canceled";
    case 501: return "unimplemented";
    case 502:
    case 503: return "unavailable";
    case 504: return "deadline_exceeded";
    default: return status >= 500 ? "internal" : "unknown";
  }
}

int status_for_code(const std::string& code) {
  static const std::map<std::string, int> kStatus = {
      {"canceled", 499},          {"unknown", 500},           {"invalid_argument", 400},
      {"deadline_exceeded", 504}, {"not_found", 404},         {"already_exists", 409},
      {"permission_denied", 403}, {"resource_exhausted", 429}, {"failed_precondition", 400},
      {"aborted", 409},           {"out_of_range", 400},      {"unimplemented", 501},
      {"internal", 500},          {"unavailable", 503},       {"data_loss", 500},
      {"unauthenticated", 401}};
  auto it = kStatus.find(code);
  return it == kStatus.end() ? 500 : it->second;
}

Response connect_error(const std::string& code, const std::string& message) {
  return Response::json(status_for_code(code), {{"code", code}, {"message", message}});
}

Response api_error(int status, const std::string& message) {
  return Response::json(status, {{"code", status}, {"message", message}});
}

std::string end_stream(const std::optional<std::pair<std::string, std::string>>& error) {
  json j = json::object();
  if (error) j["error"] = {{"code", error->first}, {"message", error->second}};
  return frame(0x02, dump(j));
}

std::string event_frame(const json& event) { return frame(0x00, dump({{"event", event}})); }

// A Connect streaming request body: one enveloped message (a bare JSON body is accepted too).
std::optional<json> stream_request(const std::string& body) {
  std::string_view b = body;
  if (b.size() >= 5 && (static_cast<unsigned char>(b[0]) & ~0x01u) == 0) {
    std::uint32_t n = (static_cast<std::uint32_t>(static_cast<unsigned char>(b[1])) << 24) |
                      (static_cast<std::uint32_t>(static_cast<unsigned char>(b[2])) << 16) |
                      (static_cast<std::uint32_t>(static_cast<unsigned char>(b[3])) << 8) |
                      static_cast<std::uint32_t>(static_cast<unsigned char>(b[4]));
    if (n == b.size() - 5) b.remove_prefix(5);
  }
  auto j = json::parse(b, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

// multipart/form-data: the parts' names, file names and bytes.
struct Part {
  std::string name, filename, data;
};

std::optional<std::vector<Part>> parse_multipart(const std::string& content_type,
                                                 const std::string& body) {
  auto at = lower(content_type).find("boundary=");
  if (at == std::string::npos) return std::nullopt;
  std::string boundary = content_type.substr(at + 9);
  if (auto semi = boundary.find(';'); semi != std::string::npos) boundary.resize(semi);
  if (boundary.size() >= 2 && boundary.front() == '"') boundary = boundary.substr(1, boundary.size() - 2);
  std::string delim = "--" + boundary;
  std::vector<Part> parts;
  std::size_t pos = body.find(delim);
  if (pos == std::string::npos) return std::nullopt;
  for (;;) {
    pos += delim.size();
    if (body.compare(pos, 2, "--") == 0) break;
    if (body.compare(pos, 2, "\r\n") != 0) return std::nullopt;
    pos += 2;
    auto head_end = body.find("\r\n\r\n", pos);
    if (head_end == std::string::npos) return std::nullopt;
    std::string head = body.substr(pos, head_end - pos);
    auto next = body.find("\r\n" + delim, head_end + 4);
    if (next == std::string::npos) return std::nullopt;
    Part p;
    p.data = body.substr(head_end + 4, next - head_end - 4);
    auto param = [&](const std::string& key) -> std::string {
      auto k = head.find(key + "=\"");
      if (k == std::string::npos) return {};
      auto start = k + key.size() + 2;
      auto end = head.find('"', start);
      return end == std::string::npos ? std::string() : head.substr(start, end - start);
    };
    p.name = param("name");
    p.filename = param("filename");
    parts.push_back(std::move(p));
    pos = next + 2;
  }
  return parts;
}

// ---------------------------------------------------------------------------------------------
// Processes and their stream subscribers

// One attached Start/Connect stream.
struct Sub {
  explicit Sub(asio::any_io_executor ex) : wake(ex) {}
  std::shared_ptr<net::SseStream> stream;  // set once the server starts streaming
  std::deque<std::string> backlog;          // frames produced before that
  asio::steady_timer wake;
  milliseconds keepalive{std::chrono::seconds(50)};
  int data_sent = 0;
  std::optional<int> drop_after, reset_after;
  std::optional<FakeE2bEndError> end_error;
  bool finished = false;
};

struct Proc {
  explicit Proc(asio::any_io_executor ex) : out(ex), err(ex), in(ex), reap(ex) {}
  int pid = 0;
  std::string tag;
  json config;
  asio::posix::stream_descriptor out, err, in;
  asio::steady_timer reap;
  int open_pipes = 2;
  bool exited = false;
  bool ended = false;
  int status = 0;
  std::vector<std::shared_ptr<Sub>> subs;
};

struct Sandbox {
  FakeE2bSandbox info;
  std::map<int, std::shared_ptr<Proc>> procs;
};

void finish_sub(Sub& sub, bool reset) {
  if (sub.finished) return;
  sub.finished = true;
  if (sub.stream) {
    if (reset) {
      sub.stream->close(net::SseStream::State::overflow);  // the server cuts the connection
    } else {
      sub.stream->finish();
    }
  }
  sub.wake.cancel();
}

void emit(Sub& sub, std::string bytes) {
  if (sub.finished) return;
  if (!sub.stream) {
    sub.backlog.push_back(std::move(bytes));
    return;
  }
  if (!sub.stream->push(net::SseEvent{"", "", std::move(bytes), std::nullopt})) {
    finish_sub(sub, false);
  }
}

// After the start event and after each data event: the scripted stream faults.
void check_faults(Sub& sub) {
  if (sub.end_error && sub.data_sent >= sub.end_error->after) {
    emit(sub, end_stream(std::make_pair(sub.end_error->code, sub.end_error->message)));
    finish_sub(sub, false);
  } else if (sub.drop_after && sub.data_sent >= *sub.drop_after) {
    finish_sub(sub, false);
  } else if (sub.reset_after && sub.data_sent >= *sub.reset_after) {
    finish_sub(sub, true);
  }
}

void broadcast_data(Proc& p, const char* which, std::string_view bytes) {
  json ev = {{"data", {{which, base64_encode(bytes)}}}};
  std::string f = event_frame(ev);
  for (auto& s : p.subs) {
    if (s->finished) continue;
    emit(*s, f);
    ++s->data_sent;
    check_faults(*s);
  }
}

json end_event(int status) {
  json end = json::object();
  int code = 0;
  std::string text;
  if (WIFEXITED(status)) {
    code = WEXITSTATUS(status);
    text = "exit status " + std::to_string(code);
  } else if (WIFSIGNALED(status)) {
    code = -1;  // what Go's ProcessState.ExitCode() says for a signal
    int sig = WTERMSIG(status);
    text = std::string("signal: ") + (sig == SIGKILL ? "killed" : sig == SIGTERM ? "terminated"
                                                                                 : strsignal(sig));
  }
  if (code != 0) end["exitCode"] = code;  // protojson omits zero values
  end["exited"] = true;
  end["status"] = text;
  return {{"end", end}};
}

void end_process(Proc& p) {
  if (p.ended) return;
  p.ended = true;
  std::string f = event_frame(end_event(p.status)) + end_stream(std::nullopt);
  for (auto& s : p.subs) {
    emit(*s, f);
    finish_sub(*s, false);
  }
  p.subs.clear();
}

asio::awaitable<void> pump(std::shared_ptr<Proc> p, bool is_err) {
  auto& sd = is_err ? p->err : p->out;
  std::array<char, 32 * 1024> buf;
  for (;;) {
    auto [ec, n] = co_await sd.async_read_some(asio::buffer(buf), kTuple);
    if (n > 0) broadcast_data(*p, is_err ? "stderr" : "stdout", std::string_view(buf.data(), n));
    if (ec) break;
  }
  boost::system::error_code ignored;
  sd.close(ignored);
  --p->open_pipes;
  p->reap.cancel();
}

// Polls for the exit (no SIGCHLD handler in a test process); once exited, waits briefly for
// the pipes (a background child may hold them), then ends every stream.
asio::awaitable<void> reap(std::shared_ptr<Proc> p, std::function<void(int)> gone) {
  auto exited_at = std::chrono::steady_clock::time_point::max();
  for (;;) {
    if (!p->exited) {
      int status = 0;
      pid_t r = waitpid(p->pid, &status, WNOHANG);
      if (r == p->pid) {
        p->exited = true;
        p->status = status;
        exited_at = std::chrono::steady_clock::now();
      } else if (r < 0) {
        p->exited = true;
        exited_at = std::chrono::steady_clock::now();
      }
    }
    if (p->exited && (p->open_pipes == 0 ||
                      std::chrono::steady_clock::now() - exited_at > milliseconds(300))) {
      break;
    }
    p->reap.expires_after(milliseconds(5));
    co_await p->reap.async_wait(kTuple);
  }
  boost::system::error_code ignored;
  p->out.close(ignored);
  p->err.close(ignored);
  p->in.close(ignored);
  end_process(*p);
  gone(p->pid);
}

// The producer of one Start/Connect response: flushes the backlog, then sends keepalives
// until the stream is finished by the process or by a fault.
asio::awaitable<void> serve_sub(std::shared_ptr<Sub> sub, std::shared_ptr<net::SseStream> s) {
  sub->stream = s;
  auto backlog = std::move(sub->backlog);
  sub->backlog.clear();
  bool was_finished = sub->finished;
  sub->finished = false;
  for (auto& f : backlog) emit(*sub, std::move(f));
  if (was_finished) {
    finish_sub(*sub, false);
    co_return;
  }
  check_faults(*sub);
  while (!sub->finished && !s->closed()) {
    sub->wake.expires_after(sub->keepalive);
    auto [ec] = co_await sub->wake.async_wait(kTuple);
    if (sub->finished || s->closed()) break;
    if (!ec) emit(*sub, event_frame({{"keepalive", json::object()}}));
  }
  // A reset stream was closed by finish_sub; a finished one ends here with its last chunk.
}

std::string file_type(const fs::file_status& st) {
  if (fs::is_symlink(st)) return "FILE_TYPE_SYMLINK";
  if (fs::is_directory(st)) return "FILE_TYPE_DIRECTORY";
  return "FILE_TYPE_FILE";
}

std::string perm_string(fs::perms p, bool dir) {
  std::string s = dir ? "d" : "-";
  const std::pair<fs::perms, char> bits[] = {
      {fs::perms::owner_read, 'r'},  {fs::perms::owner_write, 'w'},  {fs::perms::owner_exec, 'x'},
      {fs::perms::group_read, 'r'},  {fs::perms::group_write, 'w'},  {fs::perms::group_exec, 'x'},
      {fs::perms::others_read, 'r'}, {fs::perms::others_write, 'w'}, {fs::perms::others_exec, 'x'}};
  for (auto [bit, c] : bits) s += (p & bit) != fs::perms::none ? c : '-';
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The server

struct FakeE2b::Impl {
  explicit Impl(FakeE2bOptions o) : options(std::move(o)) {}

  FakeE2bOptions options;
  mutable std::mutex mu;
  std::deque<FakeE2bFault> faults;
  std::vector<FakeE2bRequest> recorded;
  std::map<std::string, Sandbox> sandboxes;  // processes: touched on the loop thread only
  std::string root;
  bool own_root = false;

  asio::io_context io{1};
  core::Registry metrics;
  std::unique_ptr<net::HttpServer> server;
  std::uint16_t port = 0;
  std::thread thread;

  void start();
  void stop();
  asio::awaitable<Response> handle(Request& req);
  Response control(const Request& req);
  std::optional<FakeE2bFault> take_fault(const Request& req);
  Response api(const Request& req);
  asio::awaitable<Response> envd(Request& req, std::optional<FakeE2bFault> fault);
  Response files(const Request& req, Sandbox& sb);
  Response filesystem(const std::string& method, const json& body, Sandbox& sb);
  Response process_unary(const std::string& method, const json& body, Sandbox& sb);
  Response process_stream(const Request& req, const std::string& method, const json& body,
                          Sandbox& sb, const std::optional<FakeE2bFault>& fault);
  void expire();
  void kill_sandbox(Sandbox& sb);
  json sandbox_json(const Sandbox& sb, bool detail) const;

  std::string host_path(const Sandbox& sb, const std::string& sandbox_abs) const {
    return sb.info.dir + (sandbox_abs == "/" ? "" : sandbox_abs);
  }

  void record(const Request& req) {
    FakeE2bRequest r;
    r.method = req.method;
    r.path = req.path;
    r.query = req.query;
    for (const auto& h : req.headers) r.headers.emplace_back(lower(h.name), h.value);
    r.body = req.body;
    r.time = SysClock::now();
    std::lock_guard lock(mu);
    recorded.push_back(std::move(r));
  }
};

void FakeE2b::Impl::start() {
  if (options.root_dir.empty()) {
    std::string tmpl = (fs::temp_directory_path() / "fake_e2b.XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("fake_e2b: cannot create a directory");
    root = tmpl;
    own_root = true;
  } else {
    root = options.root_dir;
    fs::create_directories(root);
  }
  net::ServerConfig config;
  config.listeners = {{"127.0.0.1", options.port, false}};
  config.access_log = false;
  config.max_body_bytes = 64 * 1024 * 1024;
  config.handler_timeout = std::chrono::hours(24);  // a hanging fault hangs
  config.sse_max_queued = 1 << 16;
  config.sse_keepalive = std::chrono::hours(24);    // raw streams: our own keepalive events
  config.cors.allow_origins = {};
  server = net::make_http_server(
      io, config, [this](Request& req) { return handle(req); }, metrics);
  port = server->start().at(0).port;
  thread = std::thread([this] { io.run(); });
}

void FakeE2b::Impl::stop() {
  if (!thread.joinable()) return;
  std::promise<void> done;
  auto finished = done.get_future();
  asio::post(io, [&] {
    for (auto& [id, sb] : sandboxes) kill_sandbox(sb);
    server->shutdown(milliseconds(0), [&done] { done.set_value(); });
  });
  finished.wait_for(std::chrono::seconds(10));
  io.stop();
  thread.join();
  for (auto& [id, sb] : sandboxes) {
    for (auto& [pid, p] : sb.procs) {
      if (!p->exited) ::waitpid(pid, nullptr, 0);  // SIGKILLed above: no zombies left
    }
  }
  sandboxes.clear();
  std::error_code ec;
  if (own_root) fs::remove_all(root, ec);
}

std::optional<FakeE2bFault> FakeE2b::Impl::take_fault(const Request& req) {
  std::lock_guard lock(mu);
  for (auto it = faults.begin(); it != faults.end(); ++it) {
    if (!it->method.empty() && it->method != req.method) continue;
    if (it->path != "*" && !it->path.empty() && it->path != req.path) continue;
    FakeE2bFault f = std::move(*it);
    faults.erase(it);
    return f;
  }
  return std::nullopt;
}

asio::awaitable<Response> FakeE2b::Impl::handle(Request& req) {
  if (starts_with(req.path, "/_fake/")) co_return control(req);
  record(req);
  expire();
  auto fault = take_fault(req);
  bool envd_route = req.headers.get("e2b-sandbox-id").has_value() ||
                    starts_with(req.path, "/process.") || starts_with(req.path, "/filesystem.") ||
                    req.path == "/files" || req.path == "/health";
  if (fault) {
    if (fault->hang) {
      asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::hours(24));
      co_await t.async_wait(kTuple);  // cancelled when the server stops
      co_return Response::error(503, "fake_e2b stopping");
    }
    if (fault->delay.count() > 0) {
      asio::steady_timer t(co_await asio::this_coro::executor, fault->delay);
      co_await t.async_wait(kTuple);
    }
    if (fault->status) {
      std::string msg = fault->message.empty() ? "fake_e2b scripted error" : fault->message;
      Response r;
      if (envd_route && (starts_with(req.path, "/process.") || starts_with(req.path, "/filesystem."))) {
        std::string code = fault->connect_code.empty() ? connect_code_for(*fault->status)
                                                       : fault->connect_code;
        r = Response::json(*fault->status, {{"code", code}, {"message", msg}});
      } else {
        r = api_error(*fault->status, msg);
      }
      if (fault->retry_after_s) r.headers.set("retry-after", std::to_string(*fault->retry_after_s));
      co_return r;
    }
  }
  if (envd_route) co_return co_await envd(req, std::move(fault));
  co_return api(req);
}

Response FakeE2b::Impl::control(const Request& req) {
  if (req.path == "/_fake/script" && req.method == "POST") {
    auto j = json::parse(req.body, nullptr, false);
    if (j.is_discarded()) return Response::error(400, "body is not JSON");
    std::vector<FakeE2bFault> parsed;
    try {
      if (j.is_array()) {
        for (const auto& f : j) parsed.push_back(parse_fake_e2b_fault(f));
      } else {
        parsed.push_back(parse_fake_e2b_fault(j));
      }
    } catch (const std::invalid_argument& e) {
      return Response::error(400, e.what());
    }
    std::lock_guard lock(mu);
    for (auto& f : parsed) faults.push_back(std::move(f));
    return Response::json(200, {{"pending", faults.size()}});
  }
  if (req.path == "/_fake/requests" && req.method == "GET") {
    json out = json::array();
    std::lock_guard lock(mu);
    for (const auto& r : recorded) {
      json headers = json::object();
      for (const auto& [k, v] : r.headers) headers[k] = v;
      out.push_back({{"method", r.method},
                     {"path", r.path},
                     {"query", r.query},
                     {"headers", headers},
                     {"body", r.body},
                     {"time_ms", std::chrono::duration_cast<milliseconds>(
                                     r.time.time_since_epoch()).count()}});
    }
    return Response::json(200, out);
  }
  if (req.path == "/_fake/sandboxes" && req.method == "GET") {
    json out = json::array();
    std::lock_guard lock(mu);
    for (const auto& [id, sb] : sandboxes) {
      json j = sandbox_json(sb, true);
      j["dir"] = sb.info.dir;
      j["processes"] = sb.procs.size();
      out.push_back(j);
    }
    return Response::json(200, out);
  }
  if (req.path == "/_fake/reset" && req.method == "POST") {
    std::lock_guard lock(mu);
    faults.clear();
    recorded.clear();
    return Response::json(200, json::object());
  }
  return Response::error(404, "no such control route");
}

void FakeE2b::Impl::kill_sandbox(Sandbox& sb) {
  for (auto& [pid, p] : sb.procs) {
    if (!p->exited) ::kill(-p->pid, SIGKILL);
    ::kill(-p->pid, SIGCONT);
  }
  // The reapers end the streams and forget the processes; the directory goes now.
  std::error_code ec;
  fs::remove_all(sb.info.dir, ec);
}

void FakeE2b::Impl::expire() {
  auto now = SysClock::now();
  std::lock_guard lock(mu);
  for (auto it = sandboxes.begin(); it != sandboxes.end();) {
    if (it->second.info.end_at <= now) {
      kill_sandbox(it->second);
      it = sandboxes.erase(it);
    } else {
      ++it;
    }
  }
}

json FakeE2b::Impl::sandbox_json(const Sandbox& sb, bool detail) const {
  json metadata = json::object();
  for (const auto& [k, v] : sb.info.metadata) metadata[k] = v;
  json j = {{"sandboxID", sb.info.id},
            {"templateID", sb.info.template_id},
            {"alias", sb.info.template_id},
            {"clientID", "fake"},
            {"startedAt", rfc3339(sb.info.started_at)},
            {"endAt", rfc3339(sb.info.end_at)},
            {"cpuCount", 2},
            {"memoryMB", 512},
            {"diskSizeMB", 1024},
            {"metadata", metadata},
            {"state", sb.info.state},
            {"envdVersion", options.envd_version}};
  if (detail) {
    j["envdAccessToken"] = sb.info.access_token;
    j["domain"] = options.domain.empty() ? json(nullptr) : json(options.domain);
    j["allowInternetAccess"] = sb.info.internet;
  }
  return j;
}

Response FakeE2b::Impl::api(const Request& req) {
  auto key = req.headers.get("x-api-key");
  if (!key || *key != options.api_key) {
    return api_error(401, key ? "Invalid API key" : "Missing API key (X-API-KEY header)");
  }
  const std::string& path = req.path;
  auto body_json = [&]() -> json {
    auto j = json::parse(req.body, nullptr, false);
    return j.is_discarded() || !j.is_object() ? json::object() : j;
  };
  auto created_json = [&](const Sandbox& sb) {
    return json{{"sandboxID", sb.info.id},
                {"templateID", sb.info.template_id},
                {"alias", sb.info.template_id},
                {"clientID", "fake"},
                {"envdVersion", options.envd_version},
                {"envdAccessToken", sb.info.access_token},
                {"trafficAccessToken", nullptr},
                {"domain", options.domain.empty() ? json(nullptr) : json(options.domain)}};
  };
  auto seconds_of = [](const json& b, long long dflt) {
    auto t = b.find("timeout");
    return t != b.end() && t->is_number_integer() ? t->get<long long>() : dflt;
  };

  if (path == "/v2/sandboxes" && req.method == "POST") {
    auto b = json::parse(req.body, nullptr, false);
    if (b.is_discarded() || !b.is_object()) return api_error(400, "body is not a JSON object");
    if (!b.contains("templateID") || !b["templateID"].is_string() ||
        b["templateID"].get<std::string>().empty()) {
      return api_error(400, "templateID is required");
    }
    Sandbox sb;
    sb.info.id = "i" + random_hex(19);
    sb.info.template_id = b["templateID"].get<std::string>();
    sb.info.state = "running";
    sb.info.access_token = "ea_" + random_hex(32);
    sb.info.started_at = SysClock::now();
    long long secs = seconds_of(b, 15);
    if (secs < 0 || secs > 86400) return api_error(400, "timeout out of range");
    sb.info.end_at = sb.info.started_at + std::chrono::seconds(secs);
    for (const char* field : {"metadata", "envVars"}) {
      if (!b.contains(field) || b[field].is_null()) continue;
      if (!b[field].is_object()) return api_error(400, std::string(field) + " must be an object");
      for (const auto& [k, v] : b[field].items()) {
        if (!v.is_string()) return api_error(400, std::string(field) + " values must be strings");
        (std::string(field) == "metadata" ? sb.info.metadata : sb.info.env)[k] = v.get<std::string>();
      }
    }
    if (b.contains("allow_internet_access") && b["allow_internet_access"].is_boolean()) {
      sb.info.internet = b["allow_internet_access"].get<bool>();
    }
    sb.info.dir = root + "/" + sb.info.id;
    std::error_code ec;
    fs::create_directories(sb.info.dir + std::string(kHome), ec);
    fs::create_directories(sb.info.dir + "/tmp", ec);
    if (ec) return api_error(500, "cannot create the sandbox directory: " + ec.message());
    json out = created_json(sb);
    std::lock_guard lock(mu);
    sandboxes.emplace(sb.info.id, std::move(sb));
    return Response::json(201, out);
  }

  if ((path == "/v2/sandboxes" || path == "/sandboxes") && req.method == "GET") {
    bool v2 = path == "/v2/sandboxes";
    std::vector<std::string> states{"running"};
    if (v2) states = {"running", "paused"};
    if (auto s = req.query_param("state"); s && !s->empty()) {
      states.clear();
      std::stringstream ss(*s);
      std::string one;
      while (std::getline(ss, one, ',')) states.push_back(one);
    }
    std::map<std::string, std::string> want;
    if (auto m = req.query_param("metadata"); m && !m->empty()) {
      // `k=v&k2=v2`, URL-encoded once more by the SDK.
      std::stringstream ss(*m);
      std::string pair;
      while (std::getline(ss, pair, '&')) {
        auto eq = pair.find('=');
        if (eq == std::string::npos) continue;
        want[net::percent_decode(pair.substr(0, eq), true)] =
            net::percent_decode(pair.substr(eq + 1), true);
      }
    }
    std::size_t limit = options.list_page_size;
    if (auto l = req.query_param("limit"); l && !l->empty()) {
      limit = std::min(limit, static_cast<std::size_t>(std::max(1L, std::strtol(l->c_str(), nullptr, 10))));
    }
    std::size_t offset = 0;
    if (auto t = req.query_param("nextToken"); t && !t->empty()) {
      offset = static_cast<std::size_t>(std::strtoul(t->c_str(), nullptr, 10));
    }
    std::vector<json> all;
    {
      std::lock_guard lock(mu);
      for (const auto& [id, sb] : sandboxes) {
        if (std::find(states.begin(), states.end(), sb.info.state) == states.end()) continue;
        bool match = std::all_of(want.begin(), want.end(), [&](const auto& kv) {
          auto it = sb.info.metadata.find(kv.first);
          return it != sb.info.metadata.end() && it->second == kv.second;
        });
        if (match) all.push_back(sandbox_json(sb, false));
      }
    }
    json page = json::array();
    if (!v2) {
      for (auto& j : all) page.push_back(std::move(j));
      return Response::json(200, page);
    }
    for (std::size_t i = offset; i < all.size() && i < offset + limit; ++i) page.push_back(all[i]);
    auto r = Response::json(200, page);
    if (offset + limit < all.size()) r.headers.set("x-next-token", std::to_string(offset + limit));
    return r;
  }

  // /sandboxes/{id}[/action] and /v2/sandboxes/{id}/connect
  std::string rest;
  bool v2 = false;
  if (starts_with(path, "/sandboxes/")) {
    rest = path.substr(11);
  } else if (starts_with(path, "/v2/sandboxes/")) {
    rest = path.substr(14);
    v2 = true;
  } else {
    return api_error(404, "no route " + req.method + " " + path);
  }
  auto slash = rest.find('/');
  std::string id = rest.substr(0, slash);
  std::string action = slash == std::string::npos ? "" : rest.substr(slash + 1);
  std::lock_guard lock(mu);
  auto it = sandboxes.find(id);
  if (it == sandboxes.end()) return api_error(404, "sandbox \"" + id + "\" doesn't exist or you don't have access to it");
  Sandbox& sb = it->second;
  if (!v2 && action.empty() && req.method == "GET") return Response::json(200, sandbox_json(sb, true));
  if (!v2 && action.empty() && req.method == "DELETE") {
    kill_sandbox(sb);
    sandboxes.erase(it);
    return Response::text(204, "");
  }
  if (!v2 && action == "timeout" && req.method == "POST") {
    auto b = body_json();
    if (!b.contains("timeout") || !b["timeout"].is_number_integer()) {
      return api_error(400, "timeout is required");
    }
    sb.info.end_at = SysClock::now() + std::chrono::seconds(b["timeout"].get<long long>());
    return Response::text(204, "");
  }
  if (!v2 && action == "pause" && req.method == "POST") {
    if (sb.info.state == "paused") return api_error(409, "sandbox \"" + id + "\" is already paused");
    sb.info.state = "paused";
    for (auto& [pid, p] : sb.procs) ::kill(-pid, SIGSTOP);
    return Response::text(204, "");
  }
  bool resume = !v2 && action == "resume" && req.method == "POST";
  bool connect = v2 && action == "connect" && req.method == "POST";
  if (resume || connect) {
    bool was_paused = sb.info.state == "paused";
    if (resume && !was_paused) return api_error(409, "sandbox \"" + id + "\" is already running");
    auto b = body_json();
    long long secs = seconds_of(b, 15);
    if (was_paused) {
      sb.info.state = "running";
      for (auto& [pid, p] : sb.procs) ::kill(-pid, SIGCONT);
      sb.info.end_at = SysClock::now() + std::chrono::seconds(secs);
    } else if (b.contains("timeout")) {
      sb.info.end_at = std::max(sb.info.end_at, SysClock::now() + std::chrono::seconds(secs));
    }
    return Response::json(was_paused ? 201 : 200, created_json(sb));
  }
  return api_error(404, "no route " + req.method + " " + path);
}

asio::awaitable<Response> FakeE2b::Impl::envd(Request& req, std::optional<FakeE2bFault> fault) {
  std::string id;
  if (auto h = req.headers.get("e2b-sandbox-id")) {
    id = std::string(*h);
  } else if (auto host = req.headers.get("host")) {
    // <port>-<id>.<domain>
    std::string name(*host);
    auto dash = name.find('-');
    auto dot = name.find('.');
    if (dash != std::string::npos && dot != std::string::npos && dash < dot) {
      id = name.substr(dash + 1, dot - dash - 1);
    }
  }
  std::unique_lock lock(mu);
  auto it = sandboxes.find(id);
  if (it == sandboxes.end() || it->second.info.state != "running") {
    json j = {{"sandboxId", id},
              {"message", it == sandboxes.end() ? "The sandbox was not found"
                                                : "The sandbox is paused"},
              {"code", 502}};
    co_return Response::json(502, j);
  }
  Sandbox& sb = it->second;
  if (req.path == "/health") co_return Response::text(204, "");
  auto token = req.headers.get("x-access-token");
  if (!token || *token != sb.info.access_token) {
    co_return Response::json(401, {{"code", 401}, {"message", "invalid access token"}});
  }
  if (req.path == "/files") co_return files(req, sb);

  auto slash = req.path.rfind('/');
  std::string service = req.path.substr(1, slash - 1);
  std::string method = req.path.substr(slash + 1);
  if (req.method != "POST") co_return connect_error("unimplemented", "use POST");
  std::string ctype = lower(req.headers.get("content-type").value_or(""));
  bool streaming = service == "process.Process" && (method == "Start" || method == "Connect");
  if (streaming) {
    if (!starts_with(ctype, "application/connect+json")) {
      co_return Response::json(415, {{"code", "unknown"},
                                     {"message", "expected application/connect+json"}});
    }
    auto body = stream_request(req.body);
    if (!body) co_return connect_error("invalid_argument", "the request is not a JSON message");
    co_return process_stream(req, method, *body, sb, fault);
  }
  if (!starts_with(ctype, "application/json")) {
    co_return Response::json(415, {{"code", "unknown"}, {"message", "expected application/json"}});
  }
  auto body = json::parse(req.body.empty() ? std::string("{}") : req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    co_return connect_error("invalid_argument", "the request is not a JSON object");
  }
  if (service == "filesystem.Filesystem") co_return filesystem(method, body, sb);
  if (service == "process.Process") co_return process_unary(method, body, sb);
  co_return connect_error("unimplemented", req.path + " is not implemented");
}

Response FakeE2b::Impl::files(const Request& req, Sandbox& sb) {
  auto path_q = req.query_param("path");
  if (req.method == "GET") {
    if (!path_q || path_q->empty()) return api_error(400, "path is required");
    std::string p = host_path(sb, sandbox_path(*path_q));
    std::error_code ec;
    if (fs::is_directory(p, ec)) return api_error(400, "path '" + *path_q + "' is a directory");
    std::ifstream f(p, std::ios::binary);
    if (!f) return api_error(404, "path '" + *path_q + "' does not exist");
    std::ostringstream ss;
    ss << f.rdbuf();
    auto r = Response::text(200, ss.str(), "application/octet-stream");
    std::string name = fs::path(*path_q).filename().string();
    r.headers.set("content-disposition", "inline; filename=\"" + name + "\"");
    return r;
  }
  if (req.method != "POST") return api_error(405, "method not allowed");
  std::vector<std::pair<std::string, std::string>> writes;  // sandbox path, bytes
  std::string ctype(req.headers.get("content-type").value_or(""));
  if (starts_with(lower(ctype), "multipart/form-data")) {
    auto parts = parse_multipart(ctype, req.body);
    if (!parts) return api_error(400, "malformed multipart body");
    for (auto& part : *parts) {
      if (part.name != "file") continue;
      std::string target = path_q && !path_q->empty() ? *path_q : part.filename;
      if (target.empty()) return api_error(400, "no path for the uploaded file");
      writes.emplace_back(sandbox_path(target), std::move(part.data));
    }
    if (writes.empty()) return api_error(400, "no `file` part");
  } else {
    if (!path_q || path_q->empty()) return api_error(400, "path is required");
    writes.emplace_back(sandbox_path(*path_q), req.body);
  }
  json out = json::array();
  for (auto& [spath, data] : writes) {
    std::string p = host_path(sb, spath);
    std::error_code ec;
    fs::create_directories(fs::path(p).parent_path(), ec);
    if (fs::is_directory(p, ec)) return api_error(400, "path '" + spath + "' is a directory");
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    if (!f) return api_error(400, "cannot write '" + spath + "'");
    f.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.push_back({{"name", fs::path(spath).filename().string()}, {"type", "file"}, {"path", spath}});
  }
  return Response::json(200, out);
}

Response FakeE2b::Impl::filesystem(const std::string& method, const json& body, Sandbox& sb) {
  auto str = [&](const char* key) {
    auto it = body.find(key);
    return it != body.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  auto entry = [&](const std::string& spath) -> std::optional<json> {
    std::string p = host_path(sb, spath);
    std::error_code ec;
    auto st = fs::symlink_status(p, ec);
    if (ec || !fs::exists(st)) return std::nullopt;
    bool dir = fs::is_directory(st);
    struct stat raw {};
    ::lstat(p.c_str(), &raw);
    json e = {{"name", spath == "/" ? "/" : fs::path(spath).filename().string()},
              {"type", file_type(st)},
              {"path", spath},
              {"size", std::to_string(dir ? 4096 : static_cast<long long>(raw.st_size))},
              {"mode", static_cast<unsigned>(raw.st_mode & 07777)},
              {"permissions", perm_string(st.permissions(), dir)},
              {"owner", "user"},
              {"group", "user"},
              {"modifiedTime", rfc3339(SysClock::time_point(std::chrono::seconds(raw.st_mtime)))}};
    if (fs::is_symlink(st)) e["symlinkTarget"] = fs::read_symlink(p, ec).string();
    return e;
  };
  if (method == "Stat") {
    std::string sp = sandbox_path(str("path"));
    auto e = entry(sp);
    if (!e) return connect_error("not_found", "no such file or directory: " + sp);
    return Response::json(200, {{"entry", *e}});
  }
  if (method == "MakeDir") {
    std::string sp = sandbox_path(str("path"));
    std::error_code ec;
    if (fs::exists(host_path(sb, sp), ec)) return connect_error("already_exists", "directory exists: " + sp);
    fs::create_directories(host_path(sb, sp), ec);
    if (ec) return connect_error("internal", ec.message());
    return Response::json(200, {{"entry", *entry(sp)}});
  }
  if (method == "Move") {
    std::string from = sandbox_path(str("source")), to = sandbox_path(str("destination"));
    std::error_code ec;
    if (!fs::exists(host_path(sb, from), ec)) return connect_error("not_found", "no such file: " + from);
    fs::create_directories(fs::path(host_path(sb, to)).parent_path(), ec);
    fs::rename(host_path(sb, from), host_path(sb, to), ec);
    if (ec) return connect_error("internal", ec.message());
    return Response::json(200, {{"entry", *entry(to)}});
  }
  if (method == "Remove") {
    std::string sp = sandbox_path(str("path"));
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(host_path(sb, sp), ec))) {
      return connect_error("not_found", "no such file or directory: " + sp);
    }
    fs::remove_all(host_path(sb, sp), ec);
    if (ec) return connect_error("internal", ec.message());
    return Response::json(200, json::object());
  }
  if (method == "ListDir") {
    std::string sp = sandbox_path(str("path"));
    int depth = 1;
    if (auto d = body.find("depth"); d != body.end() && d->is_number_integer()) {
      depth = std::max(1, d->get<int>());
    }
    std::error_code ec;
    auto st = fs::status(host_path(sb, sp), ec);
    if (ec || !fs::exists(st)) return connect_error("not_found", "directory not found: " + sp);
    if (!fs::is_directory(st)) return connect_error("invalid_argument", "path is not a directory: " + sp);
    json entries = json::array();
    std::vector<std::pair<std::string, int>> todo{{sp, 1}};
    while (!todo.empty()) {
      auto [dir, level] = todo.back();
      todo.pop_back();
      std::vector<std::string> names;
      for (const auto& de : fs::directory_iterator(host_path(sb, dir), ec)) {
        names.push_back(de.path().filename().string());
      }
      std::sort(names.begin(), names.end());
      for (const auto& n : names) {
        std::string child = dir == "/" ? "/" + n : dir + "/" + n;
        auto e = entry(child);
        if (!e) continue;
        entries.push_back(*e);
        if (level < depth && (*e)["type"] == "FILE_TYPE_DIRECTORY") todo.emplace_back(child, level + 1);
      }
    }
    return Response::json(200, {{"entries", entries}});
  }
  return connect_error("unimplemented", "filesystem.Filesystem/" + method + " is not served by fake_e2b");
}

namespace {

std::shared_ptr<Proc> select_proc(const json& body, Sandbox& sb) {
  auto p = body.find("process");
  if (p == body.end() || !p->is_object()) return nullptr;
  if (auto pid = p->find("pid"); pid != p->end() && pid->is_number_integer()) {
    auto it = sb.procs.find(pid->get<int>());
    return it == sb.procs.end() || it->second->ended ? nullptr : it->second;
  }
  if (auto tag = p->find("tag"); tag != p->end() && tag->is_string()) {
    for (auto& [pid, proc] : sb.procs) {
      if (proc->tag == tag->get<std::string>() && !proc->ended) return proc;
    }
  }
  return nullptr;
}

}  // namespace

Response FakeE2b::Impl::process_unary(const std::string& method, const json& body, Sandbox& sb) {
  if (method == "List") {
    json procs = json::array();
    for (auto& [pid, p] : sb.procs) {
      if (p->ended) continue;
      json info = {{"config", p->config}, {"pid", pid}};
      if (!p->tag.empty()) info["tag"] = p->tag;
      procs.push_back(info);
    }
    return Response::json(200, {{"processes", procs}});
  }
  if (method != "SendInput" && method != "SendSignal" && method != "CloseStdin") {
    return connect_error("unimplemented", "process.Process/" + method + " is not served by fake_e2b");
  }
  auto p = select_proc(body, sb);
  if (!p) return connect_error("not_found", "process not found");
  if (method == "SendSignal") {
    auto s = body.find("signal");
    int sig = 0;
    if (s != body.end() && s->is_number_integer()) sig = s->get<int>();
    if (s != body.end() && s->is_string()) {
      std::string name = s->get<std::string>();
      sig = name == "SIGNAL_SIGKILL" ? SIGKILL : name == "SIGNAL_SIGTERM" ? SIGTERM : 0;
    }
    if (sig != SIGKILL && sig != SIGTERM) return connect_error("invalid_argument", "unsupported signal");
    ::kill(-p->pid, sig);
    return Response::json(200, json::object());
  }
  if (method == "CloseStdin") {
    boost::system::error_code ec;
    p->in.close(ec);
    return Response::json(200, json::object());
  }
  // SendInput: {input: {stdin: base64}} (pty input is refused: no pty here)
  auto in = body.find("input");
  if (in == body.end() || !in->is_object() || !in->contains("stdin") || !(*in)["stdin"].is_string()) {
    return connect_error("invalid_argument", "input.stdin is required (no pty in fake_e2b)");
  }
  auto data = base64_decode((*in)["stdin"].get<std::string>());
  if (!data) return connect_error("invalid_argument", "input.stdin is not base64");
  if (!p->in.is_open()) return connect_error("failed_precondition", "stdin is closed");
  // Small writes to a pipe: a blocking write on the loop would stall it only for a full pipe.
  const char* ptr = data->data();
  std::size_t left = data->size();
  while (left > 0) {
    ssize_t n = ::write(p->in.native_handle(), ptr, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return connect_error("internal", std::string("stdin write: ") + std::strerror(errno));
    ptr += n;
    left -= static_cast<std::size_t>(n);
  }
  return Response::json(200, json::object());
}

Response FakeE2b::Impl::process_stream(const Request& req, const std::string& method,
                                       const json& body, Sandbox& sb,
                                       const std::optional<FakeE2bFault>& fault) {
  auto sub = std::make_shared<Sub>(io.get_executor());
  if (options.keepalive) {
    sub->keepalive = *options.keepalive;
  } else if (auto k = req.headers.get("keepalive-ping-interval")) {
    long secs = std::strtol(std::string(*k).c_str(), nullptr, 10);
    if (secs > 0) sub->keepalive = std::chrono::seconds(secs);
  }
  bool close_after = false;
  if (fault) {
    sub->drop_after = fault->drop_after;
    sub->reset_after = fault->reset_after;
    sub->end_error = fault->end_error;
    close_after = fault->drop_after || fault->reset_after;
  }
  std::shared_ptr<Proc> p;
  if (method == "Connect") {
    p = select_proc(body, sb);
    if (!p) return connect_error("not_found", "process not found");
  } else {
    const json* cfg = body.contains("process") && body["process"].is_object() ? &body["process"] : nullptr;
    if (!cfg || !cfg->contains("cmd") || !(*cfg)["cmd"].is_string()) {
      return connect_error("invalid_argument", "process.cmd is required");
    }
    if (body.contains("pty") && !body["pty"].is_null()) {
      return connect_error("unimplemented", "fake_e2b has no pty");
    }
    std::vector<std::string> argv{(*cfg)["cmd"].get<std::string>()};
    if (cfg->contains("args") && (*cfg)["args"].is_array()) {
      for (const auto& a : (*cfg)["args"]) {
        if (a.is_string()) argv.push_back(a.get<std::string>());
      }
    }
    std::map<std::string, std::string> env{{"PATH", "/usr/local/bin:/usr/bin:/bin"},
                                           {"HOME", host_path(sb, std::string(kHome))},
                                           {"USER", "user"},
                                           {"LANG", "C.UTF-8"},
                                           {"E2B_SANDBOX", "true"},
                                           {"E2B_SANDBOX_ID", sb.info.id}};
    for (const auto& [k, v] : sb.info.env) env[k] = v;
    if (cfg->contains("envs") && (*cfg)["envs"].is_object()) {
      for (const auto& [k, v] : (*cfg)["envs"].items()) {
        if (v.is_string()) env[k] = v.get<std::string>();
      }
    }
    std::string cwd = host_path(sb, sandbox_path(cfg->value("cwd", std::string())));
    std::error_code ec;
    if (!fs::is_directory(cwd, ec)) {
      return connect_error("invalid_argument", "cwd does not exist: " + cfg->value("cwd", std::string()));
    }
    bool want_stdin = !body.contains("stdin") || (body["stdin"].is_boolean() && body["stdin"].get<bool>());

    int out[2], err[2], in[2] = {-1, -1};
    if (pipe2(out, O_CLOEXEC) != 0) return connect_error("internal", "pipe");
    if (pipe2(err, O_CLOEXEC) != 0) {
      ::close(out[0]), ::close(out[1]);
      return connect_error("internal", "pipe");
    }
    if (want_stdin && pipe2(in, O_CLOEXEC) != 0) {
      ::close(out[0]), ::close(out[1]), ::close(err[0]), ::close(err[1]);
      return connect_error("internal", "pipe");
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (want_stdin) {
      posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    } else {
      posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    }
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
    // Nothing else of this process leaks into the child: an inherited socket would keep a
    // connection open after the server closed (or cut) it.
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    std::vector<std::string> envs;
    for (const auto& [k, v] : env) envs.push_back(k + "=" + v);
    std::vector<char*> cenv;
    for (auto& e : envs) cenv.push_back(e.data());
    cenv.push_back(nullptr);
    pid_t pid = 0;
    int rc = posix_spawnp(&pid, argv[0].c_str(), &fa, &attr, cargv.data(), cenv.data());
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    ::close(out[1]);
    ::close(err[1]);
    if (want_stdin) ::close(in[0]);
    if (rc != 0) {
      ::close(out[0]), ::close(err[0]);
      if (want_stdin) ::close(in[1]);
      return connect_error("internal", "failed to start process: " + std::string(std::strerror(rc)));
    }
    p = std::make_shared<Proc>(io.get_executor());
    p->pid = pid;
    p->out.assign(out[0]);
    p->err.assign(err[0]);
    if (want_stdin) p->in.assign(in[1]);
    if (body.contains("tag") && body["tag"].is_string()) p->tag = body["tag"].get<std::string>();
    json cfg_copy = *cfg;
    p->config = cfg_copy;
    sb.procs[pid] = p;
    std::string sid = sb.info.id;
    auto gone = [this, sid](int dead) {
      std::lock_guard lock(mu);
      auto it = sandboxes.find(sid);
      if (it != sandboxes.end()) it->second.procs.erase(dead);
    };
    asio::co_spawn(io, pump(p, false), asio::detached);
    asio::co_spawn(io, pump(p, true), asio::detached);
    asio::co_spawn(io, reap(p, gone), asio::detached);
  }
  sub->backlog.push_back(event_frame({{"start", {{"pid", p->pid}}}}));
  p->subs.push_back(sub);
  Response r = Response::stream(
      [sub](std::shared_ptr<net::SseStream> s) { return serve_sub(sub, std::move(s)); });
  r.raw_stream = true;
  r.headers.set("content-type", "application/connect+json");
  r.close = close_after;
  return r;
}

// ---------------------------------------------------------------------------------------------

FakeE2b::FakeE2b(FakeE2bOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  impl_->start();
}

FakeE2b::~FakeE2b() { impl_->stop(); }

std::uint16_t FakeE2b::port() const noexcept { return impl_->port; }
std::string FakeE2b::url() const { return "http://127.0.0.1:" + std::to_string(impl_->port); }
const std::string& FakeE2b::api_key() const noexcept { return impl_->options.api_key; }

void FakeE2b::script(FakeE2bFault fault) {
  std::lock_guard lock(impl_->mu);
  impl_->faults.push_back(std::move(fault));
}

std::size_t FakeE2b::pending() const {
  std::lock_guard lock(impl_->mu);
  return impl_->faults.size();
}

std::vector<FakeE2bRequest> FakeE2b::requests() const {
  std::lock_guard lock(impl_->mu);
  return impl_->recorded;
}

std::vector<FakeE2bSandbox> FakeE2b::sandboxes() const {
  std::lock_guard lock(impl_->mu);
  std::vector<FakeE2bSandbox> out;
  for (const auto& [id, sb] : impl_->sandboxes) {
    FakeE2bSandbox s = sb.info;
    s.processes = sb.procs.size();
    out.push_back(std::move(s));
  }
  return out;
}

void FakeE2b::reset() {
  std::lock_guard lock(impl_->mu);
  impl_->faults.clear();
  impl_->recorded.clear();
}

}  // namespace agentd::test
