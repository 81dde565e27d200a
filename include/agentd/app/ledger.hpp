// The spend ledger and MCP audit records, written in batches off the request path: one bounded
// queue per kind, one writer coroutine per kind committing up to kBatch entries per transaction
// (one fsync for many records instead of one each). Under load a batch starts at most every
// kGroupEvery: the records that arrive meanwhile share its commit (an idle writer writes at
// once, so a lone record is not delayed). A full queue drops the entry and counts it
// (agentd_records_dropped_total{kind}); a failed batch is retried with backoff, so records
// queued while the database is down are written when it returns.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <memory>

#include "agentd/core/metrics.hpp"
#include "agentd/store/records.hpp"

namespace agentd::app {

class Ledger {
 public:
  static constexpr std::size_t kBatch = 512;
  static constexpr std::chrono::milliseconds kGroupEvery{10};

  Ledger(boost::asio::any_io_executor ex, store::Records& records, core::Registry& metrics,
         std::size_t max_queued = 100'000);
  ~Ledger();
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  void audit(store::AuditEntry entry);
  void spend(store::SpendEntry entry);
  // At shutdown: writes what is queued (at most `limit`), then stops the writers.
  boost::asio::awaitable<void> drain(std::chrono::milliseconds limit);

  struct Impl;  // public so the writer coroutines (free functions) can name it

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace agentd::app
