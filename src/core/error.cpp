// The agentd error category and its HTTP mapping.
#include "agentd/core/error.hpp"

namespace agentd {
namespace {

class Category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "agentd"; }
  std::string message(int ev) const override {
    switch (static_cast<Errc>(ev)) {
      case Errc::ok: return "ok";
      case Errc::bad_request: return "bad request";
      case Errc::unauthorized: return "unauthorized";
      case Errc::forbidden: return "forbidden";
      case Errc::not_found: return "not found";
      case Errc::method_not_allowed: return "method not allowed";
      case Errc::payload_too_large: return "payload too large";
      case Errc::timeout: return "timed out";
      case Errc::rate_limited: return "rate limited";
      case Errc::unavailable: return "unavailable";
      case Errc::upstream: return "upstream error";
      case Errc::cancelled: return "cancelled";
      case Errc::conflict: return "conflict";
      case Errc::internal: return "internal error";
    }
    return "unknown error";
  }
};

}  // namespace

const boost::system::error_category& error_category() noexcept {
  static const Category category;
  return category;
}

boost::system::error_code make_error_code(Errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

int http_status(const boost::system::error_code& ec) noexcept {
  if (ec.category() != error_category()) return 500;
  switch (static_cast<Errc>(ec.value())) {
    case Errc::ok: return 200;
    case Errc::bad_request: return 400;
    case Errc::unauthorized: return 401;
    case Errc::forbidden: return 403;
    case Errc::not_found: return 404;
    case Errc::method_not_allowed: return 405;
    case Errc::payload_too_large: return 413;
    case Errc::timeout: return 504;
    case Errc::rate_limited: return 429;
    case Errc::unavailable: return 503;
    case Errc::upstream: return 502;
    case Errc::cancelled: return 499;
    case Errc::conflict: return 409;
    case Errc::internal: return 500;
  }
  return 500;
}

ConfigError::ConfigError(std::string path, std::string message)
    : std::runtime_error(path.empty() ? message : path + ": " + message),
      path_(std::move(path)),
      detail_(std::move(message)) {}

}  // namespace agentd
