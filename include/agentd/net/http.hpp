// Plain HTTP request/response types shared by the server, the router and every route.
// No Beast here: routes compile without Beast's templates.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace agentd::net {

class SseStream;

struct Header {
  std::string name;
  std::string value;
};

// Case-insensitive header list that keeps order and duplicates.
class Headers {
 public:
  std::optional<std::string_view> get(std::string_view name) const;
  void set(std::string_view name, std::string_view value);  // replaces every same-named one
  void add(std::string_view name, std::string_view value);
  void remove(std::string_view name);
  bool empty() const noexcept { return items_.empty(); }
  std::size_t size() const noexcept { return items_.size(); }
  auto begin() const noexcept { return items_.begin(); }
  auto end() const noexcept { return items_.end(); }

 private:
  std::vector<Header> items_;
};

bool iequals(std::string_view a, std::string_view b) noexcept;

struct Request {
  std::string method;    // upper case, as sent
  std::string target;    // raw request-target
  std::string path;      // percent-decoded path, without the query
  std::string query;     // raw query string, without '?'
  Headers headers;
  std::string body;
  std::string request_id;  // x-request-id as sent (when sane) or generated
  std::string remote;      // peer address:port
  bool tls = false;
  std::unordered_map<std::string, std::string> params;  // path parameters, set by the router
  std::string client;                                   // authenticated client, set by api

  std::optional<std::string> query_param(std::string_view name) const;
};

// A producer writes events into the stream; the connection writes them to the client.
using SseProducer = std::function<boost::asio::awaitable<void>(std::shared_ptr<SseStream>)>;

struct Response {
  int status = 200;
  Headers headers;
  std::string body;
  SseProducer sse;    // set: the response is an event stream and `body` is ignored
  // With `sse`: each event's `data` is written as is (no SSE framing, no keepalive comments)
  // under the Content-Type set in `headers` — a streamed body in another framing (Connect).
  bool raw_stream = false;
  std::string route;  // route pattern for metrics; empty for requests no route matched
  bool close = false; // close the connection after this response

  static Response json(int status, const nlohmann::json& body);
  static Response text(int status, std::string body, std::string content_type = "text/plain");
  // `{"error":{"message","type","code"}}`; type derived from status when empty.
  static Response error(int status, std::string message, std::string type = {},
                        std::string code = {});
  static Response stream(SseProducer producer);
};

using Handler = std::function<boost::asio::awaitable<Response>(Request&)>;

std::string_view reason_phrase(int status) noexcept;
std::string_view error_type_for(int status) noexcept;

// Parses a JSON object body; a 400 error response says where the JSON broke.
struct JsonBody {
  std::optional<nlohmann::json> value;
  std::optional<Response> error;
};
JsonBody parse_json_object(const Request& req);

std::string percent_decode(std::string_view s, bool plus_as_space);
std::string new_request_id();

}  // namespace agentd::net
