// Generated client tokens, persisted with owner-only permissions.
#include "agentd/app/tokens.hpp"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace agentd::app {
namespace fs = std::filesystem;

std::string generate_token() {
  unsigned char raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1) throw std::runtime_error("no randomness for a token");
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out = "agd_";
  unsigned bits = 0, acc = 0;
  for (unsigned char b : raw) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += kAlphabet[(acc >> bits) & 63];
    }
  }
  if (bits > 0) out += kAlphabet[(acc << (6 - bits)) & 63];
  return out;
}

void ensure_tokens(std::vector<api::Client>& clients, const std::string& data_dir,
                   std::ostream& out) {
  for (auto& c : clients) {
    if (!c.token.empty()) continue;
    fs::path dir = fs::path(data_dir) / "tokens";
    fs::path file = dir / (c.name + ".token");
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw std::runtime_error("cannot create " + dir.string() + ": " + ec.message());
    fs::permissions(dir, fs::perms::owner_all, ec);

    std::ifstream in(file);
    if (in) {
      std::string token;
      std::getline(in, token);
      while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
      if (token.size() < 16) {
        throw std::runtime_error(file.string() + ": stored token is too short; delete the file "
                                 "to have a new one generated");
      }
      struct stat st {};
      if (::stat(file.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
        ::chmod(file.c_str(), 0600);
        out << "agentd: tightened permissions of " << file.string() << " to 0600\n";
      }
      c.token = token;
      out << "client \"" << c.name << "\" uses the token saved in " << file.string() << "\n";
      continue;
    }

    std::string token = generate_token();
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      throw std::runtime_error("cannot create " + file.string() + ": " + std::strerror(errno));
    }
    std::string line = token + "\n";
    bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    ok = ::fsync(fd) == 0 && ok;
    ::close(fd);
    if (!ok) throw std::runtime_error("cannot write " + file.string());
    c.token = token;
    out << "agentd generated a token for client \"" << c.name << "\": " << token
        << "\n  (saved in " << file.string() << "; it is shown only this once)\n";
  }
}

}  // namespace agentd::app
