// A separate process for the durable-records fault tests: applies migrations at a given
// instant (two of these race each other), or writes records, says "acked" and waits to be
// killed (SIGKILL right after an acknowledged write).
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>
#include <vector>

#include "agentd/store/records.hpp"

namespace {

using namespace agentd;
namespace asio = boost::asio;

store::RecordsConfig config_from(const std::string& data_dir, const std::string& url) {
  store::RecordsConfig c;
  c.data_dir = data_dir;
  if (url != "-") c.postgres = url;
  c.application_name = "agentd_helper";
  return c;
}

asio::awaitable<std::string> write_records(store::Records& r, std::string id) {
  store::Intent in;
  in.id = id;
  in.client = "crash";
  in.agent = "coder";
  in.status = store::IntentStatus::running;
  in.input = {{"intent", "survive a crash"}};
  auto created = co_await r.create_intent(in);
  if (!created) co_return "create_intent: " + created.error().message();
  store::Step step;
  step.intent_id = id;
  step.seq = 1;
  step.kind = "plan";
  step.data = {{"steps", 3}};
  auto appended = co_await r.append_step(step);
  if (!appended) co_return "append_step: " + appended.error().message();
  store::SpendEntry spend;
  spend.id = id + "-spend";
  spend.client = "crash";
  spend.provider = "openai";
  spend.model = "gpt-4o-mini";
  spend.tokens_in = 10;
  spend.tokens_out = 20;
  spend.cost_micro_usd = 30;
  spend.intent_id = id;
  auto recorded = co_await r.record_spend(spend);
  if (!recorded) co_return "record_spend: " + recorded.error().message();
  co_return "";
}

// 200 intents with two steps each, all at once (SQLite group-commits them); "" when every
// write was acknowledged.
asio::awaitable<std::string> write_one(store::Records* r, std::string id) {
  store::Intent in;
  in.id = id;
  in.client = "crash";
  in.agent = "coder";
  in.status = store::IntentStatus::running;
  in.input = {{"intent", id}};
  auto created = co_await r->create_intent(in);
  if (!created) co_return "create_intent: " + created.error().message();
  for (std::int64_t seq = 1; seq <= 2; ++seq) {
    store::Step step;
    step.intent_id = id;
    step.seq = seq;
    step.kind = "llm";
    step.data = {{"seq", seq}};
    auto appended = co_await r->append_step(step);
    if (!appended) co_return "append_step: " + appended.error().message();
  }
  co_return "";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: store_sql_helper migrate|write|write-many DATA_DIR URL|- START_MS|INTENT_ID\n";
    return 2;
  }
  std::string mode = argv[1];
  auto config = config_from(argv[2], argv[3]);
  try {
    if (mode == "migrate") {
      // Both racers start at the same wall-clock instant.
      auto start =
          std::chrono::system_clock::time_point(std::chrono::milliseconds(std::stoll(argv[4])));
      std::this_thread::sleep_until(start);
      auto status = store::migrate(config);
      std::cout << "migrated " << status.migrations.size() << " pending " << status.pending()
                << std::endl;
      return 0;
    }
    if (mode == "write-many") {
      asio::io_context io;
      core::BlockingPool pool(2, 1024);
      core::Registry metrics;
      auto records = store::make_records(config, pool, metrics);
      std::vector<std::future<std::string>> writes;
      for (int i = 0; i < 200; ++i) {
        writes.push_back(asio::co_spawn(
            io, write_one(records.get(), std::string(argv[4]) + "-" + std::to_string(i)),
            asio::use_future));
      }
      io.run();
      for (auto& w : writes) {
        auto failure = w.get();
        if (!failure.empty()) {
          std::cerr << failure << "\n";
          return 1;
        }
      }
      std::cout << "acked" << std::endl;                     // every write above is committed
      std::this_thread::sleep_for(std::chrono::minutes(5));  // the test kills us
      return 0;
    }
    if (mode == "write") {
      asio::io_context io;
      core::BlockingPool pool(2, 16);
      core::Registry metrics;
      auto records = store::make_records(config, pool, metrics);
      auto fut = asio::co_spawn(io, write_records(*records, argv[4]), asio::use_future);
      io.run();
      auto failure = fut.get();
      if (!failure.empty()) {
        std::cerr << failure << "\n";
        return 1;
      }
      std::cout << "acked" << std::endl;                     // every write above is committed
      std::this_thread::sleep_for(std::chrono::minutes(5));  // the test kills us
      return 0;
    }
  } catch (const std::exception& e) {
    std::cerr << "store_sql_helper: " << e.what() << "\n";
    return 1;
  }
  std::cerr << "unknown mode " << mode << "\n";
  return 2;
}
