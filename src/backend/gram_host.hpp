// The host steps of the fp64 Gram route that both backends share, and their solver checks. For the
// tuned side's top k: subspace iteration on the Gram (its constants, start block and small
// Rayleigh-Ritz problem), and, where that does not apply or converge, the eigenpairs of the
// symmetric tridiagonal matrix left by ?sytrd: every eigenvalue (dsterf), and the vectors of the
// `keep` largest only (dstemr), so that the back-transformation touches keep vectors.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace indim::detail {

/// Subspace iteration for the top `keep` eigenpairs of a Gram of order n: a block of
/// max(keep, 50) + 16 vectors (50: the leading values the report's spectra show), a
/// Rayleigh-Ritz step each sweep, done when every top-keep residual ||G v - theta v|| is at
/// most 1e-12 theta_1; only on Grams of at least 4 blocks. Given up after n / block sweeps
/// (20 to 60): a sweep costs 2 n^2 block flops against the exact route's ~n^3, so past that
/// the exact route is the cheaper (measured on the CPU at n = 2048: 25 sweeps 0.92 s, 48 sweeps
/// 1.48 s, the exact route 0.95 s).
constexpr int64_t kSubspaceShown = 50, kSubspaceOversample = 16;
constexpr double kSubspaceTol = 1e-12;
inline int64_t subspace_block(int64_t keep) {
  return (keep > kSubspaceShown ? keep : kSubspaceShown) + kSubspaceOversample;
}
inline bool subspace_applies(int64_t n, int64_t keep) {
  return keep <= n / 2 && n >= 4 * subspace_block(keep);
}
inline int subspace_max_sweeps(int64_t n, int64_t keep) {
  const int64_t s = n / subspace_block(keep);
  return static_cast<int>(s < 20 ? 20 : s > 60 ? 60 : s);
}
/// @brief True when, at the rate the last sweep shrank the worst residual (from `before` to
/// `now`, both relative to theta_1), sweep `sweep` (0-based) cannot reach the bound within
/// `max_sweeps`: then the exact route takes over at once instead of after the last sweep.
inline bool subspace_hopeless(int sweep, double before, double now, int max_sweeps) {
  if (sweep < 3 || !(now > 0) || !(before > 0)) return false;
  const double rate = now / before;
  if (rate >= 1.0) return true;
  const double needed = std::log(kSubspaceTol / now) / std::log(rate);
  return sweep + 1 + needed > max_sweeps;
}

/// @brief max_j ||tv_j - theta_j v_j|| over the first `cols` columns of column-major [n, *]
/// blocks: the worst residual of Ritz pairs (both iterations check theirs with it).
double worst_residual(const double* tv, const double* v, const double* theta, int64_t n,
                      int64_t cols);

/// @brief The start block: fixed-seed Gaussian, column-major [n, b] (the same every run).
std::vector<double> subspace_start(int64_t n, int64_t b);

/// @brief The Rayleigh-Ritz problem H = S diag(theta) S^T for symmetric h [b, b] (lower
/// triangle; destroyed): `s` column-major [b, b] and `theta`, by descending theta. False when
/// LAPACK fails.
bool ritz(std::vector<double>& h, int64_t b, std::vector<double>& s, std::vector<double>& theta);

/// @brief For the n x n tridiagonal with diagonal `diag` [n] and off-diagonal `off` [n - 1,
/// stored in a vector of n], both consumed: `lambda` receives all n eigenvalues, ascending;
/// `z` the eigenvectors of the `keep` largest (1 <= keep <= n), column-major [n, keep], in
/// ascending order of eigenvalue. Throws indim::Error naming `label` when LAPACK fails.
void tridiagonal_top(std::vector<double>& diag, std::vector<double>& off, int64_t keep,
                     std::vector<double>& lambda, std::vector<double>& z, const std::string& label);

/// @brief How a solver's nonzero `info` reads in an error: "(info 3, did not converge)" or
/// "(info -2, illegal argument)"; the LAPACK and cuSOLVER checks share it.
std::string solver_info_text(long long info);
/// @brief Throws indim::Error "<label>: LAPACK <routine> failed (info ...)" when info != 0.
void check_lapack(long long info, const std::string& label, const char* routine);

}  // namespace indim::detail
