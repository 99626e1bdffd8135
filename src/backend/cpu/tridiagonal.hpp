// The step of the fp64 Gram route that runs on the host for both backends: eigenpairs of the
// symmetric tridiagonal matrix left by ?sytrd. Every eigenvalue (dsterf), and the vectors of
// the `keep` largest only (dstemr), so that the back-transformation touches keep vectors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace indim::detail {

/// @brief For the n x n tridiagonal with diagonal `diag` [n] and off-diagonal `off` [n - 1,
/// stored in a vector of n], both consumed: `lambda` receives all n eigenvalues, ascending;
/// `z` the eigenvectors of the `keep` largest (1 <= keep <= n), column-major [n, keep], in
/// ascending order of eigenvalue. Throws indim::Error naming `label` when LAPACK fails.
void tridiagonal_top(std::vector<double>& diag, std::vector<double>& off, int64_t keep,
                     std::vector<double>& lambda, std::vector<double>& z, const std::string& label);

}  // namespace indim::detail
