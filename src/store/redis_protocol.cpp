// Redis protocol pieces with no I/O (see redis_protocol.hpp); hiredis is used only as a parser.
#include "agentd/store/redis_protocol.hpp"

#include <hiredis/hiredis.h>

#include <charconv>
#include <stdexcept>

namespace agentd::store::redis {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Userinfo may carry reserved characters percent-encoded (a password with '@' or ':').
std::string percent_decode(std::string_view s, const char* what) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    int hi = i + 1 < s.size() ? hex_value(s[i + 1]) : -1;
    int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      throw std::invalid_argument(std::string("bad percent-escape in the ") + what);
    }
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

template <class Int>
bool parse_int(std::string_view s, Int& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

Error unexpected(std::string_view what, const Reply& r) {
  return Error{Errc::internal, "unexpected " + std::string(what) + " reply from redis: " + describe(r)};
}

}  // namespace

std::string RedisUrl::endpoint() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

RedisUrl parse_redis_url(std::string_view s) {
  constexpr std::string_view kForm = "redis[s]://[user:password@]host[:port][/db]";
  RedisUrl u;
  if (s.starts_with("rediss://")) {
    u.tls = true;
    s.remove_prefix(9);
  } else if (s.starts_with("redis://")) {
    s.remove_prefix(8);
  } else {
    // Never echo the URL: it may hold a password.
    throw std::invalid_argument("expected a URL of the form " + std::string(kForm));
  }
  if (s.find_first_of("?#") != std::string_view::npos) {
    throw std::invalid_argument("query parameters are not supported; expected " + std::string(kForm));
  }
  auto slash = s.find('/');
  std::string_view authority = s.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view() : s.substr(slash + 1);
  if (auto at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    auto colon = userinfo.find(':');
    u.user = percent_decode(userinfo.substr(0, colon), "user name");
    if (colon != std::string_view::npos) {
      u.password = percent_decode(userinfo.substr(colon + 1), "password");
    }
    if (!u.user.empty() && u.password.empty()) {
      throw std::invalid_argument("a user name needs a password (redis://user:password@host)");
    }
  }
  std::string_view host, port;
  if (authority.starts_with("[")) {
    auto close = authority.find(']');
    if (close == std::string_view::npos) throw std::invalid_argument("unterminated [IPv6] host");
    host = authority.substr(1, close - 1);
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') throw std::invalid_argument("expected :port after the [IPv6] host");
      port = after.substr(1);
      if (port.empty()) throw std::invalid_argument("empty port");
    }
  } else {
    auto colon = authority.rfind(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) throw std::invalid_argument("empty port");
    }
  }
  if (host.empty()) throw std::invalid_argument("missing host; expected " + std::string(kForm));
  if (host.find_first_of(" \t\r\n/@") != std::string_view::npos) {
    throw std::invalid_argument("bad character in the host");
  }
  u.host = std::string(host);
  if (!port.empty()) {
    unsigned v = 0;
    if (!parse_int(port, v) || v == 0 || v > 65535) {
      throw std::invalid_argument("the port must be a number from 1 to 65535");
    }
    u.port = static_cast<std::uint16_t>(v);
  }
  if (!path.empty()) {
    int db = 0;
    if (!parse_int(path, db) || db < 0) {
      throw std::invalid_argument("the database (after the last /) must be a number from 0");
    }
    u.db = db;
  }
  return u;
}

void encode_command(std::string& out, std::span<const std::string_view> args) {
  // "*<n>\r\n", then "$<len>\r\n<arg>\r\n" per argument; numbers without std::to_string.
  auto header = [&out](char kind, std::size_t n) {
    char buf[24];
    buf[0] = kind;
    auto [end, ec] = std::to_chars(buf + 1, buf + sizeof buf - 2, n);
    *end++ = '\r';
    *end++ = '\n';
    out.append(buf, end);
  };
  header('*', args.size());
  for (auto a : args) {
    header('$', a.size());
    out.append(a.data(), a.size());
    out += "\r\n";
  }
}

void encode_command(std::string& out, const std::vector<std::string_view>& args) {
  encode_command(out, std::span<const std::string_view>(args));
}

std::string encode_command(const std::vector<std::string_view>& args) {
  std::string out;
  encode_command(out, args);
  return out;
}

// hiredis's reader builds each reply through these, straight into the Reply the parser owns
// (an array's elements are sized when it starts, and each element is built in its place), so
// no hiredis reply object is allocated, converted and freed per reply.
struct ReplyParser::Impl {
  Reply top;  // the reply being built: every task's privdata
  redisReader* reader = nullptr;

  static Reply* place(const redisReadTask* task) {
    if (task->parent) {
      auto* parent = static_cast<Reply*>(task->parent->obj);
      return &parent->elements[static_cast<std::size_t>(task->idx)];
    }
    auto* top = static_cast<Reply*>(task->privdata);
    *top = Reply{};
    return top;
  }
  static void* create_string(const redisReadTask* task, char* s, std::size_t len) {
    Reply* r = place(task);
    r->type = task->type == REDIS_REPLY_ERROR    ? Reply::Type::error
              : task->type == REDIS_REPLY_STATUS ? Reply::Type::status
                                                 : Reply::Type::string;
    r->str.assign(s, len);
    return r;
  }
  static void* create_integer(const redisReadTask* task, long long v) {
    Reply* r = place(task);
    r->type = Reply::Type::integer;
    r->integer = v;
    return r;
  }
  static void* create_nil(const redisReadTask* task) { return place(task); }
  static void free_object(void*) {}  // the parser owns the storage

  Impl() {
    // The element count's type differs between hiredis versions.
    static redisReplyObjectFunctions functions{
        create_string,
        [](const redisReadTask* task, auto elements) -> void* {
          Reply* r = place(task);
          r->type = Reply::Type::array;
          r->elements.resize(static_cast<std::size_t>(elements));
          return r;
        },
        create_integer, create_nil, free_object};
    reader = redisReaderCreateWithFunctions(&functions);
    if (reader) reader->privdata = &top;
  }
  ~Impl() {
    if (reader) redisReaderFree(reader);
  }
};

ReplyParser::ReplyParser() : impl_(std::make_unique<Impl>()) {
  if (!impl_->reader) throw std::bad_alloc();
}

ReplyParser::~ReplyParser() = default;

void ReplyParser::feed(std::string_view bytes) {
  if (!bytes.empty()) redisReaderFeed(impl_->reader, bytes.data(), bytes.size());
}

KvResult<std::optional<Reply>> ReplyParser::next() {
  void* raw = nullptr;
  if (redisReaderGetReply(impl_->reader, &raw) != REDIS_OK) {
    return Error{Errc::internal,
                 std::string("redis protocol error: ") + redisReaderGetError(impl_->reader)};
  }
  if (!raw) return std::optional<Reply>();
  return std::optional<Reply>(std::move(impl_->top));
}

ReplyRouter::Id ReplyRouter::push(std::size_t replies) {
  Id id = next_id_++;
  queue_.push_back(Pending{id, replies == 0 ? 1 : replies});
  return id;
}

std::optional<ReplyRouter::Owner> ReplyRouter::on_reply() {
  if (queue_.empty()) return std::nullopt;
  auto& front = queue_.front();
  Owner owner{front.id, --front.left == 0};
  if (owner.last) queue_.pop_front();
  return owner;
}

std::vector<ReplyRouter::Id> ReplyRouter::clear() {
  std::vector<Id> ids;
  ids.reserve(queue_.size());
  for (const auto& p : queue_) ids.push_back(p.id);
  queue_.clear();
  return ids;
}

Handshake make_handshake(const RedisUrl& url, std::string_view client_name, bool want_client_id) {
  Handshake h;
  if (!url.password.empty()) {
    if (url.user.empty()) {
      encode_command(h.bytes, {"AUTH", url.password});
    } else {
      encode_command(h.bytes, {"AUTH", url.user, url.password});
    }
    ++h.replies;
  }
  if (url.db != 0) {
    auto db = std::to_string(url.db);
    encode_command(h.bytes, {"SELECT", db});
    ++h.replies;
  }
  if (!client_name.empty()) {
    encode_command(h.bytes, {"CLIENT", "SETNAME", client_name});
    ++h.replies;
  }
  encode_command(h.bytes, {"PING"});
  ++h.replies;
  if (want_client_id) {
    encode_command(h.bytes, {"CLIENT", "ID"});
    ++h.replies;
  }
  return h;
}

KvResult<std::int64_t> check_handshake(const RedisUrl& url, const std::vector<Reply>& replies,
                                       bool want_client_id) {
  std::size_t i = 0;
  auto at = "redis at " + url.endpoint();
  auto take = [&]() -> const Reply* { return i < replies.size() ? &replies[i++] : nullptr; };
  if (!url.password.empty()) {
    const Reply* r = take();
    if (!r) return Error{Errc::internal, at + ": no answer to AUTH"};
    if (r->is_error()) return Error{Errc::unavailable, at + " refused AUTH: " + r->str};
  }
  if (url.db != 0) {
    const Reply* r = take();
    if (!r) return Error{Errc::internal, at + ": no answer to SELECT"};
    if (r->is_error()) {
      return Error{Errc::unavailable, at + " refused SELECT " + std::to_string(url.db) + ": " + r->str};
    }
  }
  // The remaining replies: CLIENT SETNAME (if sent), PING, CLIENT ID (if asked).
  std::size_t expect_rest = want_client_id ? 2 : 1;
  if (replies.size() - i < expect_rest) {
    return Error{Errc::internal, at + ": incomplete answer to the connection set-up"};
  }
  for (; i < replies.size(); ++i) {
    const Reply& r = replies[i];
    if (!r.is_error()) continue;
    if (r.str.starts_with("NOAUTH")) {
      return Error{Errc::unavailable, at + " requires a password (" + r.str +
                                          "); give it in the URL: redis://:password@host:port"};
    }
    return Error{Errc::unavailable, at + " refused the connection set-up: " + r.str};
  }
  std::int64_t id = 0;
  if (want_client_id) {
    const Reply& last = replies.back();
    if (last.type != Reply::Type::integer) return unexpected("CLIENT ID", last);
    id = last.integer;
  }
  return id;
}

KvResult<std::vector<StreamEntry>> decode_entries(const Reply& reply) {
  std::vector<StreamEntry> out;
  if (reply.is_nil()) return out;
  if (reply.type != Reply::Type::array) return unexpected("stream range", reply);
  out.reserve(reply.elements.size());
  for (const auto& e : reply.elements) {
    if (e.type != Reply::Type::array || e.elements.size() != 2 ||
        e.elements[0].type != Reply::Type::string) {
      return unexpected("stream entry", e);
    }
    StreamEntry entry;
    entry.id = e.elements[0].str;
    const Reply& fields = e.elements[1];
    if (fields.type == Reply::Type::array) {
      // Our entries have one field "d"; take the first value of anything else.
      for (std::size_t k = 0; k + 1 < fields.elements.size(); k += 2) {
        if (fields.elements[k].str == "d" || k == 0) entry.payload = fields.elements[k + 1].str;
        if (fields.elements[k].str == "d") break;
      }
    }
    out.push_back(std::move(entry));
  }
  return out;
}

KvResult<std::map<std::string, std::vector<StreamEntry>>> decode_xread(const Reply& reply) {
  std::map<std::string, std::vector<StreamEntry>> out;
  if (reply.is_nil()) return out;
  if (reply.type != Reply::Type::array) return unexpected("XREAD", reply);
  for (const auto& s : reply.elements) {
    if (s.type != Reply::Type::array || s.elements.size() != 2 ||
        s.elements[0].type != Reply::Type::string) {
      return unexpected("XREAD stream", s);
    }
    auto entries = decode_entries(s.elements[1]);
    if (!entries) return entries.error();
    out[s.elements[0].str] = std::move(*entries);
  }
  return out;
}

std::string describe(const Reply& r) {
  switch (r.type) {
    case Reply::Type::nil:
      return "nil";
    case Reply::Type::status:
      return "+" + r.str;
    case Reply::Type::error:
      return "-" + r.str;
    case Reply::Type::integer:
      return ":" + std::to_string(r.integer);
    case Reply::Type::string:
      return r.str.size() <= 64 ? "\"" + r.str + "\""
                                : "a string of " + std::to_string(r.str.size()) + " bytes";
    case Reply::Type::array:
      return "an array of " + std::to_string(r.elements.size());
  }
  return "?";
}

}  // namespace agentd::store::redis
