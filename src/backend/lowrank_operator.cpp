#include "backend/lowrank_operator.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "backend/block_krylov.hpp"
#include "backend/gram_host.hpp"
#include "backend/host_matrix.hpp"

namespace indim::detail {

namespace {

// Row-major C = alpha op(A) op(B) + beta C.
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
          int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Column-major C = alpha op(A) op(B) + beta C.
void gemm_cm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
             int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// A residual column of B keeping less than this of its norm lies in range(U0).
constexpr double kOutsideFloor = 1e-8;

// Q = orth((I - U0 U0^T) B), column-major [m, extra], from C = U0^T B; empty when U0 spans R^m.
std::vector<double> outside_basis(const LowRankSide& sp, const std::vector<double>& c, int64_t p,
                                  int64_t& extra) {
  const int64_t m = sp.b.rows, r = sp.b.cols;
  extra = 0;
  if (p >= m) return {};
  std::vector<double> res(static_cast<size_t>(m * r));
  sp.u0(false, c.data(), r, res.data());
  for (size_t i = 0; i < res.size(); ++i) res[i] = sp.b.data[i] - res[i];
  std::vector<double> q(static_cast<size_t>(m * r));
  for (int64_t j = 0; j < r; ++j) {
    double bn = 0, rn = 0;
    for (int64_t i = 0; i < m; ++i) {
      bn += sp.b.data[i * r + j] * sp.b.data[i * r + j];
      rn += res[i * r + j] * res[i * r + j];
    }
    const bool outside = std::sqrt(rn) > kOutsideFloor * std::sqrt(bn);
    for (int64_t i = 0; i < m; ++i) q[i + j * m] = outside ? res[i * r + j] : 0.0;
  }
  extra = orthonormalise(nullptr, m, 0, q.data(), r);
  q.resize(static_cast<size_t>(m * extra));
  return q;
}

// Dense T = diag(d) + (X Lambda) X^T (order <= a few hundred, or where the iteration does not
// pay): its top count.
bool dense_top(const LowRankOperator& t, int64_t count, std::vector<double>& theta,
               std::vector<double>& z) {
  const int64_t n = t.order(), q = t.q;
  std::vector<double> full(static_cast<size_t>(n * n), 0.0), xl(static_cast<size_t>(n * q));
  if (q > 0) {
    gemm_cm(false, false, n, q, q, 1.0, t.x.data(), n, t.lambda.data(), q, 0.0, xl.data(), n);
    gemm_cm(false, true, n, n, q, 1.0, xl.data(), n, t.x.data(), n, 0.0, full.data(), n);
  }
  for (int64_t i = 0; i < n; ++i) full[i + i * n] += t.d[i];
  return symmetric_top(full, n, count, theta, z);
}

}  // namespace

void LowRankOperator::apply(const double* in, int64_t cols, double* out) const {
  const int64_t n = order();
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t i = 0; i < n; ++i) out[i + j * n] = d[i] * in[i + j * n];
  if (q == 0) return;
  std::vector<double> t1(static_cast<size_t>(q * cols)), t2(static_cast<size_t>(q * cols));
  gemm_cm(true, false, q, cols, n, 1.0, x.data(), n, in, n, 0.0, t1.data(), q);
  gemm_cm(false, false, q, cols, q, 1.0, lambda.data(), q, t1.data(), q, 0.0, t2.data(), q);
  gemm_cm(false, false, n, cols, q, 1.0, x.data(), n, t2.data(), q, 1.0, out, n);
}

LowRankOperator build_lowrank_operator(const LowRankSide& sp) {
  LowRankOperator t;
  const int64_t m = sp.m(), n = sp.n(), r = sp.b.cols;
  const int64_t p = std::min(m, n);
  t.m = m, t.p = p;
  // One pass over U0 for both of its products: U0^T [B | W0 A^T] = [C | G^T / s], [p, 2r];
  // W0 A^T [m, r] is the only product with W0, and S = s^2 A A^T [r, r].
  std::vector<double> y(static_cast<size_t>(m * 2 * r)), cg(static_cast<size_t>(p * 2 * r)),
      s2(static_cast<size_t>(r * r)), w0at(static_cast<size_t>(m * r));
  sp.w0(false, transposed(sp.a).data.data(), r, w0at.data());
  for (int64_t i = 0; i < m; ++i) {
    std::copy(sp.b.data.begin() + i * r, sp.b.data.begin() + (i + 1) * r, y.begin() + i * 2 * r);
    std::copy(w0at.begin() + i * r, w0at.begin() + (i + 1) * r, y.begin() + i * 2 * r + r);
  }
  sp.u0(true, y.data(), 2 * r, cg.data());
  gemm(false, true, r, r, n, sp.s * sp.s, sp.a.data.data(), n, sp.a.data.data(), n, 0.0, s2.data(),
       r);
  std::vector<double> c(static_cast<size_t>(p * r));  // C = U0^T B [p, r]
  for (int64_t i = 0; i < p; ++i)
    std::copy(cg.begin() + i * 2 * r, cg.begin() + i * 2 * r + r, c.begin() + i * r);
  t.qbasis = outside_basis(sp, c, p, t.extra);
  const int64_t e = t.extra, big = p + e;
  std::vector<double> rr(static_cast<size_t>(e * r));  // R = Q^T B [extra, r]
  if (e > 0)
    gemm(false, false, e, r, m, 1.0, t.qbasis.data(), m, sp.b.data.data(), r, 0.0, rr.data(), r);
  // E = [G^T; 0] and K = [C; R], column-major [big, r] each, side by side.
  std::vector<double> ek(static_cast<size_t>(big * 2 * r), 0.0);
  for (int64_t j = 0; j < r; ++j) {
    for (int64_t i = 0; i < p; ++i) ek[i + j * big] = sp.s * cg[i * 2 * r + r + j];  // G^T
    for (int64_t i = 0; i < p; ++i) ek[i + (r + j) * big] = c[i * r + j];
    for (int64_t i = 0; i < e; ++i) ek[p + i + (r + j) * big] = rr[i * r + j];
  }
  t.x = ek;
  t.q = orthonormalise(nullptr, big, 0, t.x.data(), 2 * r);
  t.x.resize(static_cast<size_t>(big * t.q));
  // Lambda = X^T (E K^T + K E^T + K S K^T) X = XE XK^T + XK XE^T + XK S XK^T.
  const int64_t q = t.q;
  std::vector<double> xe(static_cast<size_t>(q * r)), xk(static_cast<size_t>(q * r)),
      sk(static_cast<size_t>(r * q));
  t.lambda.assign(static_cast<size_t>(q * q), 0.0);
  if (q > 0) {
    gemm_cm(true, false, q, r, big, 1.0, t.x.data(), big, ek.data(), big, 0.0, xe.data(), q);
    gemm_cm(true, false, q, r, big, 1.0, t.x.data(), big, ek.data() + big * r, big, 0.0, xk.data(),
            q);
    gemm_cm(false, true, q, q, r, 1.0, xe.data(), q, xk.data(), q, 0.0, t.lambda.data(), q);
    gemm_cm(false, true, q, q, r, 1.0, xk.data(), q, xe.data(), q, 1.0, t.lambda.data(), q);
    gemm_cm(false, true, r, q, r, 1.0, s2.data(), r, xk.data(), q, 0.0, sk.data(), r);
    gemm_cm(false, false, q, q, r, 1.0, xk.data(), q, sk.data(), r, 1.0, t.lambda.data(), q);
  }
  t.d.assign(static_cast<size_t>(big), 0.0);
  for (int64_t i = 0; i < p; ++i) t.d[i] = sp.sigma0[i] * sp.sigma0[i];
  return t;
}

bool lowrank_top(const LowRankOperator& t, int64_t keep, double tol, std::vector<double>& theta,
                 std::vector<double>& z, std::string& route,
                 const std::function<void()>& between_steps) {
  const int64_t n = t.order(), block = subspace_block(keep);
  const int64_t shown = std::min(n, std::max(keep, kSubspaceShown));
  // The iteration pays where the order is several blocks and the update's rank small next to
  // it; otherwise T is formed (n^2 q) and decomposed directly (about n^3).
  std::string why_dense;
  if (n >= 4 * block && t.q <= n / 4) {
    // Start from the base's top coordinates and the update's range: T maps the former into
    // their span plus X's, so the basis grows by at most q per step at first.
    const int64_t lead = std::min(t.p, keep + kSubspaceOversample);
    std::vector<double> start(static_cast<size_t>(n * (lead + t.q)), 0.0);
    for (int64_t j = 0; j < lead; ++j) start[j + j * n] = 1.0;
    // X less its leading coordinates is orthogonal to those: orthonormalised on its own.
    double* rest = start.data() + lead * n;
    std::copy(t.x.begin(), t.x.end(), rest);
    for (int64_t j = 0; j < t.q; ++j) std::fill(rest + j * n, rest + j * n + lead, 0.0);
    const int64_t kept = orthonormalise(nullptr, n, 0, rest, t.q);
    KrylovOptions o;
    o.keep = keep, o.shown = shown, o.restart = block;
    o.max_basis = lead + t.q + 4 * block;
    // Give up where the iteration's work (products and orthogonalisation) would pass the
    // dense route's, about n^3 / 3 products of 4 (q + basis) n flops each.
    o.max_products = std::max<int64_t>(2 * block, n * n / (3 * (t.q + o.max_basis)));
    o.tol = tol;
    o.start_orthonormal = true;
    // T maps the start into a space q wider, so the basis would grow by q a step; past the
    // lead's width it grows by the lead's residuals instead (at r = 64 on the bench layer: 475
    // -> 258 products, the iteration 0.8 -> 0.54 s; below it, as at r = 1, the q-wide steps
    // are the cheaper).
    if (t.q > lead) o.residual_block = lead;
    o.between_steps = between_steps;
    KrylovResult k = block_krylov_top(
        n, [&](const double* in, int64_t cols, double* out) { t.apply(in, cols, out); },
        std::move(start), lead + kept, o);
    if (k.converged) {
      theta = std::move(k.theta);
      z = std::move(k.vectors);
      route = "lowrank/krylov, " + std::to_string(k.products) + " products";
      return true;
    }
    char text[64];
    std::snprintf(text, sizeof text, " (the iteration stopped at residual %.1e)", k.residual);
    why_dense = text;
  }
  std::vector<double> all;
  if (!dense_top(t, shown, theta, all)) return false;
  z.assign(all.begin(), all.begin() + n * keep);
  route = "lowrank/dense" + why_dense;
  return true;
}

}  // namespace indim::detail
