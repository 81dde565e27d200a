// Segment-wise route matching.
#include "agentd/api/router.hpp"

#include <algorithm>
#include <stdexcept>

namespace agentd::api {
namespace {

std::vector<std::string_view> split(std::string_view path) {
  std::vector<std::string_view> out;
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  while (true) {
    auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

bool is_param(std::string_view s) { return s.size() > 2 && s.front() == '{' && s.back() == '}'; }
bool is_rest(std::string_view s) { return is_param(s) && s[s.size() - 2] == '*'; }

}  // namespace

void Router::add(std::string method, std::string pattern, net::Handler handler,
                 RouteOptions options) {
  if (pattern.empty() || pattern.front() != '/') {
    throw std::invalid_argument("route pattern must start with '/': " + pattern);
  }
  Route r{std::move(method), pattern, {}, std::move(handler), std::move(options)};
  auto parts = split(pattern);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (is_rest(parts[i]) && i + 1 != parts.size()) {
      throw std::invalid_argument("{name*} must be the last segment: " + pattern);
    }
    r.segments.emplace_back(parts[i]);
  }
  for (const auto& other : routes_) {
    if (other.method == r.method && other.pattern == r.pattern) {
      throw std::invalid_argument("duplicate route " + r.method + " " + pattern);
    }
  }
  routes_.push_back(std::move(r));
}

RouteMatch Router::match(std::string_view method, std::string_view raw_path) const {
  RouteMatch best;
  int best_score = -1;
  auto parts = split(raw_path);
  std::vector<std::string> allowed;
  for (const auto& r : routes_) {
    std::unordered_map<std::string, std::string> params;
    int score = 0;
    bool ok = true;
    std::size_t i = 0;
    for (; i < r.segments.size() && ok; ++i) {
      const auto& seg = r.segments[i];
      if (is_rest(seg)) {
        std::string rest;
        for (std::size_t k = i; k < parts.size(); ++k) {
          if (k > i) rest += '/';
          rest += net::percent_decode(parts[k], false);
        }
        params[seg.substr(1, seg.size() - 3)] = std::move(rest);
        i = parts.size();
        break;
      }
      if (i >= parts.size()) {
        ok = false;
      } else if (is_param(seg)) {
        if (parts[i].empty()) ok = false;
        else params[seg.substr(1, seg.size() - 2)] = net::percent_decode(parts[i], false);
      } else if (net::percent_decode(parts[i], false) == seg) {
        score += 2;
      } else {
        ok = false;
      }
    }
    if (!ok || i != parts.size()) continue;
    bool method_ok = r.method == method || (method == "HEAD" && r.method == "GET");
    if (!method_ok) {
      if (std::find(allowed.begin(), allowed.end(), r.method) == allowed.end()) {
        allowed.push_back(r.method);
      }
      continue;
    }
    if (r.method == method) score += 1;  // an exact method beats HEAD→GET
    if (score > best_score) {
      best_score = score;
      best.route = &r;
      best.params = std::move(params);
    }
  }
  if (!best.route) best.allowed = std::move(allowed);
  return best;
}

}  // namespace agentd::api
