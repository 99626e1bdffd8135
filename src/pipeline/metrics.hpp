// The calibrated measures of a record (DESIGN.md, beside the count): the update's energy along
// each tested tuned vector, the top-k subspace overlap and its principal-angle cosines, and
// null_maxcos for the shape. Host code in fp64 on the vectors every backend hands back and on
// the stored bytes (or a LoRA's factors), so every backend and route reports the same measures.
#pragma once

#include <vector>

#include "indim/analyze.hpp"
#include "plan/plan.hpp"

namespace indim::detail {

/// Fills update_energy, update_fro, subspace_overlap, principal_cos and null_maxcos of `r`, a
/// record of `u` on `side` whose maxcos, sigma and null_directions are set. `tuned` is nullptr
/// for a tuned tensor identical to its base (no update, every direction kept).
void add_metrics(MatrixResult& r, const WorkUnit& u, const Decomposition* tuned,
                 const Decomposition& base, Side side);

/// The first `count` columns of `v` in fp64, row-major [v.dim, count].
std::vector<double> leading_columns(const Vectors& v, int64_t count);

/// ||Y^T X||_F^2 / t and the singular values of Y^T X (descending, at most 1), for Y and X
/// row-major [dim, t] with orthonormal columns.
double subspace_overlap(const std::vector<double>& y, const std::vector<double>& x, int64_t dim,
                        int64_t t, std::vector<double>* cosines);

}  // namespace indim::detail
