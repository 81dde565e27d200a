// The stdio transport: an upstream MCP server run as a child process, JSON-RPC messages as lines
// on its stdin and stdout, its stderr logged.
//
// Everything runs on the caller's executor (one thread, no blocking waits). A shared `Child`
// holds the state; three owned tasks work on it: the stdout reader (lines -> a byte-bounded
// inbox), the stderr reader (lines -> the log) and the exit watcher (pidfd via Boost.Process).
// One writer task drains a FIFO outbox, so messages from concurrent send() calls never
// interleave and a caller that gives up mid-write cannot leave half a line on the child's stdin.
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/writable_pipe.hpp>
#include <boost/asio/write.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/start_dir.hpp>
#include <boost/process/v2/stdio.hpp>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <exception>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "transport.hpp"

extern char** environ;

namespace agentd::mcp {
namespace {

namespace asio = boost::asio;
namespace bp = boost::process::v2;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

constexpr std::size_t kReadChunk = 64 * 1024;
constexpr std::size_t kMaxStderrLine = 4096;  // longer stderr lines are logged truncated
constexpr std::size_t kLogSnippet = 200;      // of a skipped stdout line
constexpr std::size_t kMinInbox = 64 * 1024;
constexpr auto kStdinGrace = 2s;  // close(): stdin closed -> SIGTERM
constexpr auto kTermGrace = 2s;   // SIGTERM -> SIGKILL
constexpr auto kKillGrace = 2s;   // SIGKILL -> give up waiting (the watcher still reaps)
// After the child exits: how long a pipe may stay silent before agentd stops reading it (what
// the child spawned may hold it open), and how long the end of stdout waits for the exit status.
constexpr auto kDrainGrace = 1s;
constexpr const char* kDefaultPath = "/usr/local/bin:/usr/bin:/bin";

// Text safe to put in a log line: at most `max` bytes, not cutting a UTF-8 sequence, control
// characters replaced so a child cannot forge log lines.
std::string printable(std::string_view s, std::size_t max) {
  bool cut = s.size() > max;
  if (cut) {
    std::size_t n = max;
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
    s = s.substr(0, n);
  }
  std::string out;
  out.reserve(s.size() + 4);
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    out.push_back(u < 0x20 || u == 0x7F ? '?' : c);
  }
  if (cut) out += "...";
  return out;
}

// Splits a byte stream into lines (without "\n" or "\r\n"). A line over `max` bytes is not
// buffered: its first `keep` bytes are kept and the rest is counted up to the next newline, so
// memory stays bounded whatever the peer sends. No I/O.
class LineSplitter {
 public:
  struct Line {
    std::string text;
    std::size_t size = 0;  // of the whole line
    bool overflow() const noexcept { return size > text.size(); }
  };

  LineSplitter(std::size_t max, std::size_t keep) : max_(max), keep_(std::min(keep, max)) {}

  template <class F>
  void feed(std::string_view data, F&& on_line) {
    while (!data.empty()) {
      auto nl = data.find('\n');
      add(data.substr(0, nl));
      if (nl == std::string_view::npos) return;
      data.remove_prefix(nl + 1);
      emit(on_line);
    }
  }

  // At end of stream: an unterminated last line still counts.
  template <class F>
  void finish(F&& on_line) {
    if (size_ > 0) emit(on_line);
  }

 private:
  void add(std::string_view part) {
    if (!overflow_ && size_ + part.size() > max_) {
      overflow_ = true;
      if (line_.size() < keep_) {
        line_.append(part.substr(0, keep_ - line_.size()));
      } else {
        line_.resize(keep_);
      }
      line_.shrink_to_fit();  // it may have held almost `max` bytes
    } else if (!overflow_) {
      line_.append(part);
    }
    size_ += part.size();
  }

  template <class F>
  void emit(F& on_line) {
    Line l{std::move(line_), size_};
    if (!overflow_ && !l.text.empty() && l.text.back() == '\r') {
      l.text.pop_back();
      l.size = l.text.size();
    }
    line_ = {};
    size_ = 0;
    overflow_ = false;
    on_line(std::move(l));
  }

  std::size_t max_;
  std::size_t keep_;
  std::string line_;
  std::size_t size_ = 0;
  bool overflow_ = false;
};

// Wakes coroutines waiting for a change of shared state. One thread: waiters check their
// condition, then wait, with no suspension in between, so no wake-up is lost.
class Signal {
 public:
  void notify() {
    for (auto* t : waiters_) t->cancel();
  }

  // Returns at notify() or at `deadline`, whichever comes first (spurious returns are fine).
  asio::awaitable<void> wait(Clock::time_point deadline = Clock::time_point::max()) {
    asio::steady_timer timer(co_await asio::this_coro::executor, deadline);
    waiters_.push_front(&timer);
    struct Unlink {
      std::list<asio::steady_timer*>& list;
      std::list<asio::steady_timer*>::iterator it;
      ~Unlink() { list.erase(it); }
    } unlink{waiters_, waiters_.begin()};
    co_await timer.async_wait(kTuple);
  }

 private:
  std::list<asio::steady_timer*> waiters_;
};

std::string signal_name(int sig) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  if (const char* abbrev = ::sigabbrev_np(sig)) return std::string("SIG") + abbrev;
#endif
  return "signal " + std::to_string(sig);
}

// "exited with code 3", "exited on signal 9 (SIGKILL)"; `status` as from waitpid, -1 unknown.
std::string describe_status(int status) {
  if (status < 0) return "exited (status unknown)";
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    return "exited on signal " + std::to_string(sig) + " (" + signal_name(sig) + ")";
  }
  return "exited (status " + std::to_string(status) + ")";
}

// A pipe to a dead reader must be an EPIPE error, not the death of agentd. Process-wide, once,
// and only when nobody installed a handler of their own.
void ignore_sigpipe() {
  static const bool done = [] {
    struct sigaction sa {};
    if (::sigaction(SIGPIPE, nullptr, &sa) == 0 && sa.sa_handler == SIG_DFL) {
      sa.sa_handler = SIG_IGN;
      ::sigemptyset(&sa.sa_mask);
      sa.sa_flags = 0;
      ::sigaction(SIGPIPE, &sa, nullptr);
    }
    return true;
  }();
  (void)done;
}

bool is_executable_file(const std::string& path, int& error) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    error = errno;
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    error = EACCES;
    return false;
  }
  if (::access(path.c_str(), X_OK) != 0) {
    error = errno;
    return false;
  }
  return true;
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty() || name.starts_with('/')) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

struct Resolved {
  std::string exe;    // what to exec; empty on error
  std::string error;  // why not
};

// What to exec for `command`, like execvp: names with a '/' as they are, others searched in
// `path`. Relative results are relative to the child's working directory `cwd` (the child
// changes directory before exec), so they are checked there.
Resolved resolve_command(const std::string& command, std::string_view path,
                         const std::string& cwd) {
  if (command.empty()) return {{}, "the command is empty"};
  int error = 0;
  if (command.find('/') != std::string::npos) {
    if (is_executable_file(join_path(cwd, command), error)) return {command, {}};
    return {{}, ::strerror(error)};
  }
  while (true) {
    auto colon = path.find(':');
    std::string dir(path.substr(0, colon));
    // An empty entry means "the current directory" to execvp; too surprising for a daemon.
    if (!dir.empty()) {
      auto candidate = join_path(dir, command);
      if (is_executable_file(join_path(cwd, candidate), error)) return {candidate, {}};
    }
    if (colon == std::string_view::npos) break;
    path.remove_prefix(colon + 1);
  }
  return {{}, "not found in PATH"};
}

// "stdio: npx -y server": no environment (values may be secrets).
std::string describe_command(const ServerConfig& config) {
  std::string out = "stdio: " + config.command;
  for (const auto& a : config.args) out += " " + a;
  return out;
}

// Waits for a child that is about to exit and reaps it.
asio::awaitable<void> reap(asio::any_io_executor ex, bp::pid_type pid) {
  std::optional<bp::process> child;
  try {
    child.emplace(ex, pid);
  } catch (const std::exception&) {
    int status = 0;
    ::waitpid(pid, &status, 0);  // no pidfd: a blocking wait, for a child already in _exit
    co_return;
  }
  co_await child->async_wait(kTuple);
  child->detach();
}

// Runs in the child between fork and exec (async-signal-safe calls only).
struct ChildSetup {
  template <class Launcher, class Path, class Argv>
  bp::error_code on_exec_setup(Launcher&, const Path&, const Argv&) {
    // Its own process group, so that signals reach what it spawned (npx -> sh -> node), and a
    // terminal's Ctrl-C reaches agentd only, which then shuts children down in order.
    ::setpgid(0, 0);
    // An ignored signal stays ignored across exec; agentd ignores SIGPIPE, the child must not.
    struct sigaction sa {};
    sa.sa_handler = SIG_DFL;
    ::sigemptyset(&sa.sa_mask);
    ::sigaction(SIGPIPE, &sa, nullptr);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    return {};
  }
  // After a failed exec, Boost 1.81 calls exit(), which runs agentd's atexit handlers and
  // static destructors in the child; leave with _exit instead. 1.81 detects this hook with a
  // 5-argument signature but calls it with 4, hence both.
  template <class Launcher, class Path, class Argv>
  void on_exec_error(Launcher&, const Path&, const Argv&, const bp::error_code&) {
    ::_exit(127);
  }
  template <class Launcher, class Path, class Argv>
  void on_exec_error(Launcher&, const bp::error_code&, const Path&, const Argv&,
                     const bp::error_code&) {
    ::_exit(127);
  }
};

class Child : public std::enable_shared_from_this<Child> {
 public:
  Child(asio::any_io_executor ex, ServerConfig config, std::size_t max_message_bytes)
      : ex_(std::move(ex)),
        config_(std::move(config)),
        max_bytes_(std::max<std::size_t>(max_message_bytes, 1)),
        inbox_limit_(std::max(max_bytes_, kMinInbox)),
        proc_(ex_),
        in_(ex_),
        out_(ex_),
        err_(ex_) {}

  static asio::awaitable<TResult<void>> start(std::shared_ptr<Child> self);
  static asio::awaitable<TResult<void>> send(std::shared_ptr<Child> self, json message);
  static asio::awaitable<TResult<json>> receive(std::shared_ptr<Child> self);
  static asio::awaitable<void> close(std::shared_ptr<Child> self);
  // The transport is destroyed without close(): SIGKILL now; the exit watcher reaps the child
  // on the loop, or, if the loop is gone first, Boost.Process's destructor does (SIGKILL +
  // waitpid, which returns at once for a killed child).
  void abandon();

 private:
  struct Incoming {
    json message;
    std::size_t bytes;
  };
  struct Outgoing {
    std::uint64_t seq;
    std::string line;
  };

  static asio::awaitable<void> read_stdout(std::shared_ptr<Child> self);
  static asio::awaitable<void> read_stderr(std::shared_ptr<Child> self);
  static asio::awaitable<void> watch_exit(std::shared_ptr<Child> self);
  static asio::awaitable<void> write_loop(std::shared_ptr<Child> self);
  static asio::awaitable<void> drain_pipes(std::shared_ptr<Child> self);
  void spawn(asio::awaitable<void> task, const char* what);

  void on_stdout_line(LineSplitter::Line line);
  void end_of_stdout();
  void stop_writing(const std::string& why);
  void close_pipe(auto& pipe) {
    boost::system::error_code ignored;
    pipe.close(ignored);
  }
  void signal_child(int sig);
  asio::awaitable<bool> wait_exit(Clock::time_point deadline);
  std::string exit_text() const {
    return "child process (pid " + std::to_string(pid_) + ") " + describe_status(wait_status_);
  }

  asio::any_io_executor ex_;
  ServerConfig config_;
  std::string name_ = config_.name;
  std::size_t max_bytes_;
  std::size_t inbox_limit_;

  bp::process proc_;
  bp::pid_type pid_ = -1;
  asio::writable_pipe in_;
  asio::readable_pipe out_;
  asio::readable_pipe err_;

  bool started_ = false;
  bool closing_ = false;  // close() or abandon() began
  bool closed_ = false;   // close() finished
  Signal closed_signal_;

  // stdout -> receive()
  std::deque<Incoming> inbox_;
  std::size_t inbox_bytes_ = 0;
  Signal inbox_signal_;       // a message arrived or reading ended
  Signal room_signal_;        // receive() took a message (or closing)
  bool stdout_done_ = false;  // EOF or read error
  bool stderr_done_ = false;
  Signal pipes_signal_;                // stdout or stderr ended, stdout paused or resumed
  bool stdout_paused_ = false;         // the inbox is full
  Clock::time_point stdout_activity_;  // last data read (or resumed reading)
  Clock::time_point stderr_activity_;
  bool reader_done_ = false;  // stdout done and the reason known
  std::string dead_reason_;

  // send() -> stdin
  std::deque<Outgoing> outbox_;
  std::uint64_t next_seq_ = 0;
  std::uint64_t written_seq_ = 0;
  bool stdin_done_ = false;
  std::string write_error_;
  Signal outbox_signal_;
  Signal sent_signal_;

  // exit
  bool exited_ = false;
  int wait_status_ = -1;
  Signal exit_signal_;
};

void Child::spawn(asio::awaitable<void> task, const char* what) {
  asio::co_spawn(ex_, std::move(task),
                 [weak = weak_from_this(), name = name_, what](std::exception_ptr e) {
                   if (!e) return;
                   std::string why = "unknown error";
                   try {
                     std::rethrow_exception(e);
                   } catch (const std::exception& ex) {
                     why = ex.what();
                   } catch (...) {
                   }
                   spdlog::error("mcp[{}]: stdio {} failed: {}", name, what, why);
                   // Never leave callers waiting on a task that is gone.
                   if (auto self = weak.lock()) {
                     if (!self->reader_done_) {
                       self->reader_done_ = true;
                       self->dead_reason_ = std::string("internal error in the ") + what;
                       self->inbox_signal_.notify();
                     }
                     self->stop_writing(std::string("internal error in the ") + what);
                   }
                 });
}

asio::awaitable<TResult<void>> Child::start(std::shared_ptr<Child> self) {
  if (self->closing_) co_return TransportError{"the transport is closed"};
  if (self->started_) co_return TResult<void>();
  const ServerConfig& config = self->config_;
  const std::string what = "cannot start '" + config.command + "'";

  // Environment: agentd's, with the configured entries added or replacing.
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv(*e);
    auto eq = kv.find('=');
    if (eq == std::string_view::npos || eq == 0) continue;
    if (config.env.count(std::string(kv.substr(0, eq)))) continue;
    env.emplace_back(kv);
  }
  for (const auto& [k, v] : config.env) env.push_back(k + "=" + v);
  std::vector<const char*> envp;
  envp.reserve(env.size() + 1);
  for (const auto& e : env) envp.push_back(e.c_str());
  envp.push_back(nullptr);

  std::string path = kDefaultPath;
  if (auto it = config.env.find("PATH"); it != config.env.end()) {
    path = it->second;
  } else if (const char* p = std::getenv("PATH")) {
    path = p;
  }
  if (!config.cwd.empty()) {
    struct stat st {};
    if (::stat(config.cwd.c_str(), &st) != 0) {
      co_return TransportError{what + ": working directory '" + config.cwd +
                               "': " + ::strerror(errno)};
    }
    if (!S_ISDIR(st.st_mode)) {
      co_return TransportError{what + ": working directory '" + config.cwd +
                               "' is not a directory"};
    }
  }
  auto resolved = resolve_command(config.command, path, config.cwd);
  if (resolved.exe.empty()) co_return TransportError{what + ": " + resolved.error};
  const std::string& exe = resolved.exe;

  ignore_sigpipe();
  // Boost 1.81's process_environment::on_setup is declared but not defined in header-only
  // builds, so the launcher's `env` is set directly; process_start_dir with "." is a no-op.
  bp::posix::default_launcher launcher;
  launcher.env = envp.data();
  bp::error_code ec;
  std::string failure;
  try {
    // The stdio initializer holds the child's ends of the pipes: it must be gone right after
    // the launch, or the parent keeps them open and never sees EOF.
    bp::process_stdio stdio{self->in_, self->out_, self->err_};
    if (stdio.in.ec || stdio.out.ec || stdio.err.ec) {
      ec = stdio.in.ec ? stdio.in.ec : stdio.out.ec ? stdio.out.ec : stdio.err.ec;
      failure = "cannot create pipes: " + ec.message();
    } else {
      self->proc_ =
          launcher(self->ex_, ec, exe, config.args, stdio,
                   bp::process_start_dir(config.cwd.empty() ? "." : config.cwd), ChildSetup{});
      if (ec) failure = ec.message();
    }
  } catch (const std::exception& e) {
    // E.g. pidfd_open refused (old kernel, seccomp): the child runs but cannot be watched.
    failure = e.what();
    if (launcher.pid > 0 && !self->proc_.is_open()) {
      ::kill(launcher.pid, SIGKILL);
      int status = 0;
      ::waitpid(launcher.pid, &status, 0);  // just killed: returns at once
      launcher.pid = -1;
    }
  }
  if (!failure.empty()) {
    self->close_pipe(self->in_);
    self->close_pipe(self->out_);
    self->close_pipe(self->err_);
    if (launcher.pid > 0 && !self->proc_.is_open()) {
      // 1.81 forgets the child whose exec failed: reap it (it _exits at once) so no zombie stays.
      co_await reap(self->ex_, launcher.pid);
    }
    co_return TransportError{what + ": " + failure};
  }

  self->pid_ = self->proc_.id();
  self->started_ = true;
  spdlog::info("mcp[{}]: started {} (pid {})", self->name_, describe_command(config), self->pid_);
  self->spawn(read_stdout(self), "stdout reader");
  self->spawn(read_stderr(self), "stderr reader");
  self->spawn(watch_exit(self), "exit watcher");
  self->spawn(write_loop(self), "stdin writer");
  co_return TResult<void>();
}

asio::awaitable<TResult<void>> Child::send(std::shared_ptr<Child> self, json message) {
  if (self->closing_) co_return TransportError{"the transport is closed"};
  if (!self->started_) co_return TransportError{"the transport is not started"};
  if (self->exited_) co_return TransportError{self->exit_text()};
  if (self->stdin_done_) co_return TransportError{self->write_error_};
  // dump() escapes control characters, so a message is always one line; invalid UTF-8 is
  // replaced rather than thrown about.
  std::string line = message.dump(-1, ' ', false, json::error_handler_t::replace);
  line += '\n';
  auto seq = ++self->next_seq_;
  self->outbox_.push_back(Outgoing{seq, std::move(line)});
  self->outbox_signal_.notify();
  while (self->written_seq_ < seq && !self->stdin_done_) co_await self->sent_signal_.wait();
  if (self->written_seq_ >= seq) co_return TResult<void>();
  co_return TransportError{self->write_error_};
}

asio::awaitable<TResult<json>> Child::receive(std::shared_ptr<Child> self) {
  for (;;) {
    if (self->closing_) co_return TransportError{"the transport is closed"};
    if (!self->inbox_.empty()) {
      Incoming item = std::move(self->inbox_.front());
      self->inbox_.pop_front();
      self->inbox_bytes_ -= item.bytes;
      self->room_signal_.notify();
      co_return TResult<json>(boost::system::in_place_value, std::move(item.message));
    }
    if (!self->started_) co_return TransportError{"the transport is not started"};
    if (self->reader_done_) co_return TransportError{self->dead_reason_};
    co_await self->inbox_signal_.wait();
  }
}

asio::awaitable<void> Child::close(std::shared_ptr<Child> self) {
  if (self->closing_) {  // a second call waits for the first
    while (!self->closed_) co_await self->closed_signal_.wait();
    co_return;
  }
  self->closing_ = true;
  self->inbox_.clear();
  self->inbox_bytes_ = 0;
  self->inbox_signal_.notify();
  self->room_signal_.notify();
  if (!self->started_) {
    self->closed_ = true;
    co_return;
  }
  // (co_await results go to variables: `if (!co_await ...)` nested in another such `if` crashed
  // with SIGILL on resumption with GCC 12.)
  self->stop_writing("the transport is closed");  // closes stdin: the polite request
  bool exited = co_await self->wait_exit(Clock::now() + kStdinGrace);
  if (!exited) {
    spdlog::info("mcp[{}]: child (pid {}) still running {}s after stdin closed; sending SIGTERM",
                 self->name_, self->pid_,
                 std::chrono::duration_cast<std::chrono::seconds>(kStdinGrace).count());
    self->signal_child(SIGTERM);
    exited = co_await self->wait_exit(Clock::now() + kTermGrace);
  }
  if (!exited) {
    spdlog::warn("mcp[{}]: child (pid {}) ignored SIGTERM; sending SIGKILL", self->name_,
                 self->pid_);
    self->signal_child(SIGKILL);
    exited = co_await self->wait_exit(Clock::now() + kKillGrace);
  }
  if (!exited) {
    spdlog::error("mcp[{}]: child (pid {}) survives SIGKILL; it is reaped when it dies",
                  self->name_, self->pid_);
  }
  co_await drain_pipes(self);
  self->closed_ = true;
  self->closed_signal_.notify();
  spdlog::info("mcp[{}]: closed", self->name_);
}

void Child::abandon() {
  if (!started_ || closing_) return;
  closing_ = true;
  if (!exited_) {
    spdlog::warn("mcp[{}]: transport destroyed without close(); killing pid {}", name_, pid_);
    signal_child(SIGKILL);
  }
  inbox_.clear();
  inbox_bytes_ = 0;
  stop_writing("the transport is closed");
  close_pipe(out_);
  close_pipe(err_);
  closed_ = true;
  inbox_signal_.notify();
  room_signal_.notify();
  closed_signal_.notify();
}

void Child::signal_child(int sig) {
  if (exited_ || pid_ <= 0) return;
  // Only while the child is unreaped is its pid (and group id) surely still its own.
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) return;
  if (::kill(-pid_, sig) != 0) ::kill(pid_, sig);
}

asio::awaitable<bool> Child::wait_exit(Clock::time_point deadline) {
  auto self = shared_from_this();
  while (!exited_ && Clock::now() < deadline) co_await exit_signal_.wait(deadline);
  co_return exited_;
}

void Child::stop_writing(const std::string& why) {
  if (stdin_done_) return;
  stdin_done_ = true;
  write_error_ = why;
  outbox_.clear();
  close_pipe(in_);  // cancels a write in progress; the child sees EOF on stdin
  outbox_signal_.notify();
  sent_signal_.notify();
}

void Child::on_stdout_line(LineSplitter::Line line) {
  if (closing_) return;
  if (line.overflow()) {
    spdlog::warn("mcp[{}]: dropped a stdout line of {} bytes (over max_message_bytes {}): {}",
                 name_, line.size, max_bytes_, printable(line.text, kLogSnippet));
    return;
  }
  if (line.text.find_first_not_of(" \t\r") == std::string::npos) return;
  auto message = json::parse(line.text, nullptr, false);
  if (message.is_discarded() || !message.is_object()) {
    spdlog::warn("mcp[{}]: skipped a stdout line that is not a JSON object: {}", name_,
                 printable(line.text, kLogSnippet));
    return;
  }
  inbox_bytes_ += line.text.size();
  inbox_.push_back(Incoming{std::move(message), line.text.size()});
  inbox_signal_.notify();
}

void Child::end_of_stdout() {
  if (reader_done_) return;
  reader_done_ = true;
  if (exited_) {
    dead_reason_ = exit_text();  // the exit watcher logged it
  } else {
    dead_reason_ =
        "child process (pid " + std::to_string(pid_) + ") closed its stdout and is still running";
    if (!closing_) spdlog::warn("mcp[{}]: {}", name_, dead_reason_);
  }
  inbox_signal_.notify();
}

asio::awaitable<void> Child::read_stdout(std::shared_ptr<Child> self) {
  std::vector<char> buf(kReadChunk);
  LineSplitter lines(self->max_bytes_, kLogSnippet);
  auto on_line = [&self](LineSplitter::Line l) { self->on_stdout_line(std::move(l)); };
  for (;;) {
    // Backpressure: a server that talks faster than agentd listens waits in its pipe.
    if (self->inbox_bytes_ >= self->inbox_limit_ && !self->closing_) {
      self->stdout_paused_ = true;
      self->pipes_signal_.notify();
      while (self->inbox_bytes_ >= self->inbox_limit_ && !self->closing_) {
        co_await self->room_signal_.wait();
      }
      self->stdout_paused_ = false;
      self->stdout_activity_ = Clock::now();
      self->pipes_signal_.notify();
    }
    if (self->closing_) break;
    auto [ec, n] = co_await self->out_.async_read_some(asio::buffer(buf), kTuple);
    if (n > 0) {
      self->stdout_activity_ = Clock::now();
      lines.feed(std::string_view(buf.data(), n), on_line);
    }
    if (ec) {
      if (ec == asio::error::eof) lines.finish(on_line);
      break;
    }
  }
  self->stdout_done_ = true;
  self->pipes_signal_.notify();
  // Say how the child ended: its exit usually follows the end of its stdout closely.
  co_await self->wait_exit(Clock::now() + kDrainGrace);
  self->end_of_stdout();
}

asio::awaitable<void> Child::read_stderr(std::shared_ptr<Child> self) {
  std::vector<char> buf(kReadChunk);
  LineSplitter lines(kMaxStderrLine, kMaxStderrLine);
  auto on_line = [&self](LineSplitter::Line l) {
    if (l.text.empty() && !l.overflow()) return;
    if (l.overflow()) {
      spdlog::info("mcp[{}] stderr: {} ({} bytes)", self->name_, printable(l.text, kMaxStderrLine),
                   l.size);
    } else {
      spdlog::info("mcp[{}] stderr: {}", self->name_, printable(l.text, kMaxStderrLine));
    }
  };
  for (;;) {
    auto [ec, n] = co_await self->err_.async_read_some(asio::buffer(buf), kTuple);
    if (n > 0) {
      self->stderr_activity_ = Clock::now();
      lines.feed(std::string_view(buf.data(), n), on_line);
    }
    if (ec) {
      if (ec == asio::error::eof) lines.finish(on_line);
      break;
    }
  }
  self->stderr_done_ = true;
  self->pipes_signal_.notify();
}

asio::awaitable<void> Child::watch_exit(std::shared_ptr<Child> self) {
  auto [ec, code] = co_await self->proc_.async_wait(kTuple);
  (void)code;
  if (!ec) {
    self->wait_status_ = self->proc_.native_exit_code();
  } else {
    // The pidfd wait failed: fall back to polling, as the child may well be running.
    spdlog::warn("mcp[{}]: waiting for pid {} failed ({}); polling instead", self->name_,
                 self->pid_, ec.message());
    asio::steady_timer poll(self->ex_);
    for (;;) {
      int status = 0;
      auto r = ::waitpid(self->pid_, &status, WNOHANG);
      if (r == self->pid_) {
        self->wait_status_ = status;
        break;
      }
      if (r < 0 && errno != EINTR) break;
      poll.expires_after(100ms);
      co_await poll.async_wait(kTuple);
    }
  }
  // Reaped: forget the pid, so that no later kill (Boost's destructor included) can hit a
  // process that reuses it.
  self->proc_.detach();
  self->exited_ = true;
  if (self->closing_) {
    spdlog::info("mcp[{}]: {}", self->name_, self->exit_text());
  } else {
    spdlog::warn("mcp[{}]: {}", self->name_, self->exit_text());
  }
  self->exit_signal_.notify();
  self->stop_writing(self->exit_text());
  co_await drain_pipes(self);
}

asio::awaitable<void> Child::drain_pipes(std::shared_ptr<Child> self) {
  // What the child wrote before exiting is still in the pipes (the tail of its stderr tells
  // why it died; its last messages may wait for receive() to make room): read on while they
  // are busy. But something it left behind holding them open must not keep them alive.
  auto now = Clock::now();
  self->stdout_activity_ = std::max(self->stdout_activity_, now);
  self->stderr_activity_ = std::max(self->stderr_activity_, now);
  while (!(self->stdout_done_ && self->stderr_done_)) {
    auto deadline = std::max(self->stdout_done_ ? now : self->stdout_activity_,
                             self->stderr_done_ ? now : self->stderr_activity_) +
                    kDrainGrace;
    if (self->stdout_paused_) deadline = Clock::time_point::max();
    if (Clock::now() >= deadline) break;
    co_await self->pipes_signal_.wait(deadline);
  }
  self->close_pipe(self->out_);
  self->close_pipe(self->err_);
}

// Everything queued goes to the pipe in one gathered write, and the senders are woken once per
// write: every sender waits on sent_signal_, so one wake-up per line made each line wake every
// sender still queued (1,000 concurrent calls on one server: a million wake-ups).
asio::awaitable<void> Child::write_loop(std::shared_ptr<Child> self) {
  constexpr std::size_t kMaxBatch = 256;
  std::vector<Outgoing> batch;
  std::vector<asio::const_buffer> buffers;
  batch.reserve(kMaxBatch);
  buffers.reserve(kMaxBatch);
  for (;;) {
    while (self->outbox_.empty() && !self->stdin_done_) co_await self->outbox_signal_.wait();
    if (self->stdin_done_) co_return;
    batch.clear();
    buffers.clear();
    while (!self->outbox_.empty() && batch.size() < kMaxBatch) {
      batch.push_back(std::move(self->outbox_.front()));
      self->outbox_.pop_front();
    }
    for (const auto& out : batch) buffers.push_back(asio::buffer(out.line));
    auto [ec, n] = co_await asio::async_write(self->in_, buffers, kTuple);
    (void)n;
    if (ec) {
      if (!self->stdin_done_) {
        self->stop_writing("cannot write to the child's stdin: " + ec.message());
      }
      co_return;
    }
    self->written_seq_ = batch.back().seq;
    self->sent_signal_.notify();
  }
}

class StdioTransport final : public Transport {
 public:
  StdioTransport(asio::any_io_executor ex, const ServerConfig& config,
                 std::size_t max_message_bytes)
      : description_(describe_command(config)),
        child_(std::make_shared<Child>(std::move(ex), config, max_message_bytes)) {}
  ~StdioTransport() override { child_->abandon(); }

  asio::awaitable<TResult<void>> start() override { return Child::start(child_); }
  asio::awaitable<TResult<void>> send(json message) override {
    return Child::send(child_, std::move(message));
  }
  asio::awaitable<TResult<json>> receive() override { return Child::receive(child_); }
  void set_protocol_version(std::string version) override { version_ = std::move(version); }
  asio::awaitable<void> close() override { return Child::close(child_); }
  std::string describe() const override { return description_; }

 private:
  std::string description_;
  std::shared_ptr<Child> child_;
  std::string version_;  // nothing to do with it on stdio
};

}  // namespace

std::unique_ptr<Transport> make_stdio_transport(asio::any_io_executor ex,
                                                const ServerConfig& config,
                                                std::size_t max_message_bytes) {
  return std::make_unique<StdioTransport>(std::move(ex), config, max_message_bytes);
}

}  // namespace agentd::mcp
