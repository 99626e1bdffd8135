#include "indim/schedule.hpp"

#include <algorithm>
#include <numeric>

namespace indim {

double matrix_cost(int64_t rows, int64_t cols, int tuned) {
  const double m = static_cast<double>(rows), n = static_cast<double>(cols);
  return m * n * std::min(m, n) * (1 + std::max(tuned, 0));
}

double lowrank_cost(int64_t rows, int64_t cols, int64_t rank) {
  // Measured on the bench layer's 2048 x 2048 (CPU backend, fp32, base cached; bench/RESULTS.md,
  // "Pricing LoRA units"): the route takes about 0.025 + 0.0016 r s a matrix where the Gram
  // route on the merged matrix, which matrix_cost prices at 2048 m n, takes 0.32 s; so
  // a = 2048 x 0.025 / 0.32 and b = 2048 x 0.0016 / 0.32.
  constexpr double a = 160, b = 10;
  const double m = static_cast<double>(rows), n = static_cast<double>(cols);
  return m * n * (a + b * static_cast<double>(std::max<int64_t>(rank, 1)));
}

int64_t lowrank_max_rank(int64_t rows, int64_t cols, bool warm_full) {
  // Against the Gram (measured on the CPU at min(out, in) = 2048): the route takes about
  // 0.025 + 0.0016 r s a matrix, the Gram route 0.32 s, so they cross near r = 180; a
  // twentieth of min(out, in) keeps the choice well on the winning side. Against the warm
  // start (same machine, bench/RESULTS.md): crossings near r = 64-96 at 2048 x 2048, 110 at
  // 5504 x 2048, past 128 at 2048 x 5504; a thirtieth of min(out, in).
  const int64_t most = std::min(rows, cols) / (warm_full ? 30 : 20);
  return std::max<int64_t>(1, most);
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
