// The durable-records repository, written once for both dialects, and the executor that runs
// it on the blocking pool through a bounded connection pool.
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/this_coro.hpp>
#include <charconv>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <limits>
#include <random>
#include <thread>

#include "records_sql.hpp"

namespace agentd::store {

// ---------------------------------------------------------------------------------------------
// Small public helpers.

namespace {

constexpr const char* kHex = "0123456789abcdef";

// 16 random bytes from a per-thread buffer refilled 4 KB at a time: one RAND_bytes call per
// 256 ids instead of one per id (a call per spend row was 1.9% of the gateway's CPU).
void random_bytes16(unsigned char* raw) {
  struct Buffer {
    unsigned char bytes[4096];
    std::size_t used = sizeof bytes;
  };
  thread_local Buffer buf;
  if (buf.used + 16 > sizeof buf.bytes) {
    if (RAND_bytes(buf.bytes, sizeof buf.bytes) != 1) {
      // Ids are not secrets, but they must not collide: fall back to the OS generator.
      std::random_device rd;
      for (auto& b : buf.bytes) b = static_cast<unsigned char>(rd());
    }
    buf.used = 0;
  }
  std::memcpy(raw, buf.bytes + buf.used, 16);
  std::memset(buf.bytes + buf.used, 0, 16);  // handed out once
  buf.used += 16;
}

// Fills out[from..] with random hex digits.
void random_hex(std::string& out, std::size_t from) {
  unsigned char raw[16];
  random_bytes16(raw);
  for (std::size_t i = from; i < out.size(); ++i) {
    auto b = raw[(i - from) / 2];
    out[i] = kHex[(i - from) % 2 == 0 ? b >> 4 : b & 15];
  }
}

}  // namespace

std::string new_id() {
  std::string out(32, '0');
  random_hex(out, 0);
  return out;
}

std::string new_id(TimeMs at) {
  std::string out(32, '0');
  auto t = static_cast<std::uint64_t>(std::max<TimeMs>(at, 0));
  for (int i = 11; i >= 0; --i, t >>= 4) out[static_cast<std::size_t>(i)] = kHex[t & 15];
  random_hex(out, 12);
  return out;
}

TimeMs now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string_view to_string(IntentStatus s) noexcept {
  switch (s) {
    case IntentStatus::accepted:
      return "accepted";
    case IntentStatus::running:
      return "running";
    case IntentStatus::waiting_input:
      return "waiting_input";
    case IntentStatus::completed:
      return "completed";
    case IntentStatus::failed:
      return "failed";
    case IntentStatus::cancelled:
      return "cancelled";
  }
  return "accepted";
}

std::optional<IntentStatus> parse_intent_status(std::string_view s) noexcept {
  for (auto v : {IntentStatus::accepted, IntentStatus::running, IntentStatus::waiting_input,
                 IntentStatus::completed, IntentStatus::failed, IntentStatus::cancelled}) {
    if (to_string(v) == s) return v;
  }
  return std::nullopt;
}

bool is_terminal(IntentStatus s) noexcept {
  return s == IntentStatus::completed || s == IntentStatus::failed || s == IntentStatus::cancelled;
}

void parse_records_config(const core::ConfigNode& store, RecordsConfig& out) {
  out.data_dir = store.get_string("data_dir", out.data_dir);
  if (auto n = store.get("postgres")) {
    out.postgres = n->as_string();
    if (!out.postgres.empty() && out.postgres.rfind("postgresql://", 0) != 0 &&
        out.postgres.rfind("postgres://", 0) != 0 && out.postgres.find('=') == std::string::npos) {
      n->fail("expected a postgresql:// URL or a libpq key=value connection string");
    }
  }
  out.pool_size = static_cast<std::size_t>(
      store.get_int("pool_size", static_cast<std::int64_t>(out.pool_size), 1, 256));
  out.pool_timeout = store.get_duration("pool_timeout", out.pool_timeout);
  out.connect_timeout = store.get_duration("connect_timeout", out.connect_timeout);
  out.statement_timeout = store.get_duration("statement_timeout", out.statement_timeout);
  out.busy_timeout = store.get_duration("busy_timeout", out.busy_timeout);
  out.migration_lock_timeout =
      store.get_duration("migration_lock_timeout", out.migration_lock_timeout);
}

// ---------------------------------------------------------------------------------------------
// The executor.

namespace sql {

std::int64_t Row::integer(std::size_t i) const {
  const auto& c = cols.at(i);
  if (!c) return 0;
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(c->data(), c->data() + c->size(), v);
  if (ec != std::errc() || p != c->data() + c->size()) {
    throw std::runtime_error("column " + std::to_string(i) + " is not an integer: " + *c);
  }
  return v;
}

namespace {

using Clock = std::chrono::steady_clock;
using boost::system::error_code;

constexpr int kMaxSerializationRetries = 5;

const char* outcome_label(const error_code& ec) {
  if (!ec) return "ok";
  if (ec.category() != error_category()) return "internal";
  switch (static_cast<Errc>(ec.value())) {
    case Errc::bad_request:
      return "bad_request";
    case Errc::not_found:
      return "not_found";
    case Errc::conflict:
      return "conflict";
    case Errc::forbidden:
      return "forbidden";
    case Errc::unavailable:
      return "unavailable";
    case Errc::timeout:
      return "timeout";
    default:
      return "internal";
  }
}

struct Slot {
  std::unique_ptr<Conn> conn;  // touched only by the thread running the call that leased it
};

struct Waiter {
  explicit Waiter(const asio::any_io_executor& ex) : timer(ex) {}
  asio::steady_timer timer;
  Slot* granted = nullptr;
};

// Loop-thread only. A freed slot goes to the oldest waiter first.
struct SlotPool {
  SlotPool(std::size_t n, core::Gauge& in_use_gauge, core::Gauge& waiting_gauge)
      : in_use(in_use_gauge), waiting(waiting_gauge) {
    for (std::size_t i = 0; i < n; ++i) {
      slots.push_back(std::make_unique<Slot>());
      free.push_back(slots.back().get());
    }
  }
  void release(Slot* s) {
    in_use.dec();
    if (!waiters.empty()) {
      auto w = waiters.front();
      waiters.pop_front();
      w->granted = s;
      in_use.inc();
      w->timer.cancel();
      return;
    }
    free.push_back(s);
  }
  std::vector<std::unique_ptr<Slot>> slots;
  std::vector<Slot*> free;
  std::deque<std::shared_ptr<Waiter>> waiters;
  core::Gauge& in_use;
  core::Gauge& waiting;
};

// What one call did on its blocking thread.
struct Outcome {
  Outcome() = default;  // not an aggregate: Result<Outcome> must not be built from an error_code
  error_code ec;
  bool connect_failed = false;  // the database could not be reached
  int serialization_retries = 0;
  int reconnects = 0;
  std::string detail;
};

// The caller's error for a database failure that is not retried.
error_code error_for(DbError::Kind kind) {
  using K = DbError::Kind;
  switch (kind) {
    case K::connect:
    case K::broken:
    case K::retry:
    case K::busy:
      return make_error_code(Errc::unavailable);
    case K::timeout:
      return make_error_code(Errc::timeout);
    case K::unique:
      return make_error_code(Errc::conflict);
    case K::foreign_key:
      return make_error_code(Errc::not_found);
    case K::invalid:
      return make_error_code(Errc::bad_request);
    case K::other:
      return make_error_code(Errc::internal);
  }
  return make_error_code(Errc::internal);
}

Outcome work(const Connector& connect, Slot& slot, Access access, bool idempotent,
             const Body& body) {
  Outcome o;
  for (;;) {
    bool sent = false;  // statements went out: the commit outcome may be unknown
    try {
      if (!slot.conn || !slot.conn->usable()) {
        slot.conn.reset();
        slot.conn = connect(access);
      }
      slot.conn->begin(access);
      sent = true;
      o.ec = body(*slot.conn);
      if (o.ec) {
        slot.conn->rollback();
      } else {
        slot.conn->commit();
      }
      return o;
    } catch (const DbError& e) {
      if (slot.conn) slot.conn->rollback();
      o.detail = e.what();
      using K = DbError::Kind;
      switch (e.kind) {
        case K::connect:
          slot.conn.reset();
          o.connect_failed = true;
          o.ec = make_error_code(Errc::unavailable);
          return o;
        case K::broken:
          slot.conn.reset();
          // The connection died (server restarted, failover, network cut): one more try on a
          // new one. Work whose statements went out is repeated only when idempotent.
          if (o.reconnects == 0 && (idempotent || !sent)) {
            ++o.reconnects;
            continue;
          }
          o.connect_failed = true;
          o.ec = make_error_code(Errc::unavailable);
          return o;
        case K::retry:
          if (o.serialization_retries < kMaxSerializationRetries) {
            ++o.serialization_retries;
            // Short randomised pause so that the transactions that collided do not again.
            thread_local std::mt19937 rng{std::random_device{}()};
            std::uniform_int_distribution<int> jitter(1, 4 << o.serialization_retries);
            std::this_thread::sleep_for(std::chrono::milliseconds(jitter(rng)));
            continue;
          }
          o.ec = make_error_code(Errc::unavailable);
          return o;
        default:
          o.ec = error_for(e.kind);
          return o;
      }
    } catch (const std::exception& e) {
      // A bug or a stored value we cannot read: never retried.
      if (slot.conn) slot.conn->rollback();
      o.detail = e.what();
      o.ec = make_error_code(Errc::internal);
      return o;
    }
  }
}

// One write of a group commit, as the blocking thread sees it.
struct BatchEntry {
  Body body;
  bool idempotent = true;
};

// Failures that end one statement but leave the transaction usable (SQLite rolls back only
// the statement); anything else ends the whole group.
bool statement_level(DbError::Kind k) {
  using K = DbError::Kind;
  return k == K::unique || k == K::foreign_key || k == K::invalid || k == K::other;
}

// A group commit: every entry in one write transaction and one commit (one fdatasync), each
// inside its own savepoint, so an entry that fails (an error it returns, a constraint a
// statement breaks) is rolled back alone and the others still commit. When the transaction as
// a whole fails (storage error, the connection died, the commit failed), nothing of it is
// stored: each entry then runs alone in its own transaction, so every caller hears its own
// true outcome. Runs on a blocking thread; `fell_back` tells the metrics.
std::vector<Outcome> work_batch(const Connector& connect, Slot& slot,
                                const std::vector<BatchEntry>& batch, bool& fell_back) {
  std::vector<Outcome> out(batch.size());
  if (batch.size() == 1) {
    out[0] = work(connect, slot, Access::write, batch[0].idempotent, batch[0].body);
    return out;
  }
  enum class Stage { begin, bodies, commit } stage = Stage::begin;
  std::optional<DbError::Kind> kind;  // of the failure that ended the group
  std::string why;
  try {
    if (!slot.conn || !slot.conn->usable()) {
      slot.conn.reset();
      slot.conn = connect(Access::write);
    }
    Conn& c = *slot.conn;
    c.begin(Access::write);
    stage = Stage::bodies;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      c.exec_script("SAVEPOINT agentd_write");
      error_code ec;
      try {
        ec = batch[i].body(c);
      } catch (const DbError& e) {
        if (!statement_level(e.kind)) throw;
        ec = error_for(e.kind);
        out[i].detail = e.what();
      } catch (const std::exception& e) {
        ec = make_error_code(Errc::internal);  // a bug or a stored value we cannot read
        out[i].detail = e.what();
      }
      // Throws ("no such savepoint") when the error rolled back the whole transaction.
      c.exec_script(ec ? "ROLLBACK TO agentd_write; RELEASE agentd_write"
                       : "RELEASE agentd_write");
      out[i].ec = ec;
    }
    stage = Stage::commit;
    c.commit();
    return out;
  } catch (const DbError& e) {
    kind = e.kind;
    why = e.what();
  } catch (const std::exception& e) {
    why = e.what();
  }
  if (slot.conn) slot.conn->rollback();
  using K = DbError::Kind;
  if (stage == Stage::begin && kind && *kind != K::broken) {
    // Nothing ran (database unreachable, or locked by another process beyond busy_timeout):
    // every entry alone would meet the same, one busy_timeout after the other.
    if (*kind == K::connect) slot.conn.reset();
    for (auto& o : out) {
      o = Outcome();
      o.ec = error_for(*kind);
      o.connect_failed = *kind == K::connect;
      o.detail = why;
    }
    return out;
  }
  fell_back = true;
  // A connection lost during COMMIT leaves the outcome unknown: only idempotent work is
  // repeated (as work() does), the rest hears unavailable.
  bool unknown = stage == Stage::commit && kind && *kind == K::broken;
  if (kind && *kind == K::broken) slot.conn.reset();
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (unknown && !batch[i].idempotent) {
      out[i] = Outcome();
      out[i].ec = make_error_code(Errc::unavailable);
      out[i].connect_failed = true;
      out[i].detail = why;
      continue;
    }
    out[i] = work(connect, slot, Access::write, batch[i].idempotent, batch[i].body);
  }
  return out;
}

}  // namespace

// One write waiting for the group commit. Loop thread only.
struct Executor::PendingWrite {
  PendingWrite(const asio::any_io_executor& ex, const char* o, bool idem, Body b)
      : timer(ex), op(o), idempotent(idem), body(std::move(b)), started(Clock::now()) {}
  asio::steady_timer timer;
  const char* op;
  bool idempotent;
  Body body;
  Clock::time_point started;
  enum class Stage { queued, running, done } stage = Stage::queued;
  Outcome outcome;
};

struct Executor::State {
  State(std::string name, Connector c, std::size_t read_slots, std::size_t write_slots,
        std::chrono::milliseconds timeout, core::Registry& m)
      : backend(std::move(name)),
        connect(std::move(c)),
        pool_timeout(timeout),
        metrics(m),
        in_use(m.gauge("agentd_store_sql_connections_in_use", "Database connections leased",
                       {{"backend", backend}})),
        waiting(m.gauge("agentd_store_sql_connection_waiters",
                        "Calls waiting for a free database connection", {{"backend", backend}})),
        available(m.gauge("agentd_store_sql_available", "1 while the database answers",
                          {{"backend", backend}})),
        read(read_slots, in_use, waiting) {
    if (write_slots > 0) write = std::make_unique<SlotPool>(write_slots, in_use, waiting);
    available.set(1);
  }

  SlotPool& pool_for(Access a) { return a != Access::read && write ? *write : read; }

  void count(const char* op, const error_code& ec, Clock::duration took) {
    metrics
        .counter("agentd_store_sql_calls_total", "Durable-record calls by outcome",
                 {{"backend", backend}, {"outcome", outcome_label(ec)}})
        .inc();
    auto it = op_seconds.find(op);
    if (it == op_seconds.end()) {
      it = op_seconds
               .emplace(op, &metrics.histogram("agentd_store_sql_call_seconds",
                                               "Durable-record call latency, pool wait included",
                                               core::latency_buckets(),
                                               {{"backend", backend}, {"op", op}}))
               .first;
    }
    it->second->observe(std::chrono::duration<double>(took).count());
  }

  void retried(const char* reason, int n) {
    if (n <= 0) return;
    metrics
        .counter("agentd_store_sql_retries_total", "Transactions run again",
                 {{"backend", backend}, {"reason", reason}})
        .inc(n);
  }

  // What every call does once its outcome is known: availability, retries, logs, metrics.
  void settle(const char* op, const Outcome& o, Clock::time_point started) {
    if (o.connect_failed) {
      mark_down(o.detail);
    } else {
      mark_up();
    }
    retried("serialization", o.serialization_retries);
    retried("reconnect", o.reconnects);
    if (o.ec == make_error_code(Errc::internal)) {
      spdlog::error("store: {} {} failed: {}", backend, op, o.detail);
    } else if (o.ec == make_error_code(Errc::unavailable) && !o.connect_failed) {
      spdlog::warn("store: {} {}: {}", backend, op, o.detail);
    } else if (o.ec && !o.detail.empty()) {
      spdlog::debug("store: {} {}: {}", backend, op, o.detail);
    }
    count(op, o.ec, Clock::now() - started);
  }

  void mark_down(const std::string& why) {
    if (!down) spdlog::warn("store: {} unavailable: {}", backend, why);
    down = true;
    backoff = backoff.count() == 0 ? std::chrono::milliseconds(250)
                                   : std::min(backoff * 2, std::chrono::milliseconds(2000));
    retry_at = Clock::now() + backoff;
    last_error = why;
    available.set(0);
  }

  void mark_up() {
    if (down) spdlog::info("store: {} available again", backend);
    down = false;
    backoff = std::chrono::milliseconds(0);
    available.set(1);
  }

  const std::string backend;
  const Connector connect;
  const std::chrono::milliseconds pool_timeout;
  core::Registry& metrics;
  core::Gauge& in_use;
  core::Gauge& waiting;
  core::Gauge& available;
  SlotPool read;
  std::unique_ptr<SlotPool> write;
  // Availability, loop thread only: while down, calls fail at once until retry_at.
  bool down = false;
  Clock::time_point retry_at;
  std::chrono::milliseconds backoff{0};
  std::string last_error;
  std::map<std::string, core::Histogram*, std::less<>> op_seconds;
  // Group commit (SQLite's one writer): writes wait here, oldest first, for the writer loop,
  // which runs while the queue is not empty.
  std::deque<std::shared_ptr<PendingWrite>> write_queue;
  bool writer_running = false;
};

namespace {

// Gives the slot back when the call ends, however it ends (also when the caller's coroutine
// is cancelled or destroyed).
struct Lease {
  std::shared_ptr<Executor::State> state;
  SlotPool* pool = nullptr;
  Slot* slot = nullptr;
  ~Lease() {
    if (slot) pool->release(slot);
  }
};

}  // namespace

Executor::Executor(std::string backend, Connector connect, std::size_t read_slots,
                   std::size_t write_slots, std::chrono::milliseconds pool_timeout,
                   core::BlockingPool& pool, core::Registry& metrics)
    : state_(std::make_shared<State>(std::move(backend), std::move(connect), read_slots,
                                     write_slots, pool_timeout, metrics)),
      pool_(pool) {}

Executor::~Executor() = default;

const std::string& Executor::backend() const noexcept { return state_->backend; }

RecordsHealth Executor::health() const {
  RecordsHealth h;
  h.available = !state_->down;
  h.detail = state_->down ? "unavailable: " + state_->last_error : "ok";
  return h;
}

namespace {

// Runs what the queue holds, up to kMaxWriteBatch writes per transaction, until it is empty;
// each write's caller is woken after its batch committed (or failed).
asio::awaitable<void> write_loop(std::shared_ptr<Executor::State> st, core::BlockingPool& pool) {
  using Stage = Executor::PendingWrite::Stage;
  auto& sizes = st->metrics.histogram(
      "agentd_store_sql_write_batch_size", "Writes committed together in one transaction",
      {1, 2, 4, 8, 16, 32, 64, 128, 256}, {{"backend", st->backend}});
  auto& fallbacks = st->metrics.counter(
      "agentd_store_sql_write_batch_fallbacks_total",
      "Group commits that failed as a whole, their writes then run one by one",
      {{"backend", st->backend}});
  while (!st->write_queue.empty()) {
    std::vector<std::shared_ptr<Executor::PendingWrite>> taken;
    std::vector<BatchEntry> entries;
    while (!st->write_queue.empty() && taken.size() < Executor::kMaxWriteBatch) {
      auto w = std::move(st->write_queue.front());
      st->write_queue.pop_front();
      st->waiting.dec();
      w->stage = Stage::running;
      entries.push_back(BatchEntry{std::move(w->body), w->idempotent});
      taken.push_back(std::move(w));
    }
    Slot* slot = st->write->slots.front().get();  // only this loop uses the writer
    auto fell_back = std::make_shared<bool>(false);
    auto job = [st, slot, batch = std::move(entries), fell_back]() {
      return work_batch(st->connect, *slot, batch, *fell_back);
    };
    Result<std::vector<Outcome>> result = make_error_code(Errc::internal);
    st->in_use.inc();
    try {
      result = co_await pool.run(std::move(job));
    } catch (const std::exception& e) {
      spdlog::error("store: {} group commit failed: {}", st->backend, e.what());
    }
    st->in_use.dec();
    sizes.observe(static_cast<double>(taken.size()));
    if (*fell_back) fallbacks.inc();
    for (std::size_t i = 0; i < taken.size(); ++i) {
      auto& w = *taken[i];
      if (result) {
        w.outcome = std::move((*result)[i]);
      } else {
        w.outcome.ec = result.error();  // the blocking pool's own bound
      }
      st->settle(w.op, w.outcome, w.started);
      w.stage = Stage::done;
      w.timer.cancel();
    }
  }
  st->writer_running = false;
}

}  // namespace

asio::awaitable<error_code> Executor::group_write(std::shared_ptr<State> st, const char* op,
                                                  bool idempotent, Body body) {
  using Stage = PendingWrite::Stage;
  auto ex = co_await asio::this_coro::executor;
  auto w = std::make_shared<PendingWrite>(ex, op, idempotent, std::move(body));
  st->write_queue.push_back(w);
  st->waiting.inc();
  if (!st->writer_running) {
    st->writer_running = true;
    // Owned by the executor's state: it ends when the queue is empty. It does not throw (a
    // failed batch is each caller's error), so the handler only reports a bug.
    asio::co_spawn(ex, write_loop(st, pool_), [st](std::exception_ptr e) {
      if (!e) return;
      st->writer_running = false;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        spdlog::error("store: {} writer stopped: {}", st->backend, x.what());
      }
    });
  }
  w->timer.expires_after(st->pool_timeout);
  co_await w->timer.async_wait(asio::as_tuple(asio::use_awaitable));
  if (w->stage == Stage::queued) {
    // Not taken within pool_timeout (the writer is stuck behind a lock or a slow disk).
    std::erase(st->write_queue, w);
    st->waiting.dec();
    spdlog::warn("store: {} {}: no free connection within {} ms", st->backend, op,
                 st->pool_timeout.count());
    auto ec = make_error_code(Errc::unavailable);
    st->count(op, ec, Clock::now() - w->started);
    co_return ec;
  }
  // In a batch: its outcome is what the caller must hear, however long the commit takes.
  while (w->stage != Stage::done) {
    w->timer.expires_at(asio::steady_timer::time_point::max());
    co_await w->timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  co_return w->outcome.ec;
}

asio::awaitable<error_code> Executor::run(const char* op, Access access, bool idempotent,
                                          Body body) {
  auto st = state_;
  auto started = Clock::now();
  if (st->down && started < st->retry_at) {
    // Fail fast: the database was unreachable moments ago; the HTTP layer answers 503.
    auto ec = make_error_code(Errc::unavailable);
    st->count(op, ec, Clock::now() - started);
    co_return ec;
  }
  if (access != Access::read && st->write) co_return co_await group_write(st, op, idempotent, std::move(body));
  SlotPool& pool = st->pool_for(access);
  Lease lease{st, &pool, nullptr};
  if (!pool.free.empty() && pool.waiters.empty()) {
    lease.slot = pool.free.back();
    pool.free.pop_back();
    pool.in_use.inc();
  } else {
    auto w = std::make_shared<Waiter>(co_await asio::this_coro::executor);
    w->timer.expires_after(st->pool_timeout);
    pool.waiters.push_back(w);
    pool.waiting.inc();
    co_await w->timer.async_wait(asio::as_tuple(asio::use_awaitable));
    pool.waiting.dec();
    lease.slot = w->granted;
    if (!lease.slot) {
      std::erase(pool.waiters, w);
      spdlog::warn("store: {} {}: no free connection within {} ms", st->backend, op,
                   st->pool_timeout.count());
      auto ec = make_error_code(Errc::unavailable);
      st->count(op, ec, Clock::now() - started);
      co_return ec;
    }
  }
  Slot* slot = lease.slot;
  // Named, not a temporary inside the co_await: GCC 12 mishandles such temporaries.
  auto job = [st, slot, access, idempotent, body = std::move(body)]() {
    return work(st->connect, *slot, access, idempotent, body);
  };
  auto result = co_await pool_.run(std::move(job));
  if (!result) {  // the blocking pool's own bound
    st->count(op, result.error(), Clock::now() - started);
    co_return result.error();
  }
  st->settle(op, *result, started);
  co_return result->ec;
}

}  // namespace sql

// ---------------------------------------------------------------------------------------------
// The repository.

namespace {

using boost::system::error_code;
using sql::Access;
using sql::Conn;
using sql::Param;
using sql::Params;
using sql::Row;

error_code err(Errc e) { return make_error_code(e); }
// Result<bool> cannot tell an error_code from a bool by conversion: say which one.
Result<bool> bool_error(error_code ec) { return Result<bool>(boost::system::in_place_error, ec); }

std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }
Param opt_text(const std::string& s) { return s.empty() ? Param(nullptr) : Param(s); }
Param opt_json(const Json& j) { return j.is_null() ? Param(nullptr) : Param(dump(j)); }
Param integer(std::int64_t v) { return Param(v); }
Json parse_json(const Row& r, std::size_t i) { return r.null(i) ? Json() : Json::parse(r.text(i)); }

// Keys (ids, names, roles): non-empty, bounded, no control characters.
bool valid_key(const std::string& s, std::size_t max = 256) {
  if (s.empty() || s.size() > max) return false;
  return std::none_of(s.begin(), s.end(),
                      [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}
bool valid_optional_key(const std::string& s) { return s.empty() || valid_key(s); }
// Free text: bounded, no NUL (libpq would cut the value there).
bool valid_text(const std::string& s, std::size_t max) {
  return s.size() <= max && s.find('\0') == std::string::npos;
}
bool valid_sha256(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}
bool digits(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}
bool valid_month(std::string_view s) {
  if (s.size() != 7 || s[4] != '-' || !digits(s.substr(0, 4)) || !digits(s.substr(5, 2))) {
    return false;
  }
  int m = (s[5] - '0') * 10 + (s[6] - '0');
  return m >= 1 && m <= 12;
}
bool valid_day(std::string_view s) {
  if (s.size() != 10 || s[7] != '-' || !valid_month(s.substr(0, 7)) || !digits(s.substr(8, 2))) {
    return false;
  }
  int d = (s[8] - '0') * 10 + (s[9] - '0');
  return d >= 1 && d <= 31;
}

std::string utc_day(TimeMs ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

constexpr std::int64_t kNoLimit = std::numeric_limits<std::int64_t>::max();

// --- column lists and row readers ---

#define AGENTD_INTENT_COLS                                                                        \
  "id, client, agent, session_id, status, input, result, error, owner, lease_until, created_at, " \
  "updated_at"

Intent intent_from(const Row& r) {
  Intent i;
  i.id = r.text(0);
  i.client = r.text(1);
  i.agent = r.text(2);
  i.session_id = r.text(3);
  auto status = parse_intent_status(r.text(4));
  if (!status) throw std::runtime_error("intent " + i.id + ": unknown status " + r.text(4));
  i.status = *status;
  i.input = parse_json(r, 5);
  i.result = parse_json(r, 6);
  i.error = r.text(7);
  i.owner = r.text(8);
  i.lease_until = r.integer(9);
  i.created_at = r.integer(10);
  i.updated_at = r.integer(11);
  return i;
}

#define AGENTD_MESSAGE_COLS "seq, id, role, content, tokens, intent_id, created_at"

Message message_from(const Row& r) {
  Message m;
  m.seq = r.integer(0);
  m.id = r.text(1);
  m.role = r.text(2);
  m.content = parse_json(r, 3);
  m.tokens = r.integer(4);
  m.intent_id = r.text(5);
  m.created_at = r.integer(6);
  return m;
}

#define AGENTD_ARTIFACT_COLS "id, intent_id, kind, mime, sha256, size, name, created_at"

Artifact artifact_from(const Row& r) {
  Artifact a;
  a.id = r.text(0);
  a.intent_id = r.text(1);
  a.kind = r.text(2);
  a.mime = r.text(3);
  a.sha256 = r.text(4);
  a.size = r.integer(5);
  a.name = r.text(6);
  a.created_at = r.integer(7);
  return a;
}

#define AGENTD_SPEND_COLS \
  "id, client, provider, model, day, tokens_in, tokens_out, cost_micro_usd, intent_id, at"

SpendEntry spend_from(const Row& r) {
  SpendEntry e;
  e.id = r.text(0);
  e.client = r.text(1);
  e.provider = r.text(2);
  e.model = r.text(3);
  e.day = r.text(4);
  e.tokens_in = r.integer(5);
  e.tokens_out = r.integer(6);
  e.cost_micro_usd = r.integer(7);
  e.intent_id = r.text(8);
  e.at = r.integer(9);
  return e;
}

SpendTotals totals_from(const Row& r, std::size_t first) {
  SpendTotals t;
  t.tokens_in = r.integer(first);
  t.tokens_out = r.integer(first + 1);
  t.cost_micro_usd = r.integer(first + 2);
  t.calls = r.integer(first + 3);
  return t;
}

#define AGENTD_AUDIT_COLS \
  "id, at, client, server, tool, args_sha256, outcome, duration_us, request_id, intent_id"

AuditEntry audit_from(const Row& r) {
  AuditEntry a;
  a.id = r.text(0);
  a.at = r.integer(1);
  a.client = r.text(2);
  a.server = r.text(3);
  a.tool = r.text(4);
  a.args_sha256 = r.text(5);
  a.outcome = r.text(6);
  a.duration_us = r.integer(7);
  a.request_id = r.text(8);
  a.intent_id = r.text(9);
  return a;
}

#define AGENTD_NOT_FINAL "status NOT IN ('completed', 'failed', 'cancelled')"

bool intent_exists(Conn& c, const std::string& id) {
  return !c.query("SELECT id FROM intents WHERE id = $1", Params{id}).empty();
}

class SqlRecords final : public Records {
 public:
  SqlRecords(std::unique_ptr<sql::Executor> exec, std::string backend)
      : exec_(std::move(exec)), backend_(std::move(backend)) {}

  // --- intents ---

  asio::awaitable<Result<Intent>> create_intent(Intent in) override {
    if (in.id.empty()) in.id = new_id();
    if (!valid_key(in.id) || !valid_key(in.client) || !valid_key(in.agent) ||
        !valid_optional_key(in.session_id) || !valid_optional_key(in.owner) ||
        !valid_text(in.error, 64 * 1024)) {
      co_return err(Errc::bad_request);
    }
    in.created_at = in.updated_at = now_ms();
    if (in.owner.empty()) in.lease_until = 0;
    auto out = std::make_shared<Intent>(std::move(in));
    sql::Body body = [out](Conn& c) {
      const Intent& i = *out;
      auto rows = c.query(
          "INSERT INTO intents (" AGENTD_INTENT_COLS
          ") VALUES ($1, $2, $3, $4, $5, $6::json, "
          "$7::json, $8, $9, $10, $11, $12) ON CONFLICT (id) DO NOTHING RETURNING id",
          Params{i.id, i.client, i.agent, opt_text(i.session_id), std::string(to_string(i.status)),
                 dump(i.input), opt_json(i.result), opt_text(i.error), opt_text(i.owner),
                 i.owner.empty() ? Param(nullptr) : integer(i.lease_until), i.created_at,
                 i.updated_at});
      if (!rows.empty()) return error_code();
      // The id exists: our own earlier attempt (same contents) or somebody else's intent.
      auto existing =
          c.query("SELECT " AGENTD_INTENT_COLS " FROM intents WHERE id = $1", Params{i.id});
      if (existing.empty()) return err(Errc::conflict);
      Intent e = intent_from(existing.front());
      if (e.client != i.client || e.agent != i.agent || e.session_id != i.session_id ||
          e.input != i.input) {
        return err(Errc::conflict);
      }
      *out = std::move(e);
      return error_code();
    };
    auto ec = co_await exec_->run("create_intent", Access::write, true, std::move(body));
    if (ec) co_return ec;
    co_return std::move(*out);
  }

  asio::awaitable<Result<Intent>> get_intent(std::string id) override {
    if (!valid_key(id)) co_return err(Errc::not_found);
    auto out = std::make_shared<Intent>();
    sql::Body body = [out, id](Conn& c) {
      auto rows = c.query("SELECT " AGENTD_INTENT_COLS " FROM intents WHERE id = $1", Params{id});
      if (rows.empty()) return err(Errc::not_found);
      *out = intent_from(rows.front());
      return error_code();
    };
    auto ec = co_await exec_->run("get_intent", Access::read, true, std::move(body));
    if (ec) co_return ec;
    co_return std::move(*out);
  }

  asio::awaitable<Result<Intent>> update_intent(std::string id, IntentUpdate u) override {
    if (!valid_key(id)) co_return err(Errc::not_found);
    if (u.error && !valid_text(*u.error, 64 * 1024)) co_return err(Errc::bad_request);
    auto out = std::make_shared<Intent>();
    auto now = now_ms();
    sql::Body body = [out, id, u, now](Conn& c) {
      auto rows = c.query(
          "UPDATE intents SET status = $2, result = COALESCE($3::json, result), "
          "error = COALESCE($4, error), updated_at = $5 WHERE id = $1 AND " AGENTD_NOT_FINAL
          " RETURNING " AGENTD_INTENT_COLS,
          Params{id, std::string(to_string(u.status)),
                 u.result ? opt_json(*u.result) : Param(nullptr),
                 u.error ? Param(*u.error) : Param(nullptr), now});
      if (!rows.empty()) {
        *out = intent_from(rows.front());
        return error_code();
      }
      auto existing =
          c.query("SELECT " AGENTD_INTENT_COLS " FROM intents WHERE id = $1", Params{id});
      if (existing.empty()) return err(Errc::not_found);
      // Final already: fine when it is this very update (a repeat after an unknown outcome).
      Intent e = intent_from(existing.front());
      bool same = e.status == u.status &&
                  (!u.result || u.result->is_null() || e.result == *u.result) &&
                  (!u.error || e.error == *u.error);
      if (!same) return err(Errc::conflict);
      *out = std::move(e);
      return error_code();
    };
    auto ec = co_await exec_->run("update_intent", Access::write, true, std::move(body));
    if (ec) co_return ec;
    co_return std::move(*out);
  }

  asio::awaitable<Result<std::vector<Intent>>> list_unfinished_intents(std::size_t limit) override {
    auto n = static_cast<std::int64_t>(std::clamp<std::size_t>(limit, 1, 100'000));
    auto out = std::make_shared<std::vector<Intent>>();
    sql::Body body = [out, n](Conn& c) {
      out->clear();
      for (const auto& r :
           c.query("SELECT " AGENTD_INTENT_COLS " FROM intents WHERE " AGENTD_NOT_FINAL
                   " ORDER BY created_at, id LIMIT $1",
                   Params{n})) {
        out->push_back(intent_from(r));
      }
      return error_code();
    };
    auto ec = co_await exec_->run("list_unfinished_intents", Access::read, true, std::move(body));
    if (ec) co_return ec;
    co_return std::move(*out);
  }

  asio::awaitable<Result<bool>> claim_intent(std::string id, std::string owner,
                                             TimeMs until) override {
    if (!valid_key(id)) co_return bool_error(err(Errc::not_found));
    if (!valid_key(owner)) co_return bool_error(err(Errc::bad_request));
    auto out = std::make_shared<bool>(false);
    auto now = now_ms();
    sql::Body body = [out, id, owner, until, now](Conn& c) {
      auto rows = c.query(
          "UPDATE intents SET owner = $2, lease_until = $3, updated_at = $4 WHERE id = $1 "
          "AND " AGENTD_NOT_FINAL
          " AND (owner IS NULL OR owner = $2 OR lease_until < $4) RETURNING id",
          Params{id, owner, until, now});
      *out = !rows.empty();
      if (!*out && !intent_exists(c, id)) return err(Errc::not_found);
      return error_code();
    };
    auto ec = co_await exec_->run("claim_intent", Access::write, true, std::move(body));
    if (ec) co_return bool_error(ec);
    co_return *out;
  }

  // --- steps ---

  asio::awaitable<Result<Step>> append_step(Step s) override {
    if (!valid_key(s.intent_id)) co_return err(Errc::not_found);
    if (s.seq < 1 || !valid_key(s.kind, 64)) co_return err(Errc::bad_request);
    s.created_at = now_ms();
    auto out = std::make_shared<Step>(std::move(s));
    sql::Body body = [out](Conn& c) {
      const Step& st = *out;
      // Inserted only as the next step: 1, or one after a step that is there.
      auto rows = c.query(
          "INSERT INTO intent_steps (intent_id, seq, kind, data, created_at) "
          "SELECT $1::text, $2::bigint, $3::text, $4::json, $5::bigint "
          "WHERE $2::bigint = 1 OR EXISTS (SELECT 1 FROM intent_steps "
          "WHERE intent_id = $1::text AND seq = $2::bigint - 1) "
          "ON CONFLICT (intent_id, seq) DO NOTHING RETURNING seq",
          Params{st.intent_id, st.seq, st.kind, dump(st.data), st.created_at});
      if (!rows.empty()) return error_code();
      auto existing = c.query(
          "SELECT kind, data, created_at FROM intent_steps WHERE intent_id = $1 AND seq = $2",
          Params{st.intent_id, st.seq});
      if (!existing.empty()) {
        const Row& r = existing.front();
        if (r.text(0) != st.kind || parse_json(r, 1) != st.data) return err(Errc::conflict);
        out->created_at = r.integer(2);  // recorded by an earlier attempt
        return error_code();
      }
      return intent_exists(c, st.intent_id) ? err(Errc::conflict) : err(Errc::not_found);
    };
    auto ec = co_await exec_->run("append_step", Access::write, true, std::move(body));
    if (ec) co_return ec;
    co_return std::move(*out);
  }

  asio::awaitable<Result<std::vector<Step>>> list_steps(std::string intent_id,
                                                        std::int64_t after_seq) override {
    if (!valid_key(intent_id)) co_return err(Errc::not_found);
    auto out = std::make_shared<std::vector<Step>>();
    sql::Body body = [out, intent_id, after_seq](Conn& c) {
      out->clear();
      for (const auto& r :
           c.query("SELECT seq, kind, data, created_at FROM intent_steps WHERE intent_id = $1 AND "
                   "seq > $2 ORDER BY seq",
                   Params{intent_id, after_seq})) {
        Step s;
        s.intent_id = intent_id;
        s.seq = r.integer(0);
        s.kind = r.text(1);
        s.data = parse_json(r, 2);
        s.created_at = r.integer(3);
        out->push_back(std::move(s));
      }
      if (out->empty() && !intent_exists(c, intent_id)) return err(Errc::not_found);
      return error_code();
    };
    auto ec = co_await exec_->run("list_steps", Access::read, true, std::move(body));
    if (ec) co_return ec;
    co_return std::move(*out);
  }

  // --- sessions ---

  asio::awaitable<Result<std::vector<Message>>> append_messages(
      std::string session_id, std::string client, std::vector<Message> messages) override {
    if (!valid_key(session_id) || !valid_key(client) || messages.empty() ||
        messages.size() > 10'000) {
      co_return err(Errc::bad_request);
    }
    auto now = now_ms();
    for (auto& m : messages) {
      if (m.id.empty()) m.id = new_id();
      if (!valid_key(m.id) || !valid_key(m.role, 64) || m.tokens < 0 ||
          !valid_optional_key(m.intent_id)) {
        co_return err(Errc::bad_request);
      }
      m.created_at = now;
    }
    auto out = std::make_shared<std::vector<Message>>(std::move(messages));
    sql::Body body = [out, session_id, client, now](Conn& c) {
      auto& ms = *out;
      // An earlier attempt that committed wrote all of them: read their numbers back.
      auto first =
          c.query("SELECT session_id FROM session_messages WHERE id = $1", Params{ms.front().id});
      if (!first.empty()) {
        if (first.front().text(0) != session_id) return err(Errc::conflict);
        for (auto& m : ms) {
          auto r = c.query(
              "SELECT seq, created_at FROM session_messages WHERE id = $1 AND session_id = $2",
              Params{m.id, session_id});
          if (r.empty()) return err(Errc::conflict);
          m.seq = r.front().integer(0);
          m.created_at = r.front().integer(1);
        }
        return error_code();
      }
      // Reserves the numbers atomically; the row lock orders concurrent appends. Only the
      // session's own client may append.
      auto n = static_cast<std::int64_t>(ms.size());
      auto seq = c.query(
          "INSERT INTO sessions (id, client, next_seq, created_at, updated_at) "
          "VALUES ($1, $2, $3::bigint + 1, $4, $4) ON CONFLICT (id) DO UPDATE SET "
          "next_seq = sessions.next_seq + $3::bigint, updated_at = $4 "
          "WHERE sessions.client = $2 RETURNING next_seq",
          Params{session_id, client, n, now});
      if (seq.empty()) return err(Errc::forbidden);
      std::int64_t next = seq.front().integer(0) - n;
      for (auto& m : ms) {
        m.seq = next++;
        c.query(
            "INSERT INTO session_messages (session_id, seq, id, role, content, tokens, "
            "intent_id, created_at) VALUES ($1, $2, $3, $4, $5::json, $6, $7, $8)",
            Params{session_id, m.seq, m.id, m.role, dump(m.content), m.tokens,
                   opt_text(m.intent_id), m.created_at});
      }
      return error_code();
    };
    auto ec = co_await exec_->run("append_messages", Access::write, true, std::move(body));
    if (ec) co_return ec;
    co_return std::move(*out);
  }

  asio::awaitable<Result<Session>> get_session(std::string id) override {
    if (!valid_key(id)) co_return err(Errc::not_found);
    auto out = std::make_shared<Session>();
    sql::Body body = [out, id](Conn& c) {
      auto rows = c.query(
          "SELECT s.id, s.client, s.created_at, s.updated_at, "
          "(SELECT COUNT(*) FROM session_messages m WHERE m.session_id = s.id), "
          "(SELECT COALESCE(SUM(m.tokens), 0) FROM session_messages m WHERE m.session_id = s.id) "
          "FROM sessions s WHERE s.id = $1",
          Params{id});
      if (rows.empty()) return err(Errc::not_found);
      const Row& r = rows.front();
      out->id = r.text(0);
      out->client = r.text(1);
      out->created_at = r.integer(2);
      out->updated_at = r.integer(3);
      out->messages = r.integer(4);
      out->tokens = r.integer(5);
      return error_code();
    };
    auto ec = co_await exec_->run("get_session", Access::read, true, std::move(body));
    if (ec) co_return ec;
    co_return std::move(*out);
  }

  asio::awaitable<Result<std::vector<Message>>> list_messages(std::string session_id,
                                                              std::size_t newest) override {
    if (!valid_key(session_id)) co_return err(Errc::not_found);
    std::int64_t limit = newest == 0 ? kNoLimit : static_cast<std::int64_t>(newest);
    auto out = std::make_shared<std::vector<Message>>();
    sql::Body body = [out, session_id, limit](Conn& c) {
      out->clear();
      for (const auto& r : c.query("SELECT " AGENTD_MESSAGE_COLS " FROM session_messages "
                                   "WHERE session_id = $1 ORDER BY seq DESC LIMIT $2",
                                   Params{session_id, limit})) {
        out->push_back(message_from(r));
      }
      std::reverse(out->begin(), out->end());
      if (out->empty() &&
          c.query("SELECT id FROM sessions WHERE id = $1", Params{session_id}).empty()) {
        return err(Errc::not_found);
      }
      return error_code();
    };
    auto ec = co_await exec_->run("list_messages", Access::read, true, std::move(body));
    if (ec) co_return ec;
    co_return std::move(*out);
  }

  asio::awaitable<Result<std::int64_t>> trim_session(std::string session_id,
                                                     SessionTrim trim) override {
    if (!valid_key(session_id)) co_return err(Errc::not_found);
    if (trim.keep_messages < 0 || trim.max_tokens < 0) co_return err(Errc::bad_request);
    auto out = std::make_shared<std::int64_t>(0);
    sql::Body body = [out, session_id, trim](Conn& c) {
      *out = 0;
      if (c.query("SELECT id FROM sessions WHERE id = $1", Params{session_id}).empty()) {
        return err(Errc::not_found);
      }
      auto rows = c.query(
          "SELECT seq, tokens FROM session_messages WHERE session_id = $1 ORDER BY seq DESC",
          Params{session_id});
      std::int64_t count = 0, tokens = 0;
      std::optional<std::int64_t> cutoff;
      for (const auto& r : rows) {
        ++count;
        tokens += r.integer(1);
        bool over = (trim.keep_messages > 0 && count > trim.keep_messages) ||
                    (trim.max_tokens > 0 && tokens > trim.max_tokens);
        if (over && count > 1) {  // the newest message always stays
          cutoff = r.integer(0);
          break;
        }
      }
      if (!cutoff) return error_code();
      auto deleted =
          c.query("DELETE FROM session_messages WHERE session_id = $1 AND seq <= $2 RETURNING seq",
                  Params{session_id, *cutoff});
      *out = static_cast<std::int64_t>(deleted.size());
      return error_code();
    };
    auto ec = co_await exec_->run("trim_session", Access::write, true, std::move(body));
    if (ec) co_return ec;
    co_return *out;
  }

  asio::awaitable<Result<bool>> delete_session(std::string id) override {
    if (!valid_key(id)) co_return false;
    auto out = std::make_shared<bool>(false);
    sql::Body body = [out, id](Conn& c) {
      *out = !c.query("DELETE FROM sessions WHERE id = $1 RETURNING id", Params{id}).empty();
      return error_code();
    };
    auto ec = co_await exec_->run("delete_session", Access::write, true, std::move(body));
    if (ec) co_return bool_error(ec);
    co_return *out;
  }

  // --- artifacts ---

  asio::awaitable<Result<Artifact>> create_artifact(Artifact a) override {
    if (a.id.empty()) a.id = new_id();
    if (!valid_key(a.id) || !valid_optional_key(a.intent_id) || !valid_key(a.kind, 64) ||
        !valid_key(a.mime, 255) || !valid_sha256(a.sha256) || a.size < 0 ||
        !valid_text(a.name, 1024)) {
      co_return err(Errc::bad_request);
    }
    a.created_at = now_ms();
    auto out = std::make_shared<Artifact>(std::move(a));
    sql::Body body = [out](Conn& c) {
      const Artifact& x = *out;
      auto rows = c.query("INSERT INTO artifacts (" AGENTD_ARTIFACT_COLS
                          ") VALUES ($1, $2, $3, "
                          "$4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING RETURNING id",
                          Params{x.id, opt_text(x.intent_id), x.kind, x.mime, x.sha256, x.size,
                                 x.name, x.created_at});
      if (!rows.empty()) return error_code();
      auto existing =
          c.query("SELECT " AGENTD_ARTIFACT_COLS " FROM artifacts WHERE id = $1", Params{x.id});
      if (existing.empty()) return err(Errc::conflict);
      Artifact e = artifact_from(existing.front());
      if (e.intent_id != x.intent_id || e.kind != x.kind || e.mime != x.mime ||
          e.sha256 != x.sha256 || e.size != x.size || e.name != x.name) {
        return err(Errc::conflict);
      }
      *out = std::move(e);
      return error_code();
    };
    auto ec = co_await exec_->run("create_artifact", Access::write, true, std::move(body));
    if (ec) co_return ec;
    co_return std::move(*out);
  }

  asio::awaitable<Result<Artifact>> get_artifact(std::string id) override {
    if (!valid_key(id)) co_return err(Errc::not_found);
    auto out = std::make_shared<Artifact>();
    sql::Body body = [out, id](Conn& c) {
      auto rows =
          c.query("SELECT " AGENTD_ARTIFACT_COLS " FROM artifacts WHERE id = $1", Params{id});
      if (rows.empty()) return err(Errc::not_found);
      *out = artifact_from(rows.front());
      return error_code();
    };
    auto ec = co_await exec_->run("get_artifact", Access::read, true, std::move(body));
    if (ec) co_return ec;
    co_return std::move(*out);
  }

  asio::awaitable<Result<bool>> link_intent_artifact(std::string intent_id, std::string artifact_id,
                                                     std::string relation) override {
    if (!valid_key(intent_id) || !valid_key(artifact_id))
      co_return bool_error(err(Errc::not_found));
    if (!valid_key(relation, 64)) co_return bool_error(err(Errc::bad_request));
    auto out = std::make_shared<bool>(false);
    auto now = now_ms();
    sql::Body body = [out, intent_id, artifact_id, relation, now](Conn& c) {
      *out = !c.query(
                   "INSERT INTO intent_artifacts (intent_id, "
                   "artifact_id, relation, created_at) VALUES ($1, "
                   "$2, $3, $4) ON CONFLICT DO NOTHING RETURNING "
                   "intent_id",
                   Params{intent_id, artifact_id, relation, now})
                  .empty();
      return error_code();
    };
    auto ec = co_await exec_->run("link_intent_artifact", Access::write, true, std::move(body));
    if (ec) co_return bool_error(ec);
    co_return *out;
  }

  asio::awaitable<Result<std::vector<IntentArtifact>>> list_intent_artifacts(
      std::string intent_id) override {
    if (!valid_key(intent_id)) co_return err(Errc::not_found);
    auto out = std::make_shared<std::vector<IntentArtifact>>();
    sql::Body body = [out, intent_id](Conn& c) {
      out->clear();
      for (const auto& r :
           c.query("SELECT " AGENTD_ARTIFACT_COLS ", 'output' AS relation FROM artifacts "
                   "WHERE intent_id = $1 UNION ALL "
                   "SELECT a.id, a.intent_id, a.kind, a.mime, a.sha256, a.size, a.name, "
                   "a.created_at, l.relation FROM intent_artifacts l JOIN artifacts a "
                   "ON a.id = l.artifact_id WHERE l.intent_id = $1 ORDER BY 8, 1, 9",
                   Params{intent_id})) {
        out->push_back(IntentArtifact{artifact_from(r), r.text(8)});
      }
      if (out->empty() && !intent_exists(c, intent_id)) return err(Errc::not_found);
      return error_code();
    };
    auto ec = co_await exec_->run("list_intent_artifacts", Access::read, true, std::move(body));
    if (ec) co_return ec;
    co_return std::move(*out);
  }

  asio::awaitable<Result<bool>> link_artifacts(std::string from_id, std::string to_id,
                                               std::string relation) override {
    if (!valid_key(from_id) || !valid_key(to_id)) co_return bool_error(err(Errc::not_found));
    if (!valid_key(relation, 64) || from_id == to_id) co_return bool_error(err(Errc::bad_request));
    auto out = std::make_shared<bool>(false);
    auto now = now_ms();
    sql::Body body = [out, from_id, to_id, relation, now](Conn& c) {
      *out = !c.query(
                   "INSERT INTO artifact_links (from_id, to_id, "
                   "relation, created_at) VALUES ($1, $2, $3, $4) "
                   "ON CONFLICT DO NOTHING RETURNING from_id",
                   Params{from_id, to_id, relation, now})
                  .empty();
      return error_code();
    };
    auto ec = co_await exec_->run("link_artifacts", Access::write, true, std::move(body));
    if (ec) co_return bool_error(ec);
    co_return *out;
  }

  asio::awaitable<Result<std::vector<ArtifactLink>>> list_artifact_links(
      std::string artifact_id) override {
    if (!valid_key(artifact_id)) co_return err(Errc::not_found);
    auto out = std::make_shared<std::vector<ArtifactLink>>();
    sql::Body body = [out, artifact_id](Conn& c) {
      out->clear();
      for (const auto& r :
           c.query("SELECT from_id, to_id, relation, created_at FROM artifact_links "
                   "WHERE from_id = $1 OR to_id = $1 ORDER BY created_at, from_id, to_id, relation",
                   Params{artifact_id})) {
        out->push_back(ArtifactLink{r.text(0), r.text(1), r.text(2), r.integer(3)});
      }
      if (out->empty() &&
          c.query("SELECT id FROM artifacts WHERE id = $1", Params{artifact_id}).empty()) {
        return err(Errc::not_found);
      }
      return error_code();
    };
    auto ec = co_await exec_->run("list_artifact_links", Access::read, true, std::move(body));
    if (ec) co_return ec;
    co_return std::move(*out);
  }

  // --- spend ---

  asio::awaitable<Result<SpendEntry>> record_spend(SpendEntry e) override {
    if (e.at == 0) e.at = now_ms();
    if (e.id.empty()) e.id = new_id(e.at);
    if (!valid_key(e.id) || !valid_key(e.client) || !valid_key(e.provider) || !valid_key(e.model) ||
        !valid_optional_key(e.intent_id) || e.tokens_in < 0 || e.tokens_out < 0 ||
        e.cost_micro_usd < 0 || e.at < 0) {
      co_return err(Errc::bad_request);
    }
    e.day = utc_day(e.at);
    auto out = std::make_shared<SpendEntry>(std::move(e));
    sql::Body body = [out](Conn& c) {
      const SpendEntry& x = *out;
      auto rows = c.query("INSERT INTO spend_ledger (" AGENTD_SPEND_COLS
                          ") VALUES ($1, $2, $3, "
                          "$4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING RETURNING id",
                          Params{x.id, x.client, x.provider, x.model, x.day, x.tokens_in,
                                 x.tokens_out, x.cost_micro_usd, opt_text(x.intent_id), x.at});
      if (!rows.empty()) return error_code();
      auto existing =
          c.query("SELECT " AGENTD_SPEND_COLS " FROM spend_ledger WHERE id = $1", Params{x.id});
      if (existing.empty()) return err(Errc::conflict);
      SpendEntry s = spend_from(existing.front());
      if (s.client != x.client || s.provider != x.provider || s.model != x.model ||
          s.tokens_in != x.tokens_in || s.tokens_out != x.tokens_out ||
          s.cost_micro_usd != x.cost_micro_usd) {
        return err(Errc::conflict);
      }
      *out = std::move(s);
      return error_code();
    };
    auto ec = co_await exec_->run("record_spend", Access::write, true, std::move(body));
    if (ec) co_return ec;
    co_return std::move(*out);
  }

  asio::awaitable<Result<SpendTotals>> spend_for_client_day(std::string client,
                                                            std::string day) override {
    if (!valid_key(client) || !valid_day(day)) co_return err(Errc::bad_request);
    co_return co_await spend_between("spend_for_client_day", std::move(client), day, day);
  }

  asio::awaitable<Result<SpendTotals>> spend_for_client_month(std::string client,
                                                              std::string month) override {
    if (!valid_key(client) || !valid_month(month)) co_return err(Errc::bad_request);
    co_return co_await spend_between("spend_for_client_month", std::move(client), month + "-01",
                                     month + "-31");
  }

  asio::awaitable<Result<std::vector<ModelSpend>>> spend_by_model(std::string from_day,
                                                                  std::string to_day,
                                                                  std::string client) override {
    if (!valid_day(from_day) || !valid_day(to_day) || from_day > to_day ||
        (!client.empty() && !valid_key(client))) {
      co_return err(Errc::bad_request);
    }
    auto out = std::make_shared<std::vector<ModelSpend>>();
    sql::Body body = [out, from_day, to_day, client](Conn& c) {
      out->clear();
      for (const auto& r :
           c.query("SELECT provider, model, COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), "
                   "0), COALESCE(SUM(cost_micro_usd), 0), COUNT(*) FROM spend_ledger "
                   "WHERE day >= $1 AND day <= $2 AND ($3::text = '' OR client = $3::text) "
                   "GROUP BY provider, model ORDER BY 5 DESC, 1, 2",
                   Params{from_day, to_day, client})) {
        out->push_back(ModelSpend{r.text(0), r.text(1), totals_from(r, 2)});
      }
      return error_code();
    };
    auto ec = co_await exec_->run("spend_by_model", Access::read, true, std::move(body));
    if (ec) co_return ec;
    co_return std::move(*out);
  }

  // --- audit ---

  asio::awaitable<Result<AuditEntry>> append_audit(AuditEntry a) override {
    if (a.at == 0) a.at = now_ms();
    if (a.id.empty()) a.id = new_id(a.at);
    if (!valid_key(a.id) || !valid_text(a.client, 256) || !valid_key(a.server) ||
        !valid_key(a.tool) || !valid_sha256(a.args_sha256) || !valid_key(a.outcome, 64) ||
        a.duration_us < 0 || !valid_text(a.request_id, 256) || !valid_optional_key(a.intent_id) ||
        a.at < 0) {
      co_return err(Errc::bad_request);
    }
    auto out = std::make_shared<AuditEntry>(std::move(a));
    sql::Body body = [out](Conn& c) {
      const AuditEntry& x = *out;
      auto rows = c.query("INSERT INTO audit_log (" AGENTD_AUDIT_COLS
                          ") VALUES ($1, $2, $3, $4, "
                          "$5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING RETURNING id",
                          Params{x.id, x.at, x.client, x.server, x.tool, x.args_sha256, x.outcome,
                                 x.duration_us, x.request_id, opt_text(x.intent_id)});
      if (!rows.empty()) return error_code();
      auto existing =
          c.query("SELECT " AGENTD_AUDIT_COLS " FROM audit_log WHERE id = $1", Params{x.id});
      if (existing.empty()) return err(Errc::conflict);
      AuditEntry e = audit_from(existing.front());
      if (e.client != x.client || e.server != x.server || e.tool != x.tool ||
          e.args_sha256 != x.args_sha256 || e.outcome != x.outcome || e.at != x.at) {
        return err(Errc::conflict);
      }
      *out = std::move(e);
      return error_code();
    };
    auto ec = co_await exec_->run("append_audit", Access::write, true, std::move(body));
    if (ec) co_return ec;
    co_return std::move(*out);
  }

  asio::awaitable<Result<std::size_t>> append_audits(std::vector<AuditEntry> entries) override {
    for (auto& a : entries) {
      if (a.at == 0) a.at = now_ms();
      if (a.id.empty()) a.id = new_id(a.at);
      if (!valid_key(a.id) || !valid_text(a.client, 256) || !valid_key(a.server) ||
          !valid_key(a.tool) || !valid_sha256(a.args_sha256) || !valid_key(a.outcome, 64) ||
          a.duration_us < 0 || !valid_text(a.request_id, 256) ||
          !valid_optional_key(a.intent_id) || a.at < 0) {
        co_return err(Errc::bad_request);
      }
    }
    if (entries.empty()) co_return std::size_t{0};
    auto batch = std::make_shared<std::vector<AuditEntry>>(std::move(entries));
    auto stored = std::make_shared<std::size_t>(0);
    sql::Body body = [batch, stored](Conn& c) {
      *stored = 0;  // a retried transaction starts over
      for (const auto& x : *batch) {
        auto rows = c.query("INSERT INTO audit_log (" AGENTD_AUDIT_COLS
                            ") VALUES ($1, $2, $3, $4, "
                            "$5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING RETURNING id",
                            Params{x.id, x.at, x.client, x.server, x.tool, x.args_sha256,
                                   x.outcome, x.duration_us, x.request_id, opt_text(x.intent_id)});
        *stored += rows.size();
      }
      return error_code();
    };
    auto ec = co_await exec_->run("append_audits", Access::write, true, std::move(body));
    if (ec) co_return ec;
    co_return *stored;
  }

  asio::awaitable<Result<std::size_t>> record_spends(std::vector<SpendEntry> entries) override {
    for (auto& e : entries) {
      if (e.at == 0) e.at = now_ms();
      if (e.id.empty()) e.id = new_id(e.at);
      if (!valid_key(e.id) || !valid_key(e.client) || !valid_key(e.provider) ||
          !valid_key(e.model) || !valid_optional_key(e.intent_id) || e.tokens_in < 0 ||
          e.tokens_out < 0 || e.cost_micro_usd < 0 || e.at < 0) {
        co_return err(Errc::bad_request);
      }
      e.day = utc_day(e.at);
    }
    if (entries.empty()) co_return std::size_t{0};
    auto batch = std::make_shared<std::vector<SpendEntry>>(std::move(entries));
    auto stored = std::make_shared<std::size_t>(0);
    sql::Body body = [batch, stored](Conn& c) {
      *stored = 0;
      for (const auto& x : *batch) {
        auto rows = c.query("INSERT INTO spend_ledger (" AGENTD_SPEND_COLS
                            ") VALUES ($1, $2, $3, "
                            "$4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING RETURNING id",
                            Params{x.id, x.client, x.provider, x.model, x.day, x.tokens_in,
                                   x.tokens_out, x.cost_micro_usd, opt_text(x.intent_id), x.at});
        *stored += rows.size();
      }
      return error_code();
    };
    auto ec = co_await exec_->run("record_spends", Access::write, true, std::move(body));
    if (ec) co_return ec;
    co_return *stored;
  }

  asio::awaitable<Result<std::vector<AuditEntry>>> query_audit(AuditQuery q) override {
    if (q.limit < 1 || q.limit > 10'000 || (!q.client.empty() && !valid_text(q.client, 256)) ||
        q.from < 0 || q.to < 0) {
      co_return err(Errc::bad_request);
    }
    std::int64_t to = q.to == 0 ? kNoLimit : q.to;
    auto out = std::make_shared<std::vector<AuditEntry>>();
    sql::Body body = [out, q, to](Conn& c) {
      out->clear();
      for (const auto& r :
           c.query("SELECT " AGENTD_AUDIT_COLS " FROM audit_log WHERE ($1::text = '' OR client = "
                   "$1::text) AND at >= $2 AND at < $3 ORDER BY at DESC, id DESC LIMIT $4",
                   Params{q.client, q.from, to, static_cast<std::int64_t>(q.limit)})) {
        out->push_back(audit_from(r));
      }
      return error_code();
    };
    auto ec = co_await exec_->run("query_audit", Access::read, true, std::move(body));
    if (ec) co_return ec;
    co_return std::move(*out);
  }

  RecordsHealth health() const override {
    auto h = exec_->health();
    h.detail = backend_ + ": " + h.detail;
    return h;
  }
  std::string_view backend() const noexcept override { return exec_->backend(); }

 private:
  asio::awaitable<Result<SpendTotals>> spend_between(const char* op, std::string client,
                                                     std::string from, std::string to) {
    auto out = std::make_shared<SpendTotals>();
    sql::Body body = [out, client, from, to](Conn& c) {
      auto rows = c.query(
          "SELECT COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0), "
          "COALESCE(SUM(cost_micro_usd), 0), COUNT(*) FROM spend_ledger "
          "WHERE client = $1 AND day >= $2 AND day <= $3",
          Params{client, from, to});
      *out = rows.empty() ? SpendTotals{} : totals_from(rows.front(), 0);
      return error_code();
    };
    auto ec = co_await exec_->run(op, Access::read, true, std::move(body));
    if (ec) co_return ec;
    co_return *out;
  }

  std::unique_ptr<sql::Executor> exec_;
  std::string backend_;  // with the database, for health()
};

std::string describe(const RecordsConfig& config) {
  return config.postgres.empty() ? "sqlite " + sql::sqlite_path(config)
                                 : "postgres " + sql::redact_conninfo(config.postgres);
}

}  // namespace

std::unique_ptr<Records> make_records(const RecordsConfig& config, core::BlockingPool& pool,
                                      core::Registry& metrics) {
  if (config.pool_size < 1) throw std::runtime_error("store: pool_size must be at least 1");
  auto st = migrate(config);
  spdlog::info("store: durable records on {} (schema version {})", describe(config),
               st.migrations.empty() ? 0 : st.migrations.back().version);
  std::unique_ptr<sql::Executor> exec;
  if (config.postgres.empty()) {
    // One writer connection (SQLite has one writer anyway; one connection serialises our
    // writes without lock waits), pool_size readers that WAL lets run alongside it.
    exec = std::make_unique<sql::Executor>("sqlite", sql::sqlite_connector(config),
                                           config.pool_size, 1, config.pool_timeout, pool, metrics);
  } else {
    exec = std::make_unique<sql::Executor>("postgres", sql::postgres_connector(config),
                                           config.pool_size, 0, config.pool_timeout, pool, metrics);
  }
  return std::make_unique<SqlRecords>(std::move(exec), describe(config));
}

MigrationStatus migration_status(const RecordsConfig& config) {
  MigrationStatus st;
  try {
    if (config.postgres.empty()) {
      st.backend = "sqlite";
      st.database = sql::sqlite_path(config);
      auto conn = sql::sqlite_open_existing_readonly(config);
      st.migrations = sql::read_migrations(conn.get(), sql::Dialect::sqlite);
    } else {
      st.backend = "postgres";
      st.database = sql::redact_conninfo(config.postgres);
      auto conn = sql::postgres_connector(config)(Access::read);
      st.migrations = sql::read_migrations(conn.get(), sql::Dialect::postgres);
    }
  } catch (const sql::DbError& e) {
    throw std::runtime_error("store: cannot open " + describe(config) + ": " + e.what());
  }
  return st;
}

MigrationStatus migrate(const RecordsConfig& config) {
  auto dialect = config.postgres.empty() ? sql::Dialect::sqlite : sql::Dialect::postgres;
  if (config.postgres.empty()) {
    std::error_code fs_ec;
    std::filesystem::create_directories(config.data_dir, fs_ec);
    if (fs_ec) {
      throw std::runtime_error("store: cannot create " + config.data_dir + ": " + fs_ec.message());
    }
  }
  try {
    auto connect =
        config.postgres.empty() ? sql::sqlite_connector(config) : sql::postgres_connector(config);
    auto conn = connect(Access::migrate);
    sql::apply_migrations(*conn, dialect, config.migration_lock_timeout);
    MigrationStatus st;
    st.backend = config.postgres.empty() ? "sqlite" : "postgres";
    st.database =
        config.postgres.empty() ? sql::sqlite_path(config) : sql::redact_conninfo(config.postgres);
    st.migrations = sql::read_migrations(conn.get(), dialect);
    return st;
  } catch (const sql::DbError& e) {
    throw std::runtime_error("store: cannot open " + describe(config) + ": " + e.what());
  }
}

}  // namespace agentd::store
