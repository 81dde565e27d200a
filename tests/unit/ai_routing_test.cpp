// Model resolution, strategy ordering and circuit breakers, with a hand-driven clock.
#include <gtest/gtest.h>

#include "agentd/ai/config.hpp"
#include "ai/routing.hpp"

namespace agentd::ai {
namespace {

using namespace std::chrono_literals;

Config config() {
  auto root = core::load_yaml_string(R"(
providers:
  - {name: a, kind: openai, models: [m1, shared], prices: {m1: {input: 5, output: 15}}}
  - {name: b, kind: anthropic, models: [shared], prices: {cheap: {input: 0.1, output: 0.4}}}
models:
  - {name: group, targets: [a/m1, b/cheap, a/m3]}
  - {name: cost, strategy: lowest_cost, targets: [a/m1, b/cheap, a/unpriced]}
  - {name: fast, strategy: least_latency, targets: [a/m1, b/cheap]}
  - name: w
    strategy: weighted
    targets: [{model: a/m1, weight: 3}, {model: b/cheap, weight: 1}]
cooldown: {failures: 2, window: 10s, duration: 30s}
)");
  return parse_config(core::ConfigNode(root, "ai"), {});
}

TEST(Routing, ResolvesAliasesProviderModelsAndListedIds) {
  auto c = config();
  Routing r(c);
  auto g = r.resolve("group");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->targets.size(), 3u);
  auto pm = r.resolve("a/m1");
  ASSERT_TRUE(pm);
  EXPECT_EQ(pm->targets[0].label(), "a/m1");
  auto bare = r.resolve("m1");
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->targets[0].provider, "a");
  // b lists only "shared": another id is refused; an id two providers list is ambiguous.
  EXPECT_EQ(r.resolve("b/other").error().status, 404);
  EXPECT_EQ(r.resolve("shared").error().status, 400);
  EXPECT_EQ(r.resolve("nope").error().code, "model_not_found");
  EXPECT_EQ(r.resolve("").error().param, "model");
}

TEST(Routing, LowestCostPutsUnpricedTargetsLast) {
  auto c = config();
  Routing r(c);
  std::mt19937 rng(1);
  auto plan = r.plan(*r.resolve("cost"), Clock::now(), rng);
  ASSERT_EQ(plan.targets.size(), 3u);
  EXPECT_EQ(plan.targets[0].label(), "b/cheap");
  EXPECT_EQ(plan.targets[1].label(), "a/m1");
  EXPECT_EQ(plan.targets[2].label(), "a/unpriced");
}

TEST(Routing, LeastLatencyPrefersTheFasterMovingAverage) {
  auto c = config();
  Routing r(c);
  std::mt19937 rng(1);
  auto route = *r.resolve("fast");
  auto now = Clock::now();
  r.success(route.targets[0], now, 900ms);
  // b/cheap has no sample yet: it goes first to get one.
  EXPECT_EQ(r.plan(route, now, rng).targets[0].label(), "b/cheap");
  r.success(route.targets[1], now, 200ms);
  EXPECT_EQ(r.plan(route, now, rng).targets[0].label(), "b/cheap");
  for (int i = 0; i < 10; ++i) r.success(route.targets[1], now, 2000ms);
  EXPECT_EQ(r.plan(route, now, rng).targets[0].label(), "a/m1");
  EXPECT_NEAR(*r.latency_ms(route.targets[0]), 900, 0.01);
}

TEST(Routing, WeightedOrderFollowsTheWeights) {
  auto c = config();
  Routing r(c);
  std::mt19937 rng(42);
  auto route = *r.resolve("w");
  int first_a = 0;
  for (int i = 0; i < 4000; ++i) {
    auto plan = r.plan(route, Clock::now(), rng);
    ASSERT_EQ(plan.targets.size(), 2u);  // both, in some order
    if (plan.targets[0].provider == "a") ++first_a;
  }
  EXPECT_NEAR(first_a / 4000.0, 0.75, 0.03);
}

TEST(Routing, BreakerOpensSkipsProbesAndCloses) {
  auto c = config();
  Routing r(c);
  std::mt19937 rng(1);
  auto route = *r.resolve("group");
  const auto& t = route.targets[0];
  auto now = Clock::now();
  r.failure(t, now);
  EXPECT_FALSE(r.is_open(t, now));
  r.failure(t, now + 1s);  // second within the window: open
  EXPECT_TRUE(r.is_open(t, now + 2s));
  auto plan = r.plan(route, now + 2s, rng);
  ASSERT_EQ(plan.skipped.size(), 1u);
  EXPECT_EQ(plan.skipped[0], "a/m1");
  EXPECT_EQ(plan.targets[0].label(), "b/cheap");
  // After the cooldown one probe goes through; a second plan meanwhile still skips it.
  auto later = now + 32s;
  EXPECT_EQ(r.plan(route, later, rng).targets[0].label(), "a/m1");
  EXPECT_EQ(r.plan(route, later, rng).targets[0].label(), "b/cheap");
  // The probe failed: another full cooldown.
  r.failure(t, later);
  EXPECT_TRUE(r.is_open(t, later + 29s));
  // Next probe succeeds: closed.
  auto again = later + 31s;
  EXPECT_EQ(r.plan(route, again, rng).targets[0].label(), "a/m1");
  r.success(t, again, std::nullopt);
  EXPECT_FALSE(r.is_open(t, again));
}

TEST(Routing, FailuresOutsideTheWindowDoNotAddUp) {
  auto c = config();
  Routing r(c);
  Target t;
  t.provider = "a";
  t.model = "m1";
  auto now = Clock::now();
  r.failure(t, now);
  r.failure(t, now + 11s);
  EXPECT_FALSE(r.is_open(t, now + 11s));
}

TEST(Routing, EveryBreakerOpenStillTriesAll) {
  auto c = config();
  Routing r(c);
  std::mt19937 rng(1);
  auto route = *r.resolve("fast");
  auto now = Clock::now();
  for (auto& t : route.targets) {
    r.failure(t, now);
    r.failure(t, now);
  }
  auto plan = r.plan(route, now, rng);
  EXPECT_EQ(plan.targets.size(), 2u);
  EXPECT_TRUE(plan.skipped.empty());
}

TEST(AiConfig, ErrorsNameTheKey) {
  auto bad = [](const std::string& yaml) {
    try {
      parse_config(core::ConfigNode(core::load_yaml_string(yaml), "ai"), {"lobechat"});
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(bad("providers: [{name: x, kind: mistral}]").find("ai.providers[0].kind"),
            std::string::npos);
  EXPECT_NE(bad("providers: [{name: x, kind: openai, base_url: ftp://h}]")
                .find("ai.providers[0].base_url: expected a URL"),
            std::string::npos);
  EXPECT_NE(bad("providers: [{name: x, kind: openai}]\nmodels: [{name: m, targets: [y/z]}]")
                .find("no provider named \"y\""),
            std::string::npos);
  EXPECT_NE(bad("providers: [{name: x, kind: openai}]\nmodels: [{name: m, targets: [nomodel]}]")
                .find("ai.models[0].targets[0]: expected <provider>/<upstream model id>"),
            std::string::npos);
  EXPECT_NE(bad("limits: {stranger: {rpm: 1}}").find("ai.limits.stranger: no client"),
            std::string::npos);
  EXPECT_NE(bad("providers: [{name: x, kind: openai, tpyo: 1}]").find("ai.providers[0].tpyo"),
            std::string::npos);
  EXPECT_NE(bad("retry: {attempts: 0}").find("ai.retry.attempts"), std::string::npos);
  auto ok = parse_config(core::ConfigNode(core::load_yaml_string(
                             "providers: [{name: az, kind: openai, api_version: '2024-10-21',\n"
                             "  base_url: 'https://r.openai.azure.com/openai/deployments/d/'}]"),
                                          "ai"),
                         {});
  EXPECT_EQ(ok.providers[0].auth, AuthStyle::api_key_header);
  EXPECT_TRUE(ok.providers[0].max_completion_tokens);
  EXPECT_EQ(ok.providers[0].base_url, "https://r.openai.azure.com/openai/deployments/d");
}

}  // namespace
}  // namespace agentd::ai
