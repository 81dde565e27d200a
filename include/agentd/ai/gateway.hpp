// The AI routing layer: resolves a model name to targets, calls providers with retries,
// fallback and circuit breakers, and answers in OpenAI's shape. The planner calls it
// in-process; api/openai_routes exposes it over HTTP.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agentd/ai/config.hpp"
#include "agentd/ai/state.hpp"
#include "agentd/ai/types.hpp"
#include "agentd/core/metrics.hpp"
#include "agentd/net/client.hpp"

namespace agentd::ai {

using nlohmann::json;

struct CallContext {
  std::string client;      // authenticated client name ("" for internal callers)
  std::string request_id;  // for logs
  bool no_cache = false;   // bypass the response cache for this call
  // The caller reads a stream's chunks with next() (DOMs), not next_text(): each upstream
  // chunk is then parsed once into its DOM instead of scanned, spliced as text and parsed again.
  bool dom_chunks = false;
};

// What happened on a call: response headers, logs and accounting.
struct CallInfo {
  std::string provider;  // the target that answered
  std::string model;     // its upstream model id
  int attempts = 0;      // upstream calls made, all targets together
  std::string cache = "off";  // hit | miss | bypass | off
  std::chrono::microseconds upstream{0};   // time spent waiting for providers
  std::chrono::microseconds overhead{0};   // our own time: total minus upstream
  std::vector<std::string> failures;       // "openai/gpt-4o: 503 ..." for each failed attempt
  std::optional<json> usage;               // OpenAI usage object, when known
  double cost_usd = 0;
};

// A streaming answer whose first chunk is already in hand (fallback is over).
class ChatStream {
 public:
  virtual ~ChatStream() = default;
  virtual const CallInfo& info() const noexcept = 0;
  // The next chat.completion.chunk, nullopt at the end, or an Error when the upstream failed
  // mid-stream (the caller ends the stream with an error event).
  virtual boost::asio::awaitable<Outcome<std::optional<json>>> next() = 0;
  // next() as the chunk's JSON text, for writing it out: the gateway's own streams hand over
  // the text they already have instead of a DOM to serialise. Use one of next/next_text.
  virtual boost::asio::awaitable<Outcome<std::optional<std::string>>> next_text();
  // The client went away: the upstream request is abandoned.
  virtual void cancel() noexcept = 0;
};

// Binary or multipart exchanges (audio) pass through as bytes.
struct RawRequest {
  std::string content_type;
  std::string body;
  std::string model;  // resolved by the caller from the JSON or multipart body
};
struct RawResponse {
  int status = 200;
  std::string content_type;
  std::string body;
};

// One upstream call's usage and estimated cost, for the spend ledger.
struct SpendEvent {
  std::string client;
  std::string provider;
  std::string model;
  std::int64_t tokens_in = 0;
  std::int64_t tokens_out = 0;
  double cost_usd = 0;
  std::string request_id;
};

class Gateway {
 public:
  virtual ~Gateway() = default;
  // Called (on the loop) after every answered call that used tokens: the durable spend
  // ledger. Budgets are enforced by the counters, not by this.
  virtual void on_spend(std::function<void(const SpendEvent&)> fn) = 0;
  // Chat completion, non-streaming. `request` is the client's OpenAI-shaped body.
  virtual boost::asio::awaitable<Outcome<json>> chat(const CallContext& ctx, json request,
                                                     CallInfo& info) = 0;
  // chat() answering with the chat.completion's JSON text, for the HTTP route: an
  // OpenAI-compatible upstream's answer is passed through with `model` spliced in, not parsed
  // into a DOM and serialised again.
  virtual boost::asio::awaitable<Outcome<std::string>> chat_text(const CallContext& ctx,
                                                                 json request, CallInfo& info) = 0;
  // Chat completion, streaming: returns once a target has produced its first chunk, so every
  // failure before that (including fallback) is an Error with an HTTP status.
  virtual boost::asio::awaitable<Outcome<std::unique_ptr<ChatStream>>> chat_stream(
      const CallContext& ctx, json request) = 0;
  virtual boost::asio::awaitable<Outcome<json>> embeddings(const CallContext& ctx, json request,
                                                           CallInfo& info) = 0;
  // `path` is speech or transcriptions (relative to the provider's /v1).
  virtual boost::asio::awaitable<Outcome<RawResponse>> audio(const CallContext& ctx,
                                                             std::string path, RawRequest req,
                                                             CallInfo& info) = 0;
  // Every addressable model, OpenAI list entries with LobeChat's metadata fields.
  virtual std::vector<json> models() const = 0;
  // Whether `name` is an alias or a provider/model this gateway can route.
  virtual bool knows_model(std::string_view name) const = 0;
};

// `counters` and `cache` default to in-process ones (make_memory_counters/make_memory_cache);
// the persistence layer passes Redis-backed ones for several instances.
std::unique_ptr<Gateway> make_gateway(boost::asio::any_io_executor ex, Config config,
                                      net::HttpClient& client, core::Registry& metrics,
                                      std::shared_ptr<Counters> counters = nullptr,
                                      std::shared_ptr<ResponseCache> cache = nullptr);

// multipart/form-data: the value of a plain (non-file) field; nullopt when absent.
std::optional<std::string> multipart_field(std::string_view content_type, std::string_view body,
                                           std::string_view field);

// Checks an OpenAI chat request: Error::bad_request naming the parameter on the first problem.
Outcome<void> validate_chat_request(const json& request);

}  // namespace agentd::ai
