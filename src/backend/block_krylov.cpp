#include "backend/block_krylov.hpp"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>

#include "backend/gram_host.hpp"

namespace indim::detail {

namespace {

constexpr double kDrop = 1e-10;

// A column that keeps less than this of its norm when the block's earlier columns are taken
// out of it is projected against v again: the block passes leave rounding of eps |x_j| along
// v, which the cancellation would raise to eps / kRecheck relative to what remains.
constexpr double kRecheck = 1e-2;

// xj less its components along the first `cols` columns of q (orthonormal, column-major
// [n, cols]), once.
void project_out(const double* q, int64_t n, int64_t cols, double* xj, std::vector<double>& c) {
  if (cols == 0) return;
  c.resize(static_cast<size_t>(cols));
  cblas_dgemv(CblasColMajor, CblasTrans, n, cols, 1.0, q, n, xj, 1, 0.0, c.data(), 1);
  cblas_dgemv(CblasColMajor, CblasNoTrans, n, cols, -1.0, q, n, c.data(), 1, 1.0, xj, 1);
}

}  // namespace

int64_t orthonormalise(const double* v, int64_t n, int64_t nv, double* x, int64_t cols) {
  std::vector<double> before(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) before[j] = cblas_dnrm2(n, x + j * n, 1);
  if (nv > 0) {
    std::vector<double> c(static_cast<size_t>(nv * cols));
    for (int pass = 0; pass < 2; ++pass) {
      cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, nv, cols, n, 1.0, v, n, x, n, 0.0,
                  c.data(), nv);
      cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, cols, nv, -1.0, v, n, c.data(), nv,
                  1.0, x, n);
    }
  }
  int64_t kept = 0;
  std::vector<double> c;
  for (int64_t j = 0; j < cols; ++j) {
    double* xj = x + j * n;
    double entry = cblas_dnrm2(n, xj, 1), norm = entry;
    for (int round = 0; round < 3; ++round) {
      if (round > 0) project_out(v, n, nv, xj, c);
      for (int pass = 0; pass < 2; ++pass) project_out(x, n, kept, xj, c);
      norm = cblas_dnrm2(n, xj, 1);
      if (nv == 0 || !(norm < kRecheck * entry)) break;
      entry = norm;
    }
    if (!(norm > kDrop * before[j])) continue;
    cblas_dscal(n, 1.0 / norm, xj, 1);
    if (j != kept) std::copy(xj, xj + n, x + kept * n);
    ++kept;
  }
  return kept;
}

namespace {

// symmetric_top by dsyevd: every pair, the top `count` kept.
bool all_pairs_top(std::vector<double>& a, int64_t n, int64_t count, std::vector<double>& theta,
                   std::vector<double>& vectors) {
  std::vector<double> w(static_cast<size_t>(n));
  const lapack_int ln = static_cast<lapack_int>(n);
  if (LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', ln, a.data(), ln, w.data()) != 0) return false;
  theta.resize(static_cast<size_t>(count));
  vectors.resize(static_cast<size_t>(n * count));
  for (int64_t j = 0; j < count; ++j) {  // ascending -> descending
    theta[j] = w[n - 1 - j];
    std::copy(a.begin() + (n - 1 - j) * n, a.begin() + (n - j) * n, vectors.begin() + j * n);
  }
  return true;
}

}  // namespace

bool symmetric_top(std::vector<double>& a, int64_t n, int64_t count, std::vector<double>& theta,
                   std::vector<double>& vectors) {
  if (all_pairs_pay(n, count)) return all_pairs_top(a, n, count, theta, vectors);
  std::vector<double> w(static_cast<size_t>(n)), z(static_cast<size_t>(n * count));
  std::vector<lapack_int> support(static_cast<size_t>(2 * count));
  lapack_int found = 0;
  const lapack_int ln = static_cast<lapack_int>(n);
  if (LAPACKE_dsyevr(LAPACK_COL_MAJOR, 'V', 'I', 'L', ln, a.data(), ln, 0, 0,
                     static_cast<lapack_int>(n - count + 1), ln, 0.0, &found, w.data(), z.data(),
                     ln, support.data()) != 0 ||
      found != count)
    return false;
  theta.resize(static_cast<size_t>(count));
  vectors.resize(static_cast<size_t>(n * count));
  for (int64_t j = 0; j < count; ++j) {  // ascending -> descending
    theta[j] = w[count - 1 - j];
    std::copy(z.begin() + (count - 1 - j) * n, z.begin() + (count - j) * n,
              vectors.begin() + j * n);
  }
  return true;
}

namespace {

// The Rayleigh-Ritz step on h [nv, nv] (leading dimension ld, lower triangle read): the top
// `count` eigenpairs, descending: values in theta, vectors column-major [nv, count] in s.
bool ritz_top(const std::vector<double>& h, int64_t ld, int64_t nv, int64_t count,
              std::vector<double>& theta, std::vector<double>& s) {
  std::vector<double> a(static_cast<size_t>(nv * nv));
  for (int64_t j = 0; j < nv; ++j)
    for (int64_t i = j; i < nv; ++i) a[i + j * nv] = h[i + j * ld];
  return symmetric_top(a, nv, count, theta, s);
}

// The basis, its image under T, and H = V^T T V, all with room for max columns.
struct Basis {
  int64_t n, max, nv = 0;
  std::vector<double> v, tv, h;
  Basis(int64_t n_, int64_t max_)
      : n(n_),
        max(max_),
        v(static_cast<size_t>(n_ * max_)),
        tv(static_cast<size_t>(n_ * max_)),
        h(static_cast<size_t>(max_ * max_)) {}
  double* col(int64_t j) { return v.data() + j * n; }
  double* tcol(int64_t j) { return tv.data() + j * n; }
  // Applies T to the `cols` columns at nv (already orthonormal), fills H's new columns and rows.
  void extend(const BlockApply& apply, int64_t cols) {
    apply(col(nv), cols, tcol(nv));
    const int64_t total = nv + cols;
    std::vector<double> c(static_cast<size_t>(total * cols));
    cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, total, cols, n, 1.0, v.data(), n, tcol(nv),
                n, 0.0, c.data(), total);
    for (int64_t j = 0; j < cols; ++j)
      for (int64_t i = 0; i < total; ++i) {
        h[i + (nv + j) * max] = c[i + j * total];
        h[(nv + j) + i * max] = c[i + j * total];
      }
    nv = total;
  }
};

// Whether the residual's decay over the last two steps, extrapolated linearly in log(residual)
// against products, reaches tol only past the budget (or does not decay at all): a stalled
// iteration, whose remaining products would be wasted before the exact route runs anyway.
bool stalls(const std::vector<std::pair<int64_t, double>>& h, const KrylovOptions& o,
            KrylovResult& res) {
  if (h.size() < 3) return false;
  const auto& [p1, r1] = h.back();
  const auto& [p0, r0] = h[h.size() - 3];
  if (!(r1 > 0) || !(r0 > 0) || p1 <= p0) return false;
  const double rate = std::log(r1 / r0) / static_cast<double>(p1 - p0);  // per product, < 0
  const double need = rate < 0 ? std::log(o.tol / r1) / rate : 1e300;
  if (static_cast<double>(p1) + need <= static_cast<double>(o.max_products)) return false;
  res.stalled = true;
  res.projected = static_cast<double>(p1) + need;
  return true;
}

}  // namespace

KrylovResult block_krylov_top(int64_t n, const BlockApply& apply, std::vector<double> start,
                              int64_t start_cols, const KrylovOptions& o) {
  KrylovResult res;
  const int64_t max_basis = std::min(n, std::max(o.max_basis, start_cols + o.restart));
  Basis b(n, max_basis);
  int64_t cols = std::min(start_cols, max_basis);
  if (!o.start_orthonormal) cols = orthonormalise(nullptr, n, 0, start.data(), cols);
  std::copy(start.begin(), start.begin() + n * cols, b.v.begin());
  b.extend(apply, cols);
  res.products = cols;
  int64_t last = 0;  // the block whose image is the next block
  std::vector<double> theta, s, y, ty, x;
  std::vector<std::pair<int64_t, double>> history;  // products, residual after each step
  for (;;) {
    if (o.between_steps) o.between_steps();
    const int64_t count = std::min(b.nv, std::max({o.keep, o.shown, o.restart}));
    const int64_t keep = std::min(o.keep, count);
    int64_t next = o.residual_block > 0 ? std::min(o.residual_block, b.nv) : b.nv - last;
    const bool full = b.nv + next > b.max;  // a restart, unless this step converges
    // One solve a step, for the pairs it checks and those its next block or restart is made
    // of (at order 162: 2.5 ms, against 4 ms for the checked pairs and the block's apart); the
    // values shown are solved for at the end (a bisection for 66 pairs costs 5x one for 10).
    // Where every pair comes at once (all_pairs_pay), the values shown come with this solve.
    const int64_t least = full ? count : o.residual_block > 0 ? std::max(keep, next) : keep;
    const int64_t solved = all_pairs_pay(b.nv, least) ? count : least;
    if (!ritz_top(b.h, b.max, b.nv, solved, theta, s)) return res;
    // Ritz vectors Y = V S and T Y = (T V) S (the top `cols` of them), residuals
    // ||T y_j - theta_j y_j|| for j < keep.
    auto ritz_vectors = [&](int64_t cols) {
      y.assign(static_cast<size_t>(n * cols), 0.0);
      ty.assign(static_cast<size_t>(n * cols), 0.0);
      cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, cols, b.nv, 1.0, b.v.data(), n,
                  s.data(), b.nv, 0.0, y.data(), n);
      cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, cols, b.nv, 1.0, b.tv.data(), n,
                  s.data(), b.nv, 0.0, ty.data(), n);
    };
    ritz_vectors(full ? keep : least);
    const double worst = worst_residual(ty.data(), y.data(), theta.data(), n, keep);
    const double top = std::max(theta.empty() ? 0.0 : theta[0], 0.0);
    res.residual = top > 0 ? worst / top : 0.0;
    res.vectors.assign(y.begin(), y.begin() + n * keep);
    const bool done = worst <= o.tol * top || res.products >= o.max_products;
    if (done || full) {  // the values shown
      if (solved < count && !ritz_top(b.h, b.max, b.nv, count, theta, s)) return res;
      res.theta.assign(theta.begin(), theta.begin() + std::min(count, std::max(o.keep, o.shown)));
    }
    if (worst <= o.tol * top) {
      res.converged = true;
      return res;
    }
    if (res.products >= o.max_products) return res;
    history.push_back({res.products, res.residual});
    if (o.stop_when_stalled && stalls(history, o, res)) return res;
    // The next block, less what the basis holds: T applied to the last one, or the residuals
    // of the leading Ritz pairs (o.residual_block).
    bool from_image = true;
    if (full) {  // restart from the leading Ritz vectors
      const int64_t r = std::min(count, b.max / 2);
      ritz_vectors(r);
      std::copy(y.begin(), y.begin() + n * r, b.v.begin());
      std::copy(ty.begin(), ty.begin() + n * r, b.tv.begin());
      std::fill(b.h.begin(), b.h.end(), 0.0);
      for (int64_t j = 0; j < r; ++j) b.h[j + j * b.max] = theta[j];
      b.nv = r, last = 0, next = r;
    } else if (o.residual_block > 0) {
      x = ty;
      for (int64_t j = 0; j < next; ++j)
        cblas_daxpy(static_cast<int>(n), -theta[j], y.data() + j * n, 1, x.data() + j * n, 1);
      from_image = false;
    }
    next = std::min(next, b.max - b.nv);
    if (from_image) x.assign(b.tv.begin() + last * n, b.tv.begin() + (last + next) * n);
    const int64_t kept = orthonormalise(b.v.data(), n, b.nv, x.data(), next);
    if (kept == 0) return res;  // nothing new, yet not converged: rounding has won
    std::copy(x.begin(), x.begin() + n * kept, b.col(b.nv));
    last = b.nv;
    b.extend(apply, kept);
    res.products += kept;
  }
}

}  // namespace indim::detail
