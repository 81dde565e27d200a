// SSE framing, parsing, and the bounded stream between a producer and a connection.
#include "agentd/net/sse.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

namespace agentd::net {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

TEST(SseFormat, FieldsAndMultilineData) {
  EXPECT_EQ(format_sse({"7", "tick", "hello", 1500}), "id: 7\nevent: tick\nretry: 1500\ndata: hello\n\n");
  EXPECT_EQ(format_sse({"", "", "a\nb\r\nc\rd", std::nullopt}), "data: a\ndata: b\ndata: c\ndata: d\n\n");
  EXPECT_EQ(format_sse({"", "", "", std::nullopt}), "data: \n\n");
  EXPECT_EQ(format_sse({"1\n2", "x\ry", "d", std::nullopt}), "id: 1 2\nevent: x y\ndata: d\n\n");
  EXPECT_EQ(format_sse_comment("keep\nalive"), ": keep alive\n\n");
}

TEST(SseParser, ParsesAcrossArbitraryChunkBoundaries) {
  std::string wire = "id: 1\nevent: a\ndata: x\ndata: y\n\n: comment\ndata:no-space\n\n";
  for (std::size_t step = 1; step <= wire.size(); ++step) {
    SseParser p;
    std::vector<SseEvent> all;
    for (std::size_t i = 0; i < wire.size(); i += step) {
      auto evs = p.feed(std::string_view(wire).substr(i, step));
      all.insert(all.end(), evs.begin(), evs.end());
    }
    ASSERT_EQ(all.size(), 2u) << "step " << step;
    EXPECT_EQ(all[0].id, "1");
    EXPECT_EQ(all[0].event, "a");
    EXPECT_EQ(all[0].data, "x\ny");
    EXPECT_EQ(all[1].event, "message");
    EXPECT_EQ(all[1].data, "no-space");
    EXPECT_EQ(all[1].id, "1");  // the last id persists
  }
}

TEST(SseParser, CrLfAndLoneCrLineEnds) {
  SseParser p;
  auto evs = p.feed("data: a\r\n\r\ndata: b\r\rdata: c\r");
  ASSERT_EQ(evs.size(), 2u);
  EXPECT_EQ(evs[0].data, "a");
  EXPECT_EQ(evs[1].data, "b");
  // The CR that ended the chunk is followed by an LF: one line end, not two.
  evs = p.feed("\ndata: d\n\n");
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, "c\nd");
}

TEST(SseParser, RetryDigitsOnlyAndNoDispatchWithoutData) {
  SseParser p;
  auto evs = p.feed("retry: 12x\nevent: e\n\nretry: 300\ndata: z\n\n");
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].retry_ms, 300);
  EXPECT_EQ(evs[0].event, "message");  // the event type without data was dropped
}

TEST(SseParser, RoundTrip) {
  SseEvent e{"42", "update", "line1\nline2", std::nullopt};
  SseParser p;
  auto evs = p.feed(format_sse(e));
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].id, "42");
  EXPECT_EQ(evs[0].event, "update");
  EXPECT_EQ(evs[0].data, "line1\nline2");
}

// Runs `body` as a coroutine on a fresh io_context with a time limit.
template <class F>
void run_coro(F body) {
  asio::io_context io;
  bool done = false;
  asio::co_spawn(io, body(io.get_executor()), [&](std::exception_ptr e) {
    done = true;
    if (e) std::rethrow_exception(e);
  });
  io.run_for(5s);
  ASSERT_TRUE(done) << "coroutine did not finish within 5s";
}

TEST(SseStream, DeliversInOrderThenEndsAfterFinish) {
  run_coro([](asio::any_io_executor ex) -> asio::awaitable<void> {
    auto s = std::make_shared<SseStream>(ex, 8);
    EXPECT_TRUE(s->push({"1", "", "a", std::nullopt}));
    EXPECT_TRUE(s->push({"2", "", "b", std::nullopt}));
    s->finish();
    EXPECT_FALSE(s->push({"3", "", "c", std::nullopt}));
    auto a = co_await s->next(1s);
    auto b = co_await s->next(1s);
    auto end = co_await s->next(1s);
    EXPECT_EQ(a->data, "a");
    EXPECT_EQ(b->data, "b");
    EXPECT_FALSE(end);
    EXPECT_TRUE(s->ended());
  });
}

TEST(SseStream, KeepaliveIntervalYieldsNothingButIsNotTheEnd) {
  run_coro([](asio::any_io_executor ex) -> asio::awaitable<void> {
    auto s = std::make_shared<SseStream>(ex, 8);
    auto started = std::chrono::steady_clock::now();
    auto ev = co_await s->next(50ms);
    EXPECT_FALSE(ev);
    EXPECT_FALSE(s->ended());
    EXPECT_GE(std::chrono::steady_clock::now() - started, 45ms);
  });
}

TEST(SseStream, OverflowClosesAndNotifies) {
  run_coro([](asio::any_io_executor ex) -> asio::awaitable<void> {
    auto s = std::make_shared<SseStream>(ex, 2);
    std::optional<SseStream::State> seen;
    s->on_close([&](SseStream::State st) { seen = st; });
    EXPECT_TRUE(s->push({"", "", "1", std::nullopt}));
    EXPECT_TRUE(s->push({"", "", "2", std::nullopt}));
    EXPECT_FALSE(s->push({"", "", "3", std::nullopt}));
    EXPECT_EQ(s->state(), SseStream::State::overflow);
    EXPECT_EQ(seen, SseStream::State::overflow);
    EXPECT_EQ(s->queued(), 0u);  // nothing more is sent to a client that stopped reading
    auto ev = co_await s->next(1s);
    EXPECT_FALSE(ev);
    EXPECT_TRUE(s->ended());
  });
}

TEST(SseStream, PushWakesAWaitingConsumer) {
  run_coro([](asio::any_io_executor ex) -> asio::awaitable<void> {
    auto s = std::make_shared<SseStream>(ex, 4);
    asio::steady_timer t(ex, 20ms);
    t.async_wait([s](boost::system::error_code) { s->push({"9", "", "late", std::nullopt}); });
    auto started = std::chrono::steady_clock::now();
    auto ev = co_await s->next(2s);
    EXPECT_TRUE(ev);
    EXPECT_LT(std::chrono::steady_clock::now() - started, 1s);
  });
}

}  // namespace
}  // namespace agentd::net
