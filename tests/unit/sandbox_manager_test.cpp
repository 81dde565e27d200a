// The sandbox owner manager over a recording backend: one sandbox per owner, concurrent
// acquires share one creation, release kills, pre-warm, leftovers, the alive limit, sessions'
// sandboxes shared by their intents and killed when idle, and peers sharing one backend
// account through a run registry.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <algorithm>
#include <map>
#include <set>

#include "agentd/core/metrics.hpp"
#include "agentd/sandbox/manager.hpp"
#include "support/coro.hpp"

namespace agentd::sandbox {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

// Records calls; creation takes `create_delay`; `fail_create` makes it fail.
class RecordingBackend final : public Backend {
 public:
  explicit RecordingBackend(asio::any_io_executor ex) : ex_(ex) {}
  std::string_view name() const noexcept override { return "recording"; }
  asio::awaitable<Result<Info>> create(CreateOptions o) override {
    ++creates;
    asio::steady_timer t(ex_, create_delay);
    co_await t.async_wait(asio::use_awaitable);
    if (fail_create) co_return Error{Errc::unavailable, "backend down", std::nullopt};
    Info i;
    i.id = "sbx" + std::to_string(creates);
    i.backend = "recording";
    i.metadata = o.metadata;
    i.owner = o.owner;
    alive.push_back(i);
    co_return i;
  }
  asio::awaitable<Result<void>> kill(std::string id) override {
    killed.push_back(id);
    auto before = alive.size();
    std::erase_if(alive, [&](const Info& i) { return i.id == id; });
    if (before == alive.size()) co_return Error{Errc::not_found, "no sandbox " + id, std::nullopt};
    co_return Result<void>();
  }
  asio::awaitable<Result<void>> set_timeout(std::string id, milliseconds t) override {
    timeouts.emplace_back(id, t);
    for (const auto& i : alive) {
      if (i.id == id) co_return Result<void>();
    }
    co_return Error{Errc::not_found, "no sandbox " + id, std::nullopt};
  }
  asio::awaitable<Result<std::vector<Info>>> list() override { co_return alive; }
  asio::awaitable<Result<void>> pause(std::string) override {
    co_return Error{Errc::conflict, "no", std::nullopt};
  }
  asio::awaitable<Result<void>> resume(std::string) override {
    co_return Error{Errc::conflict, "no", std::nullopt};
  }
  asio::awaitable<Result<std::unique_ptr<Process>>> start(std::string, ExecOptions) override {
    co_return Error{Errc::conflict, "not in this test", std::nullopt};
  }
  asio::awaitable<Result<std::string>> read_file(std::string, std::string, std::size_t) override {
    co_return Error{Errc::not_found, "none", std::nullopt};
  }
  asio::awaitable<Result<void>> write_file(std::string, std::string, std::string) override {
    co_return Result<void>();
  }
  asio::awaitable<Result<std::vector<FileEntry>>> list_files(std::string, std::string, int) override {
    co_return std::vector<FileEntry>{};
  }
  asio::awaitable<Result<void>> remove(std::string, std::string) override { co_return Result<void>(); }
  std::optional<std::string> desktop_url(const std::string&) const override { return std::nullopt; }

  asio::any_io_executor ex_;
  std::chrono::milliseconds create_delay{20};
  bool fail_create = false;
  int creates = 0;
  std::vector<Info> alive;
  std::vector<std::string> killed;
  std::vector<std::pair<std::string, milliseconds>> timeouts;
};

// Lets two managers (two instances) share one RecordingBackend (one E2B account).
class SharedBackend final : public Backend {
 public:
  explicit SharedBackend(RecordingBackend& b) : b_(b) {}
  std::string_view name() const noexcept override { return "shared"; }
  asio::awaitable<Result<Info>> create(CreateOptions o) override { co_return co_await b_.create(std::move(o)); }
  asio::awaitable<Result<void>> kill(std::string id) override { co_return co_await b_.kill(std::move(id)); }
  asio::awaitable<Result<void>> set_timeout(std::string id, milliseconds t) override {
    co_return co_await b_.set_timeout(std::move(id), t);
  }
  asio::awaitable<Result<std::vector<Info>>> list() override { co_return co_await b_.list(); }
  asio::awaitable<Result<void>> pause(std::string id) override { co_return co_await b_.pause(std::move(id)); }
  asio::awaitable<Result<void>> resume(std::string id) override { co_return co_await b_.resume(std::move(id)); }
  asio::awaitable<Result<std::unique_ptr<Process>>> start(std::string id, ExecOptions o) override {
    co_return co_await b_.start(std::move(id), std::move(o));
  }
  asio::awaitable<Result<std::string>> read_file(std::string id, std::string p, std::size_t n) override {
    co_return co_await b_.read_file(std::move(id), std::move(p), n);
  }
  asio::awaitable<Result<void>> write_file(std::string id, std::string p, std::string c) override {
    co_return co_await b_.write_file(std::move(id), std::move(p), std::move(c));
  }
  asio::awaitable<Result<std::vector<FileEntry>>> list_files(std::string id, std::string p, int d) override {
    co_return co_await b_.list_files(std::move(id), std::move(p), d);
  }
  asio::awaitable<Result<void>> remove(std::string id, std::string p) override {
    co_return co_await b_.remove(std::move(id), std::move(p));
  }
  std::optional<std::string> desktop_url(const std::string& id) const override { return b_.desktop_url(id); }

 private:
  RecordingBackend& b_;
};

// Runs announced with a TTL on the io_context's clock; `unreachable` answers "cannot tell".
class MemoryRuns final : public RunRegistry {
 public:
  asio::awaitable<void> announce(const std::string& run, milliseconds ttl) override {
    if (muted.contains(run)) co_return;
    until[run] = std::chrono::steady_clock::now() + ttl;
    last_ttl = ttl;
    ++announces;
    co_return;
  }
  asio::awaitable<std::optional<bool>> alive(const std::string& run) override {
    if (unreachable) co_return std::nullopt;
    auto it = until.find(run);
    co_return it != until.end() && it->second > std::chrono::steady_clock::now();
  }
  asio::awaitable<void> withdraw(const std::string& run) override {
    until.erase(run);
    co_return;
  }
  std::map<std::string, std::chrono::steady_clock::time_point> until;
  milliseconds last_ttl{0};
  int announces = 0;
  bool unreachable = false;
  std::set<std::string> muted;  // runs whose announces are lost (a dead process)
};

struct Fixture {
  asio::io_context io;
  core::Registry metrics;
  RecordingBackend* backend = nullptr;
  std::unique_ptr<Manager> manager;
  explicit Fixture(std::size_t max = 32) {
    auto b = std::make_unique<RecordingBackend>(io.get_executor());
    backend = b.get();
    Config c;
    c.enabled = true;
    c.max_sandboxes = max;
    manager = make_manager(io.get_executor(), c, std::move(b), metrics);
  }
};

// GCC 12 miscompiles temporaries (braced, or std::string from a literal) in co_await
// arguments: every call goes through locals here.
asio::awaitable<Result<Manager::Acquired>> acq(Manager& m, const char* owner) {
  std::string o = owner;
  CreateOptions opts;
  co_return co_await m.acquire(o, opts);
}

asio::awaitable<Result<Manager::Acquired>> acq_as(Manager& m, const char* owner, const char* user) {
  std::string o = owner;
  std::string u = user;
  CreateOptions opts;
  co_return co_await m.acquire(o, opts, u);
}

asio::awaitable<void> sleep_for(asio::any_io_executor ex, milliseconds d) {
  asio::steady_timer t(ex, d);
  co_await t.async_wait(asio::use_awaitable);
}

asio::awaitable<void> rel(Manager& m, const char* owner) {
  std::string o = owner;
  co_await m.release(o);
}

asio::awaitable<void> acquire_into(Manager& m, const char* owner, std::vector<std::string>& ids) {
  auto r = co_await acq(m, owner);
  CO_ASSERT(r.has_value());
  ids.push_back(r->info.id);
}

TEST(SandboxManager, OneSandboxPerOwnerAndConcurrentAcquiresShareTheCreation) {
  Fixture f;
  test::run_coroutine(f.io, [](Fixture& fx) -> asio::awaitable<void> {
    std::vector<std::string> ids;
    test::Group g(fx.io.get_executor());
    for (int i = 0; i < 5; ++i) g.spawn(acquire_into(*fx.manager, "intent-1", ids));
    co_await g.wait();
    CO_ASSERT(ids.size() == 5u);
    for (const auto& id : ids) EXPECT_EQ(id, ids[0]);
    EXPECT_EQ(fx.backend->creates, 1);
    auto again = co_await acq(*fx.manager, "intent-1");
    CO_ASSERT(again.has_value());
    EXPECT_FALSE(again->created);
    auto other = co_await acq(*fx.manager, "intent-2");
    CO_ASSERT(other.has_value());
    EXPECT_TRUE(other->created);
    EXPECT_NE(other->info.id, ids[0]);
    EXPECT_EQ(other->info.metadata.at("agentd"), "1");
    EXPECT_EQ(other->info.metadata.at("agentd_owner"), "intent-2");
    EXPECT_EQ(fx.manager->alive(), 2u);
  }(f), 5s);
}

TEST(SandboxManager, ReleaseKillsAndAReleaseDuringCreationKillsOnceCreated) {
  Fixture f;
  test::run_coroutine(f.io, [](Fixture& fx) -> asio::awaitable<void> {
    auto a = co_await acq(*fx.manager, "i1");
    CO_ASSERT(a.has_value());
    co_await rel(*fx.manager, "i1");
    CO_ASSERT(fx.backend->killed.size() == 1u);
    EXPECT_EQ(fx.backend->killed[0], a->info.id);
    EXPECT_EQ(fx.manager->alive(), 0u);
    // Pre-warm, then the owner ends before the sandbox exists.
    fx.manager->prewarm("i2", CreateOptions());
    asio::steady_timer t(fx.io.get_executor(), 1ms);
    co_await t.async_wait(asio::use_awaitable);
    co_await rel(*fx.manager, "i2");
    t.expires_after(100ms);
    co_await t.async_wait(asio::use_awaitable);
    EXPECT_EQ(fx.backend->creates, 2);
    EXPECT_EQ(fx.backend->killed.size(), 2u);
    EXPECT_TRUE(fx.backend->alive.empty());
  }(f), 5s);
}

TEST(SandboxManager, PrewarmedSandboxIsTheOneAcquired) {
  Fixture f;
  test::run_coroutine(f.io, [](Fixture& fx) -> asio::awaitable<void> {
    fx.manager->prewarm("i1", CreateOptions());
    auto a = co_await acq(*fx.manager, "i1");
    CO_ASSERT(a.has_value());
    EXPECT_EQ(fx.backend->creates, 1);
    EXPECT_GT(a->took.count(), 0);
  }(f), 5s);
}

TEST(SandboxManager, FailedCreationIsReportedAndRetriedNextTime) {
  Fixture f;
  f.backend->fail_create = true;
  test::run_coroutine(f.io, [](Fixture& fx) -> asio::awaitable<void> {
    auto a = co_await acq(*fx.manager, "i1");
    CO_ASSERT(!a.has_value());
    EXPECT_EQ(a.error().code, Errc::unavailable);
    EXPECT_EQ(fx.manager->alive(), 0u);
    fx.backend->fail_create = false;
    auto b = co_await acq(*fx.manager, "i1");
    EXPECT_TRUE(b.has_value());
  }(f), 5s);
}

TEST(SandboxManager, AliveLimitRefusesWithRetryAfter) {
  Fixture f(2);
  test::run_coroutine(f.io, [](Fixture& fx) -> asio::awaitable<void> {
    CO_ASSERT((co_await acq(*fx.manager, "a")).has_value());
    CO_ASSERT((co_await acq(*fx.manager, "b")).has_value());
    auto c = co_await acq(*fx.manager, "c");
    CO_ASSERT(!c.has_value());
    EXPECT_EQ(c.error().code, Errc::rate_limited);
    EXPECT_TRUE(c.error().retry_after.has_value());
  }(f), 5s);
}

TEST(SandboxManager, LeftoversOfAnEarlierRunAreKilledOthersAreNot) {
  Fixture f;
  Info ours;
  ours.id = "old1";
  ours.metadata = {{"agentd", "1"}, {"agentd_owner", "dead-intent"}};
  Info foreign;
  foreign.id = "someone-else";
  f.backend->alive = {ours, foreign};
  test::run_coroutine(f.io, [](Fixture& fx) -> asio::awaitable<void> {
    co_await fx.manager->cleanup_leftovers();
    CO_ASSERT(fx.backend->killed.size() == 1u);
    EXPECT_EQ(fx.backend->killed[0], "old1");
    CO_ASSERT(fx.backend->alive.size() == 1u);
    EXPECT_EQ(fx.backend->alive[0].id, "someone-else");
  }(f), 5s);
}

// After a crash with intents.on_restart: resume, the resumed intent may acquire its new sandbox
// before the start-up cleanup gets to the one the dead run left for the same owner: that old
// one is still a leftover (it used to be skipped as "alive here" and stayed forever).
TEST(SandboxManager, ALeftoverOfAnOwnerThatHasANewSandboxIsKilledTheNewOneIsNot) {
  Fixture f;
  Info old;
  old.id = "old1";
  old.metadata = {{"agentd", "1"}, {"agentd_owner", "resumed"}};
  f.backend->alive = {old};
  test::run_coroutine(
      f.io,
      [](Fixture& fx) -> asio::awaitable<void> {
        auto fresh = co_await acq(*fx.manager, "resumed");
        CO_ASSERT(fresh.has_value());
        CO_ASSERT(fresh->info.id != "old1");
        co_await fx.manager->cleanup_leftovers();
        CO_ASSERT(fx.backend->killed.size() == 1u);
        EXPECT_EQ(fx.backend->killed[0], "old1");
        CO_ASSERT(fx.backend->alive.size() == 1u);
        EXPECT_EQ(fx.backend->alive[0].id, fresh->info.id);
        EXPECT_EQ(fx.manager->alive(), 1u);
      }(f),
      5s);
}

// A leftover listed while the owner's new sandbox is still being created is killed too.
TEST(SandboxManager, ALeftoverIsKilledWhileItsOwnersNewSandboxIsBeingCreated) {
  Fixture f;
  Info old;
  old.id = "old1";
  old.metadata = {{"agentd", "1"}, {"agentd_owner", "resumed"}};
  f.backend->alive = {old};
  f.backend->create_delay = 200ms;
  test::run_coroutine(
      f.io,
      [](Fixture& fx) -> asio::awaitable<void> {
        fx.manager->prewarm("resumed", CreateOptions());
        co_await fx.manager->cleanup_leftovers();
        CO_ASSERT(fx.backend->killed.size() == 1u);
        EXPECT_EQ(fx.backend->killed[0], "old1");
        auto fresh = co_await acq(*fx.manager, "resumed");
        CO_ASSERT(fresh.has_value());
        CO_ASSERT(fx.backend->alive.size() == 1u);
        EXPECT_EQ(fx.backend->alive[0].id, fresh->info.id);
      }(f),
      5s);
}

// A session's sandbox: its intents share it, each joining one refreshes its timeout; it is
// not killed while any intent uses it, and is killed once the last one left `idle` ago (its
// backend timeout set to idle + 1 min meanwhile).
TEST(SandboxSessions, SharedByItsIntentsAndKilledOnceIdle) {
  Fixture f;
  test::run_coroutine(f.io, [](Fixture& fx) -> asio::awaitable<void> {
    auto ex = fx.io.get_executor();
    auto a = co_await acq_as(*fx.manager, "session:s1", "i1");
    CO_ASSERT(a.has_value());
    EXPECT_TRUE(a->created);
    EXPECT_TRUE(fx.backend->timeouts.empty());  // a new sandbox needs no refresh
    auto b = co_await acq_as(*fx.manager, "session:s1", "i2");
    CO_ASSERT(b.has_value());
    EXPECT_FALSE(b->created);
    EXPECT_EQ(b->info.id, a->info.id);
    CO_ASSERT(fx.backend->timeouts.size() == 1u);  // i2 joined: a full timeout again
    EXPECT_EQ(fx.backend->timeouts[0].second, CreateOptions().timeout);  // the timeout it is acquired with
    // The same intent again: no refresh.
    CO_ASSERT((co_await acq_as(*fx.manager, "session:s1", "i2")).has_value());
    EXPECT_EQ(fx.backend->timeouts.size(), 1u);
    fx.manager->leave("session:s1", "i1", 50ms);
    co_await sleep_for(ex, 150ms);
    EXPECT_TRUE(fx.backend->killed.empty()) << "i2 still uses it";
    fx.manager->leave("session:s1", "i2", 100ms);
    co_await sleep_for(ex, 40ms);
    EXPECT_TRUE(fx.backend->killed.empty()) << "killed before its idle time";
    CO_ASSERT(fx.backend->timeouts.size() == 2u);
    EXPECT_EQ(fx.backend->timeouts[1].second, 100ms + std::chrono::minutes(1));
    co_await sleep_for(ex, 150ms);
    CO_ASSERT(fx.backend->killed.size() == 1u);
    EXPECT_EQ(fx.backend->killed[0], a->info.id);
    EXPECT_EQ(fx.manager->alive(), 0u);
    EXPECT_NE(fx.metrics.render().find("agentd_sandbox_idle_killed_total{backend=\"recording\"} 1"), std::string::npos)
        << fx.metrics.render();
  }(f), 5s);
}

TEST(SandboxSessions, AnIntentJoiningAnIdleSessionKeepsItsSandbox) {
  Fixture f;
  test::run_coroutine(f.io, [](Fixture& fx) -> asio::awaitable<void> {
    auto ex = fx.io.get_executor();
    auto a = co_await acq_as(*fx.manager, "session:s1", "i1");
    CO_ASSERT(a.has_value());
    fx.manager->leave("session:s1", "i1", 100ms);
    co_await sleep_for(ex, 60ms);
    auto b = co_await acq_as(*fx.manager, "session:s1", "i2");
    CO_ASSERT(b.has_value());
    EXPECT_EQ(b->info.id, a->info.id);
    co_await sleep_for(ex, 200ms);
    EXPECT_TRUE(fx.backend->killed.empty());
    EXPECT_EQ(fx.manager->alive(), 1u);
    // The timeout the idle wait set is replaced by a full one.
    CO_ASSERT(!fx.backend->timeouts.empty());
    EXPECT_EQ(fx.backend->timeouts.back().second, CreateOptions().timeout);
    // Pre-warm by a third intent joins it as well.
    std::string owner = "session:s1";
    fx.manager->prewarm(owner, CreateOptions(), "i3");
    fx.manager->leave(owner, "i2", 50ms);
    co_await sleep_for(ex, 150ms);
    EXPECT_TRUE(fx.backend->killed.empty()) << "i3 (pre-warmed) still uses it";
    fx.manager->leave(owner, "i3", 50ms);
    co_await sleep_for(ex, 150ms);
    EXPECT_EQ(fx.backend->killed.size(), 1u);
    EXPECT_EQ(fx.backend->creates, 1);
  }(f), 5s);
}

// A session's sandbox that reached its timeout on the backend while idle is replaced, not
// handed out dead.
TEST(SandboxSessions, ASandboxThatEndedOnItsOwnIsReplacedWhenTheNextIntentJoins) {
  Fixture f;
  test::run_coroutine(f.io, [](Fixture& fx) -> asio::awaitable<void> {
    auto a = co_await acq_as(*fx.manager, "session:s1", "i1");
    CO_ASSERT(a.has_value());
    fx.manager->leave("session:s1", "i1", std::chrono::minutes(5));
    fx.backend->alive.clear();  // the backend's timeout ended it
    auto b = co_await acq_as(*fx.manager, "session:s1", "i2");
    CO_ASSERT(b.has_value());
    EXPECT_TRUE(b->created);
    EXPECT_NE(b->info.id, a->info.id);
    EXPECT_EQ(fx.backend->creates, 2);
    EXPECT_EQ(fx.manager->alive(), 1u);
  }(f), 5s);
}

// Every intent left while the sandbox was still being created (a pre-warm): the idle wait
// starts once it exists.
TEST(SandboxSessions, LeavingDuringCreationStartsTheIdleWaitOnceCreated) {
  Fixture f;
  f.backend->create_delay = 100ms;
  test::run_coroutine(f.io, [](Fixture& fx) -> asio::awaitable<void> {
    auto ex = fx.io.get_executor();
    std::string owner = "session:s1";
    fx.manager->prewarm(owner, CreateOptions(), "i1");
    co_await sleep_for(ex, 10ms);
    fx.manager->leave(owner, "i1", 50ms);
    co_await sleep_for(ex, 120ms);
    EXPECT_EQ(fx.backend->creates, 1);
    EXPECT_TRUE(fx.backend->killed.empty()) << "killed before its idle time";
    co_await sleep_for(ex, 150ms);
    EXPECT_EQ(fx.backend->killed.size(), 1u);
    EXPECT_EQ(fx.manager->alive(), 0u);
  }(f), 5s);
}

// Two instances on one backend account with a run registry: a live peer's sandboxes survive
// another instance's start-up clean-up; a dead run's (no longer announced) are killed by the
// periodic sweep; when the registry cannot answer nothing is killed.
struct Peers {
  asio::io_context io;
  core::Registry metrics_a, metrics_b;
  RecordingBackend backend{io.get_executor()};
  std::shared_ptr<MemoryRuns> runs = std::make_shared<MemoryRuns>();
  std::unique_ptr<Manager> a, b;
  Peers() {
    Config c;
    c.enabled = true;
    c.sweep_interval = 200ms;  // the config's minimum is 1 s; shorter here to keep the test short
    a = make_manager(io.get_executor(), c, std::make_unique<SharedBackend>(backend), metrics_a, runs);
    b = make_manager(io.get_executor(), c, std::make_unique<SharedBackend>(backend), metrics_b, runs);
  }
};

TEST(SandboxPeers, ALivePeersSandboxesAreKeptADeadRunsAreSweptAway) {
  Peers p;
  test::run_coroutine(p.io, [](Peers& px) -> asio::awaitable<void> {
    auto ex = px.io.get_executor();
    px.a->start();
    co_await sleep_for(ex, 20ms);
    EXPECT_EQ(px.runs->announces, 1);
    EXPECT_EQ(px.runs->last_ttl, 600ms);  // three beats of min(sweep_interval, 10 s)
    auto mine = co_await acq(*px.a, "intent-a");
    CO_ASSERT(mine.has_value());
    // An earlier run that never announced itself (or whose key expired): a leftover.
    Info dead;
    dead.id = "dead1";
    dead.metadata = {{"agentd", "1"}, {"agentd_owner", "x"}, {"agentd_run", "gone"}};
    px.backend.alive.push_back(dead);
    px.b->start();
    co_await sleep_for(ex, 50ms);
    CO_ASSERT(px.backend.killed.size() == 1u);
    EXPECT_EQ(px.backend.killed[0], "dead1");
    EXPECT_EQ(px.backend.alive.size(), 1u) << "the live peer's sandbox was killed";
    // The registry unreachable: a sandbox of another run is left alone, and killed once the
    // registry says its run is dead.
    Info dead2 = dead;
    dead2.id = "dead2";
    dead2.metadata["agentd_run"] = "gone2";
    px.backend.alive.push_back(dead2);
    px.runs->unreachable = true;
    co_await px.b->cleanup_leftovers();
    EXPECT_EQ(px.backend.alive.size(), 2u);
    px.runs->unreachable = false;
    co_await px.b->cleanup_leftovers();
    CO_ASSERT(px.backend.alive.size() == 1u);
    EXPECT_EQ(px.backend.killed.back(), "dead2");
    // `a` dies without a word (its announces stop reaching the registry): once its key
    // expires, `b`'s sweep kills its sandbox.
    std::string run_a = mine->info.metadata.at("agentd_run");
    px.runs->muted.insert(run_a);
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 100 && !px.backend.alive.empty(); ++i) co_await sleep_for(ex, 50ms);
    EXPECT_TRUE(px.backend.alive.empty()) << "a dead peer's sandbox was not swept";
    // TTL 600 ms (three beats of 200 ms) plus one sweep interval, and some slack.
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 3000ms);
    EXPECT_EQ(px.backend.killed.back(), mine->info.id);
    co_await px.a->stop();
    // A stopping instance withdraws its run.
    co_await px.b->stop();
    EXPECT_TRUE(px.runs->until.empty());
  }(p), 10s);
}

asio::awaitable<Result<Manager::Acquired>> acq_with_timeout(Manager& m, const char* owner, const char* user,
                                                             milliseconds timeout) {
  std::string o = owner;
  std::string u = user;
  CreateOptions opts;
  opts.timeout = timeout;
  co_return co_await m.acquire(o, opts, u);
}

// A sandbox in use has its backend timeout renewed every half timeout (a run longer than
// default_timeout keeps it); a session's sandbox waiting out its idle time, and a killed one,
// are not renewed.
TEST(SandboxKeepalive, InUseSandboxesAreRenewedIdleAndKilledOnesAreNot) {
  Fixture f;
  test::run_coroutine(f.io, [](Fixture& fx) -> asio::awaitable<void> {
    auto ex = fx.io.get_executor();
    auto renewals = [&fx](const std::string& id, milliseconds t) {
      return std::count_if(fx.backend->timeouts.begin(), fx.backend->timeouts.end(),
                           [&](const auto& x) { return x.first == id && x.second == t; });
    };
    auto a = co_await acq_with_timeout(*fx.manager, "intent-1", "", 100ms);
    CO_ASSERT(a.has_value());
    co_await sleep_for(ex, 280ms);
    EXPECT_GE(renewals(a->info.id, 100ms), 3) << "an intent's sandbox is renewed while the intent runs";
    co_await rel(*fx.manager, "intent-1");
    auto after_kill = renewals(a->info.id, 100ms);
    co_await sleep_for(ex, 150ms);
    EXPECT_EQ(renewals(a->info.id, 100ms), after_kill) << "renewed after it was killed";

    auto s = co_await acq_with_timeout(*fx.manager, "session:s1", "i1", 100ms);
    CO_ASSERT(s.has_value());
    co_await sleep_for(ex, 130ms);
    EXPECT_GE(renewals(s->info.id, 100ms), 2);
    fx.manager->leave("session:s1", "i1", 5s);
    co_await sleep_for(ex, 60ms);
    auto idle_from = renewals(s->info.id, 100ms);
    co_await sleep_for(ex, 200ms);
    EXPECT_EQ(renewals(s->info.id, 100ms), idle_from) << "renewed while idle";
    EXPECT_EQ(renewals(s->info.id, 5s + std::chrono::minutes(1)), 1);
    // A sandbox that ended on its own while in use is forgotten: the next acquire makes another.
    auto t = co_await acq_with_timeout(*fx.manager, "intent-2", "", 100ms);
    CO_ASSERT(t.has_value());
    std::erase_if(fx.backend->alive, [&](const Info& i) { return i.id == t->info.id; });
    co_await sleep_for(ex, 120ms);
    auto u = co_await acq_with_timeout(*fx.manager, "intent-2", "", 100ms);
    CO_ASSERT(u.has_value());
    EXPECT_TRUE(u->created);
    EXPECT_NE(u->info.id, t->info.id);
  }(f), 5s);
}

}  // namespace
}  // namespace agentd::sandbox
