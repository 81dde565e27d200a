// URL splitting for the HTTP client.
#include <gtest/gtest.h>

#include "agentd/net/client.hpp"

namespace agentd::net {
namespace {

TEST(Url, SplitsSchemeHostPortAndTarget) {
  auto u = parse_url("https://api.openai.com/v1/chat/completions?x=1#frag");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->scheme, "https");
  EXPECT_EQ(u->host, "api.openai.com");
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->target, "/v1/chat/completions?x=1");
  EXPECT_EQ(u->host_header(), "api.openai.com");
  EXPECT_EQ(u->origin(), "https://api.openai.com:443");

  auto v6 = parse_url("http://[::1]:8080");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 8080);
  EXPECT_EQ(v6->target, "/");
  EXPECT_EQ(v6->host_header(), "[::1]:8080");

  auto q = parse_url("http://h?only=query");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->target, "/?only=query");
}

TEST(Url, RejectsWhatIsNotAnHttpUrl) {
  for (const char* bad : {"ftp://h/", "http://", "http://:80/", "http://h:0/", "http://h:99999/",
                          "http://h:8x/", "http://user:pw@h/", "http://[::1/", "h/x",
                          "http://h/a b", "http://h/\r\nX: y"}) {
    EXPECT_FALSE(parse_url(bad)) << bad;
  }
}

}  // namespace
}  // namespace agentd::net
