// The runtime pieces every module shares: a bounded pool for blocking calls, deadlines for
// awaitables, and the event-loop lag monitor.
#pragma once

#include "agentd/core/error.hpp"
#include "agentd/core/metrics.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <exception>
#include <optional>
#include <type_traits>
#include <variant>

namespace agentd::core {

namespace asio = boost::asio;

// Runs blocking calls (libpqxx, SQLite, file I/O) off the loop, with a bound on what may wait.
// Must be used from the loop thread; results resume on the caller's executor.
class BlockingPool {
 public:
  BlockingPool(std::size_t threads, std::size_t max_pending)
      : pool_(threads), max_pending_(max_pending) {}
  ~BlockingPool() { stop(); }
  void stop() {
    pool_.stop();
    pool_.join();
  }
  std::size_t pending() const noexcept { return pending_; }

  // Errc::unavailable when `max_pending` calls already wait; an exception thrown by `fn`
  // is rethrown in the caller.
  template <class F, class R = std::invoke_result_t<F&>>
  asio::awaitable<Result<R>> run(F fn) {
    static_assert(!std::is_void_v<R>, "return a value (e.g. bool) from blocking calls");
    if (pending_ >= max_pending_) co_return make_error_code(Errc::unavailable);
    ++pending_;
    struct Guard {
      std::size_t& n;
      ~Guard() { --n; }
    } guard{pending_};
    auto ex = co_await asio::this_coro::executor;
    auto out = co_await asio::async_initiate<const asio::use_awaitable_t<>,
                                             void(std::exception_ptr, std::optional<R>)>(
        [this, ex](auto handler, F f) {
          asio::post(pool_, [h = std::move(handler), f = std::move(f), ex]() mutable {
            std::exception_ptr error;
            std::optional<R> value;
            try {
              value.emplace(f());
            } catch (...) {
              error = std::current_exception();
            }
            asio::post(ex, [h = std::move(h), error, v = std::move(value)]() mutable {
              std::move(h)(error, std::move(v));
            });
          });
        },
        asio::use_awaitable, std::move(fn));
    co_return std::move(*out);
  }

 private:
  asio::thread_pool pool_;
  std::size_t max_pending_;
  std::size_t pending_ = 0;
};

// Races `op` against a timer: Errc::timeout when the timer wins (the operation is cancelled).
template <class T>
asio::awaitable<Result<T>> with_timeout(asio::awaitable<T> op, std::chrono::milliseconds limit) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(co_await asio::this_coro::executor, limit);
  auto r = co_await (std::move(op) || timer.async_wait(asio::use_awaitable));
  if (r.index() == 1) co_return make_error_code(Errc::timeout);
  co_return std::move(std::get<0>(r));
}

// Samples how late a periodic timer fires: `agentd_event_loop_lag_seconds` (gauge, last
// sample) and `agentd_event_loop_lag` (histogram). Runs until the io_context stops.
void start_loop_lag_monitor(asio::io_context& io, Registry& registry,
                            std::chrono::milliseconds interval);

// Runs `io` on the calling thread until it is stopped or out of work, like io.run(). With
// `busy_poll` > 0, once handlers have run the thread keeps polling without blocking for up to
// `busy_poll` before it sleeps in epoll_wait again: a reply or a next request arriving in that
// window is picked up without the sleep and wake-up (on a VM, an interrupt to a halted vCPU).
// It trades CPU while traffic flows for latency; an idle loop sleeps as before.
void run_loop(asio::io_context& io, std::chrono::microseconds busy_poll);

}  // namespace agentd::core
