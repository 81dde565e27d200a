// A closed-loop MCP load generator for bench/mcp_gateway/run.sh: tools/call round trips over
// the Streamable HTTP transport, and idle sessions for the memory measurement.
//
// wrk cannot do this alone: every connection needs its own MCP session first (POST initialize,
// take Mcp-Session-Id from the answer, POST notifications/initialized), and the servers measured
// answer a tools/call either as JSON or as an SSE stream (chunked, or with a Content-Length),
// which has to be read to its end and checked for the call's response.
//
// Load mode: N connections, one session each (initialized before the clock starts); each
// connection sends a tools/call, reads the whole answer, checks it, sends the next. Latency is
// from the first byte written to the last byte of the answer read.
//
// Sessions mode: opens N sessions one after another over one keep-alive connection and leaves
// them idle (then, optionally, N more with a connection each); samples VmRSS of the given
// processes (alone, and with their children) before and after, then (optionally) DELETEs them
// so that they do not linger into later runs.
//
// Build: g++ -O2 -std=c++20 -o mcpload mcpload.cpp
// Usage: mcpload --url http://127.0.0.1:PORT/mcp [-H 'Name: value']... [--protocol VERSION]
//          load:     --tool NAME [--message TEXT] --connections N --duration S [--warmup S]
//                    [--pid PID]... (the server: its CPU time over the measured window)
//          sessions: --sessions N [--with-connections] [--pid PID]... [--settle S] [--delete]
// Output: one `key=value` per line (latencies in microseconds, memory in KiB).
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using u64 = std::uint64_t;

u64 now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<u64>(ts.tv_sec) * 1'000'000'000ULL + static_cast<u64>(ts.tv_nsec);
}

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "mcpload: %s\n", msg.c_str());
  std::exit(2);
}

struct Options {
  std::string host = "127.0.0.1";
  int port = 80;
  std::string path = "/mcp";
  std::vector<std::string> headers;
  std::string protocol = "2025-06-18";
  // load
  std::string tool;
  std::string message = "hello from the mcp_gateway benchmark";
  int connections = 1;
  double duration = 10;
  double warmup = 2;
  // sessions
  int sessions = 0;
  std::vector<int> pids;
  double settle = 2;
  bool delete_after = false;
  bool with_connections = false;
};

Options parse_args(int argc, char** argv) {
  Options o;
  auto need = [&](int& i) -> std::string {
    if (i + 1 >= argc) die(std::string("missing value after ") + argv[i]);
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--url") {
      std::string u = need(i);
      const std::string scheme = "http://";
      if (u.rfind(scheme, 0) != 0) die("only http:// URLs are supported");
      u.erase(0, scheme.size());
      auto slash = u.find('/');
      std::string hostport = u.substr(0, slash);
      o.path = slash == std::string::npos ? "/" : u.substr(slash);
      auto colon = hostport.rfind(':');
      if (colon == std::string::npos) die("the URL needs an explicit port");
      o.host = hostport.substr(0, colon);
      o.port = std::atoi(hostport.c_str() + colon + 1);
    } else if (a == "-H") {
      o.headers.push_back(need(i));
    } else if (a == "--protocol") {
      o.protocol = need(i);
    } else if (a == "--tool") {
      o.tool = need(i);
    } else if (a == "--message") {
      o.message = need(i);
    } else if (a == "--connections") {
      o.connections = std::atoi(need(i).c_str());
    } else if (a == "--duration") {
      o.duration = std::atof(need(i).c_str());
    } else if (a == "--warmup") {
      o.warmup = std::atof(need(i).c_str());
    } else if (a == "--sessions") {
      o.sessions = std::atoi(need(i).c_str());
    } else if (a == "--pid") {
      o.pids.push_back(std::atoi(need(i).c_str()));
    } else if (a == "--settle") {
      o.settle = std::atof(need(i).c_str());
    } else if (a == "--delete") {
      o.delete_after = true;
    } else if (a == "--with-connections") {
      o.with_connections = true;
    } else {
      die("unknown argument " + a);
    }
  }
  if (o.sessions <= 0 && o.tool.empty()) die("give --tool (load) or --sessions (idle sessions)");
  if (o.connections <= 0 || o.duration <= 0) die("--connections and --duration must be > 0");
  return o;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// One HTTP/1.1 response being read from a byte buffer.
struct Head {
  std::size_t body_start = 0;
  int status = 0;
  bool chunked = false;
  bool close = false;
  std::optional<std::size_t> content_length;
  std::string session_id;
  std::string content_type;
};

bool parse_head(const std::string& in, std::size_t end, Head& h) {
  std::string_view all(in.data(), end);
  std::size_t eol = all.find("\r\n");
  std::string_view status_line = all.substr(0, eol);
  if (status_line.size() < 12 || status_line.substr(0, 5) != "HTTP/") return false;
  h.status = std::atoi(std::string(status_line.substr(9, 3)).c_str());
  std::size_t pos = eol == std::string_view::npos ? end : eol + 2;
  while (pos < end) {
    std::size_t next = all.find("\r\n", pos);
    if (next == std::string_view::npos) next = end;
    std::string_view line = all.substr(pos, next - pos);
    pos = next + 2;
    auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view name = trim(line.substr(0, colon));
    std::string_view value = trim(line.substr(colon + 1));
    if (iequals(name, "content-length")) {
      h.content_length = static_cast<std::size_t>(std::strtoull(std::string(value).c_str(), nullptr, 10));
    } else if (iequals(name, "transfer-encoding")) {
      h.chunked = value.find("chunked") != std::string_view::npos;
    } else if (iequals(name, "connection")) {
      h.close = iequals(value, "close");
    } else if (iequals(name, "mcp-session-id")) {
      h.session_id = std::string(value);
    } else if (iequals(name, "content-type")) {
      h.content_type = std::string(value);
    }
  }
  h.body_start = end + 4;
  return true;
}

// Decodes a complete chunked body starting at `from` into `body`; returns the number of bytes
// it took in `in`, or nullopt when more bytes are needed. Trailers are not expected.
std::optional<std::size_t> dechunk(const std::string& in, std::size_t from, std::string& body) {
  body.clear();
  std::size_t pos = from;
  for (;;) {
    std::size_t eol = in.find("\r\n", pos);
    if (eol == std::string::npos) return std::nullopt;
    std::size_t size = std::strtoull(in.c_str() + pos, nullptr, 16);
    if (size == 0) {
      if (in.size() < eol + 4) return std::nullopt;
      return eol + 4 - from;  // "0\r\n\r\n"
    }
    if (in.size() < eol + 2 + size + 2) return std::nullopt;
    body.append(in, eol + 2, size);
    pos = eol + 2 + size + 2;
  }
}

// Tries to take one whole response off the front of `in`. True when one was taken.
// `eof`: the peer closed, which ends a body that has neither length nor chunking.
bool take_response(std::string& in, bool eof, Head& head, std::string& body) {
  auto end = in.find("\r\n\r\n");
  if (end == std::string::npos) return false;
  head = Head{};
  if (!parse_head(in, end, head)) die("malformed HTTP response: " + in.substr(0, 200));
  std::size_t used = 0;
  if (head.status == 204 || head.status == 304 || (head.status >= 100 && head.status < 200)) {
    body.clear();
  } else if (head.chunked) {
    auto n = dechunk(in, head.body_start, body);
    if (!n) return false;
    used = *n;
  } else if (head.content_length) {
    if (in.size() < head.body_start + *head.content_length) return false;
    body.assign(in, head.body_start, *head.content_length);
    used = *head.content_length;
  } else {
    if (!eof) return false;
    body.assign(in, head.body_start);
    used = in.size() - head.body_start;
  }
  in.erase(0, head.body_start + used);
  return true;
}

class Endpoint {
 public:
  explicit Endpoint(const Options& o) : o_(o) {
    addr_.sin_family = AF_INET;
    addr_.sin_port = htons(static_cast<std::uint16_t>(o.port));
    std::string host = o.host == "localhost" ? "127.0.0.1" : o.host;
    if (inet_pton(AF_INET, host.c_str(), &addr_.sin_addr) != 1) die("host must be an IPv4 address");
  }

  int connect_blocking() const {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die(std::string("socket: ") + std::strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{};
    tv.tv_sec = 15;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr_), sizeof addr_) != 0) {
      die(std::string("connect: ") + std::strerror(errno));
    }
    return fd;
  }

  // A POST (or DELETE, with an empty body) as raw bytes.
  std::string request(const std::string& method, const std::string& body,
                      const std::string& session, bool with_version) const {
    std::string r = method + " " + o_.path + " HTTP/1.1\r\nHost: " + o_.host + ":" +
                    std::to_string(o_.port) + "\r\n";
    for (const auto& h : o_.headers) r += h + "\r\n";
    r += "Accept: application/json, text/event-stream\r\n";
    if (!session.empty()) r += "Mcp-Session-Id: " + session + "\r\n";
    if (with_version) r += "MCP-Protocol-Version: " + o_.protocol + "\r\n";
    if (method == "POST") r += "Content-Type: application/json\r\n";
    r += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    return r;
  }

  // One blocking exchange on `fd` (reconnected into `fd` when the server closed it).
  void exchange(int& fd, const std::string& req, Head& head, std::string& body) const {
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (write_all(fd, req) && read_response(fd, head, body)) {
        if (head.close) {
          close(fd);
          fd = connect_blocking();
        }
        return;
      }
      close(fd);  // a keep-alive connection the server dropped meanwhile: once more, fresh
      fd = connect_blocking();
    }
    die("no answer from the server");
  }

  std::string initialize_body(int id) const {
    return R"({"jsonrpc":"2.0","id":)" + std::to_string(id) +
           R"(,"method":"initialize","params":{"protocolVersion":")" + o_.protocol +
           R"(","capabilities":{},"clientInfo":{"name":"mcpload","version":"1.0"}}})";
  }

  // initialize + notifications/initialized; returns the session id.
  std::string open_session(int& fd) const {
    Head head;
    std::string body;
    exchange(fd, request("POST", initialize_body(1), "", false), head, body);
    if (head.status != 200 || head.session_id.empty() ||
        body.find("\"protocolVersion\"") == std::string::npos) {
      die("initialize: HTTP " + std::to_string(head.status) + ", session id '" + head.session_id +
          "': " + body.substr(0, 300));
    }
    std::string sid = head.session_id;
    exchange(fd, request("POST", R"({"jsonrpc":"2.0","method":"notifications/initialized"})", sid, true),
             head, body);
    if (head.status != 202 && head.status != 200) {
      die("notifications/initialized: HTTP " + std::to_string(head.status) + ": " + body.substr(0, 300));
    }
    return sid;
  }

  void delete_session(int& fd, const std::string& sid) const {
    Head head;
    std::string body;
    exchange(fd, request("DELETE", "", sid, true), head, body);
  }

 private:
  static bool write_all(int fd, const std::string& s) {
    std::size_t off = 0;
    while (off < s.size()) {
      ssize_t w = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (w <= 0) {
        if (w < 0 && errno == EINTR) continue;
        return false;
      }
      off += static_cast<std::size_t>(w);
    }
    return true;
  }

  static bool read_response(int fd, Head& head, std::string& body) {
    std::string in;
    char buf[16384];
    bool eof = false;
    for (;;) {
      if (take_response(in, eof, head, body)) return true;
      if (eof) return false;
      ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return false;  // timeout or reset
      if (r == 0) {
        eof = true;
        if (in.empty()) return false;
        continue;
      }
      in.append(buf, static_cast<std::size_t>(r));
    }
  }

  const Options& o_;
  sockaddr_in addr_{};
};

// ---- sessions mode --------------------------------------------------------------------------

std::vector<int> with_descendants(int pid) {
  std::vector<int> out{pid};
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::ifstream f("/proc/" + std::to_string(out[i]) + "/task/" + std::to_string(out[i]) + "/children");
    int c = 0;
    while (f >> c) out.push_back(c);
  }
  return out;
}

long status_kb(int pid, const char* field) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  std::string want = std::string(field) + ":";
  while (std::getline(f, line)) {
    if (line.rfind(want, 0) == 0) return std::atol(line.c_str() + want.size());
  }
  return 0;
}

// User + system CPU time of one process, in clock ticks (0 when it is gone).
long cpu_ticks(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(f, stat);
  auto paren = stat.rfind(')');  // the command name may hold spaces
  if (paren == std::string::npos) return 0;
  std::istringstream rest(stat.substr(paren + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; rest >> field; ++i) {  // fields are numbered from 1; the state is field 3
    if (i == 14) utime = std::atol(field.c_str());
    if (i == 15) {
      stime = std::atol(field.c_str());
      break;
    }
  }
  return utime + stime;
}

// CPU time of the processes named with --pid, alone and with their descendants, in ms.
struct Cpu {
  double self_ms = 0;
  double tree_ms = 0;
};

Cpu sample_cpu(const std::vector<int>& roots) {
  static const double ms_per_tick = 1000.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
  Cpu c;
  for (int root : roots) {
    c.self_ms += static_cast<double>(cpu_ticks(root)) * ms_per_tick;
    for (int p : with_descendants(root)) c.tree_ms += static_cast<double>(cpu_ticks(p)) * ms_per_tick;
  }
  return c;
}

struct Rss {
  long self_kb = 0;  // the processes named with --pid
  long tree_kb = 0;  // the same with all their descendants (stdio children)
  int processes = 0;
};

Rss sample(const std::vector<int>& roots) {
  Rss r;
  for (int root : roots) {
    r.self_kb += status_kb(root, "VmRSS");
    for (int p : with_descendants(root)) {
      r.tree_kb += status_kb(p, "VmRSS");
      ++r.processes;
    }
  }
  return r;
}

void print_phase(const char* prefix, int n, double took, const Rss& before, const Rss& after) {
  std::printf("%ssessions=%d\n%sopen_seconds=%.2f\n", prefix, n, prefix, took);
  std::printf("%srss_before_kb=%ld\n%srss_after_kb=%ld\n%sper_session_bytes=%.0f\n", prefix,
              before.self_kb, prefix, after.self_kb, prefix,
              static_cast<double>(after.self_kb - before.self_kb) * 1024.0 / n);
  std::printf("%stree_rss_before_kb=%ld\n%stree_rss_after_kb=%ld\n%stree_per_session_bytes=%.0f\n",
              prefix, before.tree_kb, prefix, after.tree_kb, prefix,
              static_cast<double>(after.tree_kb - before.tree_kb) * 1024.0 / n);
  std::printf("%sprocesses_before=%d\n%sprocesses_after=%d\n", prefix, before.processes, prefix,
              after.processes);
  std::fflush(stdout);
}

// Phase 1: N sessions opened one after another over one keep-alive connection: what a session
// costs by itself. Phase 2 (--with-connections): N more, each on a connection of its own held
// open: what an idle client costs, session and connection. Phase 2 comes after phase 1 without
// freeing anything in between, so that neither reuses memory the other freed (a process that
// freed memory before would hand it out again and show a per-session cost of ~0). Then every
// session is deleted (--delete) so that none lingers into later runs.
int run_sessions(const Options& o) {
  Endpoint ep(o);
  int fd = ep.connect_blocking();
  // Warm-up: whatever the first sessions touch once (code pages, pools, JIT) is not counted.
  for (int i = 0; i < 20; ++i) ep.delete_session(fd, ep.open_session(fd));
  std::this_thread::sleep_for(std::chrono::duration<double>(o.settle));
  std::vector<std::pair<int, std::string>> ids;  // (index into fds, session)
  std::vector<int> fds{fd};

  Rss before = sample(o.pids);
  u64 t0 = now_ns();
  for (int i = 0; i < o.sessions; ++i) ids.emplace_back(0, ep.open_session(fds[0]));
  double took = static_cast<double>(now_ns() - t0) / 1e9;
  std::this_thread::sleep_for(std::chrono::duration<double>(o.settle));
  Rss after = sample(o.pids);
  print_phase("", o.sessions, took, before, after);

  if (o.with_connections) {
    before = sample(o.pids);
    t0 = now_ns();
    for (int i = 0; i < o.sessions; ++i) {
      fds.push_back(ep.connect_blocking());
      ids.emplace_back(static_cast<int>(fds.size() - 1), ep.open_session(fds.back()));
    }
    took = static_cast<double>(now_ns() - t0) / 1e9;
    std::this_thread::sleep_for(std::chrono::duration<double>(o.settle));
    after = sample(o.pids);
    print_phase("conn_", o.sessions, took, before, after);
  }

  if (o.delete_after) {
    // Over the first connection: the others may have been closed by the server meanwhile.
    for (auto& entry : ids) ep.delete_session(fds[0], entry.second);
  }
  for (int f : fds) close(f);
  return 0;
}

// ---- load mode ------------------------------------------------------------------------------

struct Conn {
  int fd = -1;
  std::string session;
  long next_id = 2;
  long in_flight_id = 0;
  bool busy = false;
  u64 sent = 0;
  std::string out;
  std::size_t out_off = 0;
  std::string in;
};

class Load {
 public:
  explicit Load(const Options& o) : o_(o), ep_(o) {
    ep_fd_ = epoll_create1(0);
    conns_.resize(static_cast<std::size_t>(o.connections));
    for (auto& c : conns_) {
      c.fd = ep_.connect_blocking();
      c.session = ep_.open_session(c.fd);
    }
    for (std::size_t i = 0; i < conns_.size(); ++i) arm(i);
  }

  int run() {
    const u64 start = now_ns();
    measure_from_ = start + static_cast<u64>(o_.warmup * 1e9);
    measure_to_ = measure_from_ + static_cast<u64>(o_.duration * 1e9);
    const u64 hard_stop = measure_to_ + 10'000'000'000ULL;
    for (std::size_t i = 0; i < conns_.size(); ++i) send_call(i);
    std::vector<epoll_event> events(conns_.size());
    // CPU is sampled at the edges of the measured window (to within the 50 ms epoll timeout),
    // so that session set-up (a peer may start a child per session) is not counted.
    bool window_open = false, window_closed = false;
    double client_from = 0, client_to = 0;
    Cpu server_from, server_to;
    for (;;) {
      u64 t = now_ns();
      if (!window_open && t >= measure_from_) {
        window_open = true;
        client_from = cpu_ms();
        server_from = sample_cpu(o_.pids);
      }
      if (window_open && !window_closed && t >= measure_to_) {
        window_closed = true;
        client_to = cpu_ms();
        server_to = sample_cpu(o_.pids);
      }
      if (t >= hard_stop) break;
      if (t >= measure_to_ && in_flight() == 0) break;
      int n = epoll_wait(ep_fd_, events.data(), static_cast<int>(events.size()), 50);
      if (n < 0 && errno != EINTR) die(std::string("epoll_wait: ") + std::strerror(errno));
      for (int k = 0; k < n; ++k) {
        auto i = static_cast<std::size_t>(events[k].data.u64);
        if (events[k].events & EPOLLOUT) flush(i);
        if (events[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(i);
      }
    }
    std::sort(lat_.begin(), lat_.end());
    std::printf("connections=%d\nsessions=%d\nduration=%.1f\n", o_.connections, o_.connections, o_.duration);
    std::printf("calls=%zu\ncalls_per_sec=%.1f\n", lat_.size(), static_cast<double>(lat_.size()) / o_.duration);
    std::printf("errors=%llu\nbad_answers=%llu\nreconnects=%llu\nunfinished=%zu\n",
                static_cast<unsigned long long>(errors_), static_cast<unsigned long long>(bad_),
                static_cast<unsigned long long>(reconnects_), in_flight());
    std::printf("sse_answers=%llu\njson_answers=%llu\nanswered_total=%llu\n",
                static_cast<unsigned long long>(sse_), static_cast<unsigned long long>(json_),
                static_cast<unsigned long long>(answered_));
    const std::pair<const char*, double> ps[] = {{"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}, {"p999", 0.999}};
    for (const auto& [name, p] : ps) std::printf("%s_us=%.0f\n", name, pick(p) / 1e3);
    std::printf("max_us=%.0f\n", lat_.empty() ? 0.0 : static_cast<double>(lat_.back()) / 1e3);
    if (!first_bad_.empty()) std::printf("first_bad=%s\n", first_bad_.c_str());
    std::printf("client_cpu_ms=%.0f\n", client_to - client_from);
    if (!o_.pids.empty()) {
      std::printf("server_cpu_ms=%.0f\nchildren_cpu_ms=%.0f\n", server_to.self_ms - server_from.self_ms,
                  (server_to.tree_ms - server_to.self_ms) - (server_from.tree_ms - server_from.self_ms));
    }
    std::fflush(stdout);
    // End the sessions (a peer that runs a child process per session keeps it until then).
    int fd = ep_.connect_blocking();
    for (const auto& c : conns_) ep_.delete_session(fd, c.session);
    close(fd);
    return 0;
  }

 private:
  // This process's CPU time (user + system) so far.
  static double cpu_ms() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto ms = [](const timeval& tv) {
      return static_cast<double>(tv.tv_sec) * 1e3 + static_cast<double>(tv.tv_usec) / 1e3;
    };
    return ms(ru.ru_utime) + ms(ru.ru_stime);
  }

  double pick(double p) const {
    if (lat_.empty()) return 0;
    auto idx = static_cast<std::size_t>(std::ceil(p * static_cast<double>(lat_.size())));
    idx = std::clamp<std::size_t>(idx, 1, lat_.size()) - 1;
    return static_cast<double>(lat_[idx]);
  }

  std::size_t in_flight() const {
    std::size_t n = 0;
    for (const auto& c : conns_) n += c.busy ? 1 : 0;
    return n;
  }

  void arm(std::size_t i, bool want_out = false) {
    Conn& c = conns_[i];
    fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) | O_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0u);
    ev.data.u64 = i;
    if (epoll_ctl(ep_fd_, EPOLL_CTL_MOD, c.fd, &ev) != 0) epoll_ctl(ep_fd_, EPOLL_CTL_ADD, c.fd, &ev);
  }

  std::string call_body(long id) const {
    return R"({"jsonrpc":"2.0","id":)" + std::to_string(id) + R"(,"method":"tools/call","params":{"name":")" +
           o_.tool + R"(","arguments":{"message":")" + o_.message + R"("}}})";
  }

  void send_call(std::size_t i) {
    Conn& c = conns_[i];
    if (now_ns() >= measure_to_) return;
    c.in_flight_id = c.next_id++;
    c.out = ep_.request("POST", call_body(c.in_flight_id), c.session, true);
    c.out_off = 0;
    c.busy = true;
    c.sent = now_ns();
    flush(i);
  }

  void flush(std::size_t i) {
    Conn& c = conns_[i];
    while (c.out_off < c.out.size()) {
      ssize_t w = send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
      if (w > 0) {
        c.out_off += static_cast<std::size_t>(w);
        continue;
      }
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        arm(i, true);
        return;
      }
      fail(i);
      return;
    }
    arm(i, false);
  }

  // The connection broke: count the call in flight as an error, reconnect (the session lives on
  // the server, not on the connection) and go on.
  void fail(std::size_t i) {
    Conn& c = conns_[i];
    if (c.busy && c.sent >= measure_from_ && c.sent < measure_to_) ++errors_;
    ++reconnects_;
    epoll_ctl(ep_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
    close(c.fd);
    c.fd = ep_.connect_blocking();
    c.in.clear();
    c.busy = false;
    arm(i);
    send_call(i);
  }

  void on_readable(std::size_t i) {
    Conn& c = conns_[i];
    char buf[65536];
    bool eof = false;
    for (;;) {
      ssize_t r = recv(c.fd, buf, sizeof buf, 0);
      if (r > 0) {
        c.in.append(buf, static_cast<std::size_t>(r));
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      eof = true;  // closed or reset
      break;
    }
    Head head;
    std::string body;
    if (c.busy && take_response(c.in, eof, head, body)) {
      complete(i, head, body);
      if (head.close || eof) {
        ++reconnects_;
        epoll_ctl(ep_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
        close(c.fd);
        c.fd = ep_.connect_blocking();
        c.in.clear();
        arm(i);
      }
      send_call(i);
      return;
    }
    if (eof) fail(i);
  }

  // Checks the answer: HTTP 200 and, as JSON or as the last message of an SSE stream, the
  // JSON-RPC response with this call's id and the echoed text.
  void complete(std::size_t i, const Head& head, const std::string& body) {
    Conn& c = conns_[i];
    u64 t = now_ns();
    c.busy = false;
    ++answered_;
    bool sse = head.content_type.find("text/event-stream") != std::string::npos;
    (sse ? sse_ : json_) += 1;
    std::string want_id = "\"id\":" + std::to_string(c.in_flight_id);
    bool ok = head.status == 200 && body.find(want_id) != std::string::npos &&
              body.find("Echo: " + o_.message) != std::string::npos &&
              body.find("\"error\"") == std::string::npos;
    if (c.sent < measure_from_ || c.sent >= measure_to_) return;
    if (!ok) {
      ++bad_;
      if (first_bad_.empty()) {
        first_bad_ = "HTTP " + std::to_string(head.status) + " " + body.substr(0, 300);
        for (auto& ch : first_bad_) {
          if (ch == '\n' || ch == '\r') ch = ' ';
        }
      }
      return;
    }
    lat_.push_back(t - c.sent);
  }

  const Options& o_;
  Endpoint ep_;
  int ep_fd_ = -1;
  std::vector<Conn> conns_;
  std::vector<u64> lat_;
  u64 measure_from_ = 0;
  u64 measure_to_ = 0;
  u64 errors_ = 0, bad_ = 0, reconnects_ = 0, sse_ = 0, json_ = 0;
  u64 answered_ = 0;  // every answer, warm-up included
  std::string first_bad_;
};

}  // namespace

int main(int argc, char** argv) {
  Options o = parse_args(argc, argv);
  if (o.sessions > 0) return run_sessions(o);
  Load load(o);
  return load.run();
}
