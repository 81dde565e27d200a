// Argument policies for MCP tool calls: rules checked against a `tools/call`'s arguments before
// agentd forwards the call upstream. Pure logic, no I/O (docs/mcp-policy.md has the semantics).
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "agentd/core/config.hpp"

namespace agentd::mcp {

// JSON-RPC error code of a call refused by a policy (server-defined range).
inline constexpr int kPolicyDeniedCode = -32003;

// Kind 1: the argument is one simple shell command of literal words (a string, or an argv
// array), whose program and leading words equal an allowlist entry.
struct CommandCheck {
  std::vector<std::vector<std::string>> allow;  // each entry split into words: {"git", "status"}
  bool allow_absolute_paths = false;            // words after the matched entry
  bool allow_parent_paths = false;              // `..` components in words after the entry
};

// Kind 2: the argument is an absolute path (or a list of them) inside one of `within`.
struct PathCheck {
  std::vector<std::string> within;  // lexically normalised absolute roots, no trailing '/'
};

struct CompiledPatterns;  // Boost.Regex objects, private to policy.cpp

// Kind 3: no string may contain a match of a `deny` regex; when `allow` is not empty, every
// string must match one `allow` regex as a whole.
struct PatternCheck {
  std::vector<std::string> deny;   // sources as configured
  std::vector<std::string> allow;  // sources as configured
  std::shared_ptr<const CompiledPatterns> compiled;
};

// Kind 4: strings of at most `max_length` Unicode code points.
struct LengthCheck {
  std::uint64_t max_length = 0;
};

// One parsed rule of `mcp.policies`.
struct PolicyRule {
  std::string name;                  // named in every denial
  std::vector<std::string> tools;    // namespaced tool name globs
  std::vector<std::string> clients;  // client name globs; empty: every client
  std::string argument;              // a top-level key, a JSON pointer ("/a/b") or "*"
  std::optional<nlohmann::json::json_pointer> pointer;  // set when `argument` starts with '/'
  std::variant<CommandCheck, PathCheck, PatternCheck, LengthCheck> check;

  // Whether this rule governs calls of `tool` by `client`.
  bool applies_to(std::string_view client, std::string_view tool) const noexcept;
};

// Why a call was refused. `message` never echoes more than ~80 characters of a value and is
// valid UTF-8 (control characters and invalid bytes are escaped).
struct Denial {
  std::string rule;
  std::string message;
};

// The JSON-RPC error object for a denial:
// {"code": -32003, "message": "denied by policy '<rule>': <message>", "data": {"rule": "<rule>"}}
nlohmann::json to_jsonrpc_error(const Denial& denial);

// The rules of `mcp.policies`, applied in order.
class ArgumentPolicy {
 public:
  ArgumentPolicy() = default;

  // Parses the `mcp.policies` list (absent/null: no rules). Throws ConfigError naming the key
  // path on bad input: unknown keys, no or several check kinds, bad regexes, empty lists...
  static ArgumentPolicy parse(const core::ConfigNode& policies_list);

  // The first denial among the rules that apply to (`client`, `tool`), or nullopt when the
  // call may proceed. `tool` is the namespaced name ("shell__run_command"). Never throws.
  std::optional<Denial> check(const std::string& client, const std::string& tool,
                              const nlohmann::json& arguments) const;

  bool empty() const noexcept { return rules_.empty(); }
  const std::vector<PolicyRule>& rules() const noexcept { return rules_; }

 private:
  std::vector<PolicyRule> rules_;
};

// The analysis behind CommandCheck: `command` split into words the way a POSIX shell would for
// a simple command (quotes and backslashes removed), or a non-empty `refusal` saying which
// construct a shell could interpret beyond literal words (operators, expansions, globs,
// control characters, unbalanced quotes...).
struct ShellSplit {
  std::vector<std::string> words;
  std::string refusal;
};
ShellSplit split_simple_command(std::string_view command);

}  // namespace agentd::mcp
