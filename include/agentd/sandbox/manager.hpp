// Who owns which sandbox: one sandbox per owner (an intent or a session), created on first use
// or pre-warmed, killed when the owner ends, when it times out, and at start for what a
// previous run of agentd left behind.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <memory>
#include <string>

#include "agentd/core/metrics.hpp"
#include "agentd/sandbox/config.hpp"
#include "agentd/sandbox/sandbox.hpp"

namespace agentd::net {
class HttpClient;
}

namespace agentd::sandbox {

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
  virtual boost::asio::awaitable<Result<Acquired>> acquire(std::string owner, CreateOptions options) = 0;
  // Starts creating the owner's sandbox in the background (a plan that will need one).
  virtual void prewarm(std::string owner, CreateOptions options) = 0;
  // Kills what the owner created (its intent or session ended).
  virtual boost::asio::awaitable<void> release(std::string owner) = 0;
  // Kills sandboxes a previous run of agentd created (their metadata says `agentd: "1"` and
  // names another run in `agentd_run`) and removes their files, whatever their owner: an intent
  // resumed after a crash gets a new sandbox, and its old one is a leftover too.
  virtual boost::asio::awaitable<void> cleanup_leftovers() = 0;
  // Kills everything it created.
  virtual boost::asio::awaitable<void> stop() = 0;
  virtual std::size_t alive() const noexcept = 0;
};

std::unique_ptr<Backend> make_local_backend(boost::asio::any_io_executor ex, const Config& config,
                                            core::Registry& metrics);
std::unique_ptr<Backend> make_e2b_backend(boost::asio::any_io_executor ex, const Config& config,
                                          net::HttpClient& client, core::Registry& metrics);
std::unique_ptr<Manager> make_manager(boost::asio::any_io_executor ex, Config config,
                                      std::unique_ptr<Backend> backend, core::Registry& metrics);

}  // namespace agentd::sandbox
