#include "indim/schedule.hpp"

#include <algorithm>
#include <numeric>

namespace indim {

double matrix_cost(int64_t rows, int64_t cols, int tuned) {
  const double m = static_cast<double>(rows), n = static_cast<double>(cols);
  return m * n * std::min(m, n) * (1 + std::max(tuned, 0));
}

std::vector<int> assign_workers(const std::vector<double>& costs, int workers) {
  std::vector<int> out(costs.size(), 0);
  if (workers <= 1) return out;
  std::vector<size_t> order(costs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return costs[a] > costs[b]; });
  std::vector<double> load(static_cast<size_t>(workers), 0.0);
  for (size_t i : order) {
    const size_t w = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    out[i] = static_cast<int>(w);
    load[w] += costs[i];
  }
  return out;
}

}  // namespace indim
