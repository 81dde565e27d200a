// The `ai` section: providers, model aliases and groups, routing, cache, limits, spend.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agentd/core/config.hpp"
#include "agentd/net/http.hpp"

namespace agentd::ai {

using std::chrono::milliseconds;

enum class ProviderKind { openai, anthropic, gemini };

// How the API key travels. Defaults per kind: openai → bearer (api_key_header when
// api_version is set, i.e. Azure), anthropic → x_api_key, gemini → x_goog_api_key.
enum class AuthStyle { bearer, api_key_header, x_api_key, x_goog_api_key, none };

// USD per million tokens.
struct Price {
  double input = 0;
  double output = 0;
  double cached_input = -1;  // < 0: same as input
};

struct ProviderConfig {
  std::string name;
  ProviderKind kind = ProviderKind::openai;
  // openai: up to and including /v1 (https://api.openai.com/v1); Azure: the deployment URL
  //   (https://R.openai.azure.com/openai/deployments/D);
  // anthropic: the host (https://api.anthropic.com), /v1/messages is appended;
  // gemini: up to and including the version (https://generativelanguage.googleapis.com/v1beta,
  //   or a Vertex .../publishers/google URL with auth: bearer).
  std::string base_url;
  std::string api_key;
  AuthStyle auth = AuthStyle::bearer;
  std::vector<net::Header> headers;  // extra headers on every upstream call
  // openai: adds ?api-version= (Azure); anthropic: the anthropic-version header (2023-06-01).
  std::string api_version;
  // openai: send the token cap as max_completion_tokens instead of max_tokens (Azure, o-series).
  bool max_completion_tokens = false;
  std::vector<std::string> models;        // upstream ids listed in /v1/models; empty: any
  std::map<std::string, Price> prices;    // by upstream model id
  std::int64_t default_max_tokens = 4096; // anthropic requires one
  std::string proxy;                      // http://host:port; empty: direct
  milliseconds connect_timeout{std::chrono::seconds(10)};
  milliseconds first_byte_timeout{std::chrono::seconds(60)};
  milliseconds idle_timeout{std::chrono::seconds(60)};
  milliseconds timeout{std::chrono::minutes(10)};
  std::int64_t rpm = 0;  // requests per minute across clients; 0: unlimited
  std::int64_t tpm = 0;  // tokens per minute across clients; 0: unlimited
};

enum class Strategy { fallback, weighted, least_latency, lowest_cost };

// One concrete destination of an alias: provider plus upstream model, with overrides.
struct Target {
  std::string provider;
  std::string model;  // upstream model id
  double weight = 1;
  std::optional<double> temperature_max;
  std::optional<std::int64_t> max_tokens;  // cap on the request's max tokens
  std::vector<net::Header> headers;
  std::int64_t context_window = 0;         // 0: unknown
  std::int64_t rpm = 0;                    // this target's own per-minute limits; 0: none
  std::int64_t tpm = 0;
  std::string label() const { return provider + "/" + model; }
};

struct ModelAlias {
  std::string name;
  std::vector<Target> targets;
  Strategy strategy = Strategy::fallback;
  // Shown by /v1/models (LobeChat reads these).
  std::string display_name;
  std::string description;
  std::int64_t context_window = 0;
  bool function_call = true;
  bool vision = false;
  bool reasoning = false;
};

struct RetryConfig {
  int attempts = 2;  // per target, including the first
  milliseconds backoff{200};
  milliseconds max_backoff{std::chrono::seconds(5)};
  milliseconds max_retry_after{std::chrono::seconds(30)};  // longer: fall back instead
};

struct CooldownConfig {
  int failures = 3;  // this many failures within `window` opens the breaker
  milliseconds window{std::chrono::minutes(1)};
  milliseconds duration{std::chrono::seconds(30)};  // skipped for this long, then one probe
};

struct CacheConfig {
  bool enabled = true;
  milliseconds ttl{std::chrono::hours(1)};
  std::uint64_t max_bytes = 64ull * 1024 * 1024;
};

struct ClientLimits {
  std::int64_t rpm = 0;
  std::int64_t tpm = 0;
  double budget_usd_day = 0;    // 0: unlimited (UTC days)
  double budget_usd_month = 0;  // 0: unlimited (UTC calendar months)
};

struct Config {
  std::vector<ProviderConfig> providers;
  std::vector<ModelAlias> models;
  RetryConfig retry;
  CooldownConfig cooldown;
  CacheConfig cache;
  std::map<std::string, ClientLimits> limits;  // by client name
  milliseconds first_token_timeout{std::chrono::seconds(60)};
  milliseconds total_timeout{std::chrono::minutes(10)};
  // Provider for /v1/embeddings and /v1/audio/* when the model names none.
  std::string audio_provider;

  const ProviderConfig* provider(std::string_view name) const;
  const ModelAlias* alias(std::string_view name) const;
};

// Throws ConfigError with the key path; `client_names` are the configured clients (for
// `limits`).
Config parse_config(const core::ConfigNode& node, const std::vector<std::string>& client_names);

}  // namespace agentd::ai
