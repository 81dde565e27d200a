// The OpenAI dialect: OpenAI itself and every API that speaks Chat Completions (Azure,
// DeepSeek, vLLM, Ollama, OpenRouter...). Requests and answers pass through nearly as is.
#include <algorithm>

#include "dialect_util.hpp"
#include "openai_scan.hpp"

namespace agentd::ai::detail {
namespace {

// The status an in-band error (no HTTP status of its own) stands for.
int status_for_openai_error(const json& err) {
  if (const json* c = member(err, "code"); c != nullptr && c->is_number_integer()) {
    auto v = c->get<std::int64_t>();
    if (v >= 400 && v <= 599) return static_cast<int>(v);
  }
  auto type = string_at(err, "type").value_or("");
  auto code = string_at(err, "code").value_or("");
  if (type == "invalid_request_error") return 400;
  if (type == "authentication_error" || code == "invalid_api_key") return 401;
  if (type == "permission_error") return 403;
  if (type == "not_found_error" || code == "model_not_found") return 404;
  if (type == "rate_limit_error" || type == "insufficient_quota" || code == "rate_limit_exceeded" ||
      code == "insufficient_quota") {
    return 429;
  }
  if (type == "overloaded_error") return 503;
  return 500;
}

// `{"error": ...}` in any of the shapes OpenAI-compatible servers use → Error. `body` is the
// whole document; `raw` the text for a message of last resort.
Error openai_error(int status, const net::Headers& headers, const json* body,
                   std::string_view raw) {
  std::string message, type, code, param;
  const json* err = body != nullptr ? member(*body, "error") : nullptr;
  if (err != nullptr && err->is_object()) {
    message = string_at(*err, "message").value_or("");
    type = string_at(*err, "type").value_or("");
    code = string_at(*err, "code").value_or("");
    param = string_at(*err, "param").value_or("");
  } else if (err != nullptr && err->is_string()) {
    message = err->get<std::string>();
  } else if (body != nullptr) {
    // vLLM / FastAPI style: {"object":"error","message":...} or {"detail":...}
    message = string_at(*body, "message").value_or(string_at(*body, "detail").value_or(""));
  }
  Error e = upstream_status_error(status, headers, std::move(message), raw);
  e.type = std::move(type);
  e.code = std::move(code);
  e.param = std::move(param);
  if (e.code == "context_length_exceeded" ||
      ((e.kind == Error::Kind::bad_request) && mentions_context_window(e.message))) {
    mark_context_window(e);
  } else if (e.code == "content_filter" || e.code == "content_policy_violation") {
    e.kind = Error::Kind::content_filter;  // Azure's and OpenAI's safety refusals: final
  } else if (e.code == "insufficient_quota" || e.type == "insufficient_quota") {
    // Out of credit: waiting will not help, another target may.
    e.kind = Error::Kind::auth;
    e.retry_after.reset();
  }
  return e;
}

Error in_band_error(const json& doc) {
  const json* err = member(doc, "error");
  int status = err != nullptr ? status_for_openai_error(*err) : 500;
  return openai_error(status, net::Headers{}, &doc, "");
}

std::string with_api_version(std::string url, const ProviderConfig& p) {
  if (!p.api_version.empty()) url += "?api-version=" + p.api_version;
  return url;
}

class OpenAiStream final : public StreamTranslator {
 public:
  explicit OpenAiStream(std::string model) : model_(std::move(model)) {}

  Outcome<std::vector<json>> on_event(const net::SseEvent& event) override {
    std::string_view data = event.data;
    while (!data.empty() && (data.back() == ' ' || data.back() == '\n' || data.back() == '\r')) {
      data.remove_suffix(1);
    }
    while (!data.empty() && data.front() == ' ') data.remove_prefix(1);
    std::vector<json> out;
    if (data.empty() || finished_) return out;
    if (data == "[DONE]") {
      finished_ = true;
      return out;
    }
    auto doc = parse_json(data);
    if (!doc || !doc->is_object()) return malformed_upstream("a stream event that is not JSON");
    if (member(*doc, "error") != nullptr || event.event == "error") return in_band_error(*doc);
    json chunk = std::move(*doc);
    chunk["model"] = model_;
    // Some compatible servers put usage on the last content chunk; the gateway expects it in a
    // chunk of its own (empty choices) so it can drop it when the client did not ask.
    const json* usage = member(chunk, "usage");
    const json* choices = member(chunk, "choices");
    if (usage != nullptr && choices != nullptr && choices->is_array() && !choices->empty()) {
      json usage_chunk = chunk;
      usage_chunk["choices"] = json::array();
      chunk.erase("usage");
      out.push_back(std::move(chunk));
      out.push_back(std::move(usage_chunk));
      return out;
    }
    out.push_back(std::move(chunk));
    return out;
  }

  // The common chunk passes through as text with `model` spliced in; errors, a usage to split
  // off and odd shapes take on_event's DOM path.
  Outcome<std::vector<ChunkText>> on_event_text(const net::SseEvent& event) override {
    std::string_view data = trim_data(event.data);
    std::vector<ChunkText> out;
    if (data.empty() || finished_) return out;
    if (data == "[DONE]") {
      finished_ = true;
      return out;
    }
    if (event.event != "error") {
      auto scan = scan_openai(data);
      if (!scan.object) return malformed_upstream("a stream event that is not JSON");
      bool split = scan.has_usage && scan.choices > 0;
      if (!scan.needs_dom && !scan.error && !split) {
        if (quoted_model_.empty()) quoted_model_ = json_quote(model_);
        ChunkText c;
        c.text = splice_model(data, scan, quoted_model_);
        c.meaningful = scan.meaningful;
        c.content_bytes = scan.content_bytes;
        if (scan.has_usage) {  // choices absent or empty: a usage chunk
          c.usage_only = true;
          c.usage = json::parse(data.substr(scan.usage_begin, scan.usage_end - scan.usage_begin));
        }
        out.push_back(std::move(c));
        return out;
      }
    }
    return StreamTranslator::on_event_text(event);
  }

  bool finished() const override { return finished_; }

 private:
  static std::string_view trim_data(std::string_view data) {
    while (!data.empty() && (data.back() == ' ' || data.back() == '\n' || data.back() == '\r')) {
      data.remove_suffix(1);
    }
    while (!data.empty() && data.front() == ' ') data.remove_prefix(1);
    return data;
  }

  std::string model_;
  std::string quoted_model_;  // model_ as a JSON string, made once per stream
  bool finished_ = false;
};

// A request's members in the DOM's (sorted) key order, each as it is or as `edits` says
// (a value replaces or adds it, nullopt drops it): what copying the request, editing the copy
// and dumping it gives, without copying messages and tools.
struct Edit {
  std::string_view key;
  std::optional<json> value;
};

void append_key(std::string& out, std::string_view key) {
  bool plain = std::none_of(key.begin(), key.end(), [](char c) {
    return c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20;
  });
  if (plain) {
    out.push_back('"');
    out.append(key);
    out.push_back('"');
  } else {
    out.append(json_quote(key));
  }
  out.push_back(':');
}

std::string dump_edited(const json& object, std::vector<Edit> edits) {
  std::sort(edits.begin(), edits.end(), [](const Edit& a, const Edit& b) { return a.key < b.key; });
  std::string out;
  out.reserve(1024);
  nlohmann::detail::serializer<json> ser(nlohmann::detail::output_adapter<char>(out), ' ',
                                         json::error_handler_t::replace);
  out.push_back('{');
  bool first = true;
  auto emit = [&](std::string_view key, const json& value) {
    if (!first) out.push_back(',');
    first = false;
    append_key(out, key);
    ser.dump(value, false, false, 0);
  };
  auto e = edits.begin();
  for (auto it = object.begin(); it != object.end(); ++it) {
    std::string_view key = it.key();
    for (; e != edits.end() && e->key < key; ++e) {
      if (e->value) emit(e->key, *e->value);  // added
    }
    if (e != edits.end() && e->key == key) {
      if (e->value) emit(key, *e->value);  // replaced
      ++e;                                 // or dropped
      continue;
    }
    emit(key, it.value());
  }
  for (; e != edits.end(); ++e) {
    if (e->value) emit(e->key, *e->value);
  }
  out.push_back('}');
  return out;
}

class OpenAiDialect final : public Dialect {
 public:
  explicit OpenAiDialect(ProviderConfig p) : p_(std::move(p)) {}

  Outcome<UpstreamCall> chat_request(const json& request, const std::string& model,
                                     bool stream) const override {
    if (!request.is_object()) return Error::bad_request("the request must be a JSON object");
    std::vector<Edit> edits;
    edits.push_back({"model", json(model)});
    if (stream) {
      edits.push_back({"stream", json(true)});
      auto so = request.find("stream_options");
      json options = so != request.end() && so->is_object() ? *so : json::object();
      options["include_usage"] = true;
      edits.push_back({"stream_options", std::move(options)});
    } else {
      edits.push_back({"stream", std::nullopt});
      edits.push_back({"stream_options", std::nullopt});  // OpenAI rejects it without stream
    }
    if (auto mt = request.find("max_tokens"); p_.max_completion_tokens && mt != request.end()) {
      auto mct = request.find("max_completion_tokens");
      if (mct == request.end() || mct->is_null()) edits.push_back({"max_completion_tokens", *mt});
      edits.push_back({"max_tokens", std::nullopt});
    }
    UpstreamCall call;
    call.url = with_api_version(join_url(p_.base_url, "/chat/completions"), p_);
    call.headers = base_headers(p_, stream);
    call.body = dump_edited(request, std::move(edits));
    return call;
  }

  Outcome<json> chat_response(std::string_view body, const std::string& model) const override {
    auto doc = parse_json(body);
    if (!doc || !doc->is_object()) return malformed_upstream("a chat completion that is not JSON");
    if (member(*doc, "error") != nullptr) return in_band_error(*doc);
    const json* choices = member(*doc, "choices");
    if (choices == nullptr || !choices->is_array()) {
      return malformed_upstream("a chat completion without choices");
    }
    (*doc)["model"] = model;
    return std::move(*doc);
  }

  // One SAX pass instead of a DOM and a dump: `model` is spliced into the upstream's bytes.
  // Errors, duplicate or odd-typed keys of interest go through chat_response for its verdict.
  Outcome<ChatText> chat_response_text(std::string_view body,
                                       const std::string& model) const override {
    auto scan = scan_openai(body);
    if (!scan.object) return malformed_upstream("a chat completion that is not JSON");
    if (scan.needs_dom || scan.error) return Dialect::chat_response_text(body, model);
    if (!scan.choices_array) return malformed_upstream("a chat completion without choices");
    ChatText out;
    out.body = splice_model(body, scan, json_quote(model));
    if (scan.has_usage) {
      out.usage = json::parse(body.substr(scan.usage_begin, scan.usage_end - scan.usage_begin));
    }
    return out;
  }

  std::unique_ptr<StreamTranslator> chat_stream(const std::string& model) const override {
    return std::make_unique<OpenAiStream>(model);
  }

  Error upstream_error(int status, const net::Headers& headers,
                       std::string_view body) const override {
    auto doc = parse_json(body);
    return openai_error(status, headers, doc ? &*doc : nullptr, body);
  }

  Outcome<UpstreamCall> embeddings_request(const json& request,
                                           const std::string& model) const override {
    if (!request.is_object()) return Error::bad_request("the request must be a JSON object");
    json body = request;
    body["model"] = model;
    UpstreamCall call;
    call.url = with_api_version(join_url(p_.base_url, "/embeddings"), p_);
    call.headers = base_headers(p_, false);
    call.body = dump(body);
    return call;
  }

 private:
  ProviderConfig p_;
};

}  // namespace

std::unique_ptr<Dialect> make_openai_dialect(const ProviderConfig& provider) {
  return std::make_unique<OpenAiDialect>(provider);
}

}  // namespace agentd::ai::detail
