// Sandboxes: isolated machines where agents write files, run commands and show a desktop. One
// interface, two backends: `e2b` (E2B's control plane and envd) and `local` (bubblewrap on
// this host). Sandboxes belong to an owner (an intent or a session) and are killed when the
// owner ends, when they time out, and at agentd's start for what a previous run left.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agentd/core/error.hpp"

namespace agentd::sandbox {

using nlohmann::json;
using std::chrono::milliseconds;
using TimeMs = std::int64_t;  // UTC milliseconds since the Unix epoch

// Errc::bad_request (invalid input, a hostile path), not_found (no such sandbox, file or
// process), unauthorized/forbidden (the backend refused our key), rate_limited (with
// retry_after), timeout, unavailable (backend unreachable or 5xx), payload_too_large,
// conflict (unsupported by this backend: pause on local, ...), internal.
struct Error {
  Errc code = Errc::internal;
  std::string message;
  std::optional<milliseconds> retry_after;
};
template <class T>
using Result = boost::system::result<T, Error>;
[[noreturn]] void throw_exception_from_error(const Error& e, const boost::source_location& loc);

struct CreateOptions {
  std::string template_id;                 // empty: the backend's default (e2b "base")
  milliseconds timeout{std::chrono::minutes(5)};  // killed after this unless extended
  std::map<std::string, std::string> env;  // for every command
  std::map<std::string, std::string> metadata;
  bool network = false;  // outbound network (local: only when the config allows it)
  std::string owner;     // intent or session id; agentd kills the sandbox when it ends
};

struct Info {
  std::string id;
  std::string backend;  // e2b | local
  std::string template_id;
  std::string state;  // running | paused
  TimeMs started_at = 0;
  TimeMs end_at = 0;  // when its timeout kills it
  std::map<std::string, std::string> metadata;
  std::string owner;
};

struct ExecOptions {
  std::string cmd;                // run by /bin/bash -l -c in the sandbox
  std::map<std::string, std::string> env;
  std::string cwd;                // empty: the sandbox's work dir
  std::optional<std::string> stdin_data;  // written, then stdin is closed (nullopt: left open)
  milliseconds timeout{std::chrono::minutes(1)};  // then SIGKILL, exit reported as timed out
  std::size_t max_output = 1 << 20;  // bytes of stdout+stderr kept by run(); more is dropped
};

// One event of a running command, in order: started, output pieces, then exited.
struct ExecEvent {
  enum class Kind { started, stdout_data, stderr_data, exited };
  Kind kind = Kind::started;
  int pid = 0;
  std::string data;    // output bytes
  int exit_code = -1;  // exited: the code, or 128+signal
  bool timed_out = false;
  std::string error;   // exited abnormally: why
};

// A command in flight. next() until nullopt (after `exited`). Dropping it does not kill the
// command; kill with signal(9).
class Process {
 public:
  virtual ~Process() = default;
  virtual int pid() const noexcept = 0;
  virtual boost::asio::awaitable<Result<std::optional<ExecEvent>>> next() = 0;
  virtual boost::asio::awaitable<Result<void>> send_stdin(std::string data) = 0;
  virtual boost::asio::awaitable<Result<void>> close_stdin() = 0;
  virtual boost::asio::awaitable<Result<void>> signal(int sig) = 0;
};

struct ExecResult {
  int exit_code = -1;
  std::string stdout_text;
  std::string stderr_text;
  bool truncated = false;  // over max_output
  bool timed_out = false;
  std::chrono::microseconds duration{0};
};

struct FileEntry {
  std::string name;
  std::string path;  // absolute inside the sandbox
  std::string type;  // file | dir | symlink
  std::uint64_t size = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const noexcept = 0;
  virtual boost::asio::awaitable<Result<Info>> create(CreateOptions options) = 0;
  virtual boost::asio::awaitable<Result<void>> kill(std::string id) = 0;
  virtual boost::asio::awaitable<Result<void>> set_timeout(std::string id, milliseconds timeout) = 0;
  virtual boost::asio::awaitable<Result<std::vector<Info>>> list() = 0;
  // Errc::conflict where the backend cannot (local).
  virtual boost::asio::awaitable<Result<void>> pause(std::string id) = 0;
  virtual boost::asio::awaitable<Result<void>> resume(std::string id) = 0;

  virtual boost::asio::awaitable<Result<std::unique_ptr<Process>>> start(std::string id,
                                                                         ExecOptions options) = 0;
  // Paths are inside the sandbox: relative ones are under its work dir. A path that leaves the
  // sandbox's files (`..` above the root, a symlink pointing out on local) is bad_request.
  virtual boost::asio::awaitable<Result<std::string>> read_file(std::string id, std::string path,
                                                                std::size_t max_bytes) = 0;
  virtual boost::asio::awaitable<Result<void>> write_file(std::string id, std::string path,
                                                          std::string data) = 0;
  virtual boost::asio::awaitable<Result<std::vector<FileEntry>>> list_files(std::string id,
                                                                            std::string path,
                                                                            int depth) = 0;
  virtual boost::asio::awaitable<Result<void>> remove(std::string id, std::string path) = 0;
  // The desktop stream URL, when the sandbox's template has one.
  virtual std::optional<std::string> desktop_url(const std::string& id) const = 0;
};

// Runs a command to its end, collecting output (up to options.max_output).
boost::asio::awaitable<Result<ExecResult>> run(Backend& backend, std::string id, ExecOptions options);

}  // namespace agentd::sandbox
