// Admission control for AI calls: per-client and per-provider requests and tokens per minute,
// and per-client budgets reserved at their worst case before a call and settled after it.
#pragma once

#include <nlohmann/json.hpp>

#include <boost/asio/awaitable.hpp>

#include <string>
#include <vector>

#include "agentd/ai/config.hpp"
#include "agentd/ai/state.hpp"
#include "agentd/ai/types.hpp"

namespace agentd::ai {

// What admit() took, so settle() can give back or add the difference.
struct Admission {
  std::string client;
  std::int64_t est_tokens = 0;
  std::string client_tokens_key;  // empty: no tpm limit
  std::vector<std::pair<std::string, std::int64_t>> reserved;  // budget keys, micro-USD
  bool settled = false;
};

class Limiter {
 public:
  Limiter(const Config& config, Counters& counters);

  // Client rpm/tpm and budgets. `worst_cost_usd` is the most the call can cost.
  boost::asio::awaitable<Outcome<Admission>> admit(const std::string& client,
                                                   std::int64_t est_tokens,
                                                   double worst_cost_usd);
  // A provider's and a target's own rpm/tpm, checked per attempt: Error::Kind::rate_limited
  // when a window is full (so the call moves on to the next target).
  boost::asio::awaitable<Outcome<void>> admit_target(const ProviderConfig& p, const Target& t,
                                                     std::int64_t est_tokens);
  // Corrects token windows and budgets from the call's real usage and cost.
  boost::asio::awaitable<void> settle(Admission& a, std::int64_t actual_tokens,
                                      double actual_cost_usd);
  // Spent so far by a client today (UTC), in USD, reservations in flight included.
  boost::asio::awaitable<double> spent_today(const std::string& client);

 private:
  const Config& config_;
  Counters& counters_;
};

// Rough prompt size: characters of every text / 4, tools included.
std::int64_t estimate_prompt_tokens(const nlohmann::json& request);
// The completion cap a request allows: max_completion_tokens, max_tokens, else `fallback`.
std::int64_t completion_cap(const nlohmann::json& request, std::int64_t fallback);

}  // namespace agentd::ai
