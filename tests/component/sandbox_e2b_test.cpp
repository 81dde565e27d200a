// The e2b sandbox backend against fake_e2b in-process (its own thread, port 0), through
// agentd's HttpClient: lives of sandboxes, streamed commands, files, stream drops and
// re-attach, HTTP and Connect errors, deadlines.
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "agentd/core/metrics.hpp"
#include "agentd/net/client.hpp"
#include "agentd/sandbox/manager.hpp"
#include "support/coro.hpp"
#include "support/fake_e2b.hpp"

namespace agentd::test {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using sandbox::Backend;
using sandbox::ExecEvent;
using sandbox::ExecOptions;
using Clock = std::chrono::steady_clock;

struct Collected {
  std::vector<ExecEvent> events;
  std::string out, err;
  std::optional<ExecEvent> exited;
  std::optional<sandbox::Error> error;  // next() failed
  Clock::time_point first_out{}, end{};
};

// Reads a process to its end (a stand-in for sandbox::run, which lives on another branch).
asio::awaitable<Collected> collect(sandbox::Process& p) {
  Collected c;
  for (int guard = 0; guard < 100000; ++guard) {
    auto ev = co_await p.next();
    if (!ev) {
      c.error = ev.error();
      break;
    }
    if (!*ev) break;
    if ((*ev)->kind == ExecEvent::Kind::stdout_data) {
      if (c.out.empty()) c.first_out = Clock::now();
      c.out += (*ev)->data;
    }
    if ((*ev)->kind == ExecEvent::Kind::stderr_data) c.err += (*ev)->data;
    if ((*ev)->kind == ExecEvent::Kind::exited) c.exited = **ev;
    c.events.push_back(**ev);
  }
  c.end = Clock::now();
  co_return c;
}

class E2bBackendTest : public ::testing::Test {
 protected:
  explicit E2bBackendTest(FakeE2bOptions fo = keepalive_options()) : fake_(fo) {}

  static FakeE2bOptions keepalive_options() {
    FakeE2bOptions o;
    o.keepalive = 20ms;  // keepalive events all through every stream: the backend skips them
    o.list_page_size = 2;
    return o;
  }

  std::unique_ptr<Backend> backend(std::chrono::milliseconds request_timeout = 5s,
                                   std::string api_key = {}) {
    sandbox::Config c;
    c.enabled = true;
    c.backend = sandbox::BackendKind::e2b;
    c.e2b.api_key = api_key.empty() ? fake_.api_key() : api_key;
    c.e2b.api_url = fake_.url();
    c.e2b.sandbox_url = fake_.url();
    c.e2b.request_timeout = request_timeout;
    return sandbox::make_e2b_backend(io_.get_executor(), c, *http_, metrics_);
  }

  void run(asio::awaitable<void> work, std::chrono::milliseconds limit = 20s) {
    run_coroutine(io_, std::move(work), limit);
  }

  std::size_t count(const std::string& path) const {
    std::size_t n = 0;
    for (const auto& r : fake_.requests()) n += r.path == path;
    return n;
  }

  FakeE2b fake_;
  asio::io_context io_;
  core::Registry metrics_;
  std::unique_ptr<net::HttpClient> http_ = net::make_http_client(io_.get_executor(), {}, metrics_);
};

asio::awaitable<std::unique_ptr<sandbox::Process>> must_start(Backend& b, std::string id,
                                                              ExecOptions o) {
  auto p = co_await b.start(std::move(id), std::move(o));
  EXPECT_TRUE(p.has_value()) << (p ? "" : p.error().message);
  if (!p) throw std::runtime_error("start failed");
  co_return std::move(*p);
}

ExecOptions cmd(std::string text, std::chrono::milliseconds timeout = 10s) {
  ExecOptions o;
  o.cmd = std::move(text);
  o.timeout = timeout;
  return o;
}

asio::awaitable<void> lifecycle(Backend& b, FakeE2b& fake) {
  sandbox::CreateOptions co;
  co.timeout = 120s;
  co.env = {{"GREETING", "hi"}};
  co.metadata = {{"purpose", "test"}};
  co.owner = "intent-1";
  auto info = co_await b.create(co);
  CO_ASSERT(info.has_value());
  EXPECT_EQ(info->backend, "e2b");
  EXPECT_EQ(info->template_id, "base");
  EXPECT_EQ(info->owner, "intent-1");
  auto sbs = fake.sandboxes();
  CO_ASSERT((sbs.size()) == (1u));
  EXPECT_EQ(sbs[0].id, info->id);
  EXPECT_EQ(sbs[0].metadata.at("agentd_owner"), "intent-1");
  EXPECT_EQ(sbs[0].env.at("GREETING"), "hi");
  EXPECT_FALSE(sbs[0].internet);
  EXPECT_EQ(b.desktop_url(info->id), std::nullopt);

  // Streamed output: the first piece arrives long before the end.
  ExecOptions x1 = cmd("echo \"$GREETING one\"; sleep 0.4; echo two >&2; exit 3");
  auto p = co_await must_start(b, info->id, x1);
  EXPECT_GT(p->pid(), 0);
  auto c = co_await collect(*p);
  CO_ASSERT(c.exited.has_value());
  EXPECT_EQ(c.events.front().kind, ExecEvent::Kind::started);
  EXPECT_EQ(c.out, "hi one\n");
  EXPECT_EQ(c.err, "two\n");
  EXPECT_EQ(c.exited->exit_code, 3);
  EXPECT_FALSE(c.exited->timed_out);
  EXPECT_GE(c.end - c.first_out, 300ms);

  // stdin written then closed; env and cwd.
  ExecOptions o = cmd("cat; echo \"$X\"; pwd");
  o.stdin_data = "piped\n";
  o.env = {{"X", "from-env"}};
  o.cwd = "/tmp";
  p = co_await must_start(b, info->id, o);
  c = co_await collect(*p);
  EXPECT_EQ(c.exited->exit_code, 0);
  EXPECT_EQ(c.out.substr(0, 15), "piped\nfrom-env\n");
  EXPECT_NE(c.out.find("/tmp\n"), std::string::npos);

  // Files.
  std::string s2 = "dir/a.txt";
  std::string s3 = "hello";
  auto w = co_await b.write_file(info->id, s2, s3);
  CO_ASSERT(w.has_value());
  std::string s4 = "/home/user/dir/a.txt";
  auto r = co_await b.read_file(info->id, s4, 1024);
  CO_ASSERT(r.has_value());
  EXPECT_EQ(*r, "hello");
  std::string s5 = "dir/a.txt";
  auto big = co_await b.read_file(info->id, s5, 3);
  EXPECT_EQ(big.error().code, Errc::payload_too_large);
  ExecOptions x6 = cmd("cat dir/a.txt");
  p = co_await must_start(b, info->id, x6);
  auto cat_out = co_await collect(*p);
  EXPECT_EQ(cat_out.out, "hello");
  std::string s7 = "";
  auto ls = co_await b.list_files(info->id, s7, 2);
  CO_ASSERT(ls.has_value());
  CO_ASSERT((ls->size()) == (2u));
  EXPECT_EQ((*ls)[0].name, "dir");
  EXPECT_EQ((*ls)[0].type, "dir");
  EXPECT_EQ((*ls)[1].path, "/home/user/dir/a.txt");
  EXPECT_EQ((*ls)[1].type, "file");
  EXPECT_EQ((*ls)[1].size, 5u);
  std::string s8 = "dir";
  auto rm = co_await b.remove(info->id, s8);
  CO_ASSERT(rm.has_value());
  std::string s9 = "dir/a.txt";
  auto gone = co_await b.read_file(info->id, s9, 1024);
  EXPECT_EQ(gone.error().code, Errc::not_found);
  std::string s10 = "nope";
  auto missing = co_await b.list_files(info->id, s10, 1);
  EXPECT_EQ(missing.error().code, Errc::not_found);  // a Connect not_found
  std::string s11 = "../../../etc/passwd";
  auto hostile = co_await b.read_file(info->id, s11, 1024);
  EXPECT_EQ(hostile.error().code, Errc::bad_request);

  // Timeout, list, pause/resume.
  auto t = co_await b.set_timeout(info->id, 600s);
  CO_ASSERT(t.has_value());
  EXPECT_GT(fake.sandboxes()[0].end_at, std::chrono::system_clock::now() + 500s);
  auto paused = co_await b.pause(info->id);
  CO_ASSERT(paused.has_value());
  EXPECT_EQ(fake.sandboxes()[0].state, "paused");
  EXPECT_EQ((co_await b.pause(info->id)).error().code, Errc::conflict);
  auto resumed = co_await b.resume(info->id);
  CO_ASSERT(resumed.has_value());
  EXPECT_EQ(fake.sandboxes()[0].state, "running");
  ExecOptions x12 = cmd("echo back");
  p = co_await must_start(b, info->id, x12);
  auto back_out = co_await collect(*p);
  EXPECT_EQ(back_out.out, "back\n");

  // Kill.
  auto k = co_await b.kill(info->id);
  CO_ASSERT(k.has_value());
  EXPECT_TRUE(fake.sandboxes().empty());
  EXPECT_EQ((co_await b.kill(info->id)).error().code, Errc::not_found);
  // A killed sandbox: the control plane no longer knows it.
  ExecOptions x13 = cmd("true");
  auto dead = co_await b.start(info->id, x13);
  EXPECT_EQ(dead.error().code, Errc::not_found);
}

TEST_F(E2bBackendTest, CreateExecFilesPauseResumeKill) {
  auto b = backend();
  run(lifecycle(*b, fake_));
}

asio::awaitable<void> list_and_desktop(Backend& b) {
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    sandbox::CreateOptions co;
    co.template_id = i == 0 ? "desktop" : "";
    co.owner = "o" + std::to_string(i);
    auto info = co_await b.create(co);
    CO_ASSERT(info.has_value());
    ids.push_back(info->id);
  }
  EXPECT_EQ(b.desktop_url(ids[0]),
            "https://6080-" + ids[0] + ".e2b.app/vnc.html?autoconnect=true&resize=scale");
  EXPECT_EQ(b.desktop_url(ids[1]), std::nullopt);
  auto all = co_await b.list();
  CO_ASSERT(all.has_value());
  CO_ASSERT((all->size()) == (3u));
  std::vector<std::string> got;
  for (const auto& i : *all) {
    got.push_back(i.id);
    EXPECT_EQ(i.state, "running");
    EXPECT_GT(i.end_at, i.started_at);
    EXPECT_FALSE(i.owner.empty());
  }
  std::sort(got.begin(), got.end());
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(got, ids);
  for (auto& id : ids) EXPECT_TRUE((co_await b.kill(id)).has_value());
}

TEST_F(E2bBackendTest, ListFollowsNextTokenAndDesktopUrl) {
  auto b = backend();
  run(list_and_desktop(*b));
  std::size_t pages = 0;
  for (const auto& r : fake_.requests()) {
    if (r.method == "GET" && r.path == "/v2/sandboxes") {
      ++pages;
      EXPECT_EQ(r.header("x-api-key"), fake_.api_key());
    }
  }
  EXPECT_EQ(pages, 2u) << "page size 2, three sandboxes";
}

asio::awaitable<void> reattach(Backend& b, FakeE2b& fake, bool reset) {
  sandbox::CreateOptions c14;
  auto info = co_await b.create(c14);
  CO_ASSERT(info.has_value());
  FakeE2bFault f;
  f.path = "/process.Process/Start";
  if (reset) {
    f.reset_after = 1;
  } else {
    f.drop_after = 1;
  }
  fake.script(f);
  ExecOptions x15 = cmd("echo one; sleep 0.5; echo two; exit 4");
  auto p = co_await must_start(b, info->id, x15);
  auto c = co_await collect(*p);
  CO_ASSERT(c.exited.has_value());
  EXPECT_EQ(c.exited->exit_code, 4);
  EXPECT_EQ(c.exited->error, "");
  EXPECT_NE(c.out.find("two\n"), std::string::npos) << c.out;
  if (!reset) {
    EXPECT_EQ(c.out, "one\ntwo\n");
  }
  co_await b.kill(info->id);
}

TEST_F(E2bBackendTest, DroppedStreamIsReattachedWithConnect) {
  auto b = backend();
  run(reattach(*b, fake_, false));
  EXPECT_EQ(count("/process.Process/Connect"), 1u);
  for (const auto& r : fake_.requests()) {
    if (r.path != "/process.Process/Connect") continue;
    EXPECT_EQ(r.header("content-type"), "application/connect+json");
    EXPECT_NE(r.body.find("\"pid\":"), std::string::npos);
  }
}

TEST_F(E2bBackendTest, CutConnectionIsReattachedWithConnect) {
  auto b = backend();
  run(reattach(*b, fake_, true));
  EXPECT_GE(count("/process.Process/Connect"), 1u);

}

asio::awaitable<void> end_stream_error(Backend& b, FakeE2b& fake) {
  sandbox::CreateOptions c16;
  auto info = co_await b.create(c16);
  CO_ASSERT(info.has_value());
  FakeE2bFault f;
  f.path = "/process.Process/Start";
  f.end_error = FakeE2bEndError{"internal", "envd broke", 1};
  fake.script(f);
  ExecOptions x17 = cmd("echo one; sleep 0.3; echo two");
  auto p = co_await must_start(b, info->id, x17);
  auto c = co_await collect(*p);
  CO_ASSERT(c.exited.has_value());
  EXPECT_EQ(c.out, "one\n");
  EXPECT_EQ(c.exited->exit_code, -1);
  EXPECT_NE(c.exited->error.find("envd broke"), std::string::npos) << c.exited->error;

  // Right after the start event: the process ends at once with the error.
  f.end_error = FakeE2bEndError{"not_found", "no such user", 0};
  fake.script(f);
  ExecOptions x18 = cmd("sleep 0.2");
  p = co_await must_start(b, info->id, x18);
  c = co_await collect(*p);
  CO_ASSERT(c.exited.has_value());
  EXPECT_NE(c.exited->error.find("no such user"), std::string::npos) << c.exited->error;

  // Refused before any stream: the Connect code of the error body.
  FakeE2bFault refused_fault;
  refused_fault.path = "/process.Process/Start";
  refused_fault.status = 400;
  refused_fault.connect_code = "invalid_argument";
  fake.script(refused_fault);
  ExecOptions x19 = cmd("true");
  auto refused = co_await b.start(info->id, x19);
  EXPECT_EQ(refused.error().code, Errc::bad_request);
  co_await b.kill(info->id);
}

TEST_F(E2bBackendTest, EndOfStreamErrors) {
  auto b = backend();
  run(end_stream_error(*b, fake_));
}

asio::awaitable<void> http_errors(Backend& b, Backend& wrong_key, FakeE2b& fake) {
  sandbox::CreateOptions c20;
  auto unauth = co_await wrong_key.create(c20);
  EXPECT_EQ(unauth.error().code, Errc::unauthorized);

  std::string s21 = "i-does-not-exist";
  EXPECT_EQ((co_await b.kill(s21)).error().code, Errc::not_found);
  std::string s22 = "i-does-not-exist";
  EXPECT_EQ((co_await b.set_timeout(s22, 10s)).error().code, Errc::not_found);

  FakeE2bFault rl = FakeE2bFault::fail("/v2/sandboxes", 429, "slow down");
  rl.retry_after_s = 7;
  fake.script(rl);
  sandbox::CreateOptions c23;
  auto limited = co_await b.create(c23);
  CO_ASSERT(!(limited.has_value()));
  EXPECT_EQ(limited.error().code, Errc::rate_limited);
  CO_ASSERT(limited.error().retry_after.has_value());
  EXPECT_EQ(*limited.error().retry_after, 7s);
  EXPECT_NE(limited.error().message.find("slow down"), std::string::npos);

  fake.script(FakeE2bFault::fail("/v2/sandboxes", 503, "overloaded"));
  sandbox::CreateOptions c24;
  EXPECT_EQ((co_await b.create(c24)).error().code, Errc::unavailable);
  fake.script(FakeE2bFault::fail("/v2/sandboxes", 500));
  sandbox::CreateOptions c25;
  EXPECT_EQ((co_await b.create(c25)).error().code, Errc::unavailable);
  fake.script(FakeE2bFault::fail("/v2/sandboxes", 403, "forbidden team"));
  sandbox::CreateOptions c26;
  EXPECT_EQ((co_await b.create(c26)).error().code, Errc::forbidden);

  sandbox::CreateOptions c27;
  auto info = co_await b.create(c27);
  CO_ASSERT(info.has_value());
  fake.script(FakeE2bFault::fail("/filesystem.Filesystem/ListDir", 429));
  std::string s28 = "";
  EXPECT_EQ((co_await b.list_files(info->id, s28, 1)).error().code, Errc::rate_limited);
  fake.script(FakeE2bFault::fail("/process.Process/Start", 502));
  ExecOptions x29 = cmd("true");
  EXPECT_EQ((co_await b.start(info->id, x29)).error().code, Errc::unavailable);
  fake.script(FakeE2bFault::fail("/files", 401));
  std::string s30 = "x";
  EXPECT_EQ((co_await b.read_file(info->id, s30, 10)).error().code, Errc::unauthorized);
  co_await b.kill(info->id);
}

TEST_F(E2bBackendTest, HttpAndConnectErrorsAreMapped) {
  auto b = backend();
  auto wrong = backend(5s, "e2b_wrong_key");
  run(http_errors(*b, *wrong, fake_));
}

asio::awaitable<void> deadlines(Backend& b, FakeE2b& fake) {
  sandbox::CreateOptions c31;
  auto info = co_await b.create(c31);
  CO_ASSERT(info.has_value());

  fake.script(FakeE2bFault::hanging("/v2/sandboxes"));
  auto t0 = Clock::now();
  sandbox::CreateOptions c32;
  auto hung = co_await b.create(c32);
  EXPECT_EQ(hung.error().code, Errc::timeout);
  EXPECT_LT(Clock::now() - t0, 3s);

  fake.script(FakeE2bFault::hanging("/filesystem.Filesystem/ListDir"));
  t0 = Clock::now();
  std::string s33 = "";
  EXPECT_EQ((co_await b.list_files(info->id, s33, 1)).error().code, Errc::timeout);
  EXPECT_LT(Clock::now() - t0, 3s);

  fake.script(FakeE2bFault::hanging("/process.Process/Start"));
  ExecOptions x34 = cmd("true");
  EXPECT_EQ((co_await b.start(info->id, x34)).error().code, Errc::timeout);

  // The command's own timeout: SIGKILL, reported as timed out with 128+9.
  t0 = Clock::now();
  ExecOptions x35 = cmd("echo started; sleep 30", 700ms);
  auto p = co_await must_start(b, info->id, x35);
  auto c = co_await collect(*p);
  CO_ASSERT(c.exited.has_value());
  EXPECT_TRUE(c.exited->timed_out);
  EXPECT_EQ(c.exited->exit_code, 137);
  EXPECT_EQ(c.out, "started\n");
  EXPECT_LT(Clock::now() - t0, 5s);
  co_await b.kill(info->id);
}

TEST_F(E2bBackendTest, DeadlinesOnHangingCallsAndCommands) {
  auto b = backend(1s);
  run(deadlines(*b, fake_), 30s);
  EXPECT_GE(count("/process.Process/SendSignal"), 1u);
}

// An envd older than 0.5.2 has no CloseStdin (the SDK's own check): stdin_data is refused
// before anything runs; commands without it work.
class OldEnvdTest : public E2bBackendTest {
 protected:
  OldEnvdTest() : E2bBackendTest(old_envd()) {}
  static FakeE2bOptions old_envd() {
    FakeE2bOptions o;
    o.envd_version = "0.4.9";
    return o;
  }
};

asio::awaitable<void> without_close_stdin(Backend& b, FakeE2b& fake) {
  sandbox::CreateOptions none;
  auto info = co_await b.create(none);
  CO_ASSERT(info.has_value());
  ExecOptions with_stdin = cmd("cat");
  with_stdin.stdin_data = "x";
  auto refused = co_await b.start(info->id, with_stdin);
  EXPECT_EQ(refused.error().code, Errc::conflict);
  EXPECT_EQ(fake.sandboxes()[0].processes, 0u);
  ExecOptions plain = cmd("echo ok");
  auto p = co_await must_start(b, info->id, plain);
  auto c = co_await collect(*p);
  EXPECT_EQ(c.out, "ok\n");
  EXPECT_EQ((co_await p->close_stdin()).error().code, Errc::conflict);
  co_await b.kill(info->id);
}

TEST_F(OldEnvdTest, NoCloseStdinBefore052) {
  auto b = backend();
  run(without_close_stdin(*b, fake_));
}

}  // namespace
}  // namespace agentd::test
