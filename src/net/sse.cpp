// SSE framing, parsing and the bounded producer/connection stream.
#include "agentd/net/sse.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace agentd::net {
namespace asio = boost::asio;

namespace {
std::string one_line(std::string_view s) {
  std::string out(s);
  for (auto& c : out) {
    if (c == '\r' || c == '\n' || c == '\0') c = ' ';
  }
  return out;
}
}  // namespace

std::string format_sse(const SseEvent& e) {
  std::string out;
  out.reserve(e.data.size() + 32);
  if (!e.id.empty()) out += "id: " + one_line(e.id) + "\n";
  if (!e.event.empty()) out += "event: " + one_line(e.event) + "\n";
  if (e.retry_ms) out += "retry: " + std::to_string(*e.retry_ms) + "\n";
  // Every line of data gets its own field; \r\n and \r count as line ends too.
  std::string_view d = e.data;
  while (true) {
    auto pos = d.find_first_of("\r\n");
    out += "data: ";
    out.append(d.substr(0, pos));
    out += '\n';
    if (pos == std::string_view::npos) break;
    std::size_t skip = (d[pos] == '\r' && pos + 1 < d.size() && d[pos + 1] == '\n') ? 2 : 1;
    d.remove_prefix(pos + skip);
  }
  out += '\n';
  return out;
}

std::string format_sse_comment(std::string_view text) { return ": " + one_line(text) + "\n\n"; }

std::vector<SseEvent> SseParser::feed(std::string_view chunk) {
  std::vector<SseEvent> out;
  buffer_.append(chunk);
  std::size_t start = 0;
  std::size_t i = 0;
  while (i < buffer_.size()) {
    char c = buffer_[i];
    if (skip_lf_) {
      skip_lf_ = false;
      if (c == '\n' && i == start) {
        start = ++i;
        continue;
      }
    }
    if (c == '\n' || c == '\r') {
      line(std::string_view(buffer_).substr(start, i - start), out);
      if (c == '\r') {
        if (i + 1 < buffer_.size()) {
          if (buffer_[i + 1] == '\n') ++i;
        } else {
          skip_lf_ = true;
        }
      }
      start = ++i;
      continue;
    }
    ++i;
  }
  buffer_.erase(0, start);
  return out;
}

void SseParser::line(std::string_view l, std::vector<SseEvent>& out) {
  if (l.empty()) {
    if (has_data_) {
      SseEvent e;
      e.id = last_id_;
      e.event = event_.empty() ? "message" : event_;
      e.data = data_;
      if (!e.data.empty() && e.data.back() == '\n') e.data.pop_back();
      e.retry_ms = retry_;
      out.push_back(std::move(e));
    }
    data_.clear();
    event_.clear();
    retry_.reset();
    has_data_ = false;
    return;
  }
  if (l.front() == ':') return;
  auto colon = l.find(':');
  std::string_view field = l.substr(0, colon);
  std::string_view value;
  if (colon != std::string_view::npos) {
    value = l.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    data_.append(value);
    data_ += '\n';
    has_data_ = true;
  } else if (field == "event") {
    event_ = std::string(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) last_id_ = std::string(value);
  } else if (field == "retry") {
    if (!value.empty() && value.size() < 10 &&
        value.find_first_not_of("0123456789") == std::string_view::npos) {
      retry_ = std::stoi(std::string(value));
    }
  }
}

SseStream::SseStream(asio::any_io_executor ex, std::size_t max_queued)
    : wake_(std::move(ex)), max_queued_(max_queued == 0 ? 1 : max_queued) {}

bool SseStream::push(SseEvent e) {
  if (state_ != State::open) return false;
  if (queue_.size() >= max_queued_) {
    close(State::overflow);
    return false;
  }
  queue_.push_back(std::move(e));
  wake_.cancel();
  return true;
}

void SseStream::finish() {
  if (state_ != State::open) return;
  state_ = State::finished;
  wake_.cancel();
}

void SseStream::on_close(std::function<void(State)> fn) {
  if (state_ == State::open || state_ == State::finished) {
    on_close_.push_back(std::move(fn));
  } else {
    fn(state_);
  }
}

void SseStream::close(State why) {
  if (state_ != State::open && state_ != State::finished) return;
  state_ = why;
  if (why != State::finished) queue_.clear();
  wake_.cancel();
  auto callbacks = std::move(on_close_);
  on_close_.clear();
  for (auto& fn : callbacks) fn(why);
}

std::optional<SseEvent> SseStream::try_next() {
  if (queue_.empty()) return std::nullopt;
  SseEvent e = std::move(queue_.front());
  queue_.pop_front();
  return e;
}

asio::awaitable<std::optional<SseEvent>> SseStream::next(std::chrono::milliseconds keepalive) {
  for (;;) {
    if (!queue_.empty()) {
      SseEvent e = std::move(queue_.front());
      queue_.pop_front();
      co_return e;
    }
    if (state_ != State::open) co_return std::nullopt;
    wake_.expires_after(keepalive);
    auto [ec] = co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
    if (!ec) co_return std::nullopt;  // the keepalive interval passed with nothing to send
  }
}

}  // namespace agentd::net
