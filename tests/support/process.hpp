// Child processes for tests: spawn with arguments and environment, read stdout lines with a
// deadline, signal, wait with a deadline.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace agentd::test {

class Process {
 public:
  // `env` entries are "NAME=value" added to (or replacing in) the current environment;
  // `unset` names are removed. stderr goes to `stderr_file` when set.
  Process(const std::string& program, const std::vector<std::string>& args,
          const std::vector<std::string>& env = {}, const std::vector<std::string>& unset = {},
          const std::string& cwd = {}, const std::string& stderr_file = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // Next stdout line (without '\n'); nullopt on EOF or timeout.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);
  // Reads lines until one contains `needle`; all lines read are appended to `seen`.
  std::optional<std::string> wait_for_line(const std::string& needle,
                                           std::chrono::milliseconds timeout,
                                           std::string* seen = nullptr);
  void signal(int sig);
  // Exit code (128+signal when killed); nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  pid_t pid() const noexcept { return pid_; }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string buf_;
  std::optional<int> status_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bound, then released).
std::uint16_t free_loopback_port();
// Whether something accepts TCP connections on 127.0.0.1:`port`.
bool accepts_connections(std::uint16_t port);

// Runs to completion; returns {exit code, stdout+stderr}.
std::pair<int, std::string> run_command(const std::string& program,
                                        const std::vector<std::string>& args,
                                        const std::vector<std::string>& env = {},
                                        const std::string& cwd = {});

}  // namespace agentd::test
