// Prometheus text exposition.
#include "agentd/core/metrics.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace agentd::core {
namespace {

using ::testing::HasSubstr;

TEST(Metrics, CountersAndGaugesWithLabels) {
  Registry r;
  r.counter("reqs_total", "Requests", {{"route", "/a"}, {"status", "200"}}).inc();
  r.counter("reqs_total", "Requests", {{"route", "/a"}, {"status", "200"}}).inc(2);
  r.counter("reqs_total", "Requests", {{"route", "q\"\\\n"}}).inc();
  r.gauge("open", "Open things").set(3);
  r.gauge("open", "Open things").dec();
  auto text = r.render();
  EXPECT_THAT(text, HasSubstr("# HELP reqs_total Requests\n# TYPE reqs_total counter\n"));
  EXPECT_THAT(text, HasSubstr("reqs_total{route=\"/a\",status=\"200\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("reqs_total{route=\"q\\\"\\\\\\n\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE open gauge\nopen 2\n"));
}

TEST(Metrics, HistogramBucketsAreCumulative) {
  Registry r;
  auto& h = r.histogram("lat", "Latency", {0.1, 1}, {{"route", "/x"}});
  h.observe(0.05);
  h.observe(0.5);
  h.observe(0.5);
  h.observe(7);
  auto text = r.render();
  EXPECT_THAT(text, HasSubstr("lat_bucket{route=\"/x\",le=\"0.1\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lat_bucket{route=\"/x\",le=\"1\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("lat_bucket{route=\"/x\",le=\"+Inf\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("lat_sum{route=\"/x\"} 8.05\n"));
  EXPECT_THAT(text, HasSubstr("lat_count{route=\"/x\"} 4\n"));
}

TEST(Metrics, OneNameOneType) {
  Registry r;
  r.counter("x", "X");
  EXPECT_THROW(r.gauge("x", "X"), std::logic_error);
}

}  // namespace
}  // namespace agentd::core
