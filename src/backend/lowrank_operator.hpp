// The Gram of a LoRA-adapted matrix in the coordinates of its base's left vectors: for
// W = W0 + s B A (W0 [m, n], B [m, r], A [r, n]) and the base's U0 [m, p] with sigma0, in the
// basis [U0 | Q] with Q = orth((I - U0 U0^T) B), W W^T is T = diag(sigma0^2, 0) + X Lambda X^T
// with X orthonormal of rank q <= 2r: built from C = U0^T B, R = Q^T B, G = s (A W0^T) U0 and
// S = s^2 A A^T (DESIGN.md, Backends). Building it costs O(m n r); a product with it O(p r).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "indim/backend.hpp"

namespace indim::detail {

/// One side's problem, row-major: W = w0 + s b a, the base's vectors u0 [m, p] and sigma0.
struct LowRankSide {
  const Dense<double>& w0;
  const Dense<double>& b;
  const Dense<double>& a;
  double s = 1;
  const std::vector<double>& u0;
  const std::vector<double>& sigma0;
};

struct LowRankOperator {
  int64_t m = 0, p = 0, extra = 0, q = 0;  ///< order p + extra; X has q columns
  std::vector<double> d;                   ///< [p + extra]: sigma0^2, then zeros
  std::vector<double> x;                   ///< column-major [p + extra, q], orthonormal
  std::vector<double> lambda;              ///< column-major [q, q], symmetric
  std::vector<double> qbasis;              ///< Q, column-major [m, extra]
  int64_t order() const { return p + extra; }
  /// out = T in for column-major blocks [order, cols].
  void apply(const double* in, int64_t cols, double* out) const;
};

/// @brief T for `side` (see the file comment).
LowRankOperator build_lowrank_operator(const LowRankSide& side);

/// @brief T's top `keep` eigenpairs: `theta` the leading max(keep, 50) values (those past keep
/// unchecked), `z` the top keep vectors column-major [order, keep], `route` how ("lowrank/krylov,
/// N products" or "lowrank/dense"). The iteration stops at residuals of `tol` theta_1. False
/// when LAPACK fails.
bool lowrank_top(const LowRankOperator& t, int64_t keep, double tol, std::vector<double>& theta,
                 std::vector<double>& z, std::string& route,
                 const std::function<void()>& between_steps);

}  // namespace indim::detail
