// The outbound HTTP(S) client on Beast: a keep-alive pool per origin, TLS with peer
// verification, HTTP proxies (absolute-form and CONNECT), and a deadline on every phase.
// This is the one translation unit that instantiates Beast's client-side I/O templates.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <spdlog/spdlog.h>

#include <deque>
#include <map>
#include <openssl/ssl.h>

#include "agentd/net/client.hpp"

namespace agentd::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kPiece = 16 * 1024;
// Kept beyond a body of known length: the next answer's headers on this connection then fit in
// the same first read as its body.
constexpr std::size_t kHeadRoom = 1024;

ClientError error(ClientError::Kind kind, std::string message, std::string phase = {}) {
  return ClientError{kind, std::move(phase), std::move(message)};
}

// One pooled connection: a plain or TLS stream and the read buffer that belongs to it.
struct Conn {
  std::string key;
  std::string origin;  // for messages and metrics
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;
  Clock::time_point idle_since{};
  bool reused = false;

  beast::tcp_stream& lowest() { return tls ? beast::get_lowest_layer(*tls) : *plain; }
  void close() {
    boost::system::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().close();
  }
};

// State shared by the client and every open stream (a stream may outlive the client).
struct Pool {
  asio::any_io_executor ex;
  ClientConfig config;
  ssl::context ssl{ssl::context::tls_client};
  std::map<std::string, std::deque<std::unique_ptr<Conn>>, std::less<>> idle;
  std::size_t idle_count = 0;
  core::Registry& metrics;

  Pool(asio::any_io_executor e, ClientConfig c, core::Registry& m)
      : ex(std::move(e)), config(std::move(c)), metrics(m) {}

  void release(std::unique_ptr<Conn> c) {
    auto& q = idle[c->key];
    if (q.size() >= config.max_idle_per_origin) {
      c->close();
      return;
    }
    c->idle_since = Clock::now();
    c->reused = true;
    // An idle connection keeps at most a piece-sized read buffer.
    if (c->buffer.capacity() > kPiece) c->buffer.shrink_to_fit();
    q.push_back(std::move(c));
    ++idle_count;
  }

  std::unique_ptr<Conn> take(const std::string& key) {
    auto it = idle.find(key);
    if (it == idle.end()) return nullptr;
    auto now = Clock::now();
    while (!it->second.empty()) {
      auto c = std::move(it->second.back());
      it->second.pop_back();
      --idle_count;
      if (now - c->idle_since < config.idle_keepalive && c->lowest().socket().is_open()) return c;
      c->close();
    }
    return nullptr;
  }

  void close_all() {
    for (auto& [k, q] : idle) {
      for (auto& c : q) c->close();
    }
    idle.clear();
    idle_count = 0;
  }
};

// Deadline bookkeeping: each phase has its own limit, all bounded by the total.
struct Deadline {
  Clock::time_point total_end;
  Clock::time_point phase_end;
  std::string phase;
  void start(std::string p, std::chrono::milliseconds limit) {
    phase = std::move(p);
    phase_end = std::min(total_end, Clock::now() + limit);
  }
  std::string which() const { return phase_end >= total_end ? "total" : phase; }
};

ClientError from_ec(const boost::system::error_code& ec, const Deadline& d,
                    const std::string& origin) {
  if (ec == beast::error::timeout) {
    return error(ClientError::Kind::timeout, "no answer from " + origin + " in time", d.which());
  }
  if (ec == asio::error::operation_aborted) {
    return error(ClientError::Kind::cancelled, "request to " + origin + " cancelled");
  }
  if (ec == http::error::body_limit || ec == http::error::header_limit) {
    return error(ClientError::Kind::too_large, "response from " + origin + " is too large");
  }
  if (ec == http::error::end_of_stream || ec == asio::error::eof ||
      ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
      ec == http::error::partial_message || ec == ssl::error::stream_truncated) {
    return error(ClientError::Kind::closed, origin + " closed the connection: " + ec.message());
  }
  if (ec.category() == make_error_code(http::error::bad_target).category()) {
    return error(ClientError::Kind::protocol, "malformed response from " + origin + ": " +
                                                  ec.message());
  }
  return error(ClientError::Kind::connect, origin + ": " + ec.message());
}

// Whether a failure on a reused keep-alive connection, before any response byte, means the
// server had already closed it (so one retry on a fresh connection is safe).
bool stale_connection(const ClientError& e) { return e.kind == ClientError::Kind::closed; }

class StreamImpl final : public ClientStream {
 public:
  StreamImpl(std::weak_ptr<Pool> pool, std::unique_ptr<Conn> conn,
             std::unique_ptr<http::response_parser<http::buffer_body>> parser, Deadline deadline,
             ClientTimeouts timeouts, std::uint64_t max_bytes)
      : pool_(std::move(pool)),
        conn_(std::move(conn)),
        parser_(std::move(parser)),
        deadline_(std::move(deadline)),
        timeouts_(timeouts),
        max_bytes_(max_bytes) {
    status_ = static_cast<int>(parser_->get().result_int());
    for (const auto& f : parser_->get()) headers_.add(f.name_string(), f.value());
    done_ = parser_->is_done();
    // A body of unknown length (an event stream) may wait long between chunks: its connection
    // does not hold the room an earlier answer's body left in its buffer (1,000 open streams).
    if (!done_ && !parser_->content_length() && conn_->buffer.capacity() > 1024) {
      conn_->buffer.shrink_to_fit();
    }
  }

  ~StreamImpl() override {
    if (!conn_) return;
    auto pool = pool_.lock();
    if (pool && done_ && !failed_ && parser_->get().keep_alive()) {
      pool->release(std::move(conn_));
    } else {
      conn_->close();
    }
  }

  int status() const noexcept override { return status_; }
  const Headers& headers() const noexcept override { return headers_; }

  asio::awaitable<ClientResult<std::string>> read() override {
    if (done_ || !conn_) co_return std::string();
    if (failed_) co_return error(ClientError::Kind::cancelled, "stream already failed");
    if (cancelled_) co_return error(ClientError::Kind::cancelled, "request cancelled");
    for (;;) {
      // Body bytes already read into the connection's buffer are taken without waiting.
      if (conn_->buffer.size() > 0) {
        auto piece = take_body();
        if (!piece) co_return piece.error();
        if (!piece->empty() || done_) co_return piece;
      }
      // Waits with no body buffer: the parser reads the socket into the connection's buffer
      // and stops (need_buffer) at the first body byte, so a stream waiting for its next
      // chunk holds no piece-sized buffer while it waits (1,000 idle streams held 16 MB).
      deadline_.start("idle", timeouts_.idle);
      conn_->lowest().expires_at(deadline_.phase_end);
      // A body of known length is read in one go (up to kPiece), not in the 512-byte steps a
      // buffer with no spare room reads: each step is a system call and a turn of the loop.
      // (An event stream has no length: it keeps the small buffer while it waits.)
      if (auto left = parser_->content_length_remaining(); left && *left > 0) {
        auto want = static_cast<std::size_t>(std::min<std::uint64_t>(*left, kPiece));
        auto& b = conn_->buffer;
        if (b.capacity() - b.size() < want) b.reserve(b.size() + want + kHeadRoom);
      }
      auto& body = parser_->get().body();
      body.data = nullptr;
      body.size = 0;
      boost::system::error_code ec;
      if (conn_->tls) {
        std::tie(ec, std::ignore) =
            co_await http::async_read_some(*conn_->tls, conn_->buffer, *parser_, kTuple);
      } else {
        std::tie(ec, std::ignore) =
            co_await http::async_read_some(*conn_->plain, conn_->buffer, *parser_, kTuple);
      }
      if (ec == http::error::need_buffer) ec = {};
      if (ec) {
        failed_ = true;
        if (cancelled_) co_return error(ClientError::Kind::cancelled, "request cancelled");
        co_return from_ec(ec, deadline_, conn_->origin);
      }
      done_ = parser_->is_done();
      if (done_) co_return std::string();
    }
  }

  // Parses what the connection's buffer holds into at most kPiece body bytes, without I/O.
  ClientResult<std::string> take_body() {
    std::string out(std::min(kPiece, conn_->buffer.size()), '\0');
    auto& body = parser_->get().body();
    body.data = out.data();
    body.size = out.size();
    while (conn_->buffer.size() > 0 && body.size > 0 && !parser_->is_done()) {
      boost::system::error_code ec;
      auto used = parser_->put(conn_->buffer.data(), ec);
      conn_->buffer.consume(used);
      if (ec == http::error::need_more || ec == http::error::need_buffer) break;
      if (ec) {
        failed_ = true;
        body.data = nullptr;
        body.size = 0;
        return from_ec(ec, deadline_, conn_->origin);
      }
      if (used == 0) break;
    }
    std::size_t n = out.size() - body.size;
    body.data = nullptr;
    body.size = 0;
    done_ = parser_->is_done();
    received_ += n;
    out.resize(n);
    return out;
  }

  asio::awaitable<ClientResult<std::string>> read_all() override {
    std::string out;
    for (;;) {
      auto piece = co_await read();
      if (!piece) co_return piece.error();
      if (piece->empty()) co_return out;
      if (out.size() + piece->size() > max_bytes_) {
        failed_ = true;
        co_return error(ClientError::Kind::too_large,
                        "response from " + conn_->origin + " is too large");
      }
      if (out.empty()) {
        out = std::move(*piece);
      } else {
        out += *piece;
      }
      if (done_) co_return out;
    }
  }

  void cancel() noexcept override {
    if (cancelled_ || !conn_) return;
    cancelled_ = true;
    failed_ = true;
    conn_->close();
  }

 private:
  std::weak_ptr<Pool> pool_;
  std::unique_ptr<Conn> conn_;
  std::unique_ptr<http::response_parser<http::buffer_body>> parser_;
  Deadline deadline_;
  ClientTimeouts timeouts_;
  std::uint64_t max_bytes_;
  int status_ = 0;
  Headers headers_;
  std::uint64_t received_ = 0;
  bool done_ = false;
  bool failed_ = false;
  bool cancelled_ = false;
};

class ClientImpl final : public HttpClient {
 public:
  ClientImpl(asio::any_io_executor ex, ClientConfig config, core::Registry& metrics)
      : pool_(std::make_shared<Pool>(std::move(ex), std::move(config), metrics)) {
    auto& ctx = pool_->ssl;
    ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                    ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    boost::system::error_code ec;
    ctx.set_default_verify_paths(ec);
    if (ec) spdlog::warn("http client: cannot load the system trust store: {}", ec.message());
    if (!pool_->config.ca_file.empty()) {
      ctx.load_verify_file(pool_->config.ca_file, ec);
      if (ec) {
        throw std::runtime_error("cannot load CA file " + pool_->config.ca_file + ": " +
                                 ec.message());
      }
    }
    ctx.set_verify_mode(pool_->config.verify_peer ? ssl::verify_peer : ssl::verify_none);
  }

  ~ClientImpl() override { pool_->close_all(); }

  asio::awaitable<ClientResult<ClientResponse>> request(ClientRequest req) override {
    auto s = co_await open(std::move(req));
    if (!s) co_return s.error();
    auto body = co_await (*s)->read_all();
    if (!body) co_return body.error();
    ClientResponse r;
    r.status = (*s)->status();
    r.headers = (*s)->headers();
    r.body = std::move(*body);
    co_return r;
  }

  asio::awaitable<ClientResult<std::unique_ptr<ClientStream>>> open(ClientRequest req) override {
    auto url = parse_url(req.url);
    if (!url) co_return error(ClientError::Kind::bad_url, "not an http(s) URL: " + req.url);
    std::string proxy_text = req.proxy.empty() ? pool_->config.proxy : req.proxy;
    if (proxy_text == "-") proxy_text.clear();
    std::optional<Url> proxy;
    if (!proxy_text.empty()) {
      proxy = parse_url(proxy_text);
      if (!proxy || proxy->tls()) {
        co_return error(ClientError::Kind::bad_url, "proxy must be http://host:port");
      }
    }
    Deadline deadline;
    deadline.total_end = Clock::now() + req.timeouts.total;
    std::string key = url->origin() + (proxy ? " via " + proxy->origin() : "");
    auto& outcome_ok = pool_->metrics.counter("agentd_http_client_requests_total",
                                              "Outbound HTTP requests by origin and outcome",
                                              {{"origin", url->origin()}, {"outcome", "ok"}});

    // A reused connection the server already closed fails before any response byte: then
    // one fresh connection is tried.
    for (int attempt = 0;; ++attempt) {
      std::unique_ptr<Conn> conn = attempt == 0 ? pool_->take(key) : nullptr;
      if (!conn) {
        auto c = co_await connect(*url, proxy, key, deadline, req.timeouts);
        if (!c) {
          count_failure(*url, c.error());
          co_return c.error();
        }
        conn = std::move(*c);
      }
      bool reused = conn->reused;
      auto r = co_await exchange(*conn, *url, proxy, req, deadline);
      if (!r) {
        conn->close();
        if (reused && stale_connection(r.error()) && attempt == 0) continue;
        count_failure(*url, r.error());
        co_return r.error();
      }
      outcome_ok.inc();
      std::unique_ptr<ClientStream> s = std::make_unique<StreamImpl>(
          pool_, std::move(conn), std::move(*r), deadline, req.timeouts,
          pool_->config.max_response_bytes);
      co_return s;
    }
  }

  std::size_t idle_connections() const noexcept override { return pool_->idle_count; }
  void close_idle() noexcept override { pool_->close_all(); }

 private:
  void count_failure(const Url& url, const ClientError& e) {
    static constexpr const char* kNames[] = {"bad_url",  "resolve",   "connect", "tls",
                                             "timeout",  "protocol",  "too_large", "closed",
                                             "cancelled"};
    pool_->metrics
        .counter("agentd_http_client_requests_total", "Outbound HTTP requests by origin and outcome",
                 {{"origin", url.origin()}, {"outcome", kNames[static_cast<int>(e.kind)]}})
        .inc();
  }

  asio::awaitable<ClientResult<std::unique_ptr<Conn>>> connect(const Url& url,
                                                              const std::optional<Url>& proxy,
                                                              const std::string& key,
                                                              Deadline& deadline,
                                                              const ClientTimeouts& t) {
    using namespace asio::experimental::awaitable_operators;
    const Url& hop = proxy ? *proxy : url;
    deadline.start("connect", t.connect);
    auto conn = std::make_unique<Conn>();
    conn->key = key;
    conn->origin = url.origin();
    conn->plain.emplace(pool_->ex);

    // Resolve (numeric hosts skip the resolver), racing the phase deadline.
    std::vector<tcp::endpoint> endpoints;
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(hop.host, ec);
    if (!ec) {
      endpoints.emplace_back(addr, hop.port);
    } else {
      tcp::resolver resolver(pool_->ex);
      asio::steady_timer timer(pool_->ex, deadline.phase_end);
      auto r = co_await (resolver.async_resolve(hop.host, std::to_string(hop.port), kTuple) ||
                         timer.async_wait(kTuple));
      if (r.index() == 1) {
        co_return error(ClientError::Kind::timeout, "resolving " + hop.host + " took too long",
                        deadline.which());
      }
      auto [rec, results] = std::get<0>(r);
      if (rec) {
        co_return error(ClientError::Kind::resolve,
                        "cannot resolve " + hop.host + ": " + rec.message());
      }
      for (const auto& e : results) endpoints.push_back(e.endpoint());
    }
    conn->plain->expires_at(deadline.phase_end);
    auto [cec, ep] = co_await conn->plain->async_connect(endpoints, kTuple);
    if (cec) {
      if (cec == beast::error::timeout) {
        co_return error(ClientError::Kind::timeout, "connecting to " + hop.origin() + " took too long",
                        deadline.which());
      }
      co_return error(ClientError::Kind::connect,
                      "cannot connect to " + hop.origin() + ": " + cec.message());
    }
    conn->plain->socket().set_option(tcp::no_delay(true), ec);
    pool_->metrics
        .counter("agentd_http_client_connections_opened_total",
                 "Outbound connections opened, by origin", {{"origin", url.origin()}})
        .inc();

    if (proxy && url.tls()) {
      // Tunnel: CONNECT host:port, expect 2xx, then TLS to the real host through it.
      http::request<http::empty_body> creq{http::verb::connect, url.host_header(), 11};
      std::string authority = (url.host.find(':') != std::string::npos ? "[" + url.host + "]"
                                                                        : url.host) +
                              ":" + std::to_string(url.port);
      creq.target(authority);
      creq.set(http::field::host, authority);
      auto [wec, wn] = co_await http::async_write(*conn->plain, creq, kTuple);
      if (wec) co_return from_ec(wec, deadline, proxy->origin());
      http::response_parser<http::empty_body> cp;
      cp.skip(true);  // a CONNECT answer has no body
      auto [rec, rn] = co_await http::async_read_header(*conn->plain, conn->buffer, cp, kTuple);
      if (rec) co_return from_ec(rec, deadline, proxy->origin());
      if (cp.get().result_int() / 100 != 2) {
        co_return error(ClientError::Kind::connect,
                        "proxy " + proxy->origin() + " refused CONNECT " + authority + ": " +
                            std::to_string(cp.get().result_int()));
      }
    }

    if (url.tls()) {
      conn->tls.emplace(std::move(*conn->plain), pool_->ssl);
      conn->plain.reset();
      if (!SSL_set_tlsext_host_name(conn->tls->native_handle(), url.host.c_str())) {
        co_return error(ClientError::Kind::tls, "cannot set SNI for " + url.host);
      }
      if (pool_->config.verify_peer) {
        conn->tls->set_verify_callback(ssl::host_name_verification(url.host));
      }
      beast::get_lowest_layer(*conn->tls).expires_at(deadline.phase_end);
      auto [hec] = co_await conn->tls->async_handshake(ssl::stream_base::client, kTuple);
      if (hec) {
        if (hec == beast::error::timeout) {
          co_return error(ClientError::Kind::timeout, "TLS handshake with " + url.origin() +
                                                          " took too long",
                          deadline.which());
        }
        co_return error(ClientError::Kind::tls,
                        "TLS handshake with " + url.origin() + " failed: " + hec.message());
      }
    }
    co_return conn;
  }

  template <class Stream>
  asio::awaitable<ClientResult<std::unique_ptr<http::response_parser<http::buffer_body>>>>
  exchange_on(Stream& stream, Conn& conn, const Url& url, const std::optional<Url>& proxy,
              const ClientRequest& req, Deadline& deadline) {
    http::request<http::string_body> hreq;
    hreq.method_string(req.method);
    hreq.version(11);
    // Plain http through a proxy uses the absolute form.
    hreq.target(proxy && !url.tls() ? url.scheme + "://" + url.host_header() + url.target
                                    : url.target);
    for (const auto& h : req.headers) hreq.insert(h.name, h.value);
    if (!req.headers.get("host")) hreq.set(http::field::host, url.host_header());
    if (!req.headers.get("user-agent")) hreq.set(http::field::user_agent, pool_->config.user_agent);
    hreq.body() = req.body;
    if (!req.body.empty() || req.method == "POST" || req.method == "PUT" || req.method == "PATCH") {
      hreq.prepare_payload();
    }
    hreq.keep_alive(true);

    deadline.start("first_byte", req.timeouts.first_byte);
    conn.lowest().expires_at(deadline.phase_end);
    auto [wec, wn] = co_await http::async_write(stream, hreq, kTuple);
    if (wec) co_return from_ec(wec, deadline, url.origin());

    auto parser = std::make_unique<http::response_parser<http::buffer_body>>();
    parser->body_limit(pool_->config.max_response_bytes);
    parser->header_limit(64 * 1024);
    if (req.method == "HEAD") parser->skip(true);
    for (;;) {
      auto [rec, rn] = co_await http::async_read_header(stream, conn.buffer, *parser, kTuple);
      if (rec) co_return from_ec(rec, deadline, url.origin());
      // 1xx answers (100 Continue) are skipped: the real answer follows.
      if (parser->get().result_int() >= 200) break;
      parser = std::make_unique<http::response_parser<http::buffer_body>>();
      parser->body_limit(pool_->config.max_response_bytes);
    }
    co_return parser;
  }

  asio::awaitable<ClientResult<std::unique_ptr<http::response_parser<http::buffer_body>>>>
  exchange(Conn& conn, const Url& url, const std::optional<Url>& proxy, const ClientRequest& req,
           Deadline& deadline) {
    if (conn.tls) co_return co_await exchange_on(*conn.tls, conn, url, proxy, req, deadline);
    co_return co_await exchange_on(*conn.plain, conn, url, proxy, req, deadline);
  }

  std::shared_ptr<Pool> pool_;
};

}  // namespace

std::unique_ptr<HttpClient> make_http_client(asio::any_io_executor ex, ClientConfig config,
                                             core::Registry& metrics) {
  return std::make_unique<ClientImpl>(std::move(ex), std::move(config), metrics);
}

}  // namespace agentd::net
