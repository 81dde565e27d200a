// In-process counters and response cache, and the response cache over the store's cache.
#include <list>
#include <unordered_map>

#include "agentd/ai/state.hpp"

namespace agentd::ai {
namespace {

using Clock = std::chrono::steady_clock;
namespace asio = boost::asio;

class MemoryCounters final : public Counters {
 public:
  asio::awaitable<Take> take(const std::string& key, std::int64_t amount, std::int64_t limit,
                             milliseconds ttl) override {
    auto& e = entry(key, ttl);
    if (e.value + amount > limit) co_return Take{false, e.value};
    e.value += amount;
    co_return Take{true, e.value};
  }
  asio::awaitable<std::int64_t> add(const std::string& key, std::int64_t amount,
                                    milliseconds ttl) override {
    auto& e = entry(key, ttl);
    e.value += amount;
    co_return e.value;
  }
  asio::awaitable<std::int64_t> get(const std::string& key) override {
    auto it = map_.find(key);
    if (it == map_.end() || it->second.expires <= Clock::now()) co_return 0;
    co_return it->second.value;
  }

 private:
  struct Entry {
    std::int64_t value = 0;
    Clock::time_point expires;
  };
  Entry& entry(const std::string& key, milliseconds ttl) {
    auto now = Clock::now();
    if (++ops_ % 1024 == 0) std::erase_if(map_, [&](auto& kv) { return kv.second.expires <= now; });
    auto [it, fresh] = map_.try_emplace(key);
    if (fresh || it->second.expires <= now) it->second = Entry{0, now + ttl};
    return it->second;
  }
  std::unordered_map<std::string, Entry> map_;
  std::uint64_t ops_ = 0;
};

class MemoryCache final : public ResponseCache {
 public:
  explicit MemoryCache(std::uint64_t max_bytes) : max_bytes_(max_bytes) {}

  asio::awaitable<std::optional<std::string>> get(const std::string& key) override {
    auto it = index_.find(key);
    if (it == index_.end()) co_return std::nullopt;
    if (it->second->expires <= Clock::now()) {
      erase(it->second);
      co_return std::nullopt;
    }
    lru_.splice(lru_.begin(), lru_, it->second);  // most recently used first
    co_return it->second->value;
  }

  asio::awaitable<void> put(const std::string& key, std::string value, milliseconds ttl) override {
    std::uint64_t size = key.size() + value.size();
    if (size > max_bytes_) co_return;  // would evict everything and still not fit
    if (auto it = index_.find(key); it != index_.end()) erase(it->second);
    lru_.push_front(Item{key, std::move(value), Clock::now() + ttl});
    index_[key] = lru_.begin();
    bytes_ += size;
    while (bytes_ > max_bytes_ && !lru_.empty()) erase(std::prev(lru_.end()));
  }

  std::size_t bytes() const noexcept override { return bytes_; }

 private:
  struct Item {
    std::string key;
    std::string value;
    Clock::time_point expires;
  };
  void erase(std::list<Item>::iterator it) {
    bytes_ -= it->key.size() + it->value.size();
    index_.erase(it->key);
    lru_.erase(it);
  }
  std::uint64_t max_bytes_;
  std::uint64_t bytes_ = 0;
  std::list<Item> lru_;
  std::unordered_map<std::string, std::list<Item>::iterator> index_;
};

class StoreCache final : public ResponseCache {
 public:
  StoreCache(store::Cache& cache, std::string prefix) : cache_(cache), prefix_(std::move(prefix)) {}
  asio::awaitable<std::optional<std::string>> get(const std::string& key) override {
    auto r = co_await cache_.get(prefix_ + key);
    if (!r) co_return std::nullopt;
    co_return std::move(*r);
  }
  asio::awaitable<void> put(const std::string& key, std::string value, milliseconds ttl) override {
    co_await cache_.set(prefix_ + key, std::move(value), ttl);
  }
  std::size_t bytes() const noexcept override { return 0; }

 private:
  store::Cache& cache_;
  std::string prefix_;
};

}  // namespace

std::unique_ptr<Counters> make_memory_counters() { return std::make_unique<MemoryCounters>(); }
std::unique_ptr<ResponseCache> make_store_cache(store::Cache& cache, std::string prefix) {
  return std::make_unique<StoreCache>(cache, std::move(prefix));
}
std::unique_ptr<ResponseCache> make_memory_cache(std::uint64_t max_bytes) {
  return std::make_unique<MemoryCache>(max_bytes);
}

}  // namespace agentd::ai
