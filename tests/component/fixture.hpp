// An in-process agentd HTTP server on port 0 (plain or TLS), with test routes, run on its own
// loop thread; tests talk to it over real sockets.
#pragma once

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "agentd/api/api.hpp"
#include "agentd/core/metrics.hpp"
#include "agentd/net/server.hpp"
#include "support/http_client.hpp"
#include "support/tls_cert.hpp"

namespace agentd::test {

inline constexpr const char* kToken = "test-token-0123456789abcdef";
inline constexpr const char* kLimitedToken = "limited-token-0123456789abcdef";

// Authorization header for the all-scopes test client.
inline std::vector<std::pair<std::string, std::string>> auth(const char* token = kToken) {
  return {{"Authorization", std::string("Bearer ") + token}};
}

struct ServerOptions {
  net::ServerConfig config = fast_defaults();
  bool tls = false;
  static net::ServerConfig fast_defaults();
};

class TestServer {
 public:
  explicit TestServer(ServerOptions options = {});
  ~TestServer();

  std::uint16_t port() const noexcept { return port_; }
  std::optional<TlsClientOptions> tls() const;
  // Value of one series in /metrics text (`name{labels}` exactly as rendered); nullopt if absent.
  std::optional<double> metric(const std::string& series) const;
  // Polls until the series reaches at least `min` (counters are bumped after the socket is
  // closed, so a client may see the close first); returns the last value read.
  std::optional<double> wait_metric(const std::string& series, double min,
                                    std::chrono::milliseconds timeout = std::chrono::seconds(3)) const;
  void shutdown(std::chrono::milliseconds grace);  // starts it on the loop; returns at once
  bool wait_shutdown_done(std::chrono::milliseconds timeout);
  std::size_t connections();  // read on the loop thread

  // What the test routes saw.
  std::atomic<int> slow_started{0};
  std::atomic<int> producer_state{-1};  // SseStream::State when a producer ended
  std::atomic<int> events_pushed{0};

 private:
  void add_routes();
  boost::asio::io_context io_{1};
  core::Registry metrics_;
  std::optional<TestCert> cert_;
  std::unique_ptr<api::Api> api_;
  std::unique_ptr<net::HttpServer> server_;
  std::uint16_t port_ = 0;
  std::promise<void> done_;
  std::future<void> done_future_ = done_.get_future();
  std::thread thread_;
};

}  // namespace agentd::test
