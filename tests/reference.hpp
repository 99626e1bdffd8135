// An independent computation of the intruder definition for the tests: left singular vectors
// from the fp64 eigen-decomposition of W W^T (LAPACK dsyevd, not the SVD the backends use), and
// the similarity by plain loops.
#pragma once

#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>
#include <vector>

#include "indim/backend.hpp"

namespace indim::test {

/// Top min(out, in) left singular vectors of w [out, in], row-major [out, r], descending.
inline Dense<double> reference_left(const Dense<double>& w) {
  const int64_t out = w.rows, in = w.cols, r = std::min(out, in);
  std::vector<double> g(static_cast<size_t>(out * out), 0.0);  // W W^T, symmetric
  for (int64_t i = 0; i < out; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0;
      for (int64_t l = 0; l < in; ++l) s += w.at(i, l) * w.at(j, l);
      g[i * out + j] = g[j * out + i] = s;
    }
  std::vector<double> ev(static_cast<size_t>(out));
  if (LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', static_cast<lapack_int>(out), g.data(),
                     static_cast<lapack_int>(out), ev.data()) != 0)
    throw std::runtime_error("dsyevd failed");
  Dense<double> u{out, r, std::vector<double>(static_cast<size_t>(out * r))};
  for (int64_t i = 0; i < out; ++i)
    for (int64_t j = 0; j < r; ++j) u.at(i, j) = g[i * out + (out - 1 - j)];  // ascending -> desc
  return u;
}

struct RefSimilarity {
  std::vector<double> maxcos;
  std::vector<int64_t> argmax;
};

/// max_i |<tuned[:, j], base[:, i]>| for j < k.
inline RefSimilarity reference_similarity(const Dense<double>& tuned, const Dense<double>& base,
                                          int k) {
  RefSimilarity s;
  for (int j = 0; j < k; ++j) {
    double best = -1;
    int64_t arg = 0;
    for (int64_t i = 0; i < base.cols; ++i) {
      double dot = 0;
      for (int64_t d = 0; d < base.rows; ++d) dot += tuned.at(d, j) * base.at(d, i);
      if (std::fabs(dot) > best) best = std::fabs(dot), arg = i;
    }
    s.maxcos.push_back(best);
    s.argmax.push_back(arg);
  }
  return s;
}

inline Dense<double> transpose(const Dense<double>& w) {
  Dense<double> t{w.cols, w.rows, std::vector<double>(w.data.size())};
  for (int64_t i = 0; i < w.rows; ++i)
    for (int64_t j = 0; j < w.cols; ++j) t.at(j, i) = w.at(i, j);
  return t;
}

/// rows x cols independent N(0, sd^2) values.
inline Dense<double> gaussian(int64_t rows, int64_t cols, double sd, std::mt19937_64& rng) {
  std::normal_distribution<double> g(0.0, sd);
  Dense<double> m{rows, cols, std::vector<double>(static_cast<size_t>(rows * cols))};
  for (auto& x : m.data) x = g(rng);
  return m;
}

/// a b by plain loops.
inline Dense<double> matmul(const Dense<double>& a, const Dense<double>& b) {
  Dense<double> c{a.rows, b.cols, std::vector<double>(static_cast<size_t>(a.rows * b.cols))};
  for (int64_t i = 0; i < a.rows; ++i)
    for (int64_t l = 0; l < a.cols; ++l)
      for (int64_t j = 0; j < b.cols; ++j) c.at(i, j) += a.at(i, l) * b.at(l, j);
  return c;
}

template <typename T>
Dense<T> cast(const Dense<double>& w) {
  return {w.rows, w.cols, std::vector<T>(w.data.begin(), w.data.end())};
}

}  // namespace indim::test
