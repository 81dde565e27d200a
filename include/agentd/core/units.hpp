// Human-readable durations (`250ms`, `10s`, `1m30s`) and sizes (`1MiB`, `64KB`).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace agentd::core {

// Units: us, ms, s, m, h, d; components may be chained (`1h30m`) and decimal (`1.5s`).
// A bare `0` is accepted; any other bare number is rejected (the unit is never guessed).
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

// Units: B, KB/MB/GB (powers of 1000), KiB/MiB/GiB (powers of 1024); a bare integer is bytes.
std::optional<std::uint64_t> parse_size(std::string_view text);

std::string format_duration(std::chrono::milliseconds d);
std::string format_size(std::uint64_t bytes);

}  // namespace agentd::core
