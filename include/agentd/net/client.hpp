// The outbound HTTP(S) client every module shares: a keep-alive pool per origin, TLS with
// peer verification, an optional HTTP proxy, and a deadline on every phase. Plain interface:
// callers never see Beast.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "agentd/core/metrics.hpp"
#include "agentd/net/http.hpp"

namespace agentd::net {

using std::chrono::milliseconds;

struct ClientTimeouts {
  milliseconds connect{std::chrono::seconds(10)};     // DNS + TCP + TLS handshake
  milliseconds first_byte{std::chrono::seconds(60)};  // request sent → response headers
  milliseconds idle{std::chrono::seconds(60)};        // between two pieces of the body
  milliseconds total{std::chrono::minutes(10)};       // the whole exchange
};

struct ClientRequest {
  std::string method = "GET";
  std::string url;  // http(s)://host[:port]/path?query
  Headers headers;  // Host, Content-Length and User-Agent are added when missing
  std::string body;
  ClientTimeouts timeouts;
  std::string proxy;  // http://host:port; overrides the client's default; "-" for direct
};

struct ClientError {
  enum class Kind {
    bad_url,
    resolve,      // DNS
    connect,      // refused / unreachable
    tls,          // handshake or verification
    timeout,      // see `phase`
    protocol,     // malformed response
    too_large,    // response over ClientConfig::max_response_bytes
    closed,       // the peer closed mid-response
    cancelled,
  };
  Kind kind = Kind::connect;
  std::string phase;    // for timeouts: connect | first_byte | idle | total
  std::string message;  // says which host and what happened; never contains headers
};

template <class T>
using ClientResult = boost::system::result<T, ClientError>;

struct ClientResponse {
  int status = 0;
  Headers headers;
  std::string body;
};

// A response whose body arrives piece by piece (event streams, large downloads).
class ClientStream {
 public:
  virtual ~ClientStream() = default;
  virtual int status() const noexcept = 0;
  virtual const Headers& headers() const noexcept = 0;
  // The next piece of the (de-chunked) body; an empty string at the end of the body.
  virtual boost::asio::awaitable<ClientResult<std::string>> read() = 0;
  // Reads the rest (bounded by max_response_bytes), for error bodies.
  virtual boost::asio::awaitable<ClientResult<std::string>> read_all() = 0;
  // Abandons the response: the connection is closed, not reused. Safe to call from any
  // coroutine on the loop, also while read() is pending (it then fails with `cancelled`).
  virtual void cancel() noexcept = 0;
};

struct ClientConfig {
  std::string proxy;     // default HTTP proxy (http://host:port); empty: direct
  std::string ca_file;   // extra trust anchor (PEM); the system store is always used
  bool verify_peer = true;
  std::size_t max_idle_per_origin = 256;  // as Node's http.Agent (maxFreeSockets)
  milliseconds idle_keepalive{std::chrono::seconds(50)};  // idle pooled connections close after
  std::uint64_t max_response_bytes = 64ull * 1024 * 1024;
  std::string user_agent = "agentd";
};

class HttpClient {
 public:
  virtual ~HttpClient() = default;
  // One exchange, whole body in memory.
  virtual boost::asio::awaitable<ClientResult<ClientResponse>> request(ClientRequest req) = 0;
  // One exchange whose body is read incrementally. The connection returns to the pool when
  // the body has been read to the end and the stream is destroyed.
  virtual boost::asio::awaitable<ClientResult<std::unique_ptr<ClientStream>>> open(
      ClientRequest req) = 0;
  virtual std::size_t idle_connections() const noexcept = 0;
  // Closes every pooled connection (shutdown).
  virtual void close_idle() noexcept = 0;
};

// Metrics: agentd_http_client_requests_total{origin,outcome},
// agentd_http_client_connections_opened_total{origin}.
std::unique_ptr<HttpClient> make_http_client(boost::asio::any_io_executor ex, ClientConfig config,
                                             core::Registry& metrics);

std::string describe(const ClientError& e);

// An absolute http(s) URL split for a request. IPv6 hosts are kept without brackets.
struct Url {
  std::string scheme;  // http | https
  std::string host;
  std::uint16_t port = 0;
  std::string target = "/";  // path and query, never empty
  bool tls() const noexcept { return scheme == "https"; }
  std::string origin() const;  // scheme://host:port (brackets around IPv6)
  std::string host_header() const;  // host[:port] with the port omitted when default
};
std::optional<Url> parse_url(std::string_view url);

}  // namespace agentd::net
