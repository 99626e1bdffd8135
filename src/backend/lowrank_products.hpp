// The low-rank route's products with the base matrix W0 and the base's vectors U0: its
// O(m n r) work, which the backend places (Backend::lowrank_products: the host's
// thin_products.hpp by default, cuBLAS on the CUDA backend). The rest of the route works in the
// base's coordinates on the host (lowrank_operator.hpp, lowrank.cpp). Blocks are row-major fp64 on
// the host.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "indim/backend.hpp"

namespace indim::detail {

class LowRankProducts {
 public:
  /// W0 as analysed: [rows, cols] (the stored matrix, transposed for Conv1D).
  LowRankProducts(int64_t rows, int64_t cols) : rows_(rows), cols_(cols) {}
  virtual ~LowRankProducts() = default;
  LowRankProducts(const LowRankProducts&) = delete;
  LowRankProducts& operator=(const LowRankProducts&) = delete;
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  /// y [rows, c] = W0 x for x [cols, c]; with `transpose`, y [cols, c] = W0^T x for x [rows, c].
  virtual void base(bool transpose, const double* x, int64_t c, double* y) = 0;
  /// The base's vectors the calls of vectors() use from now on: `basis` [dim, count], its
  /// left vectors (dim = rows) or its right ones (dim = cols), alive for those calls.
  virtual void load_vectors(const Vectors& basis) = 0;
  /// y [dim, c] = U0 x for x [count, c]; with `transpose`, y [count, c] = U0^T x for
  /// x [dim, c].
  virtual void vectors(bool transpose, const double* x, int64_t c, double* y) = 0;

 private:
  int64_t rows_, cols_;
};

/// The host's buffer for the products of a base of a type they do not read as stored, kept by
/// the backend across calls: a fresh 32-90 MB buffer costs more in page faults than the
/// products that use it.
struct LowRankWorkspace {
  std::vector<double> w0;
};

/// @brief The host's products (thin_products.hpp): W0 read in its stored bytes where they are
/// bf16, fp32 or fp64 (any other type converted once into fp64 in `ws`), checked first
/// (throwing indim::BadInput "<base_label> holds a non-finite value at [i, j]"), and U0 read
/// where the base's vectors lie.
std::unique_ptr<LowRankProducts> host_lowrank_products(const LowRankProblem& problem,
                                                       LowRankWorkspace& ws);

}  // namespace indim::detail
