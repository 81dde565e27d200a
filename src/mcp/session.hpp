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
    // notifications/resources/list_changed or notifications/prompts/list_changed
    std::function<void(const std::string& method)> on_list_changed;
    std::function<void(const std::string& why)> on_closed;  // the transport died or was closed
    // Set: agentd declares `sampling` and hands the server's sampling/createMessage to it.
    Sampler on_sampling;
    // True: agentd declares `elicitation` and relays the server's elicitation/create to the
    // caller of the request it belongs to (RequestHooks::on_elicit), else declines it.
    bool elicitation = false;
  };

  // What a caller attaches to one request.
  struct RequestHooks {
    std::function<void(const json&)> on_progress;
    std::shared_ptr<CancelToken> cancel;
    std::function<boost::asio::awaitable<RpcResult<json>>(json)> on_elicit;
    std::string client;      // for sampling attribution and logs
    std::string request_id;
  };

  Session(boost::asio::any_io_executor ex, const ServerConfig& config,
          std::unique_ptr<Transport> transport, std::string protocol_version, Handlers handlers);
  ~Session();

  // Starts the transport, sends initialize and notifications/initialized. The result is the
  // server's InitializeResult.
  boost::asio::awaitable<RpcResult<json>> open();
  // One request; `timeout` bounds the wait (then notifications/cancelled goes upstream).
  boost::asio::awaitable<RpcResult<json>> request(std::string method, json params,
                                                  std::chrono::milliseconds timeout,
                                                  RequestHooks hooks);
  // (Not a default argument: GCC 12 mis-destroys braced defaults inside co_await.)
  boost::asio::awaitable<RpcResult<json>> request(std::string method, json params,
                                                  std::chrono::milliseconds timeout) {
    return request(std::move(method), std::move(params), timeout, RequestHooks());
  }
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
    std::string method;
    RequestHooks hooks;
  };

  boost::asio::awaitable<void> read_loop();
  boost::asio::awaitable<RpcResult<json>> request_once(std::string method, json params,
                                                       std::chrono::milliseconds timeout,
                                                       RequestHooks hooks);
  // The answers to a 2026-07-28 `input_required` result's inputRequests, keyed alike.
  boost::asio::awaitable<RpcResult<json>> fulfil(json requests, RequestHooks hooks);
  void dispatch(json message);
  // A request from the server (sampling, elicitation): answered from a coroutine of its own.
  boost::asio::awaitable<void> serve_request(json id, std::string method, json params,
                                             std::shared_ptr<Waiter> related);
  std::shared_ptr<Waiter> related_call(const json& tag) const;
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
