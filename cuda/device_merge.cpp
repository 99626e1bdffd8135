// A LoRA (or DoRA) update merged into the stored base on the device, as PEFT merges it; the
// host's merge (src/backend/lora_merge.cpp) is the reference it agrees with.
#include <algorithm>

#include "cuda/cuda_backend.hpp"
#include "cuda/kernels.cuh"
#include "cuda/thrust_ops.cuh"

namespace indim::cuda {

template <typename T>
DeviceBuffer<T> CudaBackend::transposed(DeviceBuffer<T>& w, int64_t rows, int64_t cols) {
  DeviceBuffer<T> t = ctx_.buffer<T>(static_cast<size_t>(rows * cols));
  transpose(w.get(), t.get(), rows, cols, ctx_.stream());
  return t;
}

template <typename T>
DeviceBuffer<T> CudaBackend::upload(const std::vector<double>& host) {
  std::vector<T> cast(host.begin(), host.end());
  DeviceBuffer<T> d = ctx_.buffer<T>(std::max<size_t>(cast.size(), 1));
  INDIM_CUDA_CHECK(cudaMemcpyAsync(d.get(), cast.data(), cast.size() * sizeof(T),
                                   cudaMemcpyHostToDevice, ctx_.stream()));
  ctx_.sync();  // `cast` goes out of scope
  return d;
}

// The stored base [rows, cols] plus scale * B A (or its transpose), then DoRA, on the device.
template <typename T>
DeviceBuffer<T> CudaBackend::merged(const void* bytes, DType dtype, int64_t rows, int64_t cols,
                                    const LowRankUpdate& u, const std::string& base_label,
                                    const std::string& label) {
  // In an fp32 analysis the base, and below the merge, are refused beyond the fp32 range, as
  // the CPU backend (merging in fp32) refuses them, though the Gram route merges in fp64.
  const bool fp32 = precision_ == Precision::F32;
  DeviceBuffer<T> w = upload_stored<T>(bytes, dtype, rows, cols, false, base_label, fp32);
  DeviceBuffer<T> a = upload<T>(u.a.data), b = upload<T>(u.b.data);
  const int64_t rank = u.a.rows;
  const T alpha = static_cast<T>(u.scale), one = T(1);
  // Column-major view: w^T [cols, rows] += s * A^T B^T (or, transposed, s * B A).
  auto gemm = [&](cublasOperation_t ta, cublasOperation_t tb, const T* x, int64_t ldx, const T* y,
                  int64_t ldy) {
    if constexpr (std::is_same<T, float>::value)
      INDIM_CUBLAS_CHECK(cublasSgemm(ctx_.cublas(), ta, tb, cols, rows, rank, &alpha, x, ldx, y,
                                     ldy, &one, w.get(), cols));
    else
      INDIM_CUBLAS_CHECK(cublasDgemm(ctx_.cublas(), ta, tb, cols, rows, rank, &alpha, x, ldx, y,
                                     ldy, &one, w.get(), cols));
  };
  if (!u.transposed)  // A [r, cols] is column-major [cols, r]; B [rows, r] is [r, rows]
    gemm(CUBLAS_OP_N, CUBLAS_OP_N, a.get(), cols, b.get(), rank);
  else  // B [cols, r] read transposed as [cols, r]; A [r, rows] read transposed as [r, rows]
    gemm(CUBLAS_OP_T, CUBLAS_OP_T, b.get(), rank, a.get(), rows);
  DeviceBuffer<double> mag(ctx_.place());
  if (!u.magnitude.empty()) {
    mag.grow(u.magnitude.size());
    INDIM_CUDA_CHECK(cudaMemcpyAsync(mag.get(), u.magnitude.data(),
                                     u.magnitude.size() * sizeof(double), cudaMemcpyHostToDevice,
                                     ctx_.stream()));
    dora_rescale<T>(w.get(), rows, cols, u.transposed, mag.get(), ctx_.stream());
  }
  const int64_t first = first_non_finite<T>(w.get(), rows * cols, ctx_.place(), fp32);
  if (first < rows * cols)
    throw BadInput(InputProblem::NonFinite,
                   label + ": merging the adapter gives a non-finite value at [" +
                       std::to_string(first / cols) + ", " + std::to_string(first % cols) + "]");
  return w;
}

template DeviceBuffer<float> CudaBackend::transposed<float>(DeviceBuffer<float>&, int64_t, int64_t);
template DeviceBuffer<double> CudaBackend::transposed<double>(DeviceBuffer<double>&, int64_t,
                                                              int64_t);
template DeviceBuffer<float> CudaBackend::merged<float>(const void*, DType, int64_t, int64_t,
                                                        const LowRankUpdate&, const std::string&,
                                                        const std::string&);
template DeviceBuffer<double> CudaBackend::merged<double>(const void*, DType, int64_t, int64_t,
                                                          const LowRankUpdate&, const std::string&,
                                                          const std::string&);

}  // namespace indim::cuda
