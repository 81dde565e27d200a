// One Redis connection on the event loop: run() connects, reconnects with backoff and
// health-checks, while callers exec() pipelined commands and get their replies in order.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "agentd/core/metrics.hpp"
#include "agentd/store/redis_protocol.hpp"

namespace agentd::store::redis {

struct ConnectionOptions {
  RedisUrl url;
  std::string name = "agentd";  // CLIENT SETNAME, and in log lines
  bool want_client_id = false;  // asks CLIENT ID after each connect (for CLIENT UNBLOCK)
  milliseconds connect_timeout{2000};  // TCP connect plus the handshake
  milliseconds command_timeout{2000};  // exec()'s default
  milliseconds health_interval{1000};  // PING after this long without a reply
  milliseconds backoff_min{100};
  milliseconds backoff_max{5000};
};

// Optional metric objects (any may be null).
struct ConnectionMetrics {
  core::Counter* commands = nullptr;    // commands sent
  core::Counter* writes = nullptr;      // socket writes (commands / writes = pipelining depth)
  core::Counter* reconnects = nullptr;  // connections lost
  core::Gauge* up = nullptr;            // 1 while connected
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(asio::any_io_executor ex, ConnectionOptions options, ConnectionMetrics metrics = {});
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Spawns run(): connects at once and keeps reconnecting until stop().
  void start();
  // Closes the connection for good; pending and later calls fail with Errc::cancelled.
  void stop();

  bool connected() const noexcept { return connected_; }
  // CLIENT ID of the current connection (when asked for), 0 before the first.
  std::int64_t client_id() const noexcept { return client_id_; }
  // Why the connection is down (the last connect or I/O error); empty while connected.
  const std::string& last_error() const noexcept { return last_error_; }
  const RedisUrl& url() const noexcept { return options_.url; }
  const ConnectionOptions& options() const noexcept { return options_; }

  // Sends `commands` (encoded, `replies` commands) pipelined with every other caller's and
  // returns their replies in order. Fails at once with Errc::unavailable while not connected,
  // with Errc::timeout when no answer came within `timeout` (the late replies are dropped).
  // Error replies are returned as replies, not as errors.
  asio::awaitable<KvResult<std::vector<Reply>>> exec(std::string commands, std::size_t replies,
                                                     milliseconds timeout);
  asio::awaitable<KvResult<std::vector<Reply>>> exec(std::string commands, std::size_t replies);

  // true once connected (at once when already), false when `limit` passed or stopped.
  asio::awaitable<bool> wait_connected(milliseconds limit);

  // Called on every change between up and down (down with the reason); not after stop().
  void on_state(std::function<void(bool up, const std::string& why)> listener);

 private:
  struct Call;
  using Socket = asio::ip::tcp::socket;

  asio::awaitable<void> run();
  asio::awaitable<KvResult<std::shared_ptr<Socket>>> connect_once();
  asio::awaitable<std::string> serve(std::shared_ptr<Socket> socket);
  asio::awaitable<std::string> read_loop(std::shared_ptr<Socket> socket);
  asio::awaitable<std::string> write_loop(std::shared_ptr<Socket> socket);
  asio::awaitable<std::string> health_loop();
  void complete(std::uint64_t id, KvResult<std::vector<Reply>> result);
  void fail_all(const Error& error);
  void set_state(bool up, const std::string& why);

  asio::any_io_executor ex_;
  ConnectionOptions options_;
  ConnectionMetrics metrics_;
  std::shared_ptr<Socket> socket_;  // the connection, or the one being set up
  std::shared_ptr<asio::ip::tcp::resolver> resolver_;
  std::unique_ptr<ReplyParser> parser_;
  ReplyRouter router_;
  std::unordered_map<std::uint64_t, std::shared_ptr<Call>> calls_;
  std::string out_;  // encoded commands not yet handed to the socket
  asio::steady_timer write_signal_;
  asio::steady_timer backoff_timer_;
  std::vector<std::shared_ptr<Call>> state_waiters_;
  std::vector<std::function<void(bool, const std::string&)>> listeners_;
  std::chrono::steady_clock::time_point last_read_{};
  std::int64_t client_id_ = 0;
  std::string last_error_ = "not connected yet";
  enum class State { initial, up, down } state_ = State::initial;
  bool connected_ = false;
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace agentd::store::redis
