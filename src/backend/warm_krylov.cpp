#include "backend/warm_krylov.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "backend/block_krylov.hpp"
#include "backend/gram_host.hpp"

namespace indim::detail {

namespace {

// Of the top keep, a direction with theta_j below this fraction of theta_1 is null (sigma under
// 1e-7 sigma_1, where the Gram route returns no vector either): its vector is left zero.
constexpr double kNullTheta = 1e-14;

struct SideTop {
  std::vector<double> theta, u;  // u column-major [dim, keep]
  int64_t products = 0;
};

// y = W W^T x (left) or W^T W x (right) for column-major blocks; W row-major [m, n] is W^T
// column-major [n, m].
BlockApply gram_operator(const Dense<double>& w, bool left, std::vector<double>& tmp) {
  return [&w, left, &tmp](const double* x, int64_t cols, double* out) {
    const int64_t m = w.rows, n = w.cols, mid = left ? n : m, dim = left ? m : n;
    tmp.resize(static_cast<size_t>(mid * cols));
    cblas_dgemm(CblasColMajor, left ? CblasNoTrans : CblasTrans, CblasNoTrans, mid, cols, dim, 1.0,
                w.data.data(), n, x, dim, 0.0, tmp.data(), mid);
    cblas_dgemm(CblasColMajor, left ? CblasTrans : CblasNoTrans, CblasNoTrans, dim, cols, mid, 1.0,
                w.data.data(), n, tmp.data(), mid, 0.0, out, dim);
  };
}

std::string sci(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1e", x);
  return buf;
}

std::optional<SideTop> solve_side(const Dense<double>& w, const Vectors& basis, bool left,
                                  const WarmOptions& o, int64_t max_products, std::string* why) {
  const int64_t dim = left ? w.rows : w.cols;
  const int64_t block = subspace_block(o.keep);
  const int64_t lead = std::min(basis.count, o.keep + kSubspaceOversample);
  std::vector<double> start(static_cast<size_t>(dim * lead));
  std::visit(
      [&](const auto& v) {
        for (int64_t i = 0; i < dim; ++i)
          for (int64_t j = 0; j < lead; ++j) start[i + j * dim] = v[i * basis.count + j];
      },
      basis.data);
  KrylovOptions k;
  k.keep = o.keep, k.shown = std::max(o.keep, kSubspaceShown), k.restart = block;
  k.max_basis = lead + 4 * block;
  k.max_products = max_products;
  k.tol = kSubspaceTol;
  k.stop_when_stalled = true;  // a stall caught early costs a few products, not the budget
  k.between_steps = o.between_steps;
  std::vector<double> tmp;
  KrylovResult r = block_krylov_top(dim, gram_operator(w, left, tmp), std::move(start), lead, k);
  if (!r.converged) {
    *why = r.stalled ? "the warm start stalled at residual " + sci(r.residual) + " after " +
                           std::to_string(r.products) + " products (its rate needs about " +
                           std::to_string(static_cast<int64_t>(std::min(r.projected, 1e12))) +
                           " of " + std::to_string(max_products) + ")"
                     : "the warm start stopped at residual " + sci(r.residual) + " after " +
                           std::to_string(r.products) + " products";
    return std::nullopt;
  }
  SideTop s{std::move(r.theta), std::move(r.vectors), r.products};
  for (int64_t j = 0; j < o.keep; ++j)
    if (!(s.theta[j] > kNullTheta * s.theta[0]))
      std::fill(s.u.begin() + j * dim, s.u.begin() + (j + 1) * dim, 0.0);
  return s;
}

// Column-major [dim, keep] as the backend's row-major Vectors.
Vectors as_vectors(const std::vector<double>& u, int64_t dim, int64_t keep, Precision p) {
  Vectors v = Vectors::zeros(p, dim, keep);
  std::visit(
      [&](auto& out) {
        using T = typename std::decay_t<decltype(out)>::value_type;
        for (int64_t i = 0; i < dim; ++i)
          for (int64_t j = 0; j < keep; ++j) out[i * keep + j] = static_cast<T>(u[i + j * dim]);
      },
      v.data);
  return v;
}

// The products the iteration would need, by the block Krylov bound on the base's spectrum
// (a fine-tune's is close to it): each step raises the polynomial degree by one, which shrinks
// the error of pair `keep` against the rest of the spectrum beyond the start block's `lead`
// columns by acosh(2 / r - 1) in the exponent, r = (sigma_lead / sigma_keep)^2 (Chebyshev on
// [0, theta_lead]). Pessimistic where the start is already close (it counts from an error of
// 1), so only a prediction far past the budget is taken as a stall.
double predicted_products(const std::vector<double>& sigma, int64_t keep, int64_t lead) {
  if (static_cast<int64_t>(sigma.size()) <= lead || keep < 1 || !(sigma[keep - 1] > 0)) return 0;
  const double r = std::pow(sigma[lead] / sigma[keep - 1], 2);
  if (!(r < 1)) return 1e300;
  const double steps = std::log(1 / kSubspaceTol) / std::acosh(2 / std::max(r, 1e-12) - 1);
  return static_cast<double>(lead) * (1 + steps);
}

}  // namespace

bool warm_applies(int64_t rows, int64_t cols, int64_t keep) {
  const int64_t p = std::min(rows, cols);
  return p >= kWarmMinOrder && subspace_applies(p, keep);
}

std::optional<Decomposition> warm_top(const Dense<double>& w, const Decomposition& base,
                                      const WarmOptions& o, std::string* why) {
  const int64_t p = std::min(w.rows, w.cols);
  const int64_t budget =
      o.max_products > 0 ? o.max_products : std::max(p / 4, 4 * subspace_block(o.keep));
  // A clustered top spectrum stalls the iteration (issue 31: 400 products, then the Gram
  // anyway): where the base's spectrum predicts more than twice the budget, go straight to the
  // exact route. The iteration still stops at a stall it sees in its first steps.
  const int64_t lead = o.keep + kSubspaceOversample;
  const double predicted = predicted_products(base.sigma, o.keep, lead);
  if (predicted > 2.0 * static_cast<double>(budget)) {
    char ratio[32];
    std::snprintf(ratio, sizeof ratio, "%.3f", base.sigma[lead] / base.sigma[o.keep - 1]);
    *why = "the base's top spectrum (sigma_" + std::to_string(lead) + " / sigma_" +
           std::to_string(o.keep - 1) + " = " + ratio + ") predicts about " +
           std::to_string(static_cast<int64_t>(std::min(predicted, 1e12))) +
           " products, past twice the budget of " + std::to_string(budget);
    return std::nullopt;
  }
  Decomposition d;
  int64_t products = 0;
  for (Side s : {Side::Left, Side::Right}) {
    if (o.side != Side::Both && o.side != s) continue;
    const bool left = s == Side::Left;
    const Vectors& basis = left ? base.left : base.right;
    const int64_t dim = left ? w.rows : w.cols;
    if (basis.dim != dim || basis.count < std::min(p, o.keep + kSubspaceOversample)) {
      *why = std::string("the base's decomposition lacks its ") + (left ? "left" : "right") +
             " vectors";
      return std::nullopt;
    }
    std::optional<SideTop> top = solve_side(w, basis, left, o, budget, why);
    if (!top) return std::nullopt;
    products += top->products;
    (left ? d.left : d.right) = as_vectors(top->u, dim, o.keep, o.precision);
    if (d.sigma.empty())
      for (double t : top->theta) d.sigma.push_back(std::sqrt(std::max(t, 0.0)));
  }
  d.route = "warm/krylov, " + std::to_string(products) + " products";
  return d;
}

}  // namespace indim::detail
