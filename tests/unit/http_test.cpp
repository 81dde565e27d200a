// HTTP value types and the byte-level request parse shared with the server.
#include "agentd/net/http.hpp"

#include <gtest/gtest.h>

#include <set>

#include "net/request_conv.hpp"

namespace agentd::net {
namespace {

TEST(Http, HeadersAreCaseInsensitive) {
  Headers h;
  h.add("Content-Type", "a");
  h.add("X-Dup", "1");
  h.add("x-dup", "2");
  EXPECT_EQ(h.get("content-type"), "a");
  EXPECT_EQ(h.get("X-DUP"), "1");
  h.set("X-Dup", "3");
  EXPECT_EQ(h.size(), 2u);
  EXPECT_EQ(h.get("x-dup"), "3");
  h.remove("CONTENT-TYPE");
  EXPECT_FALSE(h.get("content-type"));
}

TEST(Http, QueryParameters) {
  Request r;
  r.query = "a=1&b=x%20y&c=p+q&flag&a=2";
  EXPECT_EQ(r.query_param("a"), "1");
  EXPECT_EQ(r.query_param("b"), "x y");
  EXPECT_EQ(r.query_param("c"), "p q");
  EXPECT_EQ(r.query_param("flag"), "");
  EXPECT_FALSE(r.query_param("missing"));
}

TEST(Http, PercentDecoding) {
  EXPECT_EQ(percent_decode("a%2Fb%zz%4", false), "a/b%zz%4");
  EXPECT_EQ(percent_decode("a+b", false), "a+b");
  EXPECT_EQ(percent_decode("a+b", true), "a b");
}

TEST(Http, ErrorBodiesAndTypes) {
  auto r = Response::error(404, "nope");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.headers.get("content-type"), "application/json");
  auto j = nlohmann::json::parse(r.body);
  EXPECT_EQ(j["error"]["message"], "nope");
  EXPECT_EQ(j["error"]["type"], "not_found_error");
  EXPECT_EQ(j["error"]["code"], "not_found");
  EXPECT_EQ(j.size(), 1u);
  EXPECT_EQ(j["error"].size(), 3u);
  EXPECT_EQ(error_type_for(400), "invalid_request_error");
  EXPECT_EQ(error_type_for(401), "authentication_error");
  EXPECT_EQ(error_type_for(403), "permission_error");
  EXPECT_EQ(error_type_for(429), "rate_limit_error");
  EXPECT_EQ(error_type_for(500), "server_error");
  EXPECT_EQ(error_type_for(503), "server_error");
  EXPECT_EQ(nlohmann::json::parse(Response::error(431, "x").body)["error"]["code"],
            "request_header_fields_too_large");
}

TEST(Http, JsonBodies) {
  Request r;
  EXPECT_TRUE(parse_json_object(r).error);
  r.body = "{\"a\": tru}";
  auto bad = parse_json_object(r);
  ASSERT_TRUE(bad.error);
  EXPECT_EQ(bad.error->status, 400);
  EXPECT_NE(bad.error->body.find("at byte"), std::string::npos);
  // A number past a double's range throws out_of_range, not parse_error (fuzz_http_request).
  r.body = "1E111111{\"intent\":\"hello\"}";
  ASSERT_TRUE(parse_json_object(r).error);
  r.body = "{\"n\": 1E400}";
  auto huge = parse_json_object(r);
  ASSERT_TRUE(huge.error);
  EXPECT_EQ(huge.error->status, 400);
  EXPECT_NE(huge.error->body.find("out of range"), std::string::npos) << huge.error->body;
  r.body = "[1]";
  ASSERT_TRUE(parse_json_object(r).error);
  EXPECT_NE(parse_json_object(r).error->body.find("got array"), std::string::npos);
  r.body = "{\"a\": 1}";
  auto ok = parse_json_object(r);
  ASSERT_TRUE(ok.value);
  EXPECT_EQ((*ok.value)["a"], 1);
}

TEST(Http, RequestIdsAreUnique) {
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i) ids.insert(new_request_id());
  EXPECT_EQ(ids.size(), 1000u);
  EXPECT_EQ(new_request_id().size(), 24u);
}

TEST(RequestParse, ValidRequestIsConverted) {
  auto r = detail::parse_request_bytes(
      "GET /v1/x%20y?a=1#frag HTTP/1.1\r\nHost: h\r\nX-Request-Id: abc-1\r\n\r\n", 8192, 1024);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->method, "GET");
  EXPECT_EQ(r->path, "/v1/x%20y");
  EXPECT_EQ(r->query, "a=1");
  EXPECT_EQ(r->request_id, "abc-1");
  EXPECT_EQ(r->headers.get("host"), "h");
}

TEST(RequestParse, BadRequestIdsAreReplaced) {
  auto r = detail::parse_request_bytes(
      "GET / HTTP/1.1\r\nX-Request-Id: " + std::string(200, 'a') + "\r\n\r\n", 8192, 1024);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->request_id.size(), 24u);
  EXPECT_FALSE(detail::valid_request_id("has space"));
  EXPECT_TRUE(detail::valid_request_id("a.b:c_d-1"));
}

TEST(RequestParse, ChunkedBodyIsDecoded) {
  auto r = detail::parse_request_bytes(
      "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 8192,
      1024);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "abcde");
}

TEST(RequestParse, RejectsWhatTheServerWouldRefuse) {
  EXPECT_FALSE(detail::parse_request_bytes("", 8192, 1024));
  EXPECT_FALSE(detail::parse_request_bytes("garbage\r\n\r\n", 8192, 1024));
  EXPECT_FALSE(detail::parse_request_bytes("GET http://x/ HTTP/1.1\r\n\r\n", 8192, 1024));
  EXPECT_FALSE(detail::parse_request_bytes(
      "GET / HTTP/1.1\r\nX-Big: " + std::string(9000, 'b') + "\r\n\r\n", 8192, 1024));
  EXPECT_FALSE(detail::parse_request_bytes(
      "POST / HTTP/1.1\r\nContent-Length: 2000\r\n\r\n" + std::string(2000, 'x'), 8192, 1024));
  EXPECT_FALSE(detail::parse_request_bytes("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",
                                           8192, 1024));
}

// Chunked bodies cut anywhere are incomplete requests, never a crash (the fuzzer found a
// Beast assertion when the same bytes were offered twice after need_more).
TEST(RequestParse, ChunkedBodiesCutAnywhereAreRefused) {
  const std::string whole =
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
      "a;ext=1\r\n0123456789\r\n0\r\n\r\n";
  auto r = detail::parse_request_bytes(whole, 8192, 1024);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "hello0123456789");
  auto head = whole.find("\r\n\r\n") + 4;
  for (std::size_t cut = head; cut < whole.size(); ++cut) {
    EXPECT_FALSE(detail::parse_request_bytes(whole.substr(0, cut), 8192, 1024)) << cut;
  }
}

}  // namespace
}  // namespace agentd::net
