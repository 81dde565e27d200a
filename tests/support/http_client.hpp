// A blocking HTTP/1.1 client over raw sockets (optionally TLS) for tests: full control over
// the bytes sent, so it can also misbehave (trickle, flood, stop reading).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace agentd::test {

using namespace std::chrono_literals;

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct TlsClientOptions {
  std::string ca_file;  // trust this certificate (verification always on)
};

class Connection {
 public:
  // nullptr when the connection (or the TLS handshake) fails.
  static std::unique_ptr<Connection> open(std::uint16_t port,
                                          std::optional<TlsClientOptions> tls = std::nullopt,
                                          std::chrono::milliseconds timeout = 5s);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  bool send(std::string_view bytes);
  // Reads one response (Content-Length, chunked or until close); nullopt on timeout/close.
  std::optional<HttpResponse> read_response(std::chrono::milliseconds timeout = 5s,
                                            bool head = false);
  // Reads just the status line and headers of a response (e.g. an event stream).
  std::optional<HttpResponse> read_head(std::chrono::milliseconds timeout = 5s);
  // Reads whatever arrives within `timeout` (at least one byte unless timeout/close).
  std::string read_some(std::chrono::milliseconds timeout);
  // Reads chunked-body data until `pred(accumulated)` holds; false on timeout/close.
  bool read_until(std::string& acc, std::string_view needle, std::chrono::milliseconds timeout);
  // True when the server closes the connection (EOF or reset) within `timeout`.
  bool wait_closed(std::chrono::milliseconds timeout);
  void shrink_receive_buffer();  // make the kernel buffer small (slow-reader tests)
  int fd() const noexcept { return fd_; }

 private:
  Connection() = default;
  // >0 bytes, 0 on close, -1 on timeout.
  long read_raw(char* buf, std::size_t n, std::chrono::steady_clock::time_point deadline);
  bool fill(std::chrono::steady_clock::time_point deadline);
  int fd_ = -1;
  void* ssl_ctx_ = nullptr;
  void* ssl_ = nullptr;
  std::string in_;
};

std::string build_request(std::string_view method, std::string_view target,
                          const std::vector<std::pair<std::string, std::string>>& headers = {},
                          std::string_view body = {}, bool keep_alive = true);

// One request on a fresh connection.
std::optional<HttpResponse> request(std::uint16_t port, std::string_view method,
                                    std::string_view target,
                                    const std::vector<std::pair<std::string, std::string>>& headers = {},
                                    std::string_view body = {},
                                    std::optional<TlsClientOptions> tls = std::nullopt);

// Decodes a complete chunked body (for raw reads); stops at the last chunk.
std::string dechunk(std::string_view raw);

}  // namespace agentd::test
