// Generated client tokens and their files.
#include "agentd/app/tokens.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace agentd::app {
namespace {

std::string temp_dir() {
  std::string t = "/tmp/agentd-tokens-XXXXXX";
  EXPECT_NE(::mkdtemp(t.data()), nullptr);
  return t;
}

unsigned mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0);
  return st.st_mode & 0777;
}

TEST(Tokens, GeneratedTokensAreLongRandomAndUrlSafe) {
  auto a = generate_token(), b = generate_token();
  EXPECT_NE(a, b);
  EXPECT_EQ(a.rfind("agd_", 0), 0u);
  EXPECT_EQ(a.size(), 47u);
  EXPECT_EQ(a.find_first_not_of(
                "agd_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-", 4),
            std::string::npos);
}

TEST(Tokens, GeneratedOnceKeptAndNotPrintedAgain) {
  auto dir = temp_dir();
  std::vector<api::Client> clients{{"local", "", {"*"}}, {"fixed", "fixed-token-0123456789", {"*"}}};
  std::ostringstream out;
  ensure_tokens(clients, dir, out);
  auto token = clients[0].token;
  EXPECT_EQ(token.size(), 47u);
  EXPECT_NE(out.str().find(token), std::string::npos);
  EXPECT_EQ(clients[1].token, "fixed-token-0123456789");
  auto file = dir + "/tokens/local.token";
  EXPECT_EQ(mode_of(file), 0600u);
  EXPECT_EQ(mode_of(dir + "/tokens"), 0700u);
  EXPECT_FALSE(std::ifstream(dir + "/tokens/fixed.token"));

  std::vector<api::Client> again{{"local", "", {"*"}}};
  std::ostringstream out2;
  ensure_tokens(again, dir, out2);
  EXPECT_EQ(again[0].token, token);
  EXPECT_EQ(out2.str().find(token), std::string::npos);
  EXPECT_NE(out2.str().find("uses the token saved in"), std::string::npos);
}

TEST(Tokens, LooseFileIsTightenedAndShortTokenRefused) {
  auto dir = temp_dir();
  std::vector<api::Client> clients{{"c", "", {"*"}}};
  std::ostringstream out;
  ensure_tokens(clients, dir, out);
  auto file = dir + "/tokens/c.token";
  ::chmod(file.c_str(), 0644);
  std::vector<api::Client> again{{"c", "", {"*"}}};
  ensure_tokens(again, dir, out);
  EXPECT_EQ(mode_of(file), 0600u);

  std::ofstream(file, std::ios::trunc) << "short\n";
  std::vector<api::Client> third{{"c", "", {"*"}}};
  EXPECT_THROW(ensure_tokens(third, dir, out), std::runtime_error);
}

}  // namespace
}  // namespace agentd::app
