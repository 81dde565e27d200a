// The durable-records conformance suite, run against SQLite and PostgreSQL 15, plus the fault
// tests: migrations racing, PostgreSQL restarted mid-run, a slow database, a SIGKILL right
// after an acknowledged write, the connection pool's bound, serialization failures.
//
// PostgreSQL: the conformance tests use AGENTD_TEST_DATABASE_URL when scripts/test set it,
// otherwise (and always for the tests that stop the server) a private PostgreSQL 15 that this
// process starts on a free loopback port in a temp dir. Each test gets its own database.
#include "agentd/store/records.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_future.hpp>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <pqxx/pqxx>
#include <set>
#include <sstream>
#include <thread>

#include "support/pg_server.hpp"
#include "support/process.hpp"

// libpqxx 6.4 leaks the error result when a statement meets a connection the server has
// closed (connection_base::make_result asks the dead connection for its encoding before it
// owns the result). The fault tests provoke exactly that; our code never calls libpq itself,
// so this pattern hides nothing of ours.
extern "C" const char* __lsan_default_suppressions() { return "leak:PQmakeEmptyPGresult\n"; }

namespace agentd::store {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Test infrastructure: temp dirs, a private PostgreSQL, the event loop on its own thread.

std::string temp_dir(const std::string& prefix) {
  std::string tmpl = (fs::temp_directory_path() / (prefix + "XXXXXX")).string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  fs::permissions(tmpl, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                            fs::perms::others_read | fs::perms::others_exec);
  return tmpl;
}


std::string slurp(const std::string& file) {
  std::ifstream f(file);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

using test::PgServer;  // tests/support/pg_server.hpp

PgServer& private_pg() {
  static PgServer server;
  return server;
}

// The server for the conformance tests: scripts/test's when it is there.
std::string admin_url() {
  if (const char* u = std::getenv("AGENTD_TEST_DATABASE_URL"); u && *u) return u;
  return private_pg().url("postgres");
}

std::string with_database(const std::string& admin, const std::string& db) {
  auto scheme = admin.find("://");
  auto slash = admin.find('/', scheme + 3);
  auto query = admin.find('?', scheme + 3);
  std::string base = admin.substr(0, std::min(slash, query));
  std::string rest = query == std::string::npos ? "" : admin.substr(query);
  return base + "/" + db + rest;
}

void admin_exec(const std::string& url, const std::string& sql) {
  pqxx::connection c(url);
  pqxx::nontransaction n(c);
  n.exec(sql);
}

std::int64_t pg_count(pqxx::connection& c, const std::string& sql, const std::string& arg) {
  pqxx::nontransaction n(c);
  return n.exec_params(sql, arg)[0][0].as<std::int64_t>();
}

// The io_context runs on its own thread; the test thread calls into it and waits.
class Loop {
 public:
  Loop() : guard_(io.get_executor()), thread_([this] { io.run(); }) {}
  ~Loop() {
    guard_.reset();
    io.stop();
    thread_.join();
  }
  template <class T>
  T call(asio::awaitable<T> op, std::chrono::seconds limit = 60s) {
    auto f = asio::co_spawn(io, std::move(op), asio::use_future);
    if (f.wait_for(limit) != std::future_status::ready) {
      throw std::runtime_error("a store call did not finish in time");
    }
    return f.get();
  }
  template <class T>
  std::future<T> start(asio::awaitable<T> op) {
    return asio::co_spawn(io, std::move(op), asio::use_future);
  }
  asio::io_context io;

 private:
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::thread thread_;
};

boost::system::error_code code(Errc e) { return make_error_code(e); }

std::string sha(char c) { return std::string(64, c); }

// ---------------------------------------------------------------------------------------------
// The fixture: one fresh database per test, on either backend.

enum class Backend { sqlite, postgres };

struct Instance {
  core::Registry metrics;  // outlives everything that holds metric references
  Loop loop;
  core::BlockingPool pool{4, 256};
  std::unique_ptr<Records> records;
  ~Instance() {
    records.reset();
    pool.stop();
  }
};

class RecordsTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    dir_ = temp_dir("agentd-records-");
    config_.data_dir = dir_ + "/data";
    config_.application_name = "agentd_test_" + new_id().substr(0, 12);
    config_.busy_timeout = 10s;
    if (GetParam() == Backend::postgres) {
      use_postgres(needs_private_server() ? private_pg().url("postgres") : admin_url());
    }
  }
  void TearDown() override {
    instances_.clear();
    for (const auto& db : databases_) {
      try {
        admin_exec(admin_, "DROP DATABASE IF EXISTS " + db + " WITH (FORCE)");
      } catch (const std::exception&) {
      }
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  // Tests that stop the server must not use scripts/test's shared one.
  virtual bool needs_private_server() const { return false; }

  void use_postgres(const std::string& admin) {
    admin_ = admin;
    db_ = "t_" + new_id().substr(0, 16);
    admin_exec(admin_, "CREATE DATABASE " + db_);
    databases_.push_back(db_);
    config_.postgres = with_database(admin_, db_);
  }

  Instance& open() { return open(config_); }
  Instance& open(const RecordsConfig& c) {
    auto inst = std::make_unique<Instance>();
    inst->records = make_records(c, inst->pool, inst->metrics);
    instances_.push_back(std::move(inst));
    return *instances_.back();
  }
  Records& records() {
    if (instances_.empty()) open();
    return *instances_.front()->records;
  }
  template <class T>
  T call(asio::awaitable<T> op) {
    if (instances_.empty()) open();
    return instances_.front()->loop.call(std::move(op));
  }
  Loop& loop() {
    if (instances_.empty()) open();
    return instances_.front()->loop;
  }

  Intent intent(const std::string& client = "lobechat") {
    Intent i;
    i.client = client;
    i.agent = "coder";
    i.input = {{"intent", "fix the failing test"}, {"n", 1}};
    auto r = call(records().create_intent(i));
    EXPECT_TRUE(r) << r.error().message();
    return r ? *r : Intent{};
  }

  bool postgres() const { return GetParam() == Backend::postgres; }

  std::string dir_;
  std::string admin_;
  std::string db_;
  std::vector<std::string> databases_;
  RecordsConfig config_;
  std::vector<std::unique_ptr<Instance>> instances_;
};

// Holds the lock that blocks inserts into `intents` from another connection, as a slow or
// stuck transaction would: SQLite BEGIN EXCLUSIVE; PostgreSQL LOCK TABLE, optionally followed
// by a slow query (pg_sleep) inside the same transaction.
class LockHolder {
 public:
  LockHolder(const RecordsConfig& c, std::chrono::milliseconds pg_sleep = 0ms) {
    thread_ = std::thread([this, c, pg_sleep] {
      try {
        if (c.postgres.empty()) {
          hold_sqlite(c);
        } else {
          hold_postgres(c, pg_sleep);
        }
      } catch (const std::exception& e) {
        std::lock_guard lock(m_);
        error_ = e.what();
        locked_ = true;
        cv_.notify_all();
      }
    });
    std::unique_lock lock(m_);
    cv_.wait(lock, [this] { return locked_; });
    if (!error_.empty()) throw std::runtime_error("lock holder: " + error_);
  }
  ~LockHolder() {
    release();
    thread_.join();
  }
  void release() {
    std::lock_guard lock(m_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  void signal_locked() {
    std::lock_guard lock(m_);
    locked_ = true;
    cv_.notify_all();
  }
  void wait_release() {
    std::unique_lock lock(m_);
    cv_.wait_for(lock, 60s, [this] { return released_; });
  }
  void hold_sqlite(const RecordsConfig& c) {
    sqlite3* db = nullptr;
    sqlite3_open((c.data_dir + "/agentd.db").c_str(), &db);
    if (sqlite3_exec(db, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) != SQLITE_OK) {
      std::string e = sqlite3_errmsg(db);
      sqlite3_close(db);
      throw std::runtime_error(e);
    }
    signal_locked();
    wait_release();
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    sqlite3_close(db);
  }
  void hold_postgres(const RecordsConfig& c, std::chrono::milliseconds pg_sleep) {
    pqxx::connection conn(c.postgres);
    pqxx::work w(conn);
    w.exec("LOCK TABLE intents IN ACCESS EXCLUSIVE MODE");
    signal_locked();
    if (pg_sleep.count() > 0) {
      w.exec("SELECT pg_sleep(" + std::to_string(pg_sleep.count() / 1000.0) + ")");
    } else {
      wait_release();
    }
    w.commit();
  }

  std::mutex m_;
  std::condition_variable cv_;
  bool locked_ = false;
  bool released_ = false;
  std::string error_;
  std::thread thread_;
};

// ---------------------------------------------------------------------------------------------
// Intents.

TEST_P(RecordsTest, IntentsAreCreatedReadUpdatedAndFinal) {
  Intent in;
  in.client = "lobechat";
  in.agent = "coder";
  in.session_id = "s-1";
  in.input = {{"intent", "open project X"}, {"attachments", Json::array({"a", "b"})}};
  auto created = call(records().create_intent(in));
  ASSERT_TRUE(created) << created.error().message();
  EXPECT_EQ(created->id.size(), 32u);
  EXPECT_EQ(created->status, IntentStatus::accepted);
  EXPECT_GT(created->created_at, 0);
  EXPECT_EQ(created->created_at, created->updated_at);

  auto got = call(records().get_intent(created->id));
  ASSERT_TRUE(got);
  EXPECT_EQ(got->client, "lobechat");
  EXPECT_EQ(got->agent, "coder");
  EXPECT_EQ(got->session_id, "s-1");
  EXPECT_EQ(got->input, in.input);
  EXPECT_TRUE(got->result.is_null());
  EXPECT_EQ(got->status, IntentStatus::accepted);

  IntentUpdate running;
  running.status = IntentStatus::running;
  auto r1 = call(records().update_intent(created->id, running));
  ASSERT_TRUE(r1) << r1.error().message();
  EXPECT_EQ(r1->status, IntentStatus::running);
  EXPECT_GE(r1->updated_at, created->updated_at);

  IntentUpdate done;
  done.status = IntentStatus::completed;
  done.result = Json{{"answer", "fixed"}, {"tokens", 1234567890123LL}};
  auto r2 = call(records().update_intent(created->id, done));
  ASSERT_TRUE(r2) << r2.error().message();
  EXPECT_EQ(r2->status, IntentStatus::completed);
  EXPECT_EQ(r2->result, *done.result);

  // The same update again (a retry after an unknown outcome) is accepted; anything else on a
  // final intent is a conflict.
  auto again = call(records().update_intent(created->id, done));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->result, *done.result);
  IntentUpdate fail;
  fail.status = IntentStatus::failed;
  fail.error = "too late";
  EXPECT_EQ(call(records().update_intent(created->id, fail)).error(), code(Errc::conflict));
  auto final_state = call(records().get_intent(created->id));
  ASSERT_TRUE(final_state);
  EXPECT_EQ(final_state->status, IntentStatus::completed);
  EXPECT_EQ(final_state->result, *done.result);
  EXPECT_TRUE(final_state->error.empty());

  IntentUpdate failed;
  failed.status = IntentStatus::failed;
  failed.error = "agentd restarted";
  auto other = intent();
  auto f = call(records().update_intent(other.id, failed));
  ASSERT_TRUE(f);
  EXPECT_EQ(f->error, "agentd restarted");
  EXPECT_TRUE(f->result.is_null());
}

TEST_P(RecordsTest, CreateIsIdempotentByIdAndRefusesADifferentIntentUnderTheSameId) {
  Intent in;
  in.id = "intent-42";
  in.client = "lobechat";
  in.agent = "coder";
  in.input = {{"x", 1}};
  auto first = call(records().create_intent(in));
  ASSERT_TRUE(first);
  EXPECT_EQ(first->id, "intent-42");
  auto repeat = call(records().create_intent(in));
  ASSERT_TRUE(repeat);
  EXPECT_EQ(repeat->created_at, first->created_at);  // the stored one, not a second row
  in.input = {{"x", 2}};
  EXPECT_EQ(call(records().create_intent(in)).error(), code(Errc::conflict));
}

TEST_P(RecordsTest, UnfinishedIntentsAreListedOldestFirstForRecovery) {
  auto a = intent();
  auto b = intent();
  auto c = intent();
  IntentUpdate done;
  done.status = IntentStatus::cancelled;
  ASSERT_TRUE(call(records().update_intent(b.id, done)));
  IntentUpdate waiting;
  waiting.status = IntentStatus::waiting_input;
  ASSERT_TRUE(call(records().update_intent(c.id, waiting)));

  auto list = call(records().list_unfinished_intents(100));
  ASSERT_TRUE(list);
  std::vector<std::string> ids;
  for (const auto& i : *list) ids.push_back(i.id);
  std::vector<std::string> expected{a.id, c.id};
  if (c.created_at < a.created_at || (c.created_at == a.created_at && c.id < a.id)) {
    std::swap(expected[0], expected[1]);
  }
  EXPECT_EQ(ids, expected);
  auto one = call(records().list_unfinished_intents(1));
  ASSERT_TRUE(one);
  EXPECT_EQ(one->size(), 1u);
}

TEST_P(RecordsTest, LeasesGoToOneOwnerUntilTheyExpire) {
  auto i = intent();
  auto now = now_ms();
  EXPECT_EQ(*call(records().claim_intent(i.id, "instance-a", now + 60'000)), true);
  EXPECT_EQ(*call(records().claim_intent(i.id, "instance-b", now + 60'000)), false);
  EXPECT_EQ(*call(records().claim_intent(i.id, "instance-a", now + 120'000)), true);  // renew
  auto held = call(records().get_intent(i.id));
  ASSERT_TRUE(held);
  EXPECT_EQ(held->owner, "instance-a");
  EXPECT_EQ(held->lease_until, now + 120'000);

  // instance-a dies: its lease runs out and another instance takes over.
  ASSERT_TRUE(call(records().claim_intent(i.id, "instance-a", now - 1)));
  EXPECT_EQ(*call(records().claim_intent(i.id, "instance-b", now + 60'000)), true);

  IntentUpdate done;
  done.status = IntentStatus::completed;
  ASSERT_TRUE(call(records().update_intent(i.id, done)));
  EXPECT_EQ(*call(records().claim_intent(i.id, "instance-b", now + 60'000)), false);
  EXPECT_EQ(call(records().claim_intent("no-such-intent", "x", now)).error(),
            code(Errc::not_found));
}

// ---------------------------------------------------------------------------------------------
// Steps.

TEST_P(RecordsTest, StepsAreAppendedInOrderAndListed) {
  auto i = intent();
  for (int n = 1; n <= 3; ++n) {
    Step s;
    s.intent_id = i.id;
    s.seq = n;
    s.kind = n == 1 ? "plan" : "tool_call";
    s.data = {{"n", n}};
    auto r = call(records().append_step(s));
    ASSERT_TRUE(r) << "step " << n << ": " << r.error().message();
    EXPECT_EQ(r->seq, n);
    EXPECT_GT(r->created_at, 0);
  }
  // A repeat of step 2 with the same contents is the retry of a write that went through.
  Step two;
  two.intent_id = i.id;
  two.seq = 2;
  two.kind = "tool_call";
  two.data = {{"n", 2}};
  EXPECT_TRUE(call(records().append_step(two)));
  two.data = {{"n", 22}};
  EXPECT_EQ(call(records().append_step(two)).error(), code(Errc::conflict));
  Step gap;
  gap.intent_id = i.id;
  gap.seq = 5;
  gap.kind = "message";
  EXPECT_EQ(call(records().append_step(gap)).error(), code(Errc::conflict));
  gap.seq = 0;
  EXPECT_EQ(call(records().append_step(gap)).error(), code(Errc::bad_request));

  auto all = call(records().list_steps(i.id, 0));
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ(all->at(0).kind, "plan");
  EXPECT_EQ(all->at(2).data, (Json{{"n", 3}}));
  auto later = call(records().list_steps(i.id, 1));
  ASSERT_TRUE(later);
  ASSERT_EQ(later->size(), 2u);
  EXPECT_EQ(later->front().seq, 2);

  auto fresh = intent();
  auto none = call(records().list_steps(fresh.id, 0));
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
}

TEST_P(RecordsTest, StepsOfAnUnknownIntentAreNotFound) {
  Step s;
  s.intent_id = "no-such-intent";
  s.seq = 1;
  s.kind = "plan";
  EXPECT_EQ(call(records().append_step(s)).error(), code(Errc::not_found));
  s.seq = 2;
  EXPECT_EQ(call(records().append_step(s)).error(), code(Errc::not_found));
  EXPECT_EQ(call(records().list_steps("no-such-intent", 0)).error(), code(Errc::not_found));
}

// ---------------------------------------------------------------------------------------------
// Sessions.

std::vector<Message> messages(std::initializer_list<std::pair<const char*, int>> specs) {
  std::vector<Message> out;
  for (const auto& [text, tokens] : specs) {
    Message m;
    m.role = out.size() % 2 ? "assistant" : "user";
    m.content = {{"role", m.role}, {"content", text}};
    m.tokens = tokens;
    out.push_back(std::move(m));
  }
  return out;
}

TEST_P(RecordsTest, SessionsKeepTheHistoryInOrderPerClient) {
  auto first = call(records().append_messages("chat-1", "lobechat",
                                              messages({{"hi", 5}, {"hello", 7}, {"more", 11}})));
  ASSERT_TRUE(first) << first.error().message();
  ASSERT_EQ(first->size(), 3u);
  EXPECT_EQ(first->at(0).seq, 1);
  EXPECT_EQ(first->at(2).seq, 3);
  auto second =
      call(records().append_messages("chat-1", "lobechat", messages({{"a", 1}, {"b", 2}})));
  ASSERT_TRUE(second);
  EXPECT_EQ(second->at(0).seq, 4);
  EXPECT_EQ(second->at(1).seq, 5);

  auto s = call(records().get_session("chat-1"));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->client, "lobechat");
  EXPECT_EQ(s->messages, 5);
  EXPECT_EQ(s->tokens, 26);

  auto all = call(records().list_messages("chat-1", 0));
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 5u);
  EXPECT_EQ(all->at(0).content["content"].get<std::string>(), "hi");
  EXPECT_EQ(all->at(4).content["content"].get<std::string>(), "b");
  auto newest = call(records().list_messages("chat-1", 2));
  ASSERT_TRUE(newest);
  ASSERT_EQ(newest->size(), 2u);
  EXPECT_EQ(newest->at(0).seq, 4);
  EXPECT_EQ(newest->at(1).seq, 5);

  // Another client may not write into (or take over) this session.
  EXPECT_EQ(call(records().append_messages("chat-1", "intruder", messages({{"x", 1}}))).error(),
            code(Errc::forbidden));
  auto unchanged = call(records().get_session("chat-1"));
  ASSERT_TRUE(unchanged);
  EXPECT_EQ(unchanged->messages, 5);
}

TEST_P(RecordsTest, AppendingTheSameMessagesAgainDoesNotDuplicateThem) {
  auto batch = messages({{"one", 1}, {"two", 2}});
  batch[0].id = "m-1";
  batch[1].id = "m-2";
  auto a = call(records().append_messages("chat-r", "lobechat", batch));
  ASSERT_TRUE(a);
  auto b = call(records().append_messages("chat-r", "lobechat", batch));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->at(0).seq, a->at(0).seq);
  EXPECT_EQ(b->at(1).seq, a->at(1).seq);
  auto s = call(records().get_session("chat-r"));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->messages, 2);
  // The same message id in another session is a conflict, not a silent move.
  EXPECT_EQ(call(records().append_messages("chat-other", "lobechat", batch)).error(),
            code(Errc::conflict));
}

TEST_P(RecordsTest, SessionsAreTrimmedToTheNewestMessagesOrTokens) {
  ASSERT_TRUE(call(records().append_messages(
      "chat-t", "lobechat",
      messages({{"m1", 10}, {"m2", 10}, {"m3", 10}, {"m4", 10}, {"m5", 10}, {"m6", 10}}))));
  SessionTrim keep4;
  keep4.keep_messages = 4;
  auto removed = call(records().trim_session("chat-t", keep4));
  ASSERT_TRUE(removed);
  EXPECT_EQ(*removed, 2);
  auto left = call(records().list_messages("chat-t", 0));
  ASSERT_TRUE(left);
  ASSERT_EQ(left->size(), 4u);
  EXPECT_EQ(left->front().seq, 3);
  EXPECT_EQ(*call(records().trim_session("chat-t", keep4)), 0);  // already within bounds

  SessionTrim tokens;
  tokens.max_tokens = 25;  // two messages of 10 fit, a third would not
  EXPECT_EQ(*call(records().trim_session("chat-t", tokens)), 2);
  left = call(records().list_messages("chat-t", 0));
  ASSERT_TRUE(left);
  ASSERT_EQ(left->size(), 2u);
  EXPECT_EQ(left->front().seq, 5);

  // The newest message stays even when it alone is over the budget.
  ASSERT_TRUE(call(records().append_messages("chat-t", "lobechat", messages({{"big", 100}}))));
  EXPECT_EQ(*call(records().trim_session("chat-t", tokens)), 2);
  left = call(records().list_messages("chat-t", 0));
  ASSERT_TRUE(left);
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ(left->front().seq, 7);
  // Numbering continues after trimming.
  auto next = call(records().append_messages("chat-t", "lobechat", messages({{"n", 1}})));
  ASSERT_TRUE(next);
  EXPECT_EQ(next->front().seq, 8);

  EXPECT_EQ(*call(records().delete_session("chat-t")), true);
  EXPECT_EQ(*call(records().delete_session("chat-t")), false);
  EXPECT_EQ(call(records().list_messages("chat-t", 0)).error(), code(Errc::not_found));
  EXPECT_EQ(call(records().get_session("chat-t")).error(), code(Errc::not_found));
  EXPECT_EQ(call(records().trim_session("chat-t", keep4)).error(), code(Errc::not_found));
}

// ---------------------------------------------------------------------------------------------
// Artifacts.

TEST_P(RecordsTest, ArtifactsAndTheirRelations) {
  auto i = intent();
  Artifact a;
  a.intent_id = i.id;
  a.kind = "code";
  a.mime = "text/x-c++";
  a.sha256 = sha('a');
  a.size = 1234;
  a.name = "main.cpp";
  auto made = call(records().create_artifact(a));
  ASSERT_TRUE(made) << made.error().message();
  auto got = call(records().get_artifact(made->id));
  ASSERT_TRUE(got);
  EXPECT_EQ(got->intent_id, i.id);
  EXPECT_EQ(got->sha256, sha('a'));
  EXPECT_EQ(got->size, 1234);
  EXPECT_EQ(got->name, "main.cpp");
  EXPECT_EQ(got->mime, "text/x-c++");

  Artifact diff = a;
  diff.kind = "markdown";
  diff.mime = "text/markdown";
  diff.sha256 = sha('b');
  diff.name = "fix.diff";
  auto d = call(records().create_artifact(diff));
  ASSERT_TRUE(d);
  EXPECT_EQ(*call(records().link_artifacts(d->id, made->id, "derived_from")), true);
  EXPECT_EQ(*call(records().link_artifacts(d->id, made->id, "derived_from")), false);
  EXPECT_EQ(call(records().link_artifacts(d->id, d->id, "derived_from")).error(),
            code(Errc::bad_request));
  EXPECT_EQ(call(records().link_artifacts(d->id, "no-such-artifact", "x")).error(),
            code(Errc::not_found));
  for (const auto& id : {made->id, d->id}) {
    auto links = call(records().list_artifact_links(id));
    ASSERT_TRUE(links);
    ASSERT_EQ(links->size(), 1u);
    EXPECT_EQ(links->front().from_id, d->id);
    EXPECT_EQ(links->front().to_id, made->id);
    EXPECT_EQ(links->front().relation, "derived_from");
  }

  // An attachment: produced by another intent, used as input by this one.
  auto other = intent();
  Artifact img;
  img.intent_id = other.id;
  img.kind = "image";
  img.mime = "image/png";
  img.sha256 = sha('c');
  img.size = 99;
  auto picture = call(records().create_artifact(img));
  ASSERT_TRUE(picture);
  EXPECT_EQ(*call(records().link_intent_artifact(i.id, picture->id, "input")), true);
  EXPECT_EQ(*call(records().link_intent_artifact(i.id, picture->id, "input")), false);
  EXPECT_EQ(call(records().link_intent_artifact(i.id, "nope", "input")).error(),
            code(Errc::not_found));

  auto mine = call(records().list_intent_artifacts(i.id));
  ASSERT_TRUE(mine);
  std::map<std::string, std::string> rel;
  for (const auto& x : *mine) rel[x.artifact.id] = x.relation;
  EXPECT_EQ(rel.size(), 3u);
  EXPECT_EQ(rel[made->id], "output");
  EXPECT_EQ(rel[d->id], "output");
  EXPECT_EQ(rel[picture->id], "input");
  auto theirs = call(records().list_intent_artifacts(other.id));
  ASSERT_TRUE(theirs);
  ASSERT_EQ(theirs->size(), 1u);
  EXPECT_EQ(theirs->front().relation, "output");

  // Retried create: same id and contents -> the stored row; other contents -> conflict.
  Artifact again = a;
  again.id = made->id;
  auto repeat = call(records().create_artifact(again));
  ASSERT_TRUE(repeat);
  EXPECT_EQ(repeat->created_at, made->created_at);
  again.size = 1;
  EXPECT_EQ(call(records().create_artifact(again)).error(), code(Errc::conflict));
}

TEST_P(RecordsTest, ArtifactInputsAreChecked) {
  Artifact a;
  a.kind = "code";
  a.mime = "text/plain";
  a.sha256 = "ABC";
  EXPECT_EQ(call(records().create_artifact(a)).error(), code(Errc::bad_request));
  a.sha256 = sha('A');  // upper case is not the canonical form
  EXPECT_EQ(call(records().create_artifact(a)).error(), code(Errc::bad_request));
  a.sha256 = sha('0');
  a.size = -1;
  EXPECT_EQ(call(records().create_artifact(a)).error(), code(Errc::bad_request));
  a.size = 0;
  a.intent_id = "no-such-intent";
  EXPECT_EQ(call(records().create_artifact(a)).error(), code(Errc::not_found));
  a.intent_id.clear();
  EXPECT_TRUE(call(records().create_artifact(a)));  // an artifact without an intent is fine
  EXPECT_EQ(call(records().get_artifact("no-such-artifact")).error(), code(Errc::not_found));
  EXPECT_EQ(call(records().list_artifact_links("no-such-artifact")).error(), code(Errc::not_found));
  EXPECT_EQ(call(records().list_intent_artifacts("no-such-intent")).error(), code(Errc::not_found));
}

// ---------------------------------------------------------------------------------------------
// Spend ledger.

TimeMs at_utc(int y, int mo, int d, int h) {
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  return static_cast<TimeMs>(::timegm(&tm)) * 1000;
}

TEST_P(RecordsTest, SpendIsSummedPerClientDayMonthAndModel) {
  struct E {
    const char* client;
    const char* model;
    TimeMs at;
    std::int64_t in, out, cost;
    const char* day;
  };
  std::vector<E> entries = {
      {"lobechat", "gpt-4o", at_utc(2025, 3, 1, 0), 100, 10, 1000, "2025-03-01"},
      {"lobechat", "gpt-4o", at_utc(2025, 3, 1, 23) + 3'599'999, 200, 20, 2000, "2025-03-01"},
      {"lobechat", "claude", at_utc(2025, 3, 2, 12), 300, 30, 5000, "2025-03-02"},
      {"lobechat", "gpt-4o", at_utc(2025, 4, 1, 0), 1, 1, 1, "2025-04-01"},  // next month
      {"other", "gpt-4o", at_utc(2025, 3, 1, 5), 7, 7, 7, "2025-03-01"},
  };
  for (const auto& e : entries) {
    SpendEntry s;
    s.client = e.client;
    s.provider = std::string(e.model) == "claude" ? "anthropic" : "openai";
    s.model = e.model;
    s.at = e.at;
    s.tokens_in = e.in;
    s.tokens_out = e.out;
    s.cost_micro_usd = e.cost;
    auto r = call(records().record_spend(s));
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->day, e.day);  // the UTC day of `at`
  }
  auto day = call(records().spend_for_client_day("lobechat", "2025-03-01"));
  ASSERT_TRUE(day);
  EXPECT_EQ(day->tokens_in, 300);
  EXPECT_EQ(day->tokens_out, 30);
  EXPECT_EQ(day->cost_micro_usd, 3000);
  EXPECT_EQ(day->calls, 2);
  auto month = call(records().spend_for_client_month("lobechat", "2025-03"));
  ASSERT_TRUE(month);
  EXPECT_EQ(month->cost_micro_usd, 8000);
  EXPECT_EQ(month->calls, 3);
  auto empty = call(records().spend_for_client_day("nobody", "2025-03-01"));
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->calls, 0);
  EXPECT_EQ(empty->cost_micro_usd, 0);

  auto models = call(records().spend_by_model("2025-03-01", "2025-03-31", ""));
  ASSERT_TRUE(models);
  ASSERT_EQ(models->size(), 2u);
  EXPECT_EQ(models->at(0).model, "claude");  // largest cost first
  EXPECT_EQ(models->at(0).provider, "anthropic");
  EXPECT_EQ(models->at(0).totals.cost_micro_usd, 5000);
  EXPECT_EQ(models->at(1).model, "gpt-4o");
  EXPECT_EQ(models->at(1).totals.cost_micro_usd, 3007);
  EXPECT_EQ(models->at(1).totals.calls, 3);
  auto just_other = call(records().spend_by_model("2025-03-01", "2025-03-31", "other"));
  ASSERT_TRUE(just_other);
  ASSERT_EQ(just_other->size(), 1u);
  EXPECT_EQ(just_other->front().totals.cost_micro_usd, 7);

  EXPECT_EQ(call(records().spend_for_client_day("lobechat", "2025-3-1")).error(),
            code(Errc::bad_request));
  EXPECT_EQ(call(records().spend_for_client_month("lobechat", "2025-13")).error(),
            code(Errc::bad_request));
  EXPECT_EQ(call(records().spend_by_model("2025-03-31", "2025-03-01", "")).error(),
            code(Errc::bad_request));
}

TEST_P(RecordsTest, ARetriedSpendEntryIsCountedOnce) {
  SpendEntry s;
  s.id = "call-1";
  s.client = "lobechat";
  s.provider = "openai";
  s.model = "gpt-4o-mini";
  s.tokens_in = 5;
  s.cost_micro_usd = 50;
  auto first = call(records().record_spend(s));
  ASSERT_TRUE(first);
  EXPECT_EQ(first->day.size(), 10u);
  s.at = first->at;
  ASSERT_TRUE(call(records().record_spend(s)));
  auto day = call(records().spend_for_client_day("lobechat", first->day));
  ASSERT_TRUE(day);
  EXPECT_EQ(day->calls, 1);
  EXPECT_EQ(day->cost_micro_usd, 50);
  s.cost_micro_usd = 51;
  EXPECT_EQ(call(records().record_spend(s)).error(), code(Errc::conflict));
  s.id.clear();
  s.tokens_in = -1;
  EXPECT_EQ(call(records().record_spend(s)).error(), code(Errc::bad_request));
}

// ---------------------------------------------------------------------------------------------
// Audit log.

TEST_P(RecordsTest, BatchesOfAuditAndSpendEntriesCommitTogetherAndOnce) {
  std::vector<AuditEntry> audits;
  for (int n = 0; n < 300; ++n) {
    AuditEntry a;
    a.id = "batch-audit-" + std::to_string(n);
    a.client = "batcher";
    a.server = "fs";
    a.tool = "read";
    a.args_sha256 = sha(static_cast<char>('a' + n % 6));
    a.outcome = "ok";
    a.request_id = "rid";
    audits.push_back(a);
  }
  auto stored = call(records().append_audits(audits));
  ASSERT_TRUE(stored) << stored.error().message();
  EXPECT_EQ(*stored, 300u);
  auto again = call(records().append_audits(audits));  // a retried batch: nothing twice
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, 0u);
  AuditQuery q;
  q.client = "batcher";
  q.limit = 1000;
  auto rows = call(records().query_audit(q));
  ASSERT_TRUE(rows);
  EXPECT_EQ(rows->size(), 300u);

  std::vector<SpendEntry> spends(3);
  for (auto& e : spends) {
    e.client = "batcher";
    e.provider = "oai";
    e.model = "gpt-4o-mini";
    e.tokens_in = 10;
    e.tokens_out = 5;
    e.cost_micro_usd = 7;
    e.at = at_utc(2025, 5, 2, 12);
  }
  auto spent = call(records().record_spends(spends));
  ASSERT_TRUE(spent) << spent.error().message();
  EXPECT_EQ(*spent, 3u);
  auto day = call(records().spend_for_client_day("batcher", "2025-05-02"));
  ASSERT_TRUE(day);
  EXPECT_EQ(day->cost_micro_usd, 21);
  EXPECT_EQ(day->calls, 3);

  // One bad entry refuses the whole batch: nothing of it is stored.
  std::vector<AuditEntry> mixed(2, audits.front());
  mixed[0].id = "batch-audit-new";
  mixed[1].id = "batch-audit-bad";
  mixed[1].args_sha256 = "not-a-digest";
  auto refused = call(records().append_audits(mixed));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error(), Errc::bad_request);
  auto after = call(records().query_audit(q));
  ASSERT_TRUE(after);
  EXPECT_EQ(after->size(), 300u);
}

TEST_P(RecordsTest, AuditEntriesAreQueriedByClientAndTimeNewestFirst) {
  TimeMs t0 = at_utc(2025, 5, 1, 10);
  for (int n = 0; n < 6; ++n) {
    AuditEntry a;
    a.at = t0 + n * 1000;
    a.client = n % 2 ? "ops" : "lobechat";
    a.server = "github";
    a.tool = "create_issue";
    a.args_sha256 = sha(static_cast<char>('0' + n));
    a.outcome = n == 4 ? "error" : "ok";
    a.duration_us = 1500 + n;
    a.request_id = "rid-" + std::to_string(n);
    auto r = call(records().append_audit(a));
    ASSERT_TRUE(r) << r.error().message();
  }
  AuditQuery q;
  q.client = "lobechat";
  auto mine = call(records().query_audit(q));
  ASSERT_TRUE(mine);
  ASSERT_EQ(mine->size(), 3u);
  EXPECT_EQ(mine->at(0).at, t0 + 4000);
  EXPECT_EQ(mine->at(0).outcome, "error");
  EXPECT_EQ(mine->at(0).request_id, "rid-4");
  EXPECT_EQ(mine->at(0).duration_us, 1504);
  EXPECT_EQ(mine->at(2).at, t0);

  q.from = t0 + 1000;
  q.to = t0 + 4000;  // exclusive
  auto window = call(records().query_audit(q));
  ASSERT_TRUE(window);
  ASSERT_EQ(window->size(), 1u);
  EXPECT_EQ(window->front().at, t0 + 2000);

  AuditQuery all;
  all.limit = 4;
  auto newest = call(records().query_audit(all));
  ASSERT_TRUE(newest);
  ASSERT_EQ(newest->size(), 4u);
  EXPECT_EQ(newest->front().at, t0 + 5000);
  EXPECT_EQ(newest->front().client, "ops");

  AuditEntry bad;
  bad.server = "github";
  bad.tool = "x";
  bad.outcome = "ok";
  bad.args_sha256 = "not-a-digest";
  EXPECT_EQ(call(records().append_audit(bad)).error(), code(Errc::bad_request));
  all.limit = 0;
  EXPECT_EQ(call(records().query_audit(all)).error(), code(Errc::bad_request));
}

// ---------------------------------------------------------------------------------------------
// Bad inputs: answers, never crashes.

TEST_P(RecordsTest, UnknownIdsAndMalformedInputsAreErrorsNotCrashes) {
  EXPECT_EQ(call(records().get_intent("no-such-intent")).error(), code(Errc::not_found));
  EXPECT_EQ(call(records().get_intent("")).error(), code(Errc::not_found));
  EXPECT_EQ(call(records().get_intent(std::string("a\0b", 3))).error(), code(Errc::not_found));
  EXPECT_EQ(call(records().get_intent(std::string(10'000, 'x'))).error(), code(Errc::not_found));
  EXPECT_EQ(call(records().get_intent("'; DROP TABLE intents; --")).error(), code(Errc::not_found));
  IntentUpdate u;
  u.status = IntentStatus::running;
  EXPECT_EQ(call(records().update_intent("no-such-intent", u)).error(), code(Errc::not_found));

  Intent in;
  in.client = "lobechat";
  EXPECT_EQ(call(records().create_intent(in)).error(), code(Errc::bad_request));  // no agent
  in.agent = "coder";
  in.error = std::string("nul\0inside", 10);
  EXPECT_EQ(call(records().create_intent(in)).error(), code(Errc::bad_request));
  in.error.clear();
  // Awkward but valid JSON goes through unchanged.
  in.input = {{"quote", "it's \"quoted\""},
              {"unicode", "h\u00e9llo \u2603 \U0001F600"},
              {"nul", std::string("a\0b", 3)},
              {"deep", {{"a", {{"b", {1, 2.5, nullptr}}}}}}};
  auto ok = call(records().create_intent(in));
  ASSERT_TRUE(ok) << ok.error().message();
  auto back = call(records().get_intent(ok->id));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->input, in.input);

  EXPECT_EQ(call(records().append_messages("", "lobechat", messages({{"x", 1}}))).error(),
            code(Errc::bad_request));
  EXPECT_EQ(call(records().append_messages("s", "lobechat", {})).error(), code(Errc::bad_request));
  EXPECT_EQ(call(records().get_session("no-such-session")).error(), code(Errc::not_found));
  EXPECT_EQ(*call(records().delete_session("no-such-session")), false);
  // The store still works after all of that.
  EXPECT_TRUE(call(records().get_intent(ok->id)));
}

// ---------------------------------------------------------------------------------------------
// Migrations.

TEST_P(RecordsTest, MigrationsApplyFromEmptyAndRerunAsNoOps) {
  auto before = migration_status(config_);
  EXPECT_EQ(before.backend, postgres() ? "postgres" : "sqlite");
  ASSERT_FALSE(before.migrations.empty());
  EXPECT_EQ(before.pending(), before.migrations.size());
  if (!postgres()) {
    EXPECT_FALSE(fs::exists(config_.data_dir + "/agentd.db"));  // status only reads
  }

  auto applied = migrate(config_);
  EXPECT_EQ(applied.pending(), 0u);
  for (const auto& m : applied.migrations) {
    EXPECT_TRUE(m.applied);
    EXPECT_TRUE(m.known);
    EXPECT_FALSE(m.modified);
    EXPECT_GT(m.applied_at, 0);
  }
  auto again = migrate(config_);
  ASSERT_EQ(again.migrations.size(), applied.migrations.size());
  for (std::size_t i = 0; i < again.migrations.size(); ++i) {
    EXPECT_EQ(again.migrations[i].applied_at, applied.migrations[i].applied_at);
  }
  // Opening (which migrates too) is fine on a migrated database, and the table is usable.
  intent();
  EXPECT_EQ(records().backend(), postgres() ? "postgres" : "sqlite");
  EXPECT_TRUE(records().health().available);
  std::ostringstream table;
  print_migration_status(migration_status(config_), table);
  EXPECT_NE(table.str().find("0001     init"), std::string::npos) << table.str();
  EXPECT_NE(table.str().find("applied"), std::string::npos);
  EXPECT_NE(table.str().find("0 pending"), std::string::npos);
  if (!postgres()) {
    // The durability settings are in force on the file.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((config_.data_dir + "/agentd.db").c_str(), &db), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, nullptr);
    ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
    EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
  }
}

TEST_P(RecordsTest, RefusesToStartOnANewerSchema) {
  migrate(config_);
  const char* insert =
      "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
      "VALUES (9999, 'from_the_future', 'x', 0)";
  if (postgres()) {
    admin_exec(config_.postgres, insert);
  } else {
    sqlite3* db = nullptr;
    sqlite3_open((config_.data_dir + "/agentd.db").c_str(), &db);
    ASSERT_EQ(sqlite3_exec(db, insert, nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  try {
    open();
    FAIL() << "opened a database with a newer schema";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("newer than this agentd knows"), std::string::npos)
        << e.what();
  }
  auto st = migration_status(config_);
  ASSERT_FALSE(st.migrations.empty());
  EXPECT_FALSE(st.migrations.back().known);
  EXPECT_EQ(st.migrations.back().version, 9999);
}

TEST_P(RecordsTest, TwoProcessesMigratingAtOnceDoNotRace) {
  for (int round = 0; round < 3; ++round) {
    if (round > 0) {
      // A fresh, empty database for each round.
      if (postgres()) {
        use_postgres(admin_);
      } else {
        config_.data_dir = dir_ + "/data" + std::to_string(round);
      }
    }
    fs::create_directories(config_.data_dir);
    auto start = now_ms() + 700;  // both wait for the same instant
    std::vector<std::unique_ptr<test::Process>> procs;
    for (int p = 0; p < 2; ++p) {
      procs.push_back(std::make_unique<test::Process>(
          STORE_SQL_HELPER,
          std::vector<std::string>{"migrate", config_.data_dir,
                                   config_.postgres.empty() ? "-" : config_.postgres,
                                   std::to_string(start)},
          std::vector<std::string>{}, std::vector<std::string>{}, std::string{},
          dir_ + "/helper" + std::to_string(round) + std::to_string(p) + ".err"));
    }
    for (std::size_t p = 0; p < procs.size(); ++p) {
      std::string seen;
      auto line = procs[p]->wait_for_line("migrated", 60s, &seen);
      EXPECT_TRUE(line) << "a migrating process failed; stdout: " << seen << "stderr: "
                        << slurp(dir_ + "/helper" + std::to_string(round) + std::to_string(p) +
                                 ".err");
      EXPECT_EQ(procs[p]->wait(30s), 0);
    }
    auto st = migration_status(config_);
    EXPECT_EQ(st.pending(), 0u);
    std::size_t applied = 0;
    for (const auto& m : st.migrations) applied += m.applied ? 1 : 0;
    EXPECT_EQ(applied, st.migrations.size());
  }
}

// ---------------------------------------------------------------------------------------------
// Faults.

TEST_P(RecordsTest, AnAcknowledgedWriteSurvivesSigkill) {
  migrate(config_);
  std::string id = "crash-" + new_id();
  test::Process helper(
      STORE_SQL_HELPER,
      {"write", config_.data_dir, config_.postgres.empty() ? "-" : config_.postgres, id}, {}, {},
      {}, dir_ + "/crash.err");
  std::string seen;
  ASSERT_TRUE(helper.wait_for_line("acked", 60s, &seen)) << seen;
  helper.signal(SIGKILL);  // no destructor, no checkpoint, no clean close
  ASSERT_EQ(helper.wait(10s), 128 + SIGKILL);

  auto got = call(records().get_intent(id));
  ASSERT_TRUE(got) << got.error().message();
  EXPECT_EQ(got->status, IntentStatus::running);
  EXPECT_EQ(got->input["intent"].get<std::string>(), "survive a crash");
  auto steps = call(records().list_steps(id, 0));
  ASSERT_TRUE(steps);
  ASSERT_EQ(steps->size(), 1u);
  EXPECT_EQ(steps->front().kind, "plan");
  auto models = call(records().spend_by_model("2000-01-01", "2999-12-31", "crash"));
  ASSERT_TRUE(models);
  ASSERT_EQ(models->size(), 1u);
  EXPECT_EQ(models->front().totals.cost_micro_usd, 30);
}

TEST_P(RecordsTest, ASlowDatabaseDoesNotBlockTheEventLoop) {
  records();
  std::atomic<bool> stop{false};
  std::vector<double> lags;  // touched on the loop thread only, read after it finished
  auto ticker = [](std::atomic<bool>* halt, std::vector<double>* out) -> asio::awaitable<int> {
    asio::steady_timer t(co_await asio::this_coro::executor);
    while (!*halt) {
      auto due = Clock::now() + 2ms;
      t.expires_at(due);
      co_await t.async_wait(asio::use_awaitable);
      out->push_back(std::chrono::duration<double, std::milli>(Clock::now() - due).count());
    }
    co_return 0;
  };
  auto ticks = loop().start(ticker(&stop, &lags));
  std::this_thread::sleep_for(50ms);
  Intent in;
  in.client = "lobechat";
  in.agent = "coder";
  Result<Intent> r = code(Errc::internal);
  Clock::duration took{};
  {
    // PostgreSQL: the insert waits behind a transaction that holds the table lock while it
    // runs pg_sleep(1.5). SQLite: behind another connection's exclusive transaction.
    std::unique_ptr<LockHolder> holder;
    if (postgres()) {
      holder = std::make_unique<LockHolder>(config_, 1500ms);
    } else {
      holder = std::make_unique<LockHolder>(config_);
    }
    auto started = Clock::now();
    auto pending = loop().start(records().create_intent(in));
    if (!postgres()) {
      std::this_thread::sleep_for(1500ms);
      holder->release();
    }
    ASSERT_EQ(pending.wait_for(30s), std::future_status::ready);
    r = pending.get();
    took = Clock::now() - started;
  }
  stop = true;
  ticks.wait_for(5s);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_GE(took, 1200ms) << "the database was not slow: the test proves nothing";
  ASSERT_GT(lags.size(), 100u);
  std::sort(lags.begin(), lags.end());
  double p99 = lags[lags.size() * 99 / 100];
  double worst = lags.back();
  std::cout << "loop lag while the database was slow: " << lags.size() << " ticks, p99 " << p99
            << " ms, max " << worst << " ms\n";
  // A blocked loop would show one tick of well over a second.
  EXPECT_LT(worst, 100.0);
  EXPECT_LT(p99, 20.0);
}

TEST_P(RecordsTest, CallersBeyondThePoolWaitAndGiveUpAfterPoolTimeout) {
  config_.pool_size = 1;
  config_.pool_timeout = 300ms;
  records();
  Intent in;
  in.client = "lobechat";
  in.agent = "coder";
  auto holder = std::make_unique<LockHolder>(config_);
  auto blocked = loop().start(records().create_intent(in));
  std::this_thread::sleep_for(200ms);  // the first call holds the only (writer) connection
  auto started = Clock::now();
  auto second = loop().call(records().create_intent(in));
  auto waited = Clock::now() - started;
  EXPECT_EQ(second.error(), code(Errc::unavailable));
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, 5s);
  holder->release();
  ASSERT_EQ(blocked.wait_for(30s), std::future_status::ready);
  EXPECT_TRUE(blocked.get());
  EXPECT_TRUE(loop().call(records().create_intent(in)));
}

// ---------------------------------------------------------------------------------------------
// Group commit (SQLite: the writer takes every write waiting for it into one transaction;
// PostgreSQL: concurrent transactions on the pool). Both must give each caller its own truth.

// Creates an intent with one step; then reads both back through a reader connection, which
// sees only committed data: found means the write was committed before its caller heard so.
asio::awaitable<std::string> write_then_read(Records* r, std::string id) {
  Intent in;
  in.id = id;
  in.client = "group";
  in.agent = "coder";
  in.status = IntentStatus::running;
  in.input = {{"intent", id}};
  auto created = co_await r->create_intent(in);
  if (!created) co_return "create_intent: " + created.error().message();
  auto seen = co_await r->get_intent(id);
  if (!seen) co_return "created but not committed: " + seen.error().message();
  Step s;
  s.intent_id = id;
  s.seq = 1;
  s.kind = "llm";
  s.data = {{"n", id}};
  auto appended = co_await r->append_step(s);
  if (!appended) co_return "append_step: " + appended.error().message();
  auto steps = co_await r->list_steps(id, 0);
  if (!steps || steps->size() != 1) co_return "step acknowledged but not committed";
  co_return "";
}

core::Histogram& batch_sizes(Instance& inst) {
  return inst.metrics.histogram("agentd_store_sql_write_batch_size", "",
                                {1, 2, 4, 8, 16, 32, 64, 128, 256}, {{"backend", "sqlite"}});
}

TEST_P(RecordsTest, ConcurrentWritesAllCompleteEachOnlyAfterItsCommit) {
  records();
  constexpr int kWriters = 300;  // more than one batch's bound (256)
  // SQLite: another connection holds the write lock for a moment, so that the writes pile up
  // behind the writer and go out in few, large batches.
  std::unique_ptr<LockHolder> holder;
  if (!postgres()) holder = std::make_unique<LockHolder>(config_);
  std::vector<std::future<std::string>> writers;
  for (int i = 0; i < kWriters; ++i) {
    writers.push_back(loop().start(write_then_read(&records(), "group-" + std::to_string(i))));
  }
  if (holder) {
    std::this_thread::sleep_for(300ms);
    holder->release();
  }
  for (auto& w : writers) {
    ASSERT_EQ(w.wait_for(60s), std::future_status::ready);
    EXPECT_EQ(w.get(), "");
  }
  auto unfinished = call(records().list_unfinished_intents(1000));
  ASSERT_TRUE(unfinished);
  EXPECT_EQ(unfinished->size(), static_cast<std::size_t>(kWriters));
  if (!postgres()) {
    // 600 writes; with group commit, far fewer transactions, none above the bound.
    auto& sizes = batch_sizes(*instances_.front());
    std::cout << "sqlite: " << 2 * kWriters << " writes in " << sizes.count() << " commits\n";
    EXPECT_LT(sizes.count(), static_cast<std::uint64_t>(kWriters));
    EXPECT_GT(sizes.bucket(8), 0u) << "no batch of more than 128 writes";  // (128, 256]
    EXPECT_EQ(sizes.bucket(9), 0u) << "a batch above kMaxWriteBatch";      // > 256
  }
}

asio::awaitable<Result<Step>> append(Records* r, std::string intent_id, std::int64_t seq) {
  Step s;
  s.intent_id = std::move(intent_id);
  s.seq = seq;
  s.kind = "tool_result";
  s.data = {{"seq", seq}};
  co_return co_await r->append_step(std::move(s));
}

asio::awaitable<Result<Intent>> create_again(Records* r, Intent in) {
  co_return co_await r->create_intent(std::move(in));
}

asio::awaitable<Result<bool>> link(Records* r, std::string intent_id, std::string artifact_id) {
  co_return co_await r->link_intent_artifact(std::move(intent_id), std::move(artifact_id), "input");
}

TEST_P(RecordsTest, OneFailingWriteDoesNotPoisonTheOthersInItsGroup) {
  std::vector<Intent> intents;
  for (int i = 0; i < 40; ++i) intents.push_back(intent());
  std::unique_ptr<LockHolder> holder;
  if (!postgres()) holder = std::make_unique<LockHolder>(config_);
  // Good and bad writes interleaved, all waiting for the writer at once: a statement that
  // breaks a foreign key (throws inside the transaction), a body that answers conflict, a
  // step out of order.
  std::vector<std::future<Result<Step>>> good;
  std::vector<std::future<Result<Step>>> unknown_intent;
  std::vector<std::future<Result<Step>>> out_of_order;
  std::vector<std::future<Result<Intent>>> clashing;
  std::vector<std::future<Result<bool>>> dangling_link;
  for (std::size_t i = 0; i < intents.size(); ++i) {
    good.push_back(loop().start(append(&records(), intents[i].id, 1)));
    if (i % 8 == 0) {
      unknown_intent.push_back(loop().start(append(&records(), "no-such-intent-" + std::to_string(i), 1)));
      out_of_order.push_back(loop().start(append(&records(), intents[i].id, 3)));
      Intent clash = intents[i];
      clash.input = {{"intent", "something else"}};
      clashing.push_back(loop().start(create_again(&records(), clash)));
      dangling_link.push_back(loop().start(link(&records(), intents[i].id, "no-such-artifact")));
    }
  }
  if (holder) {
    std::this_thread::sleep_for(300ms);
    holder->release();
  }
  for (auto& f : good) {
    ASSERT_EQ(f.wait_for(60s), std::future_status::ready);
    auto r = f.get();
    EXPECT_TRUE(r) << r.error().message();
  }
  for (auto& f : unknown_intent) EXPECT_EQ(f.get().error(), code(Errc::not_found));
  for (auto& f : out_of_order) EXPECT_EQ(f.get().error(), code(Errc::conflict));
  for (auto& f : clashing) EXPECT_EQ(f.get().error(), code(Errc::conflict));
  for (auto& f : dangling_link) EXPECT_EQ(f.get().error(), code(Errc::not_found));
  // What was acknowledged is there, exactly once; what failed left nothing.
  for (const auto& in : intents) {
    auto steps = call(records().list_steps(in.id, 0));
    ASSERT_TRUE(steps);
    ASSERT_EQ(steps->size(), 1u) << in.id;
    EXPECT_EQ(steps->front().seq, 1);
    auto got = call(records().get_intent(in.id));
    ASSERT_TRUE(got);
    EXPECT_EQ(got->input, in.input);
    auto links = call(records().list_intent_artifacts(in.id));
    ASSERT_TRUE(links);
    EXPECT_TRUE(links->empty());
  }
  EXPECT_EQ(call(records().list_steps("no-such-intent-0", 0)).error(), code(Errc::not_found));
  if (!postgres()) {
    auto& sizes = batch_sizes(*instances_.front());
    EXPECT_GT(sizes.bucket(5) + sizes.bucket(6) + sizes.bucket(7), 0u)
        << "the writes did not meet in one group: the test proves nothing";
    auto& fallbacks = instances_.front()->metrics.counter(
        "agentd_store_sql_write_batch_fallbacks_total", "", {{"backend", "sqlite"}});
    EXPECT_EQ(fallbacks.value(), 0.0) << "the failures should stay within their savepoints";
  }
}

TEST_P(RecordsTest, ConcurrentAcknowledgedWritesSurviveSigkill) {
  migrate(config_);
  std::string prefix = "crash-" + new_id().substr(0, 8);
  test::Process helper(
      STORE_SQL_HELPER,
      {"write-many", config_.data_dir, config_.postgres.empty() ? "-" : config_.postgres, prefix},
      {}, {}, {}, dir_ + "/crash.err");
  std::string seen;
  ASSERT_TRUE(helper.wait_for_line("acked", 60s, &seen)) << seen << slurp(dir_ + "/crash.err");
  helper.signal(SIGKILL);  // right after the last acknowledgement: no clean close
  ASSERT_EQ(helper.wait(10s), 128 + SIGKILL);
  for (int i = 0; i < 200; ++i) {
    std::string id = prefix + "-" + std::to_string(i);
    auto got = call(records().get_intent(id));
    ASSERT_TRUE(got) << id << ": " << got.error().message();
    auto steps = call(records().list_steps(id, 0));
    ASSERT_TRUE(steps);
    ASSERT_EQ(steps->size(), 2u) << id;
  }
}

std::string backend_name(const ::testing::TestParamInfo<Backend>& info) {
  return info.param == Backend::sqlite ? "sqlite" : "postgres";
}

INSTANTIATE_TEST_SUITE_P(Backends, RecordsTest,
                         ::testing::Values(Backend::sqlite, Backend::postgres), backend_name);

// ---------------------------------------------------------------------------------------------
// Configuration.

TEST(RecordIdsTest, TimeOrderedIdsSortByTimeAndDifferWithinAMillisecond) {
  auto a = new_id(at_utc(2025, 5, 1, 10));
  auto b = new_id(at_utc(2025, 5, 1, 10) + 1);
  auto c = new_id(at_utc(2026, 1, 1, 0));
  for (const auto& id : {a, b, c}) {
    ASSERT_EQ(id.size(), 32u);
    EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
  }
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_EQ(a.substr(0, 12), "01968b49ed00") << "the time in milliseconds, 12 hex digits";
  std::set<std::string> same_ms;
  for (int i = 0; i < 1000; ++i) same_ms.insert(new_id(at_utc(2025, 5, 1, 10)));
  EXPECT_EQ(same_ms.size(), 1000u);
}

TEST(RecordsConfigTest, ReadsTheDurableRecordKeysOfTheStoreSection) {
  auto doc = core::load_yaml_string(
      "store:\n"
      "  data_dir: /var/lib/agentd\n"
      "  postgres: postgresql://agentd:secret@db:5432/agentd\n"
      "  pool_size: 8\n"
      "  pool_timeout: 2s\n"
      "  connect_timeout: 3s\n"
      "  statement_timeout: 15s\n"
      "  busy_timeout: 1s\n"
      "  migration_lock_timeout: 2m\n");
  core::ConfigNode root(doc, "");
  auto store = root.required("store");
  RecordsConfig c;
  parse_records_config(store, c);
  store.finish();  // every key above was read
  EXPECT_EQ(c.data_dir, "/var/lib/agentd");
  EXPECT_EQ(c.postgres, "postgresql://agentd:secret@db:5432/agentd");
  EXPECT_EQ(c.pool_size, 8u);
  EXPECT_EQ(c.pool_timeout, 2s);
  EXPECT_EQ(c.connect_timeout, 3s);
  EXPECT_EQ(c.statement_timeout, 15s);
  EXPECT_EQ(c.busy_timeout, 1s);
  EXPECT_EQ(c.migration_lock_timeout, 120s);

  auto bad = core::load_yaml_string("store:\n  postgres: db.example.com\n");
  core::ConfigNode bad_root(bad, "");
  RecordsConfig d;
  try {
    parse_records_config(bad_root.required("store"), d);
    FAIL() << "accepted a host name as a connection string";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.path(), "store.postgres");
  }
  auto zero = core::load_yaml_string("store:\n  pool_size: 0\n");
  core::ConfigNode zero_root(zero, "");
  EXPECT_THROW(parse_records_config(zero_root.required("store"), d), ConfigError);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only: the connection pool, serialization failures, restarts, timeouts.

class PostgresTest : public RecordsTest {};

TEST_P(PostgresTest, NeverMoreConnectionsThanThePoolAndEveryCallerSucceeds) {
  config_.pool_size = 3;
  auto& inst = open();
  std::atomic<bool> sampling{true};
  std::atomic<std::int64_t> most{0};
  std::thread sampler([&] {
    pqxx::connection c(config_.postgres);
    while (sampling) {
      auto n = pg_count(c, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                        config_.application_name);
      if (n > most) most = n;
      std::this_thread::sleep_for(5ms);
    }
  });
  std::vector<std::future<Result<Intent>>> calls;
  {
    LockHolder holder(config_);
    for (int n = 0; n < 24; ++n) {
      Intent in;
      in.client = "lobechat";
      in.agent = "coder";
      in.input = {{"n", n}};
      calls.push_back(inst.loop.start(inst.records->create_intent(in)));
    }
    // Everyone piles up: three on the database, the rest waiting for a connection.
    auto& waiting =
        inst.metrics.gauge("agentd_store_sql_connection_waiters", "", {{"backend", "postgres"}});
    auto deadline = Clock::now() + 20s;
    while ((most < 3 || waiting.value() < 21) && Clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
    }
    EXPECT_EQ(waiting.value(), 21);
    std::this_thread::sleep_for(200ms);
  }
  int ok = 0;
  for (auto& f : calls) {
    ASSERT_EQ(f.wait_for(60s), std::future_status::ready);
    if (f.get()) ++ok;
  }
  sampling = false;
  sampler.join();
  EXPECT_EQ(ok, 24);
  EXPECT_EQ(most, 3);
  auto all = inst.loop.call(inst.records->list_unfinished_intents(100));
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 24u);
}

TEST_P(PostgresTest, SerializationFailuresAreRetried) {
  // With the database's default isolation raised to REPEATABLE READ, two transactions
  // updating the same session row collide with SQLSTATE 40001.
  admin_exec(config_.postgres,
             "ALTER DATABASE " + db_ + " SET default_transaction_isolation = 'repeatable read'");
  auto& inst = open();
  ASSERT_TRUE(inst.loop.call(
      inst.records->append_messages("chat-s", "lobechat", messages({{"first", 1}}))));

  pqxx::connection other(config_.postgres);
  pqxx::work w(other);
  w.exec("UPDATE sessions SET updated_at = updated_at + 1 WHERE id = 'chat-s'");
  auto pending =
      inst.loop.start(inst.records->append_messages("chat-s", "lobechat", messages({{"x", 1}})));
  // Wait until our append is blocked on the row lock, then commit the other update.
  pqxx::connection watch(config_.postgres);
  auto deadline = Clock::now() + 20s;
  while (pg_count(watch,
                  "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND "
                  "wait_event_type = 'Lock'",
                  config_.application_name) == 0 &&
         Clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_LT(Clock::now(), deadline) << "the append never waited for the row lock";
  w.commit();
  ASSERT_EQ(pending.wait_for(30s), std::future_status::ready);
  auto r = pending.get();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->front().seq, 2);
  auto& retries = inst.metrics.counter("agentd_store_sql_retries_total", "",
                                       {{"backend", "postgres"}, {"reason", "serialization"}});
  EXPECT_GE(retries.value(), 1);
  auto list = inst.loop.call(inst.records->list_messages("chat-s", 0));
  ASSERT_TRUE(list);
  EXPECT_EQ(list->size(), 2u);
}

TEST_P(PostgresTest, AStatementOverTheTimeoutIsATimeout) {
  config_.statement_timeout = 300ms;
  auto& inst = open();
  Intent in;
  in.client = "lobechat";
  in.agent = "coder";
  {
    LockHolder holder(config_);
    auto r = inst.loop.call(inst.records->create_intent(in));
    EXPECT_EQ(r.error(), code(Errc::timeout));
  }
  EXPECT_TRUE(inst.loop.call(inst.records->create_intent(in)));
}

TEST_P(PostgresTest, ADroppedConnectionIsReplacedAndIdempotentWorkRunsOnceMore) {
  auto& inst = open();
  Intent in;
  in.id = "dropped-" + new_id();
  in.client = "lobechat";
  in.agent = "coder";
  std::future<Result<Intent>> pending;
  {
    LockHolder holder(config_);
    pending = inst.loop.start(inst.records->create_intent(in));
    pqxx::connection admin(config_.postgres);
    auto deadline = Clock::now() + 20s;
    while (pg_count(admin,
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND "
                    "wait_event_type = 'Lock'",
                    config_.application_name) == 0 &&
           Clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
    }
    ASSERT_LT(Clock::now(), deadline) << "the insert never waited for the lock";
    // The connection dies in the middle of the transaction (as in a failover or a network
    // cut); the executor opens a new one and repeats the insert, which is safe by its id.
    EXPECT_EQ(pg_count(admin,
                       "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM "
                       "pg_stat_activity WHERE application_name = $1) t",
                       config_.application_name),
              1);
  }
  ASSERT_EQ(pending.wait_for(30s), std::future_status::ready);
  auto r = pending.get();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->id, in.id);
  auto& reconnects = inst.metrics.counter("agentd_store_sql_retries_total", "",
                                          {{"backend", "postgres"}, {"reason", "reconnect"}});
  EXPECT_EQ(reconnects.value(), 1);
  auto all = inst.loop.call(inst.records->list_unfinished_intents(10));
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 1u);
  EXPECT_TRUE(inst.records->health().available);
}

INSTANTIATE_TEST_SUITE_P(Backends, PostgresTest, ::testing::Values(Backend::postgres),
                         backend_name);

// Stops the private server (never scripts/test's shared one) mid-run.
class PostgresRestartTest : public RecordsTest {
 protected:
  bool needs_private_server() const override { return true; }
};

TEST_P(PostgresRestartTest, CallsFailFastWhileTheServerIsDownAndWorkAgainAfterwards) {
  config_.connect_timeout = 2s;
  auto& inst = open();
  auto& r = *inst.records;
  Intent in;
  in.client = "lobechat";
  in.agent = "coder";
  auto before = inst.loop.call(r.create_intent(in));
  ASSERT_TRUE(before);
  EXPECT_TRUE(r.health().available);

  private_pg().stop();
  for (int n = 0; n < 5; ++n) {
    auto started = Clock::now();
    auto got = inst.loop.call(r.get_intent(before->id));
    auto took = Clock::now() - started;
    EXPECT_EQ(got.error(), code(Errc::unavailable)) << "call " << n;
    EXPECT_LT(took, 1s) << "call " << n << " did not fail fast";
    auto wrote = inst.loop.call(r.create_intent(in));
    EXPECT_EQ(wrote.error(), code(Errc::unavailable));
  }
  EXPECT_FALSE(r.health().available);
  EXPECT_NE(r.health().detail.find("unavailable"), std::string::npos) << r.health().detail;

  private_pg().start();
  // Nothing is restarted on our side: the pool reconnects by itself.
  Result<Intent> after = code(Errc::internal);
  auto deadline = Clock::now() + 20s;
  do {
    after = inst.loop.call(r.get_intent(before->id));
    if (after) break;
    std::this_thread::sleep_for(100ms);
  } while (Clock::now() < deadline);
  ASSERT_TRUE(after) << after.error().message();
  EXPECT_EQ(after->input, before->input);
  EXPECT_TRUE(r.health().available);
  // Every pooled connection died with the server; all of them recover.
  std::vector<std::future<Result<Intent>>> calls;
  for (int n = 0; n < 8; ++n) calls.push_back(inst.loop.start(r.create_intent(in)));
  for (auto& f : calls) {
    ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
    auto x = f.get();
    EXPECT_TRUE(x) << x.error().message();
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, PostgresRestartTest, ::testing::Values(Backend::postgres),
                         backend_name);

}  // namespace
}  // namespace agentd::store
