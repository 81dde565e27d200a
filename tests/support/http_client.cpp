// Blocking test client over POSIX sockets and OpenSSL.
#include "support/http_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace agentd::test {
namespace {

using Clock = std::chrono::steady_clock;

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

int wait_readable(int fd, Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() < 0) left = std::chrono::milliseconds(0);
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(left.count()));
}

}  // namespace

std::unique_ptr<Connection> Connection::open(std::uint16_t port,
                                             std::optional<TlsClientOptions> tls,
                                             std::chrono::milliseconds timeout) {
  std::unique_ptr<Connection> c(new Connection());
  c->fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd_ < 0) return nullptr;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(c->fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return nullptr;
  int one = 1;
  ::setsockopt(c->fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  ::setsockopt(c->fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (tls) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    c->ssl_ctx_ = ctx;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    if (SSL_CTX_load_verify_locations(ctx, tls->ca_file.c_str(), nullptr) != 1) return nullptr;
    SSL* ssl = SSL_new(ctx);
    c->ssl_ = ssl;
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), "127.0.0.1");
    SSL_set_fd(ssl, c->fd_);
    ::setsockopt(c->fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (SSL_connect(ssl) != 1) {
      ERR_clear_error();
      return nullptr;
    }
    timeval zero{0, 0};
    ::setsockopt(c->fd_, SOL_SOCKET, SO_RCVTIMEO, &zero, sizeof zero);
  }
  return c;
}

Connection::~Connection() {
  if (ssl_) SSL_free(static_cast<SSL*>(ssl_));
  if (ssl_ctx_) SSL_CTX_free(static_cast<SSL_CTX*>(ssl_ctx_));
  if (fd_ >= 0) ::close(fd_);
}

void Connection::shrink_receive_buffer() {
  int size = 4096;
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
}

bool Connection::send(std::string_view bytes) {
  while (!bytes.empty()) {
    long n;
    if (ssl_) {
      n = SSL_write(static_cast<SSL*>(ssl_), bytes.data(), static_cast<int>(bytes.size()));
    } else {
      n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    }
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

long Connection::read_raw(char* buf, std::size_t n, Clock::time_point deadline) {
  for (;;) {
    if (ssl_ && SSL_pending(static_cast<SSL*>(ssl_)) > 0) {
      return SSL_read(static_cast<SSL*>(ssl_), buf, static_cast<int>(n));
    }
    int r = wait_readable(fd_, deadline);
    if (r == 0) return -1;
    if (r < 0) return 0;
    if (ssl_) {
      int got = SSL_read(static_cast<SSL*>(ssl_), buf, static_cast<int>(n));
      if (got > 0) return got;
      int err = SSL_get_error(static_cast<SSL*>(ssl_), got);
      ERR_clear_error();
      if (err == SSL_ERROR_WANT_READ) continue;
      return 0;
    }
    long got = ::recv(fd_, buf, n, 0);
    return got < 0 ? 0 : got;
  }
}

bool Connection::fill(Clock::time_point deadline) {
  char buf[16384];
  long n = read_raw(buf, sizeof buf, deadline);
  if (n <= 0) return false;
  in_.append(buf, static_cast<std::size_t>(n));
  return true;
}

std::string Connection::read_some(std::chrono::milliseconds timeout) {
  if (!in_.empty()) return std::exchange(in_, {});
  if (!fill(Clock::now() + timeout)) return {};
  return std::exchange(in_, {});
}

bool Connection::read_until(std::string& acc, std::string_view needle,
                            std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    acc += std::exchange(in_, {});
    if (acc.find(needle) != std::string::npos) return true;
    if (!fill(deadline)) return false;
  }
}

bool Connection::wait_closed(std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  char buf[16384];
  for (;;) {
    long n = read_raw(buf, sizeof buf, deadline);
    if (n == 0) return true;
    if (n < 0) return false;
  }
}

std::optional<HttpResponse> Connection::read_head(std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  std::size_t end;
  while ((end = in_.find("\r\n\r\n")) == std::string::npos) {
    if (!fill(deadline)) return std::nullopt;
  }
  HttpResponse r;
  std::string head = in_.substr(0, end);
  in_.erase(0, end + 4);
  auto line_end = head.find("\r\n");
  std::string status_line = head.substr(0, line_end);
  if (status_line.size() < 12 || status_line.compare(0, 5, "HTTP/") != 0) return std::nullopt;
  r.status = std::atoi(status_line.c_str() + 9);
  std::size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    auto e = head.find("\r\n", pos);
    if (e == std::string::npos) e = head.size();
    auto line = head.substr(pos, e - pos);
    auto colon = line.find(':');
    if (colon != std::string::npos) {
      auto value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      auto& slot = r.headers[lower(line.substr(0, colon))];
      slot = slot.empty() ? value : slot + ", " + value;
    }
    pos = e + 2;
  }
  return r;
}

std::optional<HttpResponse> Connection::read_response(std::chrono::milliseconds timeout,
                                                      bool head) {
  auto deadline = Clock::now() + timeout;
  auto r = read_head(timeout);
  if (!r) return std::nullopt;
  if (r->status == 100) return read_response(timeout, head);
  if (head || r->status == 204 || r->status == 304) return r;
  if (lower(r->header("transfer-encoding")).find("chunked") != std::string::npos) {
    for (;;) {
      std::size_t eol;
      while ((eol = in_.find("\r\n")) == std::string::npos) {
        if (!fill(deadline)) return std::nullopt;
      }
      std::size_t size = std::stoul(in_.substr(0, eol), nullptr, 16);
      while (in_.size() < eol + 2 + size + 2) {
        if (!fill(deadline)) return std::nullopt;
      }
      r->body.append(in_, eol + 2, size);
      in_.erase(0, eol + 2 + size + 2);
      if (size == 0) break;
    }
  } else if (!r->header("content-length").empty()) {
    std::size_t len = std::stoul(r->header("content-length"));
    while (in_.size() < len) {
      if (!fill(deadline)) return std::nullopt;
    }
    r->body = in_.substr(0, len);
    in_.erase(0, len);
  } else {
    while (fill(deadline)) {
    }
    r->body = std::exchange(in_, {});
  }
  return r;
}

std::string build_request(std::string_view method, std::string_view target,
                          const std::vector<std::pair<std::string, std::string>>& headers,
                          std::string_view body, bool keep_alive) {
  std::string out;
  out.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: 127.0.0.1\r\n");
  bool has_length = false;
  for (const auto& [k, v] : headers) {
    out += k + ": " + v + "\r\n";
    has_length = has_length || lower(k) == "content-length" || lower(k) == "transfer-encoding";
  }
  if (!body.empty() && !has_length) out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  if (!keep_alive) out += "Connection: close\r\n";
  out += "\r\n";
  out.append(body);
  return out;
}

std::optional<HttpResponse> request(std::uint16_t port, std::string_view method,
                                    std::string_view target,
                                    const std::vector<std::pair<std::string, std::string>>& headers,
                                    std::string_view body, std::optional<TlsClientOptions> tls) {
  auto c = Connection::open(port, std::move(tls));
  if (!c) return std::nullopt;
  if (!c->send(build_request(method, target, headers, body, false))) return std::nullopt;
  return c->read_response(10s, method == "HEAD");
}

std::string dechunk(std::string_view raw) {
  std::string out;
  for (;;) {
    auto eol = raw.find("\r\n");
    if (eol == std::string_view::npos) break;
    std::size_t size = std::stoul(std::string(raw.substr(0, eol)), nullptr, 16);
    if (size == 0 || raw.size() < eol + 2 + size) break;
    out.append(raw.substr(eol + 2, size));
    raw.remove_prefix(std::min(raw.size(), eol + 2 + size + 2));
  }
  return out;
}

}  // namespace agentd::test
