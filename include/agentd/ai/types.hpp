// Values shared by the AI routing layer: the error every AI path returns, and Outcome<T>.
#pragma once

#include <boost/system/result.hpp>

#include <chrono>
#include <optional>
#include <string>

namespace agentd::ai {

// An AI-path failure, already in OpenAI's error vocabulary: `status`, `message`, `type`,
// `code`, `param` go to the client as `{"error":{...}}`; `kind` drives retries and fallback.
struct Error {
  enum class Kind {
    bad_request,     // the request itself is wrong: never retried, never fallen back from
    auth,            // upstream refused our key (401/403): fall back, do not retry
    not_found,       // unknown model upstream (404): fall back
    rate_limited,    // 429: retry after Retry-After, then fall back
    overloaded,      // 529 / 503: retry, then fall back
    server,          // 5xx: retry, then fall back
    timeout,         // connect / first byte / idle / total deadline
    connection,      // refused, reset, TLS, malformed upstream answer
    context_window,  // prompt too long for this target: fall back to a larger window
    content_filter,  // refused by the provider's safety system: surfaced as is
    cancelled,       // the client went away
    limit,           // our own rate limit or budget (429)
  };

  int status = 500;
  std::string message;
  std::string type;   // empty: derived from status (invalid_request_error, rate_limit_error, ...)
  std::string code;
  std::string param;
  Kind kind = Kind::server;
  std::optional<std::chrono::milliseconds> retry_after;
  std::string provider;  // which target failed (empty for our own errors)

  // Worth another attempt on the same target (after backoff).
  bool retryable() const noexcept;
  // Worth trying the next target of a group.
  bool falls_back() const noexcept;
  // The OpenAI error type for `type` when it is empty.
  std::string effective_type() const;

  static Error bad_request(std::string message, std::string param = {}, std::string code = {});
  static Error not_found(std::string message, std::string code = "model_not_found");
  static Error forbidden(std::string message, std::string code = "insufficient_scope");
};

template <class T>
using Outcome = boost::system::result<T, Error>;

// boost::system::result<T, Error>::value() on an error throws this.
class ErrorException : public std::runtime_error {
 public:
  explicit ErrorException(Error e) : std::runtime_error(e.message), error(std::move(e)) {}
  Error error;
};

[[noreturn]] void throw_exception_from_error(const Error& e, const boost::source_location& loc);

}  // namespace agentd::ai
