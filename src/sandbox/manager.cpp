// One sandbox per owner: created on first use (or pre-warmed), shared by the owner's tool
// calls, killed when the owner ends; leftovers of an earlier run killed at start.
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <random>
#include <set>
#include <unordered_map>

#include "agentd/sandbox/manager.hpp"

namespace agentd::sandbox {
namespace {

namespace asio = boost::asio;
constexpr const char* kOwnerKey = "agentd_owner";
constexpr const char* kMarkKey = "agentd";
constexpr const char* kRunKey = "agentd_run";  // which run of agentd created it

std::string new_run_id() {
  std::random_device rd;
  std::string out;
  for (int i = 0; i < 4; ++i) out += fmt::format("{:08x}", rd());
  return out;
}

class ManagerImpl final : public Manager {
 public:
  ManagerImpl(asio::any_io_executor ex, Config config, std::unique_ptr<Backend> backend,
              core::Registry& metrics, std::shared_ptr<RunRegistry> runs)
      : ex_(ex), config_(std::move(config)), backend_(std::move(backend)), runs_(std::move(runs)),
        loop_timer_(ex),
        created_(metrics.counter("agentd_sandbox_created_total", "Sandboxes created",
                                 {{"backend", std::string(backend_->name())}})),
        failed_(metrics.counter("agentd_sandbox_create_failures_total", "Sandbox creations that failed",
                                {{"backend", std::string(backend_->name())}})),
        idle_killed_(metrics.counter("agentd_sandbox_idle_killed_total",
                                     "Sessions' sandboxes killed after session_idle without use",
                                     {{"backend", std::string(backend_->name())}})),
        leftovers_killed_(metrics.counter("agentd_sandbox_leftovers_killed_total",
                                          "Sandboxes of runs of agentd no longer alive, killed",
                                          {{"backend", std::string(backend_->name())}})),
        alive_gauge_(metrics.gauge("agentd_sandbox_alive", "Sandboxes alive, created by this instance",
                                   {{"backend", std::string(backend_->name())}})),
        create_seconds_(metrics.histogram("agentd_sandbox_create_seconds", "Time to create a sandbox",
                                          {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
                                          {{"backend", std::string(backend_->name())}})) {}

  Backend& backend() noexcept override { return *backend_; }
  const Config& config() const noexcept override { return config_; }
  std::size_t alive() const noexcept override { return owners_.size(); }

  asio::awaitable<Result<Acquired>> acquire(std::string owner, CreateOptions options, std::string user) override {
    if (owner.empty()) co_return Error{Errc::bad_request, "a sandbox needs an owner", std::nullopt};
    if (options.timeout.count() <= 0) options.timeout = config_.default_timeout;
    auto it = owners_.find(owner);
    if (it != owners_.end()) {
      auto entry = it->second;
      bool joined = !user.empty() && entry->users.insert(user).second;
      if (joined) stop_idle(*entry);
      if (entry->creating) {
        // A pre-warm (or a concurrent call) is creating it: wait for that one.
        co_await entry->ready.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      if (entry->error) co_return *entry->error;
      if (joined) {
        // The session's next intent: a full timeout again, and proof the sandbox still exists
        // (it may have reached its timeout on the backend's side while idle).
        auto r = co_await backend_->set_timeout(entry->info.id, options.timeout);
        if (!r && r.error().code == Errc::not_found) {
          spdlog::info("sandbox: {} of {} ended on its own; creating a new one", entry->info.id, owner);
          retire(owner, *entry);
          co_return co_await acquire(std::move(owner), std::move(options), std::move(user));
        }
      }
      Acquired a;
      a.info = entry->info;
      a.took = entry->took;
      co_return a;
    }
    if (owners_.size() >= config_.max_sandboxes) {
      co_return Error{Errc::rate_limited,
                      "too many sandboxes alive (" + std::to_string(owners_.size()) +
                          ", sandbox.max_sandboxes)",
                      std::chrono::seconds(5)};
    }
    auto entry = std::make_shared<Entry>(ex_);
    if (!user.empty()) entry->users.insert(user);
    owners_[owner] = entry;
    options.owner = owner;
    options.metadata[kMarkKey] = "1";
    options.metadata[kOwnerKey] = owner;
    options.metadata[kRunKey] = run_id_;
    entry->timeout = options.timeout;
    auto t0 = std::chrono::steady_clock::now();
    auto r = co_await backend_->create(std::move(options));
    entry->took = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    entry->creating = false;
    if (!r) {
      failed_.inc();
      entry->error = r.error();
      owners_.erase(owner);
      entry->ready.cancel();
      co_return r.error();
    }
    created_.inc();
    create_seconds_.observe(std::chrono::duration<double>(entry->took).count());
    entry->info = *r;
    alive_gauge_.set(static_cast<double>(owners_.size()));
    entry->ready.cancel();
    asio::co_spawn(ex_, keepalive(this, owner, std::weak_ptr<Entry>(entry)), [](std::exception_ptr) {});
    if (entry->released) {
      // The owner ended while the sandbox was being created.
      co_await kill_entry(owner, entry);
      co_return Error{Errc::cancelled, "the owner ended while its sandbox was created", std::nullopt};
    }
    if (entry->users.empty() && entry->idle) arm_idle(owner, entry);  // its users left meanwhile
    Acquired a;
    a.info = entry->info;
    a.created = true;
    a.took = entry->took;
    co_return a;
  }

  void prewarm(std::string owner, CreateOptions options, std::string user) override {
    // acquire() does the work: creates it, waits for a creation in flight, or (a user joining
    // a session's sandbox) refreshes its timeout.
    if (auto it = owners_.find(owner); it != owners_.end() && (user.empty() || it->second->users.contains(user))) return;
    asio::co_spawn(ex_, prewarm_one(this, owner, std::move(options), std::move(user)),
                   [owner](std::exception_ptr e) {
                     if (e) spdlog::warn("sandbox: pre-warm for {} failed with an exception", owner);
                   });
  }

  asio::awaitable<void> release(std::string owner) override {
    auto it = owners_.find(owner);
    if (it == owners_.end()) co_return;
    auto entry = it->second;
    if (entry->creating) {
      entry->released = true;  // acquire() kills it once created
      co_return;
    }
    co_await kill_entry(owner, entry);
  }

  void leave(const std::string& owner, const std::string& user, milliseconds idle) override {
    auto it = owners_.find(owner);
    if (it == owners_.end()) return;
    auto entry = it->second;
    entry->users.erase(user);
    if (!entry->users.empty()) return;
    entry->idle = idle;
    if (entry->creating) return;  // armed once created
    arm_idle(owner, entry);
  }

  asio::awaitable<void> cleanup_leftovers() override {
    auto list = co_await backend_->list();
    if (!list) {
      spdlog::warn("sandbox: cannot list {} sandboxes to clean up: {}", backend_->name(), list.error().message);
      co_return;
    }
    std::unordered_map<std::string, std::optional<bool>> run_alive;  // asked once per run
    std::size_t killed = 0;
    for (const auto& info : *list) {
      auto mark = info.metadata.find(kMarkKey);
      if (mark == info.metadata.end() || mark->second != "1") continue;  // not ours
      auto run = info.metadata.find(kRunKey);
      if (run != info.metadata.end() && run->second == run_id_) continue;  // made by this run
      if (runs_ && run != info.metadata.end()) {
        // Another instance sharing the account: its sandboxes are its own while it lives.
        auto known = run_alive.find(run->second);
        if (known == run_alive.end()) {
          known = run_alive.emplace(run->second, co_await runs_->alive(run->second)).first;
        }
        if (!known->second || *known->second) continue;
      }
      // Not by owner: an intent resumed after the crash may already have a new sandbox (or one
      // being created) while this one is still what the dead run left for it.
      auto r = co_await backend_->kill(info.id);
      if (r) {
        ++killed;
        leftovers_killed_.inc();
      } else if (r.error().code != Errc::not_found) {
        spdlog::warn("sandbox: leftover {} not killed: {}", info.id, r.error().message);
      }
    }
    if (killed > 0) spdlog::info("sandbox: killed {} sandbox(es) left by a run no longer alive", killed);
  }

  void start() override {
    asio::co_spawn(ex_, run_loop(this), [](std::exception_ptr e) {
      if (e) spdlog::error("sandbox: the clean-up loop ended with an exception");
    });
  }

  asio::awaitable<void> stop() override {
    stopping_ = true;
    loop_timer_.cancel();
    std::vector<std::string> owners;
    for (auto& [o, e] : owners_) owners.push_back(o);
    for (auto& o : owners) co_await release(o);
    if (runs_) co_await runs_->withdraw(run_id_);
  }

 private:
  struct Entry {
    explicit Entry(asio::any_io_executor ex)
        : ready(ex, asio::steady_timer::time_point::max()), idle_timer(ex), keepalive_timer(ex) {}
    Info info;
    bool creating = true;
    bool released = false;
    std::optional<Error> error;
    std::chrono::microseconds took{0};
    asio::steady_timer ready;  // cancelled once creation ended
    std::set<std::string> users;  // intents using a session's sandbox
    std::optional<milliseconds> idle;  // killed after this long without users
    std::uint64_t idle_gen = 0;  // bumped when the idle wait is armed or called off
    asio::steady_timer idle_timer;
    milliseconds timeout{0};  // the backend timeout it was created with, renewed while in use
    asio::steady_timer keepalive_timer;
    bool dead = false;  // killed, or forgotten (it ended on its own)
  };

  // Heartbeat of this run in the registry; a run is taken for dead after three missed beats.
  milliseconds beat() const { return std::min<milliseconds>(config_.sweep_interval, std::chrono::seconds(10)); }

  static asio::awaitable<void> run_loop(ManagerImpl* self) {
    if (self->runs_) co_await self->runs_->announce(self->run_id_, 3 * self->beat());
    co_await self->cleanup_leftovers();
    if (!self->runs_) co_return;
    auto next_sweep = std::chrono::steady_clock::now() + self->config_.sweep_interval;
    while (!self->stopping_) {
      self->loop_timer_.expires_after(self->beat());
      auto [ec] = co_await self->loop_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
      if (ec || self->stopping_) co_return;
      co_await self->runs_->announce(self->run_id_, 3 * self->beat());
      if (std::chrono::steady_clock::now() >= next_sweep) {
        co_await self->cleanup_leftovers();
        next_sweep = std::chrono::steady_clock::now() + self->config_.sweep_interval;
      }
    }
  }

  static asio::awaitable<void> prewarm_one(ManagerImpl* self, std::string owner, CreateOptions options,
                                           std::string user) {
    auto r = co_await self->acquire(owner, std::move(options), std::move(user));
    if (!r) spdlog::warn("sandbox: pre-warm for {} failed: {}", owner, r.error().message);
  }

  // While a sandbox is in use (its intent runs, or its session has intents using it), its
  // backend timeout is renewed every half timeout: a run longer than default_timeout keeps its
  // sandbox; if this process dies the renewals stop and the backend ends it. A session's
  // sandbox waiting out its idle time is left to idle_watch.
  // Holds the entry weakly: when it goes (killed, or the manager destroyed) its timer goes with
  // it, the wait ends aborted, and the loop ends without touching the manager.
  static asio::awaitable<void> keepalive(ManagerImpl* self, std::string owner, std::weak_ptr<Entry> weak) {
    for (;;) {
      {
        auto entry = weak.lock();
        if (!entry || entry->dead) co_return;
        entry->keepalive_timer.expires_after(std::max<milliseconds>(entry->timeout / 2, milliseconds(1)));
        auto wait = entry->keepalive_timer.async_wait(asio::as_tuple(asio::use_awaitable));
        entry.reset();  // not kept alive by this wait
        (void)co_await std::move(wait);
      }
      auto entry = weak.lock();
      if (!entry || entry->dead || self->stopping_) co_return;
      if (entry->users.empty() && entry->idle) continue;  // idle: its own timeout is set
      auto r = co_await self->backend_->set_timeout(entry->info.id, entry->timeout);
      if (!r && r.error().code == Errc::not_found && !entry->dead) {
        spdlog::warn("sandbox: {} of {} ended on its own while in use", entry->info.id, owner);
        self->retire(owner, *entry);
        co_return;
      }
    }
  }

  void stop_idle(Entry& entry) {
    ++entry.idle_gen;
    entry.idle.reset();
    entry.idle_timer.cancel();
  }

  void arm_idle(const std::string& owner, std::shared_ptr<Entry> entry) {
    ++entry->idle_gen;
    asio::co_spawn(ex_, idle_watch(this, owner, entry, entry->idle_gen), [](std::exception_ptr) {});
  }

  // Kills a session's sandbox left without users for its idle time. Meanwhile its backend
  // timeout is the idle time plus a minute: it outlives default_timeout while idle, and still
  // ends if this process dies.
  static asio::awaitable<void> idle_watch(ManagerImpl* self, std::string owner, std::shared_ptr<Entry> entry,
                                          std::uint64_t gen) {
    auto idle = *entry->idle;
    (void)co_await self->backend_->set_timeout(entry->info.id, idle + std::chrono::minutes(1));
    if (entry->idle_gen != gen) {
      // A user came back during the call, and its own refresh may have landed first.
      if (!entry->users.empty()) (void)co_await self->backend_->set_timeout(entry->info.id, self->config_.default_timeout);
      co_return;
    }
    entry->idle_timer.expires_after(idle);
    (void)co_await entry->idle_timer.async_wait(asio::as_tuple(asio::use_awaitable));  // the generation says why it ended
    if (entry->idle_gen != gen || !entry->users.empty()) co_return;
    auto it = self->owners_.find(owner);
    if (it == self->owners_.end() || it->second != entry) co_return;
    spdlog::info("sandbox: {} of {} unused for {} ms (sandbox.session_idle): killed", entry->info.id, owner,
                 idle.count());
    self->idle_killed_.inc();
    co_await self->kill_entry(owner, entry);
  }

  void forget(const std::string& owner) {
    owners_.erase(owner);
    alive_gauge_.set(static_cast<double>(owners_.size()));
  }

  // Takes an entry out of service: off the owner map (when it is still the owner's), no idle
  // wait, no renewals. One place for a kill and for a sandbox that ended on its own.
  void retire(const std::string& owner, Entry& entry) {
    if (auto it = owners_.find(owner); it != owners_.end() && it->second.get() == &entry) forget(owner);
    stop_idle(entry);
    entry.dead = true;
    entry.keepalive_timer.cancel();
  }

  asio::awaitable<void> kill_entry(const std::string& owner, std::shared_ptr<Entry> entry) {
    retire(owner, *entry);
    auto r = co_await backend_->kill(entry->info.id);
    if (!r && r.error().code != Errc::not_found) {
      spdlog::warn("sandbox: {} of {} not killed: {} (it ends at its timeout)", entry->info.id, owner,
                   r.error().message);
    }
  }

  asio::any_io_executor ex_;
  Config config_;
  std::unique_ptr<Backend> backend_;
  std::shared_ptr<RunRegistry> runs_;
  const std::string run_id_ = new_run_id();
  std::unordered_map<std::string, std::shared_ptr<Entry>> owners_;
  asio::steady_timer loop_timer_;
  bool stopping_ = false;
  core::Counter& created_;
  core::Counter& failed_;
  core::Counter& idle_killed_;
  core::Counter& leftovers_killed_;
  core::Gauge& alive_gauge_;
  core::Histogram& create_seconds_;
};

}  // namespace

std::unique_ptr<Manager> make_manager(asio::any_io_executor ex, Config config,
                                      std::unique_ptr<Backend> backend, core::Registry& metrics,
                                      std::shared_ptr<RunRegistry> runs) {
  return std::make_unique<ManagerImpl>(ex, std::move(config), std::move(backend), metrics, std::move(runs));
}

}  // namespace agentd::sandbox
