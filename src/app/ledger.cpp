// Batched writers for the spend ledger and the audit log.
#include "agentd/app/ledger.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <deque>
#include <vector>

namespace agentd::app {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// One kind of record: a bounded queue and the coroutine that writes it in batches.
template <class Entry>
struct Queue {
  Queue(asio::any_io_executor ex, const char* k, core::Registry& metrics, std::size_t max)
      : kind(k),
        max_queued(max),
        wake(ex, asio::steady_timer::time_point::max()),
        dropped(metrics.counter("agentd_records_dropped_total",
                                "Spend and audit records dropped because their queue was full",
                                {{"kind", k}})),
        written(metrics.counter("agentd_records_written_total",
                                "Spend and audit records committed to the durable store",
                                {{"kind", k}})) {}

  const char* kind;
  std::size_t max_queued;
  std::deque<Entry> queue;
  asio::steady_timer wake;
  core::Counter& dropped;
  core::Counter& written;
  bool stopping = false;
  bool writing = false;
  bool idle = false;       // the writer waits for a first record
  bool gathering = false;  // the writer waits for more records to join its next batch
  Clock::time_point last_warning{};

  void push(Entry e) {
    if (queue.size() >= max_queued) {
      dropped.inc();
      auto now = Clock::now();
      if (now - last_warning > std::chrono::minutes(1)) {
        last_warning = now;
        spdlog::warn("{} records are being dropped: {} are waiting for the database", kind,
                     queue.size());
      }
      return;
    }
    queue.push_back(std::move(e));
    if (idle || (gathering && queue.size() >= Ledger::kBatch)) wake.cancel();
  }
};

}  // namespace

struct Ledger::Impl {
  Impl(asio::any_io_executor e, store::Records& r, core::Registry& m, std::size_t max)
      : ex(e), records(r), audits(e, "audit", m, max), spends(e, "spend", m, max) {}
  asio::any_io_executor ex;
  store::Records& records;
  Queue<store::AuditEntry> audits;
  Queue<store::SpendEntry> spends;
};

namespace {

asio::awaitable<Result<std::size_t>> write_batch(store::Records& r,
                                                 std::vector<store::AuditEntry> batch) {
  co_return co_await r.append_audits(std::move(batch));
}

asio::awaitable<Result<std::size_t>> write_batch(store::Records& r,
                                                 std::vector<store::SpendEntry> batch) {
  co_return co_await r.record_spends(std::move(batch));
}

// Takes up to kBatch entries at a time; a failed batch stays at the front and is retried.
template <class Entry>
asio::awaitable<void> writer(std::shared_ptr<Ledger::Impl> impl, Queue<Entry>* q) {
  auto backoff = std::chrono::milliseconds(250);
  Clock::time_point last_batch{};
  for (;;) {
    if (q->queue.empty()) {
      if (q->stopping) co_return;
      q->idle = true;
      q->wake.expires_at(asio::steady_timer::time_point::max());
      co_await q->wake.async_wait(kTuple);
      q->idle = false;
      continue;
    }
    // Group commit: each commit costs a WAL write and an fsync whatever it holds, so under load
    // the records arriving within kGroupEvery of the last batch wait to share the next one.
    if (auto next = last_batch + Ledger::kGroupEvery;
        q->queue.size() < Ledger::kBatch && !q->stopping && Clock::now() < next) {
      q->gathering = true;
      q->wake.expires_at(next);
      co_await q->wake.async_wait(kTuple);
      q->gathering = false;
      continue;
    }
    last_batch = Clock::now();
    auto n = std::min(q->queue.size(), Ledger::kBatch);
    std::vector<Entry> batch(q->queue.begin(), q->queue.begin() + static_cast<std::ptrdiff_t>(n));
    q->writing = true;
    auto r = co_await write_batch(impl->records, std::move(batch));
    q->writing = false;
    if (r) {
      q->queue.erase(q->queue.begin(), q->queue.begin() + static_cast<std::ptrdiff_t>(n));
      q->written.inc(static_cast<double>(n));
      backoff = std::chrono::milliseconds(250);
      continue;
    }
    if (r.error() == Errc::bad_request) {  // never going to succeed: do not block the rest
      spdlog::warn("{} records refused by the store: {} ({} dropped)", q->kind,
                   r.error().message(), n);
      q->queue.erase(q->queue.begin(), q->queue.begin() + static_cast<std::ptrdiff_t>(n));
      q->dropped.inc(static_cast<double>(n));
      continue;
    }
    if (q->stopping) co_return;  // drain() gave up
    spdlog::warn("{} records not written yet ({} waiting): {}; retrying in {}ms", q->kind,
                 q->queue.size(), r.error().message(), backoff.count());
    q->wake.expires_after(backoff);
    co_await q->wake.async_wait(kTuple);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(10'000));
  }
}

}  // namespace

Ledger::Ledger(asio::any_io_executor ex, store::Records& records, core::Registry& metrics,
               std::size_t max_queued)
    : impl_(std::make_shared<Impl>(ex, records, metrics, max_queued)) {
  asio::co_spawn(ex, writer(impl_, &impl_->audits), asio::detached);
  asio::co_spawn(ex, writer(impl_, &impl_->spends), asio::detached);
}

Ledger::~Ledger() {
  impl_->audits.stopping = impl_->spends.stopping = true;
  impl_->audits.wake.cancel();
  impl_->spends.wake.cancel();
}

// Stamped when queued, not when the batch is written.
void Ledger::audit(store::AuditEntry entry) {
  if (entry.at == 0) entry.at = store::now_ms();
  impl_->audits.push(std::move(entry));
}

void Ledger::spend(store::SpendEntry entry) {
  if (entry.at == 0) entry.at = store::now_ms();
  impl_->spends.push(std::move(entry));
}

asio::awaitable<void> Ledger::drain(std::chrono::milliseconds limit) {
  auto impl = impl_;
  auto deadline = Clock::now() + limit;
  asio::steady_timer nap(impl->ex);
  while ((!impl->audits.queue.empty() || !impl->spends.queue.empty()) && Clock::now() < deadline) {
    nap.expires_after(std::chrono::milliseconds(20));
    co_await nap.async_wait(kTuple);
  }
  auto left = impl->audits.queue.size() + impl->spends.queue.size();
  if (left > 0) spdlog::warn("shutdown: {} spend/audit records were not written", left);
  impl->audits.stopping = impl->spends.stopping = true;
  impl->audits.wake.cancel();
  impl->spends.wake.cancel();
}

}  // namespace agentd::app
