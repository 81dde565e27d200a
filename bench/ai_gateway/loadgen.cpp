// A small open-loop HTTP/1.1 load generator for bench/ai_gateway/run.sh: sends POST requests
// at a fixed rate over a pool of keep-alive connections and reports latency percentiles.
// wrk has no rate control and Debian has no wrk2, hence this file.
//
// Latency is measured from the moment a request was *scheduled* (as wrk2 does), so a server
// that falls behind shows its queueing delay instead of hiding it (coordinated omission);
// the time from the actual send is reported too ("raw").
//
// Build: g++ -O2 -std=c++20 -o loadgen loadgen.cpp
// Usage: loadgen --url http://127.0.0.1:PORT/path --rate N --duration S [--warmup S]
//                [--connections N] [--body-file F] [-H 'name: value']... [--capture NAME]
// Output: one `key=value` per line (latencies in microseconds).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

using u64 = std::uint64_t;

u64 now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<u64>(ts.tv_sec) * 1'000'000'000ULL + static_cast<u64>(ts.tv_nsec);
}

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "loadgen: %s\n", msg.c_str());
  std::exit(2);
}

struct Options {
  std::string host = "127.0.0.1";
  int port = 80;
  std::string path = "/";
  double rate = 1000;
  double duration = 10;
  double warmup = 1;
  double drain = 3;
  int connections = 64;
  std::string body;
  std::vector<std::string> headers;
  std::string capture;  // a response header whose numeric values are summarised
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
    } else if (a == "--rate") {
      o.rate = std::atof(need(i).c_str());
    } else if (a == "--duration") {
      o.duration = std::atof(need(i).c_str());
    } else if (a == "--warmup") {
      o.warmup = std::atof(need(i).c_str());
    } else if (a == "--drain") {
      o.drain = std::atof(need(i).c_str());
    } else if (a == "--connections") {
      o.connections = std::atoi(need(i).c_str());
    } else if (a == "--body-file") {
      std::ifstream f(need(i), std::ios::binary);
      if (!f) die("cannot read the body file");
      std::stringstream ss;
      ss << f.rdbuf();
      o.body = ss.str();
    } else if (a == "-H") {
      o.headers.push_back(need(i));
    } else if (a == "--capture") {
      o.capture = need(i);
    } else {
      die("unknown argument " + a);
    }
  }
  if (o.rate <= 0 || o.duration <= 0 || o.connections <= 0) die("rate, duration, connections > 0");
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

// What we know about the response being read on one connection.
struct Head {
  std::size_t header_end = 0;  // offset of the first body byte
  int status = 0;
  bool chunked = false;
  bool close = false;
  std::optional<std::size_t> content_length;
  std::optional<double> captured;
};

// Parses the header block in `in` (which must contain "\r\n\r\n"). False when malformed.
bool parse_head(const std::string& in, std::size_t end, const std::string& capture, Head& h) {
  std::string_view all(in.data(), end);
  std::size_t eol = all.find("\r\n");
  std::string_view status_line = all.substr(0, eol);
  if (status_line.size() < 12 || status_line.substr(0, 5) != "HTTP/") return false;
  h.status = std::atoi(std::string(status_line.substr(9, 3)).c_str());
  std::size_t pos = eol + 2;
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
    } else if (!capture.empty() && iequals(name, capture)) {
      h.captured = std::atof(std::string(value).c_str());
    }
  }
  h.header_end = end + 4;
  return true;
}

// Length of the complete chunked body starting at `from`, or nullopt when more bytes are needed.
// Trailers are not expected (and not supported).
std::optional<std::size_t> chunked_length(const std::string& in, std::size_t from) {
  std::size_t pos = from;
  for (;;) {
    std::size_t eol = in.find("\r\n", pos);
    if (eol == std::string::npos) return std::nullopt;
    std::size_t size = std::strtoull(in.c_str() + pos, nullptr, 16);
    if (size == 0) {
      if (in.size() < eol + 4) return std::nullopt;
      return eol + 4 - from;  // "0\r\n\r\n"
    }
    pos = eol + 2 + size + 2;
    if (in.size() < pos) return std::nullopt;
  }
}

struct Conn {
  int fd = -1;
  bool busy = false;
  u64 scheduled = 0;  // when the request in flight was due
  u64 sent = 0;       // when it was actually written
  std::string in;
  std::size_t out_off = 0;
  std::optional<Head> head;
};

struct Stats {
  std::vector<u64> corrected, raw;
  std::vector<double> captured;
  u64 ok = 0, non2xx = 0, errors = 0, reconnects = 0;
  u64 done_in_window = 0;  // responses that arrived while requests were being sent
};

class Generator {
 public:
  explicit Generator(Options o) : o_(std::move(o)) {
    std::string req = "POST " + o_.path + " HTTP/1.1\r\nHost: " + o_.host + ":" +
                      std::to_string(o_.port) + "\r\n";
    bool has_ct = false;
    for (const auto& h : o_.headers) {
      if (iequals(trim(std::string_view(h).substr(0, h.find(':'))), "content-type")) has_ct = true;
      req += h + "\r\n";
    }
    if (!has_ct) req += "Content-Type: application/json\r\n";
    req += "Content-Length: " + std::to_string(o_.body.size()) + "\r\n\r\n" + o_.body;
    request_ = std::move(req);
    addr_.sin_family = AF_INET;
    addr_.sin_port = htons(static_cast<std::uint16_t>(o_.port));
    std::string host = o_.host == "localhost" ? "127.0.0.1" : o_.host;
    if (inet_pton(AF_INET, host.c_str(), &addr_.sin_addr) != 1) die("host must be an IPv4 address");
    ep_ = epoll_create1(0);
    conns_.resize(static_cast<std::size_t>(o_.connections));
    for (std::size_t i = 0; i < conns_.size(); ++i) open_conn(i);
  }

  int run() {
    const u64 interval = static_cast<u64>(1e9 / o_.rate);
    const u64 start = now_ns();
    const u64 measure_from = start + static_cast<u64>(o_.warmup * 1e9);
    const u64 stop_sending = measure_from + static_cast<u64>(o_.duration * 1e9);
    const u64 hard_stop = stop_sending + static_cast<u64>(o_.drain * 1e9);
    measure_from_ = measure_from;
    stop_sending_ = stop_sending;

    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    itimerspec its{};
    its.it_value.tv_nsec = 1;
    its.it_interval.tv_sec = static_cast<time_t>(interval / 1'000'000'000ULL);
    its.it_interval.tv_nsec = static_cast<long>(interval % 1'000'000'000ULL);
    timerfd_settime(tfd, 0, &its, nullptr);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kTimer;
    epoll_ctl(ep_, EPOLL_CTL_ADD, tfd, &ev);

    u64 issued = 0;
    bool sending = true;
    std::vector<epoll_event> events(static_cast<std::size_t>(o_.connections) + 1);
    for (;;) {
      u64 t = now_ns();
      if (t >= hard_stop) break;
      if (!sending && pending_.empty() && in_flight() == 0) break;
      int n = epoll_wait(ep_, events.data(), static_cast<int>(events.size()), 50);
      if (n < 0 && errno != EINTR) die(std::string("epoll_wait: ") + std::strerror(errno));
      for (int k = 0; k < n; ++k) {
        if (events[k].data.u64 == kTimer) {
          u64 expirations = 0;
          if (read(tfd, &expirations, sizeof expirations) != sizeof expirations) continue;
          if (!sending) continue;
          for (u64 e = 0; e < expirations; ++e) {
            u64 due = start + issued * interval;
            if (due >= stop_sending) {
              sending = false;
              break;
            }
            pending_.push_back(due);
            ++issued;
          }
        } else {
          auto i = static_cast<std::size_t>(events[k].data.u64);
          if (events[k].events & EPOLLOUT) flush(i);
          if (events[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(i);
        }
      }
      dispatch();
    }
    close(tfd);

    const double secs = o_.duration;
    u64 measured_pending = 0;
    for (u64 due : pending_) measured_pending += due >= measure_from ? 1 : 0;
    for (const auto& c : conns_) measured_pending += (c.busy && c.scheduled >= measure_from) ? 1 : 0;
    std::printf("target_rate=%.0f\n", o_.rate);
    std::printf("achieved_rate=%.1f\n", static_cast<double>(stats_.done_in_window) / secs);
    std::printf("completed=%zu\n", stats_.corrected.size());
    std::printf("unfinished=%llu\n", static_cast<unsigned long long>(measured_pending));
    std::printf("non2xx=%llu\nerrors=%llu\nreconnects=%llu\n",
                static_cast<unsigned long long>(stats_.non2xx),
                static_cast<unsigned long long>(stats_.errors),
                static_cast<unsigned long long>(stats_.reconnects));
    print_percentiles("", stats_.corrected);
    print_percentiles("raw_", stats_.raw);
    if (!o_.capture.empty() && !stats_.captured.empty()) {
      auto& v = stats_.captured;
      std::sort(v.begin(), v.end());
      std::printf("capture_p50=%.0f\ncapture_p99=%.0f\ncapture_count=%zu\n", pick(v, 0.50),
                  pick(v, 0.99), v.size());
    }
    return 0;
  }

 private:
  static constexpr u64 kTimer = ~0ULL;

  template <typename T>
  static double pick(const std::vector<T>& sorted, double p) {
    if (sorted.empty()) return 0;
    auto idx = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
    idx = std::clamp<std::size_t>(idx, 1, sorted.size()) - 1;
    return static_cast<double>(sorted[idx]);
  }

  static void print_percentiles(const char* prefix, std::vector<u64>& v) {
    std::sort(v.begin(), v.end());
    const std::pair<const char*, double> ps[] = {
        {"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}, {"p999", 0.999}};
    for (const auto& [name, p] : ps) std::printf("%s%s_us=%.0f\n", prefix, name, pick(v, p) / 1e3);
    std::printf("%smax_us=%.0f\n", prefix, v.empty() ? 0.0 : static_cast<double>(v.back()) / 1e3);
  }

  std::size_t in_flight() const {
    std::size_t n = 0;
    for (const auto& c : conns_) n += c.busy ? 1 : 0;
    return n;
  }

  void open_conn(std::size_t i) {
    Conn& c = conns_[i];
    if (c.fd >= 0) {
      epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
      close(c.fd);
    }
    c = Conn{};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die(std::string("socket: ") + std::strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    // Loopback: a blocking connect is immediate.
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr_), sizeof addr_) != 0) {
      die(std::string("connect: ") + std::strerror(errno));
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c.fd = fd;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  }

  void dispatch() {
    for (std::size_t i = 0; i < conns_.size() && !pending_.empty(); ++i) {
      Conn& c = conns_[i];
      if (c.busy) continue;
      c.busy = true;
      c.scheduled = pending_.front();
      pending_.pop_front();
      c.sent = now_ns();
      c.out_off = 0;
      flush(i);
    }
  }

  void flush(std::size_t i) {
    Conn& c = conns_[i];
    while (c.out_off < request_.size()) {
      ssize_t w = send(c.fd, request_.data() + c.out_off, request_.size() - c.out_off, MSG_NOSIGNAL);
      if (w > 0) {
        c.out_off += static_cast<std::size_t>(w);
        continue;
      }
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLOUT;
        ev.data.u64 = i;
        epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
        return;
      }
      fail(i);
      return;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
  }

  void fail(std::size_t i) {
    if (conns_[i].busy && conns_[i].scheduled >= measure_from_) ++stats_.errors;
    ++stats_.reconnects;
    open_conn(i);
  }

  void on_readable(std::size_t i) {
    Conn& c = conns_[i];
    char buf[65536];
    for (;;) {
      ssize_t r = recv(c.fd, buf, sizeof buf, 0);
      if (r > 0) {
        c.in.append(buf, static_cast<std::size_t>(r));
        if (static_cast<std::size_t>(r) < sizeof buf) break;
        continue;
      }
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (r < 0 && errno == EINTR) continue;
      fail(i);  // closed or reset
      return;
    }
    while (c.busy && try_complete(i)) {
    }
  }

  // True when a whole response was consumed.
  bool try_complete(std::size_t i) {
    Conn& c = conns_[i];
    if (!c.head) {
      auto end = c.in.find("\r\n\r\n");
      if (end == std::string::npos) return false;
      Head h;
      if (!parse_head(c.in, end, o_.capture, h)) {
        fail(i);
        return false;
      }
      c.head = h;
    }
    const Head& h = *c.head;
    std::size_t body_len = 0;
    if (h.chunked) {
      auto len = chunked_length(c.in, h.header_end);
      if (!len) return false;
      body_len = *len;
    } else if (h.content_length) {
      if (c.in.size() < h.header_end + *h.content_length) return false;
      body_len = *h.content_length;
    } else {
      return false;  // read until close: not used by the servers measured here
    }
    u64 t = now_ns();
    if (t >= measure_from_ && t < stop_sending_) ++stats_.done_in_window;
    if (c.scheduled >= measure_from_) {
      stats_.corrected.push_back(t - c.scheduled);
      stats_.raw.push_back(t - c.sent);
      if (h.status >= 200 && h.status < 300) {
        ++stats_.ok;
      } else {
        ++stats_.non2xx;
      }
      if (h.captured) stats_.captured.push_back(*h.captured);
    }
    bool close_after = h.close;
    c.in.erase(0, h.header_end + body_len);
    c.head.reset();
    c.busy = false;
    if (close_after) {
      ++stats_.reconnects;
      open_conn(i);
    }
    return true;
  }

  Options o_;
  std::string request_;
  sockaddr_in addr_{};
  int ep_ = -1;
  std::vector<Conn> conns_;
  std::deque<u64> pending_;
  Stats stats_;
  u64 measure_from_ = 0;
  u64 stop_sending_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  Generator g(parse_args(argc, argv));
  return g.run();
}
