// The outbound HTTP client against agentd's own server on port 0: keep-alive reuse, streamed
// bodies, every deadline, TLS verification, stale pooled connections, proxies.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <future>
#include <thread>
#include <vector>

#include "agentd/net/client.hpp"
#include "agentd/net/server.hpp"
#include "agentd/net/sse.hpp"
#include "support/tls_cert.hpp"

namespace agentd::test {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using net::Request;
using net::Response;

asio::awaitable<Response> sleep_then(std::chrono::milliseconds d, Response r) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
  co_return r;
}

asio::awaitable<void> tick_events(std::shared_ptr<net::SseStream> s, int n,
                                  std::chrono::milliseconds gap) {
  for (int i = 0; i < n; ++i) {
    asio::steady_timer t(co_await asio::this_coro::executor, gap);
    co_await t.async_wait(asio::use_awaitable);
    s->push({.id = {}, .event = {}, .data = "tick " + std::to_string(i), .retry_ms = {}});
  }
}

// Routes: /hello, /echo (body and selected headers back), /slow?ms=N, /events?n=N&gap=MS,
// /big (1 MiB). Also works as a plain-http forward proxy when a request carries an absolute
// target (it answers itself, saying so).
asio::awaitable<Response> handle(Request& req) {
  if (req.target.starts_with("http://")) {
    co_return Response::text(200, "proxied " + req.target);
  }
  if (req.path == "/hello") co_return Response::text(200, "hello");
  if (req.path == "/echo") {
    std::string out = req.method + " " + req.body + " ua=" +
                      std::string(req.headers.get("user-agent").value_or("")) +
                      " x=" + std::string(req.headers.get("x-test").value_or(""));
    co_return Response::text(200, out);
  }
  if (req.path == "/slow") {
    auto ms = std::stoi(req.query_param("ms").value_or("1000"));
    co_return co_await sleep_then(std::chrono::milliseconds(ms), Response::text(200, "late"));
  }
  if (req.path == "/events") {
    int n = std::stoi(req.query_param("n").value_or("3"));
    auto gap = std::chrono::milliseconds(std::stoi(req.query_param("gap").value_or("20")));
    co_return Response::stream([n, gap](std::shared_ptr<net::SseStream> s) {
      return tick_events(std::move(s), n, gap);
    });
  }
  if (req.path == "/big") co_return Response::text(200, std::string(1 << 20, 'x'));
  co_return Response::error(404, "no");
}

class Server {
 public:
  explicit Server(bool tls = false, net::ServerConfig config = {}) {
    config.listeners = {{"127.0.0.1", 0, tls}};
    config.access_log = false;
    if (tls) {
      cert_ = make_test_cert();
      config.tls = net::TlsConfig{cert_.cert_file, cert_.key_file, "1.2"};
    }
    server_ = net::make_http_server(io_, config, handle, metrics_);
    port_ = server_->start().at(0).port;
    thread_ = std::thread([this] { io_.run(); });
  }
  ~Server() {
    io_.stop();
    thread_.join();
  }
  std::uint16_t port() const { return port_; }
  std::string url(const std::string& path, bool tls = false) const {
    return std::string(tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_) + path;
  }
  const TestCert& cert() const { return cert_; }

 private:
  asio::io_context io_{1};
  core::Registry metrics_;
  TestCert cert_;
  std::unique_ptr<net::HttpServer> server_;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

// Runs one coroutine on a fresh loop with the client, with a hard time limit.
template <class F>
auto run(net::ClientConfig config, F body) {
  asio::io_context io(1);
  core::Registry metrics;
  auto client = net::make_http_client(io.get_executor(), std::move(config), metrics);
  using R = typename decltype(body(*client, metrics))::value_type;
  std::promise<R> out;
  asio::co_spawn(io, body(*client, metrics), [&](std::exception_ptr e, R r) {
    if (e) {
      out.set_exception(e);
    } else {
      out.set_value(std::move(r));
    }
  });
  io.run_for(20s);
  auto f = out.get_future();
  EXPECT_EQ(f.wait_for(0s), std::future_status::ready) << "coroutine did not finish in time";
  return f.get();
}

net::ClientRequest get(std::string url) {
  net::ClientRequest r;
  r.url = std::move(url);
  return r;
}

TEST(HttpClient, KeepAliveReusesOneConnection) {
  Server s;
  auto out = run({}, [&](net::HttpClient& c, core::Registry& m) -> asio::awaitable<std::string> {
    std::string bodies;
    for (int i = 0; i < 3; ++i) {
      auto r = co_await c.request(get(s.url("/hello")));
      if (!r) co_return "error: " + r.error().message;
      bodies += std::to_string(r->status) + ":" + r->body + " ";
    }
    bodies += "idle=" + std::to_string(c.idle_connections());
    auto text = m.render();
    bodies += text.find("agentd_http_client_connections_opened_total{origin=\"http://127.0.0.1:" +
                        std::to_string(s.port()) + "\"} 1") != std::string::npos
                  ? " opened=1"
                  : " opened!=1";
    co_return bodies;
  });
  EXPECT_EQ(out, "200:hello 200:hello 200:hello idle=1 opened=1");
}

TEST(HttpClient, PostsBodiesWithHeadersAndADefaultUserAgent) {
  Server s;
  auto out = run({}, [&](net::HttpClient& c, core::Registry&) -> asio::awaitable<std::string> {
    net::ClientRequest r;
    r.method = "POST";
    r.url = s.url("/echo");
    r.body = "payload";
    r.headers.set("x-test", "yes");
    auto res = co_await c.request(std::move(r));
    co_return res ? res->body : res.error().message;
  });
  EXPECT_EQ(out, "POST payload ua=agentd x=yes");
}

TEST(HttpClient, StreamsAnEventStreamPieceByPiece) {
  Server s;
  auto out = run({}, [&](net::HttpClient& c, core::Registry&)
                         -> asio::awaitable<std::vector<std::string>> {
    std::vector<std::string> events;
    auto st = co_await c.open(get(s.url("/events?n=4&gap=30")));
    if (!st) co_return events;
    net::SseParser parser;
    int reads = 0;
    for (;;) {
      auto piece = co_await (*st)->read();
      if (!piece || piece->empty()) break;
      ++reads;
      for (auto& e : parser.feed(*piece)) events.push_back(e.data);
    }
    events.push_back("reads>=4:" + std::string(reads >= 4 ? "yes" : "no"));
    co_return events;
  });
  ASSERT_EQ(out.size(), 5u);
  EXPECT_EQ(out[0], "tick 0");
  EXPECT_EQ(out[3], "tick 3");
  EXPECT_EQ(out[4], "reads>=4:yes");  // pieces arrived as they were sent, not all at the end
}

// A raw HTTP/1.1 server on a thread: for each of `answers` requests on one connection it
// reads the request head and writes the answer's pieces with a pause between them.
class RawServer {
 public:
  explicit RawServer(std::vector<std::vector<std::string>> answers) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 4), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this, answers = std::move(answers)] {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      for (const auto& pieces : answers) {
        std::string head;
        char ch;
        while (head.find("\r\n\r\n") == std::string::npos && ::read(c, &ch, 1) == 1) head += ch;
        for (const auto& p : pieces) {
          if (::write(c, p.data(), p.size()) != static_cast<ssize_t>(p.size())) break;
          std::this_thread::sleep_for(15ms);
        }
      }
      std::this_thread::sleep_for(200ms);
      ::close(c);
    });
  }
  ~RawServer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  std::uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

// Body bytes are taken from what the connection already read, and a wait holds no body
// buffer: pieces split inside a chunk header, inside chunk data and inside the final chunk
// must still come out whole and in order, and the connection must be reusable after.
TEST(HttpClient, ChunkedAndSplitBodiesComeOutWholeAndTheConnectionIsReused) {
  RawServer raw({
      {"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
       "lo\r\n1", "4\r\n0123456789", "0123456789\r\n3\r\nabc\r\n0\r", "\n\r\n"},  // 0x14 = 20
      {"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello", " world"},
  });
  auto out = run({}, [&](net::HttpClient& c, core::Registry& m) -> asio::awaitable<std::string> {
    std::string got;
    auto st = co_await c.open(get(raw.url("/a")));
    if (!st) co_return "open: " + st.error().message;
    for (int i = 0; i < 100; ++i) {
      auto piece = co_await (*st)->read();
      if (!piece) co_return "read: " + piece.error().message;
      if (piece->empty()) break;
      got += *piece + "|";
    }
    st->reset();  // done: back to the pool
    auto second = co_await c.request(get(raw.url("/b")));
    got += second ? second->body : "second: " + second.error().message;
    bool one = m.render().find("connections_opened_total{origin=\"http://127.0.0.1:" +
                               std::to_string(raw.port()) + "\"} 1\n") != std::string::npos;
    co_return got + (one ? " (one connection)" : " (reconnected)");
  });
  // Each piece is what had arrived when it was read: the split points show through.
  std::string joined;
  for (char ch : out) {
    if (ch != '|') joined += ch;
  }
  EXPECT_EQ(joined, "hello01234567890123456789abchello world (one connection)") << out;
  EXPECT_NE(out.find("hel|"), std::string::npos) << out;  // the first piece before the rest came
}

TEST(HttpClient, EachDeadlineNamesItsPhase) {
  Server s;
  auto out = run({}, [&](net::HttpClient& c, core::Registry&) -> asio::awaitable<std::string> {
    std::string phases;
    auto slow = get(s.url("/slow?ms=2000"));
    slow.timeouts.first_byte = 150ms;
    auto r1 = co_await c.request(slow);
    phases += r1 ? "ok " : r1.error().phase + " ";
    auto idle = get(s.url("/events?n=2&gap=1000"));
    idle.timeouts.idle = 150ms;
    auto r2 = co_await c.request(idle);
    phases += r2 ? "ok " : r2.error().phase + " ";
    auto total = get(s.url("/events?n=10&gap=100"));
    total.timeouts.total = 350ms;
    auto r3 = co_await c.request(total);
    phases += r3 ? "ok" : r3.error().phase;
    co_return phases;
  });
  EXPECT_EQ(out, "first_byte idle total");
}

TEST(HttpClient, ConnectionRefusedAndBadUrlsAreClearErrors) {
  std::uint16_t dead_port;
  {
    Server s;
    dead_port = s.port();
  }
  auto out = run({}, [&](net::HttpClient& c, core::Registry&) -> asio::awaitable<std::string> {
    auto r = co_await c.request(get("http://127.0.0.1:" + std::to_string(dead_port) + "/"));
    std::string a = r ? "ok" : r.error().message;
    auto b = co_await c.request(get("gopher://x/"));
    co_return a + " | " + (b ? "ok" : b.error().message);
  });
  EXPECT_NE(out.find("cannot connect to http://127.0.0.1:"), std::string::npos) << out;
  EXPECT_NE(out.find("not an http(s) URL: gopher://x/"), std::string::npos) << out;
}

TEST(HttpClient, TlsVerifiesThePeer) {
  Server s(true);
  net::ClientConfig trusted;
  trusted.ca_file = s.cert().cert_file;
  auto ok = run(trusted, [&](net::HttpClient& c, core::Registry&) -> asio::awaitable<std::string> {
    auto r = co_await c.request(get(s.url("/hello", true)));
    auto r2 = co_await c.request(get(s.url("/hello", true)));
    co_return (r ? r->body : r.error().message) + " " + (r2 ? r2->body : r2.error().message) +
        " idle=" + std::to_string(c.idle_connections());
  });
  EXPECT_EQ(ok, "hello hello idle=1");
  auto bad = run({}, [&](net::HttpClient& c, core::Registry&) -> asio::awaitable<std::string> {
    auto r = co_await c.request(get(s.url("/hello", true)));
    co_return r ? "ok" : r.error().message;
  });
  EXPECT_NE(bad.find("TLS handshake with https://127.0.0.1"), std::string::npos) << bad;
}

TEST(HttpClient, AStalePooledConnectionIsReplacedTransparently) {
  net::ServerConfig sc;
  sc.idle_timeout = 100ms;  // the server closes idle keep-alive connections quickly
  Server s(false, sc);
  auto out = run({}, [&](net::HttpClient& c, core::Registry& m) -> asio::awaitable<std::string> {
    auto r1 = co_await c.request(get(s.url("/hello")));
    asio::steady_timer t(co_await asio::this_coro::executor, 400ms);
    co_await t.async_wait(asio::use_awaitable);
    auto r2 = co_await c.request(get(s.url("/hello")));
    auto text = m.render();
    bool two = text.find("connections_opened_total{origin=\"http://127.0.0.1:" +
                         std::to_string(s.port()) + "\"} 2") != std::string::npos;
    co_return std::string(r1 ? r1->body : "fail") + " " + (r2 ? r2->body : r2.error().message) +
        (two ? " reconnected" : " ?");
  });
  EXPECT_EQ(out, "hello hello reconnected");
}

TEST(HttpClient, ResponsesOverTheLimitAreRefused) {
  Server s;
  net::ClientConfig small;
  small.max_response_bytes = 64 * 1024;
  auto out = run(small, [&](net::HttpClient& c, core::Registry&) -> asio::awaitable<std::string> {
    auto r = co_await c.request(get(s.url("/big")));
    co_return r ? "ok" : r.error().message;
  });
  EXPECT_NE(out.find("too large"), std::string::npos) << out;
}

TEST(HttpClient, CancelAbandonsAPendingRead) {
  Server s;
  auto out = run({}, [&](net::HttpClient& c, core::Registry&) -> asio::awaitable<std::string> {
    auto st = co_await c.open(get(s.url("/events?n=5&gap=2000")));
    if (!st) co_return "open failed";
    auto* raw = st->get();
    asio::steady_timer t(co_await asio::this_coro::executor, 100ms);
    t.async_wait([raw](const boost::system::error_code& ec) {
      if (!ec) raw->cancel();
    });
    auto started = std::chrono::steady_clock::now();
    auto piece = co_await raw->read();
    bool quick = std::chrono::steady_clock::now() - started < 1500ms;
    co_return std::string(piece ? "data" : "cancelled") + (quick ? " quick" : " slow") +
        " idle=" + std::to_string(c.idle_connections());
  });
  EXPECT_EQ(out, "cancelled quick idle=0");
}

// A one-connection proxy on a raw socket: records the request line, answers with `reply`
// (a function of that line).
class MiniProxy {
 public:
  explicit MiniProxy(std::function<std::string(const std::string&)> reply) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 4);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this, reply] {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string in;
      char buf[4096];
      while (in.find("\r\n\r\n") == std::string::npos) {
        auto n = ::read(c, buf, sizeof buf);
        if (n <= 0) break;
        in.append(buf, static_cast<std::size_t>(n));
      }
      line_ = in.substr(0, in.find("\r\n"));
      auto out = reply(line_);
      (void)!::write(c, out.data(), out.size());
      ::close(c);
    });
  }
  ~MiniProxy() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    if (thread_.joinable()) thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // The request line, once the one exchange is over.
  const std::string& line() {
    if (thread_.joinable()) thread_.join();
    return line_;
  }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::string line_;
  std::thread thread_;
};

TEST(HttpClient, PlainHttpGoesThroughAProxyInAbsoluteForm) {
  MiniProxy proxy([](const std::string& line) {
    return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(line.size()) +
           "\r\nConnection: close\r\n\r\n" + line;
  });
  net::ClientConfig cfg;
  cfg.proxy = proxy.url();
  auto out = run(cfg, [&](net::HttpClient& c, core::Registry&) -> asio::awaitable<std::string> {
    auto r = co_await c.request(get("http://example.invalid:8080/path?q=1"));
    co_return r ? r->body : r.error().message;
  });
  EXPECT_EQ(out, "GET http://example.invalid:8080/path?q=1 HTTP/1.1");
}

TEST(HttpClient, HttpsThroughAProxyUsesConnectAndReportsARefusal) {
  MiniProxy proxy([](const std::string&) { return std::string("HTTP/1.1 403 Forbidden\r\n\r\n"); });
  net::ClientConfig cfg;
  cfg.proxy = proxy.url();
  auto out = run(cfg, [&](net::HttpClient& c, core::Registry&) -> asio::awaitable<std::string> {
    auto r = co_await c.request(get("https://api.example.invalid/v1/models"));
    co_return r ? "ok" : r.error().message;
  });
  EXPECT_EQ(proxy.line(), "CONNECT api.example.invalid:443 HTTP/1.1");
  EXPECT_NE(out.find("refused CONNECT api.example.invalid:443: 403"), std::string::npos) << out;
}

}  // namespace
}  // namespace agentd::test
