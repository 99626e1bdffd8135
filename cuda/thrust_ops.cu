#include <thrust/execution_policy.h>
#include <thrust/find.h>
#include <thrust/gather.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include "cuda/thrust_ops.cuh"

namespace indim::cuda {

namespace {

// Thrust's temporary storage, from the run's pool in the order of the stream it runs on (no
// synchronous cudaMalloc on a multi-stream path).
struct StreamAllocator {
  using value_type = char;
  Place at;
  char* allocate(std::ptrdiff_t n) {
    void* p = nullptr;
    INDIM_CUDA_CHECK(cudaMallocFromPoolAsync(&p, static_cast<size_t>(n), at.pool, at.stream));
    return static_cast<char*>(p);
  }
  void deallocate(char* p, size_t) { INDIM_CUDA_WARN(cudaFreeAsync(p, at.stream)); }
};

template <typename T>
struct NotFinite {
  bool fp32_range;
  __device__ bool operator()(T x) const {
    return fp32_range ? !isfinite(static_cast<float>(x)) : !isfinite(x);
  }
};

// Element e of the column-major [rows, keep] result reads src[e % rows, n - 1 - e / rows].
struct ReversedColumn {
  int64_t rows, n;
  __host__ __device__ int64_t operator()(int64_t e) const {
    return e % rows + (n - 1 - e / rows) * rows;
  }
};

}  // namespace

template <typename T>
int64_t first_non_finite(const T* w, int64_t n, Place at, bool fp32_range) {
  if (n == 0) return 0;
  StreamAllocator alloc{at};
  const T* hit =
      thrust::find_if(thrust::cuda::par(alloc).on(at.stream), w, w + n, NotFinite<T>{fp32_range});
  return static_cast<int64_t>(hit - w);
}
template int64_t first_non_finite<float>(const float*, int64_t, Place, bool);
template int64_t first_non_finite<double>(const double*, int64_t, Place, bool);

void reverse_columns(const double* src, double* dst, int64_t rows, int64_t n, int64_t keep,
                     Place at) {
  const int64_t total = rows * keep;
  if (total == 0) return;
  cudaStream_t s = at.stream;
  StreamAllocator alloc{at};
  auto map = thrust::make_transform_iterator(thrust::counting_iterator<int64_t>(0),
                                             ReversedColumn{rows, n});
  thrust::gather(thrust::cuda::par_nosync(alloc).on(s), map, map + total, src, dst);
  INDIM_KERNEL_CHECK();
}

}  // namespace indim::cuda
