// The in-process backend: cache with TTLs and LRU eviction, counters, streams with live
// subscribers. Single instance, the loop thread only, so no locks.
#include <algorithm>
#include <deque>
#include <list>
#include <map>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "kv_internal.hpp"

namespace agentd::store {
namespace detail {
namespace {

Clock::time_point expiry(milliseconds ttl) {
  return ttl.count() > 0 ? Clock::now() + ttl : Clock::time_point::max();
}

class MemoryCache final : public Cache {
 public:
  MemoryCache(std::uint64_t max_bytes, core::Gauge* bytes) : max_bytes_(max_bytes), gauge_(bytes) {}

  asio::awaitable<KvResult<std::optional<std::string>>> get(std::string key) override {
    auto* item = find(key);
    if (!item) co_return std::optional<std::string>();
    co_return std::optional<std::string>(item->value);
  }

  asio::awaitable<KvResult<void>> set(std::string key, std::string value,
                                      milliseconds ttl) override {
    put(std::move(key), std::move(value), ttl);
    co_return KvResult<void>();
  }

  asio::awaitable<KvResult<bool>> del(std::string key) override {
    auto it = index_.find(key);
    if (it == index_.end()) co_return false;
    bool live = it->second->expires > Clock::now();
    erase(it->second);
    co_return live;
  }

  asio::awaitable<KvResult<bool>> compare_and_set(std::string key,
                                                  std::optional<std::string> expected,
                                                  std::string value, milliseconds ttl) override {
    auto* item = find(key);
    bool matches = expected ? (item && item->value == *expected) : item == nullptr;
    if (!matches) co_return false;
    put(std::move(key), std::move(value), ttl);
    co_return true;
  }

  asio::awaitable<KvResult<Take>> take(std::string key, std::int64_t amount, std::int64_t limit,
                                       milliseconds ttl) override {
    co_return counters_.take(key, amount, limit, ttl);
  }
  asio::awaitable<KvResult<std::int64_t>> add(std::string key, std::int64_t amount,
                                              milliseconds ttl) override {
    co_return counters_.add(key, amount, ttl);
  }
  asio::awaitable<KvResult<std::int64_t>> counter(std::string key) override {
    co_return counters_.get(key);
  }

 private:
  struct Item {
    std::string key;
    std::string value;
    Clock::time_point expires;
  };
  using Iter = std::list<Item>::iterator;

  // A live item, moved to the front of the LRU list; expired items are dropped on the way.
  Item* find(const std::string& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    if (it->second->expires <= Clock::now()) {
      erase(it->second);
      return nullptr;
    }
    lru_.splice(lru_.begin(), lru_, it->second);
    return &*it->second;
  }

  void put(std::string key, std::string value, milliseconds ttl) {
    if (auto it = index_.find(key); it != index_.end()) erase(it->second);
    std::uint64_t size = key.size() + value.size();
    if (size > max_bytes_) return;  // would evict everything and still not fit
    lru_.push_front(Item{std::move(key), std::move(value), expiry(ttl)});
    index_[lru_.front().key] = lru_.begin();
    bytes_ += size;
    if (++puts_ % 1024 == 0) sweep();
    while (bytes_ > max_bytes_ && !lru_.empty()) erase(std::prev(lru_.end()));
    if (gauge_) gauge_->set(static_cast<double>(bytes_));
  }

  // Expired items would otherwise hold memory until LRU pressure reaches them.
  void sweep() {
    auto now = Clock::now();
    for (auto it = lru_.begin(); it != lru_.end();) {
      auto next = std::next(it);
      if (it->expires <= now) erase(it);
      it = next;
    }
  }

  void erase(Iter it) {
    bytes_ -= it->key.size() + it->value.size();
    index_.erase(it->key);
    lru_.erase(it);
    if (gauge_) gauge_->set(static_cast<double>(bytes_));
  }

  std::uint64_t max_bytes_;
  core::Gauge* gauge_;
  std::uint64_t bytes_ = 0;
  std::uint64_t puts_ = 0;
  std::list<Item> lru_;  // most recently used first
  std::unordered_map<std::string, Iter> index_;
  MemoryCounters counters_;
};

// ---- streams ----

struct Waiter {
  explicit Waiter(asio::any_io_executor ex) : timer(std::move(ex)) {}
  asio::steady_timer timer;
  bool notified = false;
  void wake() {
    notified = true;
    timer.cancel();
  }
};

struct MemEntry {
  StreamId id;
  StreamEntry entry;
};

struct MemStream {
  std::deque<MemEntry> entries;
  StreamId last;
  std::vector<Waiter*> waiters;
};

struct StreamsState {
  std::map<std::string, MemStream, std::less<>> streams;
  std::size_t max_len = 0;
  StreamId erased_floor;  // the highest id of any stream erased once empty
  bool stopped = false;

  StreamId next_id(MemStream& s) const {
    StreamId floor = std::max(s.last, erased_floor);
    StreamId id{wall_ms(), 0};
    if (id <= floor) id = StreamId{floor.ms, floor.seq + 1};
    return id;
  }

  // Entries with an id > after, at most max.
  std::vector<StreamEntry> after(const std::string& stream, StreamId from, std::size_t max) const {
    std::vector<StreamEntry> out;
    auto it = streams.find(stream);
    if (it == streams.end()) return out;
    const auto& entries = it->second.entries;
    auto pos = std::upper_bound(entries.begin(), entries.end(), from,
                                [](const StreamId& id, const MemEntry& e) { return id < e.id; });
    for (; pos != entries.end() && out.size() < max; ++pos) out.push_back(pos->entry);
    return out;
  }

  void wake_all(MemStream& s) {
    auto waiters = std::move(s.waiters);
    s.waiters.clear();
    for (auto* w : waiters) w->wake();
  }

  // An empty stream nobody waits on is forgotten; its last id stays as a floor for new ids.
  void maybe_erase(std::map<std::string, MemStream, std::less<>>::iterator it) {
    if (!it->second.entries.empty() || !it->second.waiters.empty()) return;
    erased_floor = std::max(erased_floor, it->second.last);
    streams.erase(it);
  }
};

class MemorySubscription final : public Subscription {
 public:
  MemorySubscription(asio::any_io_executor ex, std::shared_ptr<StreamsState> state,
                     std::string stream, StreamId from)
      : ex_(std::move(ex)), state_(std::move(state)), stream_(std::move(stream)), last_(from) {}

  asio::awaitable<KvResult<std::vector<StreamEntry>>> next(std::size_t max,
                                                           milliseconds wait) override {
    auto deadline = Clock::now() + wait;
    for (;;) {
      if (state_->stopped) co_return Error{Errc::cancelled, "the store was stopped"};
      auto got = state_->after(stream_, last_, std::max<std::size_t>(max, 1));
      if (!got.empty()) {
        last_ = *StreamId::parse(got.back().id);
        co_return got;
      }
      auto left = deadline - Clock::now();
      if (left <= Clock::duration::zero()) co_return got;
      Waiter w(ex_);
      auto& s = state_->streams[stream_];  // created empty if need be, to hold the waiter
      s.waiters.push_back(&w);
      struct Unregister {
        std::shared_ptr<StreamsState> state;
        const std::string& stream;
        Waiter* w;
        ~Unregister() {
          auto it = state->streams.find(stream);
          if (it == state->streams.end()) return;
          std::erase(it->second.waiters, w);
          state->maybe_erase(it);
        }
      } unregister{state_, stream_, &w};
      w.timer.expires_after(left);
      co_await w.timer.async_wait(asio::as_tuple(asio::use_awaitable));
      // Neither an append nor the deadline: the caller's coroutine was cancelled.
      if (!w.notified && Clock::now() < deadline) co_return Error{Errc::cancelled, "cancelled"};
    }
  }

  std::string last_id() const override { return last_.str(); }

 private:
  asio::any_io_executor ex_;
  std::shared_ptr<StreamsState> state_;
  std::string stream_;
  StreamId last_;
};

class MemoryStreams final : public EventStreams {
 public:
  MemoryStreams(asio::any_io_executor ex, std::size_t max_len)
      : ex_(std::move(ex)), state_(std::make_shared<StreamsState>()) {
    state_->max_len = max_len;
  }

  asio::awaitable<KvResult<std::string>> append(std::string stream, std::string payload) override {
    if (state_->stopped) co_return Error{Errc::cancelled, "the store was stopped"};
    auto& s = state_->streams[stream];
    StreamId id = state_->next_id(s);
    s.last = id;
    std::string text = id.str();
    s.entries.push_back(MemEntry{id, StreamEntry{text, std::move(payload)}});
    if (state_->max_len > 0) {
      while (s.entries.size() > state_->max_len) s.entries.pop_front();
    }
    state_->wake_all(s);
    co_return text;
  }

  asio::awaitable<KvResult<std::vector<StreamEntry>>> read(std::string stream,
                                                           std::string after_id,
                                                           std::size_t max) override {
    auto from = StreamId::parse(after_id);
    if (!from) co_return bad_id(after_id);
    co_return state_->after(stream, *from, max);
  }

  KvResult<std::unique_ptr<Subscription>> subscribe(std::string stream,
                                                    std::string after_id) override {
    auto from = StreamId::parse(after_id);
    if (!from) return bad_id(after_id);
    return std::unique_ptr<Subscription>(
        std::make_unique<MemorySubscription>(ex_, state_, std::move(stream), *from));
  }

  asio::awaitable<KvResult<std::size_t>> trim(std::string stream, std::size_t max_len,
                                              milliseconds max_age) override {
    auto it = state_->streams.find(stream);
    if (it == state_->streams.end()) co_return std::size_t{0};
    auto& entries = it->second.entries;
    std::size_t before = entries.size();
    if (max_len > 0) {
      while (entries.size() > max_len) entries.pop_front();
    }
    if (max_age.count() > 0) {
      auto now = wall_ms();
      auto age = static_cast<std::uint64_t>(max_age.count());
      if (now > age) {
        StreamId min{now - age, 0};
        while (!entries.empty() && entries.front().id < min) entries.pop_front();
      }
    }
    std::size_t removed = before - entries.size();
    state_->maybe_erase(it);
    co_return removed;
  }

  void stop() {
    state_->stopped = true;
    for (auto& [name, s] : state_->streams) state_->wake_all(s);
  }

 private:
  static Error bad_id(const std::string& id) {
    return Error{Errc::bad_request, "malformed stream id \"" + id.substr(0, 64) +
                                        "\" (expected <milliseconds>-<sequence>)"};
  }
  asio::any_io_executor ex_;
  std::shared_ptr<StreamsState> state_;
};

class CacheCounters final : public Counters {
 public:
  explicit CacheCounters(Cache& cache) : cache_(cache) {}
  asio::awaitable<Take> take(const std::string& key, std::int64_t amount, std::int64_t limit,
                             milliseconds ttl) override {
    co_return (co_await cache_.take(key, amount, limit, ttl)).value();
  }
  asio::awaitable<std::int64_t> add(const std::string& key, std::int64_t amount,
                                    milliseconds ttl) override {
    co_return (co_await cache_.add(key, amount, ttl)).value();
  }
  asio::awaitable<std::int64_t> get(const std::string& key) override {
    co_return (co_await cache_.counter(key)).value();
  }

 private:
  Cache& cache_;
};

class MemoryKv final : public Kv {
 public:
  MemoryKv(asio::any_io_executor ex, const KvConfig& config, core::Registry* metrics)
      : cache_(make_memory_cache(
            config.cache_max_bytes,
            metrics ? &metrics->gauge("agentd_store_cache_bytes",
                                      "Bytes of keys and values in the in-process cache")
                    : nullptr)),
        streams_(make_memory_streams(std::move(ex), config.stream_max_len)),
        counters_(counters_over(*cache_)) {}
  ~MemoryKv() override { stop(); }

  Cache& cache() override { return *cache_; }
  Counters& counters() override { return *counters_; }
  EventStreams& streams() override { return *streams_; }
  Health health() const override { return Health{Health::State::ok, "in-process"}; }
  std::string_view backend() const noexcept override { return "memory"; }
  asio::awaitable<bool> wait_ready(milliseconds) override { co_return true; }
  void stop() override { stop_memory_streams(*streams_); }

 private:
  std::unique_ptr<Cache> cache_;
  std::unique_ptr<EventStreams> streams_;
  std::unique_ptr<Counters> counters_;
};

}  // namespace

std::uint64_t wall_ms() {
  using namespace std::chrono;
  return static_cast<std::uint64_t>(
      duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

MemoryCounters::Entry& MemoryCounters::entry(const std::string& key, milliseconds ttl) {
  auto now = Clock::now();
  if (++ops_ % 1024 == 0) std::erase_if(map_, [&](auto& kv) { return kv.second.expires <= now; });
  auto [it, fresh] = map_.try_emplace(key);
  if (fresh || it->second.expires <= now) it->second = Entry{0, expiry(ttl)};
  return it->second;
}

Take MemoryCounters::take(const std::string& key, std::int64_t amount, std::int64_t limit,
                          milliseconds ttl) {
  auto& e = entry(key, ttl);
  if (e.value + amount > limit) return Take{false, e.value};
  e.value += amount;
  return Take{true, e.value};
}

std::int64_t MemoryCounters::add(const std::string& key, std::int64_t amount, milliseconds ttl) {
  auto& e = entry(key, ttl);
  e.value += amount;
  return e.value;
}

std::int64_t MemoryCounters::get(const std::string& key) {
  auto it = map_.find(key);
  if (it == map_.end() || it->second.expires <= Clock::now()) return 0;
  return it->second.value;
}

void MemoryCounters::remember(const std::string& key, std::int64_t value, milliseconds ttl) {
  entry(key, ttl).value = value;
}

std::unique_ptr<Cache> make_memory_cache(std::uint64_t max_bytes, core::Gauge* bytes) {
  return std::make_unique<MemoryCache>(max_bytes, bytes);
}

std::unique_ptr<EventStreams> make_memory_streams(asio::any_io_executor ex, std::size_t max_len) {
  return std::make_unique<MemoryStreams>(std::move(ex), max_len);
}

void stop_memory_streams(EventStreams& streams) {
  if (auto* m = dynamic_cast<MemoryStreams*>(&streams)) m->stop();
}

std::unique_ptr<Counters> counters_over(Cache& cache) {
  return std::make_unique<CacheCounters>(cache);
}

}  // namespace detail

std::unique_ptr<Kv> make_memory_kv(asio::any_io_executor ex, const KvConfig& config,
                                   core::Registry* metrics) {
  return std::make_unique<detail::MemoryKv>(std::move(ex), config, metrics);
}

}  // namespace agentd::store
