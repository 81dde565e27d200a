// Client configuration, scope matching and constant-time token lookup.
#include "agentd/api/auth.hpp"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <set>

namespace agentd::api {
namespace {

std::array<unsigned char, 32> digest(std::string_view s) {
  std::array<unsigned char, 32> d{};
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), d.data());
  return d;
}

bool valid_scope(std::string_view s) {
  if (s == "*" || s == "admin" || s == "sandbox") return true;
  for (std::string_view prefix : {"models:", "agents:", "mcp:"}) {
    if (s.starts_with(prefix) && s.size() > prefix.size()) return true;
  }
  return false;
}

}  // namespace

std::vector<Client> parse_clients(const core::ConfigNode& node) {
  std::vector<Client> out;
  std::set<std::string> names;
  for (auto& item : node.items()) {
    item.expect_map();
    Client c;
    auto name = item.required("name");
    c.name = name.as_string();
    if (c.name.empty() || c.name.find_first_of(" \t/\\") != std::string::npos) {
      name.fail("expected a non-empty name without spaces or slashes");
    }
    if (!names.insert(c.name).second) name.fail("duplicate client name \"" + c.name + "\"");
    c.token = item.get_string("token");
    if (!c.token.empty() && c.token.size() < 16) {
      item.child("token").fail("too short: use at least 16 characters (or leave it empty to "
                               "have one generated)");
    }
    if (auto scopes = item.get("scopes")) {
      c.scopes = scopes->as_strings();
      for (std::size_t i = 0; i < c.scopes.size(); ++i) {
        if (!valid_scope(c.scopes[i])) {
          scopes->fail("entry " + std::to_string(i) + ": unknown scope \"" + c.scopes[i] +
                       "\" (expected *, admin, sandbox, models:<glob>, agents:<glob> or "
                       "mcp:<server>/<tool glob>)");
        }
      }
    }
    item.finish();
    out.push_back(std::move(c));
  }
  return out;
}


bool scope_allows(const std::vector<std::string>& granted, std::string_view needed) noexcept {
  for (const auto& g : granted) {
    if (g == "*" || g == needed) return true;
    if (g == "mcp:*" && needed.starts_with("mcp:")) return true;
    if (glob_match(g, needed)) return true;
  }
  return false;
}

Authenticator::Authenticator(std::vector<Client> clients) : clients_(std::move(clients)) {
  for (const auto& c : clients_) digests_.push_back(digest(c.token));
}

const Client* Authenticator::authenticate(std::string_view token) const noexcept {
  if (token.empty()) return nullptr;
  // Comparing fixed-size digests, and always visiting every client, keeps the time
  // independent of where (or whether) the token matches.
  auto d = digest(token);
  const Client* found = nullptr;
  for (std::size_t i = 0; i < clients_.size(); ++i) {
    bool eq = CRYPTO_memcmp(d.data(), digests_[i].data(), d.size()) == 0;
    if (eq && !clients_[i].token.empty() && !found) found = &clients_[i];
  }
  return found;
}

std::string_view bearer_token(std::string_view h) noexcept {
  if (h.size() < 7) return {};
  auto scheme = h.substr(0, 7);
  for (std::size_t i = 0; i < 6; ++i) {
    if ((scheme[i] | 0x20) != "bearer"[i]) return {};
  }
  if (scheme[6] != ' ') return {};
  h.remove_prefix(7);
  while (!h.empty() && h.front() == ' ') h.remove_prefix(1);
  while (!h.empty() && (h.back() == ' ' || h.back() == '\t')) h.remove_suffix(1);
  return h;
}

}  // namespace agentd::api
