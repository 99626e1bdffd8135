// The fp64 Gram route (gram64): the Gram matrix of the smaller side, G = W W^T (out <= in) or
// W^T W (out > in), by syrk; its eigenvectors are that side's singular vectors, sigma =
// sqrt(lambda); the other side's vectors come from one GEMM, W^T U / sigma or W V / sigma.
// Errors in vector j go as eps * sigma_1^2 / |sigma_i^2 - sigma_j^2|: fp64 keeps them far
// below the fp32 SVD's for all but singular values under ~1e-8 sigma_1. The tuned side's top k
// come by subspace iteration where it converges, else by a tridiagonal reduction whose
// back-transformation touches only the k vectors; the host steps are backend/gram_host's.
#include <algorithm>
#include <cmath>

#include "backend/gram_host.hpp"
#include "cuda/batched_eig.hpp"
#include "cuda/cuda_backend.hpp"
#include "cuda/kernels.cuh"
#include "cuda/thrust_ops.cuh"

namespace indim::cuda {

// Vectors of the output precision from a column-major double block [rows, cols], columns
// scaled by `scale` (device, length cols).
Vectors CudaBackend::download(const double* colmajor, const double* scale, int64_t rows,
                              int64_t cols) {
  Vectors v = empty_vectors(rows, cols);
  auto fetch = [&](auto& host) {
    using T = typename std::decay_t<decltype(host)>::value_type;
    DeviceBuffer<T> out = ctx_.buffer<T>(host.size());
    scale_columns_to_row_major(colmajor, scale, out.get(), rows, cols, ctx_.stream());
    INDIM_CUDA_CHECK(cudaMemcpyAsync(host.data(), out.get(), host.size() * sizeof(T),
                                     cudaMemcpyDeviceToHost, ctx_.stream()));
    ctx_.sync();
  };
  std::visit(fetch, v.data);
  return v;
}

// W [out, in] row-major in fp64 on the device, i.e. A = W^T column-major [in, out].
Decomposition CudaBackend::gram64_device(DeviceBuffer<double>& a, int64_t out, int64_t in,
                                         Side side, int64_t keep, const std::string& label) {
  const int64_t n = std::min(out, in);
  cudaStream_t s = ctx_.stream();
  // G = A^T A = W W^T [out, out] when out <= in (the left side's Gram), else
  // G = A A^T = W^T W [in, in] (the right side's).
  const bool left_gram = out <= in;
  DeviceBuffer<double> g(static_cast<size_t>(n * n), ctx_.place());
  const double one = 1.0, zero = 0.0;
  INDIM_CUBLAS_CHECK(cublasDsyrk(ctx_.cublas(), CUBLAS_FILL_MODE_LOWER,
                                 left_gram ? CUBLAS_OP_T : CUBLAS_OP_N, n, left_gram ? in : out,
                                 &one, a.get(), in, &zero, g.get(), n));
  Decomposition d;
  std::vector<double> lam(static_cast<size_t>(n));  // ascending
  // The top `keep` eigenvectors, column-major, in descending order.
  DeviceBuffer<double> e(static_cast<size_t>(n * keep), ctx_.place());
  std::vector<double> theta;  // the iterative route's leading values, descending
  const int sweeps =
      detail::subspace_applies(n, keep) ? subspace_top(g, n, keep, theta, e, label) : 0;
  if (sweeps > 0) {
    d.route = "gram64/subspace, " + std::to_string(sweeps) + " sweeps";
  } else if (keep > n / 2) {
    d.route = "gram64/syevd";
    DeviceBuffer<double> lambda(static_cast<size_t>(n), ctx_.place());
    syevd_one(ctx_, g.get(), n, lambda.get(), label);
    INDIM_CUDA_CHECK(cudaMemcpyAsync(lam.data(), lambda.get(), lam.size() * sizeof(double),
                                     cudaMemcpyDeviceToHost, s));
    reverse_columns(g.get(), e.get(), n, n, keep, ctx_.place());
  } else {
    d.route = "gram64/tridiagonal";
    top_eigenvectors(g, n, keep, lam, e, label);
  }
  ctx_.sync();
  if (!theta.empty()) {
    for (double t : theta) d.sigma.push_back(std::sqrt(std::max(t, 0.0)));
  } else {
    d.sigma.resize(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) d.sigma[j] = std::sqrt(std::max(lam[n - 1 - j], 0.0));
  }

  const bool want_left = side != Side::Right, want_right = side != Side::Left;
  Vectors& gram_side = left_gram ? d.left : d.right;
  Vectors& other_side = left_gram ? d.right : d.left;
  if (left_gram ? want_left : want_right) {
    std::vector<double> ones(static_cast<size_t>(keep), 1.0);
    DeviceBuffer<double> ones_d(ones.size(), ctx_.place());
    INDIM_CUDA_CHECK(cudaMemcpyAsync(ones_d.get(), ones.data(), ones.size() * sizeof(double),
                                     cudaMemcpyHostToDevice, s));
    gram_side = download(e.get(), ones_d.get(), n, keep);
  }
  if (left_gram ? want_right : want_left) {
    // Other side = W^T u_j (= A u_j) when the Gram was W W^T, else W v_j (= A^T v_j):
    // column-major [m, keep] with m the other dimension, each column normalised. The fp64
    // Gram resolves sigma down to about 1e-8 sigma_1; below 1e-7 sigma_1 a direction is null
    // and stays zero, as on the CPU.
    const int64_t m = left_gram ? in : out;
    DeviceBuffer<double> o(static_cast<size_t>(m * keep), ctx_.place()),
        inv(static_cast<size_t>(keep), ctx_.place());
    INDIM_CUBLAS_CHECK(cublasDgemm(ctx_.cublas(), left_gram ? CUBLAS_OP_N : CUBLAS_OP_T,
                                   CUBLAS_OP_N, m, keep, n, &one, a.get(), in, e.get(), n, &zero,
                                   o.get(), m));
    inverse_column_norms(o.get(), m, keep, 1e-7 * d.sigma[0], inv.get(), s);
    other_side = download(o.get(), inv.get(), m, keep);
  }
  ctx_.sync();  // errors of the work above surface here, naming this matrix
  return d;
}

// The top `keep` eigenpairs of the symmetric g [n, n] (lower triangle) by subspace iteration,
// as the CPU backend's subspace_top: GEMMs on the device, the b x b Rayleigh-Ritz problem on
// the host, residuals by a kernel. On success `theta` holds the leading max(keep, 50) values
// and `e` the top keep vectors (column-major [n, keep]), both descending; returns the sweeps
// it took, or 0: not converged, or not in time (take the exact route).
int CudaBackend::subspace_top(DeviceBuffer<double>& g, int64_t n, int64_t keep,
                              std::vector<double>& theta, DeviceBuffer<double>& e,
                              const std::string& label) {
  cudaStream_t s = ctx_.stream();
  const int64_t b = detail::subspace_block(keep);
  const int ni = static_cast<int>(n), bi = static_cast<int>(b);
  const size_t nb = static_cast<size_t>(n * b), bb = static_cast<size_t>(b * b);
  const double one = 1.0, zero = 0.0;
  DeviceBuffer<double> q(nb, ctx_.place()), y(nb, ctx_.place()), v(nb, ctx_.place()),
      gv(nb, ctx_.place()), h(bb, ctx_.place()), sd(bb, ctx_.place()),
      tau(static_cast<size_t>(b), ctx_.place()), theta_d(static_cast<size_t>(b), ctx_.place()),
      resid(static_cast<size_t>(keep), ctx_.place());
  std::vector<double> start = detail::subspace_start(n, b), hh(bb), sh, ritz_values,
                      r(static_cast<size_t>(keep));
  INDIM_CUDA_CHECK(
      cudaMemcpyAsync(q.get(), start.data(), nb * sizeof(double), cudaMemcpyHostToDevice, s));
  int lwork_qr = 0, lwork_q = 0;
  INDIM_CUSOLVER_CHECK(
      cusolverDnDgeqrf_bufferSize(ctx_.cusolver(), ni, bi, q.get(), ni, &lwork_qr));
  INDIM_CUSOLVER_CHECK(
      cusolverDnDorgqr_bufferSize(ctx_.cusolver(), ni, bi, bi, q.get(), ni, tau.get(), &lwork_q));
  const DeviceBuffer<unsigned char> workspace =
      ctx_.workspace(sizeof(double) * static_cast<size_t>(std::max(lwork_qr, lwork_q)));
  double* work = reinterpret_cast<double*>(workspace.get());
  auto orthonormalise = [&](DeviceBuffer<double>& z) {
    INDIM_CUSOLVER_CHECK(cusolverDnDgeqrf(ctx_.cusolver(), ni, bi, z.get(), ni, tau.get(), work,
                                          lwork_qr, ctx_.info()));
    INDIM_CUSOLVER_CHECK(cusolverDnDorgqr(ctx_.cusolver(), ni, bi, bi, z.get(), ni, tau.get(), work,
                                          lwork_q, ctx_.info()));
  };
  orthonormalise(q);
  double before = 0;  // the previous sweep's worst residual, relative to theta_1
  const int max_sweeps = detail::subspace_max_sweeps(n, keep);
  for (int sweep = 0; sweep < max_sweeps; ++sweep) {
    check_stop(label);
    // Y = G Q; H = Q^T Y = S diag(theta) S^T (host); V = Q S, G V = Y S.
    INDIM_CUBLAS_CHECK(cublasDsymm(ctx_.cublas(), CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, ni, bi,
                                   &one, g.get(), ni, q.get(), ni, &zero, y.get(), ni));
    INDIM_CUBLAS_CHECK(cublasDgemm(ctx_.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, bi, bi, ni, &one,
                                   q.get(), ni, y.get(), ni, &zero, h.get(), bi));
    INDIM_CUDA_CHECK(
        cudaMemcpyAsync(hh.data(), h.get(), bb * sizeof(double), cudaMemcpyDeviceToHost, s));
    ctx_.sync();
    if (!detail::ritz(hh, b, sh, ritz_values)) return 0;
    INDIM_CUDA_CHECK(
        cudaMemcpyAsync(sd.get(), sh.data(), bb * sizeof(double), cudaMemcpyHostToDevice, s));
    INDIM_CUDA_CHECK(cudaMemcpyAsync(theta_d.get(), ritz_values.data(), b * sizeof(double),
                                     cudaMemcpyHostToDevice, s));
    INDIM_CUBLAS_CHECK(cublasDgemm(ctx_.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, ni, bi, bi, &one,
                                   q.get(), ni, sd.get(), bi, &zero, v.get(), ni));
    INDIM_CUBLAS_CHECK(cublasDgemm(ctx_.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, ni, bi, bi, &one,
                                   y.get(), ni, sd.get(), bi, &zero, gv.get(), ni));
    ritz_residuals(gv.get(), v.get(), theta_d.get(), n, keep, resid.get(), s);
    INDIM_CUDA_CHECK(
        cudaMemcpyAsync(r.data(), resid.get(), keep * sizeof(double), cudaMemcpyDeviceToHost, s));
    ctx_.sync();  // also: sh and ritz_values may change next sweep
    const double worst = *std::max_element(r.begin(), r.end());
    if (worst <= detail::kSubspaceTol * std::max(ritz_values[0], 0.0)) {
      theta.assign(ritz_values.begin(),
                   ritz_values.begin() + std::max(keep, detail::kSubspaceShown));
      INDIM_CUDA_CHECK(cudaMemcpyAsync(e.get(), v.get(), n * keep * sizeof(double),
                                       cudaMemcpyDeviceToDevice, s));
      ctx_.sync();
      return sweep + 1;
    }
    const double now = worst / ritz_values[0];
    if (detail::subspace_hopeless(sweep, before, now, max_sweeps)) return 0;
    before = now;
    std::swap(q, gv);  // span(G V) = span(G Q): the next iterate
    orthonormalise(q);
  }
  ctx_.sync();
  return 0;
}

// The top `keep` eigenpairs of the symmetric g [n, n] (lower triangle, destroyed): every
// eigenvalue into `lam` (ascending), the top keep vectors into `e` (column-major, descending).
// cuSOLVER reduces g to tridiagonal form on the device (Dsytrd), the host solves the
// tridiagonal problem for the keep vectors only, and Dormtr carries them back on the device:
// the back-transformation of the other n - keep vectors, most of syevd's work after the
// reduction, is skipped.
void CudaBackend::top_eigenvectors(DeviceBuffer<double>& g, int64_t n, int64_t keep,
                                   std::vector<double>& lam, DeviceBuffer<double>& e,
                                   const std::string& label) {
  cudaStream_t s = ctx_.stream();
  const int ni = static_cast<int>(n), ki = static_cast<int>(keep);
  DeviceBuffer<double> diag(static_cast<size_t>(n), ctx_.place()),
      off(static_cast<size_t>(n), ctx_.place()), tau(static_cast<size_t>(n), ctx_.place());
  int lwork = 0;
  INDIM_CUSOLVER_CHECK(cusolverDnDsytrd_bufferSize(ctx_.cusolver(), CUBLAS_FILL_MODE_LOWER, ni,
                                                   g.get(), ni, diag.get(), off.get(), tau.get(),
                                                   &lwork));
  {
    const DeviceBuffer<unsigned char> work =
        ctx_.workspace(sizeof(double) * static_cast<size_t>(lwork));
    INDIM_CUSOLVER_CHECK(cusolverDnDsytrd(
        ctx_.cusolver(), CUBLAS_FILL_MODE_LOWER, ni, g.get(), ni, diag.get(), off.get(), tau.get(),
        reinterpret_cast<double*>(work.get()), lwork, ctx_.info()));
  }
  check_info(ctx_, label, "cusolverDnDsytrd");
  std::vector<double> d_host(static_cast<size_t>(n)), e_host(static_cast<size_t>(n), 0.0);
  INDIM_CUDA_CHECK(
      cudaMemcpyAsync(d_host.data(), diag.get(), n * sizeof(double), cudaMemcpyDeviceToHost, s));
  if (n > 1)
    INDIM_CUDA_CHECK(cudaMemcpyAsync(e_host.data(), off.get(), (n - 1) * sizeof(double),
                                     cudaMemcpyDeviceToHost, s));
  ctx_.sync();
  std::vector<double> z;
  detail::tridiagonal_top(d_host, e_host, keep, lam, z, label);
  DeviceBuffer<double> zd(z.size(), ctx_.place());
  INDIM_CUDA_CHECK(
      cudaMemcpyAsync(zd.get(), z.data(), z.size() * sizeof(double), cudaMemcpyHostToDevice, s));
  INDIM_CUSOLVER_CHECK(cusolverDnDormtr_bufferSize(ctx_.cusolver(), CUBLAS_SIDE_LEFT,
                                                   CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, ni, ki,
                                                   g.get(), ni, tau.get(), zd.get(), ni, &lwork));
  const DeviceBuffer<unsigned char> work =
      ctx_.workspace(sizeof(double) * static_cast<size_t>(lwork));
  INDIM_CUSOLVER_CHECK(cusolverDnDormtr(ctx_.cusolver(), CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER,
                                        CUBLAS_OP_N, ni, ki, g.get(), ni, tau.get(), zd.get(), ni,
                                        reinterpret_cast<double*>(work.get()), lwork, ctx_.info()));
  check_info(ctx_, label, "cusolverDnDormtr");
  reverse_columns(zd.get(), e.get(), n, keep, keep, ctx_.place());
  ctx_.sync();  // z, the host source of zd, goes out of scope
}

}  // namespace indim::cuda
