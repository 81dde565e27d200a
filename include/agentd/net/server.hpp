// The HTTP(S) server: configuration and a plain interface over the Beast implementation.
#pragma once

#include "agentd/core/config.hpp"
#include "agentd/core/metrics.hpp"
#include "agentd/net/http.hpp"

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace agentd::net {

using std::chrono::milliseconds;

struct ListenerConfig {
  std::string host;  // numeric IPv4/IPv6 address or "localhost"
  std::uint16_t port = 0;
  bool tls = false;
};

struct TlsConfig {
  std::string cert_file;  // PEM chain
  std::string key_file;   // PEM private key
  std::string min_version = "1.2";  // 1.2 | 1.3
};

struct CorsConfig {
  std::vector<std::string> allow_origins;  // exact origins or "*"; empty disables CORS
  std::vector<std::string> allow_headers{"authorization", "content-type", "x-request-id",
                                         "last-event-id", "mcp-session-id",
                                         "mcp-protocol-version"};
  std::vector<std::string> expose_headers{"x-request-id", "mcp-session-id"};
  milliseconds max_age{std::chrono::minutes(10)};
  bool allow_credentials = false;
};

struct ServerConfig {
  std::vector<ListenerConfig> listeners{{"127.0.0.1", 8080, false}};
  std::optional<TlsConfig> tls;
  std::uint64_t max_header_bytes = 16 * 1024;
  std::uint64_t max_body_bytes = 4 * 1024 * 1024;
  std::size_t max_connections = 1024;
  std::size_t max_requests_per_connection = 0;  // 0: unlimited
  milliseconds header_timeout{std::chrono::seconds(10)};  // first byte to end of headers
  milliseconds body_timeout{std::chrono::seconds(30)};
  milliseconds idle_timeout{std::chrono::seconds(60)};    // keep-alive wait for a next request
  milliseconds write_timeout{std::chrono::seconds(30)};
  milliseconds handler_timeout{std::chrono::minutes(5)};  // non-streaming routes
  milliseconds shutdown_grace{std::chrono::seconds(10)};
  // The loop polls this long after its last handler before it sleeps (core::run_loop); 0: off.
  std::chrono::microseconds busy_poll{0};
  milliseconds sse_keepalive{std::chrono::seconds(15)};
  std::size_t sse_max_queued = 1024;
  CorsConfig cors;
  bool access_log = true;  // set from log.access_log
};

ServerConfig parse_server_config(const core::ConfigNode& node);

struct Endpoint {
  std::string scheme;  // http | https
  std::string host;
  std::uint16_t port;
  std::string url() const;
};

class HttpServer {
 public:
  virtual ~HttpServer() = default;
  // Binds every listener; throws std::runtime_error naming the address when one cannot bind
  // or the TLS files cannot be loaded.
  virtual std::vector<Endpoint> start() = 0;
  // Stops accepting, closes idle connections, lets requests in flight finish within `grace`,
  // then closes everything; `done` runs on the loop once no connection is left.
  virtual void shutdown(milliseconds grace, std::function<void()> done) = 0;
  virtual std::size_t connections() const noexcept = 0;
  // Reloads the TLS certificate and key (SIGHUP): new connections use them, open ones keep
  // theirs. Returns an error message, empty on success; on error the old ones stay in use.
  virtual std::string reload_tls() = 0;
};

std::unique_ptr<HttpServer> make_http_server(boost::asio::io_context& io, ServerConfig config,
                                             Handler handler, core::Registry& metrics);

}  // namespace agentd::net
