// HTTP value types: headers, response factories, JSON error bodies, request ids.
#include "agentd/net/http.hpp"

#include <cctype>
#include <random>

namespace agentd::net {

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::optional<std::string_view> Headers::get(std::string_view name) const {
  for (const auto& h : items_) {
    if (iequals(h.name, name)) return std::string_view(h.value);
  }
  return std::nullopt;
}

void Headers::set(std::string_view name, std::string_view value) {
  remove(name);
  add(name, value);
}

void Headers::add(std::string_view name, std::string_view value) {
  items_.push_back({std::string(name), std::string(value)});
}

void Headers::remove(std::string_view name) {
  std::erase_if(items_, [&](const Header& h) { return iequals(h.name, name); });
}

std::optional<std::string> Request::query_param(std::string_view name) const {
  std::string_view q = query;
  while (!q.empty()) {
    auto amp = q.find('&');
    auto part = q.substr(0, amp);
    auto eq = part.find('=');
    auto key = percent_decode(part.substr(0, eq), true);
    if (key == name) {
      return eq == std::string_view::npos ? std::string() : percent_decode(part.substr(eq + 1), true);
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

Response Response::json(int status, const nlohmann::json& body) {
  Response r;
  r.status = status;
  r.headers.set("content-type", "application/json");
  r.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return r;
}

Response Response::text(int status, std::string body, std::string content_type) {
  Response r;
  r.status = status;
  r.headers.set("content-type", content_type);
  r.body = std::move(body);
  return r;
}

Response Response::error(int status, std::string message, std::string type, std::string code) {
  if (type.empty()) type = std::string(error_type_for(status));
  if (code.empty()) {
    for (char c : reason_phrase(status)) {
      code += c == ' ' || c == '-' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
  }
  nlohmann::json body = {{"error", {{"message", message}, {"type", type}, {"code", code}}}};
  return json(status, body);
}

Response Response::stream(SseProducer producer) {
  Response r;
  r.status = 200;
  r.sse = std::move(producer);
  return r;
}

std::string_view reason_phrase(int status) noexcept {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

std::string_view error_type_for(int status) noexcept {
  switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 408: return "timeout_error";
    case 409: return "conflict_error";
    case 429: return "rate_limit_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

JsonBody parse_json_object(const Request& req) {
  JsonBody out;
  if (req.body.empty()) {
    out.error = Response::error(400, "request body is empty; expected a JSON object");
    return out;
  }
  try {
    auto j = nlohmann::json::parse(req.body);
    if (!j.is_object()) {
      out.error = Response::error(400, std::string("expected a JSON object, got ") + j.type_name());
      return out;
    }
    out.value = std::move(j);
  } catch (const nlohmann::json::parse_error& e) {
    out.error = Response::error(400, "request body is not valid JSON (at byte " +
                                         std::to_string(e.byte) + ")");
  } catch (const nlohmann::json::out_of_range&) {
    // A number too large for a double (`1E400`) is not a parse_error but an out_of_range.
    out.error = Response::error(400, "request body has a number out of range (too large for a double)");
  }
  return out;
}

std::string percent_decode(std::string_view s, bool plus_as_space) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else if (plus_as_space && s[i] == '+') {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string new_request_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(24, '0');
  auto a = rng(), b = rng();
  for (int i = 0; i < 16; ++i) id[i] = kHex[(a >> (i * 4)) & 15];
  for (int i = 0; i < 8; ++i) id[16 + i] = kHex[(b >> (i * 4)) & 15];
  return id;
}

}  // namespace agentd::net
