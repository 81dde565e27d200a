// The `local` sandbox backend against the real bubblewrap: commands (streaming, stdin, exit
// codes, signals, deadlines), isolation, limits, cleanup (after kill, after a simulated crash)
// and hostile file paths.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "agentd/core/metrics.hpp"
#include "agentd/sandbox/manager.hpp"
#include "support/coro.hpp"

namespace agentd::test {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using sandbox::ExecEvent;
using sandbox::ExecOptions;
using Clock = std::chrono::steady_clock;

#define CO_ASSERT_OK(r)                                          \
  do {                                                           \
    if (!(r)) {                                                  \
      ADD_FAILURE() << #r << " failed: " << (r).error().message; \
      co_return;                                                 \
    }                                                            \
  } while (0)

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

asio::awaitable<void> pause_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

asio::awaitable<void> kill_all(sandbox::Backend* b) {
  auto list = co_await b->list();
  CO_ASSERT(list);
  for (const auto& i : *list) {
    auto k = co_await b->kill(i.id);
    EXPECT_TRUE(k) << i.id;
  }
}

class SandboxLocal : public ::testing::Test {
 public:
  void SetUp() override {
    ASSERT_EQ(::access("/usr/bin/bwrap", X_OK), 0) << "no bubblewrap (scripts/test installs it)";
    char tmpl[] = "/tmp/agentd-sbx-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base = tmpl;
    config.enabled = true;
    config.local.root_dir = (base / "sandboxes").string();
    config.local.read_only = {"/usr", "/etc"};
    config.local.cpu_seconds = 2;
    config.local.memory_bytes = 128ull << 20;
    config.local.max_processes = 64;
    config.local.max_file_size = 8ull << 20;
    config.local.max_disk = 4ull << 20;
    backend = sandbox::make_local_backend(io.get_executor(), config, metrics);
  }
  void TearDown() override {
    if (backend) run(kill_all(backend.get()));  // cgroups are per sandbox: leave none behind
    backend.reset();
    io.restart();
    io.poll();
    std::error_code ec;
    if (!base.empty()) fs::remove_all(base, ec);
  }
  void run(asio::awaitable<void> work, std::chrono::milliseconds limit = 30s) {
    run_coroutine(io, std::move(work), limit);
  }
  fs::path dir_of(const std::string& id) const { return fs::path(config.local.root_dir) / id; }
  std::vector<std::string> cgroups_of(const std::string& id) const {
    auto j = nlohmann::json::parse(slurp(dir_of(id) / "sandbox.json"), nullptr, false);
    std::vector<std::string> out;
    if (j.is_object() && j.contains("cgroups")) out = j["cgroups"].get<std::vector<std::string>>();
    return out;
  }

  asio::io_context io;
  core::Registry metrics;
  sandbox::Config config;
  fs::path base;
  std::unique_ptr<sandbox::Backend> backend;
};

asio::awaitable<std::string> make(sandbox::Backend& b, bool network = false) {
  sandbox::CreateOptions o;
  o.owner = "test";
  o.network = network;
  o.env["GREETING"] = "hello";
  auto r = co_await b.create(std::move(o));
  EXPECT_TRUE(r) << (r ? "" : r.error().message);
  co_return r ? r->id : std::string();
}

asio::awaitable<sandbox::Result<sandbox::ExecResult>> sh(sandbox::Backend& b, const std::string& id,
                                                         std::string cmd, std::chrono::milliseconds timeout = 20s) {
  ExecOptions o;
  o.cmd = std::move(cmd);
  o.timeout = timeout;
  co_return co_await sandbox::run(b, id, std::move(o));
}

// --- commands ---

asio::awaitable<void> streams_in_order(SandboxLocal* t) {
  auto id = co_await make(*t->backend);
  CO_ASSERT(!id.empty());
  ExecOptions o;
  o.cmd = "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three; echo $GREETING-$X; pwd";
  o.env["X"] = "x";
  auto p = co_await t->backend->start(id, std::move(o));
  CO_ASSERT_OK(p);
  std::vector<ExecEvent> events;
  std::vector<Clock::time_point> when;
  for (;;) {
    auto e = co_await (*p)->next();
    CO_ASSERT_OK(e);
    if (!*e) break;
    events.push_back(**e);
    when.push_back(Clock::now());
  }
  CO_ASSERT(events.size() >= 4);
  EXPECT_EQ(events.front().kind, ExecEvent::Kind::started);
  EXPECT_EQ(events.back().kind, ExecEvent::Kind::exited);
  EXPECT_EQ(events.back().exit_code, 0);
  // Pieces may arrive split or joined: tag only the changes of stream.
  std::string seq;
  auto last = ExecEvent::Kind::started;
  for (const auto& e : events) {
    if (e.kind != ExecEvent::Kind::stdout_data && e.kind != ExecEvent::Kind::stderr_data) continue;
    if (e.kind != last) seq += e.kind == ExecEvent::Kind::stdout_data ? "[out]" : "[err]";
    last = e.kind;
    seq += e.data;
  }
  EXPECT_EQ(seq, "[out]one\n[err]two\n[out]three\nhello-x\n/home/user\n");
  // Streamed as it happened: "one" came well before the end.
  EXPECT_GT(when.back() - when[1], 400ms);
}
TEST_F(SandboxLocal, StreamsOutputInOrder) { run(streams_in_order(this)); }

// The command runs in exactly the environment agentd sets: a PATH from the sandbox's or the
// command's env is the one it sees (a login shell would let the host's /etc/profile replace it).
asio::awaitable<void> environment_is_agentds(SandboxLocal* t, std::string* out) {
  sandbox::CreateOptions c;
  c.owner = "test";
  c.env["PATH"] = "/opt/tools/bin:/usr/bin:/bin";
  auto sb = co_await t->backend->create(std::move(c));
  CO_ASSERT_OK(sb);
  auto r = co_await sh(*t->backend, sb->id, "echo \"$PATH|$HOME|$USER\"");
  CO_ASSERT_OK(r);
  EXPECT_EQ(r->exit_code, 0);
  *out = r->stdout_text;
  ExecOptions o;
  o.cmd = "echo \"$PATH\"";
  o.env["PATH"] = "/usr/local/bin:/usr/bin";
  auto mine = co_await sandbox::run(*t->backend, sb->id, std::move(o));
  CO_ASSERT_OK(mine);
  *out += mine->stdout_text;
}
TEST_F(SandboxLocal, CommandsSeeTheEnvironmentAgentdSets) {
  std::string out;
  run(environment_is_agentds(this, &out));
  EXPECT_EQ(out, "/opt/tools/bin:/usr/bin:/bin|/home/user|user\n/usr/local/bin:/usr/bin\n");
}

TEST_F(SandboxLocal, LoginShellRunsTheHostsProfile) {
  config.local.login_shell = true;
  backend = sandbox::make_local_backend(io.get_executor(), config, metrics);
  std::string out;
  run(environment_is_agentds(this, &out));
  // Debian's /etc/profile sets PATH for every login shell, over what agentd passed.
  EXPECT_EQ(out.find("/opt/tools/bin"), std::string::npos) << out;
  EXPECT_NE(out.find("|/home/user|user\n"), std::string::npos) << out;
}

asio::awaitable<void> exit_codes_and_stdin(SandboxLocal* t) {
  auto id = co_await make(*t->backend);
  CO_ASSERT(!id.empty());
  auto r = co_await sh(*t->backend, id, "exit 3");
  CO_ASSERT_OK(r);
  EXPECT_EQ(r->exit_code, 3);
  r = co_await sh(*t->backend, id, "kill -TERM $$");
  CO_ASSERT_OK(r);
  EXPECT_EQ(r->exit_code, 128 + SIGTERM);

  ExecOptions o;
  o.cmd = "cat; echo end";
  o.stdin_data = "from stdin\n";
  auto c = co_await sandbox::run(*t->backend, id, std::move(o));
  CO_ASSERT_OK(c);
  EXPECT_EQ(c->stdout_text, "from stdin\nend\n");

  ExecOptions i;
  i.cmd = "read x; echo got:$x; cat";
  auto p = co_await t->backend->start(id, std::move(i));
  CO_ASSERT_OK(p);
  auto s = co_await (*p)->send_stdin("abc\n");
  CO_ASSERT_OK(s);
  std::string out;
  while (out.find("got:abc") == std::string::npos) {
    auto e = co_await (*p)->next();
    CO_ASSERT_OK(e);
    CO_ASSERT(*e && (*e)->kind != ExecEvent::Kind::exited);
    out += (*e)->data;
  }
  s = co_await (*p)->send_stdin("more\n");
  CO_ASSERT_OK(s);
  s = co_await (*p)->close_stdin();
  CO_ASSERT_OK(s);
  int code = -1;
  for (;;) {
    auto e = co_await (*p)->next();
    CO_ASSERT_OK(e);
    if (!*e) break;
    out += (*e)->data;
    if ((*e)->kind == ExecEvent::Kind::exited) code = (*e)->exit_code;
  }
  EXPECT_EQ(out, "got:abc\nmore\n");
  EXPECT_EQ(code, 0);
  auto again = co_await (*p)->send_stdin("x");
  EXPECT_FALSE(again);
}
TEST_F(SandboxLocal, ExitCodesAndStdin) { run(exit_codes_and_stdin(this)); }

asio::awaitable<int> exit_code_of(sandbox::Process& p) {
  int code = -1;
  for (;;) {
    auto e = co_await p.next();
    if (!e || !*e) break;
    if ((*e)->kind == ExecEvent::Kind::exited) code = (*e)->exit_code;
  }
  co_return code;
}

asio::awaitable<void> signals(SandboxLocal* t) {
  auto id = co_await make(*t->backend);
  CO_ASSERT(!id.empty());
  for (int sig : {SIGTERM, SIGINT, SIGKILL}) {
    ExecOptions o;
    o.cmd = "echo ready; sleep 30";
    auto p = co_await t->backend->start(id, std::move(o));
    CO_ASSERT_OK(p);
    for (;;) {  // wait until the command runs
      auto e = co_await (*p)->next();
      CO_ASSERT_OK(e);
      CO_ASSERT(*e);
      if ((*e)->kind == ExecEvent::Kind::stdout_data) break;
    }
    auto s = co_await (*p)->signal(sig);
    CO_ASSERT_OK(s);
    int code = co_await exit_code_of(**p);
    EXPECT_EQ(code, 128 + sig) << "signal " << sig;
    auto late = co_await (*p)->signal(SIGTERM);
    EXPECT_FALSE(late);
  }
}
TEST_F(SandboxLocal, SignalsReachTheCommand) { run(signals(this)); }

asio::awaitable<void> command_deadline(SandboxLocal* t) {
  auto id = co_await make(*t->backend);
  CO_ASSERT(!id.empty());
  auto r = co_await sh(*t->backend, id, "echo start; sleep 30 & sleep 30", 500ms);
  CO_ASSERT_OK(r);
  EXPECT_TRUE(r->timed_out);
  EXPECT_EQ(r->exit_code, 128 + SIGKILL);
  EXPECT_EQ(r->stdout_text, "start\n");
  EXPECT_LT(r->duration, std::chrono::seconds(5));
  auto after = co_await sh(*t->backend, id, "ps -e --no-headers | grep -c sleep");
  CO_ASSERT_OK(after);
  EXPECT_EQ(after->stdout_text, "0\n");  // each command has its own pid namespace
}
TEST_F(SandboxLocal, DeadlineKillsTheCommand) { run(command_deadline(this)); }

// --- isolation ---

asio::awaitable<void> isolation(SandboxLocal* t, std::string host_file) {
  auto id = co_await make(*t->backend);
  CO_ASSERT(!id.empty());
  auto r = co_await sh(*t->backend, id,
                       "id -u; touch /usr/x 2>/dev/null && echo usr-writable; "
                       "echo x >> /etc/passwd 2>/dev/null && echo etc-writable; "
                       "test -e '" + host_file + "' && echo host-visible; "
                       "test -e /root && ls /root 2>/dev/null | head -1; "
                       "touch /home/user/ok /tmp/ok && echo work-writable");
  CO_ASSERT_OK(r);
  EXPECT_EQ(r->stdout_text, "1000\nwork-writable\n");
  EXPECT_TRUE(fs::exists(t->dir_of(id) / "work" / "ok"));
  EXPECT_TRUE(fs::exists(t->dir_of(id) / "tmp" / "ok"));
  EXPECT_FALSE(fs::exists("/usr/x"));
  // Host processes: only the sandbox's own are visible.
  auto ps = co_await sh(*t->backend, id, "ps -e --no-headers -o pid,comm");
  CO_ASSERT_OK(ps);
  int lines = 0;
  std::istringstream in(ps->stdout_text);
  for (std::string l; std::getline(in, l);) ++lines;
  EXPECT_LE(lines, 4) << ps->stdout_text;
  EXPECT_EQ(ps->stdout_text.find("sandbox_local"), std::string::npos) << ps->stdout_text;
}
TEST_F(SandboxLocal, HostIsNotVisibleNorWritable) {
  auto host_file = base / "secret.txt";
  std::ofstream(host_file) << "secret";
  run(isolation(this, host_file.string()));
}

asio::awaitable<void> no_network(SandboxLocal* t) {
  asio::ip::tcp::acceptor acceptor(co_await asio::this_coro::executor,
                                   asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  auto port = std::to_string(acceptor.local_endpoint().port());
  for (bool ask : {false, true}) {  // asking for the network does not help: not allowed
    auto id = co_await make(*t->backend, ask);
    CO_ASSERT(!id.empty());
    auto r = co_await sh(*t->backend, id, "echo hi > /dev/tcp/127.0.0.1/" + port + " && echo connected", 10s);
    CO_ASSERT_OK(r);
    EXPECT_NE(r->exit_code, 0);
    EXPECT_EQ(r->stdout_text, "");
  }
  acceptor.non_blocking(true);
  boost::system::error_code ec;
  asio::ip::tcp::socket s(co_await asio::this_coro::executor);
  acceptor.accept(s, ec);
  EXPECT_EQ(ec, asio::error::would_block);  // nobody connected
}
TEST_F(SandboxLocal, NoNetwork) { run(no_network(this)); }

// --- limits ---

asio::awaitable<void> fork_bomb(SandboxLocal* t) {
  auto id = co_await make(*t->backend);
  CO_ASSERT(!id.empty());
  auto r = co_await sh(*t->backend, id, "b() { b | b & }; b; sleep 5", 2s);
  CO_ASSERT_OK(r);
  EXPECT_TRUE(r->timed_out || r->exit_code != 0);
  int checked = 0;
  for (const auto& cg : t->cgroups_of(id)) {
    if (!fs::exists(fs::path(cg) / "pids.max")) continue;
    auto events = slurp(fs::path(cg) / "pids.events");
    CO_ASSERT(events.starts_with("max "));
    EXPECT_GT(std::stoi(events.substr(4)), 0) << "the pids limit was never hit";
    ++checked;
    // All gone with the namespace: when bwrap is SIGKILLed at the deadline, the kernel kills
    // the namespace's processes, and a few hundred of them take a moment to exit (CI saw one
    // still listed right after the command's exit event): allow that, not more.
    asio::steady_timer wait(co_await asio::this_coro::executor);
    for (int i = 0; i < 100 && !slurp(fs::path(cg) / "cgroup.procs").empty(); ++i) {
      wait.expires_after(20ms);
      co_await wait.async_wait(asio::use_awaitable);
    }
    EXPECT_EQ(slurp(fs::path(cg) / "cgroup.procs"), "");
  }
  if (checked == 0) std::cerr << "no pids cgroup on this host: contained by RLIMIT_NPROC\n";
  auto after = co_await sh(*t->backend, id, "echo fine");
  CO_ASSERT_OK(after);
  EXPECT_EQ(after->stdout_text, "fine\n");
}
TEST_F(SandboxLocal, ForkBombIsContained) { run(fork_bomb(this)); }

asio::awaitable<void> memory_hog(SandboxLocal* t) {
  auto id = co_await make(*t->backend);
  CO_ASSERT(!id.empty());
  // ~400 MB in a shell variable, over the 128 MiB limit.
  auto r = co_await sh(*t->backend, id, "a=$(head -c 400000000 /dev/zero | tr '\\0' x); echo ${#a}", 20s);
  CO_ASSERT_OK(r);
  EXPECT_NE(r->stdout_text, "400000000\n");
  EXPECT_NE(r->exit_code, 0);
  EXPECT_FALSE(r->timed_out);
  for (const auto& cg : t->cgroups_of(id)) {
    if (!fs::exists(fs::path(cg) / "memory.limit_in_bytes")) continue;
    EXPECT_EQ(r->exit_code, 128 + SIGKILL);  // the cgroup's OOM killer
    auto oom = slurp(fs::path(cg) / "memory.oom_control");
    EXPECT_NE(oom.find("oom_kill 1"), std::string::npos) << oom;
  }
}
TEST_F(SandboxLocal, MemoryHogIsKilled) { run(memory_hog(this)); }

asio::awaitable<void> cpu_loop(SandboxLocal* t) {
  auto id = co_await make(*t->backend);
  CO_ASSERT(!id.empty());
  auto r = co_await sh(*t->backend, id, "while :; do :; done", 20s);
  CO_ASSERT_OK(r);
  EXPECT_FALSE(r->timed_out);
  EXPECT_TRUE(r->exit_code == 128 + SIGXCPU || r->exit_code == 128 + SIGKILL) << r->exit_code;
}
TEST_F(SandboxLocal, InfiniteLoopHitsTheCpuLimit) { run(cpu_loop(this)); }

asio::awaitable<void> big_output(SandboxLocal* t) {
  auto id = co_await make(*t->backend);
  CO_ASSERT(!id.empty());
  // Backpressure: nobody reads, so the command waits on its pipe instead of agentd buffering.
  ExecOptions o;
  o.cmd = "head -c 100000000 /dev/zero; echo done >&2";
  auto p = co_await t->backend->start(id, std::move(o));
  CO_ASSERT_OK(p);
  co_await pause_for(500ms);
  siginfo_t info{};
  EXPECT_EQ(::waitid(P_PID, static_cast<id_t>((*p)->pid()), &info, WEXITED | WNOHANG | WNOWAIT), 0);
  EXPECT_EQ(info.si_pid, 0) << "the command ended although nobody read its output";
  p->reset();  // dropped: drained in the background, the command still ends
  ExecOptions o2;
  o2.cmd = "head -c 100000000 /dev/zero; echo done >&2";
  o2.max_output = 1 << 20;
  auto r = co_await sandbox::run(*t->backend, id, std::move(o2));
  CO_ASSERT_OK(r);
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_TRUE(r->truncated);
  EXPECT_EQ(r->stdout_text.size() + r->stderr_text.size(), 1u << 20);
}
TEST_F(SandboxLocal, HundredMegabytesOfOutputAreBounded) { run(big_output(this)); }

// --- cleanup ---

asio::awaitable<void> kill_cleans_up(SandboxLocal* t) {
  auto id = co_await make(*t->backend);
  CO_ASSERT(!id.empty());
  ExecOptions o;
  o.cmd = "sleep 100 & echo ready; sleep 100";
  auto p = co_await t->backend->start(id, std::move(o));
  CO_ASSERT_OK(p);
  auto e = co_await (*p)->next();  // started
  CO_ASSERT_OK(e);
  auto cgroups = t->cgroups_of(id);
  int pid = (*p)->pid();
  auto k = co_await t->backend->kill(id);
  CO_ASSERT_OK(k);
  int code = co_await exit_code_of(**p);
  EXPECT_EQ(code, 128 + SIGKILL);
  EXPECT_FALSE(fs::exists(t->dir_of(id)));
  for (const auto& cg : cgroups) EXPECT_FALSE(fs::exists(cg)) << cg;
  EXPECT_NE(::kill(pid, 0), 0);  // reaped
  auto list = co_await t->backend->list();
  CO_ASSERT_OK(list);
  EXPECT_TRUE(list->empty());
  auto gone = co_await sh(*t->backend, id, "true");
  CO_ASSERT(!gone);
  EXPECT_EQ(gone.error().code, Errc::not_found);
}
TEST_F(SandboxLocal, KillLeavesNothing) { run(kill_cleans_up(this)); }

asio::awaitable<void> leftovers_first(SandboxLocal* t, std::string* id, std::vector<std::string>* cgroups) {
  *id = co_await make(*t->backend);
  CO_ASSERT(!id->empty());
  auto w = co_await t->backend->write_file(*id, "notes.txt", std::string("kept"));
  CO_ASSERT_OK(w);
  *cgroups = t->cgroups_of(*id);
}
asio::awaitable<void> leftovers_second(SandboxLocal* t, std::string id) {
  auto list = co_await t->backend->list();
  CO_ASSERT_OK(list);
  CO_ASSERT(list->size() == 1);
  EXPECT_EQ((*list)[0].id, id);
  EXPECT_EQ((*list)[0].owner, "test");
  auto k = co_await t->backend->kill(id);
  CO_ASSERT_OK(k);
  list = co_await t->backend->list();
  CO_ASSERT_OK(list);
  EXPECT_TRUE(list->empty());
}
TEST_F(SandboxLocal, LeftoversOfAnEarlierRunAreRemoved) {
  std::string id;
  std::vector<std::string> cgroups;
  run(leftovers_first(this, &id, &cgroups));
  ASSERT_FALSE(id.empty());
  backend.reset();  // no kill(): what a crash leaves
  EXPECT_TRUE(fs::exists(dir_of(id) / "work" / "notes.txt"));
  backend = sandbox::make_local_backend(io.get_executor(), config, metrics);
  run(leftovers_second(this, id));
  EXPECT_FALSE(fs::exists(dir_of(id)));
  for (const auto& cg : cgroups) EXPECT_FALSE(fs::exists(cg)) << cg;
}

asio::awaitable<void> sandbox_timeout(SandboxLocal* t) {
  sandbox::CreateOptions a;
  a.timeout = 300ms;
  auto short_lived = co_await t->backend->create(std::move(a));
  CO_ASSERT_OK(short_lived);
  sandbox::CreateOptions b;
  b.timeout = 300ms;
  auto extended = co_await t->backend->create(std::move(b));
  CO_ASSERT_OK(extended);
  auto s = co_await t->backend->set_timeout(extended->id, 20s);
  CO_ASSERT_OK(s);
  auto until = Clock::now() + 5s;
  while (fs::exists(t->dir_of(short_lived->id)) && Clock::now() < until) co_await pause_for(50ms);
  EXPECT_FALSE(fs::exists(t->dir_of(short_lived->id)));
  EXPECT_TRUE(fs::exists(t->dir_of(extended->id)));
  auto r = co_await sh(*t->backend, extended->id, "echo alive");
  CO_ASSERT_OK(r);
  EXPECT_EQ(r->stdout_text, "alive\n");
  auto p = co_await t->backend->pause(extended->id);
  CO_ASSERT(!p);
  EXPECT_EQ(p.error().code, Errc::conflict);
  EXPECT_FALSE(t->backend->desktop_url(extended->id));
}
TEST_F(SandboxLocal, SandboxTimeoutKillsIt) { run(sandbox_timeout(this)); }

// --- files ---

asio::awaitable<void> files(SandboxLocal* t) {
  auto id = co_await make(*t->backend);
  CO_ASSERT(!id.empty());
  auto& b = *t->backend;
  std::string path = "src/app/main.py";
  std::string body = "print('hi')\n";
  auto w = co_await b.write_file(id, path, body);
  CO_ASSERT_OK(w);
  auto r = co_await sh(b, id, "cat /home/user/src/app/main.py; echo made > src/out.txt");
  CO_ASSERT_OK(r);
  EXPECT_EQ(r->stdout_text, body);
  std::string abs = "/home/user/src/out.txt";
  auto back = co_await b.read_file(id, abs, 1024);
  CO_ASSERT_OK(back);
  EXPECT_EQ(*back, "made\n");
  std::string small_path = "src/app/main.py";
  auto small = co_await b.read_file(id, small_path, 3);
  CO_ASSERT(!small);
  EXPECT_EQ(small.error().code, Errc::payload_too_large);
  std::string root = "";
  auto l = co_await b.list_files(id, root, 3);
  CO_ASSERT_OK(l);
  std::vector<std::string> paths;
  for (const auto& e : *l) paths.push_back(e.path + ":" + e.type);
  EXPECT_EQ(paths, (std::vector<std::string>{"/home/user/src:dir", "/home/user/src/app:dir",
                                             "/home/user/src/app/main.py:file", "/home/user/src/out.txt:file"}));
  std::string src = "src";
  auto rm = co_await b.remove(id, src);
  CO_ASSERT_OK(rm);
  auto missing = co_await b.read_file(id, abs, 1024);
  CO_ASSERT(!missing);
  EXPECT_EQ(missing.error().code, Errc::not_found);
  // Disk quota (4 MiB): a 3 MiB file fits once, not twice.
  std::string big(3u << 20, 'x');
  std::string one = "one.bin", two = "two.bin";
  auto w1 = co_await b.write_file(id, one, big);
  CO_ASSERT_OK(w1);
  auto w1again = co_await b.write_file(id, one, big);  // replacing it is fine
  CO_ASSERT_OK(w1again);
  auto w2 = co_await b.write_file(id, two, big);
  CO_ASSERT(!w2);
  EXPECT_EQ(w2.error().code, Errc::payload_too_large);
}
TEST_F(SandboxLocal, FilesRoundTripWithQuota) { run(files(this)); }

asio::awaitable<void> hostile_paths(SandboxLocal* t) {
  auto id = co_await make(*t->backend);
  CO_ASSERT(!id.empty());
  auto& b = *t->backend;
  auto r = co_await sh(b, id, "ln -s /etc etc_link; ln -s /etc/passwd pw; mkdir d; ln -s .. d/up");
  CO_ASSERT_OK(r);
  const std::vector<std::string> bad = {
      "../x", "../../etc/passwd", "/etc/passwd", "/home/user/../../etc/passwd", "/home/userx/a",
      "/tmp/x", "etc_link/passwd", "etc_link", "pw", "d/up/d/up/x", "d/up",
      std::string("a\0b", 3), std::string(5000, 'a'), std::string(300, 'n'),
  };
  std::string data = "pwned";
  for (const auto& p : bad) {
    auto rd = co_await b.read_file(id, p, 1 << 20);
    EXPECT_FALSE(rd) << "read " << p.substr(0, 60);
    if (!rd) {
      EXPECT_EQ(rd.error().code, Errc::bad_request) << p.substr(0, 60) << ": " << rd.error().message;
    }
    auto wr = co_await b.write_file(id, p, data);
    EXPECT_FALSE(wr) << "write " << p.substr(0, 60);
    if (!wr) {
      EXPECT_EQ(wr.error().code, Errc::bad_request) << p.substr(0, 60) << ": " << wr.error().message;
    }
    auto ls = co_await b.list_files(id, p, 1);
    EXPECT_FALSE(ls) << "list " << p.substr(0, 60);
  }
  std::string empty;
  auto rm_root = co_await b.remove(id, empty);
  EXPECT_FALSE(rm_root);
  // A symlink itself can be removed; its target stays.
  std::string link = "etc_link";
  auto rm = co_await b.remove(id, link);
  CO_ASSERT_OK(rm);
  EXPECT_TRUE(fs::exists("/etc/passwd"));
  EXPECT_EQ(slurp("/etc/passwd").find("pwned"), std::string::npos);
  // Listing shows symlinks as such without following them.
  std::string here = ".";
  auto l = co_await b.list_files(id, here, 5);
  CO_ASSERT_OK(l);
  for (const auto& e : *l) {
    if (e.name == "pw" || e.name == "up") {
      EXPECT_EQ(e.type, "symlink");
    }
    EXPECT_TRUE(e.path.starts_with("/home/user/")) << e.path;
  }
  // Hostile ids never reach the file system.
  auto k = co_await b.kill("../../tmp");
  CO_ASSERT(!k);
  EXPECT_EQ(k.error().code, Errc::not_found);
}
TEST_F(SandboxLocal, HostilePathsAreRefused) { run(hostile_paths(this)); }

}  // namespace
}  // namespace agentd::test
