#include "cuda/batched_eig.hpp"

#include <algorithm>
#include <vector>

#include "backend/gram_host.hpp"
#include "cuda/cuda_backend.hpp"

namespace indim::cuda {

void syevd_one(GpuContext& ctx, double* a, int64_t n, double* w, const std::string& label) {
  size_t dev_bytes = 0, host_bytes = 0;
  INDIM_CUSOLVER_CHECK(cusolverDnXsyevd_bufferSize(
      ctx.cusolver(), ctx.params(), CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, CUDA_R_64F,
      a, n, CUDA_R_64F, w, CUDA_R_64F, &dev_bytes, &host_bytes));
  std::vector<unsigned char> host_work(std::max<size_t>(host_bytes, 1));
  const DeviceBuffer<unsigned char> work = ctx.workspace(dev_bytes);
  INDIM_CUSOLVER_CHECK(cusolverDnXsyevd(ctx.cusolver(), ctx.params(), CUSOLVER_EIG_MODE_VECTOR,
                                        CUBLAS_FILL_MODE_LOWER, n, CUDA_R_64F, a, n, CUDA_R_64F, w,
                                        CUDA_R_64F, work.get(), dev_bytes, host_work.data(),
                                        host_bytes, ctx.info()));
  check_info(ctx, label, "cusolverDnXsyevd");
}

void syev_batched(GpuContext& ctx, double* a, int64_t n, int64_t batch, double* w,
                  const std::string& label) {
  size_t dev_bytes = 0, host_bytes = 0;
  INDIM_CUSOLVER_CHECK(cusolverDnXsyevBatched_bufferSize(
      ctx.cusolver(), ctx.params(), CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, CUDA_R_64F,
      a, n, CUDA_R_64F, w, CUDA_R_64F, &dev_bytes, &host_bytes, batch));
  std::vector<unsigned char> host_work(std::max<size_t>(host_bytes, 1));
  DeviceBuffer<int> info = ctx.buffer<int>(static_cast<size_t>(batch));
  const DeviceBuffer<unsigned char> work = ctx.workspace(dev_bytes);
  INDIM_CUSOLVER_CHECK(cusolverDnXsyevBatched(
      ctx.cusolver(), ctx.params(), CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, CUDA_R_64F,
      a, n, CUDA_R_64F, w, CUDA_R_64F, work.get(), dev_bytes, host_work.data(), host_bytes,
      info.get(), batch));
  std::vector<int> infos(static_cast<size_t>(batch));
  INDIM_CUDA_CHECK(cudaMemcpyAsync(infos.data(), info.get(), infos.size() * sizeof(int),
                                   cudaMemcpyDeviceToHost, ctx.stream()));
  ctx.sync();
  for (int64_t i = 0; i < batch; ++i)
    if (infos[i] != 0)
      throw CusolverError(label + " [" + std::to_string(i) + "]: cusolverDnXsyevBatched failed " +
                          detail::solver_info_text(infos[i]));
}

}  // namespace indim::cuda
