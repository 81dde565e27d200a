// Pass-through calls for OpenAI-compatible routes that need no translation (audio), and the
// small multipart/form-data handling they need.
#include "agentd/ai/gateway.hpp"
#include "dialect.hpp"

namespace agentd::ai {
namespace {

std::optional<std::string> boundary_of(std::string_view content_type) {
  auto pos = content_type.find("boundary=");
  if (pos == std::string_view::npos) return std::nullopt;
  auto b = content_type.substr(pos + 9);
  if (auto semi = b.find(';'); semi != std::string_view::npos) b = b.substr(0, semi);
  if (b.size() >= 2 && b.front() == '"' && b.back() == '"') b = b.substr(1, b.size() - 2);
  if (b.empty()) return std::nullopt;
  return std::string(b);
}

// The [start, end) of a plain field's value inside the body.
std::optional<std::pair<std::size_t, std::size_t>> find_field(std::string_view content_type,
                                                             std::string_view body,
                                                             std::string_view field) {
  auto boundary = boundary_of(content_type);
  if (!boundary) return std::nullopt;
  std::string delim = "--" + *boundary;
  std::string needle = "name=\"" + std::string(field) + "\"";
  std::size_t pos = 0;
  while ((pos = body.find(delim, pos)) != std::string_view::npos) {
    std::size_t headers_start = pos + delim.size();
    auto headers_end = body.find("\r\n\r\n", headers_start);
    if (headers_end == std::string_view::npos) return std::nullopt;
    auto headers = body.substr(headers_start, headers_end - headers_start);
    std::size_t value_start = headers_end + 4;
    auto next = body.find("\r\n" + delim, value_start);
    if (next == std::string_view::npos) return std::nullopt;
    auto name_at = headers.find(needle);
    // The name must stand alone (not filename="..."), i.e. be preceded by "; " or a space.
    if (name_at != std::string_view::npos && name_at > 0 &&
        (headers[name_at - 1] == ' ' || headers[name_at - 1] == ';')) {
      return std::make_pair(value_start, next);
    }
    pos = next + 2;
  }
  return std::nullopt;
}

}  // namespace

void add_auth(net::Headers& headers, const ProviderConfig& provider) {
  if (provider.api_key.empty()) return;
  switch (provider.auth) {
    case AuthStyle::bearer: headers.set("authorization", "Bearer " + provider.api_key); break;
    case AuthStyle::api_key_header: headers.set("api-key", provider.api_key); break;
    case AuthStyle::x_api_key: headers.set("x-api-key", provider.api_key); break;
    case AuthStyle::x_goog_api_key: headers.set("x-goog-api-key", provider.api_key); break;
    case AuthStyle::none: break;
  }
}

std::optional<std::string> multipart_field(std::string_view content_type, std::string_view body,
                                           std::string_view field) {
  auto range = find_field(content_type, body, field);
  if (!range) return std::nullopt;
  return std::string(body.substr(range->first, range->second - range->first));
}

std::string replace_multipart_field(std::string_view content_type, std::string_view body,
                                    std::string_view field, std::string_view value) {
  auto range = find_field(content_type, body, field);
  std::string out(body);
  if (range) out.replace(range->first, range->second - range->first, value);
  return out;
}

Outcome<UpstreamCall> passthrough_request(const ProviderConfig& provider, std::string_view path,
                                          std::string_view content_type, std::string body) {
  if (provider.kind != ProviderKind::openai) {
    return Error::bad_request("provider " + provider.name +
                              " is not OpenAI-compatible: this route needs an openai-kind provider");
  }
  UpstreamCall call;
  call.url = provider.base_url + "/" + std::string(path);
  if (!provider.api_version.empty()) call.url += "?api-version=" + provider.api_version;
  call.headers.set("content-type", content_type);
  add_auth(call.headers, provider);
  for (const auto& h : provider.headers) call.headers.set(h.name, h.value);
  call.body = std::move(body);
  return call;
}

}  // namespace agentd::ai
