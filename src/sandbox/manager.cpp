// One sandbox per owner: created on first use (or pre-warmed), shared by the owner's tool
// calls, killed when the owner ends; leftovers of an earlier run killed at start.
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <random>
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
              core::Registry& metrics)
      : ex_(ex), config_(std::move(config)), backend_(std::move(backend)),
        created_(metrics.counter("agentd_sandbox_created_total", "Sandboxes created",
                                 {{"backend", std::string(backend_->name())}})),
        failed_(metrics.counter("agentd_sandbox_create_failures_total", "Sandbox creations that failed",
                                {{"backend", std::string(backend_->name())}})),
        alive_gauge_(metrics.gauge("agentd_sandbox_alive", "Sandboxes alive, created by this instance",
                                   {{"backend", std::string(backend_->name())}})),
        create_seconds_(metrics.histogram("agentd_sandbox_create_seconds", "Time to create a sandbox",
                                          {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
                                          {{"backend", std::string(backend_->name())}})) {}

  Backend& backend() noexcept override { return *backend_; }
  const Config& config() const noexcept override { return config_; }
  std::size_t alive() const noexcept override { return owners_.size(); }

  asio::awaitable<Result<Acquired>> acquire(std::string owner, CreateOptions options) override {
    if (owner.empty()) co_return Error{Errc::bad_request, "a sandbox needs an owner", std::nullopt};
    auto it = owners_.find(owner);
    if (it != owners_.end()) {
      auto entry = it->second;
      if (entry->creating) {
        // A pre-warm (or a concurrent call) is creating it: wait for that one.
        co_await entry->ready.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      if (entry->error) co_return *entry->error;
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
    owners_[owner] = entry;
    options.owner = owner;
    options.metadata[kMarkKey] = "1";
    options.metadata[kOwnerKey] = owner;
    options.metadata[kRunKey] = run_id_;
    if (options.timeout.count() <= 0) options.timeout = config_.default_timeout;
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
    if (entry->released) {
      // The owner ended while the sandbox was being created.
      co_await kill_entry(owner, entry);
      co_return Error{Errc::cancelled, "the owner ended while its sandbox was created", std::nullopt};
    }
    Acquired a;
    a.info = entry->info;
    a.created = true;
    a.took = entry->took;
    co_return a;
  }

  void prewarm(std::string owner, CreateOptions options) override {
    if (owners_.contains(owner)) return;
    asio::co_spawn(ex_, prewarm_one(this, owner, std::move(options)), [owner](std::exception_ptr e) {
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

  asio::awaitable<void> cleanup_leftovers() override {
    auto list = co_await backend_->list();
    if (!list) {
      spdlog::warn("sandbox: cannot list {} sandboxes to clean up: {}", backend_->name(), list.error().message);
      co_return;
    }
    std::size_t killed = 0;
    for (const auto& info : *list) {
      auto mark = info.metadata.find(kMarkKey);
      if (mark == info.metadata.end() || mark->second != "1") continue;  // not ours
      auto run = info.metadata.find(kRunKey);
      if (run != info.metadata.end() && run->second == run_id_) continue;  // made by this run
      // Not by owner: an intent resumed after the crash may already have a new sandbox (or one
      // being created) while this one is still what the dead run left for it.
      auto r = co_await backend_->kill(info.id);
      if (r) {
        ++killed;
      } else if (r.error().code != Errc::not_found) {
        spdlog::warn("sandbox: leftover {} not killed: {}", info.id, r.error().message);
      }
    }
    if (killed > 0) spdlog::info("sandbox: killed {} sandbox(es) left by an earlier run", killed);
  }

  asio::awaitable<void> stop() override {
    std::vector<std::string> owners;
    for (auto& [o, e] : owners_) owners.push_back(o);
    for (auto& o : owners) co_await release(o);
  }

 private:
  struct Entry {
    explicit Entry(asio::any_io_executor ex) : ready(ex, asio::steady_timer::time_point::max()) {}
    Info info;
    bool creating = true;
    bool released = false;
    std::optional<Error> error;
    std::chrono::microseconds took{0};
    asio::steady_timer ready;  // cancelled once creation ended
  };

  static asio::awaitable<void> prewarm_one(ManagerImpl* self, std::string owner, CreateOptions options) {
    auto r = co_await self->acquire(owner, std::move(options));
    if (!r) spdlog::warn("sandbox: pre-warm for {} failed: {}", owner, r.error().message);
  }

  asio::awaitable<void> kill_entry(const std::string& owner, std::shared_ptr<Entry> entry) {
    owners_.erase(owner);
    alive_gauge_.set(static_cast<double>(owners_.size()));
    auto r = co_await backend_->kill(entry->info.id);
    if (!r && r.error().code != Errc::not_found) {
      spdlog::warn("sandbox: {} of {} not killed: {} (it ends at its timeout)", entry->info.id, owner,
                   r.error().message);
    }
  }

  asio::any_io_executor ex_;
  Config config_;
  std::unique_ptr<Backend> backend_;
  const std::string run_id_ = new_run_id();
  std::unordered_map<std::string, std::shared_ptr<Entry>> owners_;
  core::Counter& created_;
  core::Counter& failed_;
  core::Gauge& alive_gauge_;
  core::Histogram& create_seconds_;
};

}  // namespace

std::unique_ptr<Manager> make_manager(asio::any_io_executor ex, Config config,
                                      std::unique_ptr<Backend> backend, core::Registry& metrics) {
  return std::make_unique<ManagerImpl>(ex, std::move(config), std::move(backend), metrics);
}

}  // namespace agentd::sandbox
