// Fuzzes what a request's bytes go through before a handler runs: HTTP parsing with the
// server's limits, conversion, routing, bearer-token parsing, authentication, query and JSON.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "agentd/api/auth.hpp"
#include "agentd/api/router.hpp"
#include "net/request_conv.hpp"

namespace {

const agentd::api::Router& router() {
  static const agentd::api::Router r = [] {
    agentd::api::Router r;
    for (const char* p : {"/healthz", "/v1/intents/{id}", "/v1/intents/{id}/events",
                          "/v1/artifacts/{path*}", "/mcp"}) {
      r.add("GET", p, nullptr);
    }
    r.add("POST", "/v1/intents", nullptr);
    return r;
  }();
  return r;
}

const agentd::api::Authenticator& authenticator() {
  static const agentd::api::Authenticator a({{"c", "token-0123456789abcdef", {"models:*"}}});
  return a;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto req = agentd::net::detail::parse_request_bytes(bytes, 8192, 65536);
  if (!req) return 0;
  auto m = router().match(req->method, req->path);
  if (m.route) {
    for (const auto& [k, v] : m.params) (void)k, (void)v;
  }
  (void)req->query_param("cursor");
  if (auto h = req->headers.get("authorization")) {
    auto token = agentd::api::bearer_token(*h);
    if (auto* c = authenticator().authenticate(token)) {
      (void)agentd::api::scope_allows(c->scopes, req->path);
    }
  }
  (void)agentd::net::parse_json_object(*req);
  return 0;
}
