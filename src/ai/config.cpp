// Parsing and validation of the `ai` section.
#include <algorithm>
#include <set>

#include "agentd/ai/config.hpp"

namespace agentd::ai {
namespace {

using core::ConfigNode;

bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

std::vector<net::Header> parse_headers(const ConfigNode& node) {
  std::vector<net::Header> out;
  for (auto& [name, value] : node.entries()) {
    if (name.empty() || name.find_first_of(" \t\r\n:") != std::string::npos) {
      node.child(name).fail("not a valid header name");
    }
    auto v = value.as_string();
    if (v.find_first_of("\r\n") != std::string::npos) value.fail("header values cannot hold CR/LF");
    out.push_back({name, v});
  }
  return out;
}

ProviderKind parse_kind(const ConfigNode& node) {
  auto s = node.as_string();
  if (s == "openai") return ProviderKind::openai;
  if (s == "anthropic") return ProviderKind::anthropic;
  if (s == "gemini") return ProviderKind::gemini;
  node.fail("expected openai, anthropic or gemini (openai covers every OpenAI-compatible API), "
            "got \"" + s + "\"");
}

AuthStyle parse_auth(const ConfigNode& node) {
  auto s = node.as_string();
  if (s == "bearer") return AuthStyle::bearer;
  if (s == "api-key") return AuthStyle::api_key_header;
  if (s == "x-api-key") return AuthStyle::x_api_key;
  if (s == "x-goog-api-key") return AuthStyle::x_goog_api_key;
  if (s == "none") return AuthStyle::none;
  node.fail("expected bearer, api-key, x-api-key, x-goog-api-key or none, got \"" + s + "\"");
}

const char* default_base_url(ProviderKind k) {
  switch (k) {
    case ProviderKind::openai: return "https://api.openai.com/v1";
    case ProviderKind::anthropic: return "https://api.anthropic.com";
    case ProviderKind::gemini: return "https://generativelanguage.googleapis.com/v1beta";
  }
  return "";
}

std::string trim_slash(std::string s) {
  while (!s.empty() && s.back() == '/') s.pop_back();
  return s;
}

Price parse_price(const ConfigNode& node) {
  node.expect_map();
  Price p;
  if (auto n = node.get("input")) p.input = n->as_number(0, 1e6);
  if (auto n = node.get("output")) p.output = n->as_number(0, 1e6);
  if (auto n = node.get("cached_input")) p.cached_input = n->as_number(0, 1e6);
  node.finish();
  return p;
}

ProviderConfig parse_provider(const ConfigNode& node) {
  node.expect_map();
  ProviderConfig p;
  auto name = node.required("name");
  p.name = name.as_string();
  if (!valid_name(p.name)) name.fail("expected letters, digits, '-', '_' or '.' (no '/')");
  p.kind = parse_kind(node.required("kind"));
  if (auto n = node.get("base_url")) {
    p.base_url = trim_slash(n->as_url());
  } else {
    p.base_url = default_base_url(p.kind);
  }
  p.api_key = node.get_string("api_key");
  p.api_version = node.get_string("api_version");
  switch (p.kind) {
    case ProviderKind::openai:
      p.auth = p.api_version.empty() ? AuthStyle::bearer : AuthStyle::api_key_header;
      break;
    case ProviderKind::anthropic: p.auth = AuthStyle::x_api_key; break;
    case ProviderKind::gemini: p.auth = AuthStyle::x_goog_api_key; break;
  }
  if (auto n = node.get("auth")) p.auth = parse_auth(*n);
  if (auto n = node.get("headers")) p.headers = parse_headers(*n);
  p.max_completion_tokens = node.get_bool("max_completion_tokens", !p.api_version.empty() &&
                                                                      p.kind == ProviderKind::openai);
  p.models = node.get_strings("models");
  if (auto n = node.get("prices")) {
    for (auto& [model, price] : n->entries()) p.prices[model] = parse_price(price);
  }
  p.default_max_tokens = node.get_int("default_max_tokens", p.default_max_tokens, 1, 10'000'000);
  if (auto n = node.get("proxy")) {
    p.proxy = n->as_url();
    if (p.proxy.starts_with("https://")) n->fail("expected an http:// proxy URL");
  }
  p.connect_timeout = node.get_duration("connect_timeout", p.connect_timeout);
  p.first_byte_timeout = node.get_duration("first_byte_timeout", p.first_byte_timeout);
  p.idle_timeout = node.get_duration("idle_timeout", p.idle_timeout);
  p.timeout = node.get_duration("timeout", p.timeout);
  p.rpm = node.get_int("rpm", 0, 0, 100'000'000);
  p.tpm = node.get_int("tpm", 0, 0, 1'000'000'000'000);
  node.finish();
  return p;
}

Strategy parse_strategy(const ConfigNode& node) {
  auto s = node.as_string();
  if (s == "fallback") return Strategy::fallback;
  if (s == "weighted") return Strategy::weighted;
  if (s == "least_latency") return Strategy::least_latency;
  if (s == "lowest_cost") return Strategy::lowest_cost;
  node.fail("expected fallback, weighted, least_latency or lowest_cost, got \"" + s + "\"");
}

// "provider/model" → parts; the model part may itself contain '/' (openrouter ids).
std::pair<std::string, std::string> split_target(const ConfigNode& node, const std::string& s) {
  auto slash = s.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == s.size()) {
    node.fail("expected <provider>/<upstream model id>, got \"" + s + "\"");
  }
  return {s.substr(0, slash), s.substr(slash + 1)};
}

Target parse_target(const ConfigNode& node) {
  Target t;
  if (node.is_scalar()) {
    std::tie(t.provider, t.model) = split_target(node, node.as_string());
    return t;
  }
  node.expect_map();
  auto m = node.required("model");
  std::tie(t.provider, t.model) = split_target(m, m.as_string());
  if (auto n = node.get("weight")) t.weight = n->as_number(0, 1e6);
  if (auto n = node.get("temperature_max")) t.temperature_max = n->as_number(0, 2);
  if (auto n = node.get("max_tokens")) t.max_tokens = n->as_int(1, 10'000'000);
  if (auto n = node.get("headers")) t.headers = parse_headers(*n);
  t.context_window = node.get_int("context_window", 0, 0, 1'000'000'000);
  t.rpm = node.get_int("rpm", 0, 0, 100'000'000);
  t.tpm = node.get_int("tpm", 0, 0, 1'000'000'000'000);
  node.finish();
  return t;
}

ModelAlias parse_alias(const ConfigNode& node) {
  node.expect_map();
  ModelAlias a;
  auto name = node.required("name");
  a.name = name.as_string();
  if (a.name.empty() || a.name.find('/') != std::string::npos || a.name.size() > 128) {
    name.fail("expected a name without '/' (provider/model names are addressed directly)");
  }
  auto targets = node.required("targets");
  for (auto& t : targets.items()) a.targets.push_back(parse_target(t));
  if (a.targets.empty()) targets.fail("needs at least one target");
  if (auto n = node.get("strategy")) a.strategy = parse_strategy(*n);
  a.display_name = node.get_string("display_name");
  a.description = node.get_string("description");
  a.context_window = node.get_int("context_window", 0, 0, 1'000'000'000);
  a.function_call = node.get_bool("function_call", true);
  a.vision = node.get_bool("vision", false);
  a.reasoning = node.get_bool("reasoning", false);
  node.finish();
  if (a.strategy == Strategy::weighted) {
    double sum = 0;
    for (auto& t : a.targets) sum += t.weight;
    if (sum <= 0) targets.fail("weighted strategy needs a positive weight on some target");
  }
  return a;
}

}  // namespace

const ProviderConfig* Config::provider(std::string_view name) const {
  for (auto& p : providers) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

const ModelAlias* Config::alias(std::string_view name) const {
  for (auto& m : models) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

Config parse_config(const ConfigNode& node, const std::vector<std::string>& client_names) {
  node.expect_map();
  Config c;
  if (auto n = node.get("providers")) {
    std::set<std::string> names;
    for (auto& item : n->items()) {
      auto p = parse_provider(item);
      if (!names.insert(p.name).second) {
        item.child("name").fail("duplicate provider name \"" + p.name + "\"");
      }
      c.providers.push_back(std::move(p));
    }
  }
  if (auto n = node.get("models")) {
    std::set<std::string> names;
    auto items = n->items();
    for (std::size_t i = 0; i < items.size(); ++i) {
      auto a = parse_alias(items[i]);
      if (!names.insert(a.name).second) {
        items[i].child("name").fail("duplicate model name \"" + a.name + "\"");
      }
      for (std::size_t j = 0; j < a.targets.size(); ++j) {
        if (!c.provider(a.targets[j].provider)) {
          items[i].child("targets").fail("entry " + std::to_string(j) + ": no provider named \"" +
                                         a.targets[j].provider + "\" in ai.providers");
        }
      }
      c.models.push_back(std::move(a));
    }
  }
  if (auto n = node.get("retry")) {
    n->expect_map();
    c.retry.attempts = static_cast<int>(n->get_int("attempts", c.retry.attempts, 1, 10));
    c.retry.backoff = n->get_duration("backoff", c.retry.backoff);
    c.retry.max_backoff = n->get_duration("max_backoff", c.retry.max_backoff);
    c.retry.max_retry_after = n->get_duration("max_retry_after", c.retry.max_retry_after);
    n->finish();
  }
  if (auto n = node.get("cooldown")) {
    n->expect_map();
    c.cooldown.failures = static_cast<int>(n->get_int("failures", c.cooldown.failures, 0, 1000));
    c.cooldown.window = n->get_duration("window", c.cooldown.window);
    c.cooldown.duration = n->get_duration("duration", c.cooldown.duration);
    n->finish();
  }
  if (auto n = node.get("cache")) {
    n->expect_map();
    c.cache.enabled = n->get_bool("enabled", c.cache.enabled);
    c.cache.ttl = n->get_duration("ttl", c.cache.ttl);
    c.cache.max_bytes = n->get_size("max_bytes", c.cache.max_bytes);
    n->finish();
  }
  if (auto n = node.get("limits")) {
    for (auto& [client, lim] : n->entries()) {
      if (std::find(client_names.begin(), client_names.end(), client) == client_names.end()) {
        n->child(client).fail("no client named \"" + client + "\" in clients");
      }
      lim.expect_map();
      ClientLimits l;
      l.rpm = lim.get_int("rpm", 0, 0, 100'000'000);
      l.tpm = lim.get_int("tpm", 0, 0, 1'000'000'000'000);
      if (auto b = lim.get("budget_usd_day")) l.budget_usd_day = b->as_number(0, 1e9);
      if (auto b = lim.get("budget_usd_month")) l.budget_usd_month = b->as_number(0, 1e9);
      lim.finish();
      c.limits[client] = l;
    }
  }
  c.first_token_timeout = node.get_duration("first_token_timeout", c.first_token_timeout);
  c.total_timeout = node.get_duration("total_timeout", c.total_timeout);
  if (auto n = node.get("audio_provider")) {
    c.audio_provider = n->as_string();
    if (!c.provider(c.audio_provider)) n->fail("no provider named \"" + c.audio_provider + "\"");
  }
  node.finish();
  return c;
}

}  // namespace agentd::ai
