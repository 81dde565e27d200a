// make_kv(): the configured backend, and the wrapper that keeps requests working while Redis is
// unreachable (cache misses, in-process counters, a warning per outage, health degraded).
#include <spdlog/spdlog.h>

#include <charconv>
#include <ctime>
#include <stdexcept>

#include "agentd/store/redis_protocol.hpp"
#include "kv_internal.hpp"

namespace agentd::store {

void throw_exception_from_error(const Error& e, const boost::source_location&) {
  throw std::runtime_error(e.message);
}

std::string StreamId::str() const { return std::to_string(ms) + "-" + std::to_string(seq); }

std::optional<StreamId> StreamId::parse(std::string_view s) {
  if (s.empty() || s == "0") return StreamId{};
  auto dash = s.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  auto num = [](std::string_view part, std::uint64_t& out) {
    if (part.empty() || part.size() > 20) return false;
    auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), out);
    return ec == std::errc() && p == part.data() + part.size();
  };
  StreamId id;
  if (!num(s.substr(0, dash), id.ms) || !num(s.substr(dash + 1), id.seq)) return std::nullopt;
  return id;
}

int compare_stream_ids(std::string_view a, std::string_view b) {
  auto x = StreamId::parse(a);
  auto y = StreamId::parse(b);
  if (!x || !y) return (x ? 1 : 0) - (y ? 1 : 0);
  if (*x < *y) return -1;
  return *x == *y ? 0 : 1;
}

KvConfig parse_kv_config(const core::ConfigNode& store) {
  KvConfig c;
  c.redis = store.get_string("redis", c.redis);
  if (!c.redis.empty()) {
    try {
      redis::parse_redis_url(c.redis);
    } catch (const std::invalid_argument& e) {
      store.child("redis").fail(e.what());
    }
  }
  if (auto t = store.get("redis_tls")) {
    t->expect_map();
    auto& tls = c.redis_tls;
    tls.ca_file = t->get_string("ca_file");
    tls.cert_file = t->get_string("cert_file");
    tls.key_file = t->get_string("key_file");
    tls.server_name = t->get_string("server_name");
    tls.verify_peer = t->get_bool("verify_peer", tls.verify_peer);
    t->finish();
    if (!c.redis.starts_with("rediss://")) {
      t->fail("applies only to a rediss:// URL in store.redis");
    }
    if (tls.cert_file.empty() != tls.key_file.empty()) {
      // Named at the key that is there (a missing key has no node to point at).
      bool has_cert = !tls.cert_file.empty();
      t->child(has_cert ? "cert_file" : "key_file")
          .fail(has_cert ? "needs key_file as well (mutual TLS)" : "needs cert_file as well (mutual TLS)");
    }
    if (tls.server_name.find_first_of(" \t\r\n/@") != std::string::npos) {
      t->child("server_name").fail("expected a host name");
    }
  }
  c.redis_prefix = store.get_string("redis_prefix", c.redis_prefix);
  c.redis_connect_timeout = store.get_duration("redis_connect_timeout", c.redis_connect_timeout);
  c.redis_command_timeout = store.get_duration("redis_command_timeout", c.redis_command_timeout);
  c.redis_health_interval = store.get_duration("redis_health_interval", c.redis_health_interval);
  for (auto [key, value] : {std::pair{"redis_connect_timeout", c.redis_connect_timeout},
                            std::pair{"redis_command_timeout", c.redis_command_timeout},
                            std::pair{"redis_health_interval", c.redis_health_interval}}) {
    if (value.count() <= 0) store.child(key).fail("must be more than 0");
  }
  c.cache_max_bytes = store.get_size("cache_max_size", c.cache_max_bytes);
  c.stream_max_len = static_cast<std::size_t>(store.get_int(
      "stream_max_len", static_cast<std::int64_t>(c.stream_max_len), 0, 1'000'000'000));
  return c;
}

namespace detail {
namespace {

bool outage_error(const Error& e) {
  return e.code == Errc::unavailable || e.code == Errc::timeout || e.code == Errc::cancelled;
}

std::string clock_text(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Shared by the wrapper's cache and health: where Redis stands and the fallback counters.
struct Fallback {
  MemoryCounters counters;
  bool down = false;
  std::string why;
  std::chrono::system_clock::time_point since;
  Clock::time_point last_error_log{};
  core::Gauge* degraded = nullptr;

  // Errors while Redis is up (a slow answer, a refused script) are logged at most every 10 s.
  void note(const Error& e, std::string_view op) {
    if (down && outage_error(e)) return;  // the outage was logged once already
    auto now = Clock::now();
    if (now - last_error_log < std::chrono::seconds(10)) return;
    last_error_log = now;
    spdlog::warn("store: redis {} failed ({}); served without redis", op, e.message);
  }
};

class DegradingCache final : public Cache {
 public:
  DegradingCache(Cache& inner, Fallback& fb) : inner_(inner), fb_(fb) {}

  asio::awaitable<KvResult<std::optional<std::string>>> get(std::string key) override {
    auto r = co_await inner_.get(std::move(key));
    if (r) co_return r;
    fb_.note(r.error(), "get");
    co_return std::optional<std::string>();  // a miss
  }

  asio::awaitable<KvResult<void>> set(std::string key, std::string value,
                                      milliseconds ttl) override {
    auto r = co_await inner_.set(std::move(key), std::move(value), ttl);
    if (!r) fb_.note(r.error(), "set");  // dropped
    co_return KvResult<void>();
  }

  asio::awaitable<KvResult<bool>> del(std::string key) override {
    auto r = co_await inner_.del(std::move(key));
    if (r) co_return r;
    fb_.note(r.error(), "del");
    co_return false;
  }

  // No fallback: a caller relying on CAS must know it did not happen anywhere shared.
  asio::awaitable<KvResult<bool>> compare_and_set(std::string key,
                                                  std::optional<std::string> expected,
                                                  std::string value, milliseconds ttl) override {
    co_return co_await inner_.compare_and_set(std::move(key), std::move(expected),
                                              std::move(value), ttl);
  }

  asio::awaitable<KvResult<Take>> take(std::string key, std::int64_t amount, std::int64_t limit,
                                       milliseconds ttl) override {
    auto r = co_await inner_.take(key, amount, limit, ttl);
    if (r) {
      fb_.counters.remember(key, r->value, ttl);
      co_return r;
    }
    fb_.note(r.error(), "take");
    co_return fb_.counters.take(key, amount, limit, ttl);
  }

  asio::awaitable<KvResult<std::int64_t>> add(std::string key, std::int64_t amount,
                                              milliseconds ttl) override {
    auto r = co_await inner_.add(key, amount, ttl);
    if (r) {
      fb_.counters.remember(key, *r, ttl);
      co_return r;
    }
    fb_.note(r.error(), "add");
    co_return fb_.counters.add(key, amount, ttl);
  }

  asio::awaitable<KvResult<std::int64_t>> counter(std::string key) override {
    auto r = co_await inner_.counter(key);
    if (r) co_return r;
    fb_.note(r.error(), "get counter");
    co_return fb_.counters.get(key);
  }

 private:
  Cache& inner_;
  Fallback& fb_;
};

class DegradingKv final : public Kv {
 public:
  DegradingKv(std::unique_ptr<RedisBackend> inner, core::Registry* metrics)
      : inner_(std::move(inner)), cache_(inner_->cache(), fb_), counters_(counters_over(cache_)) {
    if (metrics) {
      fb_.degraded = &metrics->gauge("agentd_store_degraded",
                                     "1 while Redis is unreachable and the store runs in-process");
    }
    fb_.down = true;  // until the first connection
    fb_.why = "connecting";
    fb_.since = std::chrono::system_clock::now();
    if (fb_.degraded) fb_.degraded->set(1);
    inner_->on_state([this](bool up, const std::string& why) { changed(up, why); });
  }
  ~DegradingKv() override { stop(); }

  Cache& cache() override { return cache_; }
  Cache& strict_cache() override { return inner_->cache(); }
  Counters& counters() override { return *counters_; }
  EventStreams& streams() override { return inner_->streams(); }
  std::string_view backend() const noexcept override { return "redis"; }

  Health health() const override {
    if (!inner_->connected()) {
      return Health{Health::State::degraded,
                    "redis at " + inner_->endpoint() + " unreachable since " +
                        clock_text(fb_.since) + " (" + inner_->last_error() +
                        "); cache reads miss, counters are in-process"};
    }
    if (!inner_->streams_connected()) {
      auto h = inner_->health();
      return Health{Health::State::degraded, h.detail};
    }
    return inner_->health();
  }

  asio::awaitable<bool> wait_ready(milliseconds limit) override {
    co_return co_await inner_->wait_ready(limit);
  }

  void stop() override { inner_->stop(); }

 private:
  void changed(bool up, const std::string& why) {
    auto now = std::chrono::system_clock::now();
    if (up) {
      if (fb_.why == "connecting") {
        spdlog::info("store: connected to redis at {}", inner_->endpoint());
      } else {
        auto secs = std::chrono::duration<double>(now - fb_.since).count();
        spdlog::info("store: redis at {} is reachable again after {:.1f} s; cache and counters "
                     "are back on redis",
                     inner_->endpoint(), secs);
      }
      fb_.down = false;
      fb_.why.clear();
      if (fb_.degraded) fb_.degraded->set(0);
      return;
    }
    fb_.down = true;
    fb_.why = why;
    fb_.since = now;
    if (fb_.degraded) fb_.degraded->set(1);
    spdlog::warn("store: redis at {} is unreachable ({}); until it is back, cache reads miss, "
                 "writes are dropped and rate limits and budgets are counted in this process",
                 inner_->endpoint(), why);
  }

  std::unique_ptr<RedisBackend> inner_;
  Fallback fb_;
  DegradingCache cache_;
  std::unique_ptr<Counters> counters_;
};

}  // namespace
}  // namespace detail

std::unique_ptr<Kv> make_kv(asio::any_io_executor ex, const KvConfig& config,
                            core::Registry* metrics) {
  if (config.redis.empty()) return make_memory_kv(std::move(ex), config, metrics);
  return std::make_unique<detail::DegradingKv>(
      detail::make_redis_backend(std::move(ex), config, metrics), metrics);
}

}  // namespace agentd::store
