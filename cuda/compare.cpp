// The comparison on the device: the fused similarity kernel (max |cos| and argmax per tuned
// vector without forming the k x n matrix), with the head block kept for plots. Its buffers are
// leased from the device's budget like a decomposition's, and the base's vectors, when their
// owner gave them an id, stay on the device for the next tuned checkpoint of the same base.
#include <algorithm>

#include "cuda/cuda_backend.hpp"
#include "cuda/kernels.cuh"

namespace indim::cuda {

// The base vectors on the device, from a copy kept since an earlier call with the same id, or
// uploaded now. `lease` covers `work_bytes` of the call's own buffers on return. A new copy of
// vectors with an id is kept (the least recently used of kBaseCopies given back) under a lease
// split off the call's; one without an id lives in `uncached` for this call only.
template <typename T>
const T* CudaBackend::base_on_device(const Vectors& base, uint64_t work_bytes,
                                     detail::MemoryPool::Lease& lease,
                                     DeviceBuffer<unsigned char>& uncached) {
  const auto& bh = base.values<T>();
  const size_t bytes = bh.size() * sizeof(T);
  for (size_t i = 0; base.id != 0 && i < base_copies_.size(); ++i) {
    if (base_copies_[i].id != base.id || base_copies_[i].bytes != bytes) continue;
    lease = pool_->try_acquire(work_bytes);
    if (!lease) break;  // no room beside the kept copies: they go, and this waits below
    std::rotate(base_copies_.begin(), base_copies_.begin() + i, base_copies_.begin() + i + 1);
    return reinterpret_cast<const T*>(base_copies_.front().data.get());
  }
  // Kept copies stay while this call fits beside them; else they go before it waits (a worker
  // never waits while it holds a lease).
  lease = pool_->try_acquire(work_bytes + bytes);
  if (!lease) {
    base_copies_.clear();
    lease = pool_->acquire(work_bytes + bytes);
  }
  DeviceBuffer<unsigned char> data = ctx_.buffer<unsigned char>(std::max<size_t>(bytes, 1));
  INDIM_CUDA_CHECK(
      cudaMemcpyAsync(data.get(), bh.data(), bytes, cudaMemcpyHostToDevice, ctx_.stream()));
  ++base_uploads_;
  const T* x = reinterpret_cast<const T*>(data.get());
  if (base.id == 0) {
    uncached = std::move(data);
    return x;
  }
  if (base_copies_.size() == kBaseCopies) base_copies_.pop_back();
  BaseCopy copy;
  copy.id = base.id, copy.bytes = bytes, copy.data = std::move(data);
  copy.lease = lease.split(bytes);
  base_copies_.insert(base_copies_.begin(), std::move(copy));
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
