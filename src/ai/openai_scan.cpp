// The SAX scan of OpenAI chat answers and the `model` splice (see openai_scan.hpp).
#include "openai_scan.hpp"

#include <nlohmann/json.hpp>

#include <boost/container/small_vector.hpp>

#include <cstdint>
#include <iterator>

namespace agentd::ai::detail {
namespace {

using nlohmann::json;

// A pointer iterator that publishes how far the parser has read: the SAX callbacks have no
// positions of their own. nlohmann's lexer reads one character at a time and never reads ahead
// past a string, a structural character or a literal, so at each callback for those the
// cursor sits just after the token.
struct CursorIt {
  using iterator_category = std::forward_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = const char&;

  const char* p = nullptr;
  const char** cursor = nullptr;

  reference operator*() const { return *p; }
  CursorIt& operator++() {
    *cursor = ++p;
    return *this;
  }
  CursorIt operator++(int) {
    CursorIt old = *this;
    ++*this;
    return old;
  }
  bool operator==(const CursorIt& o) const { return p == o.p; }
  bool operator!=(const CursorIt& o) const { return p != o.p; }
};

// What a container is, for the facts we read from it.
enum class Role : std::uint8_t { other, top, choices, choice, delta, tool_calls, usage };
// The keys we look at, by the container they appear in.
enum class Key : std::uint8_t {
  none, model, error, choices, usage, finish_reason, delta, content, reasoning, refusal,
  tool_calls
};

class Scanner {
 public:
  Scanner(std::string_view text, const char** cursor, OpenAiScan& out)
      : base_(text.data()), end_(text.data() + text.size()), cursor_(cursor), out_(out) {}

  bool null() { return scalar(Kind::null); }
  bool boolean(bool) { return scalar(Kind::other); }
  bool number_integer(json::number_integer_t) { return scalar(Kind::other); }
  bool number_unsigned(json::number_unsigned_t) { return scalar(Kind::other); }
  bool number_float(json::number_float_t, const std::string&) { return scalar(Kind::other); }
  bool binary(json::binary_t&) { return scalar(Kind::other); }

  bool string(std::string& s) {
    if (stack_.empty()) return true;
    Frame& f = stack_.back();
    switch (f.key) {
      case Key::model:
        out_.model_begin = value_start(model_key_end_);
        out_.model_end = pos();
        break;
      case Key::content:
        out_.content_bytes += s.size();
        [[fallthrough]];
      case Key::reasoning:
      case Key::refusal:
        if (!s.empty()) out_.meaningful = true;
        break;
      default:
        return scalar(Kind::other);
    }
    after_value(f);
    return true;
  }

  bool start_object(std::size_t) { return open(true); }
  bool start_array(std::size_t) { return open(false); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(std::string& k) {
    Frame& f = stack_.back();
    f.key = Key::none;
    switch (f.role) {
      case Role::top:
        if (k == "model") {
          f.key = Key::model;
          model_key_end_ = pos();
        } else if (k == "error") {
          f.key = Key::error;
        } else if (k == "choices") {
          f.key = Key::choices;
          out_.has_choices = true;
        } else if (k == "usage") {
          f.key = Key::usage;
        }
        break;
      case Role::choice:
        if (k == "finish_reason") {
          f.key = Key::finish_reason;
        } else if (k == "delta") {
          f.key = Key::delta;
        }
        break;
      case Role::delta:
        if (k == "content") {
          f.key = Key::content;
        } else if (k == "reasoning_content") {
          f.key = Key::reasoning;
        } else if (k == "refusal") {
          f.key = Key::refusal;
        } else if (k == "tool_calls") {
          f.key = Key::tool_calls;
        }
        break;
      default:
        break;
    }
    if (f.key != Key::none) {
      // A key of interest twice: the DOM keeps the last one; let it.
      auto bit = static_cast<std::uint16_t>(1u << static_cast<unsigned>(f.key));
      if (f.seen & bit) out_.needs_dom = true;
      f.seen |= bit;
    }
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) {
    return false;
  }

 private:
  enum class Kind { null, other };
  struct Frame {
    Role role;
    bool object;
    Key key = Key::none;     // the member whose value comes next (objects)
    std::uint16_t seen = 0;  // the keys of interest met so far, one bit each
  };

  std::size_t pos() const { return static_cast<std::size_t>(*cursor_ - base_); }

  // Where the value after a key starts: past the ':' and whitespace.
  std::size_t value_start(std::size_t after_key) const {
    const char* p = base_ + after_key;
    while (p < end_ && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ':')) ++p;
    return static_cast<std::size_t>(p - base_);
  }

  // A value in the current container: a scalar, or a container about to be opened.
  Role value_role(bool is_object, bool is_null) {
    Frame& f = stack_.back();
    switch (f.role) {
      case Role::top:
        switch (f.key) {
          case Key::model:
            out_.needs_dom = true;  // not a string
            return Role::other;
          case Key::error:
            if (!is_null) out_.error = true;
            return Role::other;
          case Key::choices:
            if (!is_object && !is_null && pending_container_) {
              out_.choices_array = true;
              return Role::choices;
            }
            out_.needs_dom = true;  // choices that are not an array
            return Role::other;
          case Key::usage:
            if (is_null) return Role::other;
            if (is_object && pending_container_) {
              out_.has_usage = true;
              out_.meaningful = true;
              out_.usage_begin = pos() - 1;
              return Role::usage;
            }
            out_.needs_dom = true;  // usage that is neither an object nor null
            return Role::other;
          default:
            return Role::other;
        }
      case Role::choices:
        ++out_.choices;
        return is_object && pending_container_ ? Role::choice : Role::other;
      case Role::choice:
        if (f.key == Key::finish_reason && !is_null) out_.meaningful = true;
        if (f.key == Key::delta && is_object && pending_container_) return Role::delta;
        return Role::other;
      case Role::delta:
        // content/reasoning/refusal that are not strings do not count; tool_calls must be
        // an array with something in it.
        if (f.key == Key::tool_calls && !is_object && !is_null && pending_container_) {
          return Role::tool_calls;
        }
        return Role::other;
      case Role::tool_calls:
        out_.meaningful = true;
        return Role::other;
      default:
        return Role::other;
    }
  }

  void after_value(Frame& f) { f.key = Key::none; }

  bool scalar(Kind kind) {
    if (stack_.empty()) return true;  // a scalar document
    pending_container_ = false;
    value_role(false, kind == Kind::null);
    after_value(stack_.back());
    return true;
  }

  bool open(bool is_object) {
    Role role;
    if (stack_.empty()) {
      if (is_object) {
        out_.object = true;
        out_.object_begin = pos();
        role = Role::top;
      } else {
        role = Role::other;
      }
    } else {
      pending_container_ = true;
      role = value_role(is_object, false);
    }
    stack_.push_back(Frame{role, is_object});
    return true;
  }

  bool close() {
    Role role = stack_.back().role;
    stack_.pop_back();
    if (role == Role::usage) out_.usage_end = pos();
    if (!stack_.empty()) after_value(stack_.back());
    return true;
  }

  const char* base_;
  const char* end_;
  const char** cursor_;
  OpenAiScan& out_;
  boost::container::small_vector<Frame, 12> stack_;
  std::size_t model_key_end_ = 0;
  bool pending_container_ = false;
};

}  // namespace

OpenAiScan scan_openai(std::string_view text) {
  OpenAiScan out;
  const char* cursor = text.data();
  Scanner sax(text, &cursor, out);
  CursorIt first{text.data(), &cursor};
  CursorIt last{text.data() + text.size(), &cursor};
  out.json = json::sax_parse(first, last, &sax);
  if (!out.json) {
    OpenAiScan failed;
    return failed;
  }
  return out;
}

std::string json_quote(std::string_view s) {
  return json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string splice_model(std::string_view text, const OpenAiScan& scan, std::string_view quoted) {
  std::string out;
  if (scan.model_begin != OpenAiScan::npos) {
    out.reserve(text.size() - (scan.model_end - scan.model_begin) + quoted.size());
    out.append(text.substr(0, scan.model_begin));
    out.append(quoted);
    out.append(text.substr(scan.model_end));
    return out;
  }
  // Absent: first member. The object is not empty (choices or usage is in it) or is `{}`.
  std::string_view rest = text.substr(scan.object_begin);
  std::size_t first = rest.find_first_not_of(" \t\r\n");
  bool empty = first != std::string_view::npos && rest[first] == '}';
  out.reserve(text.size() + quoted.size() + 10);
  out.append(text.substr(0, scan.object_begin));
  out.append("\"model\":");
  out.append(quoted);
  if (!empty) out.push_back(',');
  out.append(rest);
  return out;
}

}  // namespace agentd::ai::detail
