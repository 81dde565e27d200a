// Shell-style globs for names: `*` matches any run of characters, `?` one character.
#pragma once

#include <string_view>

namespace agentd::core {

bool glob_match(std::string_view pattern, std::string_view text) noexcept;

}  // namespace agentd::core
