// Model resolution and target ordering: aliases, strategies, circuit breakers and latency
// averages. No I/O; time and randomness come from the caller, so it is tested without sleeps.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "agentd/ai/config.hpp"
#include "agentd/ai/types.hpp"

namespace agentd::ai {

using Clock = std::chrono::steady_clock;

// What a model name resolved to.
struct Route {
  std::string requested;  // as the client wrote it
  std::vector<Target> targets;
  Strategy strategy = Strategy::fallback;
};

struct Plan {
  std::vector<Target> targets;      // in the order to try
  std::vector<std::string> skipped; // labels left out because their breaker is open
};

class Routing {
 public:
  explicit Routing(const Config& config);

  // An alias, `<provider>/<model>`, or a bare upstream id listed under exactly one provider's
  // `models`. Unknown: Error 404 model_not_found.
  Outcome<Route> resolve(std::string_view model) const;
  // Orders the route's targets by its strategy, leaving out targets whose breaker is open
  // (unless every one is: then all are tried). A breaker past its cooldown lets one probe in.
  Plan plan(const Route& route, Clock::time_point now, std::mt19937& rng);

  // Outcome of one attempt on a target. `ttft` feeds least_latency's moving average.
  void success(const Target& t, Clock::time_point now, std::optional<std::chrono::milliseconds> ttft);
  void failure(const Target& t, Clock::time_point now);
  bool is_open(const Target& t, Clock::time_point now) const;
  // Moving average of time to first token in ms; nullopt before any sample.
  std::optional<double> latency_ms(const Target& t) const;
  // USD per million tokens (input + output) or nullopt when the provider lists no price.
  std::optional<double> unit_price(const Target& t) const;

 private:
  struct State {
    std::vector<Clock::time_point> failures;  // within the window
    Clock::time_point open_until{};
    bool open = false;
    bool probing = false;  // a half-open probe is in flight
    Clock::time_point probe_started{};  // a probe never reported back expires after a cooldown
    double ttft_ms = -1;
  };
  const Config& config_;
  std::map<std::string, State, std::less<>> state_;
};

}  // namespace agentd::ai
