// Validation of OpenAI-shaped chat requests, before any routing or translation.
#include "agentd/ai/gateway.hpp"

namespace agentd::ai {
namespace {

bool known_role(std::string_view r) {
  return r == "system" || r == "developer" || r == "user" || r == "assistant" || r == "tool" ||
         r == "function";
}

Outcome<void> check_number(const json& req, const char* key, double min, double max) {
  auto it = req.find(key);
  if (it == req.end() || it->is_null()) return {};
  if (!it->is_number()) return Error::bad_request(std::string(key) + " must be a number", key);
  double v = it->get<double>();
  if (v < min || v > max) {
    return Error::bad_request(std::string(key) + " must be between " + std::to_string(min) +
                                  " and " + std::to_string(max),
                              key);
  }
  return {};
}

Outcome<void> check_integer(const json& req, const char* key, std::int64_t min) {
  auto it = req.find(key);
  if (it == req.end() || it->is_null()) return {};
  if (!it->is_number_integer() || it->get<std::int64_t>() < min) {
    return Error::bad_request(std::string(key) + " must be an integer >= " + std::to_string(min),
                              key);
  }
  return {};
}

Outcome<void> check_content(const json& content, const std::string& where) {
  if (content.is_null() || content.is_string()) return {};
  if (!content.is_array()) {
    return Error::bad_request(where + " must be a string, an array of parts or null", where);
  }
  for (std::size_t i = 0; i < content.size(); ++i) {
    const auto& part = content[i];
    std::string p = where + "[" + std::to_string(i) + "]";
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      return Error::bad_request(p + " must be an object with a type", p);
    }
    auto type = part["type"].get<std::string>();
    if (type == "text" && !(part.contains("text") && part["text"].is_string())) {
      return Error::bad_request(p + ".text must be a string", p + ".text");
    }
    if (type == "image_url") {
      const auto& iu = part.contains("image_url") ? part["image_url"] : json();
      if (!(iu.is_object() && iu.contains("url") && iu["url"].is_string())) {
        return Error::bad_request(p + ".image_url.url must be a string", p + ".image_url.url");
      }
    }
  }
  return {};
}

}  // namespace

Outcome<void> validate_chat_request(const json& req) {
  if (!req.is_object()) return Error::bad_request("the request body must be a JSON object");
  auto model = req.find("model");
  if (model == req.end() || !model->is_string() || model->get_ref<const std::string&>().empty()) {
    return Error::bad_request("model is required (a string)", "model");
  }
  auto messages = req.find("messages");
  if (messages == req.end() || !messages->is_array() || messages->empty()) {
    return Error::bad_request("messages must be a non-empty array", "messages");
  }
  for (std::size_t i = 0; i < messages->size(); ++i) {
    const auto& m = (*messages)[i];
    std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) return Error::bad_request(where + " must be an object", where);
    auto role = m.find("role");
    if (role == m.end() || !role->is_string() || !known_role(role->get_ref<const std::string&>())) {
      return Error::bad_request(
          where + ".role must be one of system, developer, user, assistant, tool", where + ".role");
    }
    const auto& r = role->get_ref<const std::string&>();
    if (m.contains("content")) {
      if (auto c = check_content(m["content"], where + ".content"); !c) return c;
    } else if (r != "assistant") {
      return Error::bad_request(where + ".content is required for role " + r, where + ".content");
    }
    if (r == "tool" && !(m.contains("tool_call_id") && m["tool_call_id"].is_string())) {
      return Error::bad_request(where + ".tool_call_id is required for role tool",
                                where + ".tool_call_id");
    }
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      const auto& calls = m["tool_calls"];
      if (!calls.is_array()) {
        return Error::bad_request(where + ".tool_calls must be an array", where + ".tool_calls");
      }
      for (std::size_t j = 0; j < calls.size(); ++j) {
        std::string cw = where + ".tool_calls[" + std::to_string(j) + "]";
        const auto& c = calls[j];
        if (!c.is_object() || !c.contains("id") || !c["id"].is_string() ||
            !c.contains("function") || !c["function"].is_object() ||
            !c["function"].contains("name") || !c["function"]["name"].is_string()) {
          return Error::bad_request(cw + " needs id and function.name", cw);
        }
      }
    }
  }
  if (auto s = req.find("stream"); s != req.end() && !s->is_null() && !s->is_boolean()) {
    return Error::bad_request("stream must be a boolean", "stream");
  }
  if (auto t = req.find("tools"); t != req.end() && !t->is_null()) {
    if (!t->is_array()) return Error::bad_request("tools must be an array", "tools");
    for (std::size_t i = 0; i < t->size(); ++i) {
      const auto& tool = (*t)[i];
      std::string where = "tools[" + std::to_string(i) + "]";
      if (!tool.is_object() || !tool.contains("function") || !tool["function"].is_object() ||
          !tool["function"].contains("name") || !tool["function"]["name"].is_string()) {
        return Error::bad_request(where + ".function.name is required", where + ".function.name");
      }
    }
  }
  if (auto r = check_number(req, "temperature", 0, 2); !r) return r;
  if (auto r = check_number(req, "top_p", 0, 1); !r) return r;
  if (auto r = check_number(req, "presence_penalty", -2, 2); !r) return r;
  if (auto r = check_number(req, "frequency_penalty", -2, 2); !r) return r;
  if (auto r = check_integer(req, "max_tokens", 1); !r) return r;
  if (auto r = check_integer(req, "max_completion_tokens", 1); !r) return r;
  if (auto r = check_integer(req, "n", 1); !r) return r;
  return {};
}

}  // namespace agentd::ai
