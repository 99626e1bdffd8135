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

#include "backend/lowrank_products.hpp"
#include "indim/backend.hpp"

namespace indim::detail {

/// One side's problem: W = W0 + s b a (b [m, r], a [r, n], row-major), W0 and that side's
/// U0 [m, p] reached through `products` (W0 being its matrix, or that matrix's transpose for
/// the right side), sigma0 the base's values.
struct LowRankSide {
  LowRankProducts& products;
  bool right = false;  ///< W0 is the transpose of products' matrix
  const Dense<double>& b;
  const Dense<double>& a;
  double s = 1;
  const std::vector<double>& sigma0;
  int64_t m() const { return right ? products.cols() : products.rows(); }
  int64_t n() const { return right ? products.rows() : products.cols(); }
  /// y [m, c] = W0 x for x [n, c]; with `transpose`, y [n, c] = W0^T x for x [m, c].
  void w0(bool transpose, const double* x, int64_t c, double* y) const {
    products.base(transpose != right, x, c, y);
  }
  /// y [m, c] = U0 x for x [p, c]; with `transpose`, y [p, c] = U0^T x for x [m, c].
  void u0(bool transpose, const double* x, int64_t c, double* y) const {
    products.vectors(transpose, x, c, y);
  }
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
