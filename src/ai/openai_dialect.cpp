// The OpenAI dialect: OpenAI itself and every API that speaks Chat Completions (Azure,
// DeepSeek, vLLM, Ollama, OpenRouter...). Requests and answers pass through nearly as is.
#include "dialect_util.hpp"

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

  bool finished() const override { return finished_; }

 private:
  std::string model_;
  bool finished_ = false;
};

class OpenAiDialect final : public Dialect {
 public:
  explicit OpenAiDialect(ProviderConfig p) : p_(std::move(p)) {}

  Outcome<UpstreamCall> chat_request(const json& request, const std::string& model,
                                     bool stream) const override {
    if (!request.is_object()) return Error::bad_request("the request must be a JSON object");
    json body = request;
    body["model"] = model;
    if (stream) {
      body["stream"] = true;
      if (!body.contains("stream_options") || !body["stream_options"].is_object()) {
        body["stream_options"] = json::object();
      }
      body["stream_options"]["include_usage"] = true;
    } else {
      body.erase("stream");
      body.erase("stream_options");  // OpenAI rejects stream_options without stream
    }
    if (p_.max_completion_tokens && body.contains("max_tokens")) {
      if (!body.contains("max_completion_tokens") || body["max_completion_tokens"].is_null()) {
        body["max_completion_tokens"] = body["max_tokens"];
      }
      body.erase("max_tokens");
    }
    UpstreamCall call;
    call.url = with_api_version(join_url(p_.base_url, "/chat/completions"), p_);
    call.headers = base_headers(p_, stream);
    call.body = dump(body);
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
