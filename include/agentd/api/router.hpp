// Method + path routing with `{param}` segments and a trailing `{rest*}` capture.
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "agentd/net/http.hpp"

namespace agentd::api {

struct RouteOptions {
  bool open = false;  // no authentication (only /healthz)
  std::string scope;  // scope the client needs; empty: any authenticated client
};

struct Route {
  std::string method;
  std::string pattern;
  std::vector<std::string> segments;
  net::Handler handler;
  RouteOptions options;
};

struct RouteMatch {
  const Route* route = nullptr;                          // null: no route
  std::unordered_map<std::string, std::string> params;   // percent-decoded
  std::vector<std::string> allowed;                      // methods, when only the method differs
};

class Router {
 public:
  // Throws std::invalid_argument on a malformed pattern or a duplicate route.
  void add(std::string method, std::string pattern, net::Handler handler, RouteOptions options = {});
  // Literal segments win over parameters; HEAD falls back to GET.
  RouteMatch match(std::string_view method, std::string_view raw_path) const;
  const std::vector<Route>& routes() const noexcept { return routes_; }

 private:
  std::vector<Route> routes_;
};

}  // namespace agentd::api
