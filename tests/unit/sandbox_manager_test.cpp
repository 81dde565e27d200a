// The sandbox owner manager over a recording backend: one sandbox per owner, concurrent
// acquires share one creation, release kills, pre-warm, leftovers, the alive limit.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

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
  asio::awaitable<Result<void>> set_timeout(std::string, milliseconds) override { co_return Result<void>(); }
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

}  // namespace
}  // namespace agentd::sandbox
