// The Redis connection's I/O: connect + handshake with a deadline, a reader, a writer that
// coalesces every queued command into one write, and a health check; reconnect with backoff.
#include "redis_connection.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <spdlog/spdlog.h>

#include <array>
#include <variant>

namespace agentd::store::redis {
namespace {

using Clock = std::chrono::steady_clock;
using tcp = asio::ip::tcp;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

std::string ms_text(milliseconds d) { return std::to_string(d.count()) + " ms"; }

}  // namespace

// A caller waiting for its replies (or a waiter for the connection to come up).
struct Connection::Call {
  explicit Call(asio::any_io_executor ex) : timer(std::move(ex)) {}
  asio::steady_timer timer;
  std::optional<KvResult<std::vector<Reply>>> result;
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
      write_signal_(ex),
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
  if (socket_) {
    boost::system::error_code ignored;
    socket_->close(ignored);
  }
  if (resolver_) resolver_->cancel();
  write_signal_.cancel();
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
      last_read_ = Clock::now();
      set_state(true, "");
      std::string why;
      try {
        why = co_await serve(socket_);
      } catch (const std::exception& e) {
        why = e.what();
      }
      boost::system::error_code ignored;
      socket_->close(ignored);
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

asio::awaitable<KvResult<std::shared_ptr<Connection::Socket>>> Connection::connect_once() {
  const auto& url = options_.url;
  auto at = "redis at " + url.endpoint();
  auto socket = std::make_shared<Socket>(ex_);
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
    boost::system::error_code ignored;
    socket->close(ignored);
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
  auto [cec, ep] = co_await asio::async_connect(*socket, endpoints, kTuple);
  if (cec) co_return failed("connect", cec);
  boost::system::error_code ignored;
  socket->set_option(tcp::no_delay(true), ignored);
  socket->set_option(asio::socket_base::keep_alive(true), ignored);

  auto hs = make_handshake(url, options_.name, options_.want_client_id);
  auto [wec, wn] = co_await asio::async_write(*socket, asio::buffer(hs.bytes), kTuple);
  if (wec) co_return failed("sending the handshake", wec);
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
    auto [rec2, n] = co_await socket->async_read_some(asio::buffer(buf), kTuple);
    if (rec2) {
      if (rec2 == asio::error::eof) {
        co_return Error{Errc::unavailable, at + " closed the connection during the handshake"};
      }
      co_return failed("the handshake", rec2);
    }
    parser_->feed(std::string_view(buf.data(), n));
  }
  deadline.cancel();
  auto id = check_handshake(url, replies, options_.want_client_id);
  if (!id) co_return id.error();
  client_id_ = *id;
  co_return socket;
}

asio::awaitable<std::string> Connection::serve(std::shared_ptr<Socket> socket) {
  using namespace asio::experimental::awaitable_operators;
  auto r = co_await (read_loop(socket) || write_loop(socket) || health_loop());
  co_return std::visit([](auto& why) { return std::string(why); }, r);
}

asio::awaitable<std::string> Connection::read_loop(std::shared_ptr<Socket> socket) {
  std::vector<char> buf(16384);
  for (;;) {
    auto [ec, n] = co_await socket->async_read_some(asio::buffer(buf), kTuple);
    if (ec) co_return ec == asio::error::eof ? "closed by the server" : ec.message();
    last_read_ = Clock::now();
    parser_->feed(std::string_view(buf.data(), n));
    for (;;) {
      auto r = parser_->next();
      if (!r) co_return r.error().message;
      if (!*r) break;
      if (router_.pending() == 0) co_return "a reply nobody asked for: " + describe(**r);
      if (auto done = router_.on_reply(std::move(**r))) {
        complete(done->first, std::move(done->second));
      }
    }
  }
}

asio::awaitable<std::string> Connection::write_loop(std::shared_ptr<Socket> socket) {
  std::string buf;
  for (;;) {
    if (out_.empty()) {
      write_signal_.expires_at(Clock::time_point::max());
      co_await write_signal_.async_wait(kTuple);  // exec() cancels it to wake us
      if (stopped_) co_return "stopped";
      auto cs = co_await asio::this_coro::cancellation_state;
      if (cs.cancelled() != asio::cancellation_type::none) co_return "cancelled";
      continue;
    }
    buf.clear();
    buf.swap(out_);  // everything queued so far goes in one write
    if (metrics_.writes) metrics_.writes->inc();
    auto [ec, n] = co_await asio::async_write(*socket, asio::buffer(buf), kTuple);
    if (ec) co_return "write failed: " + ec.message();
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
  if (stopped_) co_return Error{Errc::cancelled, "the redis client was stopped"};
  if (!connected_) {
    co_return Error{Errc::unavailable,
                    "redis at " + options_.url.endpoint() + " is not connected (" + last_error_ + ")"};
  }
  auto call = std::make_shared<Call>(ex_);
  auto id = router_.push(replies);
  calls_[id] = call;
  out_ += commands;
  if (metrics_.commands) metrics_.commands->inc(static_cast<double>(replies));
  write_signal_.cancel();
  auto deadline = Clock::now() + timeout;
  call->timer.expires_at(deadline);
  co_await call->timer.async_wait(kTuple);
  if (call->result) co_return std::move(*call->result);
  calls_.erase(id);  // its replies, when they come, are dropped
  if (Clock::now() >= deadline) {
    co_return Error{Errc::timeout,
                    "redis at " + options_.url.endpoint() + " did not answer within " + ms_text(timeout)};
  }
  co_return Error{Errc::cancelled, "cancelled"};
}

void Connection::complete(std::uint64_t id, KvResult<std::vector<Reply>> result) {
  auto it = calls_.find(id);
  if (it == calls_.end()) return;  // the caller gave up
  auto call = std::move(it->second);
  calls_.erase(it);
  call->result = std::move(result);
  call->wake();
}

void Connection::fail_all(const Error& error) {
  router_.clear();
  out_.clear();
  auto calls = std::move(calls_);
  calls_.clear();
  for (auto& [id, call] : calls) {
    call->result = error;
    call->wake();
  }
}

asio::awaitable<bool> Connection::wait_connected(milliseconds limit) {
  auto deadline = Clock::now() + limit;
  while (!connected_ && !stopped_ && Clock::now() < deadline) {
    auto w = std::make_shared<Call>(ex_);
    state_waiters_.push_back(w);
    w->timer.expires_at(deadline);
    co_await w->timer.async_wait(kTuple);
    std::erase(state_waiters_, w);
    if (!w->woken && Clock::now() < deadline) break;  // the caller was cancelled
  }
  co_return connected_;
}

}  // namespace agentd::store::redis
