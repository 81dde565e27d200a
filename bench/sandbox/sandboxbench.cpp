// bench/sandbox's driver, linked against agentd's own sandbox library: the local backend's
// create -> exec `true` -> kill cycle through its public interface (what an agent's first
// sandbox tool call and its intent's end cost), and, timed the same way in the same process,
// bare bwrap command lines (fork+exec+wait); plus time to the first output byte of a streamed
// command on both.
//
//   sandboxbench cycle RUNS ROOT_DIR            create, exec `true` to its exit, kill; RUNS times
//   sandboxbench ttfb RUNS ROOT_DIR CMD         in one sandbox: start CMD, first stdout byte, exit
//   sandboxbench bare RUNS ARGV...              fork+exec ARGV, wait; RUNS times
//   sandboxbench bare_ttfb RUNS ARGV...         fork+exec ARGV, first stdout byte, wait
//
// Prints one `RESULT key=value ...` line on stdout (the backend logs to stderr); latencies in microseconds. With SANDBOXBENCH_SAMPLES=FILE
// every sample is also appended there as `<label>.<name> <us>`, the label being the mode or
// SANDBOXBENCH_LABEL (run.sh pools interleaved rounds that way).
#include <fcntl.h>
#include <spawn.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "agentd/core/config.hpp"
#include "agentd/core/metrics.hpp"
#include "agentd/sandbox/config.hpp"
#include "agentd/sandbox/manager.hpp"
#include "agentd/sandbox/sandbox.hpp"

extern char** environ;

namespace {

namespace asio = boost::asio;
namespace sbx = agentd::sandbox;
using Clock = std::chrono::steady_clock;

double us_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

std::string g_mode;

std::string stats(const std::string& name, const std::vector<double>& us) {
  if (const char* file = std::getenv("SANDBOXBENCH_SAMPLES")) {
    if (std::FILE* f = std::fopen(file, "a")) {
      for (double v : us) std::fprintf(f, "%s.%s %.0f\n", g_mode.c_str(), name.c_str(), v);
      std::fclose(f);
    }
  }
  char buf[160];
  std::snprintf(buf, sizeof buf, " %s_p50_us=%.0f %s_p99_us=%.0f", name.c_str(),
                percentile(us, 0.5), name.c_str(), percentile(us, 0.99));
  return buf;
}

// The backend as the daemon makes it: `sandbox: { backend: local, local: { root_dir } }`, every
// other key at its default (parse_config's, so the same read-only binds and limits).
sbx::Config local_config(const std::string& root) {
  auto yaml =
      agentd::core::load_yaml_string("backend: local\nlocal: { root_dir: \"" + root + "\" }\n");
  return sbx::parse_config(agentd::core::ConfigNode(yaml, "sandbox"), root);
}

struct Cycle {
  std::vector<double> total, create, exec, kill;
  int errors = 0;
  std::string last_error;
};

asio::awaitable<void> cycles(sbx::Backend& b, int runs, Cycle& out) {
  for (int i = 0; i < runs; ++i) {
    auto t0 = Clock::now();
    sbx::CreateOptions co;
    co.timeout = std::chrono::minutes(1);
    co.owner = "bench";
    auto info = co_await b.create(std::move(co));
    if (!info) {
      ++out.errors;
      out.last_error = "create: " + info.error().message;
      continue;
    }
    auto t1 = Clock::now();
    sbx::ExecOptions eo;
    eo.cmd = "true";
    auto r = co_await sbx::run(b, info->id, std::move(eo));
    auto t2 = Clock::now();
    if (!r || r->exit_code != 0) {
      ++out.errors;
      out.last_error = r ? "exit code " + std::to_string(r->exit_code) + ": " + r->stderr_text
                         : "exec: " + r.error().message;
    }
    auto k = co_await b.kill(info->id);
    if (!k) {
      ++out.errors;
      out.last_error = "kill: " + k.error().message;
    }
    auto d = [](auto a, auto z) {
      return std::chrono::duration<double, std::micro>(z - a).count();
    };
    out.create.push_back(d(t0, t1));
    out.exec.push_back(d(t1, t2));
    out.kill.push_back(us_since(t2));
    out.total.push_back(us_since(t0));
  }
}

struct Ttfb {
  std::vector<double> first, exit;
  int errors = 0;
  std::string last_error;
};

asio::awaitable<void> ttfbs(sbx::Backend& b, int runs, std::string cmd, Ttfb& out) {
  sbx::CreateOptions co;
  co.timeout = std::chrono::minutes(10);
  co.owner = "bench";
  auto info = co_await b.create(std::move(co));
  if (!info) {
    ++out.errors;
    out.last_error = "create: " + info.error().message;
    co_return;
  }
  for (int i = 0; i < runs; ++i) {
    auto t0 = Clock::now();
    sbx::ExecOptions eo;
    eo.cmd = cmd;
    auto p = co_await b.start(info->id, std::move(eo));
    if (!p) {
      ++out.errors;
      out.last_error = "start: " + p.error().message;
      continue;
    }
    bool seen = false;
    for (;;) {
      auto e = co_await (*p)->next();
      if (!e) {
        ++out.errors;
        out.last_error = "next: " + e.error().message;
        break;
      }
      if (!*e) break;
      if ((*e)->kind == sbx::ExecEvent::Kind::stdout_data && !seen) {
        seen = true;
        out.first.push_back(us_since(t0));
      }
      if ((*e)->kind == sbx::ExecEvent::Kind::exited) out.exit.push_back(us_since(t0));
    }
    if (!seen) {
      ++out.errors;
      out.last_error = "no output";
    }
  }
  auto k = co_await b.kill(info->id);
  if (!k) {
    ++out.errors;
    out.last_error = "kill: " + k.error().message;
  }
}

template <class F>
void on_loop(F make_task) {
  asio::io_context io;
  agentd::core::Registry metrics;
  std::exception_ptr failure;
  asio::co_spawn(io, make_task(io, metrics), [&](std::exception_ptr e) { failure = e; });
  io.run();
  if (failure) std::rethrow_exception(failure);
}

// fork+exec argv with stdout to a pipe (when `pipe_out`), posix_spawn like the backend's
// launcher does its fork+exec; returns the pid and the pipe's read end.
std::pair<pid_t, int> spawn(const std::vector<std::string>& argv, bool pipe_out) {
  std::vector<char*> a;
  for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  int fds[2] = {-1, -1};
  if (pipe_out) {
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  } else {
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  }
  pid_t pid = 0;
  int rc = ::posix_spawn(&pid, a[0], &fa, nullptr, a.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (pipe_out) ::close(fds[1]);
  if (rc != 0)
    throw std::runtime_error(std::string("posix_spawn ") + argv[0] + ": " + std::strerror(rc));
  return {pid, fds[0]};
}

int wait_exit(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty()) g_mode = args[0];
  if (const char* label = std::getenv("SANDBOXBENCH_LABEL")) g_mode = label;
  // The backend's log (which cgroups it uses, each sandbox made and killed) to stderr, which
  // run.sh keeps apart from the RESULT lines.
  spdlog::set_default_logger(spdlog::stderr_color_st("sandboxbench"));
  try {
    if (args.size() >= 3 && args[0] == "cycle") {
      int runs = std::stoi(args[1]);
      Cycle c;
      on_loop([&](asio::io_context& io, agentd::core::Registry& m) {
        auto b = std::shared_ptr<sbx::Backend>(
            sbx::make_local_backend(io.get_executor(), local_config(args[2]), m));
        return [](std::shared_ptr<sbx::Backend> b, int runs, Cycle& c) -> asio::awaitable<void> {
          co_await cycles(*b, runs, c);
        }(b, runs, c);
      });
      std::cout << "RESULT mode=cycle runs=" << c.total.size() << " errors=" << c.errors
                << stats("total", c.total) << stats("create", c.create) << stats("exec", c.exec)
                << stats("kill", c.kill) << "\n";
      if (c.errors)
        std::cerr << "sandboxbench: " << c.errors << " errors, last: " << c.last_error << "\n";
      return c.errors ? 1 : 0;
    }
    if (args.size() >= 4 && args[0] == "ttfb") {
      int runs = std::stoi(args[1]);
      Ttfb t;
      on_loop([&](asio::io_context& io, agentd::core::Registry& m) {
        auto b = std::shared_ptr<sbx::Backend>(
            sbx::make_local_backend(io.get_executor(), local_config(args[2]), m));
        return [](std::shared_ptr<sbx::Backend> b, int runs, std::string cmd,
                  Ttfb& t) -> asio::awaitable<void> {
          co_await ttfbs(*b, runs, std::move(cmd), t);
        }(b, runs, args[3], t);
      });
      std::cout << "RESULT mode=ttfb runs=" << t.first.size() << " errors=" << t.errors
                << stats("first", t.first) << stats("exit", t.exit) << "\n";
      if (t.errors)
        std::cerr << "sandboxbench: " << t.errors << " errors, last: " << t.last_error << "\n";
      return t.errors ? 1 : 0;
    }
    if (args.size() >= 3 && (args[0] == "bare" || args[0] == "bare_ttfb")) {
      int runs = std::stoi(args[1]);
      bool ttfb = args[0] == "bare_ttfb";
      std::vector<std::string> cmd(args.begin() + 2, args.end());
      std::vector<double> total, first;
      int errors = 0;
      for (int i = 0; i < runs; ++i) {
        auto t0 = Clock::now();
        auto [pid, fd] = spawn(cmd, ttfb);
        if (ttfb) {
          char buf[4096];
          bool seen = false;
          for (;;) {
            auto n = ::read(fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            if (!seen) first.push_back(us_since(t0));
            seen = true;
          }
          ::close(fd);
          if (!seen) ++errors;
        }
        if (wait_exit(pid) != 0) ++errors;
        total.push_back(us_since(t0));
      }
      std::cout << "RESULT mode=" << args[0] << " runs=" << total.size() << " errors=" << errors
                << (ttfb ? stats("first", first) + stats("exit", total) : stats("total", total))
                << "\n";
      if (errors) std::cerr << "sandboxbench: " << errors << " runs failed: " << cmd[0] << " ...\n";
      return errors ? 1 : 0;
    }
    std::cerr
        << "usage: sandboxbench cycle RUNS ROOT_DIR | ttfb RUNS ROOT_DIR CMD | bare RUNS ARGV... | "
           "bare_ttfb RUNS ARGV...\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "sandboxbench: " << e.what() << "\n";
    return 1;
  }
}
