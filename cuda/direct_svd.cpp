// cuSOLVER's direct SVDs in the working precision: gesvd (QR-based; the fallback of every
// route, needing the least memory), gesvdp (QDWH polar decomposition) and gesvdj (one-sided
// Jacobi). All need m >= n, so a tall W is transposed on the device first.
#include <algorithm>
#include <cstdio>
#include <limits>

#include "backend/gram_host.hpp"
#include "cuda/cuda_backend.hpp"
#include "cuda/kernels.cuh"

namespace indim::cuda {

namespace {

template <typename T>
constexpr cudaDataType data_type() {
  return std::is_same<T, float>::value ? CUDA_R_32F : CUDA_R_64F;
}

// cusolverDn?gesvdj (economy, vectors) for S and D, with lda = m, ldu = m, ldv = n.
cusolverStatus_t gesvdj_size(cusolverDnHandle_t h, int m, int n, const float* a, const float* s,
                             const float* u, const float* v, int* lwork, gesvdjInfo_t p) {
  return cusolverDnSgesvdj_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, 1, m, n, a, m, s, u, m, v, n,
                                      lwork, p);
}
cusolverStatus_t gesvdj_size(cusolverDnHandle_t h, int m, int n, const double* a, const double* s,
                             const double* u, const double* v, int* lwork, gesvdjInfo_t p) {
  return cusolverDnDgesvdj_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, 1, m, n, a, m, s, u, m, v, n,
                                      lwork, p);
}
cusolverStatus_t gesvdj_run(cusolverDnHandle_t h, int m, int n, float* a, float* s, float* u,
                            float* v, float* work, int lwork, int* info, gesvdjInfo_t p) {
  return cusolverDnSgesvdj(h, CUSOLVER_EIG_MODE_VECTOR, 1, m, n, a, m, s, u, m, v, n, work, lwork,
                           info, p);
}
cusolverStatus_t gesvdj_run(cusolverDnHandle_t h, int m, int n, double* a, double* s, double* u,
                            double* v, double* work, int lwork, int* info, gesvdjInfo_t p) {
  return cusolverDnDgesvdj(h, CUSOLVER_EIG_MODE_VECTOR, 1, m, n, a, m, s, u, m, v, n, work, lwork,
                           info, p);
}

// gesvdp into sv, u (column-major [m, r]) and v ([n, r]) for the column-major mat [m, n]
// (destroyed). Returns h_err_sigma: how far gesvdp moved singular values near zero (it perturbs
// a rank-deficient matrix), in the units of sigma.
template <typename T>
double gesvdp_into(GpuContext& ctx, T* mat, int64_t m, int64_t n, DeviceBuffer<T>& sv,
                   DeviceBuffer<T>& u, DeviceBuffer<T>& v, const std::string& label) {
  const cudaDataType dt = data_type<T>();
  size_t dev_bytes = 0, host_bytes = 0;
  INDIM_CUSOLVER_CHECK(cusolverDnXgesvdp_bufferSize(
      ctx.cusolver(), ctx.params(), CUSOLVER_EIG_MODE_VECTOR, 1, m, n, dt, mat, m, dt, sv.get(), dt,
      u.get(), m, dt, v.get(), n, dt, &dev_bytes, &host_bytes));
  std::vector<unsigned char> host_work(std::max<size_t>(host_bytes, 1));
  const DeviceBuffer<unsigned char> work = ctx.workspace(dev_bytes);
  double err_sigma = 0;
  INDIM_CUSOLVER_CHECK(cusolverDnXgesvdp(ctx.cusolver(), ctx.params(), CUSOLVER_EIG_MODE_VECTOR, 1,
                                         m, n, dt, mat, m, dt, sv.get(), dt, u.get(), m, dt,
                                         v.get(), n, dt, work.get(), dev_bytes, host_work.data(),
                                         host_bytes, ctx.info(), &err_sigma));
  check_info(ctx, label, "cusolverDnXgesvdp");
  return err_sigma;
}

// The most gesvdp may move singular values, in units of the working precision's rounding of
// sigma_1, before its answer is replaced by gesvd's.
constexpr double kGesvdpPerturbation = 8;

std::string perturbation_text(double err_sigma, double sigma1) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "gesvdp perturbed sigma by %.3g = %.3g sigma_1", err_sigma,
                sigma1 > 0 ? err_sigma / sigma1 : 0.0);
  return buf;
}

// What gesvdj reports: its info (min(m, n) + 1 when it did not converge), sweeps, residual.
struct Jacobi {
  int info = 0;
  int sweeps = 0;
  double residual = 0;
};

// gesvdj (default tolerance, machine eps, and 100 sweeps; sorted) as gesvdp_into; mat is
// destroyed.
template <typename T>
Jacobi gesvdj_into(GpuContext& ctx, T* mat, int64_t m, int64_t n, DeviceBuffer<T>& sv,
                   DeviceBuffer<T>& u, DeviceBuffer<T>& v) {
  gesvdjInfo_t raw = nullptr;
  INDIM_CUSOLVER_CHECK(cusolverDnCreateGesvdjInfo(&raw));
  GesvdjParams params(raw);
  INDIM_CUSOLVER_CHECK(cusolverDnXgesvdjSetSortEig(raw, 1));
  const int mi = static_cast<int>(m), ni = static_cast<int>(n);
  int lwork = 0;
  INDIM_CUSOLVER_CHECK(
      gesvdj_size(ctx.cusolver(), mi, ni, mat, sv.get(), u.get(), v.get(), &lwork, raw));
  const DeviceBuffer<unsigned char> work = ctx.workspace(sizeof(T) * static_cast<size_t>(lwork));
  INDIM_CUSOLVER_CHECK(gesvdj_run(ctx.cusolver(), mi, ni, mat, sv.get(), u.get(), v.get(),
                                  reinterpret_cast<T*>(work.get()), lwork, ctx.info(), raw));
  Jacobi j;
  INDIM_CUDA_CHECK(
      cudaMemcpyAsync(&j.info, ctx.info(), sizeof(int), cudaMemcpyDeviceToHost, ctx.stream()));
  ctx.sync();
  INDIM_CUSOLVER_CHECK(cusolverDnXgesvdjGetSweeps(ctx.cusolver(), raw, &j.sweeps));
  INDIM_CUSOLVER_CHECK(cusolverDnXgesvdjGetResidual(ctx.cusolver(), raw, &j.residual));
  return j;
}

}  // namespace

template <typename T>
Decomposition CudaBackend::direct_device(DeviceBuffer<T>& a, int64_t out, int64_t in, Side side,
                                         int64_t keep, const std::string& label,
                                         const std::string& algo) {
  if (algo == "gesvd") return gesvd_device<T>(a, out, in, side, keep, label);
  return uv_device<T>(a, out, in, side, keep, label, algo);
}

// W [out, in] row-major in T on the device.
template <typename T>
Decomposition CudaBackend::gesvd_device(DeviceBuffer<T>& a, int64_t out, int64_t in, Side side,
                                        int64_t keep, const std::string& label) {
  const int64_t r = std::min(out, in);
  const size_t count = static_cast<size_t>(out * in);
  cudaStream_t s = ctx_.stream();
  // Xgesvd needs m >= n. in >= out: use A = W^T [in, out] as it lies; W's left vectors are
  // A's right ones. in < out: transpose to W [out, in] column-major.
  const bool as_is = in >= out;
  DeviceBuffer<T> t(ctx_.place());
  T* mat = a.get();
  if (!as_is) {
    t.grow(count);
    transpose(a.get(), t.get(), out, in, s);  // row-major [in, out] = col-major W
    mat = t.get();
  }
  const int64_t m = as_is ? in : out, n = as_is ? out : in;
  const bool want_left = side != Side::Right, want_right = side != Side::Left;
  // For A = W^T: jobvt gives W's U; for W itself: jobu gives W's U.
  const signed char jobu = (as_is ? want_right : want_left) ? 'S' : 'N';
  const signed char jobvt = (as_is ? want_left : want_right) ? 'S' : 'N';
  // A side gesvd does not compute ('N') is never referenced: one element stands for it.
  DeviceBuffer<T> sv(static_cast<size_t>(r), ctx_.place()),
      u(jobu == 'S' ? static_cast<size_t>(m * r) : 1, ctx_.place()),
      vt(jobvt == 'S' ? static_cast<size_t>(r * n) : 1, ctx_.place());
  size_t dev_bytes = 0, host_bytes = 0;
  const cudaDataType dt = data_type<T>();
  INDIM_CUSOLVER_CHECK(cusolverDnXgesvd_bufferSize(ctx_.cusolver(), ctx_.params(), jobu, jobvt, m,
                                                   n, dt, mat, m, dt, sv.get(), dt, u.get(), m, dt,
                                                   vt.get(), r, dt, &dev_bytes, &host_bytes));
  std::vector<unsigned char> host_work(std::max<size_t>(host_bytes, 1));
  const DeviceBuffer<unsigned char> work = ctx_.workspace(dev_bytes);
  INDIM_CUSOLVER_CHECK(cusolverDnXgesvd(
      ctx_.cusolver(), ctx_.params(), jobu, jobvt, m, n, dt, mat, m, dt, sv.get(), dt, u.get(), m,
      dt, vt.get(), r, dt, work.get(), dev_bytes, host_work.data(), host_bytes, ctx_.info()));
  check_info(ctx_, label, "cusolverDnXgesvd");
  Decomposition d;
  d.route = "gesvd";
  std::vector<T> sig(static_cast<size_t>(r));
  INDIM_CUDA_CHECK(
      cudaMemcpyAsync(sig.data(), sv.get(), sig.size() * sizeof(T), cudaMemcpyDeviceToHost, s));
  // U (column-major [m, r]) holds the vectors of the m-side; VT ([r, n], ld r) those of the
  // n-side, which read row-major as [n, r].
  std::vector<T> uh(jobu == 'S' ? static_cast<size_t>(m * r) : 0),
      vh(jobvt == 'S' ? static_cast<size_t>(r * n) : 0);
  if (!uh.empty())
    INDIM_CUDA_CHECK(
        cudaMemcpyAsync(uh.data(), u.get(), uh.size() * sizeof(T), cudaMemcpyDeviceToHost, s));
  if (!vh.empty())
    INDIM_CUDA_CHECK(
        cudaMemcpyAsync(vh.data(), vt.get(), vh.size() * sizeof(T), cudaMemcpyDeviceToHost, s));
  ctx_.sync();
  d.sigma.assign(sig.begin(), sig.end());
  auto from_u = [&]() {  // column-major [m, r] -> row-major [m, keep]
    Vectors v = empty_vectors(m, keep);
    auto& o = v.values<T>();
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < keep; ++j) o[i * keep + j] = uh[i + j * m];
    return v;
  };
  auto from_vt = [&]() {  // row-major [n, r] -> row-major [n, keep]
    Vectors v = empty_vectors(n, keep);
    auto& o = v.values<T>();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < keep; ++j) o[i * keep + j] = vh[i * r + j];
    return v;
  };
  if (want_left) d.left = as_is ? from_vt() : from_u();
  if (want_right) d.right = as_is ? from_u() : from_vt();
  return d;
}

// gesvdp (QDWH polar decomposition + syevd) and gesvdj (one-sided Jacobi) in T: both compute
// U and V. As for gesvd, the buffer is made m >= n first (A = W^T as it lies when in >= out,
// else W column-major), so U holds the m-side's vectors and V the n-side's, both
// column-major [dim, r]; only their first `keep` columns come back.
template <typename T>
Decomposition CudaBackend::uv_device(DeviceBuffer<T>& a, int64_t out, int64_t in, Side side,
                                     int64_t keep, const std::string& label,
                                     const std::string& algo) {
  const int64_t r = std::min(out, in);
  cudaStream_t s = ctx_.stream();
  const bool as_is = in >= out;
  DeviceBuffer<T> t(ctx_.place());
  T* mat = a.get();
  if (!as_is) {
    t.grow(static_cast<size_t>(out * in));
    transpose(a.get(), t.get(), out, in, s);
    mat = t.get();
  } else {  // both destroy their input: keep `a` for the gesvd fallback
    t.grow(static_cast<size_t>(out * in));
    INDIM_CUDA_CHECK(
        cudaMemcpyAsync(t.get(), a.get(), out * in * sizeof(T), cudaMemcpyDeviceToDevice, s));
    mat = t.get();
  }
  const int64_t m = as_is ? in : out, n = as_is ? out : in;
  DeviceBuffer<T> sv(static_cast<size_t>(r), ctx_.place()),
      u(static_cast<size_t>(m * r), ctx_.place()), v(static_cast<size_t>(n * r), ctx_.place());
  // The gesvd fallback, with the room these buffers held given back first.
  auto fall_back = [&](const std::string& why) {
    sv = DeviceBuffer<T>(), u = DeviceBuffer<T>(), v = DeviceBuffer<T>(), t = DeviceBuffer<T>();
    Decomposition d = gesvd_device<T>(a, out, in, side, keep, label);
    d.route = "gesvd (" + why + ")";
    return d;
  };
  double err_sigma = 0;
  if (algo == "gesvdp") {
    err_sigma = gesvdp_into(ctx_, mat, m, n, sv, u, v, label);
  } else {
    const Jacobi j = gesvdj_into(ctx_, mat, m, n, sv, u, v);
    if (j.info == r + 1)  // not converged within its sweeps (clustered or ill-conditioned)
      return fall_back("gesvdj did not converge in " + std::to_string(j.sweeps) +
                       " sweeps, residual " + std::to_string(j.residual));
    if (j.info != 0)
      throw CusolverError(label + ": cusolverDngesvdj failed " + detail::solver_info_text(j.info));
  }
  Decomposition d;
  d.route = algo;
  std::vector<T> sig(static_cast<size_t>(r));
  INDIM_CUDA_CHECK(
      cudaMemcpyAsync(sig.data(), sv.get(), sig.size() * sizeof(T), cudaMemcpyDeviceToHost, s));
  ctx_.sync();
  if (algo == "gesvdp") {
    // gesvdp shifts singular values near zero of a rank-deficient matrix (a padded or low-rank
    // weight) and says by how much: past a few units of rounding of sigma_1 the vectors of those
    // directions are not the matrix's, so gesvd decomposes it instead; below, the route says it.
    const double sigma1 =
        r > 0 ? static_cast<double>(*std::max_element(sig.begin(), sig.end())) : 0;
    const double limit = kGesvdpPerturbation * std::numeric_limits<T>::epsilon() * sigma1;
    if (err_sigma > limit)
      return fall_back(perturbation_text(err_sigma, sigma1) + ", over " +
                       std::to_string(static_cast<int>(kGesvdpPerturbation)) + " eps");
    if (err_sigma > 0) d.route = "gesvdp (" + perturbation_text(err_sigma, sigma1) + ")";
  }
  // Descending order, whatever order the solver left: then the first keep columns suffice.
  std::vector<int64_t> order(static_cast<size_t>(r));
  for (int64_t j = 0; j < r; ++j) order[j] = j;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t x, int64_t y) { return sig[x] > sig[y]; });
  bool sorted = true;
  for (int64_t j = 0; j < r; ++j) sorted &= order[j] == j;
  for (int64_t j = 0; j < r; ++j) d.sigma.push_back(static_cast<double>(sig[order[j]]));
  // Columns order[0..keep) of a column-major [dim, r] block, as row-major [dim, keep].
  auto take = [&](const DeviceBuffer<T>& block, int64_t dim) {
    std::vector<T> h(static_cast<size_t>(dim * (sorted ? keep : r)));
    INDIM_CUDA_CHECK(
        cudaMemcpyAsync(h.data(), block.get(), h.size() * sizeof(T), cudaMemcpyDeviceToHost, s));
    ctx_.sync();
    Vectors vec = empty_vectors(dim, keep);
    auto& o = vec.values<T>();
    for (int64_t i = 0; i < dim; ++i)
      for (int64_t j = 0; j < keep; ++j) o[i * keep + j] = h[i + order[j] * dim];
    return vec;
  };
  // as_is: U [in, r] is W's right side, V [out, r] its left; else the other way round.
  if (side != Side::Right) d.left = as_is ? take(v, n) : take(u, m);
  if (side != Side::Left) d.right = as_is ? take(u, m) : take(v, n);
  return d;
}
template Decomposition CudaBackend::direct_device<float>(DeviceBuffer<float>&, int64_t, int64_t,
                                                         Side, int64_t, const std::string&,
                                                         const std::string&);
template Decomposition CudaBackend::direct_device<double>(DeviceBuffer<double>&, int64_t, int64_t,
                                                          Side, int64_t, const std::string&,
                                                          const std::string&);

}  // namespace indim::cuda
