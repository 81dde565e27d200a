// Model resolution, strategies and circuit breakers.
#include "routing.hpp"

#include <algorithm>
#include <limits>

namespace agentd::ai {

Routing::Routing(const Config& config) : config_(config) {}

Outcome<Route> Routing::resolve(std::string_view model) const {
  if (model.empty()) return Error::bad_request("model is required", "model");
  if (const auto* a = config_.alias(model)) {
    return Route{std::string(model), a->targets, a->strategy};
  }
  if (auto slash = model.find('/'); slash != std::string_view::npos) {
    auto provider = model.substr(0, slash);
    auto upstream = model.substr(slash + 1);
    if (const auto* p = config_.provider(provider); p && !upstream.empty()) {
      if (!p->models.empty() &&
          std::find(p->models.begin(), p->models.end(), upstream) == p->models.end()) {
        return Error::not_found("model \"" + std::string(upstream) + "\" is not listed for provider \"" +
                                std::string(provider) + "\" (ai.providers[].models)");
      }
      Target t;
      t.provider = std::string(provider);
      t.model = std::string(upstream);
      return Route{std::string(model), {t}, Strategy::fallback};
    }
  }
  // A bare upstream id, when exactly one provider lists it.
  const ProviderConfig* owner = nullptr;
  for (const auto& p : config_.providers) {
    if (std::find(p.models.begin(), p.models.end(), model) != p.models.end()) {
      if (owner) {
        return Error::bad_request("model \"" + std::string(model) + "\" is served by more than one "
                                  "provider (" + owner->name + ", " + p.name +
                                  "): write <provider>/" + std::string(model), "model");
      }
      owner = &p;
    }
  }
  if (owner) {
    Target t;
    t.provider = owner->name;
    t.model = std::string(model);
    return Route{std::string(model), {t}, Strategy::fallback};
  }
  return Error::not_found("The model `" + std::string(model) +
                          "` does not exist: use an alias from ai.models or <provider>/<model> "
                          "(GET /v1/models lists them)");
}

std::optional<double> Routing::latency_ms(const Target& t) const {
  auto it = state_.find(t.label());
  if (it == state_.end() || it->second.ttft_ms < 0) return std::nullopt;
  return it->second.ttft_ms;
}

std::optional<double> Routing::unit_price(const Target& t) const {
  const auto* p = config_.provider(t.provider);
  if (!p) return std::nullopt;
  auto it = p->prices.find(t.model);
  if (it == p->prices.end()) return std::nullopt;
  return it->second.input + it->second.output;
}

bool Routing::is_open(const Target& t, Clock::time_point now) const {
  auto it = state_.find(t.label());
  if (it == state_.end() || !it->second.open) return false;
  // Past the cooldown the breaker is half-open: one probe may go, others still wait.
  const auto& s = it->second;
  return now < s.open_until ||
         (s.probing && now - s.probe_started < config_.cooldown.duration);
}

Plan Routing::plan(const Route& route, Clock::time_point now, std::mt19937& rng) {
  std::vector<Target> ordered = route.targets;
  switch (route.strategy) {
    case Strategy::fallback:
      break;
    case Strategy::weighted: {
      // Weighted order without replacement: draw one by weight, then the next from the rest.
      std::vector<Target> pool = ordered, out;
      while (!pool.empty()) {
        double sum = 0;
        for (auto& t : pool) sum += t.weight;
        std::size_t pick = 0;
        if (sum > 0) {
          double r = std::uniform_real_distribution<double>(0, sum)(rng);
          for (; pick + 1 < pool.size(); ++pick) {
            r -= pool[pick].weight;
            if (r < 0) break;
          }
        }
        out.push_back(pool[pick]);
        pool.erase(pool.begin() + static_cast<std::ptrdiff_t>(pick));
      }
      ordered = std::move(out);
      break;
    }
    case Strategy::least_latency:
      // Targets never measured go first, so each gets measured.
      std::stable_sort(ordered.begin(), ordered.end(), [&](const Target& a, const Target& b) {
        return latency_ms(a).value_or(-1) < latency_ms(b).value_or(-1);
      });
      break;
    case Strategy::lowest_cost:
      std::stable_sort(ordered.begin(), ordered.end(), [&](const Target& a, const Target& b) {
        constexpr double kUnknown = std::numeric_limits<double>::infinity();
        return unit_price(a).value_or(kUnknown) < unit_price(b).value_or(kUnknown);
      });
      break;
  }
  Plan plan;
  for (auto& t : ordered) {
    if (is_open(t, now)) {
      plan.skipped.push_back(t.label());
      continue;
    }
    auto it = state_.find(t.label());
    if (it != state_.end() && it->second.open) {  // the one probe
      it->second.probing = true;
      it->second.probe_started = now;
    }
    plan.targets.push_back(t);
  }
  if (plan.targets.empty()) {  // every breaker open: trying beats failing without a call
    plan.targets = std::move(ordered);
    plan.skipped.clear();
  }
  return plan;
}

void Routing::success(const Target& t, Clock::time_point, std::optional<std::chrono::milliseconds> ttft) {
  auto& s = state_[t.label()];
  s.failures.clear();
  s.open = false;
  s.probing = false;
  if (ttft) {
    double v = static_cast<double>(ttft->count());
    s.ttft_ms = s.ttft_ms < 0 ? v : 0.7 * s.ttft_ms + 0.3 * v;
  }
}

void Routing::failure(const Target& t, Clock::time_point now) {
  if (config_.cooldown.failures == 0) return;  // breakers disabled
  auto& s = state_[t.label()];
  if (s.open && s.probing) {  // the probe failed: closed again for another cooldown
    s.probing = false;
    s.open_until = now + config_.cooldown.duration;
    return;
  }
  auto horizon = now - config_.cooldown.window;
  std::erase_if(s.failures, [&](auto tp) { return tp < horizon; });
  s.failures.push_back(now);
  if (static_cast<int>(s.failures.size()) >= config_.cooldown.failures) {
    s.open = true;
    s.probing = false;
    s.open_until = now + config_.cooldown.duration;
    s.failures.clear();
  }
}

}  // namespace agentd::ai
