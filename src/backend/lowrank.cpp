// The exact low-rank route (Backend::decompose_lowrank): the update and the base oriented as
// analysed, each asked side solved in the coordinates of the base's vectors
// (lowrank_operator.hpp), the vectors carried back to R^m and certified by their residual on
// the real W = W0 + s B A. The products with W0 and U0 run where the backend places them
// (lowrank_products.hpp), the rest on the host. Everything in fp64; the vectors are returned
// in the backend's precision.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "backend/host_matrix.hpp"
#include "backend/lowrank_operator.hpp"
#include "backend/lowrank_products.hpp"
#include "indim/backend.hpp"

namespace indim {

namespace {

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
          int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}

std::string sci(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1e", x);
  return buf;
}

struct SideResult {
  std::vector<double> theta;
  std::vector<double> u;       // row-major [m, keep], unit columns
  std::vector<double> coords;  // row-major [keep, p]: <u_j, U0[:, i]>
  std::string route;
};

constexpr double kLowRankSolveTolF32 = 1e-9;

// Of the top keep, a direction with theta_j below this fraction of theta_1 is null (sigma
// under 1e-7 sigma_1, where gram64 returns no vector either): its vector is left zero.
constexpr double kNullTheta = 1e-14;

// u = [U0 | Q] z for the top keep coordinate vectors z (column-major [order, keep]), then
// normalised, and u's coordinates along U0 (z's first p rows over the same norms, as Q is
// orthogonal to U0); false when a norm is off 1 by more than rounding (U0 not orthonormal).
bool carry_back(const detail::LowRankSide& sp, const detail::LowRankOperator& t,
                const std::vector<double>& z, const std::vector<double>& theta, int64_t keep,
                std::vector<double>& u, std::vector<double>& coords) {
  const int64_t m = t.m, p = t.p, n = t.order();
  std::vector<double> top(static_cast<size_t>(p * keep));  // z's first p rows, row-major
  for (int64_t i = 0; i < p; ++i)
    for (int64_t j = 0; j < keep; ++j) top[i * keep + j] = z[i + j * n];
  u.assign(static_cast<size_t>(m * keep), 0.0);
  coords.assign(static_cast<size_t>(keep * p), 0.0);
  sp.u0(false, top.data(), keep, u.data());
  if (t.extra > 0)
    gemm(true, true, m, keep, t.extra, 1.0, t.qbasis.data(), m, z.data() + p, n, 1.0, u.data(),
         keep);
  for (int64_t j = 0; j < keep; ++j) {
    const bool null = !(theta[j] > kNullTheta * theta[0]);
    const double norm = cblas_dnrm2(static_cast<int>(m), u.data() + j, static_cast<int>(keep));
    if (!null && !(std::fabs(norm - 1.0) <= 1e-6)) return false;
    const double f = null ? 0.0 : 1.0 / norm;
    cblas_dscal(static_cast<int>(m), f, u.data() + j, static_cast<int>(keep));
    for (int64_t i = 0; i < p; ++i) coords[j * p + i] = f * z[i + j * n];
  }
  return true;
}

// The worst ||W W^T u_j - theta_j u_j|| / theta_1 over the columns of u, with W = w0 + s b a
// applied as it is: W^T u = w0^T u + s a^T (b^T u), then W y = w0 y + s b (a y). O(m n keep).
double residual_on_w(const detail::LowRankSide& sp, const std::vector<double>& u,
                     const std::vector<double>& theta, int64_t keep) {
  const int64_t m = sp.m(), n = sp.n(), r = sp.b.cols;
  std::vector<double> y(static_cast<size_t>(n * keep)), small(static_cast<size_t>(r * keep)),
      wy(static_cast<size_t>(m * keep));
  sp.w0(true, u.data(), keep, y.data());
  gemm(true, false, r, keep, m, 1.0, sp.b.data.data(), r, u.data(), keep, 0.0, small.data(), keep);
  gemm(true, false, n, keep, r, sp.s, sp.a.data.data(), n, small.data(), keep, 1.0, y.data(), keep);
  sp.w0(false, y.data(), keep, wy.data());
  gemm(false, false, r, keep, n, 1.0, sp.a.data.data(), n, y.data(), keep, 0.0, small.data(), keep);
  gemm(false, false, m, keep, r, sp.s, sp.b.data.data(), r, small.data(), keep, 1.0, wy.data(),
       keep);
  double worst = 0;
  for (int64_t j = 0; j < keep; ++j) {
    double acc = 0;
    for (int64_t i = 0; i < m; ++i) {
      const double d = wy[i * keep + j] - theta[j] * u[i * keep + j];
      acc += d * d;
    }
    worst = std::max(worst, std::sqrt(acc));
  }
  const double top = theta.empty() ? 0.0 : theta[0];
  return top > 0 ? worst / top : 0.0;
}

// One side: nullopt with `why` when the base's vectors do not fit or the certificate fails.
std::optional<SideResult> solve_side(const detail::LowRankSide& sp, int64_t keep, double tol,
                                     double solve_tol, const std::function<void()>& between,
                                     std::string* why) {
  detail::LowRankOperator t = detail::build_lowrank_operator(sp);
  SideResult res;
  std::vector<double> z;
  if (!detail::lowrank_top(t, keep, solve_tol, res.theta, z, res.route, between)) {
    *why = "its eigensolver failed";
    return std::nullopt;
  }
  if (!carry_back(sp, t, z, res.theta, keep, res.u, res.coords)) {
    *why = "the base's vectors are not orthonormal";
    return std::nullopt;
  }
  const double residual = residual_on_w(sp, res.u, res.theta, keep);
  if (!(residual <= tol)) {
    *why = "its residual " + sci(residual) + " is above " + sci(tol);
    return std::nullopt;
  }
  return res;
}

template <typename T>
Vectors to_vectors(const std::vector<double>& u, int64_t dim, int64_t keep) {
  Vectors v =
      Vectors::zeros(std::is_same<T, float>::value ? Precision::F32 : Precision::F64, dim, keep);
  auto& out = v.values<T>();
  for (size_t i = 0; i < u.size(); ++i) out[i] = static_cast<T>(u[i]);
  return v;
}

std::optional<Decomposition> refuse(std::string* why, const std::string& text) {
  if (why != nullptr) *why = text;
  return std::nullopt;
}

}  // namespace

std::unique_ptr<detail::LowRankProducts> Backend::lowrank_products(const LowRankProblem& problem) {
  if (!lowrank_workspace_) lowrank_workspace_ = std::make_shared<detail::LowRankWorkspace>();
  return detail::host_lowrank_products(problem, *lowrank_workspace_);
}

std::optional<Decomposition> Backend::decompose_lowrank(const LowRankProblem& pr,
                                                        std::string* why) {
  const LowRankUpdate& up = *pr.update;
  const Decomposition& base = *pr.base;
  if (!up.magnitude.empty()) return refuse(why, "DoRA rescales the merged rows");
  const int64_t m = pr.conv1d ? pr.cols : pr.rows, n = pr.conv1d ? pr.rows : pr.cols;
  const int64_t p = std::min(m, n);
  // As analysed, W = W0 + s B A; the update lands transposed when its orientation and the
  // analysis' differ (an embedding: delta (B A)^T on a base analysed as stored).
  const bool flip = up.transposed != pr.conv1d;
  const Dense<double> b = flip ? detail::transposed(up.a) : up.b;
  const Dense<double> a = flip ? detail::transposed(up.b) : up.a;
  if (b.rows != m || a.cols != n || b.cols != a.rows)
    return refuse(why, "its factors do not fit the base");
  if (base.sigma.size() < static_cast<size_t>(p))
    return refuse(why, "the base's decomposition holds fewer than min(out, in) values");
  for (Side s : {Side::Left, Side::Right}) {
    const bool left = s == Side::Left;
    const Vectors& basis = left ? base.left : base.right;
    if ((pr.side == Side::Both || pr.side == s) &&
        (basis.dim != (left ? m : n) || basis.count != p))
      return refuse(why, std::string("the base's decomposition lacks its ") +
                             (left ? "left" : "right") + " vectors");
  }
  const int64_t keep = std::max<int64_t>(1, std::min(pr.keep <= 0 ? p : pr.keep, p));
  const double tol = pr.tol > 0                      ? pr.tol
                     : precision() == Precision::F32 ? kLowRankTolF32
                                                     : kLowRankTolF64;
  // The iteration's own bound, in T's coordinates: as the Gram route's in fp64; in fp32,
  // where the vectors are returned rounded to 6e-8, 1e-9 theta_1 (a vector error of 1e-9 over
  // the relative gap) is far inside what the result can hold.
  const double solve_tol = precision() == Precision::F32 ? kLowRankSolveTolF32 : 1e-12;
  const std::function<void()> between = [&] { check_stop(pr.label); };
  const std::unique_ptr<detail::LowRankProducts> products = lowrank_products(pr);
  Decomposition d;
  for (Side s : {Side::Left, Side::Right}) {
    if (pr.side != Side::Both && pr.side != s) continue;
    const bool left = s == Side::Left;
    products->load_vectors(left ? base.left : base.right);
    // The right vectors of W are the left ones of W^T = W0^T + s A^T B^T.
    const Dense<double> bt = left ? Dense<double>{} : detail::transposed(a);
    const Dense<double> at = left ? Dense<double>{} : detail::transposed(b);
    const detail::LowRankSide sp{*products,     !left,    left ? b : bt,
                                 left ? a : at, up.scale, base.sigma};
    std::string reason;
    std::optional<SideResult> r = solve_side(sp, keep, tol, solve_tol, between, &reason);
    if (!r) return refuse(why, reason);
    const int64_t dim = left ? m : n;
    Vectors v = precision() == Precision::F32 ? to_vectors<float>(r->u, dim, keep)
                                              : to_vectors<double>(r->u, dim, keep);
    (left ? d.left : d.right) = std::move(v);
    (left ? d.left_in_base : d.right_in_base) = std::move(r->coords);
    if (d.sigma.empty()) {
      for (double th : r->theta) d.sigma.push_back(std::sqrt(std::max(th, 0.0)));
      d.route = r->route;
    }
  }
  return d;
}

}  // namespace indim
