// Event-loop lag monitor and the loop runner.
#include "agentd/core/runtime.hpp"

#include <memory>

namespace agentd::core {
namespace {

struct LagMonitor : std::enable_shared_from_this<LagMonitor> {
  LagMonitor(asio::io_context& io, Registry& r, std::chrono::milliseconds i)
      : timer(io),
        interval(i),
        last(r.gauge("agentd_event_loop_lag_last_seconds",
                     "How late the last periodic loop timer fired")),
        hist(r.histogram("agentd_event_loop_lag_seconds", "Event-loop lag samples",
                         latency_buckets())) {}

  void arm() {
    expected = std::chrono::steady_clock::now() + interval;
    timer.expires_at(expected);
    timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec) return;
      auto lag = std::chrono::duration<double>(std::chrono::steady_clock::now() - self->expected);
      double s = std::max(0.0, lag.count());
      self->last.set(s);
      self->hist.observe(s);
      self->arm();
    });
  }

  asio::steady_timer timer;
  std::chrono::milliseconds interval;
  std::chrono::steady_clock::time_point expected;
  Gauge& last;
  Histogram& hist;
};

}  // namespace

void start_loop_lag_monitor(asio::io_context& io, Registry& registry,
                            std::chrono::milliseconds interval) {
  std::make_shared<LagMonitor>(io, registry, interval)->arm();
}

void run_loop(asio::io_context& io, std::chrono::microseconds busy_poll) {
  if (busy_poll.count() <= 0) {
    io.run();
    return;
  }
  using clock = std::chrono::steady_clock;
  auto last_work = clock::now();
  while (!io.stopped()) {
    if (io.poll() > 0) {
      last_work = clock::now();
      continue;
    }
    if (io.stopped()) break;
    if (clock::now() - last_work < busy_poll) continue;
    // Nothing for a while: block until the next handler.
    if (io.run_one() == 0) break;
    last_work = clock::now();
  }
}

}  // namespace agentd::core
