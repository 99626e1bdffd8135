// The comparison on the device: the fused similarity kernel (max |cos| and argmax per tuned
// vector without forming the k x n matrix), with the head block kept for plots. Its buffers are
// leased from the device's budget like a decomposition's, and the base's vectors, when their
// owner gave them an id, stay on the device for the next tuned checkpoint of the same base.
#include <algorithm>

#include "cuda/cuda_backend.hpp"
#include "cuda/kernels.cuh"

namespace indim::cuda {

// The base vectors on the device, from the copy kept since an earlier call with the same id, or
// uploaded now. `lease` covers `work_bytes` of the call's own buffers on return; a new copy of
// vectors with an id is kept under a lease split off it, one without in `uncached`.
template <typename T>
const T* CudaBackend::base_on_device(const Vectors& base, uint64_t work_bytes,
                                     detail::MemoryPool::Lease& lease,
                                     DeviceBuffer<unsigned char>& uncached) {
  const auto& bh = base.values<T>();
  const size_t bytes = bh.size() * sizeof(T);
  if (base.id != 0 && base_copy_.id == base.id && base_copy_.bytes == bytes) {
    lease = pool_->try_acquire(work_bytes);
    if (lease) return reinterpret_cast<const T*>(base_copy_.data.get());
  }
  base_copy_ = BaseCopy();  // given back before waiting: a worker never waits holding a lease
  lease = pool_->acquire(work_bytes + bytes);
  BaseCopy copy;
  copy.data = ctx_.buffer<unsigned char>(std::max<size_t>(bytes, 1));
  INDIM_CUDA_CHECK(
      cudaMemcpyAsync(copy.data.get(), bh.data(), bytes, cudaMemcpyHostToDevice, ctx_.stream()));
  const T* x = reinterpret_cast<const T*>(copy.data.get());
  if (base.id != 0) {
    copy.id = base.id, copy.bytes = bytes, copy.lease = lease.split(bytes);
    base_copy_ = std::move(copy);
  } else {
    uncached = std::move(copy.data);
  }
  return x;
}

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
  const size_t head = static_cast<size_t>(std::max<int64_t>(k * head_cols, 1));
  const uint64_t work = th.size() * sizeof(T) + static_cast<uint64_t>(k) * 16 +
                        head * sizeof(float) + similarity_scratch(k, nb);
  detail::MemoryPool::Lease held;  // first: ends after every buffer below is freed
  DeviceBuffer<unsigned char> uncached;
  const T* x = base_on_device<T>(base, work, held, uncached);
  DeviceBuffer<T> y = ctx_.buffer<T>(th.size());
  INDIM_CUDA_CHECK(
      cudaMemcpyAsync(y.get(), th.data(), th.size() * sizeof(T), cudaMemcpyHostToDevice, s));
  DeviceBuffer<double> maxcos = ctx_.buffer<double>(static_cast<size_t>(k));
  DeviceBuffer<int64_t> argmax = ctx_.buffer<int64_t>(static_cast<size_t>(k));
  DeviceBuffer<float> head_d = ctx_.buffer<float>(head);
  DeviceBuffer<unsigned char> scratch = ctx_.buffer<unsigned char>(similarity_scratch(k, nb));
  similarity(y.get(), tuned.count, x, nb, d, k, maxcos.get(), argmax.get(), head_d.get(), head_cols,
             scratch.get(), s);
  sim.maxcos.resize(static_cast<size_t>(k));
  sim.argmax.resize(static_cast<size_t>(k));
  sim.head.resize(static_cast<size_t>(k * head_cols));
  INDIM_CUDA_CHECK(cudaMemcpyAsync(sim.maxcos.data(), maxcos.get(), k * sizeof(double),
                                   cudaMemcpyDeviceToHost, s));
  INDIM_CUDA_CHECK(cudaMemcpyAsync(sim.argmax.data(), argmax.get(), k * sizeof(int64_t),
                                   cudaMemcpyDeviceToHost, s));
  if (head_cols > 0)
    INDIM_CUDA_CHECK(cudaMemcpyAsync(sim.head.data(), head_d.get(), sim.head.size() * sizeof(float),
                                     cudaMemcpyDeviceToHost, s));
  ctx_.sync();
  return sim;
}

template Similarity CudaBackend::compare_impl<float>(const Vectors&, const Vectors&, int64_t,
                                                     int64_t);
template Similarity CudaBackend::compare_impl<double>(const Vectors&, const Vectors&, int64_t,
                                                      int64_t);

}  // namespace indim::cuda
