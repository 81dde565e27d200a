// Prometheus registry implementation and text exposition.
#include "agentd/core/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <variant>

namespace agentd::core {

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)),
      buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {
  std::sort(bounds_.begin(), bounds_.end());
}

void Histogram::observe(double v) noexcept {
  auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);
  buckets_[static_cast<std::size_t>(it - bounds_.begin())].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

std::vector<double> latency_buckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30};
}

namespace {
enum Type { kCounter, kGauge, kHistogram };
const char* type_name(int t) {
  return t == kCounter ? "counter" : t == kGauge ? "gauge" : "histogram";
}

std::string escape_label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string label_text(const Labels& labels, std::string_view extra = {}) {
  if (labels.empty() && extra.empty()) return {};
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out += ',';
    first = false;
    out += k + "=\"" + escape_label(v) + "\"";
  }
  if (!extra.empty()) {
    if (!first) out += ',';
    out += extra;
  }
  out += '}';
  return out;
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<long long>(v));
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}
}  // namespace

struct Registry::Family {
  std::string help;
  int type;
  std::map<std::string, std::pair<Labels, std::variant<std::unique_ptr<Counter>,
                                                       std::unique_ptr<Gauge>,
                                                       std::unique_ptr<Histogram>>>>
      series;
};

Registry::Registry() = default;
Registry::~Registry() = default;

Registry::Family& Registry::family(std::string_view name, std::string_view help, int type) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    auto f = std::make_unique<Family>();
    f->help = std::string(help);
    f->type = type;
    it = families_.emplace(std::string(name), std::move(f)).first;
  } else if (it->second->type != type) {
    throw std::logic_error("metric " + std::string(name) + " registered with two types");
  }
  return *it->second;
}

Counter& Registry::counter(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard lock(mutex_);
  auto& f = family(name, help, kCounter);
  auto key = label_text(labels);
  auto it = f.series.find(key);
  if (it == f.series.end()) {
    it = f.series.emplace(key, std::make_pair(labels, std::make_unique<Counter>())).first;
  }
  return *std::get<std::unique_ptr<Counter>>(it->second.second);
}

Gauge& Registry::gauge(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard lock(mutex_);
  auto& f = family(name, help, kGauge);
  auto key = label_text(labels);
  auto it = f.series.find(key);
  if (it == f.series.end()) {
    it = f.series.emplace(key, std::make_pair(labels, std::make_unique<Gauge>())).first;
  }
  return *std::get<std::unique_ptr<Gauge>>(it->second.second);
}

Histogram& Registry::histogram(std::string_view name, std::string_view help,
                               std::vector<double> bounds, const Labels& labels) {
  std::lock_guard lock(mutex_);
  auto& f = family(name, help, kHistogram);
  auto key = label_text(labels);
  auto it = f.series.find(key);
  if (it == f.series.end()) {
    it = f.series
             .emplace(key, std::make_pair(labels, std::make_unique<Histogram>(std::move(bounds))))
             .first;
  }
  return *std::get<std::unique_ptr<Histogram>>(it->second.second);
}

std::string Registry::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + f->help + "\n";
    out += "# TYPE " + name + " " + type_name(f->type) + "\n";
    for (const auto& [key, entry] : f->series) {
      const auto& [labels, metric] = entry;
      if (f->type == kCounter) {
        out += name + key + " " + number(std::get<0>(metric)->value()) + "\n";
      } else if (f->type == kGauge) {
        out += name + key + " " + number(std::get<1>(metric)->value()) + "\n";
      } else {
        const auto& h = *std::get<2>(metric);
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i < h.bounds().size(); ++i) {
          cumulative += h.bucket(i);
          out += name + "_bucket" + label_text(labels, "le=\"" + number(h.bounds()[i]) + "\"") +
                 " " + std::to_string(cumulative) + "\n";
        }
        cumulative += h.bucket(h.bounds().size());
        out += name + "_bucket" + label_text(labels, "le=\"+Inf\"") + " " +
               std::to_string(cumulative) + "\n";
        out += name + "_sum" + key + " " + number(h.sum()) + "\n";
        out += name + "_count" + key + " " + std::to_string(h.count()) + "\n";
      }
    }
  }
  return out;
}

}  // namespace agentd::core
