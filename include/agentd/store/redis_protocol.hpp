// The Redis client's protocol logic, with no I/O: URL parsing, command encoding, reply parsing
// (hiredis's reader), matching pipelined replies to requests, the connection handshake and
// stream-reply decoding. Public so tests and the benchmark can drive it with strings.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agentd/store/kv.hpp"

namespace agentd::store::redis {

// redis://[user:password@]host[:port][/db], or rediss://... for TLS
struct RedisUrl {
  bool tls = false;  // rediss://
  std::string host;
  std::uint16_t port = 6379;
  std::string user;      // empty: the default user
  std::string password;  // empty: no AUTH
  int db = 0;
  std::string endpoint() const;  // host:port ([v6]:port), for messages
};

// Throws std::invalid_argument with a message naming what is wrong (never the password).
RedisUrl parse_redis_url(std::string_view url);

// Appends one command as a RESP array of bulk strings.
void encode_command(std::string& out, std::span<const std::string_view> args);
void encode_command(std::string& out, const std::vector<std::string_view>& args);
std::string encode_command(const std::vector<std::string_view>& args);

struct Reply {
  enum class Type { nil, status, error, integer, string, array };
  Type type = Type::nil;
  std::int64_t integer = 0;
  std::string str;  // status, error and string replies
  std::vector<Reply> elements;

  bool is_error() const noexcept { return type == Type::error; }
  bool is_nil() const noexcept { return type == Type::nil; }
};

// Incremental RESP2 parser over hiredis's reader: feed bytes as they arrive, take whole replies.
class ReplyParser {
 public:
  ReplyParser();
  ~ReplyParser();
  ReplyParser(const ReplyParser&) = delete;
  ReplyParser& operator=(const ReplyParser&) = delete;
  void feed(std::string_view bytes);
  // The next complete reply, nullopt when more bytes are needed; Errc::internal on malformed
  // input (the connection must then be dropped).
  KvResult<std::optional<Reply>> next();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Pipelining: requests are answered in the order they were written. A request of n commands
// completes with its n-th reply; a request whose caller gave up (timeout) still consumes its
// replies, so later requests keep getting their own. It only counts: the replies themselves
// go wherever the owner of the request keeps them.
class ReplyRouter {
 public:
  using Id = std::uint64_t;
  struct Owner {
    Id id;      // the request the reply belongs to: the oldest pending one
    bool last;  // the reply completes it (it is no longer pending)
  };
  Id push(std::size_t replies);
  // Counts one reply; nullopt when nothing is pending (a reply nobody asked for).
  std::optional<Owner> on_reply();
  // Drops every pending request (connection lost); returns their ids, oldest first.
  std::vector<Id> clear();
  std::size_t pending() const noexcept { return queue_.size(); }

 private:
  struct Pending {
    Id id;
    std::size_t left;  // replies still to come
  };
  std::deque<Pending> queue_;  // front = oldest
  Id next_id_ = 1;
};

// What a new connection sends before callers may use it: AUTH (when a password is set),
// SELECT (db != 0), CLIENT SETNAME, PING (proves the server answers), CLIENT ID (optional).
struct Handshake {
  std::string bytes;
  std::size_t replies = 0;
};
Handshake make_handshake(const RedisUrl& url, std::string_view client_name, bool want_client_id);
// The client id (0 when not asked) or an error naming the step the server refused.
KvResult<std::int64_t> check_handshake(const RedisUrl& url, const std::vector<Reply>& replies,
                                       bool want_client_id);

// XRANGE's reply (an array of [id, [field, value, ...]]): the "d" field of each entry.
KvResult<std::vector<StreamEntry>> decode_entries(const Reply& reply);
// XREAD's reply: entries by stream key (nil: nothing arrived).
KvResult<std::map<std::string, std::vector<StreamEntry>>> decode_xread(const Reply& reply);

// A one-line description of a reply, for error messages.
std::string describe(const Reply& reply);

}  // namespace agentd::store::redis
