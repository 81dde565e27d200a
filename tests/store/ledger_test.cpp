// app::Ledger over the SQLite records: records arriving steadily share commits, each is stored
// once with the time it was queued, and drain() writes what is still queued.
#include "agentd/app/ledger.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <filesystem>

#include "agentd/core/runtime.hpp"
#include "support/coro.hpp"

namespace agentd::app {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

store::AuditEntry entry(int n) {
  store::AuditEntry a;
  a.client = "ledger-test";
  a.server = "fs";
  a.tool = "read";
  a.args_sha256 = std::string(64, 'a');
  a.outcome = "ok";
  a.duration_us = n;
  a.request_id = "rid-" + std::to_string(n);
  return a;
}

asio::awaitable<void> nap(std::chrono::microseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

class LedgerTest : public ::testing::Test {
 public:  // the test coroutines (free functions) use the members
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "agentd-ledger-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    store::RecordsConfig config;
    config.data_dir = dir_ + "/data";
    records_ = store::make_records(config, pool_, metrics_);
  }
  void TearDown() override {
    records_.reset();
    pool_.stop();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Transactions that wrote audit records so far.
  std::uint64_t batches() {
    return metrics_
        .histogram("agentd_store_sql_call_seconds", "", core::latency_buckets(),
                   {{"backend", "sqlite"}, {"op", "append_audits"}})
        .count();
  }
  double written() {
    return metrics_.counter("agentd_records_written_total", "", {{"kind", "audit"}}).value();
  }
  asio::awaitable<std::vector<store::AuditEntry>> stored() {
    store::AuditQuery q;
    q.client = "ledger-test";
    q.limit = 10'000;
    auto rows = co_await records_->query_audit(q);
    EXPECT_TRUE(rows) << rows.error().message();
    co_return rows ? *rows : std::vector<store::AuditEntry>{};
  }

  std::string dir_;
  asio::io_context io_;
  core::Registry metrics_;
  core::BlockingPool pool_{2, 256};
  std::unique_ptr<store::Records> records_;
};

TEST_F(LedgerTest, RecordsArrivingSteadilyShareCommitsAndAreAllStored) {
  test::run_coroutine(
      io_,
      [](LedgerTest* t) -> asio::awaitable<void> {
        Ledger ledger(t->io_.get_executor(), *t->records_, t->metrics_);
        // 400 records, one every 0.5 ms: about 200 ms on an idle machine, longer when the
        // naps run late. A batch starts at most every kGroupEvery, so the batches are bounded
        // by the time the records took to arrive (not by the planned 200 ms: a slow machine
        // spreads them over more groups), plus the last batch and drain's.
        auto before = store::now_ms();
        for (int n = 0; n < 400; ++n) {
          ledger.audit(entry(n));
          co_await nap(500us);
        }
        auto arrived = store::now_ms();
        co_await ledger.drain(10s);
        auto after = store::now_ms();
        EXPECT_EQ(t->written(), 400);
        auto groups = static_cast<std::uint64_t>((arrived - before) / Ledger::kGroupEvery.count());
        EXPECT_LE(t->batches(), groups + 3) << "records arrived over " << arrived - before << " ms";
        auto rows = co_await t->stored();
        CO_ASSERT(rows.size() == 400u);
        for (const auto& r : rows) {
          EXPECT_GE(r.at, before);
          EXPECT_LE(r.at, after);
          EXPECT_EQ(r.id.size(), 32u);
        }
      }(this),
      30s);
}

TEST_F(LedgerTest, ALoneRecordIsWrittenAndDrainWritesWhatIsQueued) {
  test::run_coroutine(
      io_,
      [](LedgerTest* t) -> asio::awaitable<void> {
        Ledger ledger(t->io_.get_executor(), *t->records_, t->metrics_);
        ledger.audit(entry(0));
        for (int i = 0; i < 1000 && t->written() < 1; ++i) co_await nap(10ms);
        EXPECT_EQ(t->written(), 1);
        for (int n = 1; n <= 2000; ++n) ledger.audit(entry(n));  // more than one batch
        co_await ledger.drain(10s);
        EXPECT_EQ(t->written(), 2001);
        auto rows = co_await t->stored();
        EXPECT_EQ(rows.size(), 2001u);
      }(this),
      30s);
}

}  // namespace
}  // namespace agentd::app
