// Tool results, cancellation, and the MCP catalog as a tool source.
#include "agentd/agent/tools.hpp"

#include <boost/asio/use_awaitable.hpp>

#include "agentd/core/glob.hpp"
#include "agentd/mcp/multiplexer.hpp"

namespace agentd::agent {

namespace asio = boost::asio;

ToolResult ToolResult::error(std::string message) {
  ToolResult r;
  r.is_error = true;
  r.content = json::array({{{"type", "text"}, {"text", std::move(message)}}});
  return r;
}

std::string ToolResult::text() const {
  std::string out;
  auto add = [&out](const std::string& s) {
    if (!out.empty()) out += "\n";
    out += s;
  };
  if (content.is_array()) {
    for (const auto& block : content) {
      if (!block.is_object()) continue;
      auto type = block.value("type", "");
      if (type == "text") {
        add(block.value("text", ""));
      } else if (type == "image" || type == "audio") {
        add("[" + type + " " + block.value("mimeType", "") + ", shown to the user as an artifact]");
      } else if (type == "resource") {
        const auto& r = block.contains("resource") ? block["resource"] : json::object();
        if (r.contains("text") && r["text"].is_string()) {
          add(r["text"].get<std::string>());
        } else {
          add("[resource " + r.value("uri", "") + "]");
        }
      } else if (type == "resource_link") {
        add("[resource link " + block.value("uri", "") + " " + block.value("name", "") + "]");
      }
    }
  }
  if (out.empty() && !structured.is_null()) out = structured.dump();
  return out;
}

void Cancellation::cancel() {
  if (cancelled_) return;
  cancelled_ = true;
  auto fns = std::move(fns_);
  fns_.clear();
  for (auto& [h, fn] : fns) fn();
}

std::size_t Cancellation::on_cancel(std::function<void()> fn) {
  if (cancelled_) {
    fn();
    return 0;
  }
  fns_.emplace_back(++next_, std::move(fn));
  return next_;
}

void Cancellation::forget(std::size_t handle) {
  std::erase_if(fns_, [handle](const auto& p) { return p.first == handle; });
}

namespace {

class McpTools final : public ToolSource {
 public:
  explicit McpTools(mcp::Multiplexer& mux) : mux_(mux) {}

  std::vector<ToolSpec> list(const ToolFilter& filter) const override {
    std::vector<ToolSpec> out;
    if (filter.servers.empty()) return out;
    auto visible = [&filter](const std::string& server, const std::string& tool) {
      bool server_ok = false;
      for (const auto& s : filter.servers) server_ok = server_ok || s == "*" || s == server;
      if (!server_ok) return false;
      return !filter.client_allows || filter.client_allows("mcp:" + server + "/" + tool);
    };
    for (auto& t : mux_.tools(visible)) {
      ToolSpec spec;
      spec.name = t.value("name", "");
      if (!filter.globs.empty()) {
        bool match = false;
        for (const auto& g : filter.globs) match = match || core::glob_match(g, spec.name);
        if (!match) continue;
      }
      spec.description = t.value("description", "");
      if (auto it = t.find("inputSchema"); it != t.end()) spec.input_schema = *it;
      if (auto it = t.find("annotations"); it != t.end()) spec.annotations = *it;
      spec.source = "mcp";
      out.push_back(std::move(spec));
    }
    return out;
  }

  bool owns(const std::string& name) const override { return mux_.resolve(name).has_value(); }

  asio::awaitable<ToolResult> call(const std::string& name, json arguments,
                                   ToolContext ctx) override {
    mcp::ToolCall call;
    call.client = ctx.client;
    call.request_id = ctx.request_id;
    call.on_progress = ctx.on_progress;
    if (ctx.ask) {
      call.on_elicit = [ask = ctx.ask](json params) -> asio::awaitable<mcp::RpcResult<json>> {
        return relay(ask, std::move(params));
      };
    }
    auto token = std::make_shared<mcp::CancelToken>();
    std::size_t handle = 0;
    if (ctx.cancel) handle = ctx.cancel->on_cancel([token] { token->cancel(); });
    auto r = co_await mux_.call_tool(name, std::move(arguments), std::move(call), token);
    if (ctx.cancel) ctx.cancel->forget(handle);
    if (!r) {
      co_return ToolResult::error("tool " + name + " failed: " + r.error().message +
                                  " (JSON-RPC " + std::to_string(r.error().code) + ")");
    }
    ToolResult out;
    if (auto it = r->find("content"); it != r->end() && it->is_array()) out.content = *it;
    if (auto it = r->find("structuredContent"); it != r->end()) out.structured = *it;
    out.is_error = r->value("isError", false);
    co_return out;
  }

 private:
  static asio::awaitable<mcp::RpcResult<json>> relay(
      std::function<asio::awaitable<json>(json)> ask, json params) {
    co_return co_await ask(std::move(params));
  }
  mcp::Multiplexer& mux_;
};

}  // namespace

std::unique_ptr<ToolSource> make_mcp_tools(mcp::Multiplexer& mux) {
  return std::make_unique<McpTools>(mux);
}

}  // namespace agentd::agent
