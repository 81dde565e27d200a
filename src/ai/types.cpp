// Error's retry/fallback policy by kind, its OpenAI error type, and its factories.
#include "agentd/ai/types.hpp"

#include <stdexcept>

namespace agentd::ai {

bool Error::retryable() const noexcept {
  switch (kind) {
    case Kind::rate_limited:
    case Kind::overloaded:
    case Kind::server:
    case Kind::timeout:
    case Kind::connection:
      return true;
    default:
      return false;
  }
}

bool Error::falls_back() const noexcept {
  switch (kind) {
    case Kind::auth:
    case Kind::not_found:
    case Kind::rate_limited:
    case Kind::overloaded:
    case Kind::server:
    case Kind::timeout:
    case Kind::connection:
    case Kind::context_window:
      return true;
    case Kind::bad_request:
    case Kind::content_filter:
    case Kind::cancelled:
    case Kind::limit:
      return false;
  }
  return false;
}

// OpenAI's vocabulary, with not_found_error for 404 (as Anthropic and net::error_type_for use)
// so one status always yields one type; a model miss still says code "model_not_found".
std::string Error::effective_type() const {
  if (!type.empty()) return type;
  switch (status) {
    case 400:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_error";
    default:
      return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

Error Error::bad_request(std::string message, std::string param, std::string code) {
  Error e;
  e.status = 400;
  e.kind = Kind::bad_request;
  e.message = std::move(message);
  e.param = std::move(param);
  e.code = std::move(code);
  return e;
}

Error Error::not_found(std::string message, std::string code) {
  Error e;
  e.status = 404;
  e.kind = Kind::not_found;
  e.message = std::move(message);
  e.code = std::move(code);
  return e;
}

// Our own refusal (the client's key lacks a scope): final, like a bad request, so it is
// neither retried nor fallen back from (Kind::auth is for upstreams refusing our key).
Error Error::forbidden(std::string message, std::string code) {
  Error e;
  e.status = 403;
  e.kind = Kind::bad_request;
  e.message = std::move(message);
  e.code = std::move(code);
  return e;
}

void throw_exception_from_error(const Error& e, const boost::source_location& /*loc*/) {
  throw ErrorException(e);
}

}  // namespace agentd::ai
