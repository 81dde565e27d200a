// The Anthropic Messages dialect: OpenAI chat requests → /v1/messages, and Messages answers
// and stream events → chat.completion / chat.completion.chunk.
#include <algorithm>
#include <map>

#include "dialect_util.hpp"

namespace agentd::ai::detail {
namespace {

// Structured output (response_format json_schema) travels as a tool the model is made to call;
// its input is the answer, given back to the client as the message content.
constexpr std::string_view kJsonTool = "json_output";
constexpr std::string_view kJsonObjectInstruction =
    "Respond with a single valid JSON object and nothing else (no prose, no code fences).";

using Blocks = json;  // a JSON array of content blocks

Outcome<json> image_block(const json& url, const std::string& param) {
  if (!url.is_string()) return Error::bad_request(param + " must be a string", param);
  const auto& u = url.get_ref<const std::string&>();
  if (auto data = parse_data_url(u, param)) {
    if (!*data) return data->error();
    return json{
        {"type", "image"},
        {"source",
         {{"type", "base64"}, {"media_type", (*data)->media_type}, {"data", (*data)->data}}}};
  }
  if (is_http_url(u)) return json{{"type", "image"}, {"source", {{"type", "url"}, {"url", u}}}};
  return Error::bad_request(param + " must be a data: URL or an http(s) URL", param);
}

// A `file` part with inline data: PDFs become document blocks, images image blocks.
Outcome<json> file_block(const json& part, const std::string& where) {
  const json* file = member(part, "file");
  auto data = file != nullptr ? string_at(*file, "file_data") : std::nullopt;
  std::string param = where + ".file.file_data";
  if (!data) return Error::bad_request(param + " is required (a base64 data: URL)", param);
  auto parsed = parse_data_url(*data, param);
  if (!parsed) return Error::bad_request(param + " must be a base64 data: URL", param);
  if (!*parsed) return parsed->error();
  const DataUrl& d = **parsed;
  if (d.media_type.starts_with("image/")) return image_block(json(*data), param);
  if (d.media_type != "application/pdf") {
    return Error::bad_request(
        param + ": Anthropic accepts PDF and image files, not " + d.media_type, param);
  }
  return json{{"type", "document"},
              {"source", {{"type", "base64"}, {"media_type", d.media_type}, {"data", d.data}}}};
}

// OpenAI message content (string, parts or null) → Anthropic content blocks. Empty texts are
// left out: Anthropic rejects empty text blocks.
Outcome<Blocks> content_blocks(const json& content, const std::string& where) {
  Blocks out = json::array();
  if (content.is_null()) return out;
  if (content.is_string()) {
    if (!content.get_ref<const std::string&>().empty()) {
      out.push_back({{"type", "text"}, {"text", content}});
    }
    return out;
  }
  if (!content.is_array()) {
    return Error::bad_request(where + " must be a string, an array of parts or null", where);
  }
  for (std::size_t j = 0; j < content.size(); ++j) {
    const json& part = content[j];
    std::string pw = index_path(where, j);
    auto type = string_at(part, "type");
    if (!type) return Error::bad_request(pw + ".type is required", pw + ".type");
    if (*type == "text" || *type == "refusal") {
      auto text = string_at(part, *type);
      if (!text) {
        return Error::bad_request(pw + "." + *type + " must be a string", pw + "." + *type);
      }
      if (!text->empty()) out.push_back({{"type", "text"}, {"text", *text}});
    } else if (*type == "image_url") {
      const json* iu = member(part, "image_url");
      const json* url = iu == nullptr ? nullptr : (iu->is_object() ? member(*iu, "url") : iu);
      auto block = image_block(or_null(url), pw + ".image_url.url");
      if (!block) return block.error();
      out.push_back(std::move(*block));
    } else if (*type == "file") {
      auto block = file_block(part, pw);
      if (!block) return block.error();
      out.push_back(std::move(*block));
    } else {
      return Error::bad_request(
          pw + ".type \"" + *type + "\" is not supported by Anthropic (text, image_url, file)",
          pw + ".type");
    }
  }
  return out;
}

// System/developer content → plain text (Anthropic's `system` has no images).
Outcome<std::string> system_text(const json& content, const std::string& where) {
  auto blocks = content_blocks(content, where);
  if (!blocks) return blocks.error();
  std::string text;
  for (const auto& b : *blocks) {
    if (b["type"] != "text") {
      return Error::bad_request(where + " of a system message may only hold text", where);
    }
    if (!text.empty()) text += "\n\n";
    text += b["text"].get<std::string>();
  }
  return text;
}

Outcome<Blocks> tool_use_blocks(const json& calls, const std::string& where) {
  Blocks out = json::array();
  if (calls.is_null()) return out;
  if (!calls.is_array()) return Error::bad_request(where + " must be an array", where);
  for (std::size_t j = 0; j < calls.size(); ++j) {
    std::string cw = index_path(where, j);
    const json& c = calls[j];
    auto id = string_at(c, "id");
    if (!id) return Error::bad_request(cw + ".id is required", cw + ".id");
    const json* fn = member(c, "function");
    auto name = fn != nullptr ? string_at(*fn, "name") : std::nullopt;
    if (!name) return Error::bad_request(cw + ".function.name is required", cw + ".function.name");
    const json* args = member(*fn, "arguments");
    auto input = parse_arguments(or_null(args), cw + ".function.arguments");
    if (!input) return input.error();
    out.push_back({{"type", "tool_use"}, {"id", *id}, {"name", *name}, {"input", *input}});
  }
  return out;
}

Outcome<json> tool_result_block(const json& m, const std::string& where) {
  auto id = string_at(m, "tool_call_id");
  if (!id) return Error::bad_request(where + ".tool_call_id is required", where + ".tool_call_id");
  json block = {{"type", "tool_result"}, {"tool_use_id", *id}};
  const json* content = member(m, "content");
  if (content != nullptr && content->is_string()) {
    if (!content->get_ref<const std::string&>().empty()) block["content"] = *content;
  } else if (content != nullptr) {
    auto blocks = content_blocks(*content, where + ".content");
    if (!blocks) return blocks.error();
    if (!blocks->empty()) block["content"] = std::move(*blocks);
  }
  return block;
}

Outcome<json> tool_choice_of(const json& tc) {
  if (tc.is_string()) {
    const auto& s = tc.get_ref<const std::string&>();
    if (s == "auto") return json{{"type", "auto"}};
    if (s == "none") return json{{"type", "none"}};
    if (s == "required") return json{{"type", "any"}};
  } else if (tc.is_object()) {
    const json* fn = member(tc, "function");
    auto name = fn != nullptr ? string_at(*fn, "name") : std::nullopt;
    if (name) return json{{"type", "tool"}, {"name", *name}};
    return Error::bad_request("tool_choice.function.name is required", "tool_choice.function.name");
  }
  return Error::bad_request("tool_choice must be auto, none, required or a named function",
                            "tool_choice");
}

Outcome<json> tools_of(const json& tools) {
  json out = json::array();
  if (!tools.is_array()) return Error::bad_request("tools must be an array", "tools");
  for (std::size_t i = 0; i < tools.size(); ++i) {
    std::string tw = index_path("tools", i);
    auto type = string_at(tools[i], "type").value_or("function");
    if (type != "function") {
      return Error::bad_request(tw + ".type \"" + type + "\" is not supported (function)",
                                tw + ".type");
    }
    const json* fn = member(tools[i], "function");
    auto name = fn != nullptr ? string_at(*fn, "name") : std::nullopt;
    if (!name) return Error::bad_request(tw + ".function.name is required", tw + ".function.name");
    json tool = {{"name", *name}};
    if (auto d = string_at(*fn, "description")) tool["description"] = *d;
    const json* params = member(*fn, "parameters");
    if (params != nullptr && !params->is_object()) {
      return Error::bad_request(tw + ".function.parameters must be a JSON Schema object",
                                tw + ".function.parameters");
    }
    tool["input_schema"] =
        params != nullptr ? *params : json{{"type", "object"}, {"properties", json::object()}};
    out.push_back(std::move(tool));
  }
  return out;
}

Outcome<std::optional<std::int64_t>> integer_field(const json& req, const char* key) {
  const json* v = member(req, key);
  if (v == nullptr) return std::optional<std::int64_t>();
  if (!v->is_number_integer() || v->get<std::int64_t>() < 1) {
    return Error::bad_request(std::string(key) + " must be a positive integer", key);
  }
  return std::optional<std::int64_t>(v->get<std::int64_t>());
}

Outcome<json> translate_request(const json& req, const std::string& model, bool stream,
                                const ProviderConfig& p) {
  if (!req.is_object()) return Error::bad_request("the request must be a JSON object");
  auto n = integer_field(req, "n");
  if (!n) return n.error();
  if (*n && **n > 1) {
    return Error::bad_request("n > 1 is not supported by Anthropic: ask for one choice", "n");
  }
  const json* messages = member(req, "messages");
  if (messages == nullptr || !messages->is_array()) {
    return Error::bad_request("messages must be an array", "messages");
  }

  std::string system;
  json out_messages = json::array();
  // Adjacent same-role turns merge: Anthropic wants user and assistant to alternate, and all
  // results of one assistant turn's tool calls in the single user turn that follows.
  auto append = [&](const char* role, Blocks&& blocks) {
    if (blocks.empty()) return;
    if (!out_messages.empty() && out_messages.back()["role"] == role) {
      auto& c = out_messages.back()["content"];
      for (auto& b : blocks) c.push_back(std::move(b));
    } else {
      out_messages.push_back({{"role", role}, {"content", std::move(blocks)}});
    }
  };

  for (std::size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    std::string where = index_path("messages", i);
    if (!m.is_object()) return Error::bad_request(where + " must be an object", where);
    auto role = string_at(m, "role");
    if (!role) return Error::bad_request(where + ".role is required", where + ".role");
    const json* content = member(m, "content");
    const json& c = or_null(content);
    if (*role == "system" || *role == "developer") {
      auto text = system_text(c, where + ".content");
      if (!text) return text.error();
      if (!text->empty()) system += (system.empty() ? "" : "\n\n") + *text;
    } else if (*role == "user") {
      auto blocks = content_blocks(c, where + ".content");
      if (!blocks) return blocks.error();
      append("user", std::move(*blocks));
    } else if (*role == "assistant") {
      auto blocks = content_blocks(c, where + ".content");
      if (!blocks) return blocks.error();
      const json* calls = member(m, "tool_calls");
      auto uses = tool_use_blocks(or_null(calls), where + ".tool_calls");
      if (!uses) return uses.error();
      for (auto& u : *uses) blocks->push_back(std::move(u));
      append("assistant", std::move(*blocks));
    } else if (*role == "tool") {
      auto block = tool_result_block(m, where);
      if (!block) return block.error();
      append("user", json::array({std::move(*block)}));
    } else {
      return Error::bad_request(where + ".role \"" + *role +
                                    "\" cannot be sent to Anthropic (system, developer, user, "
                                    "assistant, tool)",
                                where + ".role");
    }
  }

  json body = {{"model", model}};
  auto max_completion = integer_field(req, "max_completion_tokens");
  if (!max_completion) return max_completion.error();
  auto max_tokens = integer_field(req, "max_tokens");
  if (!max_tokens) return max_tokens.error();
  body["max_tokens"] = max_completion->value_or(max_tokens->value_or(p.default_max_tokens));

  if (const json* t = member(req, "temperature")) {
    if (!t->is_number()) return Error::bad_request("temperature must be a number", "temperature");
    // OpenAI's range is 0..2, Anthropic's 0..1: clamp rather than fail a valid request.
    body["temperature"] = std::clamp(t->get<double>(), 0.0, 1.0);
  }
  if (const json* t = member(req, "top_p")) {
    if (!t->is_number()) return Error::bad_request("top_p must be a number", "top_p");
    body["top_p"] = *t;
  }
  if (const json* k = member(req, "top_k"); k != nullptr && k->is_number_integer()) {
    body["top_k"] = *k;
  }
  if (const json* s = member(req, "stop")) {
    json seqs = json::array();
    if (s->is_string()) {
      seqs.push_back(*s);
    } else if (s->is_array() &&
               std::all_of(s->begin(), s->end(), [](const json& x) { return x.is_string(); })) {
      seqs = *s;
    } else {
      return Error::bad_request("stop must be a string or an array of strings", "stop");
    }
    seqs.erase(std::remove(seqs.begin(), seqs.end(), json("")), seqs.end());
    if (!seqs.empty()) body["stop_sequences"] = std::move(seqs);
  }
  if (auto user = string_at(req, "user")) body["metadata"] = {{"user_id", *user}};
  if (const json* th = member(req, "thinking"); th != nullptr && th->is_object()) {
    body["thinking"] = *th;  // Anthropic's own knob, passed through when a client sends it
  }

  json tools = json::array();
  if (const json* t = member(req, "tools")) {
    auto translated = tools_of(*t);
    if (!translated) return translated.error();
    tools = std::move(*translated);
  }
  bool client_tools = !tools.empty();
  std::optional<json> tool_choice;
  if (const json* tc = member(req, "tool_choice"); tc != nullptr && client_tools) {
    auto translated = tool_choice_of(*tc);
    if (!translated) return translated.error();
    tool_choice = std::move(*translated);
  }

  if (const json* rf = member(req, "response_format")) {
    auto type = string_at(*rf, "type");
    if (!type) {
      return Error::bad_request("response_format.type is required", "response_format.type");
    }
    if (*type == "json_object") {
      system += (system.empty() ? "" : "\n\n") + std::string(kJsonObjectInstruction);
    } else if (*type == "json_schema") {
      const json* js = member(*rf, "json_schema");
      const json* schema = js != nullptr ? member(*js, "schema") : nullptr;
      const char* param = "response_format.json_schema.schema";
      if (schema == nullptr || !schema->is_object() ||
          (schema->contains("type") && (*schema)["type"] != "object")) {
        return Error::bad_request(std::string(param) + " must be a JSON Schema of an object",
                                  param);
      }
      std::string description =
          "Give your final answer by calling this tool: its input is the "
          "answer, in the requested JSON format.";
      if (auto d = string_at(*js, "description")) description += " " + *d;
      tools.push_back(
          {{"name", kJsonTool}, {"description", description}, {"input_schema", *schema}});
      // Forced when it is the only tool; alongside the client's tools it is one more choice.
      if (!client_tools) tool_choice = json{{"type", "tool"}, {"name", kJsonTool}};
    } else if (*type != "text") {
      return Error::bad_request("response_format.type \"" + *type +
                                    "\" is not supported (text, json_object, json_schema)",
                                "response_format.type");
    }
  }
  if (const json* ptc = member(req, "parallel_tool_calls");
      ptc != nullptr && ptc->is_boolean() && !ptc->get<bool>() && !tools.empty()) {
    if (!tool_choice) tool_choice = json{{"type", "auto"}};
    if ((*tool_choice)["type"] != "none") (*tool_choice)["disable_parallel_tool_use"] = true;
  }

  if (!system.empty()) body["system"] = system;
  body["messages"] = std::move(out_messages);
  if (!tools.empty()) body["tools"] = std::move(tools);
  if (tool_choice) body["tool_choice"] = std::move(*tool_choice);
  if (stream) body["stream"] = true;
  // Dropped: frequency_penalty, presence_penalty, logit_bias, seed, logprobs, top_logprobs,
  // stream_options (usage always comes), reasoning_effort and other OpenAI-only knobs.
  return body;
}

// --- answers ---

std::string finish_reason_of(const json& stop_reason) {
  if (!stop_reason.is_string()) return "stop";
  const auto& s = stop_reason.get_ref<const std::string&>();
  if (s == "max_tokens" || s == "model_context_window_exceeded") return "length";
  if (s == "tool_use") return "tool_calls";
  if (s == "refusal") return "content_filter";
  return "stop";  // end_turn, stop_sequence, pause_turn
}

std::int64_t int_at(const json& j, std::string_view key) {
  const json* v = member(j, key);
  return v != nullptr && v->is_number_integer() ? v->get<std::int64_t>() : 0;
}

struct Usage {
  std::int64_t input = 0, output = 0, cache_read = 0, cache_creation = 0;
  bool cache_known = false;

  void update(const json& u) {
    if (!u.is_object()) return;
    if (member(u, "input_tokens") != nullptr) input = int_at(u, "input_tokens");
    if (member(u, "output_tokens") != nullptr) output = int_at(u, "output_tokens");
    if (member(u, "cache_read_input_tokens") != nullptr) {
      cache_read = int_at(u, "cache_read_input_tokens");
      cache_known = true;
    }
    if (member(u, "cache_creation_input_tokens") != nullptr) {
      cache_creation = int_at(u, "cache_creation_input_tokens");
    }
  }
  json openai() const {
    return make_usage(input + cache_read + cache_creation, output,
                      cache_known ? std::optional<std::int64_t>(cache_read) : std::nullopt);
  }
};

struct ErrorClass {
  std::string_view type;
  int status;
  Error::Kind kind;
};
constexpr ErrorClass kErrorClasses[] = {
    {"invalid_request_error", 400, Error::Kind::bad_request},
    {"authentication_error", 401, Error::Kind::auth},
    {"billing_error", 402, Error::Kind::auth},
    {"permission_error", 403, Error::Kind::auth},
    {"not_found_error", 404, Error::Kind::not_found},
    {"request_too_large", 413, Error::Kind::bad_request},
    {"rate_limit_error", 429, Error::Kind::rate_limited},
    {"api_error", 500, Error::Kind::server},
    {"timeout_error", 504, Error::Kind::timeout},
    {"overloaded_error", 529, Error::Kind::overloaded},
};

// `{"type":"error","error":{"type","message"}}` → Error. status 0: an in-band stream error,
// whose status comes from its type.
Error anthropic_error(int status, const net::Headers& headers, const json* doc,
                      std::string_view raw) {
  const json* err = doc != nullptr ? member(*doc, "error") : nullptr;
  std::string type = err != nullptr ? string_at(*err, "type").value_or("") : "";
  std::string message = err != nullptr ? string_at(*err, "message").value_or("") : "";
  const ErrorClass* cls = nullptr;
  for (const auto& c : kErrorClasses) {
    if (c.type == type) cls = &c;
  }
  Error e = upstream_status_error(status != 0 ? status : (cls != nullptr ? cls->status : 500),
                                  headers, std::move(message), raw);
  if (cls != nullptr) e.kind = cls->kind;
  e.code = type;
  if (e.kind == Error::Kind::bad_request && mentions_context_window(e.message)) {
    mark_context_window(e);
  } else if (e.message.find("credit balance") != std::string::npos) {
    e.kind = Error::Kind::auth;  // out of credit (sent as a 400): another target may answer
  }
  return e;
}

Outcome<json> translate_response(const json& doc, const std::string& model) {
  const json* content = member(doc, "content");
  if (content == nullptr || !content->is_array()) {
    return malformed_upstream("a Messages answer without content");
  }
  std::string text, reasoning;
  json tool_calls = json::array();
  bool json_answer = false;
  for (const auto& block : *content) {
    auto type = string_at(block, "type").value_or("");
    if (type == "text") {
      text += string_at(block, "text").value_or("");
    } else if (type == "thinking") {
      reasoning += string_at(block, "thinking").value_or("");
    } else if (type == "tool_use") {
      const json* input = member(block, "input");
      std::string args = dump(input != nullptr ? *input : json::object());
      auto name = string_at(block, "name").value_or("");
      if (name == kJsonTool) {
        text += args;
        json_answer = true;
        continue;
      }
      tool_calls.push_back({{"id", string_at(block, "id").value_or(new_tool_call_id())},
                            {"type", "function"},
                            {"function", {{"name", name}, {"arguments", args}}}});
    }
  }
  std::string finish = finish_reason_of(doc.contains("stop_reason") ? doc["stop_reason"] : json());
  if (json_answer && tool_calls.empty() && finish == "tool_calls") finish = "stop";
  json message = {{"role", "assistant"}};
  message["content"] = text.empty() && !tool_calls.empty() ? json() : json(text);
  if (!tool_calls.empty()) message["tool_calls"] = std::move(tool_calls);
  if (!reasoning.empty()) message["reasoning_content"] = reasoning;
  Usage usage;
  if (const json* u = member(doc, "usage")) usage.update(*u);
  return json{{"id", string_at(doc, "id").value_or(new_completion_id())},
              {"object", "chat.completion"},
              {"created", unix_now()},
              {"model", model},
              {"choices", json::array({{{"index", 0},
                                        {"message", std::move(message)},
                                        {"logprobs", nullptr},
                                        {"finish_reason", finish}}})},
              {"usage", usage.openai()}};
}

class AnthropicStream final : public StreamTranslator {
 public:
  explicit AnthropicStream(std::string model)
      : model_(std::move(model)), id_(new_completion_id()), created_(unix_now()) {}

  Outcome<std::vector<json>> on_event(const net::SseEvent& event) override {
    std::vector<json> out;
    if (finished_) return out;
    auto doc = parse_json(event.data);
    if (!doc || !doc->is_object()) {
      if (event.data.empty()) return out;
      return malformed_upstream("a stream event that is not JSON");
    }
    auto type = string_at(*doc, "type").value_or(event.event);
    if (type == "error") return anthropic_error(0, net::Headers{}, &*doc, event.data);
    if (type == "message_start") {
      if (const json* msg = member(*doc, "message")) {
        if (auto id = string_at(*msg, "id"); id && !started_) id_ = *id;
        if (const json* u = member(*msg, "usage")) usage_.update(*u);
      }
      out.push_back(chunk({{"role", "assistant"}, {"content", ""}}));
    } else if (type == "content_block_start") {
      const json* block = member(*doc, "content_block");
      auto index = int_at(*doc, "index");
      auto btype = block != nullptr ? string_at(*block, "type").value_or("") : "";
      if (btype == "tool_use") {
        auto name = string_at(*block, "name").value_or("");
        if (name == kJsonTool) {
          blocks_[index] = Block{true, -1};
          json_answer_ = true;
        } else {
          int tool = next_tool_++;
          blocks_[index] = Block{false, tool};
          json call = {{"index", tool},
                       {"id", string_at(*block, "id").value_or(new_tool_call_id())},
                       {"type", "function"},
                       {"function", {{"name", name}, {"arguments", ""}}}};
          out.push_back(chunk({{"tool_calls", json::array({std::move(call)})}}));
        }
      } else if (btype == "text") {
        if (auto t = string_at(*block, "text"); t && !t->empty()) {
          out.push_back(chunk({{"content", *t}}));
        }
      } else if (btype == "thinking") {
        if (auto t = string_at(*block, "thinking"); t && !t->empty()) {
          out.push_back(chunk({{"reasoning_content", *t}}));
        }
      }
    } else if (type == "content_block_delta") {
      const json* delta = member(*doc, "delta");
      if (delta == nullptr) return out;
      auto dtype = string_at(*delta, "type").value_or("");
      if (dtype == "text_delta") {
        if (auto t = string_at(*delta, "text"); t && !t->empty()) {
          out.push_back(chunk({{"content", *t}}));
        }
      } else if (dtype == "thinking_delta") {
        if (auto t = string_at(*delta, "thinking"); t && !t->empty()) {
          out.push_back(chunk({{"reasoning_content", *t}}));
        }
      } else if (dtype == "input_json_delta") {
        auto part = string_at(*delta, "partial_json").value_or("");
        auto it = blocks_.find(int_at(*doc, "index"));
        if (part.empty() || it == blocks_.end()) return out;
        if (it->second.json_answer) {
          out.push_back(chunk({{"content", part}}));
        } else {
          json call = {{"index", it->second.tool}, {"function", {{"arguments", part}}}};
          out.push_back(chunk({{"tool_calls", json::array({std::move(call)})}}));
        }
      }
      // signature_delta and citations_delta have no OpenAI counterpart.
    } else if (type == "message_delta") {
      if (const json* u = member(*doc, "usage")) usage_.update(*u);
      const json* delta = member(*doc, "delta");
      const json* stop = delta != nullptr ? member(*delta, "stop_reason") : nullptr;
      if (stop != nullptr) {
        auto finish = finish_reason_of(*stop);
        if (json_answer_ && next_tool_ == 0 && finish == "tool_calls") finish = "stop";
        out.push_back(chunk(json::object(), finish));
      }
    } else if (type == "message_stop") {
      finished_ = true;
      out.push_back({{"id", id_},
                     {"object", "chat.completion.chunk"},
                     {"created", created_},
                     {"model", model_},
                     {"choices", json::array()},
                     {"usage", usage_.openai()}});
    }
    // ping and content_block_stop carry nothing to translate.
    if (!out.empty()) started_ = true;
    return out;
  }

  bool finished() const override { return finished_; }

 private:
  struct Block {
    bool json_answer = false;  // the structured-output tool: its input streams as content
    int tool = -1;             // OpenAI tool_calls index (counting tool calls only)
  };

  json chunk(json delta, std::optional<std::string> finish = std::nullopt) const {
    return {{"id", id_},
            {"object", "chat.completion.chunk"},
            {"created", created_},
            {"model", model_},
            {"choices", json::array({{{"index", 0},
                                      {"delta", std::move(delta)},
                                      {"logprobs", nullptr},
                                      {"finish_reason", finish ? json(*finish) : json()}}})}};
  }

  std::string model_;
  std::string id_;
  std::int64_t created_;
  bool started_ = false;
  bool finished_ = false;
  bool json_answer_ = false;
  int next_tool_ = 0;
  std::map<std::int64_t, Block> blocks_;
  Usage usage_;
};

class AnthropicDialect final : public Dialect {
 public:
  explicit AnthropicDialect(ProviderConfig p) : p_(std::move(p)) {}

  Outcome<UpstreamCall> chat_request(const json& request, const std::string& model,
                                     bool stream) const override {
    auto body = translate_request(request, model, stream, p_);
    if (!body) return body.error();
    UpstreamCall call;
    call.url = join_url(p_.base_url, "/v1/messages");
    call.headers = base_headers(p_, stream);
    call.headers.set("anthropic-version", p_.api_version.empty() ? "2023-06-01" : p_.api_version);
    for (const auto& h : p_.headers) call.headers.set(h.name, h.value);
    call.body = dump(*body);
    return call;
  }

  Outcome<json> chat_response(std::string_view body, const std::string& model) const override {
    auto doc = parse_json(body);
    if (!doc || !doc->is_object()) return malformed_upstream("a Messages answer that is not JSON");
    if (string_at(*doc, "type") == "error") return anthropic_error(0, net::Headers{}, &*doc, body);
    return translate_response(*doc, model);
  }

  std::unique_ptr<StreamTranslator> chat_stream(const std::string& model) const override {
    return std::make_unique<AnthropicStream>(model);
  }

  Error upstream_error(int status, const net::Headers& headers,
                       std::string_view body) const override {
    auto doc = parse_json(body);
    return anthropic_error(status, headers, doc ? &*doc : nullptr, body);
  }

  Outcome<UpstreamCall> embeddings_request(const json&, const std::string&) const override {
    return Error::bad_request(
        "provider " + p_.name + " is an Anthropic API, which has no embeddings endpoint", "model");
  }

 private:
  ProviderConfig p_;
};

}  // namespace

std::unique_ptr<Dialect> make_anthropic_dialect(const ProviderConfig& provider) {
  return std::make_unique<AnthropicDialect>(provider);
}

}  // namespace agentd::ai::detail
