// Scopes, globs, bearer parsing and token lookup.
#include "agentd/api/auth.hpp"

#include <gtest/gtest.h>

namespace agentd::api {
namespace {

TEST(Auth, GlobMatching) {
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_TRUE(glob_match("models:*", "models:gpt-4o"));
  EXPECT_TRUE(glob_match("mcp:github/*", "mcp:github/create_issue"));
  EXPECT_TRUE(glob_match("a?c", "abc"));
  EXPECT_TRUE(glob_match("*x*y", "axxbxy"));
  EXPECT_FALSE(glob_match("models:*", "agents:coder"));
  EXPECT_FALSE(glob_match("a?c", "ac"));
  EXPECT_FALSE(glob_match("mcp:github/*", "mcp:gitlab/x"));
}

TEST(Auth, ScopesGrantWhatTheyName) {
  std::vector<std::string> all{"*"};
  std::vector<std::string> some{"models:gpt-*", "mcp:github/*", "admin"};
  std::vector<std::string> mcp_all{"mcp:*"};
  EXPECT_TRUE(scope_allows(all, "admin"));
  EXPECT_TRUE(scope_allows(some, "models:gpt-4o"));
  EXPECT_FALSE(scope_allows(some, "models:claude"));
  EXPECT_TRUE(scope_allows(some, "mcp:github/list_repos"));
  EXPECT_FALSE(scope_allows(some, "mcp:ssh/exec"));
  EXPECT_TRUE(scope_allows(some, "admin"));
  EXPECT_FALSE(scope_allows(some, "sandbox"));
  EXPECT_TRUE(scope_allows(mcp_all, "mcp:ssh/exec"));
  EXPECT_FALSE(scope_allows(mcp_all, "models:x"));
  EXPECT_FALSE(scope_allows({}, "admin"));
}

TEST(Auth, AuthenticatorFindsTheRightClient) {
  Authenticator a({{"one", "token-one-0123456789", {"*"}},
                   {"two", "token-two-0123456789", {"admin"}},
                   {"unset", "", {"*"}}});
  ASSERT_TRUE(a.authenticate("token-two-0123456789"));
  EXPECT_EQ(a.authenticate("token-two-0123456789")->name, "two");
  EXPECT_EQ(a.authenticate("token-one-0123456789")->name, "one");
  EXPECT_EQ(a.authenticate("token-one-012345678"), nullptr);
  EXPECT_EQ(a.authenticate("token-one-0123456789x"), nullptr);
  EXPECT_EQ(a.authenticate(""), nullptr);  // a client without a token never matches
}

TEST(Auth, BearerHeaderParsing) {
  EXPECT_EQ(bearer_token("Bearer abc"), "abc");
  EXPECT_EQ(bearer_token("bearer   abc  "), "abc");
  EXPECT_EQ(bearer_token("BEARER abc"), "abc");
  EXPECT_EQ(bearer_token("Basic dXNlcjpwYXNz"), "");
  EXPECT_EQ(bearer_token("Bearer"), "");
  EXPECT_EQ(bearer_token("Bearerabc"), "");
  EXPECT_EQ(bearer_token(""), "");
}

}  // namespace
}  // namespace agentd::api
