// The Redis connection's I/O: connect (+ TLS) + handshake with a deadline, a reader that resumes
// callers and writes what they queued, a health check, one deadline timer; reconnect with
// backoff.
#include "redis_connection.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <spdlog/spdlog.h>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <array>
#include <cassert>
#include <stdexcept>
#include <tuple>
#include <variant>

namespace agentd::store::redis {
namespace {

using Clock = std::chrono::steady_clock;
using tcp = asio::ip::tcp;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

std::string ms_text(milliseconds d) { return std::to_string(d.count()) + " ms"; }

}  // namespace

std::shared_ptr<asio::ssl::context> make_tls_context(const RedisTlsConfig& config) {
  namespace ssl = asio::ssl;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  boost::system::error_code ec;
  ctx->set_default_verify_paths(ec);
  if (ec) spdlog::warn("redis: cannot load the system trust store: {}", ec.message());
  auto load = [](const char* key, const std::string& file, auto&& fn) {
    boost::system::error_code lec;
    fn(lec);
    if (lec) {
      throw std::runtime_error(std::string("store.redis_tls.") + key + ": cannot load " + file +
                               ": " + lec.message());
    }
  };
  if (!config.ca_file.empty()) {
    load("ca_file", config.ca_file,
         [&](boost::system::error_code& e) { ctx->load_verify_file(config.ca_file, e); });
  }
  if (!config.cert_file.empty()) {
    load("cert_file", config.cert_file,
         [&](boost::system::error_code& e) { ctx->use_certificate_chain_file(config.cert_file, e); });
    load("key_file", config.key_file, [&](boost::system::error_code& e) {
      ctx->use_private_key_file(config.key_file, ssl::context::pem, e);
    });
    if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
      throw std::runtime_error("store.redis_tls.key_file: " + config.key_file +
                               " is not the key of " + config.cert_file);
    }
  }
  ctx->set_verify_mode(config.verify_peer ? ssl::verify_peer : ssl::verify_none);
  return ctx;
}

// The TLS stream wraps a reference to the socket, so closing the socket ends both, and the plain
// path keeps its direct non-blocking write_some on the socket itself.
struct Connection::Link {
  explicit Link(asio::any_io_executor ex) : socket(std::move(ex)) {}
  tcp::socket socket;
  std::optional<asio::ssl::stream<tcp::socket&>> tls;  // set for rediss://
  void close() {
    boost::system::error_code ignored;
    socket.close(ignored);
  }
};

// What resumes a coroutine suspended in suspend(). Its concrete type, because Boost 1.81's
// any_completion_handler recurses without end when moved from a non-const lvalue.
using Waker = asio::async_result<asio::use_awaitable_t<>, void()>::handler_type;

// A caller's pipelined request: pooled, reused once both its replies and its caller are done
// (the replies' vector keeps its capacity).
struct Connection::Call {
  ReplyRouter::Id id = 0;
  Clock::time_point deadline;
  milliseconds timeout{};
  std::vector<Reply> replies;
  std::optional<Error> error;  // set instead when the caller is woken without its replies
  std::optional<Waker> waker;  // the suspended caller, until woken
  bool queued = false;   // in queue_: its replies are still to come
  bool waiting = false;  // its caller has not taken the result yet
};

// A caller of wait_connected().
struct Connection::StateWaiter {
  explicit StateWaiter(asio::any_io_executor ex) : timer(std::move(ex)) {}
  asio::steady_timer timer;
  bool woken = false;
  void wake() {
    woken = true;
    timer.cancel();
  }
};

Connection::Connection(asio::any_io_executor ex, ConnectionOptions options,
                       ConnectionMetrics metrics)
    : ex_(ex),
      options_(std::move(options)),
      metrics_(metrics),
      sweep_timer_(ex),
      backoff_timer_(ex) {}

Connection::~Connection() = default;

void Connection::start() {
  if (started_) return;
  started_ = true;
  asio::co_spawn(ex_, run(), [name = options_.name](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::error("redis[{}]: connection task failed: {}", name, ex.what());
    }
  });
}

void Connection::stop() {
  if (stopped_) return;
  stopped_ = true;
  listeners_.clear();
  connected_ = false;
  if (metrics_.up) metrics_.up->set(0);
  if (socket_) socket_->close();
  if (resolver_) resolver_->cancel();
  sweep_timer_.cancel();
  backoff_timer_.cancel();
  fail_all(Error{Errc::cancelled, "the redis client was stopped"});
  for (auto& w : state_waiters_) w->wake();
  state_waiters_.clear();
}

void Connection::on_state(std::function<void(bool, const std::string&)> listener) {
  listeners_.push_back(std::move(listener));
}

void Connection::set_state(bool up, const std::string& why) {
  connected_ = up;
  if (metrics_.up) metrics_.up->set(up ? 1 : 0);
  last_error_ = up ? std::string() : why;
  State next = up ? State::up : State::down;
  if (up) {
    for (auto& w : state_waiters_) w->wake();
    state_waiters_.clear();
  }
  if (next == state_) return;  // one notice per change, not per failed reconnect
  state_ = next;
  if (stopped_) return;
  auto listeners = listeners_;  // a listener may register another
  for (auto& l : listeners) l(up, why);
}

asio::awaitable<void> Connection::run() {
  auto self = shared_from_this();  // alive until this loop ends
  auto backoff = options_.backoff_min;
  while (!stopped_) {
    auto socket = co_await connect_once();
    if (stopped_) break;
    if (socket) {
      backoff = options_.backoff_min;
      socket_ = *socket;
      writing_ = false;
      write_error_.clear();
      last_read_ = Clock::now();
      set_state(true, "");
      std::string why;
      try {
        why = co_await serve(socket_);
      } catch (const std::exception& e) {
        why = e.what();
      }
      socket_->close();
      socket_.reset();
      if (stopped_) break;
      why = "connection to redis at " + options_.url.endpoint() + " lost: " + why;
      set_state(false, why);
      if (metrics_.reconnects) metrics_.reconnects->inc();
      fail_all(Error{Errc::unavailable, why});
      spdlog::debug("redis[{}]: {}", options_.name, why);
    } else {
      socket_.reset();
      set_state(false, socket.error().message);
      spdlog::debug("redis[{}]: {} (next attempt in {})", options_.name, socket.error().message,
                    ms_text(backoff));
    }
    backoff_timer_.expires_after(backoff);
    co_await backoff_timer_.async_wait(kTuple);
    backoff = std::min(backoff * 2, options_.backoff_max);
  }
}

asio::awaitable<KvResult<std::shared_ptr<Connection::Link>>> Connection::connect_once() {
  const auto& url = options_.url;
  auto at = "redis at " + url.endpoint();
  auto socket = std::make_shared<Link>(ex_);
  auto resolver = std::make_shared<tcp::resolver>(ex_);
  socket_ = socket;  // stop() closes it, ending a connect in progress
  resolver_ = resolver;
  // One deadline for resolve, connect and handshake: when it fires it closes what is pending.
  auto expired = std::make_shared<bool>(false);
  asio::steady_timer deadline(ex_, options_.connect_timeout);
  deadline.async_wait([socket, resolver, expired](boost::system::error_code ec) {
    if (ec) return;
    *expired = true;
    resolver->cancel();
    socket->close();
  });
  auto failed = [&](const std::string& what, const boost::system::error_code& ec) {
    if (*expired) {
      return Error{Errc::unavailable,
                   at + ": " + what + " timed out after " + ms_text(options_.connect_timeout)};
    }
    return Error{Errc::unavailable, at + ": " + what + " failed: " + ec.message()};
  };

  auto [rec, endpoints] =
      co_await resolver->async_resolve(url.host, std::to_string(url.port), kTuple);
  if (rec) co_return failed("resolving the host", rec);
  auto [cec, ep] = co_await asio::async_connect(socket->socket, endpoints, kTuple);
  if (cec) co_return failed("connect", cec);
  boost::system::error_code ignored;
  socket->socket.set_option(tcp::no_delay(true), ignored);
  socket->socket.set_option(asio::socket_base::keep_alive(true), ignored);
  if (url.tls) {
    if (auto e = co_await tls_handshake(*socket); !e.empty()) {
      co_return *expired ? failed("the TLS handshake", {}) : Error{Errc::unavailable, at + ": " + e};
    }
  } else {
    // flush() writes directly: it must get would_block, not wait, when the kernel buffer is full.
    boost::system::error_code nbec;
    socket->socket.non_blocking(true, nbec);
    if (nbec) co_return failed("setting the socket non-blocking", nbec);
  }

  auto hs = make_handshake(url, options_.name, options_.want_client_id);
  std::tuple<boost::system::error_code, std::size_t> sent;
  if (socket->tls) {
    sent = co_await asio::async_write(*socket->tls, asio::buffer(hs.bytes), kTuple);
  } else {
    sent = co_await asio::async_write(socket->socket, asio::buffer(hs.bytes), kTuple);
  }
  if (auto wec = std::get<0>(sent)) co_return failed("sending the handshake", wec);
  parser_ = std::make_unique<ReplyParser>();
  std::vector<Reply> replies;
  std::array<char, 4096> buf;
  while (replies.size() < hs.replies) {
    auto r = parser_->next();
    if (!r) co_return Error{Errc::unavailable, at + ": " + r.error().message};
    if (*r) {
      replies.push_back(std::move(**r));
      continue;
    }
    std::tuple<boost::system::error_code, std::size_t> got;
    if (socket->tls) {
      got = co_await socket->tls->async_read_some(asio::buffer(buf), kTuple);
    } else {
      got = co_await socket->socket.async_read_some(asio::buffer(buf), kTuple);
    }
    auto [rec2, n] = got;
    if (rec2) {
      if ((rec2 == asio::error::eof || rec2 == asio::error::connection_reset) && !url.tls) {
        co_return Error{Errc::unavailable,
                        at + " closed the connection during the handshake (if it expects TLS, "
                             "use rediss://)"};
      }
      if (rec2 == asio::error::eof || rec2 == asio::ssl::error::stream_truncated) {
        co_return Error{Errc::unavailable, at + " closed the connection during the handshake"};
      }
      co_return failed("the handshake", rec2);
    }
    // A TLS alert or handshake record (content type 21 or 22) is no RESP reply: a TLS port.
    if (!url.tls && replies.empty() && n > 0 && (buf[0] == '\x15' || buf[0] == '\x16')) {
      co_return Error{Errc::unavailable, at + " answered with TLS (use rediss://)"};
    }
    parser_->feed(std::string_view(buf.data(), n));
  }
  deadline.cancel();
  auto id = check_handshake(url, replies, options_.want_client_id);
  if (!id) co_return id.error();
  client_id_ = *id;
  co_return socket;
}

// The TLS handshake on a connected socket: SNI for a host name, the certificate matched to the
// name (or IP address), the chain checked by the context. An empty string, or why it failed.
asio::awaitable<std::string> Connection::tls_handshake(Link& link) {
  const std::string& name =
      options_.tls_server_name.empty() ? options_.url.host : options_.tls_server_name;
  link.tls.emplace(link.socket, *options_.tls);
  SSL* ssl = link.tls->native_handle();
  boost::system::error_code aec;
  asio::ip::make_address(name, aec);
  bool is_ip = !aec;
  // SNI carries host names only (RFC 6066).
  if (!is_ip && SSL_set_tlsext_host_name(ssl, name.c_str()) != 1) {
    co_return "cannot set the TLS server name " + name;
  }
  if (options_.tls_verify) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str())
                   : X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size());
    if (ok != 1) co_return "cannot set the name to verify: " + name;
  }
  auto [ec] = co_await link.tls->async_handshake(asio::ssl::stream_base::client, kTuple);
  if (!ec) co_return std::string();
  std::string why = "the TLS handshake failed: " + ec.message();
  // The chain or name check that failed says more than "certificate verify failed".
  long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK) {
    why += std::string(" (") + X509_verify_cert_error_string(verify) + ")";
  }
  co_return why;
}

asio::awaitable<std::string> Connection::serve(std::shared_ptr<Link> socket) {
  using namespace asio::experimental::awaitable_operators;
  auto r = co_await (read_loop(socket) || health_loop());
  co_return std::visit([](auto& why) { return std::string(why); }, r);
}

// Hands each reply to its caller at once; the callers resumed queue their next commands, which
// leave in one write per kFlushBytes and after each chunk read, while redis-server works on the
// previous write: two batches in flight on the one connection instead of one.
asio::awaitable<std::string> Connection::read_loop(std::shared_ptr<Link> socket) {
  constexpr std::size_t kFlushBytes = 4096;
  std::vector<char> buf(16384);
  struct InReplies {
    bool& flag;
    explicit InReplies(bool& f) : flag(f) { flag = true; }
    ~InReplies() { flag = false; }
  };
  for (;;) {
    std::tuple<boost::system::error_code, std::size_t> got;
    if (socket->tls) {
      got = co_await socket->tls->async_read_some(asio::buffer(buf), kTuple);
    } else {
      got = co_await socket->socket.async_read_some(asio::buffer(buf), kTuple);
    }
    auto [ec, n] = got;
    if (!write_error_.empty()) co_return write_error_;
    if (ec) co_return ec == asio::error::eof ? "closed by the server" : ec.message();
    last_read_ = Clock::now();
    parser_->feed(std::string_view(buf.data(), n));
    InReplies in_replies(in_replies_);
    for (;;) {
      auto r = parser_->next();
      if (!r) co_return r.error().message;
      if (!*r) break;
      auto owner = router_.on_reply();
      if (!owner) co_return "a reply nobody asked for: " + describe(**r);
      Call* call = queue_.front();  // replies come in the order the commands were written
      assert(call->id == owner->id);
      call->replies.push_back(std::move(**r));
      if (!owner->last) continue;
      queue_.pop_front();
      call->queued = false;
      if (call->waker) {
        wake(call);
      } else if (!call->waiting) {
        release(call);  // its caller gave up (timeout, cancellation): the replies are dropped
      }
      if (stopped_) co_return "stopped";  // by a caller just resumed
      if (out_.size() >= kFlushBytes) flush();
    }
    flush();
    if (!write_error_.empty()) co_return write_error_;
  }
}

asio::awaitable<std::string> Connection::health_loop() {
  asio::steady_timer timer(ex_);
  for (;;) {
    timer.expires_after(options_.health_interval);
    auto [ec] = co_await timer.async_wait(kTuple);
    if (ec || stopped_) co_return "stopped";
    if (Clock::now() - last_read_ < options_.health_interval) continue;  // replies flow
    auto ping = encode_command({"PING"});
    auto r = co_await exec(std::move(ping), 1, options_.command_timeout);
    if (!r) {
      if (r.error().code == Errc::timeout) {
        co_return "no answer to PING within " + ms_text(options_.command_timeout);
      }
      co_return r.error().message;
    }
  }
}

asio::awaitable<KvResult<std::vector<Reply>>> Connection::exec(std::string commands,
                                                               std::size_t replies) {
  return exec(std::move(commands), replies, options_.command_timeout);
}

asio::awaitable<KvResult<std::vector<Reply>>> Connection::exec(std::string commands,
                                                               std::size_t replies,
                                                               milliseconds timeout) {
  auto self = shared_from_this();  // the caller may resume after the owner let go of us
  if (auto refused = refuse()) co_return *refused;
  out_ += commands;
  Call* call = enqueue(replies, timeout);
  co_await suspend(call);
  Replies r = call->error ? Replies(*call->error) : Replies(std::move(call->replies));
  done_with(call);
  co_return r;
}

asio::awaitable<KvResult<Reply>> Connection::command(std::span<const std::string_view> args) {
  auto self = shared_from_this();
  if (auto refused = refuse()) co_return *refused;
  encode_command(out_, args);
  Call* call = enqueue(1, options_.command_timeout);
  co_await suspend(call);
  KvResult<Reply> r = call->error ? KvResult<Reply>(*call->error)
                                  : KvResult<Reply>(std::move(call->replies.front()));
  done_with(call);
  co_return r;
}

std::optional<Error> Connection::refuse() const {
  if (stopped_) return Error{Errc::cancelled, "the redis client was stopped"};
  if (!connected_) {
    return Error{Errc::unavailable,
                 "redis at " + options_.url.endpoint() + " is not connected (" + last_error_ + ")"};
  }
  return std::nullopt;
}

Connection::Call* Connection::enqueue(std::size_t replies, milliseconds timeout) {
  Call* call = nullptr;
  if (free_.empty()) {
    call = &calls_.emplace_back();
  } else {
    call = free_.back();
    free_.pop_back();
  }
  call->id = router_.push(replies);
  call->timeout = timeout;
  call->deadline = Clock::now() + timeout;
  call->queued = true;
  call->waiting = true;
  queue_.push_back(call);
  if (metrics_.commands) metrics_.commands->inc(static_cast<double>(replies));
  arm_sweep(call->deadline);
  schedule_flush();
  return call;
}

// Suspends the caller until wake() (call->replies are complete) or wake_later() (call->error).
asio::awaitable<void> Connection::suspend(Call* call) {
  return asio::async_initiate<const asio::use_awaitable_t<>&, void()>(
      [this, call](auto handler) {
        auto slot = asio::get_associated_cancellation_slot(handler);
        if (slot.is_connected()) {
          slot.assign([this, call](asio::cancellation_type type) {
            if (type != asio::cancellation_type::none) {
              wake_later(call, Error{Errc::cancelled, "cancelled"});
            }
          });
        }
        call->waker.emplace(std::move(handler));
      },
      asio::use_awaitable);
}

// The caller took its result.
void Connection::done_with(Call* call) {
  call->waiting = false;
  if (!call->queued) release(call);  // otherwise read_loop or fail_all releases it
}

// Resumes the caller here and now (see exec()): read_loop's way.
void Connection::wake(Call* call) {
  Waker waker = std::move(*call->waker);  // alive while the caller runs (it is its thread)
  call->waker.reset();
  auto slot = asio::get_associated_cancellation_slot(waker);
  if (slot.is_connected()) slot.clear();
  waker();
}

// Resumes the caller through the executor: for deadlines, cancellation (called while the
// signal is being emitted) and lost connections (stop() may run inside a caller), where
// running other callers from within would be a surprise.
void Connection::wake_later(Call* call, Error error) {
  if (!call->waker) return;  // woken already
  call->error = std::move(error);
  asio::post(ex_, [waker = std::move(*call->waker)]() mutable { waker(); });
  call->waker.reset();
}

void Connection::release(Call* call) {
  call->replies.clear();
  call->error.reset();
  free_.push_back(call);
}

// One timer for every call's deadline. Deadlines mostly arrive in order (one timeout for all
// commands), so it is re-armed about once per timeout, not once per command.
void Connection::arm_sweep(Clock::time_point at) {
  if (sweep_armed_ && sweep_at_ <= at) return;
  sweep_armed_ = true;
  sweep_at_ = at;
  sweep_timer_.expires_at(at);  // cancels the wait for a later time
  sweep_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec != asio::error::operation_aborted) self->sweep();
  });
}

void Connection::sweep() {
  sweep_armed_ = false;
  if (stopped_) return;
  auto now = Clock::now();
  auto next = Clock::time_point::max();
  for (Call* call : queue_) {
    if (!call->waker) continue;
    if (call->deadline <= now) {
      wake_later(call, Error{Errc::timeout, "redis at " + options_.url.endpoint() +
                                                " did not answer within " + ms_text(call->timeout)});
    } else {
      next = std::min(next, call->deadline);
    }
  }
  if (next != Clock::time_point::max()) arm_sweep(next);
}

// Commands queued outside read_loop (new callers, callers woken by a timer) leave together in
// one write once the callers of this turn of the loop have queued theirs.
void Connection::schedule_flush() {
  if (in_replies_ || flush_posted_) return;
  flush_posted_ = true;
  asio::post(ex_, [self = shared_from_this()] {
    self->flush_posted_ = false;
    self->flush();
  });
}

// Hands out_ to the socket now (it is non-blocking); what the kernel does not take at once is
// written asynchronously while new commands gather in out_. TLS always writes asynchronously:
// a record OpenSSL has made must go out whole, which a would_block half-way would break.
void Connection::flush() {
  if (writing_ || out_.empty() || !socket_ || !connected_ || !write_error_.empty()) return;
  if (metrics_.writes) metrics_.writes->inc();
  if (socket_->tls) {
    wbuf_.swap(out_);
    out_.clear();
    write_rest();
    return;
  }
  boost::system::error_code ec;
  std::size_t n = socket_->socket.write_some(asio::buffer(out_), ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) {
    ec = {};
    n = 0;
  }
  if (ec) {
    fail_writes(ec);
    return;
  }
  if (n == out_.size()) {
    out_.clear();
    return;
  }
  wbuf_.assign(out_, n);
  out_.clear();
  write_rest();
}

// Writes wbuf_ asynchronously, then whatever gathered in out_ meanwhile.
void Connection::write_rest() {
  writing_ = true;
  auto done = [self = shared_from_this(), socket = socket_](boost::system::error_code wec,
                                                            std::size_t) {
    if (socket != self->socket_) return;  // that connection is gone
    self->writing_ = false;
    if (wec) {
      self->fail_writes(wec);
    } else {
      self->flush();
    }
  };
  if (socket_->tls) {
    asio::async_write(*socket_->tls, asio::buffer(wbuf_), std::move(done));
  } else {
    asio::async_write(socket_->socket, asio::buffer(wbuf_), std::move(done));
  }
}

// Ends read_loop (and with it the connection) with the write's error.
void Connection::fail_writes(const boost::system::error_code& ec) {
  write_error_ = "write failed: " + ec.message();
  socket_->close();
}

void Connection::fail_all(const Error& error) {
  router_.clear();
  out_.clear();
  for (Call* call : queue_) {
    call->queued = false;
    if (call->waker) {
      wake_later(call, error);
    } else if (!call->waiting) {
      release(call);
    }
  }
  queue_.clear();
}

asio::awaitable<bool> Connection::wait_connected(milliseconds limit) {
  auto deadline = Clock::now() + limit;
  while (!connected_ && !stopped_ && Clock::now() < deadline) {
    auto w = std::make_shared<StateWaiter>(ex_);
    state_waiters_.push_back(w);
    w->timer.expires_at(deadline);
    co_await w->timer.async_wait(kTuple);
    std::erase(state_waiters_, w);
    if (!w->woken && Clock::now() < deadline) break;  // the caller was cancelled
  }
  co_return connected_;
}

}  // namespace agentd::store::redis
