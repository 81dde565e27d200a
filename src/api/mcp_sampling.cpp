// sampling/createMessage ⇄ OpenAI chat completions, and the sampler that runs them through
// the AI routing layer.
#include "agentd/api/mcp_sampling.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace agentd::api {
namespace {

using nlohmann::json;
using mcp::RpcError;

RpcError bad(const std::string& what) {
  return RpcError{RpcError::kInvalidParams, "sampling/createMessage: " + what, nullptr};
}

std::string audio_format(const std::string& mime) {
  if (mime == "audio/wav" || mime == "audio/x-wav" || mime == "audio/wave") return "wav";
  if (mime == "audio/mpeg" || mime == "audio/mp3") return "mp3";
  return "";
}

// One MCP content block as an OpenAI content part (text, image, audio).
mcp::RpcResult<json> to_part(const json& block, const std::string& where) {
  auto type = block.value("type", std::string());
  if (type == "text") {
    if (!block.contains("text") || !block["text"].is_string()) return bad(where + ".text must be a string");
    return json{{"type", "text"}, {"text", block["text"]}};
  }
  if (type == "image" || type == "audio") {
    auto data = block.value("data", std::string());
    auto mime = block.value("mimeType", std::string());
    if (data.empty() || mime.empty()) return bad(where + " needs data and mimeType");
    if (type == "image") {
      return json{{"type", "image_url"},
                  {"image_url", {{"url", "data:" + mime + ";base64," + data}}}};
    }
    auto format = audio_format(mime);
    if (format.empty()) return bad(where + ": audio " + mime + " is not supported (wav or mp3)");
    return json{{"type", "input_audio"}, {"input_audio", {{"data", data}, {"format", format}}}};
  }
  return bad(where + ": content type \"" + type + "\" is not supported here");
}

// Text of a tool_result's content blocks (OpenAI tool messages carry text).
std::string result_text(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::string out;
  if (!content.is_array()) return content.dump();
  for (const auto& b : content) {
    if (b.is_object() && b.value("type", std::string()) == "text") {
      if (!out.empty()) out += "\n";
      out += b.value("text", std::string());
    } else {
      if (!out.empty()) out += "\n";
      out += b.dump();
    }
  }
  return out;
}

}  // namespace

mcp::RpcResult<json> sampling_to_chat(const json& params, const std::string& model,
                                      std::int64_t max_tokens_cap) {
  if (!params.is_object()) return bad("params must be an object");
  auto messages = params.find("messages");
  if (messages == params.end() || !messages->is_array() || messages->empty()) {
    return bad("messages must be a non-empty array");
  }
  json out_messages = json::array();
  if (auto sys = params.find("systemPrompt"); sys != params.end() && !sys->is_null()) {
    if (!sys->is_string()) return bad("systemPrompt must be a string");
    out_messages.push_back({{"role", "system"}, {"content", *sys}});
  }
  std::size_t i = 0;
  for (const auto& m : *messages) {
    auto where = "messages[" + std::to_string(i++) + "]";
    if (!m.is_object()) return bad(where + " must be an object");
    auto role = m.value("role", std::string());
    if (role != "user" && role != "assistant") return bad(where + ".role must be user or assistant");
    if (!m.contains("content")) return bad(where + ".content is required");
    json blocks = m["content"].is_array() ? m["content"] : json::array({m["content"]});
    json parts = json::array();
    json tool_calls = json::array();
    for (std::size_t k = 0; k < blocks.size(); ++k) {
      const auto& b = blocks[k];
      auto bw = where + ".content[" + std::to_string(k) + "]";
      if (!b.is_object()) return bad(bw + " must be an object");
      auto type = b.value("type", std::string());
      if (type == "tool_use") {
        if (role != "assistant") return bad(bw + ": tool_use belongs to an assistant message");
        tool_calls.push_back({{"id", b.value("id", std::string())},
                              {"type", "function"},
                              {"function",
                               {{"name", b.value("name", std::string())},
                                {"arguments", b.contains("input") ? b["input"].dump() : "{}"}}}});
      } else if (type == "tool_result") {
        // Tool results become OpenAI tool messages, in order.
        out_messages.push_back({{"role", "tool"},
                                {"tool_call_id", b.value("toolUseId", std::string())},
                                {"content", result_text(b.contains("content") ? b["content"]
                                                                               : json::array())}});
      } else {
        auto part = to_part(b, bw);
        if (!part) return part.error();
        parts.push_back(std::move(*part));
      }
    }
    if (parts.empty() && tool_calls.empty()) continue;  // only tool results
    json msg = {{"role", role}};
    // Plain text stays a string: every OpenAI-compatible provider takes that.
    if (parts.size() == 1 && parts[0]["type"] == "text") {
      msg["content"] = parts[0]["text"];
    } else if (!parts.empty()) {
      msg["content"] = std::move(parts);
    } else {
      msg["content"] = nullptr;
    }
    if (!tool_calls.empty()) msg["tool_calls"] = std::move(tool_calls);
    out_messages.push_back(std::move(msg));
  }
  auto max = params.find("maxTokens");
  if (max == params.end() || !max->is_number_integer() || max->get<std::int64_t>() < 1) {
    return bad("maxTokens must be a positive integer");
  }
  json chat = {{"model", model},
               {"messages", std::move(out_messages)},
               {"max_tokens", std::min(max->get<std::int64_t>(), max_tokens_cap)}};
  if (auto t = params.find("temperature"); t != params.end() && !t->is_null()) {
    if (!t->is_number()) return bad("temperature must be a number");
    chat["temperature"] = *t;
  }
  if (auto s = params.find("stopSequences"); s != params.end() && !s->is_null()) {
    if (!s->is_array() || !std::all_of(s->begin(), s->end(), [](const json& x) { return x.is_string(); })) {
      return bad("stopSequences must be an array of strings");
    }
    if (!s->empty()) chat["stop"] = *s;
  }
  if (auto tools = params.find("tools"); tools != params.end() && !tools->is_null()) {
    if (!tools->is_array()) return bad("tools must be an array");
    json fns = json::array();
    for (const auto& t : *tools) {
      if (!t.is_object() || !t.contains("name") || !t["name"].is_string()) {
        return bad("every tool needs a name");
      }
      json fn = {{"name", t["name"]},
                 {"parameters", t.contains("inputSchema") ? t["inputSchema"]
                                                          : json{{"type", "object"}}}};
      if (t.contains("description")) fn["description"] = t["description"];
      fns.push_back({{"type", "function"}, {"function", std::move(fn)}});
    }
    if (!fns.empty()) chat["tools"] = std::move(fns);
    if (auto choice = params.find("toolChoice"); choice != params.end() && choice->is_object()) {
      auto mode = choice->value("mode", std::string("auto"));
      if (mode != "auto" && mode != "required" && mode != "none") {
        return bad("toolChoice.mode must be auto, required or none");
      }
      chat["tool_choice"] = mode;
    }
  }
  return chat;
}

json chat_to_sampling_result(const json& completion, const std::string& model_used) {
  json choice = json::object();
  if (auto c = completion.find("choices"); c != completion.end() && c->is_array() && !c->empty()) {
    choice = (*c)[0];
  }
  json message = choice.value("message", json::object());
  auto finish = choice.value("finish_reason", std::string("stop"));
  std::string stop = finish == "length"       ? "maxTokens"
                     : finish == "tool_calls" ? "toolUse"
                     : finish == "stop"       ? "endTurn"
                                              : finish;
  json content;
  auto calls = message.find("tool_calls");
  if (calls != message.end() && calls->is_array() && !calls->empty()) {
    content = json::array();
    if (message.contains("content") && message["content"].is_string() &&
        !message["content"].get_ref<const std::string&>().empty()) {
      content.push_back({{"type", "text"}, {"text", message["content"]}});
    }
    for (const auto& tc : *calls) {
      auto fn = tc.value("function", json::object());
      json input = json::parse(fn.value("arguments", std::string("{}")), nullptr, false);
      if (input.is_discarded() || !input.is_object()) input = json::object();
      content.push_back({{"type", "tool_use"},
                         {"id", tc.value("id", std::string())},
                         {"name", fn.value("name", std::string())},
                         {"input", std::move(input)}});
    }
  } else {
    std::string text;
    if (message.contains("content") && message["content"].is_string()) {
      text = message["content"].get<std::string>();
    }
    content = {{"type", "text"}, {"text", std::move(text)}};
  }
  return {{"role", "assistant"},
          {"content", std::move(content)},
          {"model", model_used.empty() ? completion.value("model", std::string()) : model_used},
          {"stopReason", std::move(stop)}};
}

std::string sampling_model(const json& params, const mcp::SamplingConfig& config,
                           const ai::Gateway& gateway) {
  if (config.allow_hints && params.is_object()) {
    auto prefs = params.find("modelPreferences");
    if (prefs != params.end() && prefs->is_object() && prefs->contains("hints") &&
        (*prefs)["hints"].is_array()) {
      for (const auto& h : (*prefs)["hints"]) {
        if (!h.is_object() || !h.contains("name") || !h["name"].is_string()) continue;
        auto name = h["name"].get<std::string>();
        if (gateway.knows_model(name)) return name;
      }
    }
  }
  return config.model;
}

namespace {

boost::asio::awaitable<mcp::RpcResult<json>> sample(ai::Gateway* gateway,
                                                    mcp::SamplingConfig config,
                                                    mcp::SamplingRequest req) {
  auto model = sampling_model(req.params, config, *gateway);
  auto chat = sampling_to_chat(req.params, model, config.max_tokens);
  if (!chat) co_return chat.error();
  ai::CallContext ctx;
  ctx.client = req.client.empty() ? "mcp:" + req.server : req.client;
  ctx.request_id = req.request_id;
  ai::CallInfo info;
  auto r = co_await gateway->chat(ctx, std::move(*chat), info);
  if (!r) {
    spdlog::warn("rid={} mcp[{}]: sampling with {} failed: {}",
                 req.request_id.empty() ? "-" : req.request_id, req.server, model,
                 r.error().message);
    co_return RpcError{RpcError::kInternal, "sampling failed: " + r.error().message, nullptr};
  }
  spdlog::info("rid={} mcp[{}]: sampling answered by {}/{} for client {}",
               req.request_id.empty() ? "-" : req.request_id, req.server, info.provider,
               info.model, ctx.client);
  co_return chat_to_sampling_result(*r, info.model);
}

}  // namespace

mcp::Sampler make_sampler(ai::Gateway& gateway, mcp::SamplingConfig config) {
  return [gw = &gateway, config](mcp::SamplingRequest req) {
    return sample(gw, config, std::move(req));
  };
}

}  // namespace agentd::api
