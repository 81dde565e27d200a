// URL splitting for the HTTP client, and error descriptions (kept out of the Beast TU).
#include <charconv>

#include "agentd/net/client.hpp"

namespace agentd::net {

std::optional<Url> parse_url(std::string_view s) {
  Url u;
  if (s.starts_with("http://")) {
    u.scheme = "http";
    s.remove_prefix(7);
  } else if (s.starts_with("https://")) {
    u.scheme = "https";
    s.remove_prefix(8);
  } else {
    return std::nullopt;
  }
  auto end = s.find_first_of("/?#");
  std::string_view authority = s.substr(0, end);
  std::string_view rest = end == std::string_view::npos ? std::string_view() : s.substr(end);
  if (auto hash = rest.find('#'); hash != std::string_view::npos) rest = rest.substr(0, hash);
  if (authority.find('@') != std::string_view::npos) return std::nullopt;  // no userinfo
  std::string_view host, port;
  if (authority.starts_with("[")) {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = authority.substr(1, close - 1);
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return std::nullopt;
      port = after.substr(1);
    }
  } else {
    auto colon = authority.rfind(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (host.empty() || host.find_first_of(" \t\r\n") != std::string_view::npos) return std::nullopt;
  u.host = std::string(host);
  if (port.empty()) {
    u.port = u.tls() ? 443 : 80;
  } else {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
    if (ec != std::errc() || p != port.data() + port.size() || v == 0 || v > 65535) {
      return std::nullopt;
    }
    u.port = static_cast<std::uint16_t>(v);
  }
  if (rest.empty()) {
    u.target = "/";
  } else if (rest[0] == '?') {
    u.target = "/" + std::string(rest);
  } else {
    u.target = std::string(rest);
  }
  if (u.target.find_first_of(" \r\n") != std::string::npos) return std::nullopt;
  return u;
}

std::string Url::host_header() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if (port != (tls() ? 443 : 80)) h += ":" + std::to_string(port);
  return h;
}

std::string Url::origin() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return scheme + "://" + h + ":" + std::to_string(port);
}

std::string describe(const ClientError& e) {
  switch (e.kind) {
    case ClientError::Kind::timeout:
      return e.phase + " timeout: " + e.message;
    default:
      return e.message;
  }
}

}  // namespace agentd::net
