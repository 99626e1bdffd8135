// Row-major fp64 GEMM through CBLAS: C = alpha op(A) op(B) + beta C, the host products the
// measures and indim mitigate compute.
#pragma once

#include <cblas.h>

#include <cstdint>

namespace indim::detail {

inline void row_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
                     const double* a, int64_t lda, const double* b, int64_t ldb, double beta,
                     double* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace indim::detail
