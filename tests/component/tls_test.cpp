// HTTPS with a certificate made at test time; the client verifies it.
#include <nlohmann/json.hpp>

#include "component/fixture.hpp"

namespace agentd::test {
namespace {

using namespace std::chrono_literals;

TEST(Tls, VerifiedHttpsRequestsWork) {
  ServerOptions o;
  o.tls = true;
  TestServer s(o);
  auto r = request(s.port(), "GET", "/healthz", {}, {}, s.tls());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  r = request(s.port(), "GET", "/items/tls", auth(), {}, s.tls());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(nlohmann::json::parse(r->body)["client"], "tester");
  r = request(s.port(), "GET", "/readyz", {}, {}, s.tls());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
}

TEST(Tls, KeepAliveAndEventStreamsOverTls) {
  ServerOptions o;
  o.tls = true;
  TestServer s(o);
  auto c = Connection::open(s.port(), s.tls());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send(build_request("GET", "/healthz")));
  ASSERT_TRUE(c->read_response());
  ASSERT_TRUE(c->send(build_request("GET", "/events?n=5", auth())));
  auto r = c->read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("content-type"), "text/event-stream");
  EXPECT_NE(r->body.find("id: 5\n"), std::string::npos);
}

TEST(Tls, PlainHttpOnTheTlsPortGetsNoResponse) {
  ServerOptions o;
  o.tls = true;
  TestServer s(o);
  auto c = Connection::open(s.port());
  ASSERT_TRUE(c);
  c->send(build_request("GET", "/healthz"));
  auto r = c->read_response(3s);
  EXPECT_FALSE(r && r->status == 200);
  EXPECT_TRUE(c->wait_closed(3s));
}

TEST(Tls, ClientThatDoesNotTrustTheCertificateFails) {
  ServerOptions o;
  o.tls = true;
  TestServer s(o);
  auto other = make_test_cert();  // a different self-signed certificate
  EXPECT_EQ(Connection::open(s.port(), TlsClientOptions{other.cert_file}), nullptr);
  // The server survives the failed handshake.
  auto r = request(s.port(), "GET", "/healthz", {}, {}, s.tls());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

}  // namespace
}  // namespace agentd::test
