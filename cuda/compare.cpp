// The comparison on the device: the fused similarity kernel (max |cos| and argmax per tuned
// vector without forming the k x n matrix), with the head block kept for plots.
#include <algorithm>

#include "cuda/cuda_backend.hpp"
#include "cuda/kernels.cuh"

namespace indim::cuda {

template <typename T>
Similarity CudaBackend::compare_impl(const Vectors& tuned, const Vectors& base, int64_t k,
                                     int64_t head_cols) {
  k = std::min(k, tuned.count);
  const int64_t nb = base.count, d = tuned.dim;
  head_cols = std::min(std::max<int64_t>(head_cols, 0), nb);
  Similarity sim;
  sim.head_cols = head_cols;
  if (k <= 0 || nb <= 0) return sim;
  cudaStream_t s = ctx_.stream();
  const auto& th = tuned.values<T>();
  const auto& bh = base.values<T>();
  DeviceBuffer<T> y(th.size(), ctx_.stream()), x(bh.size(), ctx_.stream());
  INDIM_CUDA_CHECK(
      cudaMemcpyAsync(y.get(), th.data(), th.size() * sizeof(T), cudaMemcpyHostToDevice, s));
  INDIM_CUDA_CHECK(
      cudaMemcpyAsync(x.get(), bh.data(), bh.size() * sizeof(T), cudaMemcpyHostToDevice, s));
  DeviceBuffer<double> maxcos(static_cast<size_t>(k), ctx_.stream());
  DeviceBuffer<int64_t> argmax(static_cast<size_t>(k), ctx_.stream());
  DeviceBuffer<float> head(static_cast<size_t>(std::max<int64_t>(k * head_cols, 1)), ctx_.stream());
  DeviceBuffer<unsigned char> scratch(similarity_scratch(k, nb), ctx_.stream());
  similarity(y.get(), tuned.count, x.get(), nb, d, k, maxcos.get(), argmax.get(), head.get(),
             head_cols, scratch.get(), s);
  sim.maxcos.resize(static_cast<size_t>(k));
  sim.argmax.resize(static_cast<size_t>(k));
  sim.head.resize(static_cast<size_t>(k * head_cols));
  INDIM_CUDA_CHECK(cudaMemcpyAsync(sim.maxcos.data(), maxcos.get(), k * sizeof(double),
                                   cudaMemcpyDeviceToHost, s));
  INDIM_CUDA_CHECK(cudaMemcpyAsync(sim.argmax.data(), argmax.get(), k * sizeof(int64_t),
                                   cudaMemcpyDeviceToHost, s));
  if (head_cols > 0)
    INDIM_CUDA_CHECK(cudaMemcpyAsync(sim.head.data(), head.get(), sim.head.size() * sizeof(float),
                                     cudaMemcpyDeviceToHost, s));
  ctx_.sync();
  return sim;
}

template Similarity CudaBackend::compare_impl<float>(const Vectors&, const Vectors&, int64_t,
                                                     int64_t);
template Similarity CudaBackend::compare_impl<double>(const Vectors&, const Vectors&, int64_t,
                                                      int64_t);

}  // namespace indim::cuda
