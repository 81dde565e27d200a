// The gateway: resolves a model to targets, then for each target in the strategy's order
// makes attempts with backoff until one answers; breakers and latency averages learn from
// every attempt. Streams fall back only until their first meaningful chunk is in hand.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <cmath>
#include <deque>

#include "agentd/ai/gateway.hpp"
#include "agentd/ai/state.hpp"
#include "dialect.hpp"
#include "limits.hpp"
#include "routing.hpp"

#include <openssl/sha.h>

namespace agentd::ai {
namespace {

namespace asio = boost::asio;
using asio::awaitable;
using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;

Error from_client_error(const net::ClientError& e, const std::string& label) {
  Error err;
  err.provider = label;
  err.message = label + ": " + net::describe(e);
  switch (e.kind) {
    case net::ClientError::Kind::timeout:
      err.kind = Error::Kind::timeout;
      err.status = 504;
      err.code = "upstream_timeout";
      break;
    case net::ClientError::Kind::cancelled:
      err.kind = Error::Kind::cancelled;
      err.status = 499;
      err.code = "cancelled";
      break;
    case net::ClientError::Kind::bad_url:
      err.kind = Error::Kind::connection;
      err.status = 500;
      err.code = "bad_provider_url";
      break;
    default:
      err.kind = Error::Kind::connection;
      err.status = 502;
      err.code = "upstream_unreachable";
      break;
  }
  return err;
}

// Failures that say something about the target's health (and so feed its breaker).
bool counts_against_target(const Error& e) {
  switch (e.kind) {
    case Error::Kind::rate_limited:
    case Error::Kind::overloaded:
    case Error::Kind::server:
    case Error::Kind::timeout:
    case Error::Kind::connection:
    case Error::Kind::auth:
    case Error::Kind::not_found:
      return true;
    default:
      return false;
  }
}

// Caps from the target's overrides.
json apply_overrides(json req, const Target& t);

// The request as the target gets it: `request` itself unless the target has caps to apply
// (then a copy in `scratch`), so the common case copies nothing.
const json& for_target(const json& request, const Target& t, json& scratch) {
  if (!t.temperature_max && !t.max_tokens) return request;
  scratch = apply_overrides(request, t);
  return scratch;
}

json apply_overrides(json req, const Target& t) {
  if (t.temperature_max) {
    auto it = req.find("temperature");
    if (it != req.end() && it->is_number() && it->get<double>() > *t.temperature_max) {
      *it = *t.temperature_max;
    }
  }
  if (t.max_tokens) {
    bool present = false;
    for (const char* key : {"max_tokens", "max_completion_tokens"}) {
      auto it = req.find(key);
      if (it == req.end() || !it->is_number_integer()) continue;
      present = true;
      if (it->get<std::int64_t>() > *t.max_tokens) *it = *t.max_tokens;
    }
    if (!present) req["max_tokens"] = *t.max_tokens;
  }
  return req;
}

// Exact-match key: the normalized request (keys sorted by nlohmann's map) without the fields
// that do not change the answer.
std::string cache_key(const std::string& kind, json request) {
  for (const char* k : {"stream", "stream_options", "user", "metadata", "store"}) request.erase(k);
  auto text = request.dump();
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), d);
  static const char* kHex = "0123456789abcdef";
  std::string key = "cache:" + kind + ":";
  for (unsigned char c : d) {
    key += kHex[c >> 4];
    key += kHex[c & 15];
  }
  return key;
}

// A stream replayed from the cache.
class CachedStream final : public ChatStream {
 public:
  CachedStream(std::vector<json> chunks, bool include_usage, CallInfo info)
      : chunks_(std::move(chunks)), include_usage_(include_usage), info_(std::move(info)) {}
  const CallInfo& info() const noexcept override { return info_; }
  awaitable<Outcome<std::optional<json>>> next() override {
    while (i_ < chunks_.size()) {
      json c = std::move(chunks_[i_++]);
      if (!include_usage_ && is_usage_chunk(c)) continue;
      co_return std::optional<json>(std::move(c));
    }
    co_return std::optional<json>();
  }
  void cancel() noexcept override { i_ = chunks_.size(); }

 private:
  std::vector<json> chunks_;
  bool include_usage_;
  CallInfo info_;
  std::size_t i_ = 0;
};

double cost_of(const ProviderConfig& p, const std::string& model, const json& usage) {
  auto it = p.prices.find(model);
  if (it == p.prices.end() || !usage.is_object()) return 0;
  const Price& price = it->second;
  double prompt = usage.value("prompt_tokens", 0.0);
  double completion = usage.value("completion_tokens", 0.0);
  double cached = 0;
  if (auto d = usage.find("prompt_tokens_details"); d != usage.end() && d->is_object()) {
    cached = d->value("cached_tokens", 0.0);
  }
  double cached_price = price.cached_input < 0 ? price.input : price.cached_input;
  return ((prompt - cached) * price.input + cached * cached_price + completion * price.output) /
         1e6;
}

// Reads one piece of a response body, giving up (and abandoning the response) at `deadline`.
awaitable<net::ClientResult<std::string>> read_until(net::ClientStream& s,
                                                     Clock::time_point deadline,
                                                     const std::string& phase) {
  struct Race {
    bool done = false;
    bool fired = false;
  };
  auto race = std::make_shared<Race>();
  asio::steady_timer timer(co_await asio::this_coro::executor, deadline);
  timer.async_wait([race, &s](const boost::system::error_code& ec) {
    if (ec || race->done) return;  // checked first: `s` may be gone once `done` is set
    race->fired = true;
    s.cancel();
  });
  auto r = co_await s.read();
  race->done = true;
  timer.cancel();
  if (race->fired) {
    co_return net::ClientError{net::ClientError::Kind::timeout, phase,
                               "no token from the upstream in time"};
  }
  co_return r;
}

class GatewayImpl;

// One upstream stream being translated into OpenAI chunks.
class StreamImpl final : public ChatStream {
 public:
  StreamImpl(GatewayImpl& gw, const ProviderConfig& provider, Target target,
             std::unique_ptr<net::ClientStream> body, std::unique_ptr<StreamTranslator> tr,
             bool include_usage, Clock::time_point deadline, CallInfo info,
             Clock::time_point started)
      : gw_(gw),
        provider_(provider),
        target_(std::move(target)),
        body_(std::move(body)),
        tr_(std::move(tr)),
        include_usage_(include_usage),
        deadline_(deadline),
        info_(std::move(info)),
        started_(started) {}

  const CallInfo& info() const noexcept override { return info_; }
  CallInfo& mutable_info() noexcept { return info_; }

  // Pulls until a meaningful chunk is queued or the stream ended (first-token deadline).
  awaitable<Outcome<void>> prime(Clock::time_point first_token_deadline) {
    while (!committed_ && !upstream_done_) {
      auto r = co_await pull(std::min(first_token_deadline, deadline_), "first_token");
      if (!r) co_return r.error();
    }
    co_return Outcome<void>{};
  }

  awaitable<Outcome<std::optional<json>>> next() override {
    auto c = co_await next_chunk();
    if (!c) co_return c.error();
    if (!*c) co_return std::optional<json>();
    co_return std::optional<json>((*c)->take_doc());
  }

  awaitable<Outcome<std::optional<std::string>>> next_text() override {
    auto c = co_await next_chunk();
    if (!c) co_return c.error();
    if (!*c) co_return std::optional<std::string>();
    co_return std::optional<std::string>((*c)->take_text());
  }

  void cancel() noexcept override {
    cancelled_ = true;
    if (body_) body_->cancel();
  }

  ~StreamImpl() override;

 private:
  awaitable<Outcome<std::optional<ChunkText>>> next_chunk() {
    for (;;) {
      if (!pending_.empty()) {
        ChunkText c = std::move(pending_.front());
        pending_.pop_front();
        co_return std::optional<ChunkText>(std::move(c));
      }
      if (upstream_done_) {
        if (!tr_->finished()) {
          Error e;
          e.kind = Error::Kind::connection;
          e.status = 502;
          e.code = "upstream_stream_cut";
          e.provider = target_.label();
          e.message = target_.label() + ": the upstream ended the stream before its answer was "
                                        "complete";
          failed_ = true;
          co_return e;
        }
        co_return std::optional<ChunkText>();
      }
      auto r = co_await pull(deadline_, "total");
      if (!r) {
        failed_ = true;
        co_return r.error();
      }
    }
  }

  awaitable<Outcome<void>> pull(Clock::time_point deadline, const std::string& phase) {
    auto piece = co_await read_until(*body_, deadline, phase);
    if (!piece) {
      auto e = from_client_error(piece.error(), target_.label());
      if (cancelled_) e.kind = Error::Kind::cancelled;
      co_return e;
    }
    if (piece->empty()) {
      upstream_done_ = true;
      co_return Outcome<void>{};
    }
    for (auto& ev : parser_.feed(*piece)) {
      // The base translator's on_event_text is the DOM path (on_event); a dialect's own
      // override scans and splices text for callers that forward it.
      auto chunks = dom_chunks_ ? tr_->StreamTranslator::on_event_text(ev) : tr_->on_event_text(ev);
      if (!chunks) {
        auto e = chunks.error();
        e.provider = target_.label();
        co_return e;
      }
      for (auto& c : *chunks) {
        if (record_) {
          if (c.text.empty() && c.doc) {
            c.text = c.doc->dump(-1, ' ', false, json::error_handler_t::replace);
          }
          recorded_.push_back(c.text);
        }
        streamed_chars_ += c.content_bytes;
        if (c.usage_only) {
          // Only an object is usage: anything else would make the accounting throw.
          if (c.usage && c.usage->is_object()) info_.usage = c.usage;
          if (!include_usage_) continue;
        }
        if (!committed_ && c.meaningful) {
          committed_ = true;
          ttft_ = duration_cast<milliseconds>(Clock::now() - started_);
        }
        pending_.push_back(std::move(c));
      }
    }
    if (tr_->finished()) upstream_done_ = true;
    co_return Outcome<void>{};
  }

  friend class GatewayImpl;
  GatewayImpl& gw_;
  const ProviderConfig& provider_;
  Target target_;
  std::unique_ptr<net::ClientStream> body_;
  std::unique_ptr<StreamTranslator> tr_;
  net::SseParser parser_;
  std::deque<ChunkText> pending_;
  bool include_usage_;
  Clock::time_point deadline_;
  CallInfo info_;
  Clock::time_point started_;
  std::optional<milliseconds> ttft_;
  bool committed_ = false;
  bool upstream_done_ = false;
  bool cancelled_ = false;
  bool failed_ = false;
  // Accounting and caching, done when the stream ends.
  Admission admission_;
  std::int64_t est_tokens_ = 0;
  std::string cache_key_;
  bool record_ = false;
  bool dom_chunks_ = false;  // parse chunks straight into DOMs (the caller reads next())
  std::weak_ptr<void> gw_alive_;
  std::string client_;
  std::string request_id_;
  std::vector<std::string> recorded_;  // each chunk's text, for the cache
  std::size_t streamed_chars_ = 0;
};

struct Provider {
  ProviderConfig config;
  std::unique_ptr<Dialect> dialect;
};

class GatewayImpl final : public Gateway {
 public:
  GatewayImpl(asio::any_io_executor ex, Config config, net::HttpClient& client,
              core::Registry& metrics, std::shared_ptr<Counters> counters,
              std::shared_ptr<ResponseCache> cache)
      : ex_(std::move(ex)),
        config_(std::move(config)),
        client_(client),
        metrics_(metrics),
        routing_(config_),
        counters_(counters ? std::move(counters) : std::shared_ptr<Counters>(make_memory_counters())),
        cache_(cache ? std::move(cache)
                     : std::shared_ptr<ResponseCache>(make_memory_cache(config_.cache.max_bytes))),
        limiter_(config_, *counters_),
        rng_(std::random_device{}()) {
    for (const auto& p : config_.providers) {
      providers_.emplace(p.name, Provider{p, make_dialect(p)});
    }
  }

  awaitable<Outcome<json>> chat(const CallContext& ctx, json request, CallInfo& info) override {
    co_return co_await chat_as<json>(ctx, std::move(request), info);
  }

  awaitable<Outcome<std::string>> chat_text(const CallContext& ctx, json request,
                                            CallInfo& info) override {
    auto r = co_await chat_as<ChatText>(ctx, std::move(request), info);
    if (!r) co_return r.error();
    co_return std::move(r->body);
  }

  // chat() for the planner (a DOM) and chat_text() for the HTTP route (the bytes).
  template <class T>
  awaitable<Outcome<T>> chat_as(const CallContext& ctx, json request, CallInfo& info) {
    auto started = Clock::now();
    if (auto v = validate_chat_request(request); !v) co_return v.error();
    auto route = routing_.resolve(request["model"].get<std::string>());
    if (!route) co_return route.error();
    request.erase("stream");
    request.erase("stream_options");
    auto key = co_await cache_lookup(ctx, "chat", request, info);
    if (auto cached = cached_object(key, info, started, ctx)) {
      if constexpr (std::is_same_v<T, json>) {
        co_return std::move(*cached);
      } else {
        co_return ChatText{std::move(*key.hit), std::nullopt};
      }
    }
    auto admitted = co_await admit(ctx, *route, request, started, info);
    if (!admitted) co_return admitted.error();
    // Not a structured binding: clang 14 (the fuzz build) cannot capture those in lambdas.
    auto& plan = admitted->plan;
    auto est = admitted->est;
    auto& admission = admitted->admission;
    auto deadline = started + config_.total_timeout;
    auto result = co_await try_targets<T>(
        plan, info, deadline, ctx,
        [&](const Target& t) { return attempt_chat<T>(t, request, est, deadline, info); });
    if (result) {
      const auto& p = providers_.at(info.provider).config;
      if constexpr (std::is_same_v<T, json>) {
        // Only an object is usage: anything else would make the accounting below throw.
        if (auto u = result->find("usage"); u != result->end() && u->is_object()) info.usage = *u;
      } else {
        info.usage = result->usage;
      }
      if (info.usage) info.cost_usd = cost_of(p, info.model, *info.usage);
      if (!key.key.empty()) {
        if constexpr (std::is_same_v<T, json>) {
          co_await cache_->put(key.key, result->dump(), config_.cache.ttl);
        } else {
          co_await cache_->put(key.key, result->body, config_.cache.ttl);
        }
      }
    }
    co_await limiter_.settle(admission, info.usage ? info.usage->value("total_tokens", est) : est,
                             info.cost_usd);
    finish(info, started, result ? "ok" : "error", ctx);
    co_return result;
  }

  awaitable<Outcome<std::unique_ptr<ChatStream>>> chat_stream(const CallContext& ctx,
                                                               json request) override {
    auto started = Clock::now();
    if (auto v = validate_chat_request(request); !v) co_return v.error();
    auto route = routing_.resolve(request["model"].get<std::string>());
    if (!route) co_return route.error();
    bool include_usage = request.contains("stream_options") &&
                         request["stream_options"].is_object() &&
                         request["stream_options"].value("include_usage", false);
    request["stream"] = true;
    CallInfo info;
    auto key = co_await cache_lookup(ctx, "chat-stream", request, info);
    if (key.hit) {
      auto cached = json::parse(*key.hit, nullptr, false);
      if (cached.is_array()) {
        finish(info, started, "ok", ctx);
        std::unique_ptr<ChatStream> replay = std::make_unique<CachedStream>(
            cached.get<std::vector<json>>(), include_usage, std::move(info));
        co_return replay;
      }
    }
    auto admitted = co_await admit(ctx, *route, request, started, info);
    if (!admitted) co_return admitted.error();
    // Not a structured binding: clang 14 (the fuzz build) cannot capture those in lambdas.
    auto& plan = admitted->plan;
    auto est = admitted->est;
    auto& admission = admitted->admission;
    auto deadline = started + config_.total_timeout;
    auto result = co_await try_targets<std::unique_ptr<StreamImpl>>(
        plan, info, deadline, ctx, [&](const Target& t) {
          return attempt_stream(t, request, include_usage, !key.key.empty(), ctx.dom_chunks, est, deadline,
                                info);
        });
    if (!result) {
      co_await limiter_.settle(admission, est, 0);
      finish(info, started, "error", ctx);
      co_return result.error();
    }
    auto& s = **result;
    s.admission_ = std::move(admission);
    s.est_tokens_ = est;
    s.cache_key_ = key.key;
    s.client_ = ctx.client;
    s.gw_alive_ = alive_;
    s.request_id_ = ctx.request_id;
    s.mutable_info() = std::move(info);
    auto& si = s.mutable_info();
    si.overhead = duration_cast<microseconds>(Clock::now() - started) - si.upstream;
    if (si.overhead.count() < 0) si.overhead = microseconds(0);
    std::unique_ptr<ChatStream> out = std::move(*result);
    co_return out;
  }

  awaitable<Outcome<json>> embeddings(const CallContext& ctx, json request,
                                      CallInfo& info) override {
    auto started = Clock::now();
    if (!request.is_object() || !request.contains("model") || !request["model"].is_string()) {
      co_return Error::bad_request("model is required (a string)", "model");
    }
    if (!request.contains("input")) co_return Error::bad_request("input is required", "input");
    auto route = routing_.resolve(request["model"].get<std::string>());
    if (!route) co_return route.error();
    auto key = co_await cache_lookup(ctx, "embeddings", request, info);
    if (auto cached = cached_object(key, info, started, ctx)) co_return std::move(*cached);
    auto admitted = co_await admit(ctx, *route, request, started, info, 0);
    if (!admitted) co_return admitted.error();
    // Not a structured binding: clang 14 (the fuzz build) cannot capture those in lambdas.
    auto& plan = admitted->plan;
    auto est = admitted->est;
    auto& admission = admitted->admission;
    auto deadline = started + config_.total_timeout;
    auto result = co_await try_targets<json>(
        plan, info, deadline, ctx,
        [&](const Target& t) { return attempt_embeddings(t, request, est, deadline, info); });
    if (result) {
      if (auto u = result->find("usage"); u != result->end() && u->is_object()) info.usage = *u;
      if (info.usage) {
        info.cost_usd = cost_of(providers_.at(info.provider).config, info.model, *info.usage);
      }
      if (!key.key.empty()) co_await cache_->put(key.key, result->dump(), config_.cache.ttl);
    }
    co_await limiter_.settle(admission, info.usage ? info.usage->value("total_tokens", est) : est,
                             info.cost_usd);
    finish(info, started, result ? "ok" : "error", ctx);
    co_return result;
  }

  awaitable<Outcome<RawResponse>> audio(const CallContext& ctx, std::string path, RawRequest req,
                                        CallInfo& info) override {
    auto started = Clock::now();
    std::string model = req.model;
    if (model.empty()) {
      if (config_.audio_provider.empty()) {
        co_return Error::bad_request("model is required (a string)", "model");
      }
    }
    Route route;
    if (!model.empty()) {
      auto r = routing_.resolve(model);
      if (!r) co_return r.error();
      route = std::move(*r);
    }
    for (auto& t : route.targets) {
      if (providers_.at(t.provider).config.kind != ProviderKind::openai) {
        co_return Error::bad_request("model \"" + model + "\" routes to " + t.provider +
                                         ", which is not OpenAI-compatible: audio needs an "
                                         "openai-kind provider",
                                     "model");
      }
    }
    auto deadline = started + config_.total_timeout;
    auto plan = routing_.plan(route, started, rng_);
    auto result = co_await try_targets<RawResponse>(
        plan, info, deadline, ctx,
        [&](const Target& t) { return attempt_audio(t, path, req, deadline, info); });
    finish(info, started, result ? "ok" : "error", ctx);
    co_return result;
  }

  std::vector<json> models() const override {
    std::vector<json> out;
    for (const auto& a : config_.models) {
      json m = {{"id", a.name},          {"object", "model"},
                {"created", 1700000000}, {"owned_by", "agentd"},
                {"functionCall", a.function_call}, {"vision", a.vision},
                {"reasoning", a.reasoning}};
      if (!a.display_name.empty()) m["displayName"] = a.display_name;
      if (!a.description.empty()) m["description"] = a.description;
      if (a.context_window > 0) m["contextWindowTokens"] = a.context_window;
      out.push_back(std::move(m));
    }
    for (const auto& p : config_.providers) {
      for (const auto& id : p.models) {
        out.push_back({{"id", p.name + "/" + id},
                       {"object", "model"},
                       {"created", 1700000000},
                       {"owned_by", p.name}});
      }
    }
    return out;
  }

  bool knows_model(std::string_view name) const override {
    return static_cast<bool>(routing_.resolve(name));
  }

  void stream_ended(StreamImpl& s) {
    auto now = Clock::now();
    auto& info = s.info_;
    info.upstream = duration_cast<microseconds>(now - s.started_) - info.overhead;
    std::int64_t tokens = s.est_tokens_ + static_cast<std::int64_t>(s.streamed_chars_ / 4);
    if (info.usage) {
      info.cost_usd = cost_of(s.provider_, s.target_.model, *info.usage);
      tokens = info.usage->value("total_tokens", tokens);
    } else {
      // No usage from the upstream (cut off, or cancelled): charge what we can estimate.
      json est = {{"prompt_tokens", s.est_tokens_},
                  {"completion_tokens", static_cast<std::int64_t>(s.streamed_chars_ / 4)}};
      info.cost_usd = cost_of(s.provider_, s.target_.model, est);
    }
    if (s.committed_ && !s.failed_) routing_.success(s.target_, now, s.ttft_);
    if (s.failed_) routing_.failure(s.target_, now);
    if (s.ttft_) target_metrics(s.target_).ttft().observe(static_cast<double>(s.ttft_->count()) / 1000.0);
    count_tokens(info, s.client_, s.request_id_);
    bool complete = s.upstream_done_ && s.tr_->finished() && !s.failed_ && !s.cancelled_;
    // A stream is counted when it ends (the calls that failed before it opened were counted
    // then): whole, cut off by its consumer, or broken mid-way.
    labelled(requests_, "agentd_ai_requests_total", "AI calls by outcome", "outcome",
             complete ? "ok" : s.cancelled_ ? "cancelled" : "error")
        .inc();
    std::string cache_value;
    if (complete && s.record_) {  // a JSON array of the chunks
      cache_value = "[";
      for (const auto& c : s.recorded_) {
        if (cache_value.size() > 1) cache_value += ',';
        cache_value += c;
      }
      cache_value += ']';
    }
    // Settling and caching may be remote (Redis): run them as their own task.
    asio::co_spawn(ex_,
                   settle_stream(std::move(s.admission_), tokens, info.cost_usd,
                                 std::move(s.cache_key_), std::move(cache_value)),
                   [rid = s.request_id_](std::exception_ptr e) {
                     if (!e) return;
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& ex) {
                       spdlog::error("rid={} ai: settling a stream failed: {}", rid, ex.what());
                     }
                   });
  }

 private:
  awaitable<void> settle_stream(Admission a, std::int64_t tokens, double cost, std::string key,
                                std::string value) {
    co_await limiter_.settle(a, tokens, cost);
    if (!key.empty() && !value.empty()) co_await cache_->put(key, std::move(value), config_.cache.ttl);
  }

  struct Admitted {
    Plan plan;
    std::int64_t est = 0;
    Admission admission;
  };
  // Orders the targets, estimates the prompt and admits the call against the client's limits
  // and budgets (`completion`: the completion tokens to reserve for, when not the request's).
  awaitable<Outcome<Admitted>> admit(const CallContext& ctx, const Route& route,
                                     const json& request, Clock::time_point started,
                                     CallInfo& info,
                                     std::optional<std::int64_t> completion = std::nullopt) {
    Admitted a;
    a.plan = routing_.plan(route, started, rng_);
    for (auto& s : a.plan.skipped) info.failures.push_back(s + ": skipped (cooling down)");
    a.est = estimate_prompt_tokens(request);
    auto admission =
        co_await limiter_.admit(ctx.client, a.est, worst_cost(a.plan, request, a.est, completion));
    if (!admission) {
      finish(info, started, "limited", ctx);
      co_return admission.error();
    }
    a.admission = std::move(*admission);
    co_return a;
  }

  struct CacheLookup {
    std::string key;                 // empty: do not store the answer
    std::optional<std::string> hit;  // the cached answer
  };
  awaitable<CacheLookup> cache_lookup(const CallContext& ctx, const std::string& kind,
                                      const json& request, CallInfo& info) {
    CacheLookup out;
    if (!config_.cache.enabled) {
      info.cache = "off";
      co_return out;
    }
    if (ctx.no_cache) {
      info.cache = "bypass";
    } else {
      out.key = cache_key(kind, request);
      out.hit = co_await cache_->get(out.key);
      info.cache = out.hit ? "hit" : "miss";
      if (out.hit) out.key.clear();
    }
    labelled(cache_results_, "agentd_ai_cache_total", "Response cache lookups by result", "result", info.cache)
        .inc();
    cache_bytes_.set(static_cast<double>(cache_->bytes()));
    co_return out;
  }

  // A cached JSON object answer, when the lookup hit one.
  std::optional<json> cached_object(const CacheLookup& key, CallInfo& info,
                                    Clock::time_point started, const CallContext& ctx) {
    if (!key.hit) return std::nullopt;
    auto cached = json::parse(*key.hit, nullptr, false);
    if (!cached.is_object()) return std::nullopt;
    finish(info, started, "ok", ctx);
    return cached;
  }

  // The most a call may cost over the plan's targets: the prompt estimate plus the completion
  // cap (the request's, else the target's, else the provider's default) at output prices.
  double worst_cost(const Plan& plan, const json& request, std::int64_t est,
                    std::optional<std::int64_t> completion = std::nullopt) const {
    double worst = 0;
    for (const auto& t : plan.targets) {
      const auto& p = providers_.at(t.provider).config;
      auto cap = completion ? *completion
                            : completion_cap(request, t.max_tokens.value_or(p.default_max_tokens));
      if (t.max_tokens) cap = std::min(cap, *t.max_tokens);
      json usage = {{"prompt_tokens", est}, {"completion_tokens", cap}};
      worst = std::max(worst, cost_of(p, t.model, usage));
    }
    return worst;
  }

  template <class T, class F>
  awaitable<Outcome<T>> try_targets(const Plan& plan, CallInfo& info, Clock::time_point deadline,
                                    const CallContext& ctx, F attempt) {
    Outcome<T> last = Error{};
    bool have_error = false;
    std::int64_t window_failed = 0;  // context window of the target that said "too long"
    for (std::size_t i = 0; i < plan.targets.size(); ++i) {
      const Target& t = plan.targets[i];
      if (window_failed > 0 && t.context_window > 0 && t.context_window <= window_failed) {
        info.failures.push_back(t.label() + ": skipped (context window not larger)");
        continue;
      }
      if (i > 0 && have_error) {
        labelled(fallbacks_, "agentd_ai_fallbacks_total", "Calls moved on to a next target", "to", t.label())
            .inc();
      }
      for (int n = 1; n <= config_.retry.attempts; ++n) {
        ++info.attempts;
        auto t0 = Clock::now();
        Outcome<T> r = co_await attempt(t);
        auto now = Clock::now();
        if (r) {
          info.provider = t.provider;
          info.model = t.model;
          if constexpr (!std::is_same_v<T, std::unique_ptr<StreamImpl>>) {
            routing_.success(t, now, duration_cast<milliseconds>(now - t0));
            target_metrics(t).latency().observe(std::chrono::duration<double>(now - t0).count());
          }
          breaker_metric(t, now);
          attempt_metric(t, "ok");
          co_return r;
        }
        Error e = r.error();
        if (e.code == "target_rate_limit") {
          // Our own per-provider/per-target window is full: no call was made, nothing is
          // wrong with the target; move on at once.
          --info.attempts;
          info.failures.push_back(t.label() + ": skipped (" + e.message + ")");
          last = e;
          have_error = true;
          break;
        }
        attempt_metric(t, kind_name(e.kind));
        if (e.kind == Error::Kind::cancelled) co_return e;
        if (counts_against_target(e)) routing_.failure(t, now);
        breaker_metric(t, now);
        spdlog::warn("rid={} ai: {} attempt {} failed: {} {}", ctx.request_id, t.label(), n,
                     e.status, e.message);
        info.failures.push_back(t.label() + ": " + std::to_string(e.status) + " " + e.message);
        if (e.kind == Error::Kind::context_window) {
          window_failed = t.context_window > 0 ? t.context_window : 1;
        }
        last = e;
        have_error = true;
        if (!e.falls_back()) co_return last;
        if (!e.retryable() || n == config_.retry.attempts) break;
        auto delay = backoff(n, e.retry_after);
        if (!delay || now + *delay >= deadline) break;  // wait too long: try the next target
        asio::steady_timer timer(ex_, *delay);
        co_await timer.async_wait(asio::use_awaitable);
      }
      if (Clock::now() >= deadline) break;
    }
    if (!have_error) {
      co_return Error{503, "no target available for this model", "", "no_target", "",
                      Error::Kind::server, std::nullopt, ""};
    }
    if (info.failures.size() > 1) {
      Error e = last.error();
      std::string all;
      for (const auto& f : info.failures) all += (all.empty() ? "" : "; ") + f;
      e.message = "every target failed (" + all + ")";
      co_return e;
    }
    co_return last;
  }

  // Full-jitter exponential backoff, or the upstream's Retry-After; nullopt: do not wait.
  std::optional<milliseconds> backoff(int attempt, std::optional<milliseconds> retry_after) {
    if (retry_after) {
      if (*retry_after > config_.retry.max_retry_after) return std::nullopt;
      return *retry_after;
    }
    double cap = std::min<double>(static_cast<double>(config_.retry.max_backoff.count()),
                                  static_cast<double>(config_.retry.backoff.count()) *
                                      std::pow(2.0, attempt - 1));
    double d = std::uniform_real_distribution<double>(cap / 2, cap)(rng_);
    return milliseconds(static_cast<std::int64_t>(d));
  }

  static const char* kind_name(Error::Kind k) {
    switch (k) {
      case Error::Kind::bad_request: return "bad_request";
      case Error::Kind::auth: return "auth";
      case Error::Kind::not_found: return "not_found";
      case Error::Kind::rate_limited: return "rate_limited";
      case Error::Kind::overloaded: return "overloaded";
      case Error::Kind::server: return "server";
      case Error::Kind::timeout: return "timeout";
      case Error::Kind::connection: return "connection";
      case Error::Kind::context_window: return "context_window";
      case Error::Kind::content_filter: return "content_filter";
      case Error::Kind::cancelled: return "cancelled";
      case Error::Kind::limit: return "limit";
    }
    return "other";
  }

  // A target's metric series, each looked up in the registry (by name and labels, under its
  // lock) the first time it is used instead of on every request; a series is created only
  // when it gets a value, as before.
  struct TargetMetrics {
    TargetMetrics(core::Registry& r, std::string l) : reg(r), label(std::move(l)) {}
    core::Registry& reg;
    std::string label;
    core::Histogram* latency_ = nullptr;
    core::Histogram* ttft_ = nullptr;
    core::Gauge* breaker_ = nullptr;
    core::Counter* tokens_[2] = {nullptr, nullptr};
    core::Counter* spend_ = nullptr;
    std::map<std::string, core::Counter*, std::less<>> attempts_;

    template <class T, class Make>
    static T& once(T*& slot, Make make) {
      if (!slot) slot = &make();
      return *slot;
    }
    core::Histogram& latency() {
      return once(latency_, [&]() -> auto& {
        return reg.histogram("agentd_ai_upstream_latency_seconds",
                             "Time for a whole non-streaming upstream answer, by target",
                             core::latency_buckets(), {{"target", label}});
      });
    }
    core::Histogram& ttft() {
      return once(ttft_, [&]() -> auto& {
        return reg.histogram("agentd_ai_time_to_first_token_seconds",
                             "Time from the upstream call to the first token, by target",
                             core::latency_buckets(), {{"target", label}});
      });
    }
    core::Gauge& breaker() {
      return once(breaker_, [&]() -> auto& {
        return reg.gauge("agentd_ai_breaker_open", "1 while a target's circuit breaker is open",
                         {{"target", label}});
      });
    }
    core::Counter& tokens(int completion) {
      return once(tokens_[completion], [&]() -> auto& {
        return reg.counter("agentd_ai_tokens_total", "Tokens by target and kind",
                           {{"target", label}, {"kind", completion ? "completion_tokens" : "prompt_tokens"}});
      });
    }
    core::Counter& spend() {
      return once(spend_, [&]() -> auto& {
        return reg.counter("agentd_ai_spend_usd_total", "Estimated spend by target", {{"target", label}});
      });
    }
    core::Counter& attempts(std::string_view outcome) {
      auto it = attempts_.find(outcome);
      if (it == attempts_.end()) {
        auto& c = reg.counter("agentd_ai_upstream_attempts_total", "Upstream calls by target and outcome",
                              {{"target", label}, {"outcome", std::string(outcome)}});
        it = attempts_.emplace(std::string(outcome), &c).first;
      }
      return *it->second;
    }
  };

  // By provider, then model: found without building the "provider/model" label per call.
  TargetMetrics& target_metrics(const std::string& provider, const std::string& model) {
    auto p = target_metrics_.find(provider);
    if (p == target_metrics_.end()) p = target_metrics_.try_emplace(provider).first;
    auto m = p->second.find(model);
    if (m == p->second.end()) m = p->second.try_emplace(model, metrics_, provider + "/" + model).first;
    return m->second;
  }
  TargetMetrics& target_metrics(const Target& t) { return target_metrics(t.provider, t.model); }

  // Series by one label value (outcome, result, client), looked up once each.
  core::Counter& labelled(std::map<std::string, core::Counter*, std::less<>>& memo, const char* name,
                          const char* help, const char* key, std::string_view value) {
    auto it = memo.find(value);
    if (it == memo.end()) {
      auto& c = metrics_.counter(name, help, {{key, std::string(value)}});
      it = memo.emplace(std::string(value), &c).first;
    }
    return *it->second;
  }

  void breaker_metric(const Target& t, Clock::time_point now) {
    target_metrics(t).breaker().set(routing_.is_open(t, now) ? 1 : 0);
  }

  void attempt_metric(const Target& t, const char* outcome) { target_metrics(t).attempts(outcome).inc(); }

  void on_spend(std::function<void(const SpendEvent&)> fn) override { spend_sink_ = std::move(fn); }

  void count_tokens(const CallInfo& info, const std::string& client, const std::string& rid) {
    if (spend_sink_ && info.usage && !info.provider.empty()) {
      SpendEvent e;
      e.client = client;
      e.provider = info.provider;
      e.model = info.model;
      e.tokens_in = info.usage->value("prompt_tokens", std::int64_t{0});
      e.tokens_out = info.usage->value("completion_tokens", std::int64_t{0});
      e.cost_usd = info.cost_usd;
      e.request_id = rid;
      spend_sink_(e);
    }
    if (info.cost_usd > 0) {
      labelled(client_spend_, "agentd_ai_client_spend_usd_total", "Estimated spend by client", "client",
               client.empty() ? std::string_view("-") : std::string_view(client))
          .inc(info.cost_usd);
    }
    if (!info.usage || info.provider.empty()) return;
    auto& tm = target_metrics(info.provider, info.model);
    int completion = 0;
    for (const char* k : {"prompt_tokens", "completion_tokens"}) {
      double v = info.usage->value(k, 0.0);
      if (v > 0) tm.tokens(completion).inc(v);
      ++completion;
    }
    if (info.cost_usd > 0) tm.spend().inc(info.cost_usd);
  }

  void finish(CallInfo& info, Clock::time_point started, const char* outcome,
              const CallContext& ctx) {
    auto total = duration_cast<microseconds>(Clock::now() - started);
    info.overhead = std::max(microseconds(0), total - info.upstream);
    labelled(requests_, "agentd_ai_requests_total", "AI calls by outcome", "outcome", outcome).inc();
    count_tokens(info, ctx.client, ctx.request_id);
  }

  net::ClientTimeouts timeouts(const ProviderConfig& p, Clock::time_point deadline,
                               bool streaming) const {
    net::ClientTimeouts t;
    auto remaining = std::max(milliseconds(1),
                              duration_cast<milliseconds>(deadline - Clock::now()));
    t.connect = p.connect_timeout;
    t.total = std::min(p.timeout, remaining);
    // A non-streaming answer's first byte comes after the whole generation.
    t.first_byte = streaming ? std::min(p.first_byte_timeout, config_.first_token_timeout)
                             : t.total;
    t.idle = p.idle_timeout;
    return t;
  }

  net::ClientRequest client_request(UpstreamCall&& call, const Target& t, const ProviderConfig& p,
                                    net::ClientTimeouts timeouts) const {
    net::ClientRequest r;
    r.method = std::move(call.method);
    r.url = std::move(call.url);
    r.headers = std::move(call.headers);
    for (const auto& h : t.headers) r.headers.set(h.name, h.value);
    r.body = std::move(call.body);
    r.timeouts = timeouts;
    r.proxy = p.proxy;
    return r;
  }

  // One non-streaming upstream exchange: the 2xx answer, or the error in our vocabulary.
  awaitable<Outcome<net::ClientResponse>> exchange(UpstreamCall call, const Target& t,
                                                   const Provider& prov,
                                                   Clock::time_point deadline, CallInfo& info) {
    auto creq = client_request(std::move(call), t, prov.config,
                               timeouts(prov.config, deadline, false));
    auto t0 = Clock::now();
    auto r = co_await client_.request(std::move(creq));
    info.upstream += duration_cast<microseconds>(Clock::now() - t0);
    if (!r) co_return from_client_error(r.error(), t.label());
    if (r->status / 100 != 2) {
      auto e = prov.dialect->upstream_error(r->status, r->headers, r->body);
      e.provider = t.label();
      co_return e;
    }
    co_return std::move(*r);
  }

  template <class T>
  awaitable<Outcome<T>> attempt_chat(const Target& t, const json& request, std::int64_t est,
                                     Clock::time_point deadline, CallInfo& info) {
    const auto& prov = providers_.at(t.provider);
    if (auto ok = co_await limiter_.admit_target(prov.config, t, est); !ok) co_return ok.error();
    json scratch;
    auto call = prov.dialect->chat_request(for_target(request, t, scratch), t.model, false);
    if (!call) co_return call.error();
    auto r = co_await exchange(std::move(*call), t, prov, deadline, info);
    if (!r) co_return r.error();
    Outcome<T> resp = Error{};
    if constexpr (std::is_same_v<T, json>) {
      resp = prov.dialect->chat_response(r->body, t.model);
    } else {
      resp = prov.dialect->chat_response_text(r->body, t.model);
    }
    if (!resp) {
      auto e = resp.error();
      e.provider = t.label();
      co_return e;
    }
    co_return std::move(*resp);
  }

  awaitable<Outcome<std::unique_ptr<StreamImpl>>> attempt_stream(const Target& t,
                                                                 const json& request,
                                                                 bool include_usage,
                                                                 bool record, bool dom_chunks,
                                                                 std::int64_t est,
                                                                 Clock::time_point deadline,
                                                                 CallInfo& info) {
    const auto& prov = providers_.at(t.provider);
    if (auto ok = co_await limiter_.admit_target(prov.config, t, est); !ok) co_return ok.error();
    json scratch;
    auto call = prov.dialect->chat_request(for_target(request, t, scratch), t.model, true);
    if (!call) co_return call.error();
    auto creq = client_request(std::move(*call), t, prov.config,
                               timeouts(prov.config, deadline, true));
    auto t0 = Clock::now();
    auto opened = co_await client_.open(std::move(creq));
    if (!opened) {
      info.upstream += duration_cast<microseconds>(Clock::now() - t0);
      co_return from_client_error(opened.error(), t.label());
    }
    auto body = std::move(*opened);
    if (body->status() / 100 != 2) {
      auto text = co_await body->read_all();
      info.upstream += duration_cast<microseconds>(Clock::now() - t0);
      auto e = prov.dialect->upstream_error(body->status(), body->headers(),
                                            text ? *text : std::string());
      e.provider = t.label();
      co_return e;
    }
    auto s = std::make_unique<StreamImpl>(*this, prov.config, t, std::move(body),
                                          prov.dialect->chat_stream(t.model), include_usage,
                                          deadline, CallInfo{}, t0);
    s->record_ = record;  // before prime(): the first chunks belong in the cache too
    s->dom_chunks_ = dom_chunks;
    auto first_token_deadline = t0 + config_.first_token_timeout;
    auto primed = co_await s->prime(first_token_deadline);
    info.upstream += duration_cast<microseconds>(Clock::now() - t0);
    if (!primed) co_return primed.error();
    co_return s;
  }

  awaitable<Outcome<json>> attempt_embeddings(const Target& t, const json& request,
                                              std::int64_t est, Clock::time_point deadline,
                                              CallInfo& info) {
    const auto& prov = providers_.at(t.provider);
    if (auto ok = co_await limiter_.admit_target(prov.config, t, est); !ok) co_return ok.error();
    auto call = prov.dialect->embeddings_request(request, t.model);
    if (!call) co_return call.error();
    auto r = co_await exchange(std::move(*call), t, prov, deadline, info);
    if (!r) co_return r.error();
    auto body = json::parse(r->body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      Error e;
      e.kind = Error::Kind::connection;
      e.status = 502;
      e.provider = t.label();
      e.message = t.label() + ": the upstream answered with something that is not JSON";
      co_return e;
    }
    body["model"] = t.model;
    co_return body;
  }

  awaitable<Outcome<RawResponse>> attempt_audio(const Target& t, const std::string& path,
                                                const RawRequest& req,
                                                Clock::time_point deadline, CallInfo& info) {
    const auto& prov = providers_.at(t.provider);
    auto call = passthrough_request(prov.config, "audio/" + path, req.content_type,
                                    rewrite_model(req, t.model));
    if (!call) co_return call.error();
    auto r = co_await exchange(std::move(*call), t, prov, deadline, info);
    if (!r) co_return r.error();
    RawResponse out;
    out.status = r->status;
    out.content_type = std::string(r->headers.get("content-type").value_or("application/octet-stream"));
    out.body = std::move(r->body);
    co_return out;
  }

  // The upstream model id replaces the client's name in a JSON or multipart body.
  static std::string rewrite_model(const RawRequest& req, const std::string& model) {
    if (req.content_type.starts_with("application/json")) {
      auto j = json::parse(req.body, nullptr, false);
      if (j.is_object()) {
        j["model"] = model;
        return j.dump();
      }
      return req.body;
    }
    return replace_multipart_field(req.content_type, req.body, "model", model);
  }

  asio::any_io_executor ex_;
  Config config_;
  net::HttpClient& client_;
  core::Registry& metrics_;
  std::function<void(const SpendEvent&)> spend_sink_;
  Routing routing_;
  std::shared_ptr<Counters> counters_;
  std::shared_ptr<ResponseCache> cache_;
  Limiter limiter_;
  std::map<std::string, Provider, std::less<>> providers_;
  std::mt19937 rng_;
  std::map<std::string, std::map<std::string, TargetMetrics, std::less<>>, std::less<>> target_metrics_;
  std::map<std::string, core::Counter*, std::less<>> requests_;
  std::map<std::string, core::Counter*, std::less<>> client_spend_;
  std::map<std::string, core::Counter*, std::less<>> cache_results_;
  std::map<std::string, core::Counter*, std::less<>> fallbacks_;
  core::Gauge& cache_bytes_ = metrics_.gauge("agentd_ai_cache_bytes",
                                             "Memory held by the in-process response cache");
  std::shared_ptr<void> alive_ = std::make_shared<int>(0);  // streams check it before calling back
};

StreamImpl::~StreamImpl() {
  // The loop may destroy a stream's frame after the gateway is gone (shutdown).
  if (body_ && !gw_alive_.expired()) gw_.stream_ended(*this);
}

}  // namespace

awaitable<Outcome<std::optional<std::string>>> ChatStream::next_text() {
  auto c = co_await next();
  if (!c) co_return c.error();
  if (!*c) co_return std::optional<std::string>();
  co_return std::optional<std::string>(
      (*c)->dump(-1, ' ', false, json::error_handler_t::replace));
}

std::unique_ptr<Gateway> make_gateway(asio::any_io_executor ex, Config config,
                                      net::HttpClient& client, core::Registry& metrics,
                                      std::shared_ptr<Counters> counters,
                                      std::shared_ptr<ResponseCache> cache) {
  return std::make_unique<GatewayImpl>(std::move(ex), std::move(config), client, metrics,
                                       std::move(counters), std::move(cache));
}

}  // namespace agentd::ai
