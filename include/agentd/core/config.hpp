// Strict YAML configuration reading: key paths in every error, unknown keys rejected,
// `${VAR}` / `${VAR:-default}` substitution and `--set key.path=value` overrides.
#pragma once

#include "agentd/core/error.hpp"

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace agentd::core {

// A YAML node with its path in the document. Map keys read through it are remembered, so
// `finish()` can reject every key nobody asked for.
class ConfigNode {
 public:
  ConfigNode(YAML::Node node, std::string path);

  const std::string& path() const noexcept { return path_; }
  const YAML::Node& yaml() const noexcept { return node_; }
  bool is_null() const;  // absent or `~`
  bool is_map() const;
  bool is_sequence() const;
  bool is_scalar() const;

  // Map access; a missing key and an explicit null both read as absent.
  std::optional<ConfigNode> get(std::string_view key) const;
  ConfigNode required(std::string_view key) const;
  std::string get_string(std::string_view key, std::string fallback = {}) const;
  bool get_bool(std::string_view key, bool fallback) const;
  std::int64_t get_int(std::string_view key, std::int64_t fallback, std::int64_t min,
                       std::int64_t max) const;
  std::chrono::milliseconds get_duration(std::string_view key,
                                         std::chrono::milliseconds fallback) const;
  std::uint64_t get_size(std::string_view key, std::uint64_t fallback) const;
  // A scalar or a list of scalars.
  std::vector<std::string> get_strings(std::string_view key) const;

  // Conversions of this node.
  std::string as_string() const;
  bool as_bool() const;
  std::int64_t as_int(std::int64_t min, std::int64_t max) const;
  std::chrono::milliseconds as_duration() const;
  std::uint64_t as_size() const;
  double as_number(double min, double max) const;  // a decimal number within [min, max]
  std::vector<std::string> as_strings() const;
  std::string as_url() const;  // http(s)://host[:port][/path]

  std::vector<ConfigNode> items() const;  // a sequence's elements (null reads as empty)
  std::vector<std::pair<std::string, ConfigNode>> entries() const;  // a map's entries, all used

  void expect_map() const;  // a map, or absent/null (an empty section)
  void finish() const;      // throws on the first key that was never read

  [[noreturn]] void fail(const std::string& message) const;
  ConfigNode child(std::string_view key) const;  // child node without marking (for errors)

 private:
  YAML::Node node_;
  std::string path_;
  std::shared_ptr<std::set<std::string, std::less<>>> used_;
};

using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_env();

// Replaces `${VAR}` and `${VAR:-default}` in every scalar (never in keys); `$${` is a literal
// `${`. An unset variable without a default is an error naming the key.
void substitute_env(YAML::Node root, const EnvLookup& env);

// `a.b[2].c=value`: value is parsed as a YAML scalar or flow collection; empty means "".
void apply_override(YAML::Node root, std::string_view assignment);

// Parse errors become ConfigError with `origin:line:column`.
YAML::Node load_yaml_file(const std::string& file);
YAML::Node load_yaml_string(std::string_view text, std::string_view origin = "<string>");

bool is_http_url(std::string_view s);
std::string join_path(std::string_view parent, std::string_view key);

}  // namespace agentd::core
