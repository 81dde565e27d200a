// Event streams: immediate headers, keepalives, ids, slow readers, clean ends.
#include "agentd/net/sse.hpp"

#include <thread>

#include "component/fixture.hpp"

namespace agentd::test {
namespace {

using namespace std::chrono_literals;

TEST(Sse, HeadersArriveBeforeAnyEventAndKeepalivesFollow) {
  TestServer s;  // keepalive every 200ms
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send(build_request("GET", "/events/hold", auth())));
  auto head = c->read_head(2s);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("content-type"), "text/event-stream");
  EXPECT_EQ(head->header("cache-control"), "no-cache");
  EXPECT_EQ(head->header("transfer-encoding"), "chunked");
  EXPECT_FALSE(head->header("x-request-id").empty());

  std::string raw;
  ASSERT_TRUE(c->read_until(raw, ": keepalive", 2s));
  net::SseParser parser;
  auto events = parser.feed(dechunk(raw));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].event, "hello");
  EXPECT_EQ(events[0].id, "1");
  EXPECT_EQ(events[0].data, "{\"hi\":true}");
  EXPECT_EQ(s.metric("agentd_sse_clients"), 1);
}

TEST(Sse, AllEventsArriveWithIdsAndTheStreamEndsCleanly) {
  TestServer s;
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send(build_request("GET", "/events?n=50&size=1000&delay=1", auth())));
  auto r = c->read_response(10s);
  ASSERT_TRUE(r);
  net::SseParser parser;
  auto events = parser.feed(r->body);
  ASSERT_EQ(events.size(), 50u);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(events[i].id, std::to_string(i + 1));
    EXPECT_EQ(events[i].event, "tick");
    EXPECT_EQ(events[i].data.size(), 1000u);
  }
  // The connection stays usable after a finished stream.
  ASSERT_TRUE(c->send(build_request("GET", "/healthz")));
  auto next = c->read_response();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->status, 200);
}

TEST(Sse, ClientThatStopsReadingIsDisconnectedAndCounted) {
  ServerOptions o;
  o.config.sse_max_queued = 16;
  o.config.write_timeout = 10s;  // the queue bound must act long before the write deadline
  TestServer s(o);
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  c->shrink_receive_buffer();
  ASSERT_TRUE(c->send(build_request("GET", "/events/flood", auth())));
  // Do not read. The producer must be refused and the connection dropped.
  auto deadline = std::chrono::steady_clock::now() + 8s;
  while (s.producer_state.load() < 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(s.producer_state.load(), static_cast<int>(net::SseStream::State::overflow));
  // Dropped with a reset: the client sees it at once, however much was left unsent.
  EXPECT_TRUE(c->wait_closed(3s));
  for (int i = 0; i < 200 && s.connections() != 0; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(s.connections(), 0u);
  EXPECT_EQ(s.metric("agentd_sse_slow_reader_disconnects_total"), 1);
  for (int i = 0; i < 200 && s.metric("agentd_sse_clients") != 0; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(s.metric("agentd_sse_clients"), 0);
  EXPECT_LT(s.events_pushed.load(), 100000);
}

TEST(Sse, ClientThatLeavesStopsTheProducer) {
  TestServer s;
  {
    auto c = Connection::open(s.port());
    ASSERT_TRUE(c);
    ASSERT_TRUE(c->send(build_request("GET", "/events/hold", auth())));
    ASSERT_TRUE(c->read_head(2s));
  }  // closed: the next keepalive write fails
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (s.producer_state.load() < 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(s.producer_state.load(), static_cast<int>(net::SseStream::State::client_gone));
}

}  // namespace
}  // namespace agentd::test
