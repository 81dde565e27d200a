// One MCP client session with one upstream server over a Transport: initialize, requests
// correlated by id with deadlines, progress routed to the caller, cancellation sent upstream,
// and the server's own requests (ping, roots/list) answered.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "agentd/mcp/multiplexer.hpp"
#include "transport.hpp"

namespace agentd::mcp {

class Session : public std::enable_shared_from_this<Session> {
 public:
  struct Handlers {
    std::function<void()> on_tools_changed;
    std::function<void(const std::string& why)> on_closed;  // the transport died or was closed
  };

  Session(boost::asio::any_io_executor ex, const ServerConfig& config,
          std::unique_ptr<Transport> transport, std::string protocol_version, Handlers handlers);
  ~Session();

  // Starts the transport, sends initialize and notifications/initialized. The result is the
  // server's InitializeResult.
  boost::asio::awaitable<RpcResult<json>> open();
  // One request; `timeout` bounds the wait (then notifications/cancelled goes upstream).
  boost::asio::awaitable<RpcResult<json>> request(
      std::string method, json params, std::chrono::milliseconds timeout,
      std::function<void(const json&)> on_progress = {},
      std::shared_ptr<CancelToken> cancel = nullptr);
  boost::asio::awaitable<void> notify(std::string method, json params = nullptr);
  boost::asio::awaitable<void> close();

  bool alive() const noexcept { return !closed_; }
  const json& server_info() const noexcept { return init_result_; }
  std::size_t in_flight() const noexcept { return pending_.size(); }

 private:
  struct Waiter {
    explicit Waiter(boost::asio::any_io_executor ex) : timer(ex) {}
    boost::asio::steady_timer timer;
    std::optional<RpcResult<json>> outcome;
    std::function<void(const json&)> on_progress;
  };

  boost::asio::awaitable<void> read_loop();
  void dispatch(json message);
  void answer(const json& id, RpcResult<json> result);
  void finish(std::int64_t id, RpcResult<json> outcome);
  void fail_all(const std::string& why);
  void send_later(json message);  // fire a message from a non-coroutine context (owned task)

  boost::asio::any_io_executor ex_;
  ServerConfig config_;
  std::unique_ptr<Transport> transport_;
  std::string protocol_version_;
  Handlers handlers_;
  std::int64_t next_id_ = 1;
  std::map<std::int64_t, std::shared_ptr<Waiter>> pending_;
  std::map<std::string, std::int64_t> progress_;  // our progress token → request id
  json init_result_;
  bool closed_ = false;
  bool reading_ = false;
};

}  // namespace agentd::mcp
