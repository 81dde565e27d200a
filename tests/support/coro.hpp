// Coroutine helpers for tests: start several coroutines and wait for all of them, and an
// assertion that ends the coroutine (gtest's ASSERT_* only works in void functions).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <exception>

namespace agentd::test {

// Starts coroutines and waits for all of them. Must outlive them (wait() before it goes).
class Group {
 public:
  explicit Group(boost::asio::any_io_executor ex) : ex_(ex), timer_(ex) {}
  void spawn(boost::asio::awaitable<void> work) {
    ++pending_;
    boost::asio::co_spawn(ex_, std::move(work), [this](std::exception_ptr e) {
      if (e) ++failures_;
      if (--pending_ == 0) timer_.cancel();
    });
  }
  boost::asio::awaitable<void> wait() {
    while (pending_ > 0) {
      timer_.expires_at(boost::asio::steady_timer::time_point::max());
      co_await timer_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    }
  }
  int failures() const { return failures_; }  // coroutines that ended with an exception

 private:
  boost::asio::any_io_executor ex_;
  boost::asio::steady_timer timer_;
  int pending_ = 0;
  int failures_ = 0;
};

// Runs `work` on `io` until it ends (at most `limit`); a timeout or an exception fails the test.
inline void run_coroutine(boost::asio::io_context& io, boost::asio::awaitable<void> work,
                          std::chrono::milliseconds limit) {
  using Clock = std::chrono::steady_clock;
  bool done = false;
  std::exception_ptr error;
  boost::asio::co_spawn(io, std::move(work), [&](std::exception_ptr e) {
    done = true;
    error = e;
  });
  io.restart();
  auto deadline = Clock::now() + limit;
  while (!done && Clock::now() < deadline) io.run_one_for(deadline - Clock::now());
  ASSERT_TRUE(done) << "the test coroutine did not finish within " << limit.count() << " ms";
  if (error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      FAIL() << "exception: " << e.what();
    }
  }
}

}  // namespace agentd::test

// In a coroutine returning awaitable<void>: records a failure and returns when `cond` is false.
#define CO_ASSERT(cond)                            \
  do {                                             \
    if (!(cond)) {                                 \
      ADD_FAILURE() << "assertion failed: " #cond; \
      co_return;                                   \
    }                                              \
  } while (0)
