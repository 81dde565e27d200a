// What every sandbox backend shares: run() (a command to its end, output collected and bounded)
// and the exception Result::value() throws for a sandbox Error.
#include <boost/system/system_error.hpp>
#include <boost/throw_exception.hpp>
#include <chrono>

#include "agentd/sandbox/sandbox.hpp"

namespace agentd::sandbox {

void throw_exception_from_error(const Error& e, const boost::source_location& loc) {
  boost::throw_exception(boost::system::system_error(make_error_code(e.code), e.message), loc);
}

boost::asio::awaitable<Result<ExecResult>> run(Backend& backend, std::string id,
                                               ExecOptions options) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const std::size_t max_output = options.max_output;
  auto started = co_await backend.start(std::move(id), std::move(options));
  if (!started) co_return started.error();
  auto process = std::move(*started);
  ExecResult out;
  std::size_t kept = 0;
  // Past max_output the pieces are dropped but still read: a command must never block on a
  // full pipe because nobody listens.
  auto keep = [&](std::string& into, const std::string& data) {
    std::size_t room = max_output > kept ? max_output - kept : 0;
    if (data.size() > room) out.truncated = true;
    std::size_t n = std::min(room, data.size());
    into.append(data, 0, n);
    kept += n;
  };
  for (;;) {
    auto event = co_await process->next();
    if (!event) co_return event.error();
    if (!*event) break;
    const ExecEvent& e = **event;
    switch (e.kind) {
      case ExecEvent::Kind::started:
        break;
      case ExecEvent::Kind::stdout_data:
        keep(out.stdout_text, e.data);
        break;
      case ExecEvent::Kind::stderr_data:
        keep(out.stderr_text, e.data);
        break;
      case ExecEvent::Kind::exited:
        out.exit_code = e.exit_code;
        out.timed_out = e.timed_out;
        break;
    }
  }
  out.duration = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0);
  co_return out;
}

}  // namespace agentd::sandbox
