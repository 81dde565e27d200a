// agentd: command line, configuration, wiring of every module, signals.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <iostream>

#include "agentd/agent/engine.hpp"
#include "agentd/ai/gateway.hpp"
#include "agentd/api/api.hpp"
#include "agentd/api/intents.hpp"
#include "agentd/api/mcp.hpp"
#include "agentd/api/mcp_sampling.hpp"
#include "agentd/api/openai.hpp"
#include "agentd/mcp/multiplexer.hpp"
#include "agentd/app/config.hpp"
#include "agentd/app/ledger.hpp"
#include "agentd/app/tokens.hpp"
#include "agentd/core/log.hpp"
#include "agentd/core/runtime.hpp"
#include "agentd/net/client.hpp"
#include "agentd/net/server.hpp"
#include "agentd/sandbox/manager.hpp"
#include "agentd/store/blobs.hpp"
#include "agentd/store/kv.hpp"
#include "agentd/store/records.hpp"

namespace {

namespace asio = boost::asio;
using namespace agentd;

// The daemon's io_context, able to drop what is still queued or suspended on it (coroutine
// frames and the guards in them) before the objects those refer to are destroyed: the
// io_context's own destructor does it last, after the metrics, records and engine declared
// below it are gone (a recovery sweep suspended at SIGTERM released its pool lease into a
// destroyed gauge that way).
class Loop : public asio::io_context {
 public:
  using asio::io_context::io_context;
  void drop_pending() { shutdown(); }
};

constexpr const char* kUsage =
    "usage: agentd [-c FILE] [--set key.path=value]...\n"
    "       agentd --check-config FILE [--set key.path=value]...\n"
    "       agentd migrate [--status] [-c FILE] [--set key.path=value]...\n"
    "       agentd --version | --help\n"
    "\n"
    "  -c, --config FILE      configuration file (default: the embedded config/agentd.yaml)\n"
    "  --set key.path=value   override one key, e.g. --set server.listen=127.0.0.1:0\n"
    "  --check-config FILE    validate FILE (with overrides and the environment); exit 0 or 2\n"
    "  migrate                apply the durable store's pending schema migrations and exit\n"
    "  migrate --status       list applied and pending migrations; exit 0, or 3 when some are pending\n"
    "\n"
    "Signals: SIGTERM/SIGINT shut down gracefully (twice: at once); SIGHUP reopens the log file\n"
    "and reloads the TLS certificate and key.\n";

struct Args {
  std::string config;
  std::vector<std::string> overrides;
  bool check = false;
  bool migrate = false;
  bool migrate_status = false;
};

// Which runs of agentd are alive, in the Redis the instances share: a key per run with a TTL,
// renewed while the run lives. An unreachable Redis (also before the first connection) answers
// "cannot tell": the strict cache, since the degrading one turns an outage into a miss.
class KvRunRegistry final : public sandbox::RunRegistry {
 public:
  explicit KvRunRegistry(store::Kv& kv) : kv_(kv), cache_(kv.strict_cache()) {}
  asio::awaitable<void> announce(const std::string& run, std::chrono::milliseconds ttl) override {
    // The first announce (at start, before the first clean-up) waits for the connection.
    if (!connected_once_) connected_once_ = co_await kv_.wait_ready(std::chrono::seconds(10));
    auto r = co_await cache_.set(key(run), "1", ttl);
    if (!r && !failing_) spdlog::warn("sandbox: this run not announced in Redis (peers may take it for dead): {}", r.error().message);
    if (r && failing_) spdlog::info("sandbox: this run announced in Redis again");
    failing_ = !r;
  }
  asio::awaitable<std::optional<bool>> alive(const std::string& run) override {
    auto r = co_await cache_.get(key(run));
    if (!r) co_return std::nullopt;
    co_return r->has_value();
  }
  asio::awaitable<void> withdraw(const std::string& run) override { (void)co_await cache_.del(key(run)); }

 private:
  static std::string key(const std::string& run) { return "sandbox_run:" + run; }
  store::Kv& kv_;
  store::Cache& cache_;
  bool connected_once_ = false;
  bool failing_ = false;  // warned once, until an announce succeeds again
};

asio::awaitable<void> shutdown_tail(agent::Engine& engine, sandbox::Manager* sandboxes,
                                   mcp::Multiplexer& mux, app::Ledger& ledger) {
  // Intents still running stay recorded as running: the next start resumes them.
  co_await engine.stop(std::chrono::seconds(1));
  // Sandboxes of intents that will resume are killed too; the resumed run gets a new one.
  if (sandboxes) co_await sandboxes->stop();
  co_await mux.stop();
  co_await ledger.drain(std::chrono::seconds(5));
}

// `agentd migrate [--status]`: the schema of the durable store (SQLite or PostgreSQL).
int migrate(const app::Config& config, bool status_only) {
  try {
    auto status = status_only ? store::migration_status(config.store.records)
                              : store::migrate(config.store.records);
    store::print_migration_status(status, std::cout);
    if (!status_only) return 0;
    return status.pending() == 0 ? 0 : 3;
  } catch (const std::exception& e) {
    std::cerr << "agentd: migrate: " << e.what() << "\n";
    return 1;
  }
}

// Exit codes: 0 ok, 1 runtime failure (bind, I/O), 2 usage or configuration error.
int run(const Args& args) {
  app::Config config;
  try {
    config = app::load_config(args.config, args.overrides, core::process_env());
  } catch (const ConfigError& e) {
    std::cerr << "agentd: configuration error: " << e.what() << "\n";
    return 2;
  }
  if (args.check) {
    std::cout << (args.config.empty() ? "<embedded config>" : args.config) << ": OK\n";
    return 0;
  }

  try {
    core::init_logging(config.log);
  } catch (const std::exception& e) {
    std::cerr << "agentd: cannot open log: " << e.what() << "\n";
    return 1;
  }
  if (args.migrate) return migrate(config, args.migrate_status);
  try {
    if (std::filesystem::create_directories(config.store.data_dir)) {
      // Tokens, databases and blobs live here: only the service's user may read them.
      std::filesystem::permissions(config.store.data_dir, std::filesystem::perms::owner_all);
    }
    app::ensure_tokens(config.clients, config.store.data_dir, std::cout);
  } catch (const std::exception& e) {
    std::cerr << "agentd: " << e.what() << "\n";
    return 1;
  }
  // Tokens and provider keys never reach a log line, whoever logs them.
  for (const auto& c : config.clients) core::add_log_secret(c.token);
  for (const auto& p : config.ai.providers) core::add_log_secret(p.api_key);
  if (config.clients.empty()) {
    spdlog::warn("no clients configured: every route but /healthz will answer 401");
  }

  Loop io(1);
  core::Registry metrics;
  metrics.gauge("agentd_build_info", "Build information", {{"version", AGENTD_VERSION}}).set(1);
  core::start_loop_lag_monitor(io, metrics, std::chrono::milliseconds(250));

  api::Api api(config.clients, config.server.cors, metrics);
  bool stopping = false;
  api.add_readiness_check("server", [&stopping]() -> api::ReadyState {
    if (stopping) return {false, "shutting down"};
    return {true, "accepting connections"};
  });
  // Cache, counters and event streams: in-process, or Redis shared by every instance. While
  // Redis is unreachable requests still work (cache misses, counters in-process): /readyz
  // says "degraded" but stays ready, or a load balancer would drop every instance at once.
  std::shared_ptr<store::Kv> kv = store::make_kv(io.get_executor(), config.store.kv, &metrics);
  api.add_readiness_check("store", [&config, &kv]() -> api::ReadyState {
    if (::access(config.store.data_dir.c_str(), W_OK) != 0) {
      return {false, "data dir " + config.store.data_dir + " is not writable"};
    }
    auto h = kv->health();
    std::string cache = kv->backend() == "redis" ? "redis" : "in-process";
    if (h.state == store::Health::State::degraded) cache = "degraded: " + h.detail;
    return {h.state != store::Health::State::down,
            "cache " + cache + "; data dir " + config.store.data_dir};
  });

  // Durable records (intents, sessions, spend ledger, audit): SQLite in the data dir, or
  // PostgreSQL. Opening applies pending migrations (under a lock shared by every instance).
  // The pool runs the blocking database calls; it outlives the records (declared first).
  core::BlockingPool blocking(config.store.records.pool_size + 2, 1024);
  std::unique_ptr<store::Records> records;
  try {
    records = store::make_records(config.store.records, blocking, metrics);
  } catch (const std::exception& e) {
    std::cerr << "agentd: store: " << e.what() << "\n";
    return 1;
  }
  // Blobs (artifact bodies, media): content-addressed files in <data_dir>/blobs with a warm
  // copy in the cache; their disk work shares the blocking pool. For the agent planner.
  std::unique_ptr<store::Blobs> blobs;
  try {
    blobs = store::make_blobs(config.store.blobs, kv->cache(), blocking, &metrics);
  } catch (const std::exception& e) {
    std::cerr << "agentd: store: " << e.what() << "\n";
    return 1;
  }
  // Informational: only work that needs a durable write is refused while the database is
  // down (503); AI and MCP traffic goes on.
  api.add_readiness_check("records", [&records]() -> api::ReadyState {
    auto h = records->health();
    return {true, std::string(records->backend()) + (h.available ? ": " : " unavailable: ") +
                      h.detail};
  });

  // Spend and audit records, batched: many records per commit, off the request path.
  app::Ledger ledger(io.get_executor(), *records, metrics);

  std::unique_ptr<net::HttpClient> http_client;
  try {
    http_client = net::make_http_client(io.get_executor(), config.http_client, metrics);
  } catch (const std::exception& e) {
    std::cerr << "agentd: http_client: " << e.what() << "\n";
    return 1;
  }
  std::shared_ptr<ai::Counters> counters;
  std::shared_ptr<ai::ResponseCache> response_cache;
  if (kv->backend() == "redis") {  // shared by every instance; in-process otherwise
    counters = std::shared_ptr<ai::Counters>(kv, &kv->counters());
    response_cache = ai::make_store_cache(kv->cache());
  }
  auto gateway = ai::make_gateway(io.get_executor(), config.ai, *http_client, metrics, counters,
                                  response_cache);
  gateway->on_spend([&ledger](const ai::SpendEvent& e) {
    store::SpendEntry entry;
    entry.client = e.client.empty() ? "-" : e.client;
    entry.provider = e.provider;
    entry.model = e.model;
    entry.tokens_in = e.tokens_in;
    entry.tokens_out = e.tokens_out;
    entry.cost_micro_usd = std::llround(e.cost_usd * 1e6);
    ledger.spend(std::move(entry));
  });
  api.add_readiness_check("ai", [&config]() -> api::ReadyState {
    return {true, std::to_string(config.ai.providers.size()) + " provider(s), " +
                      std::to_string(config.ai.models.size()) + " model alias(es)"};
  });

  auto mux = mcp::make_multiplexer(io.get_executor(), config.mcp, *http_client, metrics);
  mux->on_audit([&ledger](const mcp::AuditEvent& e) {
    store::AuditEntry entry;
    entry.client = e.client.empty() ? "-" : e.client;
    entry.server = e.server;
    entry.tool = e.tool;
    entry.args_sha256 = e.args_sha256;
    entry.outcome = e.outcome;
    entry.duration_us = e.duration.count();
    entry.request_id = e.request_id;
    ledger.audit(std::move(entry));
  });
  if (!config.mcp.sampling.model.empty()) {
    mux->set_sampler(api::make_sampler(*gateway, config.mcp.sampling));
  }
  api::add_mcp_routes(api, *mux, {config.mcp.serve.session_idle, config.mcp.serve.max_sessions});
  for (const auto& s : config.mcp.servers) {
    // Informational: one MCP server down does not take the instance out of rotation.
    api.add_readiness_check("mcp:" + s.name, [&mux, name = s.name]() -> api::ReadyState {
      for (const auto& st : mux->status()) {
        if (st.name == name) {
          return {true, st.state + (st.detail.empty() ? "" : ": " + st.detail) + " (" +
                            std::to_string(st.tools) + " tools, " + std::to_string(st.restarts) +
                            " restarts)"};
        }
      }
      return {true, "unknown"};
    });
  }

  // The planner: intents run agents and workflows over the AI layer and the tool sources,
  // recording each step durably and publishing their events on the store's streams.
  auto mcp_tools = agent::make_mcp_tools(*mux);
  // Sandboxes (when configured): local bubblewrap sandboxes or E2B's, one per intent or session.
  // Instances sharing Redis tell each other's live sandboxes from a dead run's by the runs
  // announced there.
  std::unique_ptr<sandbox::Manager> sandboxes;
  std::unique_ptr<agent::ToolSource> sandbox_tools;
  if (config.sandbox.enabled) {
    try {
      auto backend = config.sandbox.backend == sandbox::BackendKind::e2b
                         ? sandbox::make_e2b_backend(io.get_executor(), config.sandbox, *http_client, metrics)
                         : sandbox::make_local_backend(io.get_executor(), config.sandbox, metrics);
      std::shared_ptr<sandbox::RunRegistry> runs;
      if (kv->backend() == "redis") runs = std::make_shared<KvRunRegistry>(*kv);
      sandboxes = sandbox::make_manager(io.get_executor(), config.sandbox, std::move(backend), metrics, runs);
    } catch (const std::exception& e) {
      std::cerr << "agentd: sandbox: " << e.what() << "\n";
      return 1;
    }
    sandbox_tools = agent::make_sandbox_tools(*sandboxes);
    core::add_log_secret(config.sandbox.e2b.api_key);
    api.add_readiness_check("sandbox", [&sandboxes]() -> api::ReadyState {
      return {true, std::string(sandboxes->backend().name()) + ": " + std::to_string(sandboxes->alive()) +
                        " sandbox(es) alive"};
    });
  }
  std::vector<agent::ToolSource*> sources{mcp_tools.get()};
  if (sandbox_tools) sources.push_back(sandbox_tools.get());
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  agent::Dependencies deps{*gateway, *records, kv->streams(), blobs.get(), sources,
                           metrics, std::string(host) + ":" + std::to_string(::getpid()) + ":" +
                                        store::new_id().substr(0, 8),
                           nullptr};
  deps.scopes_of = [&api](const std::string& client) -> std::function<bool(const std::string&)> {
    const api::Client* c = api.client_by_name(client);
    if (!c) return [](const std::string&) { return false; };
    return [c](const std::string& scope) { return api::scope_allows(c->scopes, scope); };
  };
  auto engine = agent::make_engine(io.get_executor(), config.agent, std::move(deps));
  api::add_intent_routes(api, *engine);
  // The OpenAI-compatible face: models, and agents/workflows addressed as models.
  api::add_openai_routes(api, *gateway, engine.get());
  api.add_readiness_check("agents", [&engine]() -> api::ReadyState {
    return {true, std::to_string(engine->config().agents.size()) + " agent(s), " +
                      std::to_string(engine->config().workflows.size()) + " workflow(s), " +
                      std::to_string(engine->running()) + " intent(s) running"};
  });

  auto server = net::make_http_server(io, config.server, api.handler(), metrics);
  try {
    for (const auto& ep : server->start()) {
      std::cout << "agentd listening on " << ep.url() << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "agentd: " << e.what() << "\n";
    return 1;
  }
  std::cout.flush();
  spdlog::info("agentd {} started", AGENTD_VERSION);
  mux->start();
  // Sandboxes a previous run left (after a crash) are killed as intents resume; with Redis,
  // also those of peers that died, found by a periodic sweep.
  if (sandboxes) sandboxes->start();
  // What a previous run of this instance (or a dead one) left unfinished: resumed or failed.
  asio::co_spawn(io, engine->recover(), [](std::exception_ptr e) {
    if (e) spdlog::error("intents: recovery failed");
  });

  asio::signal_set signals(io, SIGINT, SIGTERM, SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        if (sig == SIGHUP) {
          core::reopen_logs();
          if (auto err = server->reload_tls(); !err.empty()) {
            spdlog::error("SIGHUP: TLS not reloaded, the old certificate stays in use: {}", err);
          } else if (config.server.tls) {
            spdlog::info("SIGHUP: TLS certificate and key reloaded");
          }
        } else if (!stopping) {
          stopping = true;
          spdlog::info("signal {}: shutting down (grace {}ms)", sig,
                       config.server.shutdown_grace.count());
          server->shutdown(config.server.shutdown_grace, [&io, &engine, &sandboxes, &mux, &kv, &ledger] {
            // Requests are drained: stop the planner, close the MCP servers (stdio children
            // end), write the queued spend and audit records, then stop.
            asio::co_spawn(io, shutdown_tail(*engine, sandboxes.get(), *mux, ledger),
                           [&io, &kv](std::exception_ptr) {
              kv->stop();
              io.stop();
            });
          });
        } else {
          spdlog::warn("second signal {}: stopping now", sig);
          io.stop();
          return;
        }
        signals.async_wait(on_signal);
      };
  signals.async_wait(on_signal);

  core::run_loop(io, config.server.busy_poll);
  // Database calls still on the pool (a recovery sweep, an abandoned run's step) finish before
  // the records they use are destroyed.
  blocking.stop();
  io.drop_pending();
  spdlog::info("agentd stopped");
  spdlog::default_logger()->flush();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* what) -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "agentd: " << a << " needs " << what << "\n" << kUsage;
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "-c" || a == "--config") {
      args.config = value("a file");
    } else if (a.starts_with("--config=")) {
      args.config = a.substr(9);
    } else if (a == "--set") {
      args.overrides.push_back(value("key.path=value"));
    } else if (a.starts_with("--set=")) {
      args.overrides.push_back(a.substr(6));
    } else if (a == "--check-config") {
      args.check = true;
      args.config = value("a file");
    } else if (a == "migrate" && i == 1) {
      args.migrate = true;
    } else if (a == "--status" && args.migrate) {
      args.migrate_status = true;
    } else if (a == "--version") {
      std::cout << "agentd " << AGENTD_VERSION << "\n";
      return 0;
    } else if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      return 0;
    } else {
      std::cerr << "agentd: unknown argument \"" << a << "\"\n" << kUsage;
      return 2;
    }
  }
  return run(args);
}
