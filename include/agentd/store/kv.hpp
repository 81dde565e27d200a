// The store's cache, counters and event streams: the interfaces, the in-process and Redis
// backends, and make_kv(), which picks one from the configuration and keeps requests working
// (cache misses, in-process counters) while Redis is unreachable.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <compare>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agentd/core/config.hpp"
#include "agentd/core/error.hpp"
#include "agentd/core/metrics.hpp"

namespace agentd::store {

namespace asio = boost::asio;
using std::chrono::milliseconds;

// A failed operation: `code` is Errc::unavailable (backend not reachable), Errc::timeout (no
// answer in time), Errc::cancelled (the store was stopped), Errc::bad_request (a bad argument,
// e.g. a malformed stream id) or Errc::internal (the backend refused the command); `message`
// says what happened, for logs and /readyz.
struct Error {
  Errc code = Errc::unavailable;
  std::string message;
};
// Lets KvResult<T>::value() throw std::runtime_error(message).
[[noreturn]] void throw_exception_from_error(const Error& e, const boost::source_location& loc);

template <class T>
using KvResult = boost::system::result<T, Error>;

// The outcome of Counters::take / Cache::take.
struct Take {
  bool taken = false;
  std::int64_t value = 0;  // the counter after the call (unchanged when not taken)
};

// Counters that never fail, with exactly the semantics of agentd::ai::Counters (rate-limit
// windows, budgets' reserve-then-reconcile = take + add). Kv::counters() gives one.
class Counters {
 public:
  using Take = store::Take;
  virtual ~Counters() = default;
  // Atomically adds `amount` to `key` when value + amount <= limit; a new key starts at 0
  // and expires `ttl` after it was created. One round trip (a Lua script on Redis).
  virtual asio::awaitable<Take> take(const std::string& key, std::int64_t amount,
                                     std::int64_t limit, milliseconds ttl) = 0;
  // Adds unconditionally (negative gives back): corrections once actual usage is known.
  virtual asio::awaitable<std::int64_t> add(const std::string& key, std::int64_t amount,
                                            milliseconds ttl) = 0;
  virtual asio::awaitable<std::int64_t> get(const std::string& key) = 0;
};

// Values with a TTL, and counters. Values and counters are separate key spaces (the same key
// may name one of each). A ttl of 0 means "no expiry". Counter amounts and limits must stay
// within ±2^53 (Redis's Lua compares them as doubles).
class Cache {
 public:
  virtual ~Cache() = default;
  // The value, or nullopt when absent or expired.
  virtual asio::awaitable<KvResult<std::optional<std::string>>> get(std::string key) = 0;
  virtual asio::awaitable<KvResult<void>> set(std::string key, std::string value,
                                              milliseconds ttl) = 0;
  // true when the key was there.
  virtual asio::awaitable<KvResult<bool>> del(std::string key) = 0;
  // Atomically stores `value` only when the current value equals *expected, or, when
  // `expected` is nullopt, only when the key is absent. true when it stored.
  virtual asio::awaitable<KvResult<bool>> compare_and_set(std::string key,
                                                          std::optional<std::string> expected,
                                                          std::string value, milliseconds ttl) = 0;
  // Counters::take / add / get, with errors as values.
  virtual asio::awaitable<KvResult<Take>> take(std::string key, std::int64_t amount,
                                               std::int64_t limit, milliseconds ttl) = 0;
  virtual asio::awaitable<KvResult<std::int64_t>> add(std::string key, std::int64_t amount,
                                                      milliseconds ttl) = 0;
  virtual asio::awaitable<KvResult<std::int64_t>> counter(std::string key) = 0;
};

// A stream entry id, "<ms>-<seq>" as Redis Streams writes them: ms is the wall-clock time of
// the append, seq orders appends within one millisecond. Compare ids with this type (or
// compare_stream_ids), never as strings: "9-0" < "10-0".
struct StreamId {
  std::uint64_t ms = 0;
  std::uint64_t seq = 0;
  auto operator<=>(const StreamId&) const = default;
  std::string str() const;
  // "<ms>-<seq>"; "" and "0" read as 0-0 (before every entry). nullopt when malformed.
  static std::optional<StreamId> parse(std::string_view s);
};
// <0, 0, >0 like strcmp; a malformed id sorts before every valid one.
int compare_stream_ids(std::string_view a, std::string_view b);

struct StreamEntry {
  std::string id;
  std::string payload;  // a JSON document or any string
};

// A live reader of one stream (SSE, Last-Event-ID resume). One next() at a time.
class Subscription {
 public:
  virtual ~Subscription() = default;
  // The entries after the last one this subscription returned (at most `max`, oldest first):
  // every entry appended later is returned exactly once, in order, with no gap between what was
  // already stored and what arrives live. Waits up to `wait` for the first; an empty vector when
  // none came. An error when the backend is unreachable; calling again resumes where it stopped.
  virtual asio::awaitable<KvResult<std::vector<StreamEntry>>> next(std::size_t max,
                                                                   milliseconds wait) = 0;
  // The id of the last entry returned (the starting id before any).
  virtual std::string last_id() const = 0;
};

// Append-only streams of events, with ids that increase per stream.
class EventStreams {
 public:
  virtual ~EventStreams() = default;
  // The new entry's id, greater than every earlier id of this stream.
  virtual asio::awaitable<KvResult<std::string>> append(std::string stream,
                                                        std::string payload) = 0;
  // Entries with an id greater than `after_id` ("" or "0": from the start), oldest first.
  virtual asio::awaitable<KvResult<std::vector<StreamEntry>>> read(std::string stream,
                                                                   std::string after_id,
                                                                   std::size_t max) = 0;
  // A live reader starting after `after_id` ("": from the start). Errc::bad_request for a
  // malformed id. The subscription may outlive the EventStreams (it then fails).
  virtual KvResult<std::unique_ptr<Subscription>> subscribe(std::string stream,
                                                            std::string after_id) = 0;
  // Removes the oldest entries beyond `max_len` (0: no length limit) and every entry older than
  // `max_age` (0: no age limit); returns how many were removed.
  virtual asio::awaitable<KvResult<std::size_t>> trim(std::string stream, std::size_t max_len,
                                                      milliseconds max_age) = 0;
};

// For /readyz: ok, degraded (Redis down, requests still served: cache misses, counters
// in-process) or down (a backend used without the degradation wrapper is unreachable).
struct Health {
  enum class State { ok, degraded, down };
  State state = State::ok;
  std::string detail;
  bool ok() const noexcept { return state == State::ok; }
};

// One backend's cache, counters and streams. Use it on the executor it was made with (one
// thread). Call stop() and let in-flight calls finish (they fail fast once stopped) before
// destroying it; subscriptions may outlive it.
class Kv {
 public:
  virtual ~Kv() = default;
  // With Redis: errors are misses and dropped writes while it is unreachable (see make_kv).
  virtual Cache& cache() = 0;
  // The same values with Redis's errors as values, no fallback: for callers that must tell a
  // miss from an outage (which runs of agentd are alive).
  virtual Cache& strict_cache() { return cache(); }
  // Never fails when made by make_kv or make_memory_kv; on the bare Redis backend
  // (make_redis_kv) a Redis error is thrown as std::runtime_error.
  virtual Counters& counters() = 0;
  virtual EventStreams& streams() = 0;
  virtual Health health() const = 0;
  virtual std::string_view backend() const noexcept = 0;  // "memory" | "redis"
  // Waits until the backend is reachable (Redis: connected and authenticated), at most `limit`.
  virtual asio::awaitable<bool> wait_ready(milliseconds limit) = 0;
  // Ends background work (connections, timers); later calls fail with Errc::cancelled.
  virtual void stop() = 0;
};

// `store.redis_tls`: how a rediss:// connection checks the server and presents itself.
struct RedisTlsConfig {
  std::string ca_file;      // PEM trust anchors, in addition to the system store
  std::string cert_file;    // PEM client certificate (chain) for mutual TLS; needs key_file
  std::string key_file;     // its PEM private key
  std::string server_name;  // sent as SNI and matched against the certificate; empty: URL host
  bool verify_peer = true;  // false: no certificate check at all (logged as a warning)
};

// The keys under `store:` this part of the store reads (see docs/persistence.md).
struct KvConfig {
  // redis[s]://[user:password@]host[:port][/db]; empty: in-process cache, counters and streams.
  std::string redis;
  RedisTlsConfig redis_tls;  // used only with rediss://
  std::string redis_prefix = "agentd:";  // prepended to every Redis key
  milliseconds redis_connect_timeout{2000};
  milliseconds redis_command_timeout{2000};
  milliseconds redis_health_interval{1000};  // a PING when the connection was idle this long
  std::uint64_t cache_max_bytes = 64ULL << 20;  // in-process cache: LRU eviction beyond this
  std::size_t stream_max_len = 100000;  // per stream, enforced on append (Redis: approximately)
};

// Reads `redis`, `redis_tls` (a map, strict), `redis_prefix`, `redis_connect_timeout`,
// `redis_command_timeout`, `redis_health_interval`, `cache_max_size` and `stream_max_len` from
// the `store` node (a bad Redis URL is a ConfigError at store.redis; redis_tls without a
// rediss:// URL one at store.redis_tls). Does not call store.finish(): other parts read the
// same node. Certificate files are loaded (and their errors thrown) by make_kv.
KvConfig parse_kv_config(const core::ConfigNode& store);

// The backend the configuration asks for: in-process when `redis` is empty, otherwise Redis
// behind the degradation wrapper (while Redis is unreachable: get misses, set/del are dropped,
// counters run in-process from the last values seen, compare_and_set and streams fail with
// Errc::unavailable; a warning is logged once per outage and health() says degraded). Starts
// connecting at once; wait_ready() waits for the first connection. `metrics` may be null;
// otherwise it gets agentd_store_* series (see docs/persistence.md).
std::unique_ptr<Kv> make_kv(asio::any_io_executor ex, const KvConfig& config,
                            core::Registry* metrics = nullptr);

// In-process only (single instance; the executor's thread only).
std::unique_ptr<Kv> make_memory_kv(asio::any_io_executor ex, const KvConfig& config,
                                   core::Registry* metrics = nullptr);

// Redis without the wrapper: every operation fails fast with Errc::unavailable while
// disconnected. Throws std::invalid_argument for a bad URL, std::runtime_error (naming the
// store.redis_tls key) for a certificate, key or CA file that cannot be loaded.
std::unique_ptr<Kv> make_redis_kv(asio::any_io_executor ex, const KvConfig& config,
                                  core::Registry* metrics = nullptr);

}  // namespace agentd::store
