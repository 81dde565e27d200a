// Fixed one-minute windows for rpm/tpm (exact, and one atomic step on Redis) and budget
// reservations in micro-dollars.
#include "limits.hpp"

#include <cmath>
#include <ctime>

namespace agentd::ai {
namespace {

using std::chrono::duration_cast;
using std::chrono::seconds;
using std::chrono::system_clock;

constexpr double kMicro = 1e6;

std::int64_t minute_now() {
  return duration_cast<seconds>(system_clock::now().time_since_epoch()).count() / 60;
}

milliseconds until_next_minute() {
  auto ms = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  return milliseconds(60'000 - ms % 60'000);
}

std::string utc(const char* fmt) {
  std::time_t t = system_clock::to_time_t(system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, fmt, &tm);
  return buf;
}

milliseconds until_next_utc_day() {
  auto s = duration_cast<seconds>(system_clock::now().time_since_epoch()).count();
  return milliseconds((86'400 - s % 86'400) * 1000);
}

Error limit_error(std::string message, std::string code, milliseconds retry_after,
                  std::string type = "rate_limit_error") {
  Error e;
  e.status = 429;
  e.kind = Error::Kind::limit;
  e.message = std::move(message);
  e.code = std::move(code);
  e.type = std::move(type);
  e.retry_after = retry_after;
  return e;
}

void count_text(const nlohmann::json& j, std::int64_t& chars) {
  if (j.is_string()) {
    chars += static_cast<std::int64_t>(j.get_ref<const std::string&>().size());
  } else if (j.is_array() || j.is_object()) {
    for (const auto& v : j) count_text(v, chars);
  }
}

}  // namespace

std::int64_t estimate_prompt_tokens(const nlohmann::json& request) {
  std::int64_t chars = 0;
  if (auto m = request.find("messages"); m != request.end()) count_text(*m, chars);
  if (auto t = request.find("tools"); t != request.end()) count_text(*t, chars);
  if (auto i = request.find("input"); i != request.end()) count_text(*i, chars);
  return std::max<std::int64_t>(1, chars / 4);
}

std::int64_t completion_cap(const nlohmann::json& request, std::int64_t fallback) {
  for (const char* k : {"max_completion_tokens", "max_tokens"}) {
    auto it = request.find(k);
    if (it != request.end() && it->is_number_integer()) return it->get<std::int64_t>();
  }
  return fallback;
}

Limiter::Limiter(const Config& config, Counters& counters) : config_(config), counters_(counters) {}

boost::asio::awaitable<Outcome<Admission>> Limiter::admit(const std::string& client,
                                                          std::int64_t est_tokens,
                                                          double worst_cost_usd) {
  Admission a;
  a.client = client;
  a.est_tokens = est_tokens;
  auto it = config_.limits.find(client);
  if (it == config_.limits.end()) co_return a;
  const ClientLimits& l = it->second;
  auto minute = std::to_string(minute_now());
  constexpr milliseconds kWindowTtl{61'000};
  if (l.rpm > 0) {
    auto t = co_await counters_.take("rl:client:" + client + ":req:" + minute, 1, l.rpm, kWindowTtl);
    if (!t.taken) {
      co_return limit_error("client \"" + client + "\" is over its limit of " +
                                std::to_string(l.rpm) + " requests per minute",
                            "rate_limit_exceeded", until_next_minute());
    }
  }
  if (l.tpm > 0) {
    a.client_tokens_key = "rl:client:" + client + ":tok:" + minute;
    auto t = co_await counters_.take(a.client_tokens_key, est_tokens, l.tpm, kWindowTtl);
    if (!t.taken) {
      co_return limit_error("client \"" + client + "\" is over its limit of " +
                                std::to_string(l.tpm) + " tokens per minute (this request needs "
                                "about " + std::to_string(est_tokens) + ")",
                            "tokens_rate_limit_exceeded", until_next_minute());
    }
  }
  auto worst = static_cast<std::int64_t>(std::ceil(worst_cost_usd * kMicro));
  struct Period {
    double budget;
    std::string key;
    milliseconds ttl;
    const char* name;
  };
  Period periods[] = {
      {l.budget_usd_day, "budget:" + client + ":day:" + utc("%Y-%m-%d"), milliseconds(2 * 86'400'000),
       "daily"},
      {l.budget_usd_month, "budget:" + client + ":month:" + utc("%Y-%m"),
       milliseconds(32LL * 86'400'000), "monthly"}};
  for (const auto& p : periods) {
    if (p.budget <= 0) continue;
    auto limit = static_cast<std::int64_t>(std::floor(p.budget * kMicro));
    auto t = co_await counters_.take(p.key, worst, limit, p.ttl);
    if (!t.taken) {
      co_await settle(a, est_tokens, 0);  // give back what this call already reserved
      char msg[256];
      std::snprintf(msg, sizeof msg,
                    "client \"%s\" has reached its %s budget of $%.2f (spent or reserved $%.4f; "
                    "this request may cost up to $%.4f)",
                    client.c_str(), p.name, p.budget, static_cast<double>(t.value) / kMicro,
                    worst_cost_usd);
      co_return limit_error(msg, "budget_exceeded",
                            std::string(p.name) == "daily" ? until_next_utc_day()
                                                           : milliseconds(86'400'000),
                            "insufficient_quota");
    }
    a.reserved.emplace_back(p.key, worst);
  }
  co_return a;
}

boost::asio::awaitable<Outcome<void>> Limiter::admit_target(const ProviderConfig& p,
                                                            const Target& t,
                                                            std::int64_t est_tokens) {
  auto minute = std::to_string(minute_now());
  constexpr milliseconds kWindowTtl{61'000};
  struct Window {
    std::int64_t limit;
    std::string key;
    std::int64_t amount;
    std::string what;
  };
  Window windows[] = {
      {p.rpm, "rl:provider:" + p.name + ":req:" + minute, 1,
       "provider \"" + p.name + "\" is at its limit of " + std::to_string(p.rpm) + " requests per minute"},
      {p.tpm, "rl:provider:" + p.name + ":tok:" + minute, est_tokens,
       "provider \"" + p.name + "\" is at its limit of " + std::to_string(p.tpm) + " tokens per minute"},
      {t.rpm, "rl:target:" + t.label() + ":req:" + minute, 1,
       "target " + t.label() + " is at its limit of " + std::to_string(t.rpm) + " requests per minute"},
      {t.tpm, "rl:target:" + t.label() + ":tok:" + minute, est_tokens,
       "target " + t.label() + " is at its limit of " + std::to_string(t.tpm) + " tokens per minute"}};
  for (const auto& w : windows) {
    if (w.limit <= 0) continue;
    auto taken = co_await counters_.take(w.key, w.amount, w.limit, kWindowTtl);
    if (!taken.taken) {
      auto e = limit_error(w.what, "target_rate_limit", until_next_minute());
      e.kind = Error::Kind::rate_limited;  // lets the call move on to another target
      co_return e;
    }
  }
  co_return Outcome<void>{};
}

boost::asio::awaitable<void> Limiter::settle(Admission& a, std::int64_t actual_tokens,
                                             double actual_cost_usd) {
  if (a.settled) co_return;
  a.settled = true;
  if (!a.client_tokens_key.empty() && actual_tokens != a.est_tokens) {
    co_await counters_.add(a.client_tokens_key, actual_tokens - a.est_tokens, milliseconds(61'000));
  }
  auto actual = static_cast<std::int64_t>(std::llround(actual_cost_usd * kMicro));
  for (const auto& [key, reserved] : a.reserved) {
    if (actual != reserved) {
      co_await counters_.add(key, actual - reserved, milliseconds(32LL * 86'400'000));
    }
  }
}

boost::asio::awaitable<double> Limiter::spent_today(const std::string& client) {
  auto v = co_await counters_.get("budget:" + client + ":day:" + utc("%Y-%m-%d"));
  co_return static_cast<double>(v) / kMicro;
}

}  // namespace agentd::ai
