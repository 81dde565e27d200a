// Where the AI routing layer keeps what several instances must share: rate-limit windows,
// budget reservations and cached answers. In-process by default; the persistence layer plugs
// in Redis-backed implementations of the same interfaces.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace agentd::ai {

using std::chrono::milliseconds;

class Counters {
 public:
  virtual ~Counters() = default;
  struct Take {
    bool taken = false;
    std::int64_t value = 0;  // the counter after the call (unchanged when not taken)
  };
  // Atomically adds `amount` to `key` when value + amount <= limit; a new key starts at 0
  // and expires `ttl` after it was created. One round trip (a Lua script on Redis).
  virtual boost::asio::awaitable<Take> take(const std::string& key, std::int64_t amount,
                                            std::int64_t limit, milliseconds ttl) = 0;
  // Adds unconditionally (negative gives back): corrections once actual usage is known.
  virtual boost::asio::awaitable<std::int64_t> add(const std::string& key, std::int64_t amount,
                                                   milliseconds ttl) = 0;
  virtual boost::asio::awaitable<std::int64_t> get(const std::string& key) = 0;
};

class ResponseCache {
 public:
  virtual ~ResponseCache() = default;
  virtual boost::asio::awaitable<std::optional<std::string>> get(const std::string& key) = 0;
  virtual boost::asio::awaitable<void> put(const std::string& key, std::string value,
                                           milliseconds ttl) = 0;
  virtual std::size_t bytes() const noexcept = 0;  // memory held (0 when remote)
};

// In-process implementations (single instance; no locks: the loop thread only).
std::unique_ptr<Counters> make_memory_counters();
// Least-recently-used eviction once `max_bytes` of keys and values are held.
std::unique_ptr<ResponseCache> make_memory_cache(std::uint64_t max_bytes);

}  // namespace agentd::ai
