// The Redis backend: cache and counters (atomic steps as Lua scripts, EVALSHA with an EVAL
// fallback), Redis Streams, and live subscriptions served by one blocking XREAD on a second
// connection for every subscriber of this instance.
#include <openssl/evp.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <array>
#include <charconv>
#include <span>
#include <deque>
#include <unordered_map>

#include "kv_internal.hpp"
#include "redis_connection.hpp"

namespace agentd::store::detail {
namespace {

using redis::Connection;
using redis::encode_command;
using redis::Reply;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// Each KEYS[1] is a counter key: a new key starts at 0 and expires ARGV ttl after creation.
constexpr std::string_view kTakeScript = R"lua(
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return {0, cur} end
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[3]) > 0 and redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return {1, v}
)lua";

constexpr std::string_view kAddScript = R"lua(
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 and redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return v
)lua";

// ARGV: has-expected ('1'/'0'), expected, value, ttl ms.
constexpr std::string_view kCasScript = R"lua(
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then return 0 end
elseif cur then
  return 0
end
if tonumber(ARGV[4]) > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return 1
)lua";

// Age is measured on the server's clock, the one XADD used for the ids.
constexpr std::string_view kTrimScript = R"lua(
local removed = 0
if tonumber(ARGV[1]) > 0 then
  removed = removed + redis.call('XTRIM', KEYS[1], 'MAXLEN', '=', ARGV[1])
end
if tonumber(ARGV[2]) > 0 then
  local t = redis.call('TIME')
  local min = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2])
  if min > 0 then
    removed = removed + redis.call('XTRIM', KEYS[1], 'MINID', '=', string.format('%.0f', min) .. '-0')
  end
end
return removed
)lua";

struct Script {
  std::string_view body;
  std::string sha;  // SHA-1 of the body, hex: what EVALSHA names
  explicit Script(std::string_view b) : body(b) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(b.data(), b.size(), md, &len, EVP_sha1(), nullptr);
    static const char* hex = "0123456789abcdef";
    for (unsigned i = 0; i < len; ++i) {
      sha += hex[md[i] >> 4];
      sha += hex[md[i] & 15];
    }
  }
};

const Script& take_script() {
  static const Script s(kTakeScript);
  return s;
}
const Script& add_script() {
  static const Script s(kAddScript);
  return s;
}
const Script& cas_script() {
  static const Script s(kCasScript);
  return s;
}
const Script& trim_script() {
  static const Script s(kTrimScript);
  return s;
}

Error refused(std::string_view what, const Reply& r) {
  return Error{Errc::internal, "redis refused " + std::string(what) + ": " + r.str};
}

Error unexpected(std::string_view what, const Reply& r) {
  return Error{Errc::internal, "unexpected reply from redis to " + std::string(what) + ": " +
                                   redis::describe(r)};
}

Error bad_id(const std::string& id) {
  return Error{Errc::bad_request, "malformed stream id \"" + id.substr(0, 64) +
                                      "\" (expected <milliseconds>-<sequence>)"};
}

std::string ttl_text(milliseconds ttl) { return std::to_string(std::max<std::int64_t>(0, ttl.count())); }

// One command, one reply; an error reply becomes an Error naming the command.
asio::awaitable<KvResult<Reply>> call(Connection& c, std::span<const std::string_view> args,
                                      std::string_view what) {
  auto r = co_await c.command(args);
  if (!r) co_return r.error();
  if (r->is_error()) co_return refused(what, *r);
  co_return r;
}

// EVALSHA, and EVAL once when the server does not know the script yet (restart, SCRIPT FLUSH).
asio::awaitable<KvResult<Reply>> eval(Connection& c, const Script& script, std::string key,
                                      std::vector<std::string> args, std::string_view what) {
  std::vector<std::string_view> parts{"EVALSHA", script.sha, "1", key};
  for (const auto& a : args) parts.push_back(a);
  auto r = co_await c.command(parts);
  if (!r) co_return r.error();
  if (r->is_error() && r->str.starts_with("NOSCRIPT")) {
    parts[0] = "EVAL";
    parts[1] = script.body;
    r = co_await c.command(parts);
    if (!r) co_return r.error();
  }
  if (r->is_error()) co_return refused(what, *r);
  co_return r;
}

KvResult<std::int64_t> as_integer(const Reply& r, std::string_view what) {
  if (r.type == Reply::Type::integer) return r.integer;
  if (r.type == Reply::Type::nil) return std::int64_t{0};
  if (r.type == Reply::Type::string) {
    std::int64_t v = 0;
    auto [p, ec] = std::from_chars(r.str.data(), r.str.data() + r.str.size(), v);
    if (ec == std::errc() && p == r.str.data() + r.str.size()) return v;
  }
  return unexpected(what, r);
}

asio::awaitable<KvResult<std::vector<StreamEntry>>> xrange(Connection& c, std::string key,
                                                           StreamId after, std::size_t max) {
  if (max == 0) co_return std::vector<StreamEntry>();
  std::string start = after == StreamId{} ? std::string("-") : "(" + after.str();
  auto count = std::to_string(max);
  std::array<std::string_view, 6> args{"XRANGE", key, start, "+", "COUNT", count};
  auto r = co_await call(c, args, "XRANGE");
  if (!r) co_return r.error();
  co_return redis::decode_entries(*r);
}

class RedisCache final : public Cache {
 public:
  RedisCache(std::shared_ptr<Connection> c, std::string prefix)
      : c_(std::move(c)), values_(prefix + "v:"), counters_(prefix + "n:") {}

  asio::awaitable<KvResult<std::optional<std::string>>> get(std::string key) override {
    std::string k = values_ + key;
    std::array<std::string_view, 2> args{"GET", k};
    auto r = co_await call(*c_, args, "GET");
    if (!r) co_return r.error();
    if (r->is_nil()) co_return std::optional<std::string>();
    if (r->type != Reply::Type::string) co_return unexpected("GET", *r);
    co_return std::optional<std::string>(std::move(r->str));
  }

  asio::awaitable<KvResult<void>> set(std::string key, std::string value,
                                      milliseconds ttl) override {
    std::string k = values_ + key;
    std::string px = ttl.count() > 0 ? ttl_text(ttl) : std::string();
    std::array<std::string_view, 5> args{"SET", k, value, "PX", px};
    std::span<const std::string_view> used(args.data(), ttl.count() > 0 ? 5 : 3);
    auto r = co_await call(*c_, used, "SET");
    if (!r) co_return r.error();
    co_return KvResult<void>();
  }

  asio::awaitable<KvResult<bool>> del(std::string key) override {
    std::string k = values_ + key;
    std::array<std::string_view, 2> args{"DEL", k};
    auto r = co_await call(*c_, args, "DEL");
    if (!r) co_return r.error();
    co_return r->type == Reply::Type::integer && r->integer > 0;
  }

  asio::awaitable<KvResult<bool>> compare_and_set(std::string key,
                                                  std::optional<std::string> expected,
                                                  std::string value, milliseconds ttl) override {
    std::vector<std::string> args{expected ? "1" : "0", expected.value_or(""), std::move(value),
                                  ttl_text(ttl)};
    auto r = co_await eval(*c_, cas_script(), values_ + key, std::move(args), "compare-and-set");
    if (!r) co_return r.error();
    if (r->type != Reply::Type::integer) co_return unexpected("compare-and-set", *r);
    co_return r->integer == 1;
  }

  asio::awaitable<KvResult<Take>> take(std::string key, std::int64_t amount, std::int64_t limit,
                                       milliseconds ttl) override {
    std::vector<std::string> args{std::to_string(amount), std::to_string(limit), ttl_text(ttl)};
    auto r = co_await eval(*c_, take_script(), counters_ + key, std::move(args), "take");
    if (!r) co_return r.error();
    if (r->type != Reply::Type::array || r->elements.size() != 2 ||
        r->elements[0].type != Reply::Type::integer || r->elements[1].type != Reply::Type::integer) {
      co_return unexpected("take", *r);
    }
    co_return Take{r->elements[0].integer == 1, r->elements[1].integer};
  }

  asio::awaitable<KvResult<std::int64_t>> add(std::string key, std::int64_t amount,
                                              milliseconds ttl) override {
    std::vector<std::string> args{std::to_string(amount), ttl_text(ttl)};
    auto r = co_await eval(*c_, add_script(), counters_ + key, std::move(args), "add");
    if (!r) co_return r.error();
    co_return as_integer(*r, "add");
  }

  asio::awaitable<KvResult<std::int64_t>> counter(std::string key) override {
    std::string k = counters_ + key;
    std::array<std::string_view, 2> args{"GET", k};
    auto r = co_await call(*c_, args, "GET");
    if (!r) co_return r.error();
    co_return as_integer(*r, "GET");
  }

 private:
  std::shared_ptr<Connection> c_;
  std::string values_;    // key prefix of values
  std::string counters_;  // key prefix of counters
};

// ---- live subscriptions ----

struct Waiter {
  explicit Waiter(asio::any_io_executor ex) : timer(std::move(ex)) {}
  asio::steady_timer timer;
  bool notified = false;
};

// A subscriber's state, shared with the hub while it is live.
struct LiveSub {
  std::string key;                // the stream's Redis key
  StreamId cursor;                // the last id returned or queued
  std::deque<StreamEntry> queue;  // delivered by the hub, not yet returned
  bool live = false;              // in the hub's blocking read
  std::optional<Error> error;     // to report once the queue is drained
  Waiter* waiter = nullptr;       // set while next() waits
  void wake() {
    if (!waiter) return;
    waiter->notified = true;
    waiter->timer.cancel();
  }
};

// Serves every live subscriber of this instance with one XREAD BLOCK on its own connection,
// from each stream's lowest cursor. A subscriber joins only after XRANGE found nothing after
// its cursor; when the read in flight does not cover that cursor, CLIENT UNBLOCK (over the
// command connection) makes the hub re-issue it, so nothing appended meanwhile is missed.
class StreamHub : public std::enable_shared_from_this<StreamHub> {
 public:
  static constexpr std::size_t kMaxQueued = 4096;  // beyond: the subscriber catches up by XRANGE
  static constexpr std::size_t kReadCount = 512;

  StreamHub(asio::any_io_executor ex, std::shared_ptr<Connection> blocking,
            std::shared_ptr<Connection> main, milliseconds block)
      : ex_(ex), blocking_(std::move(blocking)), main_(std::move(main)), block_(block), wake_(ex) {}

  void start() {
    asio::co_spawn(ex_, run(), [](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        spdlog::error("redis: stream reader failed: {}", ex.what());
      }
    });
  }

  void stop() {
    stopped_ = true;
    fail_live(Error{Errc::cancelled, "the store was stopped"});
    wake_.cancel();
  }

  bool stopped() const noexcept { return stopped_; }
  bool connected() const noexcept { return blocking_->connected(); }
  std::string down_reason() const {
    return "live stream reads are unavailable: " + blocking_->last_error();
  }

  asio::awaitable<void> join(std::shared_ptr<LiveSub> sub) {
    bool was_empty = live_.empty();
    sub->live = true;
    live_[sub->key].push_back(sub);
    if (was_empty) wake_.cancel();
    if (!reading_) co_return;  // the next read includes it
    auto it = inflight_.find(sub->key);
    if (it != inflight_.end() && !(sub->cursor < it->second)) co_return;  // covered
    if (unblocked_gen_ == gen_) co_return;  // already interrupted
    unblocked_gen_ = gen_;
    auto gen = gen_;
    auto id = std::to_string(blocking_->client_id());
    asio::steady_timer pause(ex_);
    for (int attempt = 0; attempt < 25 && reading_ && gen_ == gen; ++attempt) {
      std::array<std::string_view, 3> args{"CLIENT", "UNBLOCK", id};
      auto r = co_await main_->command(args);
      if (!r || r->type != Reply::Type::integer || r->integer == 1) co_return;
      // 0: our XREAD has not reached the server yet (it travels on the other connection).
      pause.expires_after(milliseconds(2));
      co_await pause.async_wait(kTuple);
    }
  }

  void leave(LiveSub* sub) {
    auto it = live_.find(sub->key);
    if (it == live_.end()) return;
    std::erase_if(it->second, [sub](const auto& s) { return s.get() == sub; });
    if (it->second.empty()) live_.erase(it);
    sub->live = false;
  }

 private:
  asio::awaitable<void> run() {
    auto self = shared_from_this();
    while (!stopped_) {
      if (live_.empty()) {
        wake_.expires_at(std::chrono::steady_clock::time_point::max());
        co_await wake_.async_wait(kTuple);
        continue;
      }
      if (!blocking_->connected()) {
        fail_live(Error{Errc::unavailable, down_reason()});
        co_await blocking_->wait_connected(milliseconds(1000));
        continue;
      }
      // XREAD COUNT n BLOCK ms STREAMS k1 k2 .. id1 id2 ..
      inflight_.clear();
      for (const auto& [key, subs] : live_) {
        StreamId low = subs.front()->cursor;
        for (const auto& s : subs) low = std::min(low, s->cursor);
        inflight_[key] = low;
      }
      std::vector<std::string> ids;
      auto count = std::to_string(kReadCount);
      auto block = std::to_string(block_.count());
      std::vector<std::string_view> parts{"XREAD", "COUNT", count, "BLOCK", block, "STREAMS"};
      for (const auto& [key, id] : inflight_) parts.push_back(key);
      for (const auto& [key, id] : inflight_) ids.push_back(id.str());
      for (const auto& id : ids) parts.push_back(id);
      reading_ = true;
      ++gen_;
      auto timeout = block_ + blocking_->options().command_timeout;
      auto requested = inflight_;
      auto r = co_await blocking_->exec(encode_command(parts), 1, timeout);
      reading_ = false;
      if (stopped_) break;
      if (!r) {
        fail_live(r.error());
        continue;
      }
      const Reply& reply = r->front();
      if (reply.is_error()) {
        fail_live(refused("XREAD", reply));
        continue;
      }
      auto batches = redis::decode_xread(reply);
      if (!batches) {
        fail_live(batches.error());
        continue;
      }
      distribute(*batches, requested);
    }
  }

  // A subscriber gets entries from a read only when the read started at or before its cursor:
  // one that joined later with a lower cursor (its XRANGE overtaken by the read) would otherwise
  // skip what lies between. It is served by the next read, which starts from its cursor.
  void distribute(const std::map<std::string, std::vector<StreamEntry>>& batches,
                  const std::map<std::string, StreamId>& requested) {
    for (const auto& [key, entries] : batches) {
      auto it = live_.find(key);
      auto from = requested.find(key);
      if (it == live_.end() || from == requested.end()) continue;
      auto subs = it->second;  // overflowing subscribers leave the list
      for (const auto& sub : subs) {
        if (sub->cursor < from->second) continue;
        for (const auto& e : entries) {
          auto id = StreamId::parse(e.id);
          if (!id || !(sub->cursor < *id)) continue;
          sub->queue.push_back(e);
          sub->cursor = *id;
        }
        if (sub->queue.size() > kMaxQueued) leave(sub.get());
        sub->wake();
      }
    }
  }

  void fail_live(const Error& e) {
    auto live = std::move(live_);
    live_.clear();
    for (auto& [key, subs] : live) {
      for (auto& sub : subs) {
        sub->live = false;
        sub->error = e;
        sub->wake();
      }
    }
  }

  asio::any_io_executor ex_;
  std::shared_ptr<Connection> blocking_;
  std::shared_ptr<Connection> main_;
  milliseconds block_;
  asio::steady_timer wake_;
  std::map<std::string, std::vector<std::shared_ptr<LiveSub>>> live_;
  std::map<std::string, StreamId> inflight_;  // the ids of the read in flight
  bool reading_ = false;
  std::uint64_t gen_ = 0;
  std::uint64_t unblocked_gen_ = 0;
  bool stopped_ = false;
};

class RedisSubscription final : public Subscription {
 public:
  RedisSubscription(asio::any_io_executor ex, std::shared_ptr<Connection> main,
                    std::shared_ptr<StreamHub> hub, std::string key, StreamId from)
      : ex_(std::move(ex)),
        main_(std::move(main)),
        hub_(std::move(hub)),
        sub_(std::make_shared<LiveSub>()),
        last_(from.str()) {
    sub_->key = std::move(key);
    sub_->cursor = from;
  }
  ~RedisSubscription() override { hub_->leave(sub_.get()); }

  asio::awaitable<KvResult<std::vector<StreamEntry>>> next(std::size_t max,
                                                           milliseconds wait) override {
    max = std::max<std::size_t>(max, 1);
    auto deadline = std::chrono::steady_clock::now() + wait;
    for (;;) {
      if (!sub_->queue.empty()) {
        std::vector<StreamEntry> out;
        while (!sub_->queue.empty() && out.size() < max) {
          out.push_back(std::move(sub_->queue.front()));
          sub_->queue.pop_front();
        }
        last_ = out.back().id;
        co_return out;
      }
      if (sub_->error) {
        Error e = std::move(*sub_->error);
        sub_->error.reset();
        co_return e;
      }
      if (hub_->stopped()) co_return Error{Errc::cancelled, "the store was stopped"};
      if (!sub_->live) {
        // Catch up from the stored entries; go live only once nothing is left after the cursor.
        auto r = co_await xrange(*main_, sub_->key, sub_->cursor, max);
        if (!r) co_return r.error();
        if (!r->empty()) {
          auto id = StreamId::parse(r->back().id);
          if (!id) co_return unexpected("XRANGE", Reply{});
          sub_->cursor = *id;
          last_ = r->back().id;
          co_return std::move(*r);
        }
        if (!hub_->connected()) co_return Error{Errc::unavailable, hub_->down_reason()};
        co_await hub_->join(sub_);
        continue;
      }
      auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) co_return std::vector<StreamEntry>();
      Waiter w(ex_);
      sub_->waiter = &w;
      struct Reset {
        LiveSub& s;
        ~Reset() { s.waiter = nullptr; }
      } reset{*sub_};
      w.timer.expires_after(left);
      co_await w.timer.async_wait(kTuple);
      if (!w.notified && std::chrono::steady_clock::now() < deadline) {
        co_return Error{Errc::cancelled, "cancelled"};
      }
    }
  }

  std::string last_id() const override { return last_; }

 private:
  asio::any_io_executor ex_;
  std::shared_ptr<Connection> main_;
  std::shared_ptr<StreamHub> hub_;
  std::shared_ptr<LiveSub> sub_;
  std::string last_;
};

class RedisStreams final : public EventStreams {
 public:
  RedisStreams(asio::any_io_executor ex, std::shared_ptr<Connection> main,
               std::shared_ptr<StreamHub> hub, std::string prefix, std::size_t max_len)
      : ex_(std::move(ex)),
        c_(std::move(main)),
        hub_(std::move(hub)),
        prefix_(std::move(prefix) + "s:"),
        max_len_(max_len) {}

  asio::awaitable<KvResult<std::string>> append(std::string stream, std::string payload) override {
    std::string key = prefix_ + stream;
    std::string n = std::to_string(max_len_);
    std::array<std::string_view, 8> capped{"XADD", key, "MAXLEN", "~", n, "*", "d", payload};
    std::array<std::string_view, 5> plain{"XADD", key, "*", "d", payload};
    std::span<const std::string_view> args = plain;
    if (max_len_ > 0) args = capped;
    auto r = co_await call(*c_, args, "XADD");
    if (!r) co_return r.error();
    if (r->type != Reply::Type::string) co_return unexpected("XADD", *r);
    co_return std::move(r->str);
  }

  asio::awaitable<KvResult<std::vector<StreamEntry>>> read(std::string stream,
                                                           std::string after_id,
                                                           std::size_t max) override {
    auto from = StreamId::parse(after_id);
    if (!from) co_return bad_id(after_id);
    co_return co_await xrange(*c_, prefix_ + stream, *from, max);
  }

  KvResult<std::unique_ptr<Subscription>> subscribe(std::string stream,
                                                    std::string after_id) override {
    auto from = StreamId::parse(after_id);
    if (!from) return bad_id(after_id);
    return std::unique_ptr<Subscription>(
        std::make_unique<RedisSubscription>(ex_, c_, hub_, prefix_ + stream, *from));
  }

  asio::awaitable<KvResult<std::size_t>> trim(std::string stream, std::size_t max_len,
                                              milliseconds max_age) override {
    std::vector<std::string> args{std::to_string(max_len), ttl_text(max_age)};
    auto r = co_await eval(*c_, trim_script(), prefix_ + stream, std::move(args), "trim");
    if (!r) co_return r.error();
    auto n = as_integer(*r, "trim");
    if (!n) co_return n.error();
    co_return static_cast<std::size_t>(*n);
  }

 private:
  asio::any_io_executor ex_;
  std::shared_ptr<Connection> c_;
  std::shared_ptr<StreamHub> hub_;
  std::string prefix_;
  std::size_t max_len_;
};

redis::ConnectionMetrics connection_metrics(core::Registry* m, const std::string& conn) {
  redis::ConnectionMetrics out;
  if (!m) return out;
  core::Labels l{{"connection", conn}};
  out.commands = &m->counter("agentd_store_redis_commands_total", "Commands sent to Redis", l);
  out.writes = &m->counter("agentd_store_redis_writes_total",
                           "Socket writes to Redis (commands per write = pipelining depth)", l);
  out.reconnects = &m->counter("agentd_store_redis_disconnects_total",
                               "Connections to Redis lost after they were up", l);
  out.up = &m->gauge("agentd_store_redis_up", "1 while the connection to Redis is up", l);
  return out;
}

class RedisKv final : public RedisBackend {
 public:
  RedisKv(asio::any_io_executor ex, const KvConfig& config, core::Registry* metrics) {
    redis::ConnectionOptions o;
    o.url = redis::parse_redis_url(config.redis);
    if (o.url.tls) {
      o.tls = redis::make_tls_context(config.redis_tls);  // one context for both connections
      o.tls_server_name = config.redis_tls.server_name;
      o.tls_verify = config.redis_tls.verify_peer;
      if (!o.tls_verify) {
        spdlog::warn("store: redis_tls.verify_peer is off: the Redis server at {} is not "
                     "authenticated", o.url.endpoint());
      }
    }
    o.connect_timeout = config.redis_connect_timeout;
    o.command_timeout = config.redis_command_timeout;
    o.health_interval = config.redis_health_interval;
    o.name = "agentd";
    main_ = std::make_shared<Connection>(ex, o, connection_metrics(metrics, "commands"));
    o.name = "agentd-streams";
    o.want_client_id = true;
    // The blocking read's own wait is its health check.
    o.health_interval = std::max(o.health_interval, milliseconds(3'600'000));
    blocking_ = std::make_shared<Connection>(ex, o, connection_metrics(metrics, "streams"));
    hub_ = std::make_shared<StreamHub>(ex, blocking_, main_, kBlock);
    cache_ = std::make_unique<RedisCache>(main_, config.redis_prefix);
    streams_ = std::make_unique<RedisStreams>(ex, main_, hub_, config.redis_prefix,
                                              config.stream_max_len);
    counters_ = counters_over(*cache_);
    main_->start();
    blocking_->start();
    hub_->start();
  }
  ~RedisKv() override { stop(); }

  Cache& cache() override { return *cache_; }
  Counters& counters() override { return *counters_; }
  EventStreams& streams() override { return *streams_; }
  std::string_view backend() const noexcept override { return "redis"; }

  Health health() const override {
    if (!main_->connected()) return Health{Health::State::down, main_->last_error()};
    if (!blocking_->connected()) return Health{Health::State::down, hub_->down_reason()};
    return Health{Health::State::ok, "redis at " + endpoint() + " db " +
                                         std::to_string(main_->url().db) +
                                         (main_->url().tls ? " over TLS" : "")};
  }

  asio::awaitable<bool> wait_ready(milliseconds limit) override {
    auto deadline = std::chrono::steady_clock::now() + limit;
    if (!co_await main_->wait_connected(limit)) co_return false;
    auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    co_return co_await blocking_->wait_connected(std::max(left, milliseconds(0)));
  }

  void stop() override {
    hub_->stop();
    blocking_->stop();
    main_->stop();
  }

  bool connected() const noexcept override { return main_->connected(); }
  bool streams_connected() const noexcept override { return blocking_->connected(); }
  std::string endpoint() const override { return main_->url().endpoint(); }
  std::string last_error() const override { return main_->last_error(); }
  void on_state(std::function<void(bool, const std::string&)> listener) override {
    main_->on_state(std::move(listener));
  }

 private:
  static constexpr milliseconds kBlock{1000};
  std::shared_ptr<Connection> main_;
  std::shared_ptr<Connection> blocking_;
  std::shared_ptr<StreamHub> hub_;
  std::unique_ptr<Cache> cache_;
  std::unique_ptr<EventStreams> streams_;
  std::unique_ptr<Counters> counters_;
};

}  // namespace

std::unique_ptr<RedisBackend> make_redis_backend(asio::any_io_executor ex, const KvConfig& config,
                                                 core::Registry* metrics) {
  return std::make_unique<RedisKv>(std::move(ex), config, metrics);
}

}  // namespace agentd::store::detail

namespace agentd::store {

std::unique_ptr<Kv> make_redis_kv(asio::any_io_executor ex, const KvConfig& config,
                                  core::Registry* metrics) {
  return detail::make_redis_backend(std::move(ex), config, metrics);
}

}  // namespace agentd::store
