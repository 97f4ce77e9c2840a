#include "gateway/metrics.hpp"

#include <cstdio>

namespace syncline::gateway {

constexpr std::array<double, 12> Histogram::kBounds;

void Histogram::Observe(double seconds) {
  for (size_t i = 0; i < kBounds.size(); i++)
    if (seconds <= kBounds[i]) counts_[i]++;
  count_++;
  sum_ += seconds;
}

void Histogram::Render(const std::string &name, const std::string &help, std::string *out) const {
  char line[256];
  *out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  for (size_t i = 0; i < kBounds.size(); i++) {
    snprintf(line, sizeof line, "%s_bucket{le=\"%g\"} %llu\n", name.c_str(), kBounds[i],
             static_cast<unsigned long long>(counts_[i]));
    *out += line;
  }
  snprintf(line, sizeof line, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n",
           name.c_str(), static_cast<unsigned long long>(count_), name.c_str(), sum_, name.c_str(),
           static_cast<unsigned long long>(count_));
  *out += line;
}

void RenderMetric(const std::string &name, const char *type, const std::string &help, double value,
                  std::string *out) {
  char line[64];
  snprintf(line, sizeof line, "%.17g", value);
  *out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " +
          line + "\n";
}

}  // namespace syncline::gateway
