// Clients, bearer tokens and scopes.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "agentd/core/config.hpp"
#include "agentd/core/glob.hpp"

namespace agentd::api {

// A named caller. Scopes: "*", "admin", "sandbox", "models:<glob>", "agents:<glob>",
// "mcp:<server>/<tool glob>".
struct Client {
  std::string name;
  std::string token;  // empty in config: generated and kept under the data dir
  std::vector<std::string> scopes{"*"};
};

std::vector<Client> parse_clients(const core::ConfigNode& node);

// `*` matches any run of characters, `?` one character.
using core::glob_match;

// True when one of `granted` covers `needed` (`models:*` covers `models:gpt-4o`; `*` covers all).
bool scope_allows(const std::vector<std::string>& granted, std::string_view needed) noexcept;

class Authenticator {
 public:
  explicit Authenticator(std::vector<Client> clients);
  // The client whose token equals `token`, compared in constant time against every client.
  const Client* authenticate(std::string_view token) const noexcept;
  const std::vector<Client>& clients() const noexcept { return clients_; }

 private:
  std::vector<Client> clients_;
  std::vector<std::array<unsigned char, 32>> digests_;
};

// The token of an `Authorization: Bearer <token>` header; empty when absent or malformed.
std::string_view bearer_token(std::string_view authorization) noexcept;

}  // namespace agentd::api
