// One Redis connection on the event loop: run() connects, reconnects with backoff and
// health-checks, while callers exec() pipelined commands and get their replies in order.
// Plain TCP, or TLS for rediss:// (the same code, one branch at each read and write).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "agentd/core/metrics.hpp"
#include "agentd/store/redis_protocol.hpp"

namespace boost::asio::ssl {
class context;
}

namespace agentd::store::redis {

// The TLS client context for rediss:// connections: system trust store plus config.ca_file,
// the client certificate and key when given, peer verification unless turned off. Throws
// std::runtime_error naming the store.redis_tls key whose file cannot be loaded.
std::shared_ptr<asio::ssl::context> make_tls_context(const RedisTlsConfig& config);

struct ConnectionOptions {
  RedisUrl url;
  // Required when url.tls (make_tls_context); shared by the connections to one server.
  std::shared_ptr<asio::ssl::context> tls;
  std::string tls_server_name;  // SNI and the name verified; empty: url.host
  bool tls_verify = true;       // match the certificate to the name (the context checks the chain)
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
  // with Errc::timeout when no answer came within `timeout` (the late replies are dropped),
  // with Errc::cancelled when the caller's operation is cancelled. Error replies are returned
  // as replies, not as errors. Callers must run on this connection's executor (one thread): a
  // caller is resumed directly by whatever completes its call (usually the reader, which then
  // sends what the resumed callers queued), not through the scheduler.
  asio::awaitable<KvResult<std::vector<Reply>>> exec(std::string commands, std::size_t replies,
                                                     milliseconds timeout);
  asio::awaitable<KvResult<std::vector<Reply>>> exec(std::string commands, std::size_t replies);
  // One command, encoded straight into the write buffer, with the default timeout: its reply.
  asio::awaitable<KvResult<Reply>> command(std::span<const std::string_view> args);

  // true once connected (at once when already), false when `limit` passed or stopped.
  asio::awaitable<bool> wait_connected(milliseconds limit);

  // Called on every change between up and down (down with the reason); not after stop().
  void on_state(std::function<void(bool up, const std::string& why)> listener);

 private:
  struct Call;
  struct StateWaiter;
  struct Link;  // the TCP socket and, for rediss://, the TLS stream over it
  using Replies = KvResult<std::vector<Reply>>;

  asio::awaitable<void> run();
  asio::awaitable<KvResult<std::shared_ptr<Link>>> connect_once();
  asio::awaitable<std::string> tls_handshake(Link& link);
  asio::awaitable<std::string> serve(std::shared_ptr<Link> socket);
  asio::awaitable<std::string> read_loop(std::shared_ptr<Link> socket);
  asio::awaitable<std::string> health_loop();
  std::optional<Error> refuse() const;
  Call* enqueue(std::size_t replies, milliseconds timeout);
  asio::awaitable<void> suspend(Call* call);
  void done_with(Call* call);
  void wake(Call* call);
  void wake_later(Call* call, Error error);
  void release(Call* call);
  void arm_sweep(std::chrono::steady_clock::time_point at);
  void sweep();
  void schedule_flush();
  void flush();
  void write_rest();
  void fail_writes(const boost::system::error_code& ec);
  void fail_all(const Error& error);
  void set_state(bool up, const std::string& why);

  asio::any_io_executor ex_;
  ConnectionOptions options_;
  ConnectionMetrics metrics_;
  std::shared_ptr<Link> socket_;  // the connection, or the one being set up
  std::shared_ptr<asio::ip::tcp::resolver> resolver_;
  std::unique_ptr<ReplyParser> parser_;
  ReplyRouter router_;
  // Calls in the order they were written (the order of their replies), and a pool of records
  // for them: no allocation and no timer per command once the pool has grown.
  std::deque<Call*> queue_;
  std::deque<Call> calls_;
  std::vector<Call*> free_;
  asio::steady_timer sweep_timer_;  // fires at the earliest deadline of a waiting call
  std::chrono::steady_clock::time_point sweep_at_{};
  bool sweep_armed_ = false;
  std::string out_;   // encoded commands not yet handed to the socket
  std::string wbuf_;  // the rest of a write the kernel did not take at once
  bool writing_ = false;        // wbuf_ is being written
  bool flush_posted_ = false;   // a flush is queued on the executor
  bool in_replies_ = false;     // read_loop is handing out replies (it flushes afterwards)
  std::string write_error_;     // why the last write failed (ends read_loop)
  asio::steady_timer backoff_timer_;
  std::vector<std::shared_ptr<StateWaiter>> state_waiters_;
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
