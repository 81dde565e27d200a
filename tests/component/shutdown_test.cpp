// Graceful shutdown: stop accepting, finish what is in flight, cut what outlives the grace.
#include <nlohmann/json.hpp>

#include <thread>

#include "component/fixture.hpp"

namespace agentd::test {
namespace {

using namespace std::chrono_literals;

void wait_started(TestServer& s, int n) {
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (s.slow_started.load() < n && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(2ms);
  }
  ASSERT_EQ(s.slow_started.load(), n);
}

TEST(Shutdown, RequestInFlightFinishesAndNewConnectionsAreRefused) {
  TestServer s;
  auto idle = Connection::open(s.port());
  ASSERT_TRUE(idle);
  auto busy = Connection::open(s.port());
  ASSERT_TRUE(busy);
  ASSERT_TRUE(busy->send(build_request("GET", "/slow?ms=700", auth())));
  wait_started(s, 1);

  s.shutdown(5s);
  // Idle connections are closed at once.
  EXPECT_TRUE(idle->wait_closed(2s));
  // The listener is gone.
  bool refused = false;
  for (int i = 0; i < 100 && !refused; ++i) {
    refused = Connection::open(s.port()) == nullptr;
    if (!refused) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(refused);
  // The request in flight is answered, and told the connection closes.
  auto r = busy->read_response(5s);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(nlohmann::json::parse(r->body)["slept"], 700);
  EXPECT_EQ(r->header("connection"), "close");
  EXPECT_TRUE(s.wait_shutdown_done(3s));
}

TEST(Shutdown, WorkOutlivingTheGraceIsCut) {
  TestServer s;
  auto busy = Connection::open(s.port());
  ASSERT_TRUE(busy);
  ASSERT_TRUE(busy->send(build_request("GET", "/slow?ms=30000", auth())));
  wait_started(s, 1);
  auto started = std::chrono::steady_clock::now();
  s.shutdown(200ms);
  EXPECT_FALSE(busy->read_response(5s));  // closed without an answer
  EXPECT_TRUE(s.wait_shutdown_done(3s));
  EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);
}

TEST(Shutdown, EventStreamsAreEndedAtOnce) {
  TestServer s;
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send(build_request("GET", "/events/hold", auth())));
  ASSERT_TRUE(c->read_head(2s));
  s.shutdown(10s);
  std::string raw;
  EXPECT_TRUE(c->read_until(raw, "0\r\n\r\n", 3s));  // the chunked stream is terminated
  EXPECT_TRUE(c->wait_closed(3s));
  EXPECT_TRUE(s.wait_shutdown_done(3s));
}

TEST(Shutdown, ReadinessStaysHonestUntilTheEnd) {
  TestServer s;
  auto r = request(s.port(), "GET", "/readyz", auth());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  s.shutdown(1s);
  EXPECT_TRUE(s.wait_shutdown_done(3s));
}

}  // namespace
}  // namespace agentd::test
