// Parsing and formatting of durations and sizes used throughout the configuration.
#include "agentd/core/units.hpp"

#include <cctype>
#include <cmath>
#include <limits>

namespace agentd::core {
namespace {

// Reads a non-negative decimal number at the front of `s`; returns nullopt if none.
std::optional<double> take_number(std::string_view& s) {
  std::size_t i = 0;
  bool digits = false, dot = false;
  while (i < s.size()) {
    char c = s[i];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      digits = true;
    } else if (c == '.' && !dot) {
      dot = true;
    } else {
      break;
    }
    ++i;
  }
  if (!digits) return std::nullopt;
  double v = 0, scale = 0;
  for (std::size_t k = 0; k < i; ++k) {
    if (s[k] == '.') {
      scale = 1;
      continue;
    }
    int d = s[k] - '0';
    if (scale == 0) {
      v = v * 10 + d;
    } else {
      scale /= 10;
      v += d * scale;
    }
  }
  s.remove_prefix(i);
  return v;
}

std::string_view take_unit(std::string_view& s) {
  std::size_t i = 0;
  while (i < s.size() && std::isalpha(static_cast<unsigned char>(s[i]))) ++i;
  auto unit = s.substr(0, i);
  s.remove_prefix(i);
  return unit;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

}  // namespace

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  auto s = trim(text);
  if (s == "0") return std::chrono::milliseconds(0);
  if (s.empty()) return std::nullopt;
  double total_ms = 0;
  while (!s.empty()) {
    auto n = take_number(s);
    if (!n) return std::nullopt;
    auto unit = take_unit(s);
    double mult;
    if (unit == "us") mult = 0.001;
    else if (unit == "ms") mult = 1;
    else if (unit == "s") mult = 1000;
    else if (unit == "m") mult = 60'000;
    else if (unit == "h") mult = 3'600'000;
    else if (unit == "d") mult = 86'400'000;
    else return std::nullopt;
    total_ms += *n * mult;
  }
  if (total_ms > 1e15) return std::nullopt;
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(total_ms)));
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  auto s = trim(text);
  auto n = take_number(s);
  if (!n) return std::nullopt;
  s = trim(s);
  auto unit = take_unit(s);
  if (!s.empty()) return std::nullopt;
  double mult;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "KB" || unit == "kB") mult = 1e3;
  else if (unit == "MB") mult = 1e6;
  else if (unit == "GB") mult = 1e9;
  else if (unit == "KiB") mult = 1024.0;
  else if (unit == "MiB") mult = 1024.0 * 1024;
  else if (unit == "GiB") mult = 1024.0 * 1024 * 1024;
  else return std::nullopt;
  double bytes = *n * mult;
  if (bytes > 9e18 || bytes != std::floor(bytes)) return std::nullopt;
  return static_cast<std::uint64_t>(bytes);
}

std::string format_duration(std::chrono::milliseconds d) {
  auto ms = d.count();
  if (ms != 0 && ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms != 0 && ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms != 0 && ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string format_size(std::uint64_t bytes) {
  constexpr std::uint64_t kKi = 1024, kMi = kKi * 1024, kGi = kMi * 1024;
  if (bytes != 0 && bytes % kGi == 0) return std::to_string(bytes / kGi) + "GiB";
  if (bytes != 0 && bytes % kMi == 0) return std::to_string(bytes / kMi) + "MiB";
  if (bytes != 0 && bytes % kKi == 0) return std::to_string(bytes / kKi) + "KiB";
  return std::to_string(bytes) + "B";
}

}  // namespace agentd::core
