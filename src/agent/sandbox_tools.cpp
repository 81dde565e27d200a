// Sandboxes as a tool source: sandbox__exec, sandbox__write_file, sandbox__read_file,
// sandbox__list_files, sandbox__desktop. The sandbox is the session's (sandbox.scope: session,
// for an intent with a session_id; killed once the session has not used it for session_idle)
// or the intent's own (killed when the intent ends); created on first use, or pre-warmed when a
// plan needs one.
#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/this_coro.hpp>
#include <unordered_map>

#include "agentd/agent/tools.hpp"
#include "agentd/sandbox/manager.hpp"

namespace agentd::agent {
namespace {

namespace asio = boost::asio;
constexpr const char* kPrefix = "sandbox__";

json schema(json properties, json required) {
  return {{"type", "object"}, {"properties", std::move(properties)}, {"required", std::move(required)},
          {"additionalProperties", false}};
}

ToolResult text_result(std::string text, bool is_error = false) {
  ToolResult r;
  r.is_error = is_error;
  r.content = json::array({{{"type", "text"}, {"text", std::move(text)}}});
  return r;
}

std::string mime_for(const std::string& path) {
  auto dot = path.rfind('.');
  std::string ext = dot == std::string::npos ? "" : path.substr(dot + 1);
  if (ext == "html" || ext == "htm") return "text/html";
  if (ext == "svg") return "image/svg+xml";
  if (ext == "md") return "text/markdown";
  if (ext == "json") return "application/json";
  if (ext == "png") return "image/png";
  if (ext == "jpg" || ext == "jpeg") return "image/jpeg";
  if (ext == "mmd" || ext == "mermaid") return "text/vnd.mermaid";
  return "text/plain";
}

// A fenced console block for the model and for LobeChat.
std::string console_block(const sandbox::ExecResult& r, const std::string& cmd) {
  std::string out = "```console\n$ " + cmd + "\n" + r.stdout_text;
  if (!r.stderr_text.empty()) out += (out.back() == '\n' ? "" : "\n") + r.stderr_text;
  if (out.back() != '\n') out += "\n";
  out += "```\n";
  out += r.timed_out ? "timed out (killed)" : "exit code " + std::to_string(r.exit_code);
  if (r.truncated) out += "; output truncated";
  return out;
}

class SandboxTools final : public ToolSource {
 public:
  explicit SandboxTools(sandbox::Manager& m) : m_(m) {}

  std::vector<ToolSpec> list(const ToolFilter& filter) const override {
    std::vector<ToolSpec> out;
    if (!filter.sandbox) return out;
    if (filter.client_allows && !filter.client_allows("sandbox")) return out;
    auto add = [&out](const char* name, std::string description, json params, bool read_only) {
      ToolSpec s;
      s.name = std::string(kPrefix) + name;
      s.description = std::move(description);
      s.input_schema = std::move(params);
      s.annotations = {{"readOnlyHint", read_only}};
      s.source = "sandbox";
      out.push_back(std::move(s));
    };
    add("exec", "Run a shell command (bash -c) in your sandbox, an isolated Linux machine with a "
                "persistent work dir. Output is streamed to the user.",
        schema({{"cmd", {{"type", "string"}}},
                {"cwd", {{"type", "string"}}},
                {"stdin", {{"type", "string"}}},
                {"timeout_seconds", {{"type", "integer"}, {"minimum", 1}, {"maximum", 3600}}}},
               {"cmd"}),
        false);
    add("write_file", "Write a text file in the sandbox (relative paths are under the work dir).",
        schema({{"path", {{"type", "string"}}}, {"content", {{"type", "string"}}}}, {"path", "content"}), false);
    add("read_file", "Read a text file from the sandbox; it is also shown to the user.",
        schema({{"path", {{"type", "string"}}}}, {"path"}), true);
    add("list_files", "List a directory of the sandbox.",
        schema({{"path", {{"type", "string"}}}, {"depth", {{"type", "integer"}, {"minimum", 1}, {"maximum", 5}}}}, json::array()),
        true);
    add("desktop", "Open the sandbox's desktop stream for the user (desktop templates only).",
        schema(json::object(), json::array()), true);
    return out;
  }

  bool owns(const std::string& name) const override { return name.starts_with(kPrefix); }

  asio::awaitable<ToolResult> call(const std::string& name, json args, ToolContext ctx) override {
    if (ctx.intent_id.empty()) co_return ToolResult::error("sandbox tools need an intent");
    sandbox::CreateOptions opts;
    opts.timeout = m_.config().default_timeout;
    auto [owner, user] = owner_of(ctx.intent_id, ctx.session_id);
    auto acquired = co_await m_.acquire(owner, std::move(opts), user);
    if (!acquired) co_return ToolResult::error("no sandbox: " + acquired.error().message);
    const auto& info = acquired->info;
    if (acquired->created && ctx.emit) {
      ctx.emit("sandbox.created", {{"sandbox_id", info.id}, {"backend", info.backend},
                                   {"took_ms", acquired->took.count() / 1000.0}});
    }
    std::string tool = name.substr(std::string(kPrefix).size());
    auto& b = m_.backend();
    if (tool == "exec") co_return co_await exec(b, info.id, std::move(args), ctx);
    if (tool == "write_file") {
      std::string path = args.value("path", "");
      auto r = co_await b.write_file(info.id, path, args.value("content", std::string()));
      if (!r) co_return ToolResult::error("write_file " + path + ": " + r.error().message);
      co_return text_result("wrote " + path);
    }
    if (tool == "read_file") {
      std::string path = args.value("path", "");
      auto r = co_await b.read_file(info.id, path, m_.config().max_output);
      if (!r) co_return ToolResult::error("read_file " + path + ": " + r.error().message);
      ToolResult out;
      out.content = json::array({{{"type", "resource"},
                                  {"resource", {{"uri", "sandbox://" + info.id + "/" + path},
                                                {"mimeType", mime_for(path)},
                                                {"text", *r}}}}});
      co_return out;
    }
    if (tool == "list_files") {
      std::string path = args.value("path", ".");
      auto r = co_await b.list_files(info.id, path, args.value("depth", 1));
      if (!r) co_return ToolResult::error("list_files " + path + ": " + r.error().message);
      std::string text;
      for (const auto& e : *r) {
        text += e.type == "dir" ? e.path + "/\n" : e.path + " (" + std::to_string(e.size) + " bytes)\n";
      }
      co_return text_result(text.empty() ? "(empty)" : text);
    }
    if (tool == "desktop") {
      auto url = b.desktop_url(info.id);
      if (!url) co_return ToolResult::error("this sandbox has no desktop (its template has no stream)");
      ToolResult out;
      std::string html = "<iframe src=\"" + *url + "\" style=\"width:100%;height:720px;border:0\" allow=\"clipboard-read; clipboard-write\"></iframe>";
      out.content = json::array({{{"type", "text"}, {"text", "The desktop is shown to the user: " + *url}},
                                 {{"type", "resource"},
                                  {"resource", {{"uri", *url}, {"mimeType", "text/html"}, {"text", html}}}}});
      co_return out;
    }
    co_return ToolResult::error("unknown sandbox tool " + name);
  }

  asio::awaitable<void> release(std::string intent_id) override {
    auto it = sessions_.find(intent_id);
    if (it == sessions_.end()) {
      co_await m_.release(std::move(intent_id));
      co_return;
    }
    std::string owner = std::move(it->second);
    sessions_.erase(it);
    m_.leave(owner, intent_id, m_.config().session_idle);
  }

  void prewarm(const std::string& intent_id, const std::string& session_id) override {
    sandbox::CreateOptions opts;
    opts.timeout = m_.config().default_timeout;
    auto [owner, user] = owner_of(intent_id, session_id);
    m_.prewarm(owner, std::move(opts), user);
  }

 private:
  // Whose sandbox an intent's calls use, and as which user: (session owner, intent) or
  // (intent, none). An intent using its session's sandbox is remembered until it ends.
  std::pair<std::string, std::string> owner_of(const std::string& intent_id, const std::string& session_id) {
    if (session_id.empty() || m_.config().scope != sandbox::Scope::session) return {intent_id, ""};
    std::string owner = "session:" + session_id;
    sessions_[intent_id] = owner;
    return {owner, intent_id};
  }

  asio::awaitable<ToolResult> exec(sandbox::Backend& b, const std::string& id, json args, ToolContext& ctx) {
    sandbox::ExecOptions o;
    o.cmd = args.value("cmd", "");
    if (o.cmd.empty()) co_return ToolResult::error("exec needs a cmd");
    o.cwd = args.value("cwd", "");
    if (args.contains("stdin") && args["stdin"].is_string()) o.stdin_data = args["stdin"].get<std::string>();
    o.timeout = std::chrono::seconds(args.value("timeout_seconds", 60));
    o.max_output = m_.config().max_output;
    auto started = co_await b.start(id, o);
    if (!started) co_return ToolResult::error("exec: " + started.error().message);
    std::shared_ptr<sandbox::Process> proc = std::move(*started);
    std::size_t handle = 0;
    if (ctx.cancel) {
      // Cancelling the call kills the command; its `exited` event then ends the loop below.
      auto ex = co_await asio::this_coro::executor;
      handle = ctx.cancel->on_cancel([proc, ex] {
        asio::co_spawn(ex, kill(proc), [](std::exception_ptr) {});
      });
    }
    sandbox::ExecResult r;
    auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      auto ev = co_await proc->next();
      if (!ev) co_return ToolResult::error("exec: " + ev.error().message);
      if (!*ev) break;
      const auto& e = **ev;
      if (e.kind == sandbox::ExecEvent::Kind::stdout_data || e.kind == sandbox::ExecEvent::Kind::stderr_data) {
        bool out = e.kind == sandbox::ExecEvent::Kind::stdout_data;
        std::string& sink = out ? r.stdout_text : r.stderr_text;
        std::size_t room = o.max_output > r.stdout_text.size() + r.stderr_text.size()
                               ? o.max_output - r.stdout_text.size() - r.stderr_text.size() : 0;
        if (e.data.size() > room) r.truncated = true;
        sink.append(e.data, 0, std::min(room, e.data.size()));
        if (ctx.emit) ctx.emit("tool.output", {{"stream", out ? "stdout" : "stderr"}, {"data", e.data}});
      } else if (e.kind == sandbox::ExecEvent::Kind::exited) {
        r.exit_code = e.exit_code;
        r.timed_out = e.timed_out;
      }
    }
    if (ctx.cancel) ctx.cancel->forget(handle);
    if (ctx.cancel && ctx.cancel->cancelled()) co_return ToolResult::error("cancelled");
    r.duration = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    ToolResult out = text_result(console_block(r, o.cmd), r.exit_code != 0);
    out.sandbox_seconds = std::chrono::duration<double>(r.duration).count();
    co_return out;
  }

  static asio::awaitable<void> kill(std::shared_ptr<sandbox::Process> proc) { (void)co_await proc->signal(9); }

  sandbox::Manager& m_;
  std::unordered_map<std::string, std::string> sessions_;  // intent -> its session's owner key
};

}  // namespace

std::unique_ptr<ToolSource> make_sandbox_tools(sandbox::Manager& manager) {
  return std::make_unique<SandboxTools>(manager);
}

}  // namespace agentd::agent
