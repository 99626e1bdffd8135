#include "backend/gram_host.hpp"

#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "indim/error.hpp"

namespace indim::detail {

std::string solver_info_text(long long info) {
  return "(info " + std::to_string(info) +
         (info > 0 ? ", did not converge)" : ", illegal argument)");
}

void check_lapack(long long info, const std::string& label, const char* routine) {
  if (info != 0) throw Error(label + ": LAPACK " + routine + " failed " + solver_info_text(info));
}

double worst_residual(const double* tv, const double* v, const double* theta, int64_t n,
                      int64_t cols) {
  double worst = 0;
  for (int64_t j = 0; j < cols; ++j) {
    double r = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double d = tv[i + j * n] - theta[j] * v[i + j * n];
      r += d * d;
    }
    worst = std::max(worst, std::sqrt(r));
  }
  return worst;
}

std::vector<double> subspace_start(int64_t n, int64_t b) {
  std::vector<double> q(static_cast<size_t>(n * b));
  std::mt19937_64 rng(0x5eedULL + static_cast<uint64_t>(n));
  std::normal_distribution<double> gauss;
  for (double& x : q) x = gauss(rng);
  return q;
}

bool ritz(std::vector<double>& h, int64_t b, std::vector<double>& s, std::vector<double>& theta) {
  std::vector<double> w(static_cast<size_t>(b));
  const lapack_int lb = static_cast<lapack_int>(b);
  if (LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', lb, h.data(), lb, w.data()) != 0) return false;
  s.resize(static_cast<size_t>(b * b));
  theta.resize(static_cast<size_t>(b));
  for (int64_t j = 0; j < b; ++j) {  // ascending -> descending
    std::copy(h.begin() + (b - 1 - j) * b, h.begin() + (b - j) * b, s.begin() + j * b);
    theta[j] = w[b - 1 - j];
  }
  return true;
}

void tridiagonal_top(std::vector<double>& diag, std::vector<double>& off, int64_t keep,
                     std::vector<double>& lambda, std::vector<double>& z,
                     const std::string& label) {
  const lapack_int n = static_cast<lapack_int>(diag.size()), k = static_cast<lapack_int>(keep);
  if (k < 1 || k > n || off.size() < diag.size())
    throw Error(label + ": tridiagonal eigenproblem with inconsistent sizes");
  lambda = diag;
  std::vector<double> off_copy = off;
  check_lapack(LAPACKE_dsterf(n, lambda.data(), off_copy.data()), label, "dsterf");
  z.assign(static_cast<size_t>(n) * static_cast<size_t>(k), 0.0);
  std::vector<double> found(static_cast<size_t>(n));
  std::vector<lapack_int> support(static_cast<size_t>(2 * k));
  lapack_int m = 0;
  lapack_logical tryrac = 1;
  check_lapack(
      LAPACKE_dstemr(LAPACK_COL_MAJOR, 'V', 'I', n, diag.data(), off.data(), 0, 0, n - k + 1, n, &m,
                     found.data(), z.data(), n, k, support.data(), &tryrac),
      label, "dstemr");
  if (m != k) check_lapack(-1, label, "dstemr (fewer eigenpairs than asked)");
}

}  // namespace indim::detail
