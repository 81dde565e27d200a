// The store's cache, counters and event streams: one conformance suite run on every backend
// (in-process; bare Redis; Redis behind make_kv's degradation wrapper; bare Redis over mutual
// TLS), each Redis test with its own redis-server on a free loopback port; the Redis client's
// protocol logic without sockets; and Redis faults (killed, restarted, stopped, wrong password,
// bad URL, wrong CA, wrong name).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "agentd/core/runtime.hpp"
#include "agentd/store/kv.hpp"
#include "agentd/store/redis_protocol.hpp"
#include "support/coro.hpp"
#include "support/process.hpp"
#include "support/tls_cert.hpp"

namespace {

using namespace agentd::store;
using namespace std::chrono_literals;
using agentd::Errc;
using Clock = std::chrono::steady_clock;
namespace asio = boost::asio;
namespace rp = agentd::store::redis;

// ---------------------------------------------------------------------------------------------
// Helpers

// Runs `work` on `io` until it finishes; fails the test when it takes longer than `limit`.
// Background tasks (connections) keep running only while the test's coroutine does.
void run(asio::io_context& io, asio::awaitable<void> work, std::chrono::milliseconds limit = 30s) {
  agentd::test::run_coroutine(io, std::move(work), limit);
}

asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
}

asio::awaitable<void> yield() {
  auto ex = co_await asio::this_coro::executor;
  co_await asio::post(ex, asio::use_awaitable);
}

using agentd::test::Group;


// Test certificates (self-signed, IP:127.0.0.1 and DNS:localhost), made once per run: the
// server's, also its clients' (mutual TLS) and the CA both trust; and an unrelated one.
const agentd::test::TestCert& test_cert() {
  static const agentd::test::TestCert cert = agentd::test::make_test_cert();
  return cert;
}
const agentd::test::TestCert& other_cert() {
  static const agentd::test::TestCert cert = agentd::test::make_test_cert();
  return cert;
}

// A private redis-server on a free loopback port, in its own temp dir, that a test may kill,
// stop and restart on the same port. With `tls`, it listens for TLS only and requires a client
// certificate signed by test_cert().
class RedisServer {
 public:
  explicit RedisServer(std::vector<std::string> extra = {}, bool tls = false)
      : extra_(std::move(extra)), tls_(tls) {
    char tmpl[] = "/tmp/agentd-kv-redis-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    port_ = static_cast<int>(agentd::test::free_loopback_port());
  }
  ~RedisServer() {
    proc_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  bool start() {
    std::vector<std::string> args{"--bind", "127.0.0.1", "--dir", dir_, "--save", "",
                                  "--appendonly", "no"};
    if (tls_) {
      const auto& c = test_cert();
      args.insert(args.end(), {"--port", "0", "--tls-port", std::to_string(port_),
                               "--tls-cert-file", c.cert_file, "--tls-key-file", c.key_file,
                               "--tls-ca-cert-file", c.cert_file, "--tls-auth-clients", "yes"});
    } else {
      args.insert(args.end(), {"--port", std::to_string(port_)});
    }
    args.insert(args.end(), extra_.begin(), extra_.end());
    proc_ = std::make_unique<agentd::test::Process>("/usr/bin/redis-server", args);
    std::string seen;
    bool ready = proc_->wait_for_line("Ready to accept connections", 10s, &seen).has_value();
    if (!ready) ADD_FAILURE() << "redis-server did not start:\n" << seen;
    return ready;
  }
  void kill() {
    proc_->signal(SIGKILL);
    proc_->wait(5s);
  }
  void signal(int sig) { proc_->signal(sig); }
  int port() const { return port_; }
  std::string url(const std::string& userinfo = "", int db = 0) const {
    return std::string(tls_ ? "rediss://" : "redis://") + (userinfo.empty() ? "" : userinfo + "@") +
           "127.0.0.1:" + std::to_string(port_) + "/" + std::to_string(db);
  }
  // redis-cli against this server; its stdout (and stderr).
  std::string cli(std::vector<std::string> args) const {
    std::vector<std::string> all{"-h", "127.0.0.1", "-p", std::to_string(port_)};
    if (tls_) {
      const auto& c = test_cert();
      all.insert(all.end(), {"--tls", "--cacert", c.cert_file, "--cert", c.cert_file, "--key",
                             c.key_file});
    }
    for (auto& a : extra_auth_) all.push_back(a);
    all.insert(all.end(), args.begin(), args.end());
    return agentd::test::run_command("/usr/bin/redis-cli", all).second;
  }
  void cli_auth(std::vector<std::string> a) { extra_auth_ = std::move(a); }

 private:
  std::vector<std::string> extra_;
  bool tls_ = false;
  std::vector<std::string> extra_auth_;
  std::string dir_;
  int port_ = 0;
  std::unique_ptr<agentd::test::Process> proc_;
};

KvConfig redis_config(const std::string& url) {
  KvConfig c;
  c.redis = url;
  c.redis_connect_timeout = 1000ms;
  c.redis_command_timeout = 1000ms;
  c.redis_health_interval = 300ms;
  return c;
}

// For a TLS RedisServer: trusts test_cert() and presents it as the client certificate.
KvConfig tls_config(const std::string& url) {
  KvConfig c = redis_config(url);
  c.redis_tls.ca_file = test_cert().cert_file;
  c.redis_tls.cert_file = test_cert().cert_file;
  c.redis_tls.key_file = test_cert().key_file;
  return c;
}

// ---------------------------------------------------------------------------------------------
// Conformance suite: the same tests on every backend.

struct MemoryBackend {
  static constexpr bool kRedis = false;
  static constexpr bool kTls = false;
  static std::unique_ptr<Kv> make(asio::any_io_executor ex, const std::string&) {
    KvConfig c;
    return make_memory_kv(ex, c);
  }
};

struct RedisBackend {
  static constexpr bool kRedis = true;
  static constexpr bool kTls = false;
  static std::unique_ptr<Kv> make(asio::any_io_executor ex, const std::string& url) {
    return make_redis_kv(ex, redis_config(url));
  }
};

struct WrappedRedisBackend {
  static constexpr bool kRedis = true;
  static constexpr bool kTls = false;
  static std::unique_ptr<Kv> make(asio::any_io_executor ex, const std::string& url) {
    return make_kv(ex, redis_config(url));
  }
};

// The bare client over mutual TLS: every command through the TLS stream's writes.
struct TlsRedisBackend {
  static constexpr bool kRedis = true;
  static constexpr bool kTls = true;
  static std::unique_ptr<Kv> make(asio::any_io_executor ex, const std::string& url) {
    return make_redis_kv(ex, tls_config(url));
  }
};

struct BackendNames {
  template <class T>
  static std::string GetName(int) {
    if constexpr (std::is_same_v<T, MemoryBackend>) return "memory";
    if constexpr (std::is_same_v<T, RedisBackend>) return "redis";
    if constexpr (std::is_same_v<T, TlsRedisBackend>) return "redis_tls";
    return "redis_wrapped";
  }
};

template <class B>
class KvConformance : public ::testing::Test {
 protected:
  void SetUp() override {
    if constexpr (B::kRedis) {
      server_ = std::make_unique<RedisServer>(std::vector<std::string>{}, B::kTls);
      ASSERT_TRUE(server_->start());
      kv_ = B::make(io_.get_executor(), server_->url());
      // A second instance on the same server: another agentd process sharing the data.
      other_ = B::make(io_.get_executor(), server_->url());
      bool ready = false;
      run(io_, wait_ready(*kv_, *other_, &ready));
      ASSERT_TRUE(ready) << kv_->health().detail;
    } else {
      kv_ = B::make(io_.get_executor(), "");
    }
  }
  void TearDown() override {
    if (other_) other_->stop();
    if (kv_) kv_->stop();
    io_.restart();
    io_.run_for(3s);  // returns as soon as every background task has ended
    EXPECT_TRUE(io_.stopped()) << "background work still running after stop()";
  }
  static asio::awaitable<void> wait_ready(Kv& a, Kv& b, bool* ready) {
    *ready = (co_await a.wait_ready(5s)) && (co_await b.wait_ready(5s));
  }

  Kv& kv() { return *kv_; }
  // Shares kv()'s data: a second Redis client, or the same in-process store.
  Kv& other() { return other_ ? *other_ : *kv_; }

  asio::io_context io_;
  std::unique_ptr<RedisServer> server_;
  std::unique_ptr<Kv> kv_;
  std::unique_ptr<Kv> other_;
};

using Backends =
    ::testing::Types<MemoryBackend, RedisBackend, WrappedRedisBackend, TlsRedisBackend>;
TYPED_TEST_SUITE(KvConformance, Backends, BackendNames);

asio::awaitable<void> cas_once(Kv& kv, int i, int* winners) {
  auto r = co_await kv.cache().compare_and_set("race", std::nullopt, std::to_string(i), 0ms);
  if (!r) ADD_FAILURE() << r.error().message;
  if (r && *r) ++*winners;
}

asio::awaitable<void> append_later(Kv& kv, std::string stream, std::chrono::milliseconds d) {
  co_await sleep_for(d);
  auto id = co_await kv.streams().append(stream, "later");
  if (!id) ADD_FAILURE() << id.error().message;
}

asio::awaitable<void> get_set_delete(Kv& kv, Kv& other) {
  auto& c = kv.cache();
  auto missing = co_await c.get("nothing");
  CO_ASSERT(missing.has_value());
  EXPECT_FALSE(missing->has_value());
  std::string binary("a\0b\r\n$3\r\n*", 10);
  CO_ASSERT((co_await c.set("k", binary, 0ms)).has_value());
  auto got = co_await other.cache().get("k");
  CO_ASSERT(got && got->has_value());
  EXPECT_EQ(**got, binary);
  CO_ASSERT((co_await c.set("k", "second", 0ms)).has_value());
  got = co_await c.get("k");
  CO_ASSERT(got && got->has_value());
  EXPECT_EQ(**got, "second");
  auto deleted = co_await other.cache().del("k");
  CO_ASSERT(deleted.has_value());
  EXPECT_TRUE(*deleted);
  deleted = co_await c.del("k");
  CO_ASSERT(deleted.has_value());
  EXPECT_FALSE(*deleted);
  got = co_await c.get("k");
  CO_ASSERT(got.has_value());
  EXPECT_FALSE(got->has_value());
  // An empty value is a value, not a miss.
  CO_ASSERT((co_await c.set("empty", "", 0ms)).has_value());
  got = co_await c.get("empty");
  CO_ASSERT(got && got->has_value());
  EXPECT_EQ(**got, "");
}

TYPED_TEST(KvConformance, GetSetDelete) { run(this->io_, get_set_delete(this->kv(), this->other())); }

asio::awaitable<void> ttl_expiry(Kv& kv) {
  auto& c = kv.cache();
  CO_ASSERT((co_await c.set("short", "v", 200ms)).has_value());
  CO_ASSERT((co_await c.set("forever", "v", 0ms)).has_value());
  auto got = co_await c.get("short");
  CO_ASSERT(got.has_value());
  EXPECT_TRUE(got->has_value()) << "expired too early";
  co_await sleep_for(320ms);
  got = co_await c.get("short");
  CO_ASSERT(got.has_value());
  EXPECT_FALSE(got->has_value()) << "still there after its TTL";
  got = co_await c.get("forever");
  CO_ASSERT(got.has_value());
  EXPECT_TRUE(got->has_value());
  // A set replaces the TTL as well as the value.
  CO_ASSERT((co_await c.set("forever", "w", 100ms)).has_value());
  co_await sleep_for(220ms);
  got = co_await c.get("forever");
  CO_ASSERT(got.has_value());
  EXPECT_FALSE(got->has_value());
}

TYPED_TEST(KvConformance, TtlExpiry) { run(this->io_, ttl_expiry(this->kv())); }

asio::awaitable<void> compare_and_set(Kv& kv, Kv& other) {
  auto& c = kv.cache();
  auto r = co_await c.compare_and_set("lock", std::nullopt, "a", 0ms);
  CO_ASSERT(r.has_value());
  EXPECT_TRUE(*r) << "absent key, expected absent: stores";
  r = co_await other.cache().compare_and_set("lock", std::nullopt, "b", 0ms);
  CO_ASSERT(r.has_value());
  EXPECT_FALSE(*r) << "present key, expected absent: refuses";
  r = co_await c.compare_and_set("lock", std::string("wrong"), "c", 0ms);
  CO_ASSERT(r.has_value());
  EXPECT_FALSE(*r);
  auto got = co_await c.get("lock");
  CO_ASSERT(got && got->has_value());
  EXPECT_EQ(**got, "a");
  r = co_await other.cache().compare_and_set("lock", std::string("a"), "d", 150ms);
  CO_ASSERT(r.has_value());
  EXPECT_TRUE(*r);
  got = co_await c.get("lock");
  CO_ASSERT(got && got->has_value());
  EXPECT_EQ(**got, "d");
  r = co_await c.compare_and_set("missing", std::string("x"), "y", 0ms);
  CO_ASSERT(r.has_value());
  EXPECT_FALSE(*r) << "absent key, expected a value: refuses";
  co_await sleep_for(250ms);  // the TTL given with the CAS applies
  got = co_await c.get("lock");
  CO_ASSERT(got.has_value());
  EXPECT_FALSE(got->has_value());
  // Concurrent CAS from nothing: exactly one winner.
  int winners = 0;
  Group g(co_await asio::this_coro::executor);
  for (int i = 0; i < 50; ++i) g.spawn(cas_once(i % 2 ? kv : other, i, &winners));
  co_await g.wait();
  EXPECT_EQ(winners, 1);
}

TYPED_TEST(KvConformance, CompareAndSet) { run(this->io_, compare_and_set(this->kv(), this->other())); }

asio::awaitable<void> counters_basics(Kv& kv) {
  auto& c = kv.cache();
  auto v = co_await c.counter("n");
  CO_ASSERT(v.has_value());
  EXPECT_EQ(*v, 0);
  v = co_await c.add("n", 5, 60s);
  CO_ASSERT(v.has_value());
  EXPECT_EQ(*v, 5);
  v = co_await c.add("n", -2, 60s);
  CO_ASSERT(v.has_value());
  EXPECT_EQ(*v, 3);
  auto t = co_await c.take("n", 2, 5, 60s);
  CO_ASSERT(t.has_value());
  EXPECT_TRUE(t->taken);
  EXPECT_EQ(t->value, 5);
  t = co_await c.take("n", 1, 5, 60s);
  CO_ASSERT(t.has_value());
  EXPECT_FALSE(t->taken);
  EXPECT_EQ(t->value, 5) << "a refused take reports the unchanged value";
  // A refused take on a new key leaves it at 0.
  t = co_await c.take("fresh", 10, 5, 60s);
  CO_ASSERT(t.has_value());
  EXPECT_FALSE(t->taken);
  EXPECT_EQ(t->value, 0);
  // Counters and values are separate key spaces.
  auto got = co_await c.get("n");
  CO_ASSERT(got.has_value());
  EXPECT_FALSE(got->has_value());
  // The infallible face (what the AI module uses) sees the same counters.
  EXPECT_EQ(co_await kv.counters().get("n"), 5);
  auto tk = co_await kv.counters().take("n", -1, 5, 60s);
  EXPECT_TRUE(tk.taken);
  EXPECT_EQ(tk.value, 4);
  EXPECT_EQ(co_await kv.counters().add("n", 10, 60s), 14);
}

TYPED_TEST(KvConformance, CountersBasics) { run(this->io_, counters_basics(this->kv())); }

// A rate-limit window: the TTL runs from the key's creation (not from each take), so the window
// ends exactly once, and a new one starts from zero.
asio::awaitable<void> rate_window(Kv& kv) {
  auto& c = kv.cache();
  auto start = Clock::now();
  for (int i = 0; i < 3; ++i) {
    auto t = co_await c.take("w", 1, 3, 400ms);
    CO_ASSERT(t.has_value());
    EXPECT_TRUE(t->taken);
  }
  co_await sleep_for(200ms);
  auto t = co_await c.take("w", 1, 3, 400ms);
  CO_ASSERT(t.has_value());
  EXPECT_FALSE(t->taken) << "over the limit inside the window";
  // add() on an existing key does not extend the window either.
  auto a = co_await c.add("w", 0, 400ms);
  CO_ASSERT(a.has_value());
  EXPECT_EQ(*a, 3);
  auto left = 400ms - std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  co_await sleep_for(left + 120ms);
  auto v = co_await c.counter("w");
  CO_ASSERT(v.has_value());
  EXPECT_EQ(*v, 0) << "the window ends 400 ms after its first take";
  for (int i = 1; i <= 3; ++i) {
    t = co_await c.take("w", 1, 3, 400ms);
    CO_ASSERT(t.has_value());
    EXPECT_TRUE(t->taken);
    EXPECT_EQ(t->value, i);
  }
}

TYPED_TEST(KvConformance, RateLimitWindowIsExact) { run(this->io_, rate_window(this->kv())); }

asio::awaitable<void> take_one(Kv& kv, std::vector<std::int64_t>* taken, int* refused) {
  auto t = co_await kv.cache().take("rl", 1, 700, 60s);
  if (!t) {
    ADD_FAILURE() << t.error().message;
    co_return;
  }
  if (t->taken) {
    taken->push_back(t->value);
  } else {
    ++*refused;
    EXPECT_EQ(t->value, 700);
  }
}

asio::awaitable<void> concurrent_takes(Kv& kv, Kv& other) {
  std::vector<std::int64_t> taken;
  int refused = 0;
  Group g(co_await asio::this_coro::executor);
  for (int i = 0; i < 1000; ++i) g.spawn(take_one(i % 2 ? kv : other, &taken, &refused));
  co_await g.wait();
  EXPECT_EQ(g.failures(), 0);
  EXPECT_EQ(taken.size(), 700u);
  EXPECT_EQ(refused, 300);
  // Each successful take saw its own value: 1..700, each once.
  std::sort(taken.begin(), taken.end());
  for (std::size_t i = 0; i < taken.size(); ++i) {
    if (taken[i] != static_cast<std::int64_t>(i + 1)) {
      ADD_FAILURE() << "take #" << i << " returned " << taken[i];
      break;
    }
  }
  auto v = co_await kv.cache().counter("rl");
  CO_ASSERT(v.has_value());
  EXPECT_EQ(*v, 700);
}

TYPED_TEST(KvConformance, ThousandConcurrentTakesAreExact) {
  run(this->io_, concurrent_takes(this->kv(), this->other()));
}

struct Ledger {
  std::int64_t limit = 1'000'000;  // micro-dollars
  int reserved = 0;
  std::int64_t spent = 0;  // sum of actual costs of admitted requests
  std::int64_t max_seen = 0;
};

// Reserve the worst case, "run", then reconcile with the actual cost (take + add).
asio::awaitable<void> reserve_and_settle(Kv& kv, int i, Ledger* l) {
  constexpr std::int64_t kWorst = 3000;
  auto t = co_await kv.cache().take("budget", kWorst, l->limit, 24h);
  if (!t) {
    ADD_FAILURE() << t.error().message;
    co_return;
  }
  l->max_seen = std::max(l->max_seen, t->value);
  if (!t->taken) co_return;
  ++l->reserved;
  co_await sleep_for(std::chrono::milliseconds(i % 5));
  std::int64_t actual = kWorst * (i % 4) / 4;  // 0, 750, 1500 or 2250
  auto a = co_await kv.cache().add("budget", actual - kWorst, 24h);
  if (!a) {
    ADD_FAILURE() << a.error().message;
    co_return;
  }
  l->max_seen = std::max(l->max_seen, *a);
  l->spent += actual;
}

asio::awaitable<void> budget_reservations(Kv& kv, Kv& other) {
  Ledger l;
  Group g(co_await asio::this_coro::executor);
  for (int i = 0; i < 1000; ++i) g.spawn(reserve_and_settle(i % 2 ? kv : other, i, &l));
  co_await g.wait();
  EXPECT_EQ(g.failures(), 0);
  EXPECT_LE(l.max_seen, l.limit) << "reservations overspent the budget";
  EXPECT_GE(l.reserved, 333) << "the budget fits at least 333 worst cases";
  auto v = co_await kv.cache().counter("budget");
  CO_ASSERT(v.has_value());
  EXPECT_EQ(*v, l.spent) << "after reconciling, the counter is exactly what was spent";
  EXPECT_LE(*v, l.limit);
}

TYPED_TEST(KvConformance, ThousandConcurrentBudgetReservationsNeverOverspend) {
  run(this->io_, budget_reservations(this->kv(), this->other()));
}

asio::awaitable<void> streams_append_read(Kv& kv, Kv& other) {
  auto& s = kv.streams();
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    auto id = co_await (i % 2 ? other : kv).streams().append("intent:1", "{\"n\":" + std::to_string(i) + "}");
    CO_ASSERT(id.has_value());
    if (!ids.empty()) {
      EXPECT_LT(compare_stream_ids(ids.back(), *id), 0) << ids.back() << " then " << *id;
    }
    ids.push_back(*id);
  }
  auto all = co_await s.read("intent:1", "", 100);
  CO_ASSERT(all.has_value());
  CO_ASSERT(all->size() == 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ((*all)[i].id, ids[i]);
    EXPECT_EQ((*all)[i].payload, "{\"n\":" + std::to_string(i) + "}");
  }
  auto some = co_await s.read("intent:1", ids[1], 2);
  CO_ASSERT(some.has_value());
  CO_ASSERT(some->size() == 2u);
  EXPECT_EQ((*some)[0].id, ids[2]);
  EXPECT_EQ((*some)[1].id, ids[3]);
  auto none = co_await s.read("intent:1", ids[4], 10);
  CO_ASSERT(none.has_value());
  EXPECT_TRUE(none->empty());
  auto other_stream = co_await s.read("intent:2", "", 10);
  CO_ASSERT(other_stream.has_value());
  EXPECT_TRUE(other_stream->empty());
  auto bad = co_await s.read("intent:1", "abc", 10);
  CO_ASSERT(!bad.has_value());
  EXPECT_EQ(bad.error().code, Errc::bad_request);
  auto sub = s.subscribe("intent:1", "1-x");
  CO_ASSERT(!sub.has_value());
  EXPECT_EQ(sub.error().code, Errc::bad_request);
  // Many appends inside one millisecond still get increasing ids.
  std::string last = ids.back();
  for (int i = 0; i < 500; ++i) {
    auto id = co_await s.append("intent:1", "x");
    CO_ASSERT(id.has_value());
    EXPECT_LT(compare_stream_ids(last, *id), 0);
    last = *id;
  }
}

TYPED_TEST(KvConformance, StreamsAppendRead) {
  run(this->io_, streams_append_read(this->kv(), this->other()));
}

asio::awaitable<void> appender(Kv& kv, std::string stream, int n, std::vector<std::string>* ids) {
  for (int i = 0; i < n; ++i) {
    auto id = co_await kv.streams().append(stream, "e" + std::to_string(ids->size()));
    if (!id) {
      ADD_FAILURE() << id.error().message;
      co_return;
    }
    ids->push_back(*id);
    if (i % 7 == 0) co_await sleep_for(1ms);
    if (i % 3 == 0) co_await yield();
  }
}

// Subscribes after a given point (index into ids; -1: from the start) once `start_after`
// entries exist, then reads until it has seen every entry after its starting id.
asio::awaitable<void> subscriber(Kv& kv, std::string stream, const std::vector<std::string>* ids,
                                 int from, std::size_t total, std::size_t start_after,
                                 int* finished) {
  while (ids->size() < start_after) co_await sleep_for(1ms);
  std::string after = from < 0 ? "" : (*ids)[static_cast<std::size_t>(from)];
  auto sub = kv.streams().subscribe(stream, after);
  if (!sub) {
    ADD_FAILURE() << sub.error().message;
    co_return;
  }
  std::vector<std::string> seen;
  std::size_t want = total - static_cast<std::size_t>(from + 1);
  auto deadline = Clock::now() + 20s;
  while (seen.size() < want && Clock::now() < deadline) {
    auto r = co_await (*sub)->next(7, 500ms);
    if (!r) {
      ADD_FAILURE() << r.error().message;
      co_return;
    }
    for (auto& e : *r) seen.push_back(e.id);
  }
  CO_ASSERT(seen.size() == want);
  // An entry can reach a subscriber (on another connection) before the reply to its XADD
  // reaches the appender: compare once every append has been acknowledged.
  while (ids->size() < total && Clock::now() < deadline) co_await sleep_for(1ms);
  CO_ASSERT(ids->size() == total);
  for (std::size_t i = 0; i < want; ++i) {
    if (seen[i] != (*ids)[static_cast<std::size_t>(from + 1) + i]) {
      ADD_FAILURE() << "subscriber from " << from << ": entry " << i << " is " << seen[i]
                    << ", expected " << (*ids)[static_cast<std::size_t>(from + 1) + i];
      co_return;
    }
  }
  EXPECT_EQ((*sub)->last_id(), ids->back());
  // Nothing more: exactly once.
  auto more = co_await (*sub)->next(10, 50ms);
  CO_ASSERT(more.has_value());
  EXPECT_TRUE(more->empty());
  ++*finished;
}

// Subscribers start at many points (replayed history, the live edge, the very beginning) while
// appends race them, from this instance and another: each sees every later entry exactly once.
asio::awaitable<void> subscribe_race(Kv& kv, Kv& other) {
  std::vector<std::string> ids;
  constexpr int kTotal = 600;
  Group g(co_await asio::this_coro::executor);
  // The first 100 exist before anyone subscribes.
  co_await appender(kv, "race", 100, &ids);
  g.spawn(appender(other, "race", kTotal - 100, &ids));
  int finished = 0;
  int subs = 0;
  for (int k = 0; k < 24; ++k) {
    int from = k == 0 ? -1 : (k * 37) % 150;  // -1: from the start
    std::size_t start_after = static_cast<std::size_t>(std::max(from + 1, 100 + k * 15));
    g.spawn(subscriber(k % 3 ? kv : other, "race", &ids, from, kTotal, start_after, &finished));
    ++subs;
  }
  co_await g.wait();
  EXPECT_EQ(g.failures(), 0);
  EXPECT_EQ(ids.size(), static_cast<std::size_t>(kTotal));
  EXPECT_EQ(finished, subs);
}

TYPED_TEST(KvConformance, SubscribeFromIdHasNoGapNorDuplicateWhileAppendsRace) {
  run(this->io_, subscribe_race(this->kv(), this->other()), 60s);
}

asio::awaitable<void> wait_quietly(Subscription* sub) {
  auto r = co_await sub->next(10, 10s);
  EXPECT_TRUE(r.has_value());
}

asio::awaitable<void> subscription_waits(Kv& kv) {
  auto id = co_await kv.streams().append("quiet", "first");
  CO_ASSERT(id.has_value());
  auto sub = kv.streams().subscribe("quiet", *id);
  CO_ASSERT(sub.has_value());
  auto t0 = Clock::now();
  auto r = co_await (*sub)->next(10, 150ms);
  auto took = Clock::now() - t0;
  CO_ASSERT(r.has_value());
  EXPECT_TRUE(r->empty());
  EXPECT_GE(took, 140ms);
  EXPECT_LT(took, 1500ms);
  EXPECT_EQ((*sub)->last_id(), *id);
  // A live entry wakes a waiting subscriber at once.
  Group g(co_await asio::this_coro::executor);
  g.spawn(append_later(kv, "quiet", 100ms));
  t0 = Clock::now();
  r = co_await (*sub)->next(10, 5s);
  took = Clock::now() - t0;
  co_await g.wait();
  CO_ASSERT(r.has_value());
  CO_ASSERT(r->size() == 1u);
  EXPECT_EQ((*r)[0].payload, "later");
  EXPECT_LT(took, 1000ms);
  // A subscription from the start of a stream that does not exist yet, joining while another
  // subscriber's live read is in progress (Redis: the blocking read is re-issued at once).
  Group waiting(co_await asio::this_coro::executor);
  waiting.spawn(wait_quietly(sub->get()));
  co_await sleep_for(20ms);
  auto fresh = kv.streams().subscribe("not-yet", "");
  CO_ASSERT(fresh.has_value());
  g.spawn(append_later(kv, "not-yet", 50ms));
  t0 = Clock::now();
  r = co_await (*fresh)->next(10, 5s);
  took = Clock::now() - t0;
  co_await g.wait();
  CO_ASSERT(r.has_value());
  CO_ASSERT(r->size() == 1u);
  EXPECT_LT(took, 600ms);
  co_await append_later(kv, "quiet", 0ms);  // ends wait_quietly
  co_await waiting.wait();
}

TYPED_TEST(KvConformance, SubscriptionWaitsAndWakes) { run(this->io_, subscription_waits(this->kv())); }

asio::awaitable<void> trim_streams(Kv& kv) {
  auto& s = kv.streams();
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) {
    auto id = co_await s.append("t", std::to_string(i));
    CO_ASSERT(id.has_value());
    ids.push_back(*id);
  }
  auto removed = co_await s.trim("t", 4, 0ms);
  CO_ASSERT(removed.has_value());
  EXPECT_EQ(*removed, 6u);
  auto rest = co_await s.read("t", "", 100);
  CO_ASSERT(rest.has_value());
  CO_ASSERT(rest->size() == 4u);
  EXPECT_EQ(rest->front().id, ids[6]);
  // By age: entries older than 250 ms go, newer ones stay.
  co_await sleep_for(400ms);
  std::vector<std::string> fresh;
  for (int i = 0; i < 2; ++i) {
    auto id = co_await s.append("t", "new");
    CO_ASSERT(id.has_value());
    fresh.push_back(*id);
  }
  removed = co_await s.trim("t", 0, 250ms);
  CO_ASSERT(removed.has_value());
  EXPECT_EQ(*removed, 4u);
  rest = co_await s.read("t", "", 100);
  CO_ASSERT(rest.has_value());
  CO_ASSERT(rest->size() == 2u);
  EXPECT_EQ((*rest)[0].id, fresh[0]);
  // Ids keep increasing after a trim emptied the stream.
  removed = co_await s.trim("t", 0, 1ms);
  co_await sleep_for(5ms);
  removed = co_await s.trim("t", 0, 1ms);
  CO_ASSERT(removed.has_value());
  auto id = co_await s.append("t", "after");
  CO_ASSERT(id.has_value());
  EXPECT_LT(compare_stream_ids(fresh[1], *id), 0);
  auto none = co_await s.trim("missing", 10, 10ms);
  CO_ASSERT(none.has_value());
  EXPECT_EQ(*none, 0u);
}

TYPED_TEST(KvConformance, Trim) { run(this->io_, trim_streams(this->kv())); }

asio::awaitable<void> set_then_get(Kv& kv, int i, int* wrong) {
  auto key = "p" + std::to_string(i);
  auto value = "value-" + std::to_string(i * 7919);
  auto s = co_await kv.cache().set(key, value, 60s);
  if (!s) {
    ++*wrong;
    co_return;
  }
  auto g = co_await kv.cache().get(key);
  if (!g || !g->has_value() || **g != value) ++*wrong;
}

asio::awaitable<void> many_callers(Kv& kv) {
  int wrong = 0;
  Group g(co_await asio::this_coro::executor);
  for (int i = 0; i < 2000; ++i) g.spawn(set_then_get(kv, i, &wrong));
  co_await g.wait();
  EXPECT_EQ(wrong, 0) << "replies matched to the wrong callers";
}

TYPED_TEST(KvConformance, ManyConcurrentCallers) { run(this->io_, many_callers(this->kv())); }

// ---------------------------------------------------------------------------------------------
// Protocol logic, no sockets.

TEST(RedisUrl, Parses) {
  auto u = rp::parse_redis_url("redis://localhost");
  EXPECT_EQ(u.host, "localhost");
  EXPECT_EQ(u.port, 6379);
  EXPECT_EQ(u.db, 0);
  EXPECT_TRUE(u.password.empty());
  u = rp::parse_redis_url("redis://:s%40cret%3A1@10.0.0.5:6380/3");
  EXPECT_EQ(u.host, "10.0.0.5");
  EXPECT_EQ(u.port, 6380);
  EXPECT_EQ(u.db, 3);
  EXPECT_EQ(u.user, "");
  EXPECT_EQ(u.password, "s@cret:1");
  u = rp::parse_redis_url("redis://app:pw@[::1]:7000/");
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, 7000);
  EXPECT_EQ(u.user, "app");
  EXPECT_EQ(u.password, "pw");
  EXPECT_EQ(u.endpoint(), "[::1]:7000");
  EXPECT_FALSE(u.tls);
  u = rp::parse_redis_url("rediss://:pw@redis.internal:6380/2");
  EXPECT_TRUE(u.tls);
  EXPECT_EQ(u.host, "redis.internal");
  EXPECT_EQ(u.port, 6380);
  EXPECT_EQ(u.password, "pw");
  EXPECT_EQ(u.db, 2);
}

TEST(RedisUrl, RejectsWithClearMessages) {
  auto message = [](const std::string& url) {
    try {
      rp::parse_redis_url(url);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message("http://h").find("redis[s]://"), std::string::npos);
  EXPECT_NE(message("redis:/h").find("redis[s]://"), std::string::npos);
  EXPECT_NE(message("rediss://h:0").find("port"), std::string::npos);
  EXPECT_NE(message("redis://h:0").find("port"), std::string::npos);
  EXPECT_NE(message("redis://h:70000").find("port"), std::string::npos);
  EXPECT_NE(message("redis://h:abc").find("port"), std::string::npos);
  EXPECT_NE(message("redis://h:").find("port"), std::string::npos);
  EXPECT_NE(message("redis://h/x").find("database"), std::string::npos);
  EXPECT_NE(message("redis:///0").find("host"), std::string::npos);
  EXPECT_NE(message("redis://h?db=1").find("query"), std::string::npos);
  EXPECT_NE(message("redis://:%zz@h").find("percent"), std::string::npos);
  EXPECT_NE(message("redis://[::1:6379").find("IPv6"), std::string::npos);
  // The password never appears in the message.
  EXPECT_EQ(message("http://u:topsecret@h").find("topsecret"), std::string::npos);
}

TEST(RedisProtocol, EncodesCommands) {
  EXPECT_EQ(rp::encode_command({"SET", "k", "v"}), "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
  std::string binary("a\0\r\n", 4);
  EXPECT_EQ(rp::encode_command({"GET", binary}), std::string("*2\r\n$3\r\nGET\r\n$4\r\na\0\r\n\r\n", 23));
  EXPECT_EQ(rp::encode_command({"X", ""}), "*2\r\n$1\r\nX\r\n$0\r\n\r\n");
}

TEST(RedisProtocol, ParsesRepliesFedInPieces) {
  std::string wire =
      "+OK\r\n-ERR wrong\r\n:42\r\n$5\r\nhe\r\no\r\n$-1\r\n*2\r\n*1\r\n:1\r\n$0\r\n\r\n*-1\r\n"
      "*3\r\n+st\r\n-er\r\n$-1\r\n:7\r\n";
  rp::ReplyParser p;
  std::vector<rp::Reply> got;
  for (char ch : wire) {  // one byte at a time: replies come out only when complete
    p.feed(std::string_view(&ch, 1));
    for (;;) {
      auto r = p.next();
      ASSERT_TRUE(r.has_value());
      if (!*r) break;
      got.push_back(std::move(**r));
    }
  }
  ASSERT_EQ(got.size(), 9u);
  EXPECT_EQ(got[0].type, rp::Reply::Type::status);
  EXPECT_EQ(got[0].str, "OK");
  EXPECT_TRUE(got[1].is_error());
  EXPECT_EQ(got[1].str, "ERR wrong");
  EXPECT_EQ(got[2].integer, 42);
  EXPECT_EQ(got[3].str, "he\r\no");
  EXPECT_TRUE(got[4].is_nil());
  ASSERT_EQ(got[5].elements.size(), 2u);
  EXPECT_EQ(got[5].elements[0].elements[0].integer, 1);
  EXPECT_EQ(got[5].elements[1].str, "");
  EXPECT_TRUE(got[6].is_nil());
  ASSERT_EQ(got[7].elements.size(), 3u);  // every kind of element inside an array
  EXPECT_EQ(got[7].elements[0].type, rp::Reply::Type::status);
  EXPECT_EQ(got[7].elements[0].str, "st");
  EXPECT_TRUE(got[7].elements[1].is_error());
  EXPECT_TRUE(got[7].elements[2].is_nil());
  EXPECT_EQ(got[8].type, rp::Reply::Type::integer);  // nothing left over from the array
  EXPECT_EQ(got[8].integer, 7);
  EXPECT_TRUE(got[8].elements.empty());
}

TEST(RedisProtocol, RejectsGarbage) {
  rp::ReplyParser p;
  p.feed("?what\r\n");
  auto r = p.next();
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("protocol error"), std::string::npos);
}

TEST(RedisProtocol, RouterMatchesPipelinedRepliesInOrder) {
  rp::ReplyRouter router;
  auto a = router.push(1);
  auto b = router.push(3);  // e.g. a request of three commands
  auto c = router.push(1);
  auto owner = router.on_reply();
  ASSERT_TRUE(owner);
  EXPECT_EQ(owner->id, a);
  EXPECT_TRUE(owner->last);
  for (int i = 0; i < 2; ++i) {
    owner = router.on_reply();
    ASSERT_TRUE(owner);
    EXPECT_EQ(owner->id, b);
    EXPECT_FALSE(owner->last);
  }
  owner = router.on_reply();
  ASSERT_TRUE(owner);
  EXPECT_EQ(owner->id, b);
  EXPECT_TRUE(owner->last);
  EXPECT_EQ(router.pending(), 1u);
  auto dropped = router.clear();
  ASSERT_EQ(dropped.size(), 1u);
  EXPECT_EQ(dropped[0], c);
  EXPECT_FALSE(router.on_reply()) << "nothing pending";
}

TEST(RedisProtocol, Handshake) {
  auto url = rp::parse_redis_url("redis://app:pw@h:1/2");
  auto hs = rp::make_handshake(url, "agentd", true);
  EXPECT_EQ(hs.replies, 5u);
  EXPECT_EQ(hs.bytes, rp::encode_command({"AUTH", "app", "pw"}) + rp::encode_command({"SELECT", "2"}) +
                          rp::encode_command({"CLIENT", "SETNAME", "agentd"}) +
                          rp::encode_command({"PING"}) + rp::encode_command({"CLIENT", "ID"}));
  auto status = [](std::string s) {
    rp::Reply r;
    r.type = rp::Reply::Type::status;
    r.str = std::move(s);
    return r;
  };
  auto error = [](std::string s) {
    rp::Reply r;
    r.type = rp::Reply::Type::error;
    r.str = std::move(s);
    return r;
  };
  rp::Reply id;
  id.type = rp::Reply::Type::integer;
  id.integer = 17;
  std::vector<rp::Reply> ok{status("OK"), status("OK"), status("OK"), status("PONG"), id};
  auto r = rp::check_handshake(url, ok, true);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(*r, 17);
  std::vector<rp::Reply> wrongpass{error("WRONGPASS invalid username-password pair"), status("OK"),
                                   status("OK"), status("PONG"), id};
  r = rp::check_handshake(url, wrongpass, true);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("refused AUTH: WRONGPASS"), std::string::npos);
  std::vector<rp::Reply> baddb{status("OK"), error("ERR DB index is out of range"), status("OK"),
                               status("PONG"), id};
  r = rp::check_handshake(url, baddb, true);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("SELECT 2"), std::string::npos);
  auto plain = rp::parse_redis_url("redis://h");
  auto hs2 = rp::make_handshake(plain, "", false);
  EXPECT_EQ(hs2.bytes, rp::encode_command({"PING"}));
  std::vector<rp::Reply> noauth{error("NOAUTH Authentication required.")};
  r = rp::check_handshake(plain, noauth, false);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("requires a password"), std::string::npos);
}

TEST(RedisProtocol, DecodesStreamReplies) {
  rp::ReplyParser p;
  p.feed("*1\r\n*2\r\n$8\r\nagentd:x\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nd\r\n$2\r\nhi\r\n"
         "*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nd\r\n$0\r\n\r\n");
  auto r = p.next();
  ASSERT_TRUE(r && *r);
  auto x = rp::decode_xread(**r);
  ASSERT_TRUE(x.has_value());
  ASSERT_EQ(x->count("agentd:x"), 1u);
  auto& entries = x->at("agentd:x");
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].id, "1-0");
  EXPECT_EQ(entries[0].payload, "hi");
  EXPECT_EQ(entries[1].id, "1-1");
  EXPECT_EQ(entries[1].payload, "");
  rp::Reply nil;
  auto none = rp::decode_xread(nil);
  ASSERT_TRUE(none.has_value());
  EXPECT_TRUE(none->empty());
  rp::Reply bad;
  bad.type = rp::Reply::Type::integer;
  EXPECT_FALSE(rp::decode_entries(bad).has_value());
}

TEST(StreamIds, CompareNumerically) {
  EXPECT_LT(compare_stream_ids("9-0", "10-0"), 0);
  EXPECT_LT(compare_stream_ids("10-9", "10-10"), 0);
  EXPECT_EQ(compare_stream_ids("5-1", "5-1"), 0);
  EXPECT_GT(compare_stream_ids("5-1", ""), 0);
  EXPECT_EQ(StreamId::parse("")->str(), "0-0");
  EXPECT_EQ(StreamId::parse("0")->str(), "0-0");
  EXPECT_EQ(StreamId::parse("1700000000000-3")->seq, 3u);
  EXPECT_FALSE(StreamId::parse("12"));
  EXPECT_FALSE(StreamId::parse("a-1"));
  EXPECT_FALSE(StreamId::parse("1-"));
  EXPECT_FALSE(StreamId::parse("-1"));
  EXPECT_FALSE(StreamId::parse("1-2-3"));
}

TEST(KvConfig, ParsesStoreKeys) {
  auto root = agentd::core::load_yaml_string(
      "store:\n  data_dir: /x\n  redis: redis://:pw@127.0.0.1:6390/1\n  redis_prefix: \"a1:\"\n"
      "  redis_command_timeout: 500ms\n  cache_max_size: 8MiB\n  stream_max_len: 50\n");
  agentd::core::ConfigNode top(root, "");
  auto store = top.required("store");
  auto c = parse_kv_config(store);
  EXPECT_EQ(c.redis, "redis://:pw@127.0.0.1:6390/1");
  EXPECT_EQ(c.redis_prefix, "a1:");
  EXPECT_EQ(c.redis_command_timeout, 500ms);
  EXPECT_EQ(c.cache_max_bytes, 8u << 20);
  EXPECT_EQ(c.stream_max_len, 50u);
  EXPECT_EQ(store.get_string("data_dir"), "/x");
  EXPECT_NO_THROW(store.finish());  // every key above was read by someone

  auto zero = agentd::core::load_yaml_string("store:\n  redis_health_interval: 0s\n");
  agentd::core::ConfigNode top3(zero, "");
  EXPECT_THROW(parse_kv_config(top3.required("store")), agentd::ConfigError);

  auto tls = agentd::core::load_yaml_string(
      "store:\n  redis: rediss://:pw@redis.internal:6380/1\n  redis_tls:\n"
      "    ca_file: /etc/ca.pem\n    cert_file: /etc/c.pem\n    key_file: /etc/k.pem\n"
      "    server_name: redis.example\n    verify_peer: false\n");
  agentd::core::ConfigNode top4(tls, "");
  auto store4 = top4.required("store");
  auto t = parse_kv_config(store4);
  EXPECT_EQ(t.redis_tls.ca_file, "/etc/ca.pem");
  EXPECT_EQ(t.redis_tls.cert_file, "/etc/c.pem");
  EXPECT_EQ(t.redis_tls.key_file, "/etc/k.pem");
  EXPECT_EQ(t.redis_tls.server_name, "redis.example");
  EXPECT_FALSE(t.redis_tls.verify_peer);
  EXPECT_NO_THROW(store4.finish());
  EXPECT_TRUE(KvConfig{}.redis_tls.verify_peer) << "verification is on by default";

  // Each mistake is a ConfigError at the key's path.
  auto error_path = [](const std::string& yaml) {
    auto y = agentd::core::load_yaml_string(yaml);
    agentd::core::ConfigNode top5(y, "");
    try {
      parse_kv_config(top5.required("store"));
    } catch (const agentd::ConfigError& e) {
      return e.path();
    }
    return std::string("accepted");
  };
  EXPECT_EQ(error_path("store:\n  redis: rediss://h\n  redis_tls: { ca_file: /a, cafile: /b }\n"),
            "store.redis_tls.cafile");
  EXPECT_EQ(error_path("store:\n  redis: redis://h\n  redis_tls: { ca_file: /a }\n"),
            "store.redis_tls");
  EXPECT_EQ(error_path("store:\n  redis_tls: { ca_file: /a }\n"), "store.redis_tls");
  EXPECT_EQ(error_path("store:\n  redis: rediss://h\n  redis_tls: { cert_file: /c }\n"),
            "store.redis_tls.cert_file");
  EXPECT_EQ(error_path("store:\n  redis: rediss://h\n  redis_tls: { key_file: /k }\n"),
            "store.redis_tls.key_file");
  EXPECT_EQ(error_path("store:\n  redis: rediss://h\n  redis_tls: { verify_peer: maybe }\n"),
            "store.redis_tls.verify_peer");
  EXPECT_EQ(error_path("store:\n  redis: rediss://h\n  redis_tls: [a]\n"), "store.redis_tls");
  EXPECT_EQ(error_path("store:\n  redis: rediss://h\n  redis_tls: { server_name: a/b }\n"),
            "store.redis_tls.server_name");
  EXPECT_EQ(error_path("store:\n  redis: rediss://h\n"), "accepted");
}

// ---------------------------------------------------------------------------------------------
// In-process specifics.

asio::awaitable<void> lru_eviction(Kv& kv) {
  auto& c = kv.cache();
  std::string v(100, 'x');
  for (int i = 0; i < 10; ++i) co_await c.set("k" + std::to_string(i), v, 0ms);  // ~1030 bytes
  co_await c.get("k0");  // k0 is now the most recently used
  co_await c.set("k10", v, 0ms);
  auto k0 = co_await c.get("k0");
  auto k1 = co_await c.get("k1");
  auto k10 = co_await c.get("k10");
  CO_ASSERT(k0 && k1 && k10);
  EXPECT_TRUE(k0->has_value()) << "recently used entries stay";
  EXPECT_FALSE(k1->has_value()) << "the least recently used entry goes first";
  EXPECT_TRUE(k10->has_value());
  auto huge = co_await c.set("huge", std::string(2000, 'y'), 0ms);
  CO_ASSERT(huge.has_value());
  auto got = co_await c.get("huge");
  CO_ASSERT(got.has_value());
  EXPECT_FALSE(got->has_value()) << "a value over the cap is not kept";
  // Counters are never evicted by cache pressure.
  co_await c.add("budget", 5, 0ms);
  for (int i = 0; i < 50; ++i) co_await c.set("z" + std::to_string(i), v, 0ms);
  auto n = co_await c.counter("budget");
  CO_ASSERT(n.has_value());
  EXPECT_EQ(*n, 5);
}

TEST(MemoryKv, EvictsLeastRecentlyUsedBeyondItsCap) {
  asio::io_context io;
  KvConfig c;
  c.cache_max_bytes = 1100;
  agentd::core::Registry metrics;
  auto kv = make_memory_kv(io.get_executor(), c, &metrics);
  run(io, lru_eviction(*kv));
  auto bytes = metrics.gauge("agentd_store_cache_bytes", "").value();
  EXPECT_GT(bytes, 1000);
  EXPECT_LE(bytes, 1100);
}

asio::awaitable<void> memory_max_len(Kv& kv) {
  for (int i = 0; i < 20; ++i) co_await kv.streams().append("s", std::to_string(i));
  auto r = co_await kv.streams().read("s", "", 100);
  CO_ASSERT(r.has_value());
  CO_ASSERT(r->size() == 5u);
  EXPECT_EQ(r->front().payload, "15");
}

TEST(MemoryKv, CapsStreamLength) {
  asio::io_context io;
  KvConfig c;
  c.stream_max_len = 5;
  auto kv = make_memory_kv(io.get_executor(), c);
  EXPECT_EQ(kv->backend(), "memory");
  EXPECT_TRUE(kv->health().ok());
  run(io, memory_max_len(*kv));
}

TEST(MakeKv, EmptyRedisMeansInProcess) {
  asio::io_context io;
  KvConfig c;
  auto kv = make_kv(io.get_executor(), c);
  EXPECT_EQ(kv->backend(), "memory");
}

// ---------------------------------------------------------------------------------------------
// Redis specifics and faults.

double metric(agentd::core::Registry& m, const char* name, const char* conn) {
  return m.counter(name, "", {{"connection", conn}}).value();
}

asio::awaitable<void> pipelined(Kv& kv, agentd::core::Registry* m, const RedisServer* server) {
  CO_ASSERT(co_await kv.wait_ready(5s));
  double cmds0 = metric(*m, "agentd_store_redis_commands_total", "commands");
  double writes0 = metric(*m, "agentd_store_redis_writes_total", "commands");
  int wrong = 0;
  Group g(co_await asio::this_coro::executor);
  for (int i = 0; i < 2000; ++i) g.spawn(set_then_get(kv, i, &wrong));
  co_await g.wait();
  EXPECT_EQ(wrong, 0);
  double cmds = metric(*m, "agentd_store_redis_commands_total", "commands") - cmds0;
  double writes = metric(*m, "agentd_store_redis_writes_total", "commands") - writes0;
  EXPECT_GE(cmds, 4000);
  EXPECT_LT(writes, cmds / 20) << "commands were not pipelined: " << writes << " writes for "
                                << cmds << " commands";
  // One command connection and one for live stream reads, whatever the number of callers.
  auto list = server->cli({"CLIENT", "LIST"});
  int ours = 0, streams = 0;
  std::istringstream in(list);
  for (std::string line; std::getline(in, line);) {
    if (line.find(" name=agentd ") != std::string::npos) ++ours;
    if (line.find(" name=agentd-streams ") != std::string::npos) ++streams;
  }
  EXPECT_EQ(ours, 1) << list;
  EXPECT_EQ(streams, 1) << list;

  // A take is one round trip (EVALSHA); after SCRIPT FLUSH, EVALSHA + EVAL once, then one again.
  co_await kv.cache().take("warm", 1, 10, 60s);
  double before = metric(*m, "agentd_store_redis_commands_total", "commands");
  auto t = co_await kv.cache().take("one", 1, 10, 60s);
  CO_ASSERT(t && t->taken);
  EXPECT_EQ(metric(*m, "agentd_store_redis_commands_total", "commands") - before, 1);
  server->cli({"SCRIPT", "FLUSH"});
  before = metric(*m, "agentd_store_redis_commands_total", "commands");
  t = co_await kv.cache().take("one", 1, 10, 60s);
  CO_ASSERT(t && t->taken);
  EXPECT_EQ(t->value, 2);
  EXPECT_EQ(metric(*m, "agentd_store_redis_commands_total", "commands") - before, 2);
  before = metric(*m, "agentd_store_redis_commands_total", "commands");
  t = co_await kv.cache().take("one", 1, 10, 60s);
  CO_ASSERT(t && t->taken);
  EXPECT_EQ(metric(*m, "agentd_store_redis_commands_total", "commands") - before, 1);
}

TEST(Redis, PipelinesManyCallersOnOneConnection) {
  RedisServer server;
  ASSERT_TRUE(server.start());
  asio::io_context io;
  agentd::core::Registry metrics;
  auto kv = make_redis_kv(io.get_executor(), redis_config(server.url()), &metrics);
  run(io, pipelined(*kv, &metrics, &server));
  kv->stop();
}

asio::awaitable<void> set_value(Kv& kv, std::string key, std::string value) {
  CO_ASSERT(co_await kv.wait_ready(5s));
  auto r = co_await kv.cache().set(key, value, 0ms);
  CO_ASSERT(r.has_value());
}

TEST(Redis, SelectsTheDatabaseAndPrefixesKeys) {
  RedisServer server;
  ASSERT_TRUE(server.start());
  asio::io_context io;
  auto config = redis_config(server.url("", 3));
  config.redis_prefix = "tenant1:";
  auto kv = make_redis_kv(io.get_executor(), config);
  run(io, set_value(*kv, "greeting", "hello"));
  EXPECT_EQ(server.cli({"-n", "3", "GET", "tenant1:v:greeting"}), "hello\n");
  EXPECT_EQ(server.cli({"-n", "0", "GET", "tenant1:v:greeting"}), "\n");
  kv->stop();
}

asio::awaitable<void> expect_auth_failure(Kv& kv, std::string needle) {
  bool ready = co_await kv.wait_ready(1500ms);
  EXPECT_FALSE(ready);
  auto h = kv.health();
  EXPECT_FALSE(h.ok());
  EXPECT_NE(h.detail.find(needle), std::string::npos) << h.detail;
  auto t0 = Clock::now();
  auto r = co_await kv.cache().get("k");
  EXPECT_LT(Clock::now() - t0, 100ms) << "must fail fast";
  CO_ASSERT(!r.has_value());
  EXPECT_EQ(r.error().code, Errc::unavailable);
  EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
}

asio::awaitable<void> expect_works(Kv& kv) {
  CO_ASSERT(co_await kv.wait_ready(5s));
  auto r = co_await kv.cache().set("k", "v", 0ms);
  EXPECT_TRUE(r.has_value());
  EXPECT_TRUE(kv.health().ok()) << kv.health().detail;
}

TEST(Redis, WrongPasswordIsAClearError) {
  RedisServer server({"--requirepass", "right-password-1"});
  ASSERT_TRUE(server.start());
  asio::io_context io;
  auto wrong = make_redis_kv(io.get_executor(), redis_config(server.url(":not-it")));
  run(io, expect_auth_failure(*wrong, "WRONGPASS"));
  auto none = make_redis_kv(io.get_executor(), redis_config(server.url()));
  run(io, expect_auth_failure(*none, "requires a password"));
  auto right = make_redis_kv(io.get_executor(), redis_config(server.url(":right-password-1")));
  run(io, expect_works(*right));
  auto user = make_redis_kv(io.get_executor(), redis_config(server.url("default:right-password-1")));
  run(io, expect_works(*user));
  for (auto* kv : {wrong.get(), none.get(), right.get(), user.get()}) kv->stop();
}

TEST(Redis, BadUrlIsAClearError) {
  asio::io_context io;
  auto message = [&](const std::string& url) {
    try {
      make_kv(io.get_executor(), redis_config(url));
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message("localhost:6379").find("redis[s]://[user:password@]host[:port][/db]"),
            std::string::npos);
  EXPECT_NE(message("redis://localhost:99999").find("port"), std::string::npos);
  EXPECT_NE(message("rediss://localhost:99999").find("port"), std::string::npos);
}

// Nobody listens: the bare backend fails fast, the wrapper serves without Redis.
asio::awaitable<void> unreachable(Kv& bare, Kv& wrapped) {
  co_await sleep_for(50ms);  // let the first connection attempts fail
  auto t0 = Clock::now();
  auto r = co_await bare.cache().get("k");
  EXPECT_LT(Clock::now() - t0, 100ms);
  CO_ASSERT(!r.has_value());
  EXPECT_EQ(r.error().code, Errc::unavailable);
  EXPECT_NE(r.error().message.find("not connected"), std::string::npos) << r.error().message;
  EXPECT_EQ(bare.health().state, Health::State::down);

  auto g = co_await wrapped.cache().get("k");
  CO_ASSERT(g.has_value());
  EXPECT_FALSE(g->has_value());
  EXPECT_TRUE((co_await wrapped.cache().set("k", "v", 0ms)).has_value());
  for (int i = 1; i <= 3; ++i) {
    auto t = co_await wrapped.counters().take("rl", 1, 3, 60s);
    EXPECT_TRUE(t.taken);
    EXPECT_EQ(t.value, i);
  }
  EXPECT_FALSE((co_await wrapped.counters().take("rl", 1, 3, 60s)).taken);
  auto h = wrapped.health();
  EXPECT_EQ(h.state, Health::State::degraded);
  EXPECT_NE(h.detail.find("unreachable"), std::string::npos) << h.detail;
  auto cas = co_await wrapped.cache().compare_and_set("c", std::nullopt, "v", 0ms);
  CO_ASSERT(!cas.has_value());
  EXPECT_EQ(cas.error().code, Errc::unavailable);
  // The strict cache tells the outage from a miss (the sandbox manager's run registry).
  auto sg = co_await wrapped.strict_cache().get("k");
  CO_ASSERT(!sg.has_value());
  EXPECT_EQ(sg.error().code, Errc::unavailable);
  auto ss = co_await wrapped.strict_cache().set("k", "v", 1000ms);
  CO_ASSERT(!ss.has_value());
  EXPECT_EQ(ss.error().code, Errc::unavailable);
  auto app = co_await wrapped.streams().append("s", "x");
  CO_ASSERT(!app.has_value());
  EXPECT_EQ(app.error().code, Errc::unavailable);
}

TEST(Redis, UnreachableServerFailsFastOrDegrades) {
  asio::io_context io;
  auto url = "redis://127.0.0.1:" + std::to_string(static_cast<int>(agentd::test::free_loopback_port()));
  auto bare = make_redis_kv(io.get_executor(), redis_config(url));
  auto wrapped = make_kv(io.get_executor(), redis_config(url));
  run(io, unreachable(*bare, *wrapped));
  bare->stop();
  wrapped->stop();
  io.restart();
  io.run_for(2s);
  EXPECT_TRUE(io.stopped());
}

// Captures log lines (the wrapper's warnings).
struct LogCapture {
  std::ostringstream out;
  std::shared_ptr<spdlog::logger> old = spdlog::default_logger();
  LogCapture() {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
    auto logger = std::make_shared<spdlog::logger>("capture", sink);
    logger->set_level(spdlog::level::info);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(old); }
  int count(const std::string& needle) {
    auto s = out.str();
    int n = 0;
    for (auto p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
    return n;
  }
};

asio::awaitable<void> wait_health(Kv& kv, Health::State state, std::chrono::milliseconds limit) {
  auto deadline = Clock::now() + limit;
  while (kv.health().state != state && Clock::now() < deadline) co_await sleep_for(10ms);
}

asio::awaitable<void> in_flight_get(Kv& kv, int* failed, int* ok) {
  auto r = co_await kv.cache().get("k");
  if (r) {
    ++*ok;
  } else {
    EXPECT_TRUE(r.error().code == Errc::unavailable || r.error().code == Errc::timeout)
        << r.error().message;
    ++*failed;
  }
}

asio::awaitable<void> kill_and_restart(RedisServer* server, Kv& bare, Kv& wrapped, LogCapture* log) {
  CO_ASSERT(co_await bare.wait_ready(5s));
  CO_ASSERT(co_await wrapped.wait_ready(5s));
  EXPECT_TRUE((co_await wrapped.cache().set("k", "before", 0ms)).has_value());
  for (int i = 0; i < 3; ++i) EXPECT_TRUE((co_await wrapped.counters().take("budget", 100, 500, 1h)).taken);
  auto sub = bare.streams().subscribe("events", "");
  CO_ASSERT(sub.has_value());
  auto first = co_await bare.streams().append("events", "one");
  CO_ASSERT(first.has_value());
  auto got = co_await (*sub)->next(10, 2s);
  CO_ASSERT(got && got->size() == 1u);
  EXPECT_TRUE(bare.health().ok());
  EXPECT_TRUE(wrapped.health().ok());

  // Kill it while calls are in flight: each completes (fails), none hangs.
  int failed = 0, ok = 0;
  Group g(co_await asio::this_coro::executor);
  for (int i = 0; i < 200; ++i) g.spawn(in_flight_get(bare, &failed, &ok));
  server->kill();
  g.spawn(in_flight_get(bare, &failed, &ok));
  co_await g.wait();
  EXPECT_EQ(failed + ok, 201);
  EXPECT_GE(failed, 1);

  co_await wait_health(wrapped, Health::State::degraded, 2s);
  EXPECT_EQ(wrapped.health().state, Health::State::degraded);
  EXPECT_EQ(bare.health().state, Health::State::down);
  // A subscriber learns it at once instead of waiting forever.
  auto t0 = Clock::now();
  auto broken = co_await (*sub)->next(10, 10s);
  EXPECT_FALSE(broken.has_value());
  EXPECT_LT(Clock::now() - t0, 2s);

  // Bare: fails fast. Wrapped: misses, drops, counts in-process from the last value seen (300).
  t0 = Clock::now();
  auto r = co_await bare.cache().get("k");
  EXPECT_LT(Clock::now() - t0, 100ms);
  CO_ASSERT(!r.has_value());
  EXPECT_EQ(r.error().code, Errc::unavailable);
  auto miss = co_await wrapped.cache().get("k");
  CO_ASSERT(miss.has_value());
  EXPECT_FALSE(miss->has_value());
  EXPECT_TRUE((co_await wrapped.cache().set("k", "during", 0ms)).has_value());
  auto t1 = co_await wrapped.counters().take("budget", 100, 500, 1h);
  EXPECT_TRUE(t1.taken);
  EXPECT_EQ(t1.value, 400);
  auto t2 = co_await wrapped.counters().take("budget", 100, 500, 1h);
  EXPECT_TRUE(t2.taken);
  EXPECT_EQ(t2.value, 500);
  EXPECT_FALSE((co_await wrapped.counters().take("budget", 100, 500, 1h)).taken);
  EXPECT_EQ(co_await wrapped.counters().add("budget", -50, 1h), 450);
  for (int i = 0; i < 20; ++i) co_await wrapped.cache().get("k");
  co_await sleep_for(700ms);  // several reconnect attempts fail meanwhile
  EXPECT_EQ(log->count("is unreachable"), 1) << log->out.str();

  // Restart: both reconnect by themselves.
  CO_ASSERT(server->start());
  co_await wait_health(bare, Health::State::ok, 8s);
  co_await wait_health(wrapped, Health::State::ok, 8s);
  EXPECT_TRUE(bare.health().ok()) << bare.health().detail;
  EXPECT_TRUE(wrapped.health().ok()) << wrapped.health().detail;
  EXPECT_EQ(log->count("reachable again"), 1) << log->out.str();
  EXPECT_TRUE((co_await bare.cache().set("k", "after", 0ms)).has_value());
  auto back = co_await wrapped.cache().get("k");
  CO_ASSERT(back && back->has_value());
  EXPECT_EQ(**back, "after");
  // Counters are on Redis again (the restarted server is empty).
  auto t3 = co_await wrapped.counters().take("budget", 100, 500, 1h);
  EXPECT_TRUE(t3.taken);
  EXPECT_EQ(t3.value, 100);
  // The subscription resumes: the next entry arrives live.
  auto second = co_await wrapped.streams().append("events", "two");
  CO_ASSERT(second.has_value());
  auto resumed = co_await (*sub)->next(10, 3s);
  CO_ASSERT(resumed.has_value());
  CO_ASSERT(resumed->size() == 1u);
  EXPECT_EQ((*resumed)[0].payload, "two");
}

TEST(Redis, KilledAndRestartedServer) {
  LogCapture log;
  RedisServer server;
  ASSERT_TRUE(server.start());
  asio::io_context io;
  auto bare = make_redis_kv(io.get_executor(), redis_config(server.url()));
  auto wrapped = make_kv(io.get_executor(), redis_config(server.url()));
  run(io, kill_and_restart(&server, *bare, *wrapped, &log), 40s);
  bare->stop();
  wrapped->stop();
  io.restart();
  io.run_for(2s);
  EXPECT_TRUE(io.stopped());
}

// A server that stops answering (SIGSTOP) without closing: calls time out, the health check
// drops the connection, the wrapper degrades; after SIGCONT everything recovers.
asio::awaitable<void> hung_server(RedisServer* server, Kv& bare, Kv& wrapped) {
  CO_ASSERT(co_await bare.wait_ready(5s));
  CO_ASSERT(co_await wrapped.wait_ready(5s));
  EXPECT_TRUE((co_await bare.cache().set("k", "v1", 0ms)).has_value());
  server->signal(SIGSTOP);
  auto t0 = Clock::now();
  auto r = co_await bare.cache().get("k");
  auto took = Clock::now() - t0;
  CO_ASSERT(!r.has_value());
  EXPECT_TRUE(r.error().code == Errc::timeout || r.error().code == Errc::unavailable)
      << r.error().message;
  EXPECT_LT(took, 1500ms);
  auto w = co_await wrapped.cache().get("k");
  CO_ASSERT(w.has_value());
  EXPECT_FALSE(w->has_value());
  auto t = co_await wrapped.counters().take("n", 1, 5, 60s);
  EXPECT_TRUE(t.taken);
  co_await wait_health(wrapped, Health::State::degraded, 5s);
  EXPECT_EQ(wrapped.health().state, Health::State::degraded);
  server->signal(SIGCONT);
  co_await wait_health(bare, Health::State::ok, 10s);
  co_await wait_health(wrapped, Health::State::ok, 10s);
  EXPECT_TRUE(bare.health().ok()) << bare.health().detail;
  // Late replies to the calls that timed out are not handed to later callers.
  for (int i = 0; i < 20; ++i) {
    auto key = "after" + std::to_string(i);
    auto s = co_await bare.cache().set(key, key, 0ms);
    CO_ASSERT(s.has_value());
    auto g = co_await bare.cache().get(key);
    CO_ASSERT(g && g->has_value());
    EXPECT_EQ(**g, key);
  }
}

TEST(Redis, HungServerTimesOutAndRecovers) {
  RedisServer server;
  ASSERT_TRUE(server.start());
  asio::io_context io;
  auto config = redis_config(server.url());
  config.redis_command_timeout = 400ms;
  config.redis_health_interval = 200ms;
  config.redis_connect_timeout = 400ms;
  auto bare = make_redis_kv(io.get_executor(), config);
  auto wrapped = make_kv(io.get_executor(), config);
  run(io, hung_server(&server, *bare, *wrapped), 40s);
  server.signal(SIGCONT);
  bare->stop();
  wrapped->stop();
  io.restart();
  io.run_for(2s);
  EXPECT_TRUE(io.stopped());
}

// ---------------------------------------------------------------------------------------------
// rediss://: a real redis-server with --tls-port, mutual TLS with certificates made at start.

// Runs `work` with one bare and one wrapped client, then stops both and checks nothing is left.
template <class Work>
void with_clients(const KvConfig& config, Work work, std::chrono::milliseconds limit = 30s) {
  asio::io_context io;
  auto bare = make_redis_kv(io.get_executor(), config);
  auto wrapped = make_kv(io.get_executor(), config);
  run(io, work(*bare, *wrapped), limit);
  bare->stop();
  wrapped->stop();
  io.restart();
  io.run_for(3s);
  EXPECT_TRUE(io.stopped()) << "background work still running after stop()";
}

// The bare client refuses with `needle` in its error and health; the wrapper serves degraded.
asio::awaitable<void> tls_refused(Kv& bare, Kv& wrapped, std::string needle) {
  co_await expect_auth_failure(bare, needle);
  EXPECT_EQ(bare.health().state, Health::State::down);
  co_await wait_health(wrapped, Health::State::degraded, 2s);
  EXPECT_EQ(wrapped.health().state, Health::State::degraded);
  EXPECT_NE(wrapped.health().detail.find(needle), std::string::npos) << wrapped.health().detail;
  auto miss = co_await wrapped.cache().get("k");
  CO_ASSERT(miss.has_value());
  EXPECT_FALSE(miss->has_value());
  EXPECT_TRUE((co_await wrapped.cache().set("k", "v", 0ms)).has_value());
  EXPECT_TRUE((co_await wrapped.counters().take("n", 1, 5, 60s)).taken);
}

TEST(RedisTls, MutualTlsWorksAndSaysSo) {
  RedisServer server({}, true);
  ASSERT_TRUE(server.start());
  with_clients(tls_config(server.url("", 3)), [&](Kv& bare, Kv& wrapped) -> asio::awaitable<void> {
    co_await expect_works(bare);
    co_await expect_works(wrapped);
    EXPECT_NE(bare.health().detail.find("db 3 over TLS"), std::string::npos) << bare.health().detail;
    CO_ASSERT((co_await bare.cache().set("over-tls", "yes", 0ms)).has_value());
    auto got = co_await wrapped.cache().get("over-tls");
    CO_ASSERT(got && got->has_value());
    EXPECT_EQ(**got, "yes");
  });
  // The value is where redis-cli, over TLS too, finds it.
  EXPECT_NE(server.cli({"-n", "3", "GET", "agentd:v:over-tls"}).find("yes"), std::string::npos);
}

TEST(RedisTls, WrongCaIsAClearErrorAndDegrades) {
  RedisServer server({}, true);
  ASSERT_TRUE(server.start());
  auto config = tls_config(server.url());
  config.redis_tls.ca_file = other_cert().cert_file;  // trusts another CA only
  with_clients(config, [](Kv& bare, Kv& wrapped) {
    return tls_refused(bare, wrapped, "certificate verify failed");
  });
}

TEST(RedisTls, CertificateForAnotherNameIsRefused) {
  RedisServer server({}, true);
  ASSERT_TRUE(server.start());
  auto config = tls_config(server.url());
  config.redis_tls.server_name = "redis.example.net";  // the certificate names 127.0.0.1, localhost
  with_clients(config, [](Kv& bare, Kv& wrapped) {
    return tls_refused(bare, wrapped, "hostname mismatch");
  });
  // The name the certificate does carry is accepted.
  config.redis_tls.server_name = "localhost";
  with_clients(config, [](Kv& bare, Kv&) { return expect_works(bare); });
}

TEST(RedisTls, WithoutAClientCertificateTheServerRefuses) {
  RedisServer server({}, true);
  ASSERT_TRUE(server.start());
  auto config = tls_config(server.url());
  config.redis_tls.cert_file.clear();
  config.redis_tls.key_file.clear();
  with_clients(config, [](Kv& bare, Kv& wrapped) -> asio::awaitable<void> {
    CO_ASSERT(!co_await bare.wait_ready(1500ms));
    EXPECT_EQ(bare.health().state, Health::State::down) << bare.health().detail;
    co_await wait_health(wrapped, Health::State::degraded, 2s);
    EXPECT_EQ(wrapped.health().state, Health::State::degraded);
  });
}

TEST(RedisTls, PlainUrlOnATlsPortOrTlsOnAPlainPortIsAClearError) {
  RedisServer tls_server({}, true);
  ASSERT_TRUE(tls_server.start());
  auto plain_url = "redis://127.0.0.1:" + std::to_string(tls_server.port()) + "/0";
  with_clients(redis_config(plain_url), [](Kv& bare, Kv& wrapped) {
    return tls_refused(bare, wrapped, "use rediss://");
  });
  RedisServer plain_server;
  ASSERT_TRUE(plain_server.start());
  auto tls_url = "rediss://127.0.0.1:" + std::to_string(plain_server.port()) + "/0";
  // redis-server reads the ClientHello as the start of an inline command and waits for more.
  with_clients(tls_config(tls_url), [](Kv& bare, Kv& wrapped) {
    return tls_refused(bare, wrapped, "the TLS handshake timed out after 1000 ms");
  });
}

TEST(RedisTls, UnreadableFilesNameTheirKey) {
  asio::io_context io;
  auto message = [&](const KvConfig& c) {
    try {
      make_kv(io.get_executor(), c);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  auto config = tls_config("rediss://127.0.0.1:1/0");
  config.redis_tls.ca_file = "/nonexistent/ca.pem";
  EXPECT_NE(message(config).find("store.redis_tls.ca_file: cannot load /nonexistent/ca.pem"),
            std::string::npos)
      << message(config);
  config = tls_config("rediss://127.0.0.1:1/0");
  config.redis_tls.key_file = other_cert().key_file;  // not the certificate's key
  EXPECT_NE(message(config).find("store.redis_tls.key_file"), std::string::npos) << message(config);
  config = tls_config("rediss://127.0.0.1:1/0");
  config.redis_tls.cert_file = test_cert().key_file;  // not a certificate
  EXPECT_NE(message(config).find("store.redis_tls.cert_file"), std::string::npos) << message(config);
}

// A server that accepts the TCP connection but never answers the TLS handshake (SIGSTOP): the
// connect deadline covers the handshake; after SIGCONT the client connects by itself.
TEST(RedisTls, HungHandshakeTimesOutAndRecovers) {
  RedisServer server({}, true);
  ASSERT_TRUE(server.start());
  server.signal(SIGSTOP);
  auto config = tls_config(server.url());
  config.redis_connect_timeout = 500ms;
  with_clients(config, [&](Kv& bare, Kv& wrapped) -> asio::awaitable<void> {
    auto t0 = Clock::now();
    EXPECT_FALSE(co_await bare.wait_ready(1200ms));
    EXPECT_LT(Clock::now() - t0, 1500ms);
    EXPECT_NE(bare.health().detail.find("the TLS handshake timed out after 500 ms"),
              std::string::npos)
        << bare.health().detail;
    co_await wait_health(wrapped, Health::State::degraded, 2s);
    EXPECT_EQ(wrapped.health().state, Health::State::degraded);
    server.signal(SIGCONT);
    co_await wait_health(bare, Health::State::ok, 10s);
    co_await wait_health(wrapped, Health::State::ok, 10s);
    EXPECT_TRUE(bare.health().ok()) << bare.health().detail;
    EXPECT_TRUE((co_await wrapped.cache().set("k", "v", 0ms)).has_value());
    auto got = co_await bare.cache().get("k");
    CO_ASSERT(got && got->has_value());
    EXPECT_EQ(**got, "v");
  });
  server.signal(SIGCONT);
}

TEST(RedisTls, KilledAndRestartedServer) {
  LogCapture log;
  RedisServer server({}, true);
  ASSERT_TRUE(server.start());
  auto config = tls_config(server.url());
  with_clients(config, [&](Kv& bare, Kv& wrapped) {
    return kill_and_restart(&server, bare, wrapped, &log);
  }, 40s);
}

TEST(RedisTls, HungServerTimesOutAndRecovers) {
  RedisServer server({}, true);
  ASSERT_TRUE(server.start());
  auto config = tls_config(server.url());
  config.redis_command_timeout = 400ms;
  config.redis_health_interval = 200ms;
  config.redis_connect_timeout = 400ms;
  with_clients(config, [&](Kv& bare, Kv& wrapped) {
    return hung_server(&server, bare, wrapped);
  }, 40s);
  server.signal(SIGCONT);
}

// A caller that gives up by itself (cancellation, e.g. its own timeout) returns at once; the
// reply to its command, which still comes, goes to nobody, not to the next caller.
asio::awaitable<void> cancelled_call(RedisServer* server, Kv& kv) {
  CO_ASSERT(co_await kv.wait_ready(5s));
  CO_ASSERT((co_await kv.cache().set("a", "value-a", 0ms)).has_value());
  CO_ASSERT((co_await kv.cache().set("b", "value-b", 0ms)).has_value());
  server->signal(SIGSTOP);
  auto t0 = Clock::now();
  auto gave_up = co_await agentd::core::with_timeout(kv.cache().get("a"), 50ms);
  EXPECT_LT(Clock::now() - t0, 400ms);
  CO_ASSERT(!gave_up.has_value());
  EXPECT_EQ(gave_up.error(), make_error_code(Errc::timeout));
  server->signal(SIGCONT);
  auto b = co_await kv.cache().get("b");
  CO_ASSERT(b.has_value());
  CO_ASSERT(b->has_value());
  EXPECT_EQ(**b, "value-b");
}

TEST(Redis, CancelledCallDropsItsLateReply) {
  RedisServer server;
  ASSERT_TRUE(server.start());
  asio::io_context io;
  auto kv = make_redis_kv(io.get_executor(), redis_config(server.url()));
  run(io, cancelled_call(&server, *kv));
  server.signal(SIGCONT);
  kv->stop();
}

// More than the socket buffers hold while the server reads nothing: what the kernel does not
// take at once is written asynchronously, and the loop keeps running meanwhile.
asio::awaitable<void> set_big(Kv& kv, int i, const std::string* value, int* failed) {
  auto r = co_await kv.cache().set("big" + std::to_string(i), *value, 0ms);
  if (!r) ++*failed;
}

asio::awaitable<void> writes_beyond_the_socket_buffers(RedisServer* server, Kv& kv) {
  CO_ASSERT(co_await kv.wait_ready(5s));
  server->signal(SIGSTOP);
  const std::string big(256 * 1024, 'x');
  int failed = 0;
  Group g(co_await asio::this_coro::executor);
  for (int i = 0; i < 80; ++i) g.spawn(set_big(kv, i, &big, &failed));  // 20 MiB
  auto t0 = Clock::now();
  co_await sleep_for(50ms);
  EXPECT_LT(Clock::now() - t0, 500ms) << "the event loop was blocked";
  server->signal(SIGCONT);
  co_await g.wait();
  EXPECT_EQ(failed, 0);
  auto r = co_await kv.cache().get("big79");
  CO_ASSERT(r.has_value());
  CO_ASSERT(r->has_value());
  EXPECT_EQ(**r, big);
}

TEST(Redis, WritesBeyondTheSocketBuffersDoNotBlockTheLoop) {
  RedisServer server;
  ASSERT_TRUE(server.start());
  asio::io_context io;
  auto kv = make_redis_kv(io.get_executor(), redis_config(server.url()));
  run(io, writes_beyond_the_socket_buffers(&server, *kv), 20s);
  server.signal(SIGCONT);
  kv->stop();
}

}  // namespace
