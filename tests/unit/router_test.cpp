// Route matching: parameters, precedence, methods.
#include "agentd/api/router.hpp"

#include <gtest/gtest.h>

namespace agentd::api {
namespace {

Router make() {
  Router r;
  r.add("GET", "/v1/intents/{id}", nullptr);
  r.add("GET", "/v1/intents/{id}/events", nullptr);
  r.add("POST", "/v1/intents/{id}/cancel", nullptr);
  r.add("GET", "/v1/intents/latest", nullptr);
  r.add("GET", "/v1/artifacts/{path*}", nullptr);
  r.add("POST", "/v1/intents", nullptr);
  r.add("HEAD", "/only-head", nullptr);
  return r;
}

TEST(Router, ParametersAreCapturedAndDecoded) {
  auto r = make();
  auto m = r.match("GET", "/v1/intents/a%20b/events");
  ASSERT_TRUE(m.route);
  EXPECT_EQ(m.route->pattern, "/v1/intents/{id}/events");
  EXPECT_EQ(m.params.at("id"), "a b");
  // An encoded slash stays inside its segment.
  m = r.match("GET", "/v1/intents/x%2Fy");
  ASSERT_TRUE(m.route);
  EXPECT_EQ(m.params.at("id"), "x/y");
}

TEST(Router, LiteralSegmentsBeatParameters) {
  auto r = make();
  auto m = r.match("GET", "/v1/intents/latest");
  ASSERT_TRUE(m.route);
  EXPECT_EQ(m.route->pattern, "/v1/intents/latest");
  EXPECT_TRUE(m.params.empty());
}

TEST(Router, RestCaptureTakesTheRemainingSegments) {
  auto r = make();
  auto m = r.match("GET", "/v1/artifacts/a/b/c.txt");
  ASSERT_TRUE(m.route);
  EXPECT_EQ(m.params.at("path"), "a/b/c.txt");
}

TEST(Router, WrongMethodListsTheAllowedOnes) {
  auto r = make();
  auto m = r.match("DELETE", "/v1/intents/7/cancel");
  EXPECT_FALSE(m.route);
  EXPECT_EQ(m.allowed, std::vector<std::string>{"POST"});
  m = r.match("GET", "/nowhere");
  EXPECT_FALSE(m.route);
  EXPECT_TRUE(m.allowed.empty());
}

TEST(Router, HeadFallsBackToGetButAnExactHeadWins) {
  auto r = make();
  auto m = r.match("HEAD", "/v1/intents/9");
  ASSERT_TRUE(m.route);
  EXPECT_EQ(m.route->method, "GET");
  m = r.match("HEAD", "/only-head");
  ASSERT_TRUE(m.route);
  EXPECT_EQ(m.route->method, "HEAD");
}

TEST(Router, EmptyParametersAndTrailingSlashesDoNotMatch) {
  auto r = make();
  EXPECT_FALSE(r.match("GET", "/v1/intents//events").route);
  EXPECT_FALSE(r.match("GET", "/v1/intents/7/").route);
  EXPECT_FALSE(r.match("POST", "/v1/intents/").route);
}

TEST(Router, BadPatternsAndDuplicatesThrow) {
  Router r;
  EXPECT_THROW(r.add("GET", "no-slash", nullptr), std::invalid_argument);
  EXPECT_THROW(r.add("GET", "/a/{rest*}/b", nullptr), std::invalid_argument);
  r.add("GET", "/x", nullptr);
  EXPECT_THROW(r.add("GET", "/x", nullptr), std::invalid_argument);
  EXPECT_NO_THROW(r.add("POST", "/x", nullptr));
}

}  // namespace
}  // namespace agentd::api
