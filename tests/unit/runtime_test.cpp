// The blocking pool and deadlines for awaitables.
#include "agentd/core/runtime.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <gtest/gtest.h>

#include <time.h>

#include <atomic>
#include <functional>
#include <thread>

namespace agentd::core {
namespace {

using namespace std::chrono_literals;

template <class F>
void run_coro(asio::io_context& io, F body) {
  bool done = false;
  asio::co_spawn(io, body(), [&](std::exception_ptr e) {
    done = true;
    if (e) std::rethrow_exception(e);
  });
  io.run_for(5s);
  ASSERT_TRUE(done) << "coroutine did not finish within 5s";
}

TEST(BlockingPool, RunsOffTheLoopAndResumesOnIt) {
  asio::io_context io;
  BlockingPool pool(2, 4);
  auto loop_thread = std::this_thread::get_id();
  run_coro(io, [&]() -> asio::awaitable<void> {
    std::thread::id worker;
    auto r = co_await pool.run([&worker] {
      worker = std::this_thread::get_id();
      return 42;
    });
    EXPECT_TRUE(r);
    EXPECT_EQ(*r, 42);
    EXPECT_NE(worker, loop_thread);
    EXPECT_EQ(std::this_thread::get_id(), loop_thread);
    EXPECT_EQ(pool.pending(), 0u);
  });
}

TEST(BlockingPool, ExceptionsReachTheCaller) {
  asio::io_context io;
  BlockingPool pool(1, 4);
  run_coro(io, [&]() -> asio::awaitable<void> {
    bool caught = false;
    try {
      co_await pool.run([]() -> int { throw std::runtime_error("boom"); });
    } catch (const std::runtime_error& e) {
      caught = std::string(e.what()) == "boom";
    }
    EXPECT_TRUE(caught);
  });
}

TEST(BlockingPool, RefusesWorkBeyondItsBound) {
  asio::io_context io;
  BlockingPool pool(1, 1);
  std::atomic<bool> release{false};
  int refused = 0, finished = 0;
  auto slow = [&]() -> asio::awaitable<void> {
    auto r = co_await pool.run([&release] {
      while (!release) std::this_thread::sleep_for(1ms);
      return 1;
    });
    if (r) ++finished;
  };
  auto extra = [&]() -> asio::awaitable<void> {
    auto r = co_await pool.run([] { return 2; });
    if (!r && r.error() == make_error_code(Errc::unavailable)) ++refused;
    release = true;
  };
  asio::co_spawn(io, slow(), asio::detached);
  asio::co_spawn(io, extra(), asio::detached);
  io.run_for(5s);
  EXPECT_EQ(refused, 1);
  EXPECT_EQ(finished, 1);
}

TEST(WithTimeout, TimesOutOrPassesTheValueThrough) {
  asio::io_context io;
  run_coro(io, [&]() -> asio::awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    auto slow = [](asio::any_io_executor e) -> asio::awaitable<int> {
      asio::steady_timer t(e, 10s);
      co_await t.async_wait(asio::use_awaitable);
      co_return 1;
    };
    auto fast = [](asio::any_io_executor e) -> asio::awaitable<int> {
      asio::steady_timer t(e, 1ms);
      co_await t.async_wait(asio::use_awaitable);
      co_return 7;
    };
    auto started = std::chrono::steady_clock::now();
    auto r1 = co_await with_timeout(slow(ex), 50ms);
    EXPECT_FALSE(r1);
    EXPECT_EQ(r1.error(), make_error_code(Errc::timeout));
    EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);
    auto r2 = co_await with_timeout(fast(ex), 2s);
    EXPECT_TRUE(r2);
    if (r2) {
      EXPECT_EQ(*r2, 7);
    }
  });
}

std::chrono::nanoseconds thread_cpu_time() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

TEST(RunLoop, BusyPollRunsWorkFromOtherThreadsAndReturnsWhenTheWorkIsDone) {
  for (auto poll : {0us, 200us}) {
    asio::io_context io(1);
    std::atomic<int> ran{0};
    // Work posted from another thread while the loop polls or sleeps, then a timer: run_loop
    // returns once none is left, like io.run().
    auto guard = asio::make_work_guard(io);
    std::thread other([&] {
      for (int i = 0; i < 100; ++i) {
        asio::post(io, [&] { ++ran; });
        if (i % 10 == 0) std::this_thread::sleep_for(1ms);
      }
      asio::post(io, [&] { guard.reset(); });
    });
    asio::steady_timer t(io, 20ms);
    t.async_wait([&](boost::system::error_code) { ++ran; });
    auto started = std::chrono::steady_clock::now();
    run_loop(io, poll);
    other.join();
    EXPECT_EQ(ran.load(), 101) << "busy_poll " << poll.count() << "us";
    EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);
  }
}

TEST(RunLoop, BusyPollSleepsWhenIdleAndStopEndsIt) {
  asio::io_context io(1);
  int ticks = 0;
  asio::steady_timer t(io);
  std::function<void(boost::system::error_code)> tick = [&](boost::system::error_code) {
    if (++ticks == 5) {
      io.stop();
      return;
    }
    t.expires_after(60ms);
    t.async_wait(tick);
  };
  t.expires_after(60ms);
  t.async_wait(tick);
  auto cpu0 = thread_cpu_time();
  auto started = std::chrono::steady_clock::now();
  run_loop(io, 500us);
  auto wall = std::chrono::steady_clock::now() - started;
  auto cpu = thread_cpu_time() - cpu0;
  EXPECT_EQ(ticks, 5);
  EXPECT_TRUE(io.stopped());
  // Five timer turns 60 ms apart: the loop polls for 0.5 ms after each and sleeps the rest.
  // Spinning through the waits would cost about the whole 300 ms.
  EXPECT_GE(wall, 280ms);
  EXPECT_LT(cpu, 100ms) << "the loop spun while idle";
}

}  // namespace
}  // namespace agentd::core
