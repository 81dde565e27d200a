// Parsing and validation of the `server` section.
#include <boost/asio/ip/address.hpp>

#include <fstream>

#include "agentd/core/units.hpp"
#include "agentd/net/server.hpp"

namespace agentd::net {
namespace {

ListenerConfig parse_listen(const core::ConfigNode& node, bool tls_configured) {
  std::string text = node.as_string();
  std::string_view s = text;
  ListenerConfig l;
  l.tls = tls_configured;
  if (s.starts_with("https://")) {
    l.tls = true;
    s.remove_prefix(8);
  } else if (s.starts_with("http://")) {
    l.tls = false;
    s.remove_prefix(7);
  }
  if (l.tls && !tls_configured) node.fail("https listener needs server.tls (cert and key)");
  std::string_view host, port;
  if (s.starts_with("[")) {
    auto close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      node.fail("expected [IPv6]:PORT, got \"" + text + "\"");
    }
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string_view::npos) node.fail("expected HOST:PORT, got \"" + text + "\"");
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  if (host.empty()) node.fail("missing host in \"" + text + "\" (use 0.0.0.0 for all interfaces)");
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(std::string(port)) > 65535) {
    node.fail("expected a port number 0-65535 in \"" + text + "\"");
  }
  l.host = host == "localhost" ? "127.0.0.1" : std::string(host);
  boost::system::error_code ec;
  boost::asio::ip::make_address(l.host, ec);
  if (ec) node.fail("expected a numeric IP address or localhost, got \"" + std::string(host) + "\"");
  l.port = static_cast<std::uint16_t>(std::stoi(std::string(port)));
  return l;
}

void check_readable(const core::ConfigNode& node, const std::string& file) {
  std::ifstream in(file);
  if (!in) node.fail("cannot read " + file);
}

}  // namespace

std::string Endpoint::url() const {
  bool v6 = host.find(':') != std::string::npos;
  return scheme + "://" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

ServerConfig parse_server_config(const core::ConfigNode& node) {
  ServerConfig c;
  node.expect_map();

  if (auto tls = node.get("tls")) {
    TlsConfig t;
    tls->expect_map();
    auto cert = tls->required("cert");
    auto key = tls->required("key");
    t.cert_file = cert.as_string();
    t.key_file = key.as_string();
    check_readable(cert, t.cert_file);
    check_readable(key, t.key_file);
    t.min_version = tls->get_string("min_version", t.min_version);
    if (t.min_version != "1.2" && t.min_version != "1.3") {
      tls->child("min_version").fail("expected \"1.2\" or \"1.3\"");
    }
    tls->finish();
    c.tls = std::move(t);
  }

  if (auto listen = node.get("listen")) {
    c.listeners.clear();
    if (listen->is_sequence()) {
      for (auto& item : listen->items()) c.listeners.push_back(parse_listen(item, c.tls.has_value()));
      if (c.listeners.empty()) listen->fail("needs at least one address");
    } else {
      c.listeners.push_back(parse_listen(*listen, c.tls.has_value()));
    }
  } else if (c.tls) {
    for (auto& l : c.listeners) l.tls = true;
  }

  if (auto limits = node.get("limits")) {
    c.max_header_bytes = limits->get_size("max_header_size", c.max_header_bytes);
    if (c.max_header_bytes < 1024 || c.max_header_bytes > 1024 * 1024) {
      limits->child("max_header_size").fail("must be between 1KiB and 1MiB");
    }
    c.max_body_bytes = limits->get_size("max_body_size", c.max_body_bytes);
    if (c.max_body_bytes > 1024ull * 1024 * 1024) {
      limits->child("max_body_size").fail("must be at most 1GiB");
    }
    c.max_connections = static_cast<std::size_t>(
        limits->get_int("max_connections", static_cast<std::int64_t>(c.max_connections), 1, 1'000'000));
    c.max_requests_per_connection = static_cast<std::size_t>(limits->get_int(
        "max_requests_per_connection", static_cast<std::int64_t>(c.max_requests_per_connection), 0,
        1'000'000'000));
    limits->finish();
  }

  if (auto t = node.get("timeouts")) {
    auto positive = [&](std::string_view key, milliseconds fallback) {
      auto v = t->get_duration(key, fallback);
      if (v.count() <= 0) t->child(key).fail("must be greater than 0");
      return v;
    };
    c.header_timeout = positive("header", c.header_timeout);
    c.body_timeout = positive("body", c.body_timeout);
    c.idle_timeout = positive("idle", c.idle_timeout);
    c.write_timeout = positive("write", c.write_timeout);
    c.handler_timeout = positive("handler", c.handler_timeout);
    t->finish();
  }

  c.shutdown_grace = node.get_duration("shutdown_grace", c.shutdown_grace);
  c.busy_poll = std::chrono::microseconds(node.get_int("busy_poll_us", 0, 0, 10'000));

  if (auto sse = node.get("sse")) {
    c.sse_keepalive = sse->get_duration("keepalive", c.sse_keepalive);
    if (c.sse_keepalive.count() <= 0) sse->child("keepalive").fail("must be greater than 0");
    c.sse_max_queued = static_cast<std::size_t>(
        sse->get_int("max_queued_events", static_cast<std::int64_t>(c.sse_max_queued), 1, 1'000'000));
    sse->finish();
  }

  if (auto cors = node.get("cors")) {
    c.cors.allow_origins = cors->get_strings("allow_origins");
    for (std::size_t i = 0; i < c.cors.allow_origins.size(); ++i) {
      const auto& o = c.cors.allow_origins[i];
      if (o != "*" && !core::is_http_url(o)) {
        cors->child("allow_origins").fail("entry " + std::to_string(i) +
                                          ": expected \"*\" or an origin such as "
                                          "https://chat.example.com, got \"" + o + "\"");
      }
    }
    if (cors->get("allow_headers")) c.cors.allow_headers = cors->get_strings("allow_headers");
    if (cors->get("expose_headers")) c.cors.expose_headers = cors->get_strings("expose_headers");
    c.cors.max_age = cors->get_duration("max_age", c.cors.max_age);
    c.cors.allow_credentials = cors->get_bool("allow_credentials", c.cors.allow_credentials);
    bool wildcard = false;
    for (const auto& o : c.cors.allow_origins) wildcard = wildcard || o == "*";
    if (wildcard && c.cors.allow_credentials) {
      cors->child("allow_credentials").fail("cannot be true when allow_origins contains \"*\"");
    }
    cors->finish();
  }

  node.finish();
  return c;
}

}  // namespace agentd::net
