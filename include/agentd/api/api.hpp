// The HTTP face: CORS, authentication, scope checks, routing and the built-in routes
// (/healthz, /readyz, /metrics). Modules register their routes on router().
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "agentd/api/auth.hpp"
#include "agentd/api/router.hpp"
#include "agentd/core/metrics.hpp"
#include "agentd/net/http.hpp"
#include "agentd/net/server.hpp"

namespace agentd::api {

struct ReadyState {
  bool ok = true;
  std::string detail;
};

class Api {
 public:
  Api(std::vector<Client> clients, net::CorsConfig cors, core::Registry& metrics);

  Router& router() noexcept { return router_; }
  const Authenticator& auth() const noexcept { return auth_; }
  // The configured client of that name (a request's `client` after authentication).
  const Client* client_by_name(std::string_view name) const noexcept;
  // A dependency reported by /readyz; the daemon is ready when every check is ok.
  void add_readiness_check(std::string name, std::function<ReadyState()> check);
  // The handler to give the HTTP server.
  net::Handler handler();
  boost::asio::awaitable<net::Response> handle(net::Request& req);

 private:
  bool origin_allowed(std::string_view origin) const;
  void add_cors(const net::Request& req, net::Response& res) const;
  net::Response preflight(const net::Request& req) const;
  net::Response readiness() const;

  Router router_;
  Authenticator auth_;
  net::CorsConfig cors_;
  core::Registry& metrics_;
  std::vector<std::pair<std::string, std::function<ReadyState()>>> checks_;
};

}  // namespace agentd::api
