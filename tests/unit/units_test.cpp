// Durations and sizes as written in the configuration.
#include "agentd/core/units.hpp"

#include <gtest/gtest.h>

namespace agentd::core {
namespace {

using std::chrono::milliseconds;

TEST(Units, Durations) {
  EXPECT_EQ(parse_duration("250ms"), milliseconds(250));
  EXPECT_EQ(parse_duration("10s"), milliseconds(10'000));
  EXPECT_EQ(parse_duration("5m"), milliseconds(300'000));
  EXPECT_EQ(parse_duration("1h"), milliseconds(3'600'000));
  EXPECT_EQ(parse_duration("1d"), milliseconds(86'400'000));
  EXPECT_EQ(parse_duration("1m30s"), milliseconds(90'000));
  EXPECT_EQ(parse_duration("1.5s"), milliseconds(1500));
  EXPECT_EQ(parse_duration(" 2s "), milliseconds(2000));
  EXPECT_EQ(parse_duration("0"), milliseconds(0));
  EXPECT_EQ(parse_duration("1500us"), milliseconds(2));  // rounded to the millisecond
}

TEST(Units, BadDurations) {
  for (const char* bad : {"", "10", "5x", "s", "-1s", "1s-", "1..5s", "ms10"}) {
    EXPECT_FALSE(parse_duration(bad)) << bad;
  }
}

TEST(Units, Sizes) {
  EXPECT_EQ(parse_size("1MiB"), 1024u * 1024);
  EXPECT_EQ(parse_size("512KiB"), 512u * 1024);
  EXPECT_EQ(parse_size("1GiB"), 1024ull * 1024 * 1024);
  EXPECT_EQ(parse_size("64KB"), 64'000u);
  EXPECT_EQ(parse_size("100B"), 100u);
  EXPECT_EQ(parse_size("4096"), 4096u);
  EXPECT_EQ(parse_size("1.5KiB"), 1536u);
}

TEST(Units, BadSizes) {
  for (const char* bad : {"", "1.5B", "MiB", "1 XB", "-1", "1MiBx", "1e3"}) {
    EXPECT_FALSE(parse_size(bad)) << bad;
  }
}

TEST(Units, Formatting) {
  EXPECT_EQ(format_duration(milliseconds(90'000)), "90s");
  EXPECT_EQ(format_duration(milliseconds(120'000)), "2m");
  EXPECT_EQ(format_duration(milliseconds(250)), "250ms");
  EXPECT_EQ(format_duration(milliseconds(7'200'000)), "2h");
  EXPECT_EQ(format_size(1024 * 1024), "1MiB");
  EXPECT_EQ(format_size(1000), "1000B");
}

}  // namespace
}  // namespace agentd::core
