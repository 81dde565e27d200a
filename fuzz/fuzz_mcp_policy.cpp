// Fuzzes the MCP argument policy's shell analysis: any input ends in words or a refusal, never a
// crash or hang; and what it accepts is only literal words (no control characters, and a program
// word without '/'), which is what the command allowlist relies on.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "agentd/core/config.hpp"
#include "agentd/mcp/policy.hpp"

namespace {

const agentd::mcp::ArgumentPolicy& policy() {
  static const agentd::mcp::ArgumentPolicy p = [] {
    YAML::Node root = agentd::core::load_yaml_string(
        "policies:\n"
        "  - {name: shell, tools: ['*'], argument: command, command: {allow: [ls, cat, 'git status']}}\n",
        "fuzz");
    return agentd::mcp::ArgumentPolicy::parse(
        agentd::core::ConfigNode(root["policies"], "mcp.policies"));
  }();
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto split = agentd::mcp::split_simple_command(text);
  if (split.refusal.empty()) {
    for (const auto& w : split.words) {
      for (unsigned char c : w) {
        if (c < 0x20 && c != '\t') std::abort();  // a control character got through
      }
    }
  }
  nlohmann::json args = {{"command", text}};
  auto denial = policy().check("client", "x__run", args);
  if (!denial) {
    // Allowed: it must be one of the allowlisted programs, with no path in the program word.
    if (split.words.empty()) std::abort();
    const auto& program = split.words[0];
    if (program != "ls" && program != "cat" && program != "git") std::abort();
  }
  return 0;
}
