// Helpers shared by the provider dialects (private to src/ai): safe JSON access, status and
// error mapping, headers, data URLs, ids, and one factory per provider kind.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "dialect.hpp"

namespace agentd::ai::detail {

// --- factories (one per dialect file) ---
std::unique_ptr<Dialect> make_openai_dialect(const ProviderConfig& provider);
std::unique_ptr<Dialect> make_anthropic_dialect(const ProviderConfig& provider);
std::unique_ptr<Dialect> make_gemini_dialect(const ProviderConfig& provider);

// --- JSON access that never throws on odd shapes ---

// The member `key` of an object, or nullptr (also when `j` is not an object or it is null).
const json* member(const json& j, std::string_view key);
// `*j`, or a null json when `j` is nullptr (without copying either).
const json& or_null(const json* j);
// The member as a string, or nullopt when absent or not a string.
std::optional<std::string> string_at(const json& j, std::string_view key);
// Serialises without throwing (invalid UTF-8 is replaced).
std::string dump(const json& j);
// Parses an upstream body; nullopt when it is not JSON.
std::optional<json> parse_json(std::string_view body);

// "messages[3]" style paths for error params.
std::string index_path(std::string_view base, std::size_t i);

// --- errors ---

// The Error::Kind an HTTP status implies before the body is looked at.
Error::Kind kind_for_status(int status);
// An Error for a non-2xx upstream answer: kind from status, retry_after from headers, and a
// message (the upstream's when given, else the status and a snippet of the body).
Error upstream_status_error(int status, const net::Headers& headers, std::string message,
                            std::string_view body);
// Whether an upstream message says the prompt did not fit the model's context window.
bool mentions_context_window(std::string_view message);
// Turns `e` into a context-window error (kind, OpenAI's code), keeping status and message.
void mark_context_window(Error& e);
// A 2xx answer we could not make sense of: a connection-kind failure (retry, fall back).
Error malformed_upstream(std::string what);

// --- requests ---

// base_url + path, without doubling the slash between them.
std::string join_url(std::string_view base, std::string_view path);
// content-type, accept, the provider's auth header and its extra headers.
net::Headers base_headers(const ProviderConfig& provider, bool stream);

// A parsed `data:<media type>;base64,<data>` URL.
struct DataUrl {
  std::string media_type;
  std::string data;  // base64
};
// nullopt when `url` is not a data: URL; an error when it is one we cannot use (not base64).
std::optional<Outcome<DataUrl>> parse_data_url(std::string_view url, const std::string& param);
bool is_http_url(std::string_view url);

// Tool call arguments (a JSON text) → a JSON object; an empty string is {}. `param` names the
// field in the error.
Outcome<json> parse_arguments(const json& arguments, const std::string& param);

// "call_" + 24 random alphanumerics, like OpenAI's ids.
std::string new_tool_call_id();
// "chatcmpl-" + 24 random alphanumerics.
std::string new_completion_id();
std::int64_t unix_now();

// OpenAI's usage object.
json make_usage(std::int64_t prompt, std::int64_t completion, std::optional<std::int64_t> cached);

// --- retry hints ---

// An HTTP-date (IMF-fixdate, RFC 850 or asctime form) as a time point.
std::optional<std::chrono::system_clock::time_point> parse_http_date(std::string_view s);
// A Go/protobuf-style duration: "1s", "6m0s", "20ms", "1.5s", "34s" (Gemini's retryDelay).
std::optional<std::chrono::milliseconds> parse_duration(std::string_view s);
// parse_retry_after with an explicit clock, for tests.
std::optional<std::chrono::milliseconds> parse_retry_after_at(
    const net::Headers& headers, std::chrono::system_clock::time_point now);

}  // namespace agentd::ai::detail
