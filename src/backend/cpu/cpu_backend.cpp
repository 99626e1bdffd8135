// CPU backend: LAPACK ?gesdd (falling back to ?gesvd) or the fp64 Gram route for the SVD, BLAS
// ?gemm for similarity.
//
// Layout: an nn.Linear weight W [out, in] stored row-major is, to column-major LAPACK, the
// matrix A = W^T [in, out] with lda = in. From A = U' S V'^T we get W = V' S U'^T, so
//   left vectors of W  (U_W) = V'  -> LAPACK's VT' [r, out] column-major, i.e. exactly U_W
//                                     row-major [out, r] with no copy;
//   right vectors of W (V_W) = U'  -> LAPACK's U' [in, r] column-major, transposed on output.
// A tall W (out > in) is transposed to column-major first, so that LAPACK always sees m >= n.
//
// gram64 (the CUDA backend's default, here on the host): in fp64, G = W W^T (out <= in) or
// W^T W (out > in) by dsyrk; its eigenpairs give that side's vectors and sigma = sqrt(lambda).
// All of them by dsyevd; only the top `keep` (the tuned side) by dsytrd, dsterf for every
// eigenvalue, dstemr for the top keep vectors of the tridiagonal and dormtr to carry them back,
// which skips the back-transformation of the other vectors. The other side's vectors come from
// one GEMM, W^T u_j or W v_j, normalised.
#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

#include "backend/gram_host.hpp"
#include "backend/warm_krylov.hpp"
#include "indim/backend.hpp"
#include "indim/error.hpp"

namespace indim {

namespace {

lapack_int gesdd(char jobz, lapack_int m, lapack_int n, float* a, lapack_int lda, float* s,
                 float* u, lapack_int ldu, float* vt, lapack_int ldvt) {
  return LAPACKE_sgesdd(LAPACK_COL_MAJOR, jobz, m, n, a, lda, s, u, ldu, vt, ldvt);
}
lapack_int gesdd(char jobz, lapack_int m, lapack_int n, double* a, lapack_int lda, double* s,
                 double* u, lapack_int ldu, double* vt, lapack_int ldvt) {
  return LAPACKE_dgesdd(LAPACK_COL_MAJOR, jobz, m, n, a, lda, s, u, ldu, vt, ldvt);
}
lapack_int gesvd(lapack_int m, lapack_int n, float* a, lapack_int lda, float* s, float* u,
                 lapack_int ldu, float* vt, lapack_int ldvt, float* superb) {
  return LAPACKE_sgesvd(LAPACK_COL_MAJOR, 'S', 'S', m, n, a, lda, s, u, ldu, vt, ldvt, superb);
}
lapack_int gesvd(lapack_int m, lapack_int n, double* a, lapack_int lda, double* s, double* u,
                 lapack_int ldu, double* vt, lapack_int ldvt, double* superb) {
  return LAPACKE_dgesvd(LAPACK_COL_MAJOR, 'S', 'S', m, n, a, lda, s, u, ldu, vt, ldvt, superb);
}

void gemm_tn(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
             int64_t ldb, float* c) {
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
}
void gemm_tn(int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b,
             int64_t ldb, double* c) {
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, k, 1.0, a, lda, b, ldb, 0.0, c, n);
}

// The first `keep` columns of a [rows, cols] block of S, row-major (column-major when asked),
// as vectors of precision T.
template <typename T, typename S>
Vectors take_columns(const S* src, int64_t rows, int64_t cols, int64_t keep, bool col_major) {
  Vectors v =
      Vectors::zeros(std::is_same<T, float>::value ? Precision::F32 : Precision::F64, rows, keep);
  auto& out = v.values<T>();
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < keep; ++j)
      out[i * keep + j] = static_cast<T>(col_major ? src[i + j * rows] : src[i * cols + j]);
  return v;
}

void check_size(int64_t out, int64_t in, const std::string& label) {
  if (out <= 0 || in <= 0)
    throw BadInput(label + ": cannot decompose an empty matrix", InputProblem::Unsupported);
  if (out > INT32_MAX || in > INT32_MAX || out * in > (int64_t(1) << 40))
    throw BadInput(label + ": matrix too large for the CPU backend", InputProblem::TooLarge);
}

template <typename T>
Decomposition decompose_impl(Dense<T>&& w, Side side, int64_t keep, const std::string& label) {
  const int64_t out = w.rows, in = w.cols;
  check_size(out, in, label);
  const int64_t r = std::min(out, in);
  if (keep <= 0 || keep > r) keep = r;
  // ?gesdd is markedly faster with m >= n (measured 1.7x at 2752 x 1024): a wide W is passed
  // as it lies (A = W^T, m = in), a tall one transposed to column-major W (m = out).
  const bool as_is = in >= out;
  if (!as_is) {
    std::vector<T> t(w.data.size());
    for (int64_t i = 0; i < out; ++i)
      for (int64_t j = 0; j < in; ++j) t[i + j * out] = w.data[i * in + j];
    w.data.swap(t);
  }
  const int64_t mm = as_is ? in : out, nn = as_is ? out : in;
  const lapack_int m = static_cast<lapack_int>(mm), n = static_cast<lapack_int>(nn);
  std::vector<T> s(r), u(static_cast<size_t>(mm * r)), vt(static_cast<size_t>(r * nn));
  std::vector<T> copy = w.data;  // gesdd destroys its input; gesvd needs it again on failure
  lapack_int info = gesdd('S', m, n, w.data.data(), m, s.data(), u.data(), m, vt.data(), r);
  const bool fell_back = info > 0;
  if (fell_back) {
    std::vector<T> superb(r);
    info = gesvd(m, n, copy.data(), m, s.data(), u.data(), m, vt.data(), r, superb.data());
  }
  detail::check_lapack(info, label, "SVD");
  Decomposition d;
  d.route = fell_back ? "gesvd" : "gesdd";
  d.sigma.assign(s.begin(), s.end());
  // LAPACK's U [mm, r] is column-major, its VT [r, nn] reads row-major as [nn, r]. For A = W^T
  // the left vectors of W are A's right ones, and the other way round.
  if (side != Side::Right)
    d.left = as_is ? take_columns<T>(vt.data(), out, r, keep, false)
                   : take_columns<T>(u.data(), out, r, keep, true);
  if (side != Side::Left)
    d.right = as_is ? take_columns<T>(u.data(), in, r, keep, true)
                    : take_columns<T>(vt.data(), in, r, keep, false);
  return d;
}

// Top `keep` eigenpairs of the symmetric positive semi-definite g [n, n] (lower triangle) by
// subspace iteration (detail::kSubspace*): Ritz vector j converges as (lambda_{b+1} /
// lambda_j)^sweeps for a block of b, whatever the clustering inside the block; a vector's error
// is at most its residual over its eigenvalue gap. Returns the sweeps it took, or 0 (take the
// exact route) when it has not converged, or will not in time. On success `theta` holds the leading
// max(keep, 50) Ritz values (those beyond keep are not checked: within 3e-4 theta_1 in the tests,
// enough for the spectra they serve) and `e` the top keep Ritz vectors, column-major [n, keep],
// both descending.
int subspace_top(std::vector<double>& g, int64_t n, int64_t keep, std::vector<double>& theta,
                 std::vector<double>& e, const std::function<void()>& between_sweeps) {
  for (int64_t j = 0; j < n; ++j)  // both triangles, for dgemm
    for (int64_t i = j + 1; i < n; ++i) g[j + i * n] = g[i + j * n];
  const int64_t b = detail::subspace_block(keep);
  const lapack_int ln = static_cast<lapack_int>(n), lb = static_cast<lapack_int>(b);
  const size_t nb = static_cast<size_t>(n * b);
  std::vector<double> q = detail::subspace_start(n, b), y(nb), v(nb), gv(nb),
                      h(static_cast<size_t>(b * b)), s, ritz_values, tau(static_cast<size_t>(b));
  auto orthonormalise = [&](std::vector<double>& z) {
    return LAPACKE_dgeqrf(LAPACK_COL_MAJOR, ln, lb, z.data(), ln, tau.data()) == 0 &&
           LAPACKE_dorgqr(LAPACK_COL_MAJOR, ln, lb, lb, z.data(), ln, tau.data()) == 0;
  };
  if (!orthonormalise(q)) return 0;
  double before = 0;  // the previous sweep's worst residual, relative to theta_1
  const int max_sweeps = detail::subspace_max_sweeps(n, keep);
  for (int sweep = 0; sweep < max_sweeps; ++sweep) {
    between_sweeps();
    // Y = G Q; H = Q^T Y = S diag(theta) S^T; V = Q S, G V = Y S.
    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, ln, lb, ln, 1.0, g.data(), ln, q.data(),
                ln, 0.0, y.data(), ln);
    cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, lb, lb, ln, 1.0, q.data(), ln, y.data(),
                ln, 0.0, h.data(), lb);
    if (!detail::ritz(h, b, s, ritz_values)) return 0;
    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, ln, lb, lb, 1.0, q.data(), ln, s.data(),
                lb, 0.0, v.data(), ln);
    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, ln, lb, lb, 1.0, y.data(), ln, s.data(),
                lb, 0.0, gv.data(), ln);
    const double worst = detail::worst_residual(gv.data(), v.data(), ritz_values.data(), n, keep);
    if (worst <= detail::kSubspaceTol * std::max(ritz_values[0], 0.0)) {
      theta.assign(ritz_values.begin(),
                   ritz_values.begin() + std::max(keep, detail::kSubspaceShown));
      e.assign(v.begin(), v.begin() + n * keep);
      return sweep + 1;
    }
    const double now = worst / ritz_values[0];
    if (detail::subspace_hopeless(sweep, before, now, max_sweeps)) return 0;
    before = now;
    q.swap(gv);  // span(G V) = span(G Q): the next iterate
    if (!orthonormalise(q)) return 0;
  }
  return 0;
}

template <typename T>
Decomposition gram64_impl(Dense<T>&& w, Side side, int64_t keep, const std::string& label,
                          const std::function<void()>& between_sweeps) {
  const int64_t out = w.rows, in = w.cols;
  check_size(out, in, label);
  const int64_t n = std::min(out, in);
  if (keep <= 0 || keep > n) keep = n;
  // W row-major [out, in] is A = W^T column-major [in, out], lda = in.
  std::vector<double> a;
  if constexpr (std::is_same<T, double>::value)
    a = std::move(w.data);
  else
    a.assign(w.data.begin(), w.data.end());
  std::vector<T>().swap(w.data);
  const bool left_gram = out <= in;  // G = A^T A = W W^T, else A A^T = W^T W
  std::vector<double> g(static_cast<size_t>(n * n));
  cblas_dsyrk(CblasColMajor, CblasLower, left_gram ? CblasTrans : CblasNoTrans,
              static_cast<lapack_int>(n), static_cast<lapack_int>(left_gram ? in : out), 1.0,
              a.data(), static_cast<lapack_int>(in), 0.0, g.data(), static_cast<lapack_int>(n));
  const lapack_int ln = static_cast<lapack_int>(n), lk = static_cast<lapack_int>(keep);
  std::vector<double> lambda(static_cast<size_t>(n));  // ascending
  std::vector<double> top;       // the top `keep` eigenvectors, column-major [n, keep], ascending
  std::vector<double> theta, e;  // the iterative route's values and vectors, descending
  std::string route = "gram64/syevd";
  if (keep > n / 2) {
    detail::check_lapack(
        LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', ln, g.data(), ln, lambda.data()), label,
        "dsyevd");
    top.assign(g.end() - n * keep, g.end());
  } else if (const int sweeps = detail::subspace_applies(n, keep)
                                    ? subspace_top(g, n, keep, theta, e, between_sweeps)
                                    : 0) {
    route = "gram64/subspace, " + std::to_string(sweeps) + " sweeps";
  } else {
    route = "gram64/tridiagonal";
    std::vector<double> diag(static_cast<size_t>(n)), off(static_cast<size_t>(n)),
        tau(static_cast<size_t>(n));
    detail::check_lapack(LAPACKE_dsytrd(LAPACK_COL_MAJOR, 'L', ln, g.data(), ln, diag.data(),
                                        off.data(), tau.data()),
                         label, "dsytrd");
    detail::tridiagonal_top(diag, off, keep, lambda, top, label);
    detail::check_lapack(LAPACKE_dormtr(LAPACK_COL_MAJOR, 'L', 'L', 'N', ln, lk, g.data(), ln,
                                        tau.data(), top.data(), ln),
                         label, "dormtr");
  }
  Decomposition d;
  d.route = route;
  if (!theta.empty()) {
    for (double t : theta) d.sigma.push_back(std::sqrt(std::max(t, 0.0)));
  } else {
    d.sigma.resize(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) d.sigma[j] = std::sqrt(std::max(lambda[n - 1 - j], 0.0));
    e.resize(top.size());  // descending order
    for (int64_t j = 0; j < keep; ++j)
      std::copy(top.begin() + (keep - 1 - j) * n, top.begin() + (keep - j) * n, e.begin() + j * n);
  }
  const bool want_left = side != Side::Right, want_right = side != Side::Left;
  Vectors& gram_side = left_gram ? d.left : d.right;
  Vectors& other_side = left_gram ? d.right : d.left;
  if (left_gram ? want_left : want_right)
    gram_side = take_columns<T>(e.data(), n, keep, keep, true);
  if (left_gram ? want_right : want_left) {
    // A u_j = W^T u_j (left Gram) or A^T v_j = W v_j: column-major [m, keep], normalised. The
    // fp64 Gram resolves sigma down to about 1e-8 sigma_1; below 1e-7 sigma_1 a direction is
    // null (exact rank deficiency, or rounding of the stored values) and is left zero.
    const int64_t m = left_gram ? in : out;
    std::vector<double> o(static_cast<size_t>(m * keep));
    cblas_dgemm(CblasColMajor, left_gram ? CblasNoTrans : CblasTrans, CblasNoTrans,
                static_cast<lapack_int>(m), lk, ln, 1.0, a.data(), static_cast<lapack_int>(in),
                e.data(), ln, 0.0, o.data(), static_cast<lapack_int>(m));
    const double floor = 1e-7 * d.sigma[0];
    for (int64_t j = 0; j < keep; ++j) {
      double* col = o.data() + j * m;
      const double norm = cblas_dnrm2(static_cast<lapack_int>(m), col, 1);
      const double s = norm > floor && norm > 0 ? 1.0 / norm : 0.0;
      for (int64_t i = 0; i < m; ++i) col[i] *= s;
    }
    other_side = take_columns<T>(o.data(), m, keep, keep, true);
  }
  return d;
}

template <typename T>
Similarity compare_impl(const Vectors& tuned, const Vectors& base, int64_t k, int64_t head_cols) {
  k = std::min(k, tuned.count);
  const int64_t nb = base.count;
  std::vector<T> c(static_cast<size_t>(k * nb));
  if (k > 0 && nb > 0)
    gemm_tn(k, nb, tuned.dim, tuned.values<T>().data(), tuned.count, base.values<T>().data(), nb,
            c.data());
  return similarity_of(std::vector<double>(c.begin(), c.end()), k, nb, head_cols);
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(Precision p, std::string algo) : precision_(p), algo_(std::move(algo)) {}
  std::string name() const override { return "cpu"; }
  std::string algo() const override { return algo_; }
  Precision precision() const override { return precision_; }
  Decomposition decompose(Dense<float>&& w, Side side, int64_t keep,
                          const std::string& label) override {
    return run(std::move(w), side, keep, label);
  }
  Decomposition decompose(Dense<double>&& w, Side side, int64_t keep,
                          const std::string& label) override {
    return run(std::move(w), side, keep, label);
  }
  std::optional<Decomposition> decompose_warm(const std::function<Dense<double>()>& load,
                                              int64_t rows, int64_t cols, const Decomposition& base,
                                              Side side, int64_t keep, const std::string& label,
                                              std::string* why) override {
    if (!warm_applies(rows, cols, keep)) return std::nullopt;
    detail::WarmOptions o;
    o.side = side, o.keep = keep, o.precision = precision_;
    o.between_steps = [this, &label] { check_stop(label); };
    std::string reason;
    std::optional<Decomposition> d = detail::warm_top(load(), base, o, &reason);
    if (!d && why != nullptr) *why = reason;
    return d;
  }
  // Only in place of the Gram route, and where its own subspace sweeps would apply.
  bool warm_applies(int64_t rows, int64_t cols, int64_t keep) const override {
    return algo_ == "gram64" && detail::warm_applies(rows, cols, keep);
  }
  Similarity compare(const Vectors& tuned, const Vectors& base, int64_t k,
                     int64_t head_cols) override {
    if (tuned.dim != base.dim || tuned.precision() != base.precision())
      throw Error("compare: vector sets differ in dimension or precision");
    return tuned.precision() == Precision::F32 ? compare_impl<float>(tuned, base, k, head_cols)
                                               : compare_impl<double>(tuned, base, k, head_cols);
  }

 private:
  template <typename T>
  Decomposition run(Dense<T>&& w, Side side, int64_t keep, const std::string& label) {
    if (algo_ == "gram64")
      return gram64_impl(std::move(w), side, keep, label, [&] { check_stop(label); });
    return decompose_impl(std::move(w), side, keep, label);
  }

  Precision precision_;
  std::string algo_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(Precision precision, const std::string& algo) {
  if (algo != "gesdd" && algo != "gram64")
    throw UsageError("the CPU backend runs gesdd or gram64, not \"" + algo + "\"");
  return std::make_unique<CpuBackend>(precision, algo);
}

}  // namespace indim
