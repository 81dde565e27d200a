// bench/store's load generator, linked against agentd's own store libraries: Redis cache
// get/set round trips through store::make_kv (N coroutines on one pipelined connection), and
// durable intent+step writes through store::make_records (SQLite or PostgreSQL), each with the
// lateness of a 1 ms timer on the same event loop.
//
//   storebench redis URL CLIENTS REQUESTS [CONNECTIONS]   SET phase, then GET phase,
//                                                         REQUESTS each (CONNECTIONS: 1)
//   storebench records sqlite DATA_DIR WRITERS SECONDS
//   storebench records postgres URL WRITERS SECONDS
//
// Prints one `RESULT key=value ...` line per phase (parsed by run.sh).
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "agentd/core/runtime.hpp"
#include "agentd/store/kv.hpp"
#include "agentd/store/records.hpp"

namespace {

namespace asio = boost::asio;
namespace store = agentd::store;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// ---- the loop-lag probe ----------------------------------------------------------------------

// A 1 ms timer: each sample is how late it fired after its due time.
struct Lag {
  bool running = false;
  bool done = true;
  std::vector<double> us;
};

asio::awaitable<void> lag_probe(Lag* lag) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  lag->done = false;
  while (lag->running) {
    auto due = Clock::now() + 1ms;
    t.expires_at(due);
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    lag->us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - due).count());
  }
  lag->done = true;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

std::string lag_fields(const Lag& lag) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "lag_samples=%zu lag_p50_us=%.0f lag_p99_us=%.0f lag_max_us=%.0f",
                lag.us.size(), percentile(lag.us, 0.5), percentile(lag.us, 0.99),
                lag.us.empty() ? 0.0 : *std::max_element(lag.us.begin(), lag.us.end()));
  return buf;
}

// CPU time of this process (user + system), seconds.
double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return sec(u.ru_utime) + sec(u.ru_stime);
}

// CPU time of the redis-server whose pid is in STOREBENCH_REDIS_PID (seconds; -1: not given),
// to show how busy the server was during a phase.
double redis_cpu_seconds() {
  const char* pid = std::getenv("STOREBENCH_REDIS_PID");
  if (!pid) return -1;
  std::ifstream in(std::string("/proc/") + pid + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');  // the command name may contain spaces
  if (close == std::string::npos) return -1;
  std::istringstream fields(text.substr(close + 2));
  std::string f;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(f);  // utime, stime
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// Waits for a set of coroutines.
class Group {
 public:
  explicit Group(asio::any_io_executor ex) : ex_(ex), timer_(ex) {}
  void spawn(asio::awaitable<void> work) {
    ++pending_;
    asio::co_spawn(ex_, std::move(work), [this](std::exception_ptr e) {
      if (e) ++failures_;
      if (--pending_ == 0) timer_.cancel();
    });
  }
  asio::awaitable<void> wait() {
    while (pending_ > 0) {
      timer_.expires_at(Clock::time_point::max());
      co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }
  int failures() const { return failures_; }

 private:
  asio::any_io_executor ex_;
  asio::steady_timer timer_;
  int pending_ = 0;
  int failures_ = 0;
};

asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
}

// ---- Redis: cache get/set --------------------------------------------------------------------

struct CacheWork {
  long remaining = 0;
  long errors = 0;
};

asio::awaitable<void> cache_worker(store::Cache& cache, bool set, std::string key,
                                   std::string value, CacheWork* work) {
  while (work->remaining > 0) {
    --work->remaining;
    if (set) {
      auto r = co_await cache.set(key, value, 0ms);
      if (!r) ++work->errors;
    } else {
      auto r = co_await cache.get(key);
      if (!r || !*r) ++work->errors;
    }
  }
}

// `connections` Kv instances (one Redis connection each) share the `clients` coroutines.
asio::awaitable<void> redis_bench(std::string url, int clients, long requests, int connections,
                                  int* exit_code) {
  auto ex = co_await asio::this_coro::executor;
  store::KvConfig config;
  config.redis = url;
  config.redis_prefix = "storebench:";
  std::vector<std::unique_ptr<store::Kv>> kvs;
  for (int i = 0; i < connections; ++i) kvs.push_back(store::make_kv(ex, config));
  for (auto& kv : kvs) {
    if (!co_await kv->wait_ready(5000ms)) {
      std::cerr << "storebench: redis not ready: " << kv->health().detail << "\n";
      *exit_code = 1;
      for (auto& k : kvs) k->stop();
      co_return;
    }
  }
  // redis-benchmark's defaults: one key, a 3-byte value.
  const std::string key = "key:__rand_int__";
  {  // a short warm-up (connections, allocator), not measured
    CacheWork warm{20000, 0};
    Group g(ex);
    for (int i = 0; i < clients; ++i) {
      g.spawn(cache_worker(kvs[static_cast<std::size_t>(i % connections)]->cache(), true, key,
                           "xxx", &warm));
    }
    co_await g.wait();
  }
  for (bool set : {true, false}) {
    Lag lag;
    lag.running = true;
    asio::co_spawn(ex, lag_probe(&lag), asio::detached);
    CacheWork work{requests, 0};
    Group g(ex);
    auto start = Clock::now();
    double cpu_start = cpu_seconds();
    double redis_start = redis_cpu_seconds();
    for (int i = 0; i < clients; ++i) {
      g.spawn(cache_worker(kvs[static_cast<std::size_t>(i % connections)]->cache(), set, key, "xxx",
                           &work));
    }
    co_await g.wait();
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    double cpu = cpu_seconds() - cpu_start;
    double redis_cpu = redis_start < 0 ? -1 : redis_cpu_seconds() - redis_start;
    lag.running = false;
    while (!lag.done) co_await sleep_for(1ms);
    // client_cpu_pct: how busy the one loop thread was (100 = CPU-bound).
    std::printf(
        "RESULT kind=redis op=%s clients=%d connections=%d requests=%ld errors=%ld "
        "secs=%.3f ops_per_sec=%.0f client_cpu_pct=%.0f cpu_us_per_op=%.2f "
        "redis_cpu_pct=%.0f %s\n",
        set ? "set" : "get", clients, connections, requests, work.errors, secs,
        static_cast<double>(requests) / secs, 100 * cpu / secs,
        1e6 * cpu / static_cast<double>(requests), redis_cpu < 0 ? -1.0 : 100 * redis_cpu / secs,
        lag_fields(lag).c_str());
    std::fflush(stdout);
    if (work.errors > 0) *exit_code = 1;
  }
  for (auto& kv : kvs) kv->stop();
}

// ---- durable records: create_intent + 3 append_step ------------------------------------------

struct WriteStats {
  long intents = 0;
  long writes = 0;
  long errors = 0;
  std::vector<double> intent_ms;  // create + 3 steps, per intent
  std::string last_error;
};

asio::awaitable<void> intent_writer(store::Records& records, int writer, Clock::time_point until,
                                    WriteStats* stats) {
  for (long n = 0; Clock::now() < until; ++n) {
    auto start = Clock::now();
    store::Intent intent;
    intent.client = "bench";
    intent.agent = "bench-agent";
    intent.input = store::Json::object();
    intent.input["prompt"] = "write a haiku about write-ahead logs, number " + std::to_string(n);
    intent.input["writer"] = writer;
    auto created = co_await records.create_intent(std::move(intent));
    if (!created) {
      ++stats->errors;
      stats->last_error = created.error().message();
      continue;
    }
    ++stats->writes;
    bool ok = true;
    for (int seq = 1; seq <= 3; ++seq) {
      store::Step step;
      step.intent_id = created->id;
      step.seq = seq;
      step.kind = seq == 1 ? "plan" : seq == 2 ? "tool_call" : "tool_result";
      step.data = store::Json::object();
      step.data["n"] = seq;
      step.data["text"] = "step payload of a typical size, a short JSON object";
      auto appended = co_await records.append_step(std::move(step));
      if (!appended) {
        ++stats->errors;
        stats->last_error = appended.error().message();
        ok = false;
        break;
      }
      ++stats->writes;
    }
    if (ok) {
      ++stats->intents;
      stats->intent_ms.push_back(
          std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    }
  }
}

asio::awaitable<void> records_bench(store::Records& records, std::string backend, int writers,
                                    int seconds, int* exit_code) {
  auto ex = co_await asio::this_coro::executor;
  {  // warm-up: connections opened, statements prepared
    WriteStats warm;
    Group g(ex);
    for (int i = 0; i < writers; ++i) {
      g.spawn(intent_writer(records, i, Clock::now() + 500ms, &warm));
    }
    co_await g.wait();
  }
  Lag lag;
  lag.running = true;
  asio::co_spawn(ex, lag_probe(&lag), asio::detached);
  WriteStats stats;
  Group g(ex);
  auto start = Clock::now();
  auto until = start + std::chrono::seconds(seconds);
  for (int i = 0; i < writers; ++i) g.spawn(intent_writer(records, i, until, &stats));
  co_await g.wait();
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  lag.running = false;
  while (!lag.done) co_await sleep_for(1ms);
  std::printf(
      "RESULT kind=records backend=%s writers=%d secs=%.3f intents=%ld writes=%ld "
      "errors=%ld intents_per_sec=%.1f writes_per_sec=%.1f intent_p50_ms=%.2f "
      "intent_p99_ms=%.2f %s\n",
      backend.c_str(), writers, secs, stats.intents, stats.writes, stats.errors,
      static_cast<double>(stats.intents) / secs, static_cast<double>(stats.writes) / secs,
      percentile(stats.intent_ms, 0.5), percentile(stats.intent_ms, 0.99), lag_fields(lag).c_str());
  std::fflush(stdout);
  if (stats.errors > 0) {
    std::cerr << "storebench: " << stats.errors << " errors, last: " << stats.last_error << "\n";
    *exit_code = 1;
  }
}

int usage() {
  std::cerr << "usage: storebench redis URL CLIENTS REQUESTS [CONNECTIONS]\n"
               "       storebench records sqlite DATA_DIR WRITERS SECONDS\n"
               "       storebench records postgres URL WRITERS SECONDS\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  int exit_code = 0;
  try {
    if ((args.size() == 4 || args.size() == 5) && args[0] == "redis") {
      int connections = args.size() == 5 ? std::max(1, std::stoi(args[4])) : 1;
      asio::io_context io(1);
      asio::co_spawn(
          io, redis_bench(args[1], std::stoi(args[2]), std::stol(args[3]), connections, &exit_code),
          [](std::exception_ptr e) {
            if (e) std::rethrow_exception(e);
          });
      io.run();
      return exit_code;
    }
    if (args.size() == 5 && args[0] == "records" &&
        (args[1] == "sqlite" || args[1] == "postgres")) {
      int writers = std::stoi(args[3]);
      store::RecordsConfig config;
      if (args[1] == "sqlite") {
        config.data_dir = args[2];
      } else {
        config.postgres = args[2];
      }
      // One connection per writer on PostgreSQL (SQLite: one writer connection regardless).
      config.pool_size = static_cast<std::size_t>(std::clamp(writers, 1, 64));
      agentd::core::Registry metrics;
      agentd::core::BlockingPool pool(config.pool_size + 2, 1024);
      auto records = store::make_records(config, pool, metrics);
      asio::io_context io(1);
      asio::co_spawn(io, records_bench(*records, args[1], writers, std::stoi(args[4]), &exit_code),
                     [](std::exception_ptr e) {
                       if (e) std::rethrow_exception(e);
                     });
      io.run();
      return exit_code;
    }
  } catch (const std::exception& e) {
    std::cerr << "storebench: " << e.what() << "\n";
    return 1;
  }
  return usage();
}
