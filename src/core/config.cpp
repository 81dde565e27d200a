// Strict configuration reading on top of yaml-cpp.
#include "agentd/core/config.hpp"

#include "agentd/core/units.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace agentd::core {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

const char* kind_name(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Scalar: return "a scalar";
    default: return "nothing";
  }
}

}  // namespace

std::string join_path(std::string_view parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  std::string out(parent);
  out += '.';
  out += key;
  return out;
}

ConfigNode::ConfigNode(YAML::Node node, std::string path)
    : node_(std::move(node)),
      path_(std::move(path)),
      used_(std::make_shared<std::set<std::string, std::less<>>>()) {}

bool ConfigNode::is_null() const { return !node_.IsDefined() || node_.IsNull(); }
bool ConfigNode::is_map() const { return node_.IsMap(); }
bool ConfigNode::is_sequence() const { return node_.IsSequence(); }
bool ConfigNode::is_scalar() const { return node_.IsScalar(); }

void ConfigNode::fail(const std::string& message) const { throw ConfigError(path_, message); }

void ConfigNode::expect_map() const {
  if (!is_null() && !is_map()) fail(std::string("expected a map, got ") + kind_name(node_));
}

ConfigNode ConfigNode::child(std::string_view key) const {
  const YAML::Node& cn = node_;
  YAML::Node found;
  if (cn.IsMap()) {
    // An absent key gives an invalid node, which reset() refuses (YAML::InvalidNode): keep a
    // null one, so that child("absent").fail(...) is a ConfigError naming the path.
    YAML::Node value = cn[std::string(key)];
    if (value.IsDefined()) found.reset(value);
  }
  return ConfigNode(found, join_path(path_, key));
}

std::optional<ConfigNode> ConfigNode::get(std::string_view key) const {
  expect_map();
  if (is_null()) return std::nullopt;
  used_->emplace(key);
  const YAML::Node& cn = node_;
  YAML::Node found = cn[std::string(key)];
  if (!found.IsDefined() || found.IsNull()) return std::nullopt;
  return ConfigNode(found, join_path(path_, key));
}

ConfigNode ConfigNode::required(std::string_view key) const {
  auto n = get(key);
  if (!n) throw ConfigError(join_path(path_, key), "is required");
  return *n;
}

std::string ConfigNode::get_string(std::string_view key, std::string fallback) const {
  auto n = get(key);
  return n ? n->as_string() : fallback;
}

bool ConfigNode::get_bool(std::string_view key, bool fallback) const {
  auto n = get(key);
  return n ? n->as_bool() : fallback;
}

std::int64_t ConfigNode::get_int(std::string_view key, std::int64_t fallback, std::int64_t min,
                                 std::int64_t max) const {
  auto n = get(key);
  return n ? n->as_int(min, max) : fallback;
}

std::chrono::milliseconds ConfigNode::get_duration(std::string_view key,
                                                   std::chrono::milliseconds fallback) const {
  auto n = get(key);
  return n ? n->as_duration() : fallback;
}

std::uint64_t ConfigNode::get_size(std::string_view key, std::uint64_t fallback) const {
  auto n = get(key);
  return n ? n->as_size() : fallback;
}

std::vector<std::string> ConfigNode::get_strings(std::string_view key) const {
  auto n = get(key);
  return n ? n->as_strings() : std::vector<std::string>{};
}

std::string ConfigNode::as_string() const {
  if (!node_.IsScalar()) fail(std::string("expected a string, got ") + kind_name(node_));
  return node_.Scalar();
}

bool ConfigNode::as_bool() const {
  auto s = lower(as_string());
  if (s == "true") return true;
  if (s == "false") return false;
  fail("expected true or false, got \"" + node_.Scalar() + "\"");
}

std::int64_t ConfigNode::as_int(std::int64_t min, std::int64_t max) const {
  auto s = as_string();
  std::size_t pos = 0;
  long long v = 0;
  bool ok = !s.empty();
  try {
    v = std::stoll(s, &pos, 10);
  } catch (...) {
    ok = false;
  }
  if (!ok || pos != s.size()) fail("expected an integer, got \"" + s + "\"");
  if (v < min || v > max) {
    fail("must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " + s);
  }
  return v;
}

std::chrono::milliseconds ConfigNode::as_duration() const {
  auto s = as_string();
  auto d = parse_duration(s);
  if (!d) fail("expected a duration such as 250ms, 10s, 5m or 1h, got \"" + s + "\"");
  return *d;
}

double ConfigNode::as_number(double min, double max) const {
  auto s = as_string();
  std::size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(s, &pos);
  } catch (...) {
    pos = 0;
  }
  if (pos == 0 || pos != s.size()) fail("expected a number, got \"" + s + "\"");
  if (v < min || v > max) {
    fail("must be between " + std::to_string(min) + " and " + std::to_string(max));
  }
  return v;
}

std::uint64_t ConfigNode::as_size() const {
  auto s = as_string();
  auto v = parse_size(s);
  if (!v) fail("expected a size such as 512KiB, 1MiB or 4096, got \"" + s + "\"");
  return *v;
}

std::vector<std::string> ConfigNode::as_strings() const {
  std::vector<std::string> out;
  if (is_null()) return out;
  if (node_.IsScalar()) {
    out.push_back(node_.Scalar());
    return out;
  }
  for (auto& item : items()) out.push_back(item.as_string());
  return out;
}

std::string ConfigNode::as_url() const {
  auto s = as_string();
  if (!is_http_url(s)) fail("expected a URL (http:// or https://), got \"" + s + "\"");
  return s;
}

std::vector<ConfigNode> ConfigNode::items() const {
  std::vector<ConfigNode> out;
  if (is_null()) return out;
  if (!node_.IsSequence()) fail(std::string("expected a list, got ") + kind_name(node_));
  std::size_t i = 0;
  for (const auto& item : node_) {
    out.emplace_back(item, path_ + "[" + std::to_string(i++) + "]");
  }
  return out;
}

std::vector<std::pair<std::string, ConfigNode>> ConfigNode::entries() const {
  std::vector<std::pair<std::string, ConfigNode>> out;
  expect_map();
  if (is_null()) return out;
  for (const auto& kv : node_) {
    auto key = kv.first.Scalar();
    used_->insert(key);
    out.emplace_back(key, ConfigNode(kv.second, join_path(path_, key)));
  }
  return out;
}

void ConfigNode::finish() const {
  if (!node_.IsMap()) return;
  std::vector<std::string> known(used_->begin(), used_->end());
  for (const auto& kv : node_) {
    if (!kv.first.IsScalar()) fail("map keys must be strings");
    const auto& key = kv.first.Scalar();
    if (used_->count(key)) continue;
    std::string msg = "unknown key";
    std::string best;
    std::size_t best_d = 3;
    for (const auto& k : known) {
      auto d = edit_distance(key, k);
      if (d < best_d) best_d = d, best = k;
    }
    if (!best.empty()) msg += " (did you mean \"" + best + "\"?)";
    throw ConfigError(join_path(path_, key), msg);
  }
}

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

namespace {

std::string substitute_scalar(const std::string& in, const EnvLookup& env,
                              const std::string& path) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '$') {
      out += in[i];
      continue;
    }
    if (in.compare(i, 3, "$${") == 0) {
      out += "${";
      i += 2;
      continue;
    }
    if (i + 1 >= in.size() || in[i + 1] != '{') {
      out += '$';
      continue;
    }
    auto close = in.find('}', i + 2);
    if (close == std::string::npos) throw ConfigError(path, "unterminated \"${\" in value");
    std::string expr = in.substr(i + 2, close - i - 2);
    std::string name = expr;
    std::optional<std::string> fallback;
    if (auto p = expr.find(":-"); p != std::string::npos) {
      name = expr.substr(0, p);
      fallback = expr.substr(p + 2);
    }
    bool valid = !name.empty() && (std::isalpha(static_cast<unsigned char>(name[0])) ||
                                   name[0] == '_');
    for (char c : name) valid = valid && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
    if (!valid) throw ConfigError(path, "bad variable reference \"${" + expr + "}\"");
    auto value = env(name);
    if (value && (!value->empty() || !fallback)) {
      out += *value;
    } else if (fallback) {
      out += *fallback;
    } else {
      throw ConfigError(path, "environment variable " + name +
                                  " is not set (write ${" + name + ":-} to allow it empty)");
    }
    i = close;
  }
  return out;
}

// Aliases share nodes, so a small document can stand for an exponential tree: cap the walk.
constexpr std::size_t kMaxNodes = 200'000;

void substitute_walk(YAML::Node node, const EnvLookup& env, const std::string& path,
                     std::size_t& visited) {
  if (++visited > kMaxNodes) {
    throw ConfigError(path, "the document expands to more than " + std::to_string(kMaxNodes) +
                                " nodes (aliases?)");
  }
  if (node.IsScalar()) {
    const auto& s = node.Scalar();
    if (s.find('$') != std::string::npos) node = substitute_scalar(s, env, path);
  } else if (node.IsSequence()) {
    for (std::size_t i = 0; i < node.size(); ++i) {
      substitute_walk(node[i], env, path + "[" + std::to_string(i) + "]", visited);
    }
  } else if (node.IsMap()) {
    for (auto kv : node) {
      substitute_walk(kv.second, env, join_path(path, kv.first.Scalar()), visited);
    }
  }
}

}  // namespace

void substitute_env(YAML::Node root, const EnvLookup& env) {
  std::size_t visited = 0;
  substitute_walk(root, env, "", visited);
}

void apply_override(YAML::Node root, std::string_view assignment) {
  const std::string where = "--set " + std::string(assignment);
  auto eq = assignment.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    throw ConfigError("", where + ": expected key.path=value");
  }
  std::string key_path(assignment.substr(0, eq));
  std::string value(assignment.substr(eq + 1));

  // Split `a.b[2].c` into steps: strings are map keys, numbers are list indexes.
  struct Step {
    std::string key;
    long index = -1;
  };
  std::vector<Step> steps;
  std::size_t i = 0;
  while (i < key_path.size()) {
    std::size_t j = i;
    while (j < key_path.size() && key_path[j] != '.' && key_path[j] != '[') ++j;
    if (j == i) throw ConfigError("", where + ": empty key in path");
    steps.push_back({key_path.substr(i, j - i)});
    while (j < key_path.size() && key_path[j] == '[') {
      auto close = key_path.find(']', j);
      if (close == std::string::npos) throw ConfigError("", where + ": unterminated [");
      auto idx = key_path.substr(j + 1, close - j - 1);
      if (idx.empty() || idx.size() > 6 || idx.find_first_not_of("0123456789") != std::string::npos) {
        throw ConfigError("", where + ": list index must be a number below 1000000");
      }
      steps.push_back({"", std::stol(idx)});
      j = close + 1;
    }
    if (j < key_path.size()) {
      if (key_path[j] != '.') throw ConfigError("", where + ": bad path");
      ++j;
      if (j == key_path.size()) throw ConfigError("", where + ": path ends with '.'");
    }
    i = j;
  }

  YAML::Node parsed;
  if (value.empty()) {
    parsed = std::string();
  } else {
    try {
      parsed = YAML::Load(value);
    } catch (const YAML::Exception&) {
      parsed = value;  // not YAML: take it as a plain string
    }
    if (parsed.IsNull() && value != "~" && value != "null") parsed = value;
  }

  YAML::Node cur;
  cur.reset(root);
  std::string path;
  for (std::size_t k = 0; k < steps.size(); ++k) {
    const auto& step = steps[k];
    bool last = k + 1 == steps.size();
    YAML::Node next;
    if (step.index < 0) {
      if (cur.IsDefined() && !cur.IsNull() && !cur.IsMap()) {
        throw ConfigError(path, where + ": not a map");
      }
      path = join_path(path, step.key);
      next.reset(cur[step.key]);
    } else {
      if (!cur.IsSequence()) throw ConfigError(path, where + ": not a list");
      auto size = static_cast<long>(cur.size());
      if (step.index > size) {
        throw ConfigError(path, where + ": index " + std::to_string(step.index) +
                                    " is past the end of the list (" + std::to_string(size) +
                                    " items)");
      }
      path += "[" + std::to_string(step.index) + "]";
      if (step.index == size) cur.push_back(YAML::Node(YAML::NodeType::Null));
      next.reset(cur[static_cast<std::size_t>(step.index)]);
    }
    if (last) {
      next = parsed;
    } else {
      cur.reset(next);
    }
  }
}

namespace {

// yaml-cpp parses recursively: refuse nesting deep enough to exhaust the stack.
void check_nesting(std::string_view text, std::string_view origin) {
  constexpr int kMaxFlowDepth = 64;
  constexpr std::size_t kMaxIndent = 256;
  constexpr std::size_t kMaxSize = 4 * 1024 * 1024;
  if (text.size() > kMaxSize) throw ConfigError("", std::string(origin) + ": larger than 4MiB");
  int depth = 0;
  std::size_t line = 1, indent = 0;
  bool at_line_start = true;
  for (char c : text) {
    if (c == '\n') {
      ++line;
      indent = 0;
      at_line_start = true;
      continue;
    }
    if (at_line_start && (c == ' ' || c == '-' || c == '\t')) {
      if (++indent > kMaxIndent) {
        throw ConfigError("", std::string(origin) + ":" + std::to_string(line) +
                                  ": nested too deeply");
      }
      continue;
    }
    at_line_start = false;
    if (c == '[' || c == '{') {
      if (++depth > kMaxFlowDepth) {
        throw ConfigError("", std::string(origin) + ":" + std::to_string(line) +
                                  ": nested too deeply");
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
}

}  // namespace

YAML::Node load_yaml_string(std::string_view text, std::string_view origin) {
  check_nesting(text, origin);
  try {
    auto node = YAML::Load(std::string(text));
    if (!node.IsDefined() || node.IsNull()) return YAML::Node(YAML::NodeType::Map);
    if (!node.IsMap()) throw ConfigError("", std::string(origin) + ": the top level must be a map");
    return node;
  } catch (const YAML::ParserException& e) {
    throw ConfigError("", std::string(origin) + ":" + std::to_string(e.mark.line + 1) + ":" +
                              std::to_string(e.mark.column + 1) + ": " + e.msg);
  } catch (const YAML::Exception& e) {
    throw ConfigError("", std::string(origin) + ": " + e.what());
  }
}

YAML::Node load_yaml_file(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ConfigError("", "cannot read " + file);
  std::stringstream ss;
  ss << in.rdbuf();
  return load_yaml_string(ss.str(), file);
}

bool is_http_url(std::string_view s) {
  std::string_view rest;
  if (s.substr(0, 7) == "http://") rest = s.substr(7);
  else if (s.substr(0, 8) == "https://") rest = s.substr(8);
  else return false;
  auto end = rest.find_first_of("/?#");
  auto authority = rest.substr(0, end);
  if (authority.empty() || authority.front() == ':') return false;
  for (char c : authority) {
    if (std::isspace(static_cast<unsigned char>(c)) || c == '@') return false;
  }
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x21) return false;
  }
  return true;
}

}  // namespace agentd::core
