// Eigenpairs of symmetric fp64 matrices on the device, one at a time (Xsyevd) or as a batch of
// same-size matrices packed contiguously (XsyevBatched, CUDA 12.6+: no 32 x 32 limit, unlike
// the batched Jacobi routines). The candidate route for groups of same-shape Grams (the 32
// q_proj of a 7B model); bench/syev_batched.cpp times the two against each other.
#pragma once

#include <string>

#include "cuda/resources.hpp"

namespace indim::cuda {

/// In place on ctx's stream: the column-major a [n, n] (lower triangle) becomes its
/// eigenvectors, w [n] its eigenvalues, ascending. Throws CusolverError naming `label`.
void syevd_one(GpuContext& ctx, double* a, int64_t n, double* w, const std::string& label);

/// As syevd_one for `batch` matrices packed one after another in a [batch * n * n], their
/// eigenvalues in w [batch * n]; every matrix's info is checked.
void syev_batched(GpuContext& ctx, double* a, int64_t n, int64_t batch, double* w,
                  const std::string& label);

}  // namespace indim::cuda
