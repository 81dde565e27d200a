// Size limits, deadlines and connection limits against misbehaving clients.
#include <nlohmann/json.hpp>

#include <thread>

#include "component/fixture.hpp"

namespace agentd::test {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

ServerOptions small_limits() {
  ServerOptions o;
  o.config.max_body_bytes = 1024;
  o.config.max_header_bytes = 2048;
  return o;
}

TEST(Limits, DeclaredOversizedBodyIs413BeforeReadingIt) {
  TestServer s(small_limits());
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  auto h = auth();
  h.emplace_back("Content-Length", "1000000");
  ASSERT_TRUE(c->send(build_request("POST", "/echo", h)));
  auto r = c->read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(json::parse(r->body)["error"]["message"].get<std::string>().find("1024"),
            std::string::npos);
  EXPECT_TRUE(c->wait_closed(3s));
}

TEST(Limits, ChunkedBodyOverTheLimitIs413) {
  TestServer s(small_limits());
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  auto h = auth();
  h.emplace_back("Transfer-Encoding", "chunked");
  std::string body;
  for (int i = 0; i < 4; ++i) body += "200\r\n" + std::string(512, 'a') + "\r\n";
  body += "0\r\n\r\n";
  ASSERT_TRUE(c->send(build_request("POST", "/echo", h) + body));
  auto r = c->read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
}

TEST(Limits, BodyAtTheLimitIsAccepted) {
  TestServer s(small_limits());
  std::string body = "{\"k\":\"" + std::string(1024 - 8, 'v') + "\"}";
  ASSERT_EQ(body.size(), 1024u);
  auto r = request(s.port(), "POST", "/echo", auth(), body);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST(Limits, HeaderFloodIs431) {
  TestServer s(small_limits());
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  std::string req = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 200; ++i) req += "X-Flood-" + std::to_string(i) + ": " + std::string(40, 'z') + "\r\n";
  req += "\r\n";
  c->send(req);  // the server may close before it has read everything
  auto r = c->read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 431);
  EXPECT_TRUE(c->wait_closed(3s));
}

TEST(Limits, SlowlorisIsDroppedAtTheHeaderDeadline) {
  ServerOptions o;
  o.config.header_timeout = 400ms;
  TestServer s(o);
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  std::string req = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + std::string(100, 's');
  auto started = std::chrono::steady_clock::now();
  bool dropped = false;
  // One byte every 50ms: the headers would take 7s; the deadline is 400ms.
  for (char ch : req) {
    if (!c->send(std::string_view(&ch, 1))) {
      dropped = true;
      break;
    }
    if (c->wait_closed(50ms)) {
      dropped = true;
      break;
    }
  }
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_TRUE(dropped);
  EXPECT_LT(took, 3s);
  EXPECT_GE(s.wait_metric("agentd_http_timeouts_total", 1).value_or(0), 1);
}

TEST(Limits, IdleKeepAliveConnectionIsClosedAfterIdleTimeout) {
  ServerOptions o;
  o.config.idle_timeout = 300ms;
  TestServer s(o);
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send(build_request("GET", "/healthz")));
  ASSERT_TRUE(c->read_response());
  auto started = std::chrono::steady_clock::now();
  EXPECT_TRUE(c->wait_closed(3s));
  EXPECT_GE(std::chrono::steady_clock::now() - started, 250ms);
}

TEST(Limits, ConnectionsOverTheLimitGet503AndIdleOnesExpire) {
  ServerOptions o;
  o.config.max_connections = 8;
  o.config.header_timeout = 600ms;
  TestServer s(o);
  std::vector<std::unique_ptr<Connection>> idle;
  for (int i = 0; i < 8; ++i) {
    idle.push_back(Connection::open(s.port()));
    ASSERT_TRUE(idle.back());
  }
  // Wait until the server has taken all eight.
  for (int i = 0; i < 200 && s.connections() < 8; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(s.connections(), 8u);

  auto extra = Connection::open(s.port());
  ASSERT_TRUE(extra);
  auto r = extra->read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "too_many_connections");
  EXPECT_EQ(s.metric("agentd_http_connections_rejected_total"), 1);

  // The idle ones never sent a request: the header deadline frees their slots.
  for (auto& c : idle) EXPECT_TRUE(c->wait_closed(3s));
  for (int i = 0; i < 200 && s.connections() > 0; ++i) std::this_thread::sleep_for(5ms);
  auto ok = request(s.port(), "GET", "/healthz");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

TEST(Limits, MaxRequestsPerConnectionClosesAfterTheLast) {
  ServerOptions o;
  o.config.max_requests_per_connection = 2;
  TestServer s(o);
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send(build_request("GET", "/healthz")));
  auto a = c->read_response();
  ASSERT_TRUE(a);
  EXPECT_NE(a->header("connection"), "close");
  ASSERT_TRUE(c->send(build_request("GET", "/healthz")));
  auto b = c->read_response();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->header("connection"), "close");
  EXPECT_TRUE(c->wait_closed(3s));
}

}  // namespace
}  // namespace agentd::test
