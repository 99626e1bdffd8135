#include "mitigate/variants.hpp"

#include <lapacke.h>

#include <algorithm>
#include <cmath>

#include "backend/row_gemm.hpp"
#include "indim/error.hpp"

namespace indim::detail {

namespace {

double dot(const std::vector<double>& x, const std::vector<double>& y) {
  double s = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) s += x[i] * y[i];
  return s;
}

// ||dW_L||_F^2 = ||dW - k U G||^2 = ||dW||^2 - 2k <G - G0, G> + k^2 tr(G^T (U^T U) G), k = 1 - L:
// U's columns are orthonormal only to the working precision, so U^T U is kept.
double lambda_update_sq(const MatrixStart& s, double lambda) {
  const double k = 1 - lambda;
  std::vector<double> utu(static_cast<size_t>(s.q * s.q)), ug(static_cast<size_t>(s.q * s.n));
  row_gemm(true, false, s.q, s.q, s.m, 1.0, s.u.data(), s.q, s.u.data(), s.q, 0.0, utu.data(), s.q);
  row_gemm(false, false, s.q, s.n, s.q, 1.0, utu.data(), s.q, s.g.data(), s.n, 0.0, ug.data(), s.n);
  double cross = 0;
  for (size_t i = 0; i < s.g.size(); ++i) cross += (s.g[i] - s.g0[i]) * s.g[i];
  const double v = s.dw_fro * s.dw_fro - 2 * k * cross + k * k * dot(s.g, ug);
  return std::max(v, 0.0);
}

// The whole-update factor of a control (1 for the intervention itself).
double control_factor(const MatrixStart& s, const VariantSpec& v) {
  if (v.kind == "intruders" || v.lambda == 1) return 1;  // nothing scaled: nothing to match
  const double after = std::sqrt(lambda_update_sq(s, v.lambda));
  if (v.kind == "shrink") return s.dw_fro > 0 ? after / s.dw_fro : 1.0;
  return after > 0 ? s.dw_fro / after : 1.0;  // rescale; nothing left to rescale: unchanged
}

std::vector<double> row_norms(const std::vector<double>& x, int64_t rows, int64_t cols) {
  std::vector<double> out(static_cast<size_t>(rows), 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    double a = 0;
    for (int64_t j = 0; j < cols; ++j) a += x[i * cols + j] * x[i * cols + j];
    out[i] = std::sqrt(a);
  }
  return out;
}

}  // namespace

std::string VariantSpec::folder() const { return kind + "-" + eps_key(lambda); }

std::vector<VariantSpec> variant_specs(const MitigateOptions& o) {
  std::vector<VariantSpec> out;
  for (double l : o.lambdas) {
    out.push_back({"intruders", l});
    for (const char* c : {"shrink", "rescale"})
      if (std::find(o.controls.begin(), o.controls.end(), c) != o.controls.end())
        out.push_back({c, l});
  }
  return out;
}

MatrixStart dense_start(const Dense<double>& w0, const Dense<double>& w, std::vector<double> u,
                        int64_t q) {
  MatrixStart s;
  s.m = w.rows, s.n = w.cols, s.q = q, s.u = std::move(u);
  s.g.assign(static_cast<size_t>(q * s.n), 0.0);
  s.g0.assign(s.g.size(), 0.0);
  row_gemm(true, false, q, s.n, s.m, 1.0, s.u.data(), q, w.data.data(), s.n, 0.0, s.g.data(), s.n);
  row_gemm(true, false, q, s.n, s.m, 1.0, s.u.data(), q, w0.data.data(), s.n, 0.0, s.g0.data(),
           s.n);
  double dw = 0, ww = 0;
  for (size_t i = 0; i < w.data.size(); ++i) {
    const double d = w.data[i] - w0.data[i];
    dw += d * d, ww += w.data[i] * w.data[i];
  }
  s.dw_fro = std::sqrt(dw), s.w_fro = std::sqrt(ww);
  return s;
}

Dense<double> dense_variant(const MatrixStart& s, const Dense<double>& w0, const Dense<double>& w,
                            const VariantSpec& v, MitigatedMatrix& out) {
  out.variant = v.kind, out.lambda = v.lambda, out.factor = control_factor(s, v);
  Dense<double> x = w;  // W_L = W - (1 - L) U G, unless a shrink, which needs only W
  if (v.kind != "shrink")
    row_gemm(false, false, s.m, s.n, s.q, -(1 - v.lambda), s.u.data(), s.q, s.g.data(), s.n, 1.0,
             x.data.data(), s.n);
  double upd = 0, change = 0;
  for (size_t i = 0; i < x.data.size(); ++i) {
    if (out.factor != 1) x.data[i] = w0.data[i] + out.factor * (x.data[i] - w0.data[i]);
    upd += (x.data[i] - w0.data[i]) * (x.data[i] - w0.data[i]);
    change += (x.data[i] - w.data[i]) * (x.data[i] - w.data[i]);
  }
  out.update_fro = std::sqrt(upd);
  out.rel_change = s.w_fro > 0 ? std::sqrt(change) / s.w_fro : 0.0;
  std::vector<double> ux(static_cast<size_t>(s.q * s.n));
  row_gemm(true, false, s.q, s.n, s.m, 1.0, s.u.data(), s.q, x.data.data(), s.n, 0.0, ux.data(),
           s.n);
  out.sigma_after = row_norms(ux, s.q, s.n);
  return x;
}

double factors_fro(const Factors& f) {
  const int64_t r = f.rank(), m = f.b.rows, n = f.a.cols;
  std::vector<double> bb(static_cast<size_t>(r * r)), aa(static_cast<size_t>(r * r));
  row_gemm(true, false, r, r, m, 1.0, f.b.data.data(), r, f.b.data.data(), r, 0.0, bb.data(), r);
  row_gemm(false, true, r, r, n, 1.0, f.a.data.data(), n, f.a.data.data(), n, 0.0, aa.data(), r);
  return std::fabs(f.scale) * std::sqrt(std::max(dot(bb, aa), 0.0));
}

MatrixStart factor_start(const Dense<double>& w0, const Factors& f, std::vector<double> u,
                         int64_t q) {
  MatrixStart s;
  s.m = w0.rows, s.n = w0.cols, s.q = q, s.u = std::move(u);
  const int64_t r = f.rank();
  s.g0.assign(static_cast<size_t>(q * s.n), 0.0);
  row_gemm(true, false, q, s.n, s.m, 1.0, s.u.data(), q, w0.data.data(), s.n, 0.0, s.g0.data(),
           s.n);
  std::vector<double> ub(static_cast<size_t>(q * r));  // G = G0 + s (U^T B) A
  row_gemm(true, false, q, r, s.m, 1.0, s.u.data(), q, f.b.data.data(), r, 0.0, ub.data(), r);
  s.g = s.g0;
  row_gemm(false, false, q, s.n, r, f.scale, ub.data(), r, f.a.data.data(), s.n, 1.0, s.g.data(),
           s.n);
  s.dw_fro = factors_fro(f);
  // ||W||^2 = ||W0||^2 + 2 s <W0, B A> + ||s B A||^2, with <W0, B A> = <W0 A^T, B>.
  std::vector<double> wa(static_cast<size_t>(s.m * r));
  row_gemm(false, true, s.m, r, s.n, 1.0, w0.data.data(), s.n, f.a.data.data(), s.n, 0.0, wa.data(),
           r);
  const double w0_sq = dot(w0.data, w0.data);
  s.w_fro = std::sqrt(std::max(w0_sq + 2 * f.scale * dot(wa, f.b.data) + s.dw_fro * s.dw_fro, 0.0));
  return s;
}

namespace {

// [B | -(1 - L)/s U c_i], [A; G_i / c_i]: dW_L = s B' A'; c_i = sqrt(||G_i||) balances the two
// sides of each new direction (as PEFT splits sqrt(sigma) between its factors).
Factors with_intruders(const MatrixStart& s, const Factors& f, double lambda) {
  const int64_t r = f.rank(), q = s.q, m = s.m, n = s.n;
  Factors out{{m, r + q, {}}, {r + q, n, {}}, f.scale};
  out.b.data.assign(static_cast<size_t>(m * (r + q)), 0.0);
  out.a.data.assign(static_cast<size_t>((r + q) * n), 0.0);
  const std::vector<double> gn = row_norms(s.g, q, n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t l = 0; l < r; ++l) out.b.at(i, l) = f.b.at(i, l);
    for (int64_t l = 0; l < q; ++l)
      out.b.at(i, r + l) =
          -(1 - lambda) / f.scale * s.u[i * q + l] * (gn[l] > 0 ? std::sqrt(gn[l]) : 1.0);
  }
  std::copy(f.a.data.begin(), f.a.data.end(), out.a.data.begin());
  for (int64_t l = 0; l < q; ++l)
    for (int64_t j = 0; j < n; ++j)
      out.a.at(r + l, j) = s.g[l * n + j] / (gn[l] > 0 ? std::sqrt(gn[l]) : 1.0);
  return out;
}

// Q R of x (row-major [rows, cols]) with rows >= cols: x becomes Q ([rows, cols]), R returned
// ([cols, cols], upper triangular).
std::vector<double> qr(std::vector<double>& x, int64_t rows, int64_t cols) {
  std::vector<double> tau(static_cast<size_t>(cols)), r(static_cast<size_t>(cols * cols), 0.0);
  const lapack_int mr = static_cast<lapack_int>(rows), nc = static_cast<lapack_int>(cols);
  if (LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, mr, nc, x.data(), nc, tau.data()) != 0)
    throw Error("mitigate: QR of a factor failed");
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = i; j < cols; ++j) r[i * cols + j] = x[i * cols + j];
  if (LAPACKE_dorgqr(LAPACK_ROW_MAJOR, mr, nc, nc, x.data(), nc, tau.data()) != 0)
    throw Error("mitigate: QR of a factor failed");
  return r;
}

// The best rank-k approximation of s B A from its factors (QR of B and A^T, SVD of R_B R_A^T),
// as PEFT writes it: B = U_k sqrt(S_k), A = sqrt(S_k) V_k^T; `lost` the Frobenius norm dropped.
Factors truncated(const Factors& f, int64_t k, double& lost) {
  const int64_t m = f.b.rows, n = f.a.cols, r = f.rank();
  if (m < r || n < r) throw Error("mitigate: a factor has more columns than rows");
  std::vector<double> qb = f.b.data, qa(static_cast<size_t>(n * r));
  for (int64_t l = 0; l < r; ++l)
    for (int64_t j = 0; j < n; ++j) qa[j * r + l] = f.a.at(l, j);
  const std::vector<double> rb = qr(qb, m, r), ra = qr(qa, n, r);
  std::vector<double> core(static_cast<size_t>(r * r)), sv(static_cast<size_t>(r)),
      x(static_cast<size_t>(r * r)), yt(static_cast<size_t>(r * r));
  row_gemm(false, true, r, r, r, 1.0, rb.data(), r, ra.data(), r, 0.0, core.data(), r);
  const lapack_int lr = static_cast<lapack_int>(r);
  if (LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', lr, lr, core.data(), lr, sv.data(), x.data(), lr,
                     yt.data(), lr) != 0)
    throw Error("mitigate: SVD of the truncated update failed");
  lost = 0;
  for (int64_t l = k; l < r; ++l) lost += sv[l] * sv[l];
  lost = std::fabs(f.scale) * std::sqrt(lost);
  Factors out{{m, k, std::vector<double>(static_cast<size_t>(m * k), 0.0)},
              {k, n, std::vector<double>(static_cast<size_t>(k * n), 0.0)},
              f.scale};
  std::vector<double> xs(static_cast<size_t>(r * k)), ys(static_cast<size_t>(k * r));
  for (int64_t i = 0; i < r; ++i)
    for (int64_t l = 0; l < k; ++l)
      xs[i * k + l] = x[i * r + l] * std::sqrt(sv[l]),
                 ys[l * r + i] = yt[l * r + i] * std::sqrt(sv[l]);
  row_gemm(false, false, m, k, r, 1.0, qb.data(), r, xs.data(), k, 0.0, out.b.data.data(), k);
  row_gemm(false, true, k, n, r, 1.0, ys.data(), r, qa.data(), r, 0.0, out.a.data.data(), n);
  return out;
}

// ||s' B' A' - s B A||_F through the stacked factors [s' B' | -s B] [A'; A].
double change_fro(const Factors& now, const Factors& was) {
  const int64_t r1 = now.rank(), r0 = was.rank(), m = now.b.rows, n = now.a.cols;
  Factors d{{m, r1 + r0, std::vector<double>(static_cast<size_t>(m * (r1 + r0)))},
            {r1 + r0, n, std::vector<double>(static_cast<size_t>((r1 + r0) * n))},
            1.0};
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t l = 0; l < r1; ++l) d.b.at(i, l) = now.scale * now.b.at(i, l);
    for (int64_t l = 0; l < r0; ++l) d.b.at(i, r1 + l) = -was.scale * was.b.at(i, l);
  }
  std::copy(now.a.data.begin(), now.a.data.end(), d.a.data.begin());
  std::copy(was.a.data.begin(), was.a.data.end(), d.a.data.begin() + r1 * n);
  return factors_fro(d);
}

}  // namespace

Factors factor_variant(const MatrixStart& s, const Factors& f, const VariantSpec& v,
                       int64_t max_rank, MitigatedMatrix& out) {
  out.variant = v.kind, out.lambda = v.lambda, out.factor = control_factor(s, v);
  Factors x = v.kind == "shrink" || v.lambda == 1 ? f : with_intruders(s, f, v.lambda);
  x.scale *= out.factor;
  out.truncation_error = 0;
  if (max_rank > 0 && x.rank() > max_rank) {
    const double before = factors_fro(x);
    double lost = 0;
    x = truncated(x, max_rank, lost);
    out.truncation_error = before > 0 ? lost / before : 0.0;
  }
  out.rank = x.rank();
  out.update_fro = factors_fro(x);
  out.rel_change = s.w_fro > 0 ? change_fro(x, f) / s.w_fro : 0.0;
  // u_i^T W_new = G0 + s' (U^T B') A'
  std::vector<double> ub(static_cast<size_t>(s.q * x.rank())), ux = s.g0;
  row_gemm(true, false, s.q, x.rank(), s.m, 1.0, s.u.data(), s.q, x.b.data.data(), x.rank(), 0.0,
           ub.data(), x.rank());
  row_gemm(false, false, s.q, s.n, x.rank(), x.scale, ub.data(), x.rank(), x.a.data.data(), s.n,
           1.0, ux.data(), s.n);
  out.sigma_after = row_norms(ux, s.q, s.n);
  return x;
}

}  // namespace indim::detail
