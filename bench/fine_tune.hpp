// The fine-tunes the benchmarks make of a generated base: dense noise at a fraction of the
// base's rms entry plus a rank-4 change whose leading direction is half of sigma_1.
#pragma once

#include <cmath>
#include <random>
#include <vector>

#include "indim/backend.hpp"

namespace indim::bench {

inline Dense<double> fine_tune(const Dense<double>& w0, double noise, double sigma1,
                               std::mt19937_64& rng) {
  std::normal_distribution<double> g(0.0, 1.0);
  Dense<double> w = w0;
  double ss = 0;
  for (double x : w0.data) ss += x * x;
  const double rms = std::sqrt(ss / static_cast<double>(w0.data.size()));
  for (double& x : w.data) x += noise * rms * g(rng);
  for (int j = 0; j < 4; ++j) {
    std::vector<double> a(static_cast<size_t>(w.rows)), b(static_cast<size_t>(w.cols));
    for (double& x : a) x = g(rng) / std::sqrt(static_cast<double>(w.rows));
    for (double& x : b) x = g(rng) / std::sqrt(static_cast<double>(w.cols));
    const double s = 0.5 * sigma1 * std::pow(0.7, j);
    for (int64_t r = 0; r < w.rows; ++r)
      for (int64_t c = 0; c < w.cols; ++c) w.at(r, c) += s * a[r] * b[c];
  }
  return w;
}

}  // namespace indim::bench
