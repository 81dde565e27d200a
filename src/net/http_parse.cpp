// Conversion of parsed Beast requests into net::Request, and a byte-level parse for fuzzing.
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/parser.hpp>

#include "request_conv.hpp"

namespace agentd::net::detail {

bool valid_request_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

std::optional<std::string> fill_request(Request& out, BeastRequest&& msg) {
  out.method = std::string(msg.method_string());
  out.target = std::string(msg.target());
  std::string_view t = out.target;
  if (t == "*" && out.method == "OPTIONS") {
    out.path = "*";
  } else {
    if (t.empty() || t.front() != '/') return "request target must be an absolute path";
    auto q = t.find('?');
    out.path = std::string(t.substr(0, q));
    if (q != std::string_view::npos) out.query = std::string(t.substr(q + 1));
    auto hash = out.query.find('#');
    if (hash != std::string::npos) out.query.resize(hash);
  }
  for (const auto& field : msg) {
    out.headers.add(field.name_string(), field.value());
  }
  auto rid = out.headers.get("x-request-id");
  out.request_id = rid && valid_request_id(*rid) ? std::string(*rid) : new_request_id();
  out.body = std::move(msg.body());
  return std::nullopt;
}

std::optional<Request> parse_request_bytes(std::string_view bytes, std::uint64_t max_header,
                                           std::uint64_t max_body) {
  boost::beast::http::request_parser<boost::beast::http::string_body> parser;
  parser.header_limit(static_cast<std::uint32_t>(max_header));
  parser.body_limit(max_body);
  parser.eager(true);
  boost::beast::error_code ec;
  while (!bytes.empty() && !parser.is_done()) {
    std::size_t used = parser.put(boost::asio::buffer(bytes.data(), bytes.size()), ec);
    if (ec == boost::beast::http::error::need_more) {
      // Every byte there is was offered: the rest is an incomplete piece. (Beast expects the
      // next put() after need_more to bring new bytes; offering the same ones again trips its
      // chunk-header state, as the fuzzer found.)
      ec = {};
      break;
    }
    if (ec) return std::nullopt;
    bytes.remove_prefix(used);
  }
  // The end of the bytes is the end of the stream (it completes a body delimited by close).
  if (!parser.is_done() && parser.got_some()) parser.put_eof(ec);
  if (ec || !parser.is_done()) return std::nullopt;
  Request req;
  if (fill_request(req, parser.release())) return std::nullopt;
  return req;
}

}  // namespace agentd::net::detail
