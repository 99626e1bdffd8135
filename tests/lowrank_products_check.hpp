// The low-rank route's products (backend/lowrank_products.hpp) against plain loops, for the
// host's products in the CPU tests and the device's in the GPU tests: a stored base (bf16 by
// default), analysed as stored or transposed (Conv1D), and vectors of either side.
#pragma once

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "backend/lowrank_products.hpp"
#include "indim/dtype.hpp"
#include "indim/safetensors.hpp"

namespace indim::test {

/// A base stored as `dtype` [rows, cols] and its analysed fp64 matrix (the transpose when
/// conv1d), read back from the stored bytes.
struct StoredBase {
  std::vector<uint8_t> bytes;
  Dense<double> analysed;
};

inline StoredBase stored_base(int64_t rows, int64_t cols, bool conv1d, DType dtype,
                              std::mt19937_64& rng) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (float& x : v) x = g(rng);
  StoredBase s;
  s.bytes = encode_floats(v, dtype);
  std::vector<double> stored(v.size());
  convert_elements(s.bytes.data(), dtype, stored.size(), stored.data());
  s.analysed = conv1d ? Dense<double>{cols, rows, std::vector<double>(v.size())}
                      : Dense<double>{rows, cols, stored};
  if (conv1d)
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) s.analysed.at(j, i) = stored[i * cols + j];
  return s;
}

inline StoredBase stored_bf16(int64_t rows, int64_t cols, bool conv1d, std::mt19937_64& rng) {
  return stored_base(rows, cols, conv1d, DType::BF16, rng);
}

/// Row-major op(a) x by plain loops, x [k, c].
inline std::vector<double> loops_product(const Dense<double>& a, bool transpose,
                                         const std::vector<double>& x, int64_t c) {
  const int64_t m = transpose ? a.cols : a.rows, k = transpose ? a.rows : a.cols;
  std::vector<double> y(static_cast<size_t>(m * c), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t l = 0; l < k; ++l) {
      const double e = transpose ? a.at(l, i) : a.at(i, l);
      for (int64_t j = 0; j < c; ++j) y[i * c + j] += e * x[l * c + j];
    }
  return y;
}

/// The worst |difference| over max |y| of the four products of `p` (W0 = `w0` as analysed,
/// U0 = `u0` once loaded) against loops_product, for random blocks of c columns.
inline double products_error(detail::LowRankProducts& p, const Dense<double>& w0, const Vectors& u0,
                             int64_t c, std::mt19937_64& rng) {
  p.load_vectors(u0);
  const Dense<double> u{u0.dim, u0.count, [&] {
                          std::vector<double> d(u0.size());
                          for (int64_t i = 0; i < u0.dim; ++i)
                            for (int64_t j = 0; j < u0.count; ++j)
                              d[i * u0.count + j] = u0.at(i, j);
                          return d;
                        }()};
  std::normal_distribution<double> g;
  double worst = 0;
  for (const Dense<double>* a : {&w0, &u}) {
    for (bool t : {false, true}) {
      const int64_t k = t ? a->rows : a->cols, m = t ? a->cols : a->rows;
      std::vector<double> x(static_cast<size_t>(k * c)), y(static_cast<size_t>(m * c));
      for (double& e : x) e = g(rng);
      if (a == &w0)
        p.base(t, x.data(), c, y.data());
      else
        p.vectors(t, x.data(), c, y.data());
      const std::vector<double> want = loops_product(*a, t, x, c);
      double top = 0, diff = 0;
      for (size_t i = 0; i < y.size(); ++i)
        top = std::max(top, std::fabs(want[i])), diff = std::max(diff, std::fabs(y[i] - want[i]));
      worst = std::max(worst, diff / top);
    }
  }
  return worst;
}

}  // namespace indim::test
