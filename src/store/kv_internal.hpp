// Pieces the kv backends share: in-process counters (also the wrapper's fallback), the
// in-process cache and streams, and Counters over any Cache.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "agentd/store/kv.hpp"

namespace agentd::store::detail {

using Clock = std::chrono::steady_clock;

// Milliseconds since the epoch (stream ids carry wall-clock time, like Redis's).
std::uint64_t wall_ms();

// Counters in process memory, synchronous; the loop thread only. A ttl <= 0 never expires.
class MemoryCounters {
 public:
  Take take(const std::string& key, std::int64_t amount, std::int64_t limit, milliseconds ttl);
  std::int64_t add(const std::string& key, std::int64_t amount, milliseconds ttl);
  std::int64_t get(const std::string& key);
  // Records a value read from elsewhere (Redis), keeping the key's expiry when it is known here,
  // otherwise expiring `ttl` from now: the fallback then continues from the last value seen.
  void remember(const std::string& key, std::int64_t value, milliseconds ttl);
  std::size_t size() const noexcept { return map_.size(); }

 private:
  struct Entry {
    std::int64_t value = 0;
    Clock::time_point expires;
  };
  Entry& entry(const std::string& key, milliseconds ttl);
  std::unordered_map<std::string, Entry> map_;
  std::uint64_t ops_ = 0;
};

// The in-process Cache: values with TTLs and LRU eviction beyond `max_bytes` (keys + values),
// counters kept apart (never evicted). `bytes` (may be null) follows the bytes held.
std::unique_ptr<Cache> make_memory_cache(std::uint64_t max_bytes, core::Gauge* bytes);

// In-process streams; `max_len` (0: none) is enforced on every append.
std::unique_ptr<EventStreams> make_memory_streams(asio::any_io_executor ex, std::size_t max_len);
// Wakes every subscriber of streams made by make_memory_streams with Errc::cancelled.
void stop_memory_streams(EventStreams& streams);

// Counters over a Cache: the value of each result, an Error thrown as std::runtime_error.
std::unique_ptr<Counters> counters_over(Cache& cache);

// The bare Redis backend, with what the degradation wrapper needs to watch it.
class RedisBackend : public Kv {
 public:
  virtual bool connected() const noexcept = 0;          // the command connection is up
  virtual bool streams_connected() const noexcept = 0;  // the live-read connection is up
  virtual std::string endpoint() const = 0;             // host:port
  virtual std::string last_error() const = 0;           // why the command connection is down
  // Called on every change of the command connection between up and down.
  virtual void on_state(std::function<void(bool up, const std::string& why)> listener) = 0;
};
// Throws std::invalid_argument for a bad URL.
std::unique_ptr<RedisBackend> make_redis_backend(asio::any_io_executor ex, const KvConfig& config,
                                                 core::Registry* metrics);

}  // namespace agentd::store::detail
