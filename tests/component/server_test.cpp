// Routing, authentication, errors, keep-alive, CORS and metrics over real sockets.
#include <nlohmann/json.hpp>

#include <thread>

#include "component/fixture.hpp"

namespace agentd::test {
namespace {

using nlohmann::json;

TEST(Server, HealthzIsOpenAndCarriesARequestId) {
  TestServer s;
  auto r = request(s.port(), "GET", "/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["status"], "ok");
  EXPECT_EQ(r->header("x-request-id").size(), 24u);
}

TEST(Server, EchoesAValidRequestIdAndReplacesABadOne) {
  TestServer s;
  auto r = request(s.port(), "GET", "/healthz", {{"X-Request-Id", "trace-42.a:b"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("x-request-id"), "trace-42.a:b");
  r = request(s.port(), "GET", "/healthz", {{"X-Request-Id", "bad id with spaces"}});
  ASSERT_TRUE(r);
  EXPECT_NE(r->header("x-request-id"), "bad id with spaces");
  EXPECT_EQ(r->header("x-request-id").size(), 24u);
}

TEST(Server, MissingTokenIs401WithChallenge) {
  TestServer s;
  auto r = request(s.port(), "GET", "/readyz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(r->header("www-authenticate"), "Bearer realm=\"agentd\"");
  auto body = json::parse(r->body);
  EXPECT_EQ(body["error"]["type"], "authentication_error");
  EXPECT_EQ(body["error"]["code"], "missing_token");
}

TEST(Server, WrongTokenIs401InvalidToken) {
  TestServer s;
  auto r = request(s.port(), "GET", "/readyz", auth("not-the-right-token-at-all"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "invalid_token");
  EXPECT_NE(r->header("www-authenticate").find("invalid_token"), std::string::npos);
  // Unknown paths do not reveal themselves to unauthenticated callers either.
  r = request(s.port(), "GET", "/nowhere");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
}

TEST(Server, RightTokenReachesReadyz) {
  TestServer s;
  auto r = request(s.port(), "GET", "/readyz", auth());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  auto body = json::parse(r->body);
  EXPECT_EQ(body["status"], "ready");
  EXPECT_EQ(body["checks"]["test"]["ok"], true);
}

TEST(Server, ScopeDenialIs403NotA401) {
  TestServer s;
  auto r = request(s.port(), "GET", "/metrics", auth(kLimitedToken));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403);
  auto body = json::parse(r->body);
  EXPECT_EQ(body["error"]["type"], "permission_error");
  EXPECT_EQ(body["error"]["code"], "insufficient_scope");
  // The same client may use routes that need no particular scope.
  r = request(s.port(), "GET", "/items/7", auth(kLimitedToken));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["client"], "limited");
}

TEST(Server, UnknownRouteIs404AndWrongMethodIs405WithAllow) {
  TestServer s;
  auto r = request(s.port(), "GET", "/v1/nothing-here", auth());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(json::parse(r->body)["error"]["type"], "not_found_error");
  r = request(s.port(), "DELETE", "/echo", auth());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->header("allow"), "POST");
}

TEST(Server, PathParametersArePercentDecoded) {
  TestServer s;
  auto r = request(s.port(), "GET", "/items/a%20b?x=1", auth());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["id"], "a b");
}

TEST(Server, BadJsonIs400InvalidRequest) {
  TestServer s;
  auto h = auth();
  h.emplace_back("Content-Type", "application/json");
  auto r = request(s.port(), "POST", "/echo", h, "{\"a\": [1, 2");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  auto body = json::parse(r->body);
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_NE(body["error"]["message"].get<std::string>().find("not valid JSON"), std::string::npos);
  r = request(s.port(), "POST", "/echo", h, "{\"a\": [1, 2]}");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["received"]["a"][1], 2);
}

TEST(Server, MalformedHttpIs400AndCloses) {
  TestServer s;
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send("GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n"));
  auto r = c->read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(json::parse(r->body)["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(c->wait_closed(std::chrono::seconds(3)));
}

TEST(Server, AbsoluteFormTargetIs400) {
  TestServer s;
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send("GET http://evil.example/healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r = c->read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
}

TEST(Server, KeepAliveAndPipelinedRequestsAnswerInOrder) {
  TestServer s;
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  std::string two = build_request("GET", "/items/first", auth()) +
                    build_request("GET", "/items/second", auth());
  ASSERT_TRUE(c->send(two));
  auto a = c->read_response();
  auto b = c->read_response();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(json::parse(a->body)["id"], "first");
  EXPECT_EQ(json::parse(b->body)["id"], "second");
  ASSERT_TRUE(c->send(build_request("GET", "/healthz")));
  auto third = c->read_response();
  ASSERT_TRUE(third);
  EXPECT_EQ(third->status, 200);
}

// The server parses what one read brought without further I/O and reads on only when the
// parser wants more: requests split inside the request line, a header, the blank line and the
// body, with the next request's start riding on the previous body's last piece.
TEST(Server, RequestsSplitAnywhereAndRunTogetherAreParsedWhole) {
  TestServer s;
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  auto h = auth();
  h.emplace_back("Content-Type", "application/json");
  std::string body1 = "{\"x\":1}\n";
  std::string body2 = "{\"x\":\"second\"}\n";
  auto h1 = h;
  h1.emplace_back("Content-Length", std::to_string(body1.size()));
  auto h2 = h;
  h2.emplace_back("Content-Length", std::to_string(body2.size()));
  std::string all = build_request("POST", "/echo", h1) + body1 + build_request("POST", "/echo", h2) + body2;
  std::size_t first_end = all.find("\r\n\r\n") + 4 + body1.size();
  // Cuts: in the request line, inside a header, before the blank line's last byte, in the
  // body, and after the first request's end plus a few bytes of the second.
  std::vector<std::size_t> cuts = {7, all.find("\r\n") + 9, all.find("\r\n\r\n") + 3,
                                   all.find("\r\n\r\n") + 6, first_end + 12};
  std::size_t at = 0;
  for (auto cut : cuts) {
    ASSERT_LT(at, cut);
    ASSERT_TRUE(c->send(all.substr(at, cut - at)));
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    at = cut;
  }
  ASSERT_TRUE(c->send(all.substr(at)));
  auto a = c->read_response();
  auto b = c->read_response();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->status, 200);
  EXPECT_EQ(b->status, 200);
  EXPECT_EQ(json::parse(a->body)["received"]["x"], 1);
  EXPECT_EQ(json::parse(b->body)["received"]["x"], "second");
}

TEST(Server, HeadAnswersHeadersOnly) {
  TestServer s;
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send(build_request("HEAD", "/healthz")));
  auto r = c->read_response(std::chrono::seconds(5), true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("content-length"), "15");
  // The next response on the connection starts right away: no body bytes were sent.
  ASSERT_TRUE(c->send(build_request("GET", "/healthz")));
  auto next = c->read_response();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "{\"status\":\"ok\"}");
}

TEST(Server, ExpectContinueGetsA100First) {
  TestServer s;
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  auto h = auth();
  h.emplace_back("Expect", "100-continue");
  h.emplace_back("Content-Length", "9");
  ASSERT_TRUE(c->send(build_request("POST", "/echo", h)));
  std::string got = c->read_some(std::chrono::seconds(3));
  EXPECT_EQ(got.rfind("HTTP/1.1 100 Continue", 0), 0u) << got;
  ASSERT_TRUE(c->send("{\"x\":42}\n"));
  auto r = c->read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["received"]["x"], 42);
}

TEST(Server, HandlerDeadlineIs504) {
  ServerOptions o;
  o.config.handler_timeout = std::chrono::milliseconds(150);
  TestServer s(o);
  auto r = request(s.port(), "GET", "/slow?ms=3000", auth());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504);
  EXPECT_EQ(json::parse(r->body)["error"]["type"], "server_error");
}

// The deadline is one timer per connection, re-armed lazily: each request on a kept-alive
// connection still gets its own, and a connection whose handler was cut off (its coroutine's
// cancellation state reset) goes on serving.
TEST(Server, HandlerDeadlineAppliesToEachRequestOnAConnection) {
  ServerOptions o;
  o.config.handler_timeout = std::chrono::milliseconds(150);
  TestServer s(o);
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  // Each within its own deadline, together well past one.
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(c->send(build_request("GET", "/slow?ms=100", auth())));
    auto r = c->read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << "request " << i;
  }
  auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(c->send(build_request("GET", "/slow?ms=3000", auth())));
  auto r = c->read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(c->send(build_request("GET", "/slow?ms=10", auth())));
    r = c->read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << "after the cut-off, request " << i;
  }
  ASSERT_TRUE(c->send(build_request("GET", "/slow?ms=3000", auth())));
  r = c->read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504);
}

TEST(Server, CorsPreflightAndSimpleResponses) {
  ServerOptions o;
  o.config.cors.allow_origins = {"https://chat.example.com"};
  TestServer s(o);
  auto r = request(s.port(), "OPTIONS", "/echo",
                   {{"Origin", "https://chat.example.com"},
                    {"Access-Control-Request-Method", "POST"},
                    {"Access-Control-Request-Headers", "authorization, content-type"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 204);
  EXPECT_EQ(r->header("access-control-allow-origin"), "https://chat.example.com");
  EXPECT_EQ(r->header("access-control-allow-methods"), "POST");
  EXPECT_NE(r->header("access-control-allow-headers").find("authorization"), std::string::npos);
  EXPECT_EQ(r->header("access-control-max-age"), "600");

  r = request(s.port(), "OPTIONS", "/echo",
              {{"Origin", "https://evil.example"}, {"Access-Control-Request-Method", "POST"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403);
  EXPECT_EQ(r->header("access-control-allow-origin"), "");

  auto h = auth();
  h.emplace_back("Origin", "https://chat.example.com");
  r = request(s.port(), "GET", "/items/1", h);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("access-control-allow-origin"), "https://chat.example.com");
  EXPECT_EQ(r->header("access-control-expose-headers"), "x-request-id, mcp-session-id");
}

TEST(Server, MetricsCountRequestsByRouteAndStatus) {
  TestServer s;
  ASSERT_TRUE(request(s.port(), "GET", "/healthz"));
  ASSERT_TRUE(request(s.port(), "GET", "/healthz"));
  ASSERT_TRUE(request(s.port(), "GET", "/items/9", auth()));
  auto r = request(s.port(), "GET", "/metrics", auth());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(r->body.find("agentd_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 2"),
            std::string::npos)
      << r->body;
  EXPECT_NE(r->body.find("agentd_http_request_duration_seconds_count{route=\"/items/{id}\"} 1"),
            std::string::npos);
  EXPECT_NE(r->body.find("agentd_http_connections_open"), std::string::npos);
}

}  // namespace
}  // namespace agentd::test
