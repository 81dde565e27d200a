// Provider dialects: pure translation (no I/O) between agentd's canonical request/response
// shape, which is OpenAI Chat Completions, and each upstream API's native wire format.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agentd/ai/config.hpp"
#include "agentd/ai/types.hpp"
#include "agentd/net/http.hpp"
#include "agentd/net/sse.hpp"

namespace agentd::ai {

using nlohmann::json;

// One upstream HTTP call, ready for the HTTP client.
struct UpstreamCall {
  std::string method = "POST";
  std::string url;
  net::Headers headers;  // includes auth and content-type
  std::string body;
};

// A chat.completion as the client gets it: its bytes, and its usage object when it has one.
struct ChatText {
  std::string body;
  std::optional<json> usage;
};

// One chat.completion.chunk on its way out, with what the gateway reads from it, so that it is
// parsed once (or, for OpenAI-compatible upstreams, scanned without a DOM) and not again.
struct ChunkText {
  std::string text;         // the chunk's JSON text; empty when only `doc` is set
  std::optional<json> doc;  // the chunk as a DOM, when a translator built one
  bool usage_only = false;  // a usage chunk: usage set, choices absent or empty
  std::optional<json> usage;  // with usage_only: the usage object
  bool meaningful = false;    // commits the answer (meaningful_chunk)
  std::size_t content_bytes = 0;  // bytes of choices[].delta.content

  static ChunkText from(json chunk);  // facts read from the DOM; the text is made on demand
  std::string take_text();            // the text, dumped from `doc` when needed
  json take_doc();                    // the DOM, parsed from `text` when needed
};

// A chunk that commits the answer: content, reasoning, a refusal, a tool call, a finish or usage.
bool meaningful_chunk(const json& chunk);
// A chunk that carries only usage (choices absent or empty).
bool is_usage_chunk(const json& chunk);

// Turns an upstream event stream into OpenAI `chat.completion.chunk` objects.
class StreamTranslator {
 public:
  virtual ~StreamTranslator() = default;
  // One upstream SSE event in; zero or more chunks out (each a complete chat.completion.chunk
  // with `id`, `object`, `created`, `model`, `choices`). An upstream in-band error event
  // comes back as an Error. The final usage chunk (empty `choices`, `usage` set) is emitted
  // when the upstream reports usage, whether or not the client asked for it: the caller
  // drops it when `stream_options.include_usage` was not set.
  virtual Outcome<std::vector<json>> on_event(const net::SseEvent& event) = 0;
  // The same chunks for the gateway's stream: by default on_event's DOMs; a translator that
  // can pass chunks through as text (OpenAI-compatible upstreams) skips the DOM.
  virtual Outcome<std::vector<ChunkText>> on_event_text(const net::SseEvent& event);
  // True once the upstream has signalled the end of the answer ([DONE], message_stop, or a
  // finishReason for Gemini). A stream that ends without it was cut off.
  virtual bool finished() const = 0;
};

class Dialect {
 public:
  virtual ~Dialect() = default;

  // Builds the upstream call for a canonical (OpenAI-shaped) chat request. `request` has
  // already been validated (messages is a non-empty array; roles known); the dialect rejects
  // what its API cannot express with Error::bad_request naming the field. `model` is the
  // upstream model id to send. `stream` selects the streaming endpoint/flag.
  virtual Outcome<UpstreamCall> chat_request(const json& request, const std::string& model,
                                             bool stream) const = 0;
  // A 2xx non-streaming upstream body → an OpenAI `chat.completion` object, with `model` set
  // to `model` and usage mapped (prompt_tokens, completion_tokens, total_tokens,
  // prompt_tokens_details.cached_tokens when known).
  virtual Outcome<json> chat_response(std::string_view body, const std::string& model) const = 0;
  // The same answer as the bytes for the client, and its usage (an object, when present). By
  // default chat_response serialised; OpenAI-compatible upstreams splice `model` into the
  // upstream's bytes instead. Errors are chat_response's.
  virtual Outcome<ChatText> chat_response_text(std::string_view body,
                                               const std::string& model) const;
  // A translator for one streaming answer.
  virtual std::unique_ptr<StreamTranslator> chat_stream(const std::string& model) const = 0;
  // A non-2xx upstream answer → Error with kind/status/message/retry_after filled in
  // (context-window errors recognised from the provider's message/code).
  virtual Error upstream_error(int status, const net::Headers& headers,
                               std::string_view body) const = 0;

  // OpenAI-compatible extras (embeddings, audio). Other kinds answer Error::bad_request.
  virtual Outcome<UpstreamCall> embeddings_request(const json& request,
                                                   const std::string& model) const = 0;
};

std::unique_ptr<Dialect> make_dialect(const ProviderConfig& provider);

// Parses a Retry-After header (delta-seconds or HTTP-date) or OpenAI's
// x-ratelimit-reset-* hints; nullopt when absent or unparseable.
std::optional<std::chrono::milliseconds> parse_retry_after(const net::Headers& headers);

// Sets the provider's API key header per its AuthStyle (passthrough.cpp).
void add_auth(net::Headers& headers, const ProviderConfig& provider);

// Pass-through for OpenAI-compatible routes with non-chat bodies (audio): POST
// base_url + "/" + path with the body as is, auth and extra headers added (passthrough.cpp).
Outcome<UpstreamCall> passthrough_request(const ProviderConfig& provider, std::string_view path,
                                          std::string_view content_type, std::string body);

// multipart/form-data: the body with one field's value replaced (the model name, on its way
// upstream); unchanged when the field is absent. Reading a field: multipart_field (gateway.hpp).
std::string replace_multipart_field(std::string_view content_type, std::string_view body,
                                    std::string_view field, std::string_view value);

}  // namespace agentd::ai
