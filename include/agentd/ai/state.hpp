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

#include "agentd/store/kv.hpp"

namespace agentd::ai {

using std::chrono::milliseconds;

// Rate-limit windows and budget reservations: the store's counters (in-process, or Redis
// shared by every instance). take() is atomic and one round trip.
using Counters = store::Counters;

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
// Cached answers in the store's cache (Redis, shared by every instance). A store error reads
// as a miss and a failed put is dropped: the cache going away never fails a request. `cache`
// must outlive the result.
std::unique_ptr<ResponseCache> make_store_cache(store::Cache& cache, std::string prefix = "ai:cache:");

}  // namespace agentd::ai
