// Fuzzes the configuration loader: YAML parsing, substitution, overrides and validation must
// end in a value or a ConfigError, never a crash, hang or other exception.
#include <cstddef>
#include <cstdint>
#include <string>

#include "agentd/app/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  // The first line, when it looks like one, is a --set override.
  std::string override_arg;
  if (auto nl = text.find('\n'); nl != std::string::npos && text.compare(0, 6, "--set ") == 0) {
    override_arg = text.substr(6, nl - 6);
    text.erase(0, nl + 1);
  }
  auto env = [](const std::string& name) -> std::optional<std::string> {
    if (name == "SET") return std::string("value-from-env");
    if (name == "EMPTY") return std::string();
    return std::nullopt;
  };
  try {
    YAML::Node root = agentd::core::load_yaml_string(text, "fuzz");
    if (!override_arg.empty()) agentd::core::apply_override(root, override_arg);
    agentd::core::substitute_env(root, env);
    (void)agentd::app::parse_config(root);
  } catch (const agentd::ConfigError&) {
  }
  return 0;
}
