// Tokens for clients configured without one: generated once, kept under the data dir (0600).
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "agentd/api/auth.hpp"

namespace agentd::app {

// Fills every empty client token from `<data_dir>/tokens/<name>.token`, generating and saving
// the file when it does not exist. Says on `out` which token each such client uses (the token
// itself only when it was just generated). Throws std::runtime_error on I/O failure.
void ensure_tokens(std::vector<api::Client>& clients, const std::string& data_dir,
                   std::ostream& out);

std::string generate_token();  // "agd_" + 43 url-safe base64 characters (256 bits)

}  // namespace agentd::app
