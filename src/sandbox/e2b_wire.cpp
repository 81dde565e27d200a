// E2B wire pieces without I/O (see e2b_wire.hpp).
#include "e2b_wire.hpp"

#include <nlohmann/json.hpp>

#include <cctype>
#include <charconv>
#include <ctime>
#include <map>

namespace agentd::sandbox::e2b {

using nlohmann::json;

std::string encode_frame(std::string_view payload, std::uint8_t flags) {
  std::string out(5, '\0');
  auto n = static_cast<std::uint32_t>(payload.size());
  out[0] = static_cast<char>(flags);
  out[1] = static_cast<char>((n >> 24) & 0xff);
  out[2] = static_cast<char>((n >> 16) & 0xff);
  out[3] = static_cast<char>((n >> 8) & 0xff);
  out[4] = static_cast<char>(n & 0xff);
  out.append(payload);
  return out;
}

std::vector<Frame> FrameDecoder::feed(std::string_view piece) {
  std::vector<Frame> out;
  if (!error_.empty()) return out;
  buffer_.append(piece);
  std::size_t at = 0;
  while (buffer_.size() - at >= 5) {
    auto byte = [&](std::size_t i) {
      return static_cast<std::uint32_t>(static_cast<unsigned char>(buffer_[at + i]));
    };
    std::uint8_t flags = static_cast<std::uint8_t>(byte(0));
    std::uint32_t n = (byte(1) << 24) | (byte(2) << 16) | (byte(3) << 8) | byte(4);
    if (n > max_frame_) {
      error_ = "a Connect frame of " + std::to_string(n) + " bytes is over the limit";
      buffer_.clear();
      return out;
    }
    if ((flags & kCompressedFlag) != 0) {
      error_ = "a compressed Connect frame (compression was not negotiated)";
      buffer_.clear();
      return out;
    }
    if (buffer_.size() - at - 5 < n) break;
    out.push_back(Frame{flags, buffer_.substr(at + 5, n)});
    at += 5 + n;
  }
  buffer_.erase(0, at);
  return out;
}

namespace {
constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  auto at = [&](std::size_t k) { return static_cast<unsigned>(static_cast<unsigned char>(in[k])); };
  for (; i + 2 < in.size(); i += 3) {
    unsigned v = (at(i) << 16) | (at(i + 1) << 8) | at(i + 2);
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (i < in.size()) {
    unsigned v = at(i) << 16;
    if (i + 1 < in.size()) v |= at(i + 1) << 8;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += i + 1 < in.size() ? kB64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size() / 4 * 3);
  unsigned acc = 0;
  int bits = 0;
  bool padding = false;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      v = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      v = c - '0' + 52;
    } else if (c == '+' || c == '-') {
      v = 62;
    } else if (c == '/' || c == '_') {
      v = 63;
    } else if (c == '=') {
      padding = true;
      continue;
    } else {
      return std::nullopt;
    }
    if (padding) return std::nullopt;  // data after padding
    acc = (acc << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

namespace {

json parse(std::string_view text) { return json::parse(text, nullptr, /*allow_exceptions=*/false); }

int int_field(const json& j, const char* key, int dflt) {
  auto it = j.find(key);
  if (it == j.end()) return dflt;
  if (it->is_number_integer()) return it->get<int>();
  if (it->is_string()) {  // 64-bit integers may come as strings in protojson
    int v = dflt;
    const auto& s = it->get_ref<const std::string&>();
    std::from_chars(s.data(), s.data() + s.size(), v);
    return v;
  }
  return dflt;
}

std::string str_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

std::optional<ProcessEvent> parse_process_event(std::string_view message) {
  json j = parse(message);
  if (!j.is_object()) return std::nullopt;
  auto ev = j.find("event");
  if (ev == j.end() || !ev->is_object()) return std::nullopt;
  ProcessEvent out;
  if (auto s = ev->find("start"); s != ev->end() && s->is_object()) {
    out.kind = ProcessEvent::Kind::start;
    out.pid = int_field(*s, "pid", 0);
  } else if (auto d = ev->find("data"); d != ev->end() && d->is_object()) {
    out.kind = ProcessEvent::Kind::data;
    for (const char* name : {"stdout", "stderr", "pty"}) {
      auto it = d->find(name);
      if (it == d->end() || !it->is_string()) continue;
      auto bytes = base64_decode(it->get_ref<const std::string&>());
      if (!bytes) return std::nullopt;
      out.stream = name;
      out.data = std::move(*bytes);
      break;
    }
  } else if (auto e = ev->find("end"); e != ev->end() && e->is_object()) {
    out.kind = ProcessEvent::Kind::end;
    out.exit_code = int_field(*e, "exitCode", 0);
    auto ex = e->find("exited");
    out.exited = ex != e->end() && ex->is_boolean() && ex->get<bool>();
    out.status = str_field(*e, "status");
    out.error = str_field(*e, "error");
  } else if (ev->contains("keepalive")) {
    out.kind = ProcessEvent::Kind::keepalive;
  }
  return out;
}

std::optional<Error> parse_end_stream(std::string_view message) {
  json j = parse(message);
  if (!j.is_object()) return Error{Errc::upstream, "malformed Connect end-of-stream message", {}};
  auto e = j.find("error");
  if (e == j.end() || e->is_null()) return std::nullopt;
  if (!e->is_object()) return Error{Errc::upstream, "malformed Connect error", {}};
  std::string code = str_field(*e, "code");
  std::string message_text = str_field(*e, "message");
  return Error{errc_from_connect_code(code),
               "envd: " + (code.empty() ? std::string("unknown") : code) +
                   (message_text.empty() ? "" : ": " + message_text),
               {}};
}

Errc errc_from_connect_code(std::string_view code) {
  static const std::map<std::string_view, Errc> kCodes = {
      {"canceled", Errc::cancelled},
      {"invalid_argument", Errc::bad_request},
      {"out_of_range", Errc::bad_request},
      {"failed_precondition", Errc::conflict},
      {"deadline_exceeded", Errc::timeout},
      {"not_found", Errc::not_found},
      {"already_exists", Errc::conflict},
      {"aborted", Errc::conflict},
      {"permission_denied", Errc::forbidden},
      {"unauthenticated", Errc::unauthorized},
      {"resource_exhausted", Errc::rate_limited},
      {"unavailable", Errc::unavailable},
      {"unimplemented", Errc::conflict},  // not supported by this envd
  };
  auto it = kCodes.find(code);
  return it == kCodes.end() ? Errc::upstream : it->second;
}

Error error_from_http(int status, const net::Headers& headers, std::string_view body,
                      std::string_view what) {
  Error e;
  std::string detail;
  json j = parse(body);
  std::string connect_code;
  if (j.is_object()) {
    detail = str_field(j, "message");
    if (auto c = j.find("code"); c != j.end() && c->is_string()) connect_code = c->get<std::string>();
  } else if (!body.empty() && body.size() < 300) {
    detail = std::string(body);
  }
  if (status == 401) {
    e.code = Errc::unauthorized;
  } else if (status == 403) {
    e.code = Errc::forbidden;
  } else if (status == 404) {
    e.code = Errc::not_found;
  } else if (status == 409) {
    e.code = Errc::conflict;
  } else if (status == 429) {
    e.code = Errc::rate_limited;
  } else if (status == 400 || status == 422) {
    e.code = Errc::bad_request;
  } else if (status == 413) {
    e.code = Errc::payload_too_large;
  } else if (status >= 500) {
    e.code = Errc::unavailable;
  } else {
    e.code = Errc::upstream;
  }
  // A Connect code says more than the status (400 covers several).
  if (!connect_code.empty() && status != 429 && status < 500) {
    e.code = errc_from_connect_code(connect_code);
  }
  if (status == 429) {
    e.retry_after = std::chrono::seconds(1);
    if (auto ra = headers.get("retry-after")) {
      long long secs = -1;
      std::from_chars(ra->data(), ra->data() + ra->size(), secs);
      if (secs >= 0) e.retry_after = std::chrono::seconds(secs);
    }
  }
  e.message = std::string(what) + ": HTTP " + std::to_string(status) +
              (detail.empty() ? "" : " (" + detail + ")");
  return e;
}

std::optional<std::string> sandbox_path(std::string_view path, std::string_view home) {
  std::string full = !path.empty() && path[0] == '/' ? std::string(path)
                                                     : std::string(home) + "/" + std::string(path);
  std::vector<std::string_view> parts;
  std::string_view rest = full;
  while (!rest.empty()) {
    auto slash = rest.find('/');
    auto part = rest.substr(0, slash);
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (parts.empty()) return std::nullopt;
      parts.pop_back();
      continue;
    }
    if (part.find('\0') != std::string_view::npos) return std::nullopt;
    parts.push_back(part);
  }
  std::string out;
  for (auto p : parts) {
    out += '/';
    out += p;
  }
  return out.empty() ? "/" : out;
}

std::optional<TimeMs> parse_rfc3339(std::string_view text) {
  // YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)
  if (text.size() < 20) return std::nullopt;
  auto num = [&](std::size_t at, std::size_t len) -> int {
    int v = 0;
    for (std::size_t i = at; i < at + len; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(text[i]))) return -1;
      v = v * 10 + (text[i] - '0');
    }
    return v;
  };
  std::tm tm{};
  tm.tm_year = num(0, 4) - 1900;
  tm.tm_mon = num(5, 2) - 1;
  tm.tm_mday = num(8, 2);
  tm.tm_hour = num(11, 2);
  tm.tm_min = num(14, 2);
  tm.tm_sec = num(17, 2);
  if (tm.tm_year < 0 || tm.tm_mon < 0 || tm.tm_mday < 1 || tm.tm_hour < 0 || tm.tm_min < 0 ||
      tm.tm_sec < 0 || text[4] != '-' || text[7] != '-' || (text[10] != 'T' && text[10] != 't') ||
      text[13] != ':' || text[16] != ':') {
    return std::nullopt;
  }
  std::size_t at = 19;
  TimeMs ms = 0;
  if (at < text.size() && text[at] == '.') {
    ++at;
    int digits = 0;
    while (at < text.size() && std::isdigit(static_cast<unsigned char>(text[at]))) {
      if (digits < 3) ms = ms * 10 + (text[at] - '0');
      ++digits;
      ++at;
    }
    for (; digits < 3; ++digits) ms *= 10;
  }
  TimeMs offset = 0;
  if (at < text.size() && (text[at] == 'Z' || text[at] == 'z')) {
    ++at;
  } else if (at + 6 <= text.size() && (text[at] == '+' || text[at] == '-')) {
    int h = num(at + 1, 2), m = num(at + 4, 2);
    if (h < 0 || m < 0) return std::nullopt;
    offset = (h * 60 + m) * 60 * 1000 * (text[at] == '+' ? 1 : -1);
    at += 6;
  } else {
    return std::nullopt;
  }
  if (at != text.size()) return std::nullopt;
  TimeMs secs = static_cast<TimeMs>(timegm(&tm));
  return secs * 1000 + ms - offset;
}

std::string url_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace agentd::sandbox::e2b
