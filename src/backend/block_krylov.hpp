// The top eigenpairs of a symmetric positive semi-definite operator known only through its
// products with blocks of vectors: a block Krylov basis with full reorthogonalisation and a
// Rayleigh-Ritz step after each block, restarted from the leading Ritz vectors when the basis
// is full. Directions the basis already holds are dropped, so an operator of the form
// diag + rank q grows the basis by at most q per step. Used by the exact low-rank route, where
// a product costs O(n q) instead of the Gram's O(n^2).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace indim::detail {

/// y = T x for a block: x and y column-major [n, cols].
using BlockApply = std::function<void(const double* x, int64_t cols, double* y)>;

struct KrylovOptions {
  int64_t keep = 10;         ///< eigenpairs whose residuals are checked
  int64_t shown = 50;        ///< leading Ritz values returned (at most the basis size)
  int64_t restart = 66;      ///< Ritz vectors kept at a restart (at least max(keep, shown))
  int64_t max_basis = 0;     ///< basis size that triggers a restart (at most n)
  int64_t max_products = 0;  ///< operator columns applied before giving up
  double tol = 1e-12;        ///< done when every ||T v_j - theta_j v_j|| <= tol theta_1
  /// 0: each step adds T applied to the last block. n > 0: each step adds the residuals of the
  /// leading n Ritz pairs instead, so the basis grows by n a step whatever the start's width.
  int64_t residual_block = 0;
  bool start_orthonormal = false;  ///< the start block's columns are orthonormal already
  /// Give up early on a stall: from the third step on, when the residual's decay over the
  /// last two steps, extrapolated, needs more than max_products to reach tol.
  bool stop_when_stalled = false;
  std::function<void()> between_steps;  ///< called before each step (cancellation)
};

struct KrylovResult {
  bool converged = false;
  int64_t products = 0;         ///< operator columns applied
  double residual = 0;          ///< the worst top-keep residual over theta_1 at the end
  bool stalled = false;         ///< stopped early by stop_when_stalled
  double projected = 0;         ///< then: the products the extrapolation needed
  std::vector<double> theta;    ///< leading Ritz values, descending
  std::vector<double> vectors;  ///< the top keep Ritz vectors, column-major [n, keep]
};

/// @brief Orthonormalises the columns of x (column-major [n, cols]) against the first nv
/// columns of v (orthonormal, column-major [n, nv]; nullptr when nv is 0) and among themselves,
/// dropping each column that keeps less than 1e-10 of its norm (already in the span, to
/// rounding); the kept columns are packed to the front. Returns how many were kept.
int64_t orthonormalise(const double* v, int64_t n, int64_t nv, double* x, int64_t cols);

/// @brief Whether all n eigenpairs (dsyevd) cost less than the top `count` (dsyevr's bisection
/// and inverse iteration): where 6 count >= n (bench/RESULTS.md: at n = 162, all in 2.2 ms
/// against 2.2 ms for 26 and 3.5 ms for 50).
inline bool all_pairs_pay(int64_t n, int64_t count) { return 6 * count >= n; }

/// @brief The top `count` eigenpairs of the symmetric a (column-major [n, n], lower triangle
/// read; destroyed), descending: `theta` and `vectors` column-major [n, count] (LAPACK dsyevd
/// where all_pairs_pay, else dsyevr). False when LAPACK fails.
bool symmetric_top(std::vector<double>& a, int64_t n, int64_t count, std::vector<double>& theta,
                   std::vector<double>& vectors);

/// @brief The top `keep` eigenpairs of the operator of order n, from the span of `start`
/// (column-major [n, start_cols]; consumed). Converged or not, `theta` and `vectors` hold the
/// last Rayleigh-Ritz step's values; the caller decides what an unconverged result is worth.
KrylovResult block_krylov_top(int64_t n, const BlockApply& apply, std::vector<double> start,
                              int64_t start_cols, const KrylovOptions& options);

}  // namespace indim::detail
