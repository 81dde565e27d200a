// The Gemini dialect: OpenAI chat requests → generateContent / streamGenerateContent, and
// GenerateContentResponse bodies and SSE events → chat.completion / chat.completion.chunk.
#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include "dialect_util.hpp"

namespace agentd::ai::detail {
namespace {

// --- JSON Schema → Gemini's Schema (an OpenAPI 3.0 subset) ---
//
// Kept: the keys below. anyOf/oneOf become anyOf; a `type` list such as ["string","null"]
// becomes the first non-null type plus nullable: true; `const` becomes a one-value enum;
// `format` is kept only for the values Gemini accepts. Local `$ref`s (#/$defs/X,
// #/definitions/X) are inlined (within the bounds below). Everything else is stripped, notably
// $schema, $id, $ref (once resolved), $defs, definitions, additionalProperties, allOf, not,
// patternProperties, examples, exclusiveMinimum/Maximum and strict.
const std::set<std::string_view>& schema_keys() {
  static const std::set<std::string_view> keys = {
      "type",     "title",    "description",      "nullable",      "enum",      "maxItems",
      "minItems", "required", "minProperties",    "maxProperties", "minLength", "maxLength",
      "pattern",  "example",  "propertyOrdering", "default",       "minimum",   "maximum"};
  return keys;
}
const std::set<std::string_view>& schema_formats() {
  static const std::set<std::string_view> formats = {"enum",  "date-time", "int32",
                                                     "int64", "float",     "double"};
  return formats;
}
// Bounds on $ref inlining: how deep one chain of refs may go, and how many refs one schema
// may inline in all (a definition that refers to itself from many places grows fast).
constexpr int kMaxRefDepth = 8;
constexpr int kMaxRefExpansions = 256;
// Deeper nesting than any real tool schema: cut off (as an empty schema) to bound recursion.
constexpr int kMaxNesting = 64;

const json* resolve_ref(const json& root, const std::string& ref) {
  for (std::string_view prefix : {"#/$defs/", "#/definitions/"}) {
    if (!ref.starts_with(prefix)) continue;
    const json* defs = member(root, prefix.substr(2, prefix.size() - 3));
    if (defs == nullptr) return nullptr;
    return member(*defs, ref.substr(prefix.size()));
  }
  return nullptr;
}

struct SchemaCleaner {
  const json& root;
  int expansions = 0;

  json clean(const json& s, int depth, int level = 0) {
    if (!s.is_object()) return s;
    if (level > kMaxNesting) return json::object();
    json out = json::object();
    if (auto ref = string_at(s, "$ref");
        ref && depth < kMaxRefDepth && expansions < kMaxRefExpansions) {
      if (const json* target = resolve_ref(root, *ref)) {
        ++expansions;
        out = clean(*target, depth + 1, level + 1);
      }
    }
    for (const auto& [key, value] : s.items()) {
      if (key == "properties" && value.is_object()) {
        json props = json::object();
        for (const auto& [name, sub] : value.items()) props[name] = clean(sub, depth, level + 1);
        out["properties"] = std::move(props);
      } else if (key == "items") {
        out["items"] = clean(value, depth, level + 1);
      } else if ((key == "anyOf" || key == "oneOf") && value.is_array()) {
        json alts = json::array();
        for (const auto& alt : value) alts.push_back(clean(alt, depth, level + 1));
        out["anyOf"] = std::move(alts);
      } else if (key == "type" && value.is_array()) {
        for (const auto& t : value) {
          if (t == "null") {
            out["nullable"] = true;
          } else if (!out.contains("type")) {
            out["type"] = t;
          }
        }
      } else if (key == "const") {
        out["enum"] = json::array({value});
      } else if (key == "format") {
        if (value.is_string() && schema_formats().count(value.get_ref<const std::string&>())) {
          out["format"] = value;
        }
      } else if (schema_keys().count(key)) {
        out[key] = value;
      }
    }
    return out;
  }
};

json clean_schema(const json& s) { return SchemaCleaner{s}.clean(s, 0); }

// An object schema without properties: Gemini rejects it as function parameters.
bool empty_object_schema(const json& s) {
  const json* props = member(s, "properties");
  return s.is_object() && s.value("type", json()) == "object" &&
         (props == nullptr || props->empty()) && !s.contains("anyOf");
}

// --- requests ---

std::string mime_from_url(std::string_view url) {
  auto end = url.find_first_of("?#");
  auto path = url.substr(0, end);
  auto dot = path.rfind('.');
  std::string ext;
  if (dot != std::string_view::npos) {
    for (char c : path.substr(dot + 1))
      ext += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  static const std::map<std::string, std::string, std::less<>> kTypes = {
      {"png", "image/png"},   {"jpg", "image/jpeg"},     {"jpeg", "image/jpeg"},
      {"gif", "image/gif"},   {"webp", "image/webp"},    {"heic", "image/heic"},
      {"heif", "image/heif"}, {"pdf", "application/pdf"}};
  auto it = kTypes.find(ext);
  return it != kTypes.end() ? it->second : "image/jpeg";  // an image_url part: most likely
}

Outcome<json> media_part(const json& url, const std::string& param) {
  if (!url.is_string()) return Error::bad_request(param + " must be a string", param);
  const auto& u = url.get_ref<const std::string&>();
  if (auto data = parse_data_url(u, param)) {
    if (!*data) return data->error();
    return json{{"inlineData", {{"mimeType", (*data)->media_type}, {"data", (*data)->data}}}};
  }
  if (is_http_url(u)) return json{{"fileData", {{"mimeType", mime_from_url(u)}, {"fileUri", u}}}};
  return Error::bad_request(param + " must be a data: URL or an http(s) URL", param);
}

// OpenAI message content → Gemini parts (empty texts left out: Gemini rejects empty parts).
Outcome<json> content_parts(const json& content, const std::string& where) {
  json out = json::array();
  if (content.is_null()) return out;
  if (content.is_string()) {
    if (!content.get_ref<const std::string&>().empty()) out.push_back({{"text", content}});
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
      if (!text->empty()) out.push_back({{"text", *text}});
    } else if (*type == "image_url") {
      const json* iu = member(part, "image_url");
      const json* url = iu == nullptr ? nullptr : (iu->is_object() ? member(*iu, "url") : iu);
      auto p = media_part(or_null(url), pw + ".image_url.url");
      if (!p) return p.error();
      out.push_back(std::move(*p));
    } else if (*type == "input_audio") {
      const json* audio = member(part, "input_audio");
      auto data = audio != nullptr ? string_at(*audio, "data") : std::nullopt;
      auto format = audio != nullptr ? string_at(*audio, "format") : std::nullopt;
      if (!data || !format) {
        return Error::bad_request(pw + ".input_audio needs data and format", pw + ".input_audio");
      }
      out.push_back({{"inlineData", {{"mimeType", "audio/" + *format}, {"data", *data}}}});
    } else if (*type == "file") {
      const json* file = member(part, "file");
      auto data = file != nullptr ? string_at(*file, "file_data") : std::nullopt;
      std::string param = pw + ".file.file_data";
      if (!data) return Error::bad_request(param + " is required (a base64 data: URL)", param);
      auto parsed = parse_data_url(*data, param);
      if (!parsed) return Error::bad_request(param + " must be a base64 data: URL", param);
      if (!*parsed) return parsed->error();
      out.push_back(
          {{"inlineData", {{"mimeType", (*parsed)->media_type}, {"data", (*parsed)->data}}}});
    } else {
      return Error::bad_request(pw + ".type \"" + *type +
                                    "\" is not supported by Gemini (text, image_url, "
                                    "input_audio, file)",
                                pw + ".type");
    }
  }
  return out;
}

// A tool message's content as text (Gemini's functionResponse holds no media).
Outcome<std::string> tool_text(const json& content, const std::string& where) {
  auto parts = content_parts(content, where);
  if (!parts) return parts.error();
  std::string text;
  for (const auto& p : *parts) {
    if (!p.contains("text")) {
      return Error::bad_request(where + " of a tool message may only hold text", where);
    }
    text += p["text"].get<std::string>();
  }
  return text;
}

Outcome<json> function_declarations(const json& tools) {
  if (!tools.is_array()) return Error::bad_request("tools must be an array", "tools");
  json decls = json::array();
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
    json decl = {{"name", *name}};
    if (auto d = string_at(*fn, "description")) decl["description"] = *d;
    if (const json* params = member(*fn, "parameters")) {
      if (!params->is_object()) {
        return Error::bad_request(tw + ".function.parameters must be a JSON Schema object",
                                  tw + ".function.parameters");
      }
      json cleaned = clean_schema(*params);
      if (!empty_object_schema(cleaned)) decl["parameters"] = std::move(cleaned);
    }
    decls.push_back(std::move(decl));
  }
  return decls;
}

Outcome<json> tool_config(const json& tc) {
  json cfg;
  if (tc.is_string() && tc == "auto") {
    cfg = {{"mode", "AUTO"}};
  } else if (tc.is_string() && tc == "none") {
    cfg = {{"mode", "NONE"}};
  } else if (tc.is_string() && tc == "required") {
    cfg = {{"mode", "ANY"}};
  } else if (tc.is_object()) {
    const json* fn = member(tc, "function");
    auto name = fn != nullptr ? string_at(*fn, "name") : std::nullopt;
    if (!name) {
      return Error::bad_request("tool_choice.function.name is required",
                                "tool_choice.function.name");
    }
    cfg = {{"mode", "ANY"}, {"allowedFunctionNames", json::array({*name})}};
  } else {
    return Error::bad_request("tool_choice must be auto, none, required or a named function",
                              "tool_choice");
  }
  return json{{"functionCallingConfig", std::move(cfg)}};
}

Outcome<json> generation_config(const json& req) {
  json g = json::object();
  auto number = [&](const char* from, const char* to) -> Outcome<void> {
    const json* v = member(req, from);
    if (v == nullptr) return {};
    if (!v->is_number()) return Error::bad_request(std::string(from) + " must be a number", from);
    g[to] = *v;
    return {};
  };
  auto integer = [&](const char* from, const char* to) -> Outcome<void> {
    const json* v = member(req, from);
    if (v == nullptr) return {};
    if (!v->is_number_integer()) {
      return Error::bad_request(std::string(from) + " must be an integer", from);
    }
    g[to] = *v;
    return {};
  };
  for (auto [from, to] : {std::pair{"temperature", "temperature"},
                          {"top_p", "topP"},
                          {"presence_penalty", "presencePenalty"},
                          {"frequency_penalty", "frequencyPenalty"}}) {
    if (auto r = number(from, to); !r) return r.error();
  }
  for (auto [from, to] : {std::pair{"max_tokens", "maxOutputTokens"},
                          {"max_completion_tokens", "maxOutputTokens"},
                          {"n", "candidateCount"},
                          {"seed", "seed"},
                          {"top_k", "topK"}}) {
    if (auto r = integer(from, to); !r) return r.error();
  }
  if (const json* s = member(req, "stop")) {
    if (s->is_string()) {
      g["stopSequences"] = json::array({*s});
    } else if (s->is_array() &&
               std::all_of(s->begin(), s->end(), [](const json& x) { return x.is_string(); })) {
      g["stopSequences"] = *s;
    } else {
      return Error::bad_request("stop must be a string or an array of strings", "stop");
    }
  }
  if (const json* rf = member(req, "response_format")) {
    auto type = string_at(*rf, "type");
    if (!type) {
      return Error::bad_request("response_format.type is required", "response_format.type");
    }
    if (*type == "json_object") {
      g["responseMimeType"] = "application/json";
    } else if (*type == "json_schema") {
      const json* js = member(*rf, "json_schema");
      const json* schema = js != nullptr ? member(*js, "schema") : nullptr;
      if (schema == nullptr || !schema->is_object()) {
        return Error::bad_request("response_format.json_schema.schema must be a JSON Schema",
                                  "response_format.json_schema.schema");
      }
      g["responseMimeType"] = "application/json";
      g["responseSchema"] = clean_schema(*schema);
    } else if (*type != "text") {
      return Error::bad_request("response_format.type \"" + *type +
                                    "\" is not supported (text, json_object, json_schema)",
                                "response_format.type");
    }
  }
  return g;
}

Outcome<json> translate_request(const json& req) {
  if (!req.is_object()) return Error::bad_request("the request must be a JSON object");
  const json* messages = member(req, "messages");
  if (messages == nullptr || !messages->is_array()) {
    return Error::bad_request("messages must be an array", "messages");
  }
  json contents = json::array();
  json system_parts = json::array();
  std::map<std::string, std::string> tool_names;  // tool call id → function name
  // Adjacent same-role turns merge, so parallel tool results form one user turn.
  auto append = [&](const char* role, json&& parts) {
    if (parts.empty()) return;
    if (!contents.empty() && contents.back()["role"] == role) {
      auto& p = contents.back()["parts"];
      for (auto& x : parts) p.push_back(std::move(x));
    } else {
      contents.push_back({{"role", role}, {"parts", std::move(parts)}});
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
      auto parts = content_parts(c, where + ".content");
      if (!parts) return parts.error();
      for (auto& p : *parts) {
        if (!p.contains("text")) {
          return Error::bad_request(where + ".content of a system message may only hold text",
                                    where + ".content");
        }
        system_parts.push_back(std::move(p));
      }
    } else if (*role == "user") {
      auto parts = content_parts(c, where + ".content");
      if (!parts) return parts.error();
      append("user", std::move(*parts));
    } else if (*role == "assistant") {
      auto parts = content_parts(c, where + ".content");
      if (!parts) return parts.error();
      const json* calls = member(m, "tool_calls");
      if (calls != nullptr && !calls->is_array()) {
        return Error::bad_request(where + ".tool_calls must be an array", where + ".tool_calls");
      }
      for (std::size_t j = 0; calls != nullptr && j < calls->size(); ++j) {
        const json& call = (*calls)[j];
        std::string cw = index_path(where + ".tool_calls", j);
        const json* fn = member(call, "function");
        auto name = fn != nullptr ? string_at(*fn, "name") : std::nullopt;
        if (!name) {
          return Error::bad_request(cw + ".function.name is required", cw + ".function.name");
        }
        const json* args = member(*fn, "arguments");
        auto parsed = parse_arguments(or_null(args), cw + ".function.arguments");
        if (!parsed) return parsed.error();
        json part = {{"functionCall", {{"name", *name}, {"args", std::move(*parsed)}}}};
        // Gemini's own OpenAI layer carries thought signatures here; they must come back.
        if (const json* extra = member(call, "extra_content")) {
          const json* google = member(*extra, "google");
          if (auto sig =
                  google != nullptr ? string_at(*google, "thought_signature") : std::nullopt) {
            part["thoughtSignature"] = *sig;
          }
        }
        if (auto id = string_at(call, "id")) tool_names[*id] = *name;
        parts->push_back(std::move(part));
      }
      append("model", std::move(*parts));
    } else if (*role == "tool") {
      auto id = string_at(m, "tool_call_id");
      if (!id) {
        return Error::bad_request(where + ".tool_call_id is required", where + ".tool_call_id");
      }
      std::string name;
      if (auto it = tool_names.find(*id); it != tool_names.end()) {
        name = it->second;
      } else if (auto n = string_at(m, "name")) {
        name = *n;
      } else {
        return Error::bad_request(
            where + ".tool_call_id \"" + *id + "\" matches no earlier assistant tool call",
            where + ".tool_call_id");
      }
      auto text = tool_text(c, where + ".content");
      if (!text) return text.error();
      auto parsed = parse_json(*text);
      json value = parsed ? std::move(*parsed) : json(*text);
      append("user", json::array({{{"functionResponse",
                                    {{"name", name}, {"response", {{"content", value}}}}}}}));
    } else {
      return Error::bad_request(where + ".role \"" + *role +
                                    "\" cannot be sent to Gemini (system, developer, user, "
                                    "assistant, tool)",
                                where + ".role");
    }
  }

  json body = {{"contents", std::move(contents)}};
  if (!system_parts.empty()) body["systemInstruction"] = {{"parts", std::move(system_parts)}};
  if (const json* t = member(req, "tools")) {
    auto decls = function_declarations(*t);
    if (!decls) return decls.error();
    if (!decls->empty()) body["tools"] = json::array({{{"functionDeclarations", *decls}}});
  }
  if (const json* tc = member(req, "tool_choice"); tc != nullptr && body.contains("tools")) {
    auto cfg = tool_config(*tc);
    if (!cfg) return cfg.error();
    body["toolConfig"] = std::move(*cfg);
  }
  auto g = generation_config(req);
  if (!g) return g.error();
  if (!g->empty()) body["generationConfig"] = std::move(*g);
  // Dropped: user, logit_bias, parallel_tool_calls (Gemini decides), stream_options (usage
  // always comes), logprobs and other OpenAI-only knobs.
  return body;
}

// --- answers ---

std::string finish_reason_of(const std::string& r) {
  if (r == "MAX_TOKENS") return "length";
  if (r == "SAFETY" || r == "RECITATION" || r == "BLOCKLIST" || r == "PROHIBITED_CONTENT" ||
      r == "SPII" || r == "IMAGE_SAFETY") {
    return "content_filter";
  }
  return "stop";  // STOP, LANGUAGE, OTHER, MALFORMED_FUNCTION_CALL, ...
}

std::int64_t int_at(const json& j, std::string_view key) {
  const json* v = member(j, key);
  return v != nullptr && v->is_number_integer() ? v->get<std::int64_t>() : 0;
}

json usage_of(const json& meta) {
  std::int64_t thoughts = int_at(meta, "thoughtsTokenCount");
  const json* cached = member(meta, "cachedContentTokenCount");
  json u = make_usage(
      int_at(meta, "promptTokenCount"), int_at(meta, "candidatesTokenCount") + thoughts,
      cached != nullptr ? std::optional<std::int64_t>(int_at(meta, "cachedContentTokenCount"))
                        : std::nullopt);
  if (thoughts > 0) u["completion_tokens_details"] = {{"reasoning_tokens", thoughts}};
  return u;
}

// One candidate's parts, sorted into OpenAI's fields.
struct Parts {
  std::string text, reasoning;
  json tool_calls = json::array();
};

Parts parts_of(const json& candidate, int first_tool_index, bool with_index) {
  Parts out;
  const json* content = member(candidate, "content");
  const json* parts = content != nullptr ? member(*content, "parts") : nullptr;
  if (parts == nullptr || !parts->is_array()) return out;
  for (const auto& part : *parts) {
    if (const json* fc = member(part, "functionCall")) {
      const json* args = member(*fc, "args");
      json call = {{"id", new_tool_call_id()},
                   {"type", "function"},
                   {"function",
                    {{"name", string_at(*fc, "name").value_or("")},
                     {"arguments", dump(args != nullptr ? *args : json::object())}}}};
      if (with_index) call["index"] = first_tool_index + static_cast<int>(out.tool_calls.size());
      if (auto sig = string_at(part, "thoughtSignature")) {
        call["extra_content"] = {{"google", {{"thought_signature", *sig}}}};
      }
      out.tool_calls.push_back(std::move(call));
    } else if (auto text = string_at(part, "text")) {
      const json* thought = member(part, "thought");
      bool is_thought = thought != nullptr && thought->is_boolean() && thought->get<bool>();
      (is_thought ? out.reasoning : out.text) += *text;
    }
  }
  return out;
}

int candidate_index(const json& candidate, std::size_t position) {
  const json* i = member(candidate, "index");
  return i != nullptr && i->is_number_integer() ? i->get<int>() : static_cast<int>(position);
}

struct StatusClass {
  std::string_view status;
  int http;
  Error::Kind kind;
};
constexpr StatusClass kStatusClasses[] = {
    {"INVALID_ARGUMENT", 400, Error::Kind::bad_request},
    {"OUT_OF_RANGE", 400, Error::Kind::bad_request},
    // "User location is not supported", no free tier here...: another target may answer.
    {"FAILED_PRECONDITION", 400, Error::Kind::auth},
    {"UNAUTHENTICATED", 401, Error::Kind::auth},
    {"PERMISSION_DENIED", 403, Error::Kind::auth},
    {"NOT_FOUND", 404, Error::Kind::not_found},
    {"RESOURCE_EXHAUSTED", 429, Error::Kind::rate_limited},
    {"CANCELLED", 499, Error::Kind::server},
    {"INTERNAL", 500, Error::Kind::server},
    {"UNKNOWN", 500, Error::Kind::server},
    {"UNIMPLEMENTED", 501, Error::Kind::server},
    {"UNAVAILABLE", 503, Error::Kind::overloaded},
    {"DEADLINE_EXCEEDED", 504, Error::Kind::timeout},
};

// `{"error":{"code","message","status","details"}}` → Error. status 0: in-band (stream).
Error gemini_error(int status, const net::Headers& headers, const json* doc, std::string_view raw) {
  const json* err = doc != nullptr ? member(*doc, "error") : nullptr;
  std::string name = err != nullptr ? string_at(*err, "status").value_or("") : "";
  std::string message = err != nullptr ? string_at(*err, "message").value_or("") : "";
  const StatusClass* cls = nullptr;
  for (const auto& c : kStatusClasses) {
    if (c.status == name) cls = &c;
  }
  if (status == 0) {
    auto code = err != nullptr ? int_at(*err, "code") : 0;
    status = code >= 400 && code <= 599 ? static_cast<int>(code) : (cls ? cls->http : 500);
  }
  Error e = upstream_status_error(status, headers, std::move(message), raw);
  if (cls != nullptr) e.kind = cls->kind;
  e.code = name;
  const json* details = err != nullptr ? member(*err, "details") : nullptr;
  for (std::size_t i = 0; details != nullptr && details->is_array() && i < details->size(); ++i) {
    const json& d = (*details)[i];
    if (string_at(d, "reason") == "API_KEY_INVALID") {
      e.kind = Error::Kind::auth;  // Gemini says 400 for a bad key; it is an auth failure
      e.status = 401;
    }
    if (auto delay = string_at(d, "retryDelay"); delay && !e.retry_after) {
      e.retry_after = parse_duration(*delay);
    }
  }
  if (e.kind == Error::Kind::bad_request && mentions_context_window(e.message)) {
    mark_context_window(e);
  }
  return e;
}

Error blocked_prompt(const json& doc) {
  const json* fb = member(doc, "promptFeedback");
  auto reason = fb != nullptr ? string_at(*fb, "blockReason").value_or("") : "";
  Error e;
  e.status = 400;
  e.kind = Error::Kind::content_filter;
  e.code = "content_filter";
  e.message = "Gemini blocked the prompt (" + reason + ")";
  return e;
}

bool prompt_blocked(const json& doc) {
  const json* fb = member(doc, "promptFeedback");
  return fb != nullptr && string_at(*fb, "blockReason").has_value();
}

Outcome<json> translate_response(const json& doc, const std::string& model) {
  const json* candidates = member(doc, "candidates");
  if (candidates == nullptr || !candidates->is_array() || candidates->empty()) {
    if (prompt_blocked(doc)) return blocked_prompt(doc);
    return malformed_upstream("a Gemini answer without candidates");
  }
  json choices = json::array();
  for (std::size_t k = 0; k < candidates->size(); ++k) {
    const json& cand = (*candidates)[k];
    Parts parts = parts_of(cand, 0, false);
    std::string finish = finish_reason_of(string_at(cand, "finishReason").value_or("STOP"));
    if (!parts.tool_calls.empty() && finish == "stop") finish = "tool_calls";
    json message = {{"role", "assistant"}};
    message["content"] =
        parts.text.empty() && !parts.tool_calls.empty() ? json() : json(parts.text);
    if (!parts.tool_calls.empty()) message["tool_calls"] = std::move(parts.tool_calls);
    if (!parts.reasoning.empty()) message["reasoning_content"] = parts.reasoning;
    choices.push_back({{"index", candidate_index(cand, k)},
                       {"message", std::move(message)},
                       {"logprobs", nullptr},
                       {"finish_reason", finish}});
  }
  json out = {{"id", string_at(doc, "responseId").value_or(new_completion_id())},
              {"object", "chat.completion"},
              {"created", unix_now()},
              {"model", model},
              {"choices", std::move(choices)}};
  if (const json* meta = member(doc, "usageMetadata")) out["usage"] = usage_of(*meta);
  return out;
}

class GeminiStream final : public StreamTranslator {
 public:
  explicit GeminiStream(std::string model)
      : model_(std::move(model)), id_(new_completion_id()), created_(unix_now()) {}

  Outcome<std::vector<json>> on_event(const net::SseEvent& event) override {
    std::vector<json> out;
    if (finished_ || event.data.empty()) return out;
    auto doc = parse_json(event.data);
    if (!doc || !doc->is_object()) return malformed_upstream("a stream event that is not JSON");
    if (member(*doc, "error") != nullptr) {
      return gemini_error(0, net::Headers{}, &*doc, event.data);
    }
    if (auto rid = string_at(*doc, "responseId"); rid && !started_) id_ = *rid;
    if (const json* meta = member(*doc, "usageMetadata")) usage_ = *meta;
    const json* candidates = member(*doc, "candidates");
    if (candidates == nullptr || !candidates->is_array() || candidates->empty()) {
      if (prompt_blocked(*doc)) return blocked_prompt(*doc);
      return out;
    }
    for (std::size_t k = 0; k < candidates->size(); ++k) {
      const json& cand = (*candidates)[k];
      int index = candidate_index(cand, k);
      auto& st = candidates_[index];
      if (!st.started) {
        st.started = true;
        out.push_back(chunk(index, {{"role", "assistant"}, {"content", ""}}));
      }
      Parts parts = parts_of(cand, st.tools, true);
      st.tools += static_cast<int>(parts.tool_calls.size());
      json delta = json::object();
      if (!parts.reasoning.empty()) delta["reasoning_content"] = parts.reasoning;
      if (!parts.text.empty()) delta["content"] = parts.text;
      if (!parts.tool_calls.empty()) delta["tool_calls"] = std::move(parts.tool_calls);
      if (!delta.empty()) out.push_back(chunk(index, std::move(delta)));
      auto reason = string_at(cand, "finishReason");
      if (reason && *reason != "FINISH_REASON_UNSPECIFIED" && !st.finished) {
        std::string finish = finish_reason_of(*reason);
        if (st.tools > 0 && finish == "stop") finish = "tool_calls";
        out.push_back(chunk(index, json::object(), finish));
        st.finished = true;
      }
    }
    finished_ = std::all_of(candidates_.begin(), candidates_.end(),
                            [](const auto& c) { return c.second.finished; });
    if (finished_ && usage_) {
      out.push_back({{"id", id_},
                     {"object", "chat.completion.chunk"},
                     {"created", created_},
                     {"model", model_},
                     {"choices", json::array()},
                     {"usage", usage_of(*usage_)}});
    }
    if (!out.empty()) started_ = true;
    return out;
  }

  bool finished() const override { return finished_; }

 private:
  struct Candidate {
    bool started = false;
    bool finished = false;
    int tools = 0;  // tool calls so far: the next call's OpenAI index
  };

  json chunk(int index, json delta, std::optional<std::string> finish = std::nullopt) const {
    return {{"id", id_},
            {"object", "chat.completion.chunk"},
            {"created", created_},
            {"model", model_},
            {"choices", json::array({{{"index", index},
                                      {"delta", std::move(delta)},
                                      {"logprobs", nullptr},
                                      {"finish_reason", finish ? json(*finish) : json()}}})}};
  }

  std::string model_;
  std::string id_;
  std::int64_t created_;
  bool started_ = false;
  bool finished_ = false;
  std::map<int, Candidate> candidates_;
  std::optional<json> usage_;
};

class GeminiDialect final : public Dialect {
 public:
  explicit GeminiDialect(ProviderConfig p) : p_(std::move(p)) {}

  Outcome<UpstreamCall> chat_request(const json& request, const std::string& model,
                                     bool stream) const override {
    auto body = translate_request(request);
    if (!body) return body.error();
    std::string_view id = model;
    if (id.starts_with("models/")) id.remove_prefix(7);
    UpstreamCall call;
    call.url = join_url(p_.base_url, "/models/" + std::string(id)) +
               (stream ? ":streamGenerateContent?alt=sse" : ":generateContent");
    call.headers = base_headers(p_, stream);
    call.body = dump(*body);
    return call;
  }

  Outcome<json> chat_response(std::string_view body, const std::string& model) const override {
    auto doc = parse_json(body);
    if (!doc || !doc->is_object()) return malformed_upstream("a Gemini answer that is not JSON");
    if (member(*doc, "error") != nullptr) return gemini_error(0, net::Headers{}, &*doc, body);
    return translate_response(*doc, model);
  }

  std::unique_ptr<StreamTranslator> chat_stream(const std::string& model) const override {
    return std::make_unique<GeminiStream>(model);
  }

  Error upstream_error(int status, const net::Headers& headers,
                       std::string_view body) const override {
    auto doc = parse_json(body);
    // Error answers of the streaming endpoint may come as a one-element array.
    if (doc && doc->is_array() && !doc->empty()) doc = json((*doc)[0]);
    return gemini_error(status, headers, doc ? &*doc : nullptr, body);
  }

  Outcome<UpstreamCall> embeddings_request(const json&, const std::string&) const override {
    return Error::bad_request(
        "provider " + p_.name + " is a Gemini API: embeddings need an OpenAI-compatible provider",
        "model");
  }

 private:
  ProviderConfig p_;
};

}  // namespace

std::unique_ptr<Dialect> make_gemini_dialect(const ProviderConfig& provider) {
  return std::make_unique<GeminiDialect>(provider);
}

}  // namespace agentd::ai::detail
