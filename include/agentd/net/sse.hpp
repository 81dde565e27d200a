// Server-Sent Events: framing (no I/O), an incremental parser, and the bounded stream that
// connects a producer to a connection.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace agentd::net {

struct SseEvent {
  std::string id;     // empty: no id line
  std::string event;  // empty: default "message"
  std::string data;   // split on newlines into several data lines
  std::optional<int> retry_ms;
};

// Wire text for one event, ending with the blank line. CR/LF in id/event become spaces.
std::string format_sse(const SseEvent& e);
std::string format_sse_comment(std::string_view text);  // ": text\n\n"

// Incremental parser following the WHATWG event-stream rules (for clients and tests).
class SseParser {
 public:
  std::vector<SseEvent> feed(std::string_view chunk);
  const std::string& last_event_id() const noexcept { return last_id_; }

 private:
  void line(std::string_view l, std::vector<SseEvent>& out);
  std::string buffer_;
  std::string data_, event_, last_id_;
  std::optional<int> retry_;
  bool has_data_ = false;
  bool skip_lf_ = false;
};

// Bounded queue between one producer and one connection writer, both on the loop thread.
// When the queue overflows (the client stopped reading) the stream closes itself with
// `overflow`; producers see push() return false and should stop.
class SseStream {
 public:
  enum class State { open, finished, client_gone, overflow, shutdown };

  SseStream(boost::asio::any_io_executor ex, std::size_t max_queued);

  bool push(SseEvent e);          // false once closed
  void finish();                  // producer is done: remaining events are flushed, then end
  bool closed() const noexcept { return state_ != State::open; }
  State state() const noexcept { return state_; }
  void on_close(std::function<void(State)> fn);  // called once when the consumer side closes

  // Consumer side (the server). next() yields an event, or nullopt: check `ended()` to tell
  // "keepalive interval passed" from "stream over".
  boost::asio::awaitable<std::optional<SseEvent>> next(std::chrono::milliseconds keepalive);
  // The next queued event without waiting (so the consumer can write what is queued at once).
  std::optional<SseEvent> try_next();
  bool ended() const noexcept { return state_ != State::open && queue_.empty(); }
  void close(State why);  // consumer gone (client_gone / shutdown / overflow)
  std::size_t queued() const noexcept { return queue_.size(); }

 private:
  boost::asio::steady_timer wake_;
  std::size_t max_queued_;
  std::deque<SseEvent> queue_;
  State state_ = State::open;
  std::vector<std::function<void(State)>> on_close_;
};

}  // namespace agentd::net
