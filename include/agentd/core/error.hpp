// Error codes, Result<T>, and the exception type for start-up/configuration errors.
#pragma once

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <stdexcept>
#include <string>
#include <type_traits>

namespace agentd {

// Expected failures, shared by every module; mapped to an HTTP status in one place.
enum class Errc {
  ok = 0,
  bad_request,
  unauthorized,
  forbidden,
  not_found,
  method_not_allowed,
  payload_too_large,
  timeout,
  rate_limited,
  unavailable,
  upstream,
  cancelled,
  conflict,
  internal,
};

const boost::system::error_category& error_category() noexcept;
boost::system::error_code make_error_code(Errc e) noexcept;

template <class T>
using Result = boost::system::result<T>;

// HTTP status for an error code of our category (500 for anything else).
int http_status(const boost::system::error_code& ec) noexcept;

// A configuration error: `path` is the full key path (`server.tls.cert`), empty for the root.
class ConfigError : public std::runtime_error {
 public:
  ConfigError(std::string path, std::string message);
  const std::string& path() const noexcept { return path_; }
  const std::string& detail() const noexcept { return detail_; }

 private:
  std::string path_;
  std::string detail_;
};

}  // namespace agentd

template <>
struct boost::system::is_error_code_enum<agentd::Errc> : std::true_type {};
