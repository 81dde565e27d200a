// Who owns which sandbox: one sandbox per owner (an intent or a session), created on first use
// or pre-warmed, killed when the owner ends (an intent) or goes idle (a session), when it times
// out, and for what a run of agentd that is no longer alive left behind.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <memory>
#include <optional>
#include <string>

#include "agentd/core/metrics.hpp"
#include "agentd/sandbox/config.hpp"
#include "agentd/sandbox/sandbox.hpp"

namespace agentd::net {
class HttpClient;
}

namespace agentd::sandbox {

// Which runs of agentd are alive, when several instances share one backend account (E2B) and a
// Redis: each run announces itself with a TTL while it lives, so one instance can tell a
// sandbox of a live peer (left alone) from one of a dead run (killed).
class RunRegistry {
 public:
  virtual ~RunRegistry() = default;
  virtual boost::asio::awaitable<void> announce(const std::string& run, milliseconds ttl) = 0;
  // nullopt: cannot tell now (the registry is unreachable): such a sandbox is left alone.
  virtual boost::asio::awaitable<std::optional<bool>> alive(const std::string& run) = 0;
  virtual boost::asio::awaitable<void> withdraw(const std::string& run) = 0;
};

class Manager {
 public:
  virtual ~Manager() = default;
  virtual Backend& backend() noexcept = 0;
  virtual const Config& config() const noexcept = 0;
  // The owner's sandbox, created now when it has none (or waiting for a pre-warm in flight).
  // `created` tells the caller whether this call created it, and `took` how long creation took.
  struct Acquired {
    Info info;
    bool created = false;
    std::chrono::microseconds took{0};
  };
  // `user` (an intent using a session's sandbox; may be empty) joins the owner's users: while
  // any is left the sandbox is not idle, and a user joining refreshes the sandbox's timeout.
  virtual boost::asio::awaitable<Result<Acquired>> acquire(std::string owner, CreateOptions options,
                                                           std::string user = {}) = 0;
  // Starts creating the owner's sandbox in the background (a plan that will need one).
  virtual void prewarm(std::string owner, CreateOptions options, std::string user = {}) = 0;
  // Kills what the owner created (its intent ended).
  virtual boost::asio::awaitable<void> release(std::string owner) = 0;
  // `user` is done with the owner's sandbox; once no user is left for `idle`, it is killed (a
  // session that went quiet). Its backend timeout becomes `idle` plus a minute, so it also ends
  // if this process dies.
  virtual void leave(const std::string& owner, const std::string& user, milliseconds idle) = 0;
  // Kills sandboxes of earlier runs of agentd (their metadata says `agentd: "1"` and names
  // another run in `agentd_run`) and removes their files, whatever their owner: an intent
  // resumed after a crash gets a new sandbox, and its old one is a leftover too. With a
  // RunRegistry, a run that is still alive (another instance) keeps its sandboxes.
  virtual boost::asio::awaitable<void> cleanup_leftovers() = 0;
  // Announces this run (with a registry), cleans up leftovers now and, with a registry, again
  // every `sweep_interval` (a peer that died).
  virtual void start() = 0;
  // Kills everything it created.
  virtual boost::asio::awaitable<void> stop() = 0;
  virtual std::size_t alive() const noexcept = 0;
};

std::unique_ptr<Backend> make_local_backend(boost::asio::any_io_executor ex, const Config& config,
                                            core::Registry& metrics);
std::unique_ptr<Backend> make_e2b_backend(boost::asio::any_io_executor ex, const Config& config,
                                          net::HttpClient& client, core::Registry& metrics);
std::unique_ptr<Manager> make_manager(boost::asio::any_io_executor ex, Config config,
                                      std::unique_ptr<Backend> backend, core::Registry& metrics,
                                      std::shared_ptr<RunRegistry> runs = nullptr);

}  // namespace agentd::sandbox
