// Argument policies for MCP tool calls: parsing of `mcp.policies` and the checks themselves.
#include "agentd/mcp/policy.hpp"

#include <algorithm>
#include <boost/regex.hpp>
#include <cctype>
#include <cstdio>
#include <set>

#include "agentd/core/glob.hpp"

namespace agentd::mcp {

// Boost.Regex rather than std::regex: libstdc++'s matcher recurses once per character and
// overflows the stack on inputs of ~100k characters (a client could crash agentd with one
// argument), while Boost's matcher is iterative and throws when a match gets too complex.
struct CompiledPatterns {
  std::vector<boost::regex> deny;
  std::vector<boost::regex> allow;
};

namespace {

using core::ConfigNode;
using nlohmann::json;

constexpr std::size_t kShownChars = 80;

// ---------------------------------------------------------------------------------------------
// UTF-8 and quoting for messages

struct CodePoint {
  char32_t value = 0;
  std::size_t length = 0;  // 0: not valid UTF-8 at this position
};

CodePoint decode_utf8(std::string_view s, std::size_t i) {
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  if (c < 0x80) return {c, 1};
  std::size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
  if (len == 0 || c > 0xF4 || i + len > s.size()) return {};
  char32_t cp = c & (0x7F >> len);
  for (std::size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return {};
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  static constexpr char32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {};
  return {cp, len};
}

std::string hex_byte(unsigned char c) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "\\x%02X", c);
  return buf;
}

std::string code_point_name(char32_t cp) {
  char buf[16];
  std::snprintf(buf, sizeof buf, cp < 0x80 ? "0x%02X" : "U+%04X", static_cast<unsigned>(cp));
  return buf;
}

// `s` in double quotes for a message: at most kShownChars characters, control characters and
// invalid bytes escaped, so the result is short, one line and valid UTF-8.
std::string quote(std::string_view s) {
  std::string out = "\"";
  std::size_t i = 0, shown = 0;
  while (i < s.size()) {
    if (shown == kShownChars) {
      out += "...";
      break;
    }
    auto c = static_cast<unsigned char>(s[i]);
    ++shown;
    if (c < 0x20 || c == 0x7F) {
      switch (c) {
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        case '\0':
          out += "\\0";
          break;
        default:
          out += hex_byte(c);
      }
      ++i;
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else {
      auto cp = decode_utf8(s, i);
      if (cp.length == 0) {
        out += hex_byte(c);
        ++i;
      } else if ((cp.value >= 0x80 && cp.value <= 0x9F) || cp.value == 0x2028 ||
                 cp.value == 0x2029) {
        out += "\\u" + code_point_name(cp.value).substr(2);
        i += cp.length;
      } else {
        out.append(s.substr(i, cp.length));
        i += cp.length;
      }
    }
  }
  out += '"';
  return out;
}

// `s` in single quotes, shortened and escaped like quote(): for argument names and pointers.
std::string single_quoted(std::string_view s) {
  auto q = quote(s);
  return "'" + q.substr(1, q.size() - 2) + "'";
}

// Code points, for max_length (invalid bytes count one each).
std::uint64_t count_chars(std::string_view s) {
  std::uint64_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::binary:
      return "binary data";
    case json::value_t::discarded:
      return "nothing";
    default:
      return "a number";
  }
}

// ---------------------------------------------------------------------------------------------
// Shell words

// A character that may never appear in a command, quoted or not; empty when `s[i]` is fine.
// `$` and backquotes stay special inside double quotes, and refusing them even inside single
// quotes costs little and survives a tool that quotes badly.
std::string forbidden_anywhere(std::string_view s, std::size_t i, std::size_t& length) {
  auto c = static_cast<unsigned char>(s[i]);
  length = 1;
  switch (c) {
    case '\0':
      return "a NUL byte is not allowed";
    case '\n':
      return "a newline is not allowed";
    case '\r':
      return "a carriage return is not allowed";
    case '\t':
      return {};
    case '$':
      return "'$' (parameter expansion or $(...) command substitution) is not allowed, even quoted";
    case '`':
      return "a backtick (command substitution) is not allowed, even quoted";
    default:
      break;
  }
  if (c < 0x20 || c == 0x7F) return "control character " + code_point_name(c) + " is not allowed";
  if (c < 0x80) return {};
  auto cp = decode_utf8(s, i);
  if (cp.length == 0) return "invalid UTF-8 is not allowed";
  length = cp.length;
  if (cp.value <= 0x9F || cp.value == 0x2028 || cp.value == 0x2029) {
    return "control character " + code_point_name(cp.value) + " is not allowed";
  }
  return {};
}

// Why an unquoted `c` is refused; empty when it is an ordinary word character.
std::string unquoted_special(char c) {
  const std::string q = std::string("'") + c + "'";
  switch (c) {
    case ';':
      return "command separator " + q + " is not allowed";
    case '&':
      return q + " (background job or '&&' list) is not allowed";
    case '|':
      return "pipe " + q + " (or '||' list) is not allowed";
    case '<':
    case '>':
      return "redirection " + q + " is not allowed";
    case '(':
    case ')':
      return "parenthesis " + q + " (subshell or grouping) is not allowed";
    case '{':
    case '}':
      return "brace " + q + " (grouping or brace expansion) is not allowed";
    case '*':
    case '?':
    case '[':
      return "unquoted glob character " + q + " is not allowed (quote it to pass it literally)";
    case '~':
      return "unquoted " + q + " (tilde expansion) is not allowed";
    case '#':
      return "unquoted " + q + " (comment) is not allowed";
    case '!':
      return "unquoted " + q + " (negation or history expansion) is not allowed";
    case '^':
      return "unquoted " + q + " (a pipe in the Bourne shell, a glob in zsh) is not allowed";
    default:
      return {};
  }
}

bool is_assignment(std::string_view word) {
  auto eq = word.find('=');
  if (eq == std::string_view::npos || eq == 0) return false;
  auto name = word.substr(0, eq);
  if (std::isdigit(static_cast<unsigned char>(name[0]))) return false;
  return std::all_of(name.begin(), name.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_';
  });
}

// The part of an option word after `-`/`--` and its letters: "-f/etc/x" -> "/etc/x", so paths
// glued to short options are seen too.
std::string_view option_value(std::string_view word) {
  if (!word.starts_with('-')) return {};
  std::size_t i = word.find_first_not_of('-');
  while (i < word.size() && std::isalnum(static_cast<unsigned char>(word[i]))) ++i;
  return i < word.size() ? word.substr(i) : std::string_view{};
}

bool has_absolute_path(std::string_view word) {
  if (word.starts_with('/') || word.find("=/") != std::string_view::npos) return true;
  return option_value(word).starts_with('/');
}

bool has_parent_component(std::string_view word) {
  std::size_t start = 0;
  while (start <= word.size()) {
    auto end = word.find_first_of("/=", start);
    if (end == std::string_view::npos) end = word.size();
    if (word.substr(start, end - start) == "..") return true;
    start = end + 1;
  }
  auto v = option_value(word);
  return v == ".." || v.starts_with("../");
}

// ---------------------------------------------------------------------------------------------
// Paths

std::optional<std::string> normalise_absolute(std::string_view p, std::string& why) {
  if (p.empty()) {
    why = "an empty path is not allowed";
    return std::nullopt;
  }
  for (std::size_t i = 0; i < p.size();) {
    std::size_t len = 1;
    auto c = static_cast<unsigned char>(p[i]);
    if (c < 0x20 || c == 0x7F) {
      why = c == 0 ? "a NUL byte is not allowed"
                   : "control character " + code_point_name(c) + " is not allowed";
      return std::nullopt;
    }
    if (c >= 0x80) {
      auto cp = decode_utf8(p, i);
      if (cp.length == 0) {
        why = "invalid UTF-8 is not allowed";
        return std::nullopt;
      }
      len = cp.length;
    }
    i += len;
  }
  if (!p.starts_with('/')) {
    why = "not an absolute path";
    return std::nullopt;
  }
  std::string out;
  std::size_t start = 1;
  while (start <= p.size()) {
    auto end = p.find('/', start);
    if (end == std::string_view::npos) end = p.size();
    auto part = p.substr(start, end - start);
    if (part == "..") {
      // Lexically `a/link/..` is `a`, but the kernel resolves `link` first: refuse rather than
      // guess what the filesystem will do.
      why = "a '..' component is not allowed";
      return std::nullopt;
    }
    if (!part.empty() && part != ".") {
      out += '/';
      out += part;
    }
    start = end + 1;
  }
  return out.empty() ? std::string("/") : out;
}

bool inside(const std::string& path, const std::string& root) {
  if (root == "/") return true;
  return path == root || (path.starts_with(root) && path[root.size()] == '/');
}

// ---------------------------------------------------------------------------------------------
// Checks of one rule

// Where a value was found, for messages: "argument 'command'", "argument '/opts/0'".
struct Location {
  std::string text;
  Location item(std::size_t i) const { return {text + " item " + std::to_string(i)}; }
};

std::optional<Denial> deny(const PolicyRule& rule, std::string message) {
  return Denial{rule.name, std::move(message)};
}

std::string join_allowed(const CommandCheck& c) {
  std::string out;
  for (const auto& entry : c.allow) {
    std::string e;
    for (const auto& w : entry) e += (e.empty() ? "" : " ") + w;
    if (!out.empty()) out += ", ";
    if (out.size() + e.size() > kShownChars) return out + "...";
    out += e;
  }
  return out;
}

std::optional<Denial> check_words(const PolicyRule& rule, const CommandCheck& c,
                                  const Location& where, std::string_view value,
                                  const std::vector<std::string>& words) {
  auto refuse = [&](const std::string& why) {
    return deny(rule, where.text + " = " + quote(value) + ": " + why);
  };
  if (words.empty()) return refuse("an empty command is not allowed");
  const std::string& program = words[0];
  if (program.empty()) return refuse("an empty program name is not allowed");
  if (is_assignment(program)) {
    return refuse("a leading variable assignment " + quote(program) + " is not allowed");
  }
  if (program.find('/') != std::string::npos) {
    return refuse("the program " + quote(program) +
                  " is a path; only bare program names from the allowlist are allowed");
  }
  std::size_t matched = 0;
  bool program_known = false;
  for (const auto& entry : c.allow) {
    if (entry[0] == program) program_known = true;
    if (entry.size() <= words.size() && entry.size() > matched &&
        std::equal(entry.begin(), entry.end(), words.begin())) {
      matched = entry.size();
    }
  }
  if (matched == 0) {
    if (!program_known) {
      return refuse("program " + quote(program) + " is not in the allowlist (" + join_allowed(c) +
                    ")");
    }
    std::string shown = program;
    if (words.size() > 1) shown += " " + words[1];
    return refuse("command " + quote(shown) + " is not in the allowlist (" + join_allowed(c) + ")");
  }
  for (std::size_t i = matched; i < words.size(); ++i) {
    if (!c.allow_absolute_paths && has_absolute_path(words[i])) {
      return refuse("absolute path " + quote(words[i]) + " is not allowed");
    }
    if (!c.allow_parent_paths && has_parent_component(words[i])) {
      return refuse("parent directory '..' in " + quote(words[i]) + " is not allowed");
    }
  }
  return std::nullopt;
}

std::optional<Denial> check_command(const PolicyRule& rule, const CommandCheck& c,
                                    const Location& where, const json& v) {
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    auto split = split_simple_command(s);
    if (!split.refusal.empty()) {
      return deny(rule, where.text + " = " + quote(s) + ": " + split.refusal);
    }
    return check_words(rule, c, where, s, split.words);
  }
  if (!v.is_array()) {
    return deny(rule, where.text + " must be a string or an array of strings, got " +
                          std::string(type_name(v)));
  }
  // argv form: each element is checked as shell text too, since tools often join argv with
  // spaces and hand it to a shell.
  std::vector<std::string> words;
  std::string joined;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const auto& e = v[i];
    if (!e.is_string()) {
      return deny(rule, where.item(i).text + " must be a string, got " + type_name(e));
    }
    const auto& s = e.get_ref<const std::string&>();
    auto split = split_simple_command(s);
    if (!split.refusal.empty()) {
      return deny(rule, where.item(i).text + " = " + quote(s) + ": " + split.refusal);
    }
    if (i == 0 && split.words.empty()) {
      return deny(rule, where.item(0).text + ": an empty program name is not allowed");
    }
    words.insert(words.end(), split.words.begin(), split.words.end());
    if (joined.size() < 4 * kShownChars) joined += (i ? " " : "") + s;
  }
  return check_words(rule, c, where, joined, words);
}

std::optional<Denial> check_path_string(const PolicyRule& rule, const PathCheck& p,
                                        const Location& where, const std::string& s) {
  std::string why;
  auto norm = normalise_absolute(s, why);
  if (!norm) return deny(rule, where.text + " = " + quote(s) + ": " + why);
  for (const auto& root : p.within) {
    if (inside(*norm, root)) return std::nullopt;
  }
  std::string roots;
  for (const auto& root : p.within) roots += (roots.empty() ? "" : ", ") + root;
  return deny(rule, where.text + " = " + quote(s) + ": not inside " +
                        (p.within.size() == 1 ? "" : "any of ") + roots);
}

// Patterns and lengths apply to one string at a time; values are not echoed for patterns, which
// are typically about secrets.
std::optional<Denial> check_text(const PolicyRule& rule, const Location& where,
                                 const std::string& s) {
  if (const auto* l = std::get_if<LengthCheck>(&rule.check)) {
    auto n = count_chars(s);
    if (n > l->max_length) {
      return deny(rule, where.text + " is " + std::to_string(n) +
                            " characters long; the limit is " + std::to_string(l->max_length));
    }
    return std::nullopt;
  }
  const auto& p = std::get<PatternCheck>(rule.check);
  for (std::size_t i = 0; i < p.deny.size(); ++i) {
    bool hit = true;  // an evaluation that fails counts as a match: fail closed
    try {
      hit = boost::regex_search(s, p.compiled->deny[i]);
    } catch (const std::exception&) {
      return deny(rule, where.text + ": deny pattern " + quote(p.deny[i]) +
                            " could not be evaluated on it (too complex)");
    }
    if (hit) return deny(rule, where.text + " matches deny pattern " + quote(p.deny[i]));
  }
  if (p.allow.empty()) return std::nullopt;
  for (const auto& re : p.compiled->allow) {
    try {
      if (boost::regex_match(s, re)) return std::nullopt;
    } catch (const std::exception&) {
      // too complex to decide: not a match
    }
  }
  return deny(rule, where.text + " matches none of the allowed patterns");
}

std::optional<Denial> check_value(const PolicyRule& rule, const Location& where, const json& v) {
  if (const auto* c = std::get_if<CommandCheck>(&rule.check))
    return check_command(rule, *c, where, v);
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (const auto* p = std::get_if<PathCheck>(&rule.check))
      return check_path_string(rule, *p, where, s);
    return check_text(rule, where, s);
  }
  if (!v.is_array()) {
    return deny(rule, where.text + " must be a string or an array of strings, got " +
                          std::string(type_name(v)));
  }
  for (std::size_t i = 0; i < v.size(); ++i) {
    const auto& e = v[i];
    if (!e.is_string())
      return deny(rule, where.item(i).text + " must be a string, got " + type_name(e));
    auto d = std::holds_alternative<PathCheck>(rule.check)
                 ? check_path_string(rule, std::get<PathCheck>(rule.check), where.item(i),
                                     e.get_ref<const std::string&>())
                 : check_text(rule, where.item(i), e.get_ref<const std::string&>());
    if (d) return d;
  }
  return std::nullopt;
}

std::string escape_pointer_token(const std::string& key) {
  std::string out;
  for (char ch : key) {
    if (ch == '~')
      out += "~0";
    else if (ch == '/')
      out += "~1";
    else
      out += ch;
  }
  return out;
}

// `argument: "*"`: every string value and every object key, anywhere. Iterative (arguments
// can nest deeper than the stack allows) and without copying paths until a denial needs one.
std::optional<Denial> check_everywhere(const PolicyRule& rule, const json& arguments) {
  struct Step {
    std::size_t parent;  // index into `steps`, npos for the root
    const std::string* key;
    std::size_t index;
  };
  std::vector<Step> steps;
  // "argument '/a/0'" for the value at steps[at]; "the arguments" for the root.
  auto location = [&](std::size_t at) {
    std::vector<std::string> parts;
    for (std::size_t k = at; steps[k].parent != std::string::npos; k = steps[k].parent) {
      parts.push_back(steps[k].key ? escape_pointer_token(*steps[k].key)
                                   : std::to_string(steps[k].index));
    }
    if (parts.empty()) return Location{"the arguments"};
    std::string ptr;
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) ptr += "/" + *it;
    return Location{"argument " + single_quoted(ptr)};
  };
  std::vector<std::pair<const json*, std::size_t>> todo{{&arguments, 0}};
  steps.push_back({std::string::npos, nullptr, 0});
  while (!todo.empty()) {
    auto [v, at] = todo.back();
    todo.pop_back();
    // Locations cost a walk up the tree: check first, and name the place only on a denial.
    if (v->is_string()) {
      const auto& s = v->get_ref<const std::string&>();
      if (check_text(rule, Location{}, s)) return check_text(rule, location(at), s);
    } else if (v->is_object()) {
      std::vector<std::pair<const json*, std::size_t>> children;
      for (auto it = v->begin(); it != v->end(); ++it) {
        steps.push_back({at, &it.key(), 0});
        std::size_t child = steps.size() - 1;
        // Keys may hold what a deny pattern is about: name the object, not the key.
        if (check_text(rule, Location{}, it.key())) {
          return check_text(rule, Location{"a key in " + location(at).text}, it.key());
        }
        children.emplace_back(&it.value(), child);
      }
      todo.insert(todo.end(), children.rbegin(), children.rend());
    } else if (v->is_array()) {
      std::size_t first = todo.size();
      for (std::size_t i = 0; i < v->size(); ++i) {
        steps.push_back({at, nullptr, i});
        todo.emplace_back(&(*v)[i], steps.size() - 1);
      }
      std::reverse(todo.begin() + static_cast<std::ptrdiff_t>(first), todo.end());
    }
  }
  return std::nullopt;
}

std::optional<Denial> check_rule(const PolicyRule& rule, const json& arguments) {
  if (rule.argument == "*") return check_everywhere(rule, arguments);
  const json* value = nullptr;
  if (rule.pointer) {
    if (arguments.contains(*rule.pointer)) value = &arguments.at(*rule.pointer);
  } else if (arguments.is_object()) {
    auto it = arguments.find(rule.argument);
    if (it != arguments.end()) value = &*it;
  }
  Location where{"argument " + single_quoted(rule.argument)};
  if (!value || value->is_null()) {
    return deny(rule, where.text + " is required by rule '" + rule.name + "'");
  }
  return check_value(rule, where, *value);
}

// ---------------------------------------------------------------------------------------------
// Parsing

bool valid_rule_name(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.' ||
           ch == ':';
  });
}

// Globs of a required or optional list; `what` names the list in messages.
std::vector<std::string> parse_globs(const ConfigNode& n) {
  std::vector<std::string> out;
  auto items = n.is_sequence() ? n.items() : std::vector<ConfigNode>{n};
  if (items.empty()) n.fail("must not be empty");
  for (auto& item : items) {
    auto s = item.as_string();
    if (s.empty()) item.fail("an empty glob matches nothing");
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<ConfigNode> list_of(const ConfigNode& n) {
  auto items = n.is_sequence() ? n.items() : std::vector<ConfigNode>{n};
  if (items.empty()) n.fail("must not be empty");
  return items;
}

// An allowlist entry: plain words separated by spaces, no shell syntax; the first word is a
// program name without a directory.
std::vector<std::string> parse_allow_entry(const ConfigNode& item) {
  auto s = item.as_string();
  std::vector<std::string> words;
  std::size_t start = 0;
  while (true) {
    start = s.find_first_not_of(" \t", start);
    if (start == std::string::npos) break;
    auto end = s.find_first_of(" \t", start);
    if (end == std::string::npos) end = s.size();
    words.push_back(s.substr(start, end - start));
    start = end;
  }
  if (words.empty()) item.fail("an empty entry allows nothing");
  for (std::size_t w = 0; w < words.size(); ++w) {
    const auto& word = words[w];
    for (std::size_t i = 0; i < word.size(); ++i) {
      std::size_t len = 1;
      auto bad = forbidden_anywhere(word, i, len);
      if (bad.empty()) bad = unquoted_special(word[i]);
      if (bad.empty() && (word[i] == '\'' || word[i] == '"' || word[i] == '\\')) {
        bad = "quotes and backslashes are not allowed";
      }
      if (!bad.empty()) item.fail("expected plain words without shell syntax: " + bad);
      i += len - 1;
    }
  }
  if (words[0].find('/') != std::string::npos) {
    item.fail(
        "the program must be a bare name, not a path (agentd refuses programs given as paths)");
  }
  if (is_assignment(words[0])) item.fail("the program must not be a variable assignment");
  return words;
}

CommandCheck parse_command(const ConfigNode& n) {
  n.expect_map();
  CommandCheck c;
  auto allow = n.required("allow");
  if (!allow.is_sequence()) allow.fail("expected a list of commands");
  auto items = allow.items();
  if (items.empty()) allow.fail("must not be empty (an empty allowlist would refuse every call)");
  for (auto& item : items) c.allow.push_back(parse_allow_entry(item));
  c.allow_absolute_paths = n.get_bool("allow_absolute_paths", c.allow_absolute_paths);
  c.allow_parent_paths = n.get_bool("allow_parent_paths", c.allow_parent_paths);
  n.finish();
  return c;
}

PathCheck parse_path(const ConfigNode& n) {
  n.expect_map();
  PathCheck p;
  for (auto& item : list_of(n.required("within"))) {
    std::string why;
    auto norm = normalise_absolute(item.as_string(), why);
    if (!norm) item.fail("expected an absolute path without '..': " + why);
    p.within.push_back(std::move(*norm));
  }
  n.finish();
  return p;
}

boost::regex compile_pattern(const ConfigNode& item) {
  auto source = item.as_string();
  if (source.empty()) item.fail("an empty pattern matches everything");
  try {
    // ECMAScript syntax with ECMAScript's `.` and `^`/`$` (Boost defaults to Perl's multi-line
    // anchors); Boost also understands a leading `(?i)`.
    return boost::regex(source,
                        boost::regex::ECMAScript | boost::regex::no_mod_s | boost::regex::no_mod_m);
  } catch (const boost::regex_error& e) {
    item.fail("not a valid regular expression: " + std::string(e.what()));
  }
}

PatternCheck parse_patterns(const std::optional<ConfigNode>& deny_node,
                            const std::optional<ConfigNode>& allow_node) {
  PatternCheck p;
  auto compiled = std::make_shared<CompiledPatterns>();
  if (deny_node) {
    for (auto& item : list_of(*deny_node)) {
      compiled->deny.push_back(compile_pattern(item));
      p.deny.push_back(item.as_string());
    }
  }
  if (allow_node) {
    for (auto& item : list_of(*allow_node)) {
      compiled->allow.push_back(compile_pattern(item));
      p.allow.push_back(item.as_string());
    }
  }
  p.compiled = std::move(compiled);
  return p;
}

PolicyRule parse_rule(const ConfigNode& node) {
  node.expect_map();
  if (node.is_null()) node.fail("expected a map with name, tools, argument and one check");
  PolicyRule r;
  auto name = node.required("name");
  r.name = name.as_string();
  if (!valid_rule_name(r.name)) name.fail("expected 1-64 letters, digits, '-', '_', '.' or ':'");
  r.tools = parse_globs(node.required("tools"));
  if (auto clients = node.get("clients")) r.clients = parse_globs(*clients);
  auto argument = node.required("argument");
  r.argument = argument.as_string();
  if (r.argument.empty()) argument.fail("must not be empty");
  if (r.argument.starts_with('/')) {
    try {
      r.pointer = json::json_pointer(r.argument);
    } catch (const json::exception&) {
      argument.fail("not a valid JSON pointer (escape '~' as ~0 and '/' as ~1)");
    }
  }

  auto command = node.get("command");
  auto path = node.get("path");
  auto deny_patterns = node.get("deny_patterns");
  auto allow_patterns = node.get("allow_patterns");
  auto max_length = node.get("max_length");
  std::vector<std::string> kinds;
  if (command) kinds.emplace_back("command");
  if (path) kinds.emplace_back("path");
  if (deny_patterns || allow_patterns) kinds.emplace_back("deny_patterns/allow_patterns");
  if (max_length) kinds.emplace_back("max_length");
  static const std::string kOne =
      "exactly one of command, path, deny_patterns/allow_patterns or max_length";
  if (kinds.empty()) node.fail("a policy needs " + kOne);
  if (kinds.size() > 1) {
    node.fail("has both " + kinds[0] + " and " + kinds[1] + "; a policy takes " + kOne);
  }
  if (r.argument == "*" && (command || path)) {
    argument.fail(
        "\"*\" only works with deny_patterns, allow_patterns and max_length; name the "
        "argument for command and path checks");
  }
  if (command) {
    r.check = parse_command(*command);
  } else if (path) {
    r.check = parse_path(*path);
  } else if (max_length) {
    r.check = LengthCheck{static_cast<std::uint64_t>(max_length->as_int(0, std::int64_t{1} << 40))};
  } else {
    r.check = parse_patterns(deny_patterns, allow_patterns);
  }
  node.finish();
  return r;
}

}  // namespace

ShellSplit split_simple_command(std::string_view s) {
  ShellSplit out;
  for (std::size_t i = 0; i < s.size();) {
    std::size_t len = 1;
    out.refusal = forbidden_anywhere(s, i, len);
    if (!out.refusal.empty()) return out;
    i += len;
  }
  std::string word;
  bool in_word = false;
  std::size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (c == ' ' || c == '\t') {
      if (in_word) out.words.push_back(std::move(word));
      word.clear();
      in_word = false;
      ++i;
    } else if (c == '\'') {
      auto end = s.find('\'', i + 1);
      if (end == std::string_view::npos) {
        out.refusal = "an unterminated single quote is not allowed";
        return out;
      }
      word.append(s.substr(i + 1, end - i - 1));
      in_word = true;
      i = end + 1;
    } else if (c == '"') {
      // Inside double quotes a backslash only escapes `"` and `\` here: `$`, backquote and
      // newline, the other characters it escapes, are refused above.
      ++i;
      while (true) {
        if (i >= s.size()) {
          out.refusal = "an unterminated double quote is not allowed";
          return out;
        }
        if (s[i] == '"') break;
        if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == '"' || s[i + 1] == '\\')) ++i;
        word += s[i++];
      }
      in_word = true;
      ++i;
    } else if (c == '\\') {
      if (i + 1 >= s.size()) {
        out.refusal = "a trailing backslash is not allowed";
        return out;
      }
      word += s[i + 1];
      in_word = true;
      i += 2;
    } else if (auto why = unquoted_special(c); !why.empty()) {
      out.refusal = std::move(why);
      return out;
    } else {
      word += c;
      in_word = true;
      ++i;
    }
  }
  if (in_word) out.words.push_back(std::move(word));
  return out;
}

bool PolicyRule::applies_to(std::string_view client, std::string_view tool) const noexcept {
  auto match = [](const std::vector<std::string>& globs, std::string_view s) {
    return std::any_of(globs.begin(), globs.end(),
                       [&](const std::string& g) { return core::glob_match(g, s); });
  };
  return match(tools, tool) && (clients.empty() || match(clients, client));
}

nlohmann::json to_jsonrpc_error(const Denial& denial) {
  return {{"code", kPolicyDeniedCode},
          {"message", "denied by policy '" + denial.rule + "': " + denial.message},
          {"data", {{"rule", denial.rule}}}};
}

ArgumentPolicy ArgumentPolicy::parse(const ConfigNode& policies_list) {
  ArgumentPolicy p;
  std::set<std::string> names;
  for (auto& item : policies_list.items()) {
    auto rule = parse_rule(item);
    if (!names.insert(rule.name).second) {
      item.child("name").fail("duplicate policy name \"" + rule.name + "\"");
    }
    p.rules_.push_back(std::move(rule));
  }
  return p;
}

std::optional<Denial> ArgumentPolicy::check(const std::string& client, const std::string& tool,
                                            const nlohmann::json& arguments) const {
  for (const auto& rule : rules_) {
    if (!rule.applies_to(client, tool)) continue;
    try {
      if (auto d = check_rule(rule, arguments)) return d;
    } catch (const std::exception&) {
      // Out of memory or a bug: fail closed rather than let the call through.
      return Denial{rule.name, "the rule could not be evaluated"};
    }
  }
  return std::nullopt;
}

}  // namespace agentd::mcp
