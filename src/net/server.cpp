// The HTTP/1.1 server on Beast: one coroutine per connection, a deadline on every read and
// write, TLS when configured, SSE streaming, staged graceful shutdown. This is the one
// translation unit that instantiates Beast's I/O templates.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <spdlog/spdlog.h>

#include <set>
#include <sys/socket.h>

#include "agentd/net/server.hpp"
#include "agentd/net/sse.hpp"
#include "request_conv.hpp"

namespace agentd::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using asio::use_awaitable;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
// Events already queued are written together, up to this much per write.
constexpr std::size_t kSseCoalesceBytes = 64 * 1024;

using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// Feeds what `buffer` already holds to `parser`, without I/O: up to the end of the headers when
// `header_only`, else up to the end of the message. A request usually arrives whole in one read,
// and a Beast read operation that needs no I/O still posts its completion (a turn of the loop
// each: two per request for the headers and the body). Leaves `ec` empty when the parser simply
// needs more bytes; the caller then reads with Beast as before.
void parse_buffered(http::request_parser<http::string_body>& parser, beast::flat_buffer& buffer,
                    bool header_only, boost::system::error_code& ec) {
  while (buffer.size() > 0 && !parser.is_done() && !(header_only && parser.is_header_done())) {
    auto used = parser.put(buffer.data(), ec);
    buffer.consume(used);
    if (ec == http::error::need_more) {
      ec = {};
      return;
    }
    if (ec || used == 0) return;
  }
}

// Per-connection state the server sees, for shutdown and for the handler deadline.
//
// The handler runs inside the session's own coroutine; its deadline is one timer per
// connection, armed lazily (a request only moves `handler_deadline` forward; the timer re-arms
// itself when it fires early), and cutting the handler off is a terminal cancellation of the
// session's cancellation slot. This replaces racing every request against a fresh timer with
// `||`, which cost a co_spawn, a parallel_group and a timer per request.
struct Conn : std::enable_shared_from_this<Conn> {
  using Clock = std::chrono::steady_clock;
  explicit Conn(const asio::any_io_executor& ex) : handler_timer(ex) {}

  std::function<void()> close;
  std::function<void()> abort;  // close with RST: drops what the kernel still holds to send
  bool busy = false;
  std::shared_ptr<SseStream> sse;
  asio::cancellation_signal cancel;  // bound to the session coroutine's cancellation slot
  asio::steady_timer handler_timer;
  Clock::time_point handler_deadline;
  bool handler_running = false;
  bool timer_armed = false;
  bool timed_out = false;  // the running handler outlived handler_timeout
  bool forced = false;     // closed by shutdown after the grace period

  void force_close() {
    forced = true;
    close();
    cut_handler();  // ends the handler at once
  }

  void start_handler(std::chrono::milliseconds timeout) {
    handler_deadline = Clock::now() + timeout;
    handler_running = true;
    timed_out = false;
    if (!timer_armed) arm();
  }

  // The handler is back; true when it was cut off, and the session's cancellation state must
  // be reset before its own I/O goes on.
  bool end_handler() {
    handler_running = false;
    return timed_out || forced;
  }

 private:
  void cut_handler() {
    if (handler_running) cancel.emit(asio::cancellation_type::terminal);
  }

  void arm() {
    timer_armed = true;
    handler_timer.expires_at(handler_deadline);
    handler_timer.async_wait(
        [self = shared_from_this()](boost::system::error_code ec) { self->on_timer(ec); });
  }

  void on_timer(boost::system::error_code ec) {
    timer_armed = false;
    if (ec || !handler_running) return;  // stopped, or idle: the next request arms it
    if (Clock::now() < handler_deadline) {
      arm();  // armed for an earlier request that finished in time
      return;
    }
    timed_out = true;
    cut_handler();
  }

 public:
  void stop_timer() {
    if (timer_armed) handler_timer.cancel();
  }
};

std::string method_label(std::string_view m) {
  static constexpr std::string_view kKnown[] = {"GET", "POST", "PUT", "DELETE", "PATCH",
                                                "HEAD", "OPTIONS"};
  for (auto k : kKnown) {
    if (k == m) return std::string(m);
  }
  return "other";
}

class ServerImpl final : public HttpServer {
 public:
  ServerImpl(asio::io_context& io, ServerConfig config, Handler handler, core::Registry& m)
      : io_(io),
        config_(std::move(config)),
        handler_(std::move(handler)),
        registry_(m),
        grace_timer_(io),
        open_(m.gauge("agentd_http_connections_open", "Open client connections")),
        accepted_(m.counter("agentd_http_connections_accepted_total", "Accepted connections")),
        rejected_(m.counter("agentd_http_connections_rejected_total",
                            "Connections refused because max_connections was reached")),
        sse_clients_(m.gauge("agentd_sse_clients", "Open event streams")),
        slow_readers_(m.counter("agentd_sse_slow_reader_disconnects_total",
                                "Event streams closed because the client stopped reading")),
        timeouts_(m.counter("agentd_http_timeouts_total",
                            "Connections closed by a read, idle or write deadline")) {}

  std::vector<Endpoint> start() override {
    bool any_tls = false;
    for (auto& l : config_.listeners) any_tls = any_tls || l.tls;
    if (any_tls) setup_tls();
    std::vector<Endpoint> out;
    for (auto& l : config_.listeners) {
      auto acc = std::make_unique<tcp::acceptor>(io_);
      boost::system::error_code ec;
      auto addr = asio::ip::make_address(l.host, ec);
      tcp::endpoint ep(addr, l.port);
      std::string where = Endpoint{l.tls ? "https" : "http", l.host, l.port}.url();
      if (!ec) acc->open(ep.protocol(), ec);
      if (!ec) acc->set_option(asio::socket_base::reuse_address(true), ec);
      if (!ec) acc->bind(ep, ec);
      if (!ec) acc->listen(asio::socket_base::max_listen_connections, ec);
      if (ec) throw std::runtime_error("cannot listen on " + where + ": " + ec.message());
      auto local = acc->local_endpoint();
      out.push_back({l.tls ? "https" : "http", local.address().to_string(), local.port()});
      asio::co_spawn(io_, accept_loop(*acc, l.tls), [](std::exception_ptr e) {
        if (e) {
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            spdlog::error("accept loop failed: {}", ex.what());
          }
        }
      });
      acceptors_.push_back(std::move(acc));
    }
    return out;
  }

  void shutdown(milliseconds grace, std::function<void()> done) override {
    if (stopping_) return;
    stopping_ = true;
    done_ = std::move(done);
    for (auto& a : acceptors_) {
      boost::system::error_code ec;
      a->close(ec);
    }
    spdlog::info("shutting down: {} connection(s) open, grace {}ms", conns_.size(), grace.count());
    for (auto* c : std::vector<Conn*>(conns_.begin(), conns_.end())) {
      if (c->sse) c->sse->close(SseStream::State::shutdown);
      if (!c->busy) c->close();
    }
    grace_timer_.expires_after(grace);
    grace_timer_.async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      if (!conns_.empty()) {
        spdlog::warn("shutdown grace over: closing {} connection(s) still busy", conns_.size());
      }
      for (auto* c : std::vector<Conn*>(conns_.begin(), conns_.end())) c->force_close();
    });
    maybe_done();
  }

  std::size_t connections() const noexcept override { return conns_.size(); }

 private:
  void setup_tls() { ssl_ = load_tls(); }

  // A server context from the configured files; throws naming the file that failed.
  std::unique_ptr<ssl::context> load_tls() const {
    if (!config_.tls) throw std::runtime_error("server.tls: an https listener needs cert and key");
    auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
    auto opts = ssl::context::default_workarounds | ssl::context::no_sslv2 |
                ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                ssl::context::single_dh_use;
    if (config_.tls->min_version == "1.3") opts |= ssl::context::no_tlsv1_2;
    ctx->set_options(opts);
    SSL_CTX_set_options(ctx->native_handle(), SSL_OP_NO_RENEGOTIATION);
    boost::system::error_code ec;
    ctx->use_certificate_chain_file(config_.tls->cert_file, ec);
    if (ec) {
      throw std::runtime_error("server.tls.cert: cannot load " + config_.tls->cert_file + ": " +
                               ec.message());
    }
    ctx->use_private_key_file(config_.tls->key_file, ssl::context::pem, ec);
    if (ec) {
      throw std::runtime_error("server.tls.key: cannot load " + config_.tls->key_file + ": " +
                               ec.message());
    }
    return ctx;
  }

 public:
  std::string reload_tls() override {
    if (!ssl_) return {};
    try {
      auto fresh = load_tls();
      // Connections made with the old context keep using it: retire it, do not free it.
      retired_ssl_.push_back(std::move(ssl_));
      ssl_ = std::move(fresh);
      return {};
    } catch (const std::exception& e) {
      return e.what();
    }
  }

 private:
  void maybe_done() {
    if (stopping_ && conns_.empty() && done_) {
      grace_timer_.cancel();
      auto done = std::move(done_);
      done_ = nullptr;
      asio::post(io_, std::move(done));
    }
  }

  asio::awaitable<void> accept_loop(tcp::acceptor& acc, bool tls) {
    for (;;) {
      auto [ec, sock] = co_await acc.async_accept(kTuple);
      if (stopping_ || ec == asio::error::operation_aborted) co_return;
      if (ec) {
        spdlog::warn("accept failed: {}", ec.message());
        asio::steady_timer t(io_, std::chrono::milliseconds(50));  // e.g. out of descriptors
        co_await t.async_wait(kTuple);
        continue;
      }
      if (conns_.size() >= config_.max_connections) {
        rejected_.inc();
        reject(std::move(sock), tls);
        continue;
      }
      accepted_.inc();
      boost::system::error_code ignored;
      sock.set_option(tcp::no_delay(true), ignored);
      // The completion handler owns the connection state: the cancellation signal bound to
      // the session must outlive the session's coroutine.
      auto conn = std::make_shared<Conn>(io_.get_executor());
      auto& signal = conn->cancel;
      asio::co_spawn(io_, session(std::move(sock), tls, conn),
                     asio::bind_cancellation_slot(signal.slot(), [conn](std::exception_ptr e) {
                       if (e) {
                         try {
                           std::rethrow_exception(e);
                         } catch (const std::exception& ex) {
                           spdlog::error("connection failed: {}", ex.what());
                         }
                       }
                     }));
    }
  }

  // Over the connection limit: a plain client gets a short 503; a TLS client is closed.
  static void reject(tcp::socket sock, bool tls) {
    if (!tls) {
      static const std::string kBusy = [] {
        auto body = Response::error(503, "too many open connections", {}, "too_many_connections").body;
        return "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
               "connection: close\r\ncontent-length: " + std::to_string(body.size()) +
               "\r\n\r\n" + body;
      }();
      // A fresh socket's send buffer takes this at once; never block the loop on it.
      (void)::send(sock.native_handle(), kBusy.data(), kBusy.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    boost::system::error_code ec;
    sock.shutdown(tcp::socket::shutdown_both, ec);
    sock.close(ec);
  }

  static void abort_socket(beast::tcp_stream& s) {
    boost::system::error_code ec;
    s.socket().set_option(asio::socket_base::linger(true, 0), ec);
    s.close();
  }

  asio::awaitable<void> session(tcp::socket sock, bool tls, std::shared_ptr<Conn> conn_ptr) {
    auto remote = [&] {
      boost::system::error_code ec;
      auto ep = sock.remote_endpoint(ec);
      return ec ? std::string("?") : ep.address().to_string() + ":" + std::to_string(ep.port());
    }();
    Conn& conn = *conn_ptr;
    conns_.insert(&conn);
    open_.inc();
    // When the io_context is destroyed after the server, this frame is destroyed without
    // resuming: the token tells it the server is gone.
    struct Unregister {
      ServerImpl* self;
      Conn* conn;
      std::weak_ptr<bool> alive;
      ~Unregister() {
        conn->stop_timer();
        if (alive.expired()) return;
        self->conns_.erase(conn);
        self->open_.dec();
        self->maybe_done();
      }
    } unregister{this, &conn, alive_};

    if (tls) {
      TlsStream stream(std::move(sock), *ssl_);
      conn.close = [&stream] { beast::get_lowest_layer(stream).close(); };
      conn.abort = [&stream] { abort_socket(beast::get_lowest_layer(stream)); };
      beast::get_lowest_layer(stream).expires_after(config_.header_timeout);
      auto [ec] = co_await stream.async_handshake(ssl::stream_base::server, kTuple);
      if (ec) {
        spdlog::debug("TLS handshake with {} failed: {}", remote, ec.message());
        co_return;
      }
      bool clean = co_await serve(stream, conn, remote, true);
      if (clean) {
        beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
        co_await stream.async_shutdown(kTuple);
      }
    } else {
      PlainStream stream(std::move(sock));
      conn.close = [&stream] { stream.close(); };
      conn.abort = [&stream] { abort_socket(stream); };
      bool clean = co_await serve(stream, conn, remote, false);
      if (clean) {
        boost::system::error_code ec;
        stream.socket().shutdown(tcp::socket::shutdown_send, ec);
      }
    }
  }

  template <class Stream>
  asio::awaitable<void> write_error(Stream& stream, int status, std::string message,
                                    const std::string& rid, std::string code = {}) {
    Response r = Response::error(status, std::move(message), {}, std::move(code));
    r.close = true;
    if (!co_await write_response(stream, r, rid, false, false)) co_return;
    // Lingering close: stop sending, then read and drop what the client still sends for a
    // moment, so closing with unread data does not reset the connection before it reads this.
    auto& lowest = beast::get_lowest_layer(stream);
    boost::system::error_code ec;
    lowest.socket().shutdown(tcp::socket::shutdown_send, ec);
    lowest.expires_after(std::chrono::seconds(1));
    std::size_t drained = 0;
    std::vector<char> sink(16384);
    while (drained < 4 * 1024 * 1024) {
      auto [rec, n] = co_await lowest.async_read_some(asio::buffer(sink), kTuple);
      if (rec) break;
      drained += n;
    }
  }

  template <class Stream>
  asio::awaitable<bool> write_response(Stream& stream, Response& r, const std::string& rid,
                                       bool keep_alive, bool head) {
    http::response<http::string_body> res{static_cast<http::status>(r.status), 11};
    for (const auto& h : r.headers) res.insert(h.name, h.value);
    res.set("x-request-id", rid);
    res.body() = std::move(r.body);
    res.keep_alive(keep_alive);
    res.prepare_payload();
    if (head) res.body().clear();
    beast::get_lowest_layer(stream).expires_after(config_.write_timeout);
    auto [ec, n] = co_await http::async_write(stream, res, kTuple);
    if (ec == beast::error::timeout) timeouts_.inc();
    co_return !ec;
  }

  // Serves requests until the connection ends; true when it ended cleanly.
  template <class Stream>
  asio::awaitable<bool> serve(Stream& stream, Conn& conn, const std::string& remote, bool tls) {
    auto& lowest = beast::get_lowest_layer(stream);
    beast::flat_buffer buffer(static_cast<std::size_t>(config_.max_header_bytes) + 65536);
    std::size_t served = 0;
    for (;;) {
      conn.busy = false;
      if (stopping_) co_return true;
      if (buffer.size() == 0) {
        // Waiting for the next request: the idle deadline (the header deadline for the first).
        lowest.expires_after(served == 0 ? config_.header_timeout : config_.idle_timeout);
        auto [ec, n] = co_await stream.async_read_some(buffer.prepare(4096), kTuple);
        if (ec) {
          if (ec == beast::error::timeout) timeouts_.inc();
          co_return false;
        }
        buffer.commit(n);
      }
      conn.busy = true;
      auto started = std::chrono::steady_clock::now();

      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(config_.max_header_bytes));
      parser.body_limit(config_.max_body_bytes);
      lowest.expires_after(config_.header_timeout);
      boost::system::error_code hec;
      parse_buffered(parser, buffer, true, hec);
      if (!hec && !parser.is_header_done()) {
        std::tie(hec, std::ignore) = co_await http::async_read_header(stream, buffer, parser, kTuple);
      }
      if (hec) {
        co_await on_read_error(stream, hec, remote);
        co_return false;
      }
      std::string early_rid = new_request_id();
      if (iequals(parser.get()[http::field::expect], "100-continue")) {
        http::response<http::empty_body> cont{http::status::continue_, 11};
        lowest.expires_after(config_.write_timeout);
        auto [cec, cn] = co_await http::async_write(stream, cont, kTuple);
        if (cec) co_return false;
      }
      if (!parser.is_done()) {
        lowest.expires_after(config_.body_timeout);
        boost::system::error_code bec;
        parse_buffered(parser, buffer, false, bec);
        if (!bec && !parser.is_done()) {
          std::tie(bec, std::ignore) = co_await http::async_read(stream, buffer, parser, kTuple);
        }
        if (bec) {
          co_await on_read_error(stream, bec, remote);
          co_return false;
        }
      }

      bool client_keep_alive = parser.get().keep_alive();
      Request req;
      req.remote = remote;
      req.tls = tls;
      if (auto bad = detail::fill_request(req, parser.release())) {
        co_await write_error(stream, 400, *bad, req.request_id.empty() ? early_rid : req.request_id);
        co_return false;
      }
      bool head = req.method == "HEAD";
      ++served;

      Response res;
      bool threw = false;
      conn.start_handler(config_.handler_timeout);
      try {
        res = co_await handler_(req);
      } catch (const std::exception& e) {
        threw = true;
        if (!conn.timed_out && !conn.forced) {
          spdlog::error("rid={} unhandled error in {} {}: {}", req.request_id, req.method,
                        req.path, e.what());
        }
      }
      if (conn.end_handler()) {
        // Cut off (deadline or shutdown): whatever the handler made of its cancellation is
        // dropped, and the connection's own I/O must not see the cancellation.
        co_await asio::this_coro::reset_cancellation_state();
        if (conn.forced) co_return false;
        res = Response::error(504, "the request was not answered within " +
                                       std::to_string(config_.handler_timeout.count()) + "ms");
      } else if (threw) {
        res = Response::error(500, "internal error (request id " + req.request_id + ")");
      }

      bool keep = client_keep_alive && !res.close && !stopping_ &&
                  (config_.max_requests_per_connection == 0 ||
                   served < config_.max_requests_per_connection);
      bool ok;
      std::size_t bytes = res.body.size();
      int status = res.status;
      if (res.sse && !head) {
        // A stream can stay open for minutes: the request's read buffer (4 KB or more) is
        // given back meanwhile unless it holds the start of a pipelined request.
        if (buffer.size() == 0) buffer.shrink_to_fit();
        ok = co_await stream_events(stream, conn, req, res);
        keep = keep && ok;
      } else {
        ok = co_await write_response(stream, res, req.request_id, keep, head);
      }
      record(req, res.route, status, bytes, started);
      if (!ok || !keep) co_return ok;
    }
  }

  template <class Stream>
  asio::awaitable<void> on_read_error(Stream& stream, boost::system::error_code ec,
                                      const std::string& remote) {
    std::string rid = new_request_id();
    if (ec == http::error::header_limit) {
      co_await write_error(stream, 431,
                           "request headers exceed " + std::to_string(config_.max_header_bytes) +
                               " bytes",
                           rid);
    } else if (ec == http::error::body_limit) {
      co_await write_error(stream, 413,
                           "request body exceeds " + std::to_string(config_.max_body_bytes) +
                               " bytes",
                           rid);
    } else if (ec == beast::error::timeout) {
      timeouts_.inc();
      spdlog::debug("closing {}: request not received in time", remote);
    } else if (ec == http::error::end_of_stream || ec == asio::error::eof ||
               ec == asio::error::connection_reset || ec == asio::error::operation_aborted ||
               ec == http::error::partial_message) {
      // The peer went away.
    } else if (ec.category() == http::make_error_code(http::error::bad_target).category()) {
      co_await write_error(stream, 400, "malformed HTTP request: " + ec.message(), rid);
    } else {
      spdlog::debug("closing {}: {}", remote, ec.message());
    }
  }

  template <class Stream>
  asio::awaitable<bool> stream_events(Stream& stream, Conn& conn, Request& req, Response& res) {
    auto& lowest = beast::get_lowest_layer(stream);
    http::response<http::empty_body> head{http::status::ok, 11};
    for (const auto& h : res.headers) head.insert(h.name, h.value);
    const bool raw = res.raw_stream;
    if (!raw || !res.headers.get("content-type")) {
      head.set(http::field::content_type, raw ? "application/octet-stream" : "text/event-stream");
    }
    head.set(http::field::cache_control, "no-cache");
    head.set("x-accel-buffering", "no");
    head.set("x-request-id", req.request_id);
    head.chunked(true);
    http::response_serializer<http::empty_body> sr{head};
    lowest.expires_after(config_.write_timeout);
    auto [hec, hn] = co_await http::async_write_header(stream, sr, kTuple);
    if (hec) co_return false;

    auto sse = std::make_shared<SseStream>(co_await asio::this_coro::executor,
                                           config_.sse_max_queued);
    conn.sse = sse;
    sse_clients_.inc();
    // An overflowing queue means the client stopped reading: drop it now rather than wait
    // for the blocked write's deadline.
    auto alive = std::make_shared<bool>(true);
    sse->on_close([alive, &conn](SseStream::State why) {
      if (*alive && why == SseStream::State::overflow) conn.abort();
    });
    if (stopping_) sse->close(SseStream::State::shutdown);
    asio::co_spawn(io_, run_producer(std::move(res.sse), sse, req.request_id),
                   asio::detached);

    bool ok = true;
    bool ended = false;  // the last chunk went out with the last events
    while (ok) {
      auto ev = co_await sse->next(config_.sse_keepalive);
      std::string text;
      if (ev) {
        text = raw ? std::move(ev->data) : format_sse(*ev);
        // What is already queued (a producer pushes every event of one upstream read before
        // this runs) goes out in the same write: one send per read, not one per event.
        while (text.size() < kSseCoalesceBytes) {
          auto more = sse->try_next();
          if (!more) break;
          text += raw ? more->data : format_sse(*more);
        }
      } else if (sse->ended()) {
        break;
      } else if (raw) {
        continue;  // a raw body has no comment syntax: its producer sends its own keepalives
      } else {
        text = format_sse_comment("keepalive");
      }
      if (text.empty()) {  // raw: an empty piece would read as the last chunk
        if (sse->ended()) break;
        continue;
      }
      lowest.expires_after(config_.write_timeout);
      boost::system::error_code ec;
      if (sse->ended() && sse->state() == SseStream::State::finished) {
        // The producer is done: the events and the end of the body in one write.
        auto [wec, n] = co_await asio::async_write(
            stream, beast::buffers_cat(http::make_chunk(asio::buffer(text)), http::make_chunk_last()),
            kTuple);
        ec = wec;
        ended = !ec;
        if (!ec) break;
      } else {
        auto [wec, n] = co_await asio::async_write(stream, http::make_chunk(asio::buffer(text)),
                                                   kTuple);
        ec = wec;
      }
      if (ec) {
        ok = false;
        // A write deadline also means the client stopped reading.
        sse->close(ec == beast::error::timeout ? SseStream::State::overflow
                                               : SseStream::State::client_gone);
      }
    }
    auto why = sse->state();
    if (why == SseStream::State::overflow) {
      slow_readers_.inc();
      spdlog::warn("rid={} event stream dropped: the client stopped reading", req.request_id);
      ok = false;
    }
    *alive = false;
    sse_clients_.dec();
    conn.sse.reset();
    if (!ok) co_return false;
    if (ended) co_return why == SseStream::State::finished;
    lowest.expires_after(config_.write_timeout);
    auto [ec, n] = co_await asio::async_write(stream, http::make_chunk_last(), kTuple);
    co_return !ec && why == SseStream::State::finished;
  }

  static asio::awaitable<void> run_producer(SseProducer producer, std::shared_ptr<SseStream> s,
                                            std::string rid) {
    try {
      co_await producer(s);
    } catch (const std::exception& e) {
      spdlog::error("rid={} event producer failed: {}", rid, e.what());
    }
    s->finish();
  }

  void record(const Request& req, const std::string& route, int status, std::size_t bytes,
              std::chrono::steady_clock::time_point started) {
    auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started);
    std::string r = route.empty() ? "unmatched" : route;
    registry_
        .counter("agentd_http_requests_total", "HTTP requests by route, method and status",
                 {{"route", r}, {"method", method_label(req.method)},
                  {"status", std::to_string(status)}})
        .inc();
    registry_
        .histogram("agentd_http_request_duration_seconds", "Time to answer, by route",
                   core::latency_buckets(), {{"route", r}})
        .observe(elapsed.count());
    if (!config_.access_log) return;
    spdlog::info("rid={} {} {} {} {}B {:.3f}ms client={} peer={}", req.request_id, req.method,
                 req.path, status, bytes, elapsed.count() * 1000,
                 req.client.empty() ? "-" : req.client, req.remote);
  }

  asio::io_context& io_;
  ServerConfig config_;
  Handler handler_;
  core::Registry& registry_;
  std::unique_ptr<ssl::context> ssl_;
  std::vector<std::unique_ptr<ssl::context>> retired_ssl_;  // still used by older connections
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors_;
  std::set<Conn*> conns_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  bool stopping_ = false;
  std::function<void()> done_;
  asio::steady_timer grace_timer_;
  core::Gauge& open_;
  core::Counter& accepted_;
  core::Counter& rejected_;
  core::Gauge& sse_clients_;
  core::Counter& slow_readers_;
  core::Counter& timeouts_;
};

}  // namespace

std::unique_ptr<HttpServer> make_http_server(boost::asio::io_context& io, ServerConfig config,
                                             Handler handler, core::Registry& metrics) {
  return std::make_unique<ServerImpl>(io, std::move(config), std::move(handler), metrics);
}

}  // namespace agentd::net
