// The CUDA backend's entry points: each makes its device current, puts the matrix on the device
// and hands it to the algorithm the memory budget allows; and the backend's construction.
//
// gram64 (default): in fp64, the Gram matrix of the smaller side (gram64.cpp). gesvd, gesvdp,
// gesvdj: cuSOLVER's SVDs in the working precision (direct_svd.cpp).
#include "cuda/cuda_backend.hpp"

#include <algorithm>
#include <cstdio>

#include "backend/gram_host.hpp"
#include "cuda/kernels.cuh"
#include "cuda/thrust_ops.cuh"

namespace indim {

namespace cuda {

void check_info(GpuContext& ctx, const std::string& label, const char* routine) {
  int info = 0;
  INDIM_CUDA_CHECK(
      cudaMemcpyAsync(&info, ctx.info(), sizeof(int), cudaMemcpyDeviceToHost, ctx.stream()));
  ctx.sync();
  if (info != 0)
    throw CusolverError(label + ": " + routine + " failed " + detail::solver_info_text(info));
}

[[noreturn]] void rethrow_naming(const std::string& label, int64_t out, int64_t in,
                                 const std::string& algo) {
  const std::string where =
      label + " [" + std::to_string(out) + " x " + std::to_string(in) + "], " + algo;
  auto named = [&](const char* what) {
    std::string m = what;
    // A solver's info failure names the matrix already ("<label>: <routine> failed ...").
    if (m.rfind(label + ": ", 0) == 0) m.erase(0, label.size() + 2);
    return where + ": " + m;
  };
  try {
    throw;
  } catch (const CusolverError& e) {
    throw CusolverError(named(e.what()));
  } catch (const CublasError& e) {
    throw CublasError(named(e.what()));
  } catch (const CudaError& e) {
    throw CudaError(named(e.what()));
  }
}

namespace {

// The [out, in] a stored [rows, cols] block is analysed as (transposed for a Conv1D), with
// `keep` clamped to min(out, in) (0: all).
std::pair<int64_t, int64_t> analysed_shape(int64_t rows, int64_t cols, bool transposed,
                                           int64_t& keep, const std::string& label) {
  if (rows <= 0 || cols <= 0)
    throw BadInput(label + ": cannot decompose an empty matrix", InputProblem::Unsupported);
  const int64_t out = transposed ? cols : rows, in = transposed ? rows : cols;
  const int64_t r = std::min(out, in);
  if (keep <= 0 || keep > r) keep = r;
  return {out, in};
}

}  // namespace

CudaBackend::CudaBackend(Precision p, std::string algo, int device,
                         std::shared_ptr<MemPool> device_pool,
                         std::shared_ptr<detail::MemoryPool> budget, uint64_t staging_limit)
    : precision_(p),
      algo_(std::move(algo)),
      ctx_(device, std::move(device_pool)),
      pool_(std::move(budget)),
      staging_limit_(staging_limit) {}

CudaBackend::~CudaBackend() {
  // The members' buffers, streams and handles are released after this body, on this device;
  // teardown_, destroyed last, then restores the thread's device where it should.
  try {
    teardown_.emplace(ctx_.device());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "indim: cuda:%d: %s\n", ctx_.device(), e.what());
  }
  if (stager_) stager_->stop();
  stager_.reset();
  // Copies from the pinned chunks may still be in flight: wait before the chunks are freed.
  if (copy_stream_.get() != nullptr) INDIM_CUDA_WARN(cudaStreamSynchronize(copy_stream_.get()));
}

Decomposition CudaBackend::decompose(Dense<float>&& w, Side side, int64_t keep,
                                     const std::string& label) {
  const DeviceScope scope(ctx_.device());
  return run(w, side, keep, label);
}

Decomposition CudaBackend::decompose(Dense<double>&& w, Side side, int64_t keep,
                                     const std::string& label) {
  const DeviceScope scope(ctx_.device());
  return run(w, side, keep, label);
}

Decomposition CudaBackend::decompose_stored(const void* bytes, DType dtype, int64_t rows,
                                            int64_t cols, bool transposed, Side side, int64_t keep,
                                            const std::string& label) {
  const DeviceScope scope(ctx_.device());
  const auto [out, in] = analysed_shape(rows, cols, transposed, keep, label);
  return dispatch(out, in, dtype_bits(dtype) / 8, side, keep, label, [&](auto type) {
    return upload_stored<decltype(type)>(bytes, dtype, rows, cols, transposed, label,
                                         precision_ == Precision::F32);
  });
}

Decomposition CudaBackend::decompose_quantised(const void* codes, DType dtype, int64_t rows,
                                               int64_t cols, bool transposed,
                                               const QuantScales& scales, Side side, int64_t keep,
                                               const std::string& label) {
  const DeviceScope scope(ctx_.device());
  const auto [out, in] = analysed_shape(rows, cols, transposed, keep, label);
  // Codes cross in their stored width (a byte, or half of one), their scales beside them.
  return dispatch(out, in, std::max(1, dtype_bits(dtype) / 8), side, keep, label, [&](auto type) {
    return upload_stored<decltype(type)>(codes, dtype, rows, cols, transposed, label,
                                         precision_ == Precision::F32, &scales);
  });
}

Decomposition CudaBackend::decompose_merged(const void* base_bytes, DType dtype, int64_t rows,
                                            int64_t cols, const LowRankUpdate& update, bool conv1d,
                                            Side side, int64_t keep, const std::string& base_label,
                                            const std::string& label) {
  const DeviceScope scope(ctx_.device());
  const auto [out, in] = analysed_shape(rows, cols, conv1d, keep, label);
  return dispatch(out, in, dtype_bits(dtype) / 8, side, keep, label, [&](auto type) {
    auto w = merged<decltype(type)>(base_bytes, dtype, rows, cols, update, base_label, label);
    return conv1d ? transposed(w, rows, cols) : std::move(w);
  });
}

Similarity CudaBackend::compare(const Vectors& tuned, const Vectors& base, int64_t k,
                                int64_t head_cols) {
  if (tuned.dim != base.dim || tuned.precision() != base.precision())
    throw Error("compare: vector sets differ in dimension or precision");
  const DeviceScope scope(ctx_.device());
  return tuned.precision() == Precision::F32 ? compare_impl<float>(tuned, base, k, head_cols)
                                             : compare_impl<double>(tuned, base, k, head_cols);
}

// The algorithm for an [out, in] matrix within the memory budget: gesvd needs the least and
// is the fallback of the others; a matrix too large for it is an error naming it.
std::string CudaBackend::choose_algo(int64_t out, int64_t in, int64_t keep, int stored_width,
                                     const std::string& label) const {
  std::string algo = algo_;
  const uint64_t budget = pool_->total();
  auto need = [&](const std::string& a) {
    return cuda_bytes_needed(a, precision_, out, in, keep, stored_width);
  };
  if (algo != "gesvd" && need(algo) > budget) algo = "gesvd";
  if (need(algo) > budget)
    throw Error(label + ": [" + std::to_string(out) + ", " + std::to_string(in) + "] needs about " +
                std::to_string(need(algo) >> 20) + " MiB of GPU memory with " + algo +
                ", over the budget of " + std::to_string(budget >> 20) +
                " MiB (--gpu-mem, less what staging holds)");
  return algo;
}

detail::MemoryPool::Lease CudaBackend::lease(uint64_t bytes) {
  detail::MemoryPool::Lease now = pool_->try_acquire(bytes);
  if (now) return now;
  drop_base_copies();
  return pool_->acquire(bytes);
}

void CudaBackend::drop_base_copies() noexcept {
  if (base_copies_.empty()) return;
  try {
    const DeviceScope scope(ctx_.device());
    base_copies_.clear();
  } catch (const std::exception& e) {  // freed with the backend instead
    std::fprintf(stderr, "indim: cuda:%d: %s\n", ctx_.device(), e.what());
  }
}

// Decomposes the [out, in] matrix that make(T{}) leaves on the device (DeviceBuffer<T>, T
// double for gram64, else the working precision) with the algorithm the budget allows; a
// device error names the matrix, its shape and the algorithm.
template <typename Make>
Decomposition CudaBackend::dispatch(int64_t out, int64_t in, int stored_width, Side side,
                                    int64_t keep, const std::string& label, Make&& make) {
  const std::string algo = choose_algo(out, in, keep, stored_width, label);
  try {
    // Held until the decomposition's buffers are freed (they live inside the call).
    const detail::MemoryPool::Lease held =
        lease(cuda_bytes_needed(algo, precision_, out, in, keep, stored_width));
    return decompose_within(algo, out, in, side, keep, label, make);
  } catch (const CudaError&) {
    rethrow_naming(label, out, in, algo);
  } catch (const CublasError&) {
    rethrow_naming(label, out, in, algo);
  } catch (const CusolverError&) {
    rethrow_naming(label, out, in, algo);
  }
}

template <typename Make>
Decomposition CudaBackend::decompose_within(const std::string& algo, int64_t out, int64_t in,
                                            Side side, int64_t keep, const std::string& label,
                                            Make&& make) {
  if (algo == "gram64") {
    DeviceBuffer<double> a = make(double{});
    return gram64_device(a, out, in, side, keep, label);
  }
  if (precision_ == Precision::F32) {
    DeviceBuffer<float> a = make(float{});
    return direct_device<float>(a, out, in, side, keep, label, algo);
  }
  DeviceBuffer<double> a = make(double{});
  return direct_device<double>(a, out, in, side, keep, label, algo);
}

// A host matrix: copied to the device in its own precision, cast there. An fp64 value beyond the
// fp32 range is refused at its element, as the CPU backend refuses it.
template <typename T>
Decomposition CudaBackend::run(const Dense<T>& w, Side side, int64_t keep,
                               const std::string& label) {
  if (w.rows <= 0 || w.cols <= 0)
    throw BadInput(label + ": cannot decompose an empty matrix", InputProblem::Unsupported);
  const int64_t r = std::min(w.rows, w.cols);
  if (keep <= 0 || keep > r) keep = r;
  return dispatch(w.rows, w.cols, sizeof(T), side, keep, label, [&](auto type) {
    using D = decltype(type);
    const size_t count = static_cast<size_t>(w.rows * w.cols);
    DeviceBuffer<T> staged = ctx_.buffer<T>(count);
    INDIM_CUDA_CHECK(cudaMemcpyAsync(staged.get(), w.data.data(), count * sizeof(T),
                                     cudaMemcpyHostToDevice, ctx_.stream()));
    if constexpr (std::is_same<D, T>::value) {
      return staged;
    } else {
      DeviceBuffer<D> a = ctx_.buffer<D>(count);
      cast(staged.get(), a.get(), static_cast<int64_t>(count), ctx_.stream());
      if constexpr (std::is_same<D, float>::value) {
        const int64_t first =
            first_non_finite<float>(a.get(), static_cast<int64_t>(count), ctx_.place());
        if (first < static_cast<int64_t>(count))
          throw BadInput(InputProblem::NonFinite, label + " holds a non-finite value at [" +
                                                      std::to_string(first / w.cols) + ", " +
                                                      std::to_string(first % w.cols) + "]");
      }
      ctx_.sync();
      return a;
    }
  });
}

Vectors CudaBackend::empty_vectors(int64_t dim, int64_t count) const {
  return Vectors::zeros(precision_, dim, count);
}

}  // namespace cuda

bool cuda_built() { return true; }

int cuda_device_count(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    // No driver or no device is "zero devices", not a failure.
    if (why != nullptr) *why = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    cudaGetLastError();
    return 0;
  }
  if (n == 0 && why != nullptr) *why = "no CUDA device";
  return n;
}

std::string cuda_device_name(int device) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    cudaGetLastError();
    return {};
  }
  return prop.name;
}

std::vector<DeviceMemoryInfo> cuda_memory_info() {
  std::vector<DeviceMemoryInfo> out;
  const int n = cuda_device_count(nullptr);
  for (int d = 0; d < n; ++d) {
    // Only the devices this process uses already: asking another would create a context there
    // (hundreds of MB, and a failure where the GPU is exclusive and busy).
    if (!cuda::device_in_use(d)) continue;
    try {  // a device that cannot be made current is left out, not an error
      const cuda::DeviceScope scope(d);
      size_t free_bytes = 0, total_bytes = 0;
      if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess)
        out.push_back({d, free_bytes, total_bytes});
      else
        cudaGetLastError();
    } catch (const std::exception&) {
    }
  }
  return out;
}

std::vector<std::unique_ptr<Backend>> make_cuda_backends(Precision precision,
                                                         const std::string& algo, int device,
                                                         uint64_t gpu_mem, int streams) {
  std::string why;
  const int n = cuda_device_count(&why);
  if (device < 0 || device >= n)
    throw Error("--backend cuda: " +
                (n == 0 ? "no usable CUDA device (" + why + ")"
                        : "device " + std::to_string(device) + " does not exist (" +
                              std::to_string(n) + " found)"));
  const cuda::DeviceScope scope(device);
  size_t free_bytes = 0, total_bytes = 0;
  INDIM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const uint64_t budget = gpu_mem > 0 ? gpu_mem : static_cast<uint64_t>(free_bytes * 0.9);
  // The run's private pool keeps what it frees up to the budget, and returns it all when its
  // last backend goes.
  std::shared_ptr<cuda::MemPool> device_pool = cuda::make_device_pool(device, budget);
  streams = std::max(streams, 1);
  // Each stream stages up to 1 GiB (an eighth of its part of the budget when smaller); the
  // decompositions share the rest.
  const uint64_t staging =
      std::min<uint64_t>(1ull << 30, budget / (8 * static_cast<uint64_t>(streams)));
  auto pool = std::make_shared<detail::MemoryPool>(budget - staging * streams);
  std::vector<std::unique_ptr<Backend>> out;
  for (int s = 0; s < streams; ++s)
    out.push_back(
        std::make_unique<cuda::CudaBackend>(precision, algo, device, device_pool, pool, staging));
  return out;
}

std::unique_ptr<Backend> make_cuda_backend(Precision precision, const std::string& algo, int device,
                                           uint64_t gpu_mem) {
  return std::move(make_cuda_backends(precision, algo, device, gpu_mem, 1).front());
}

}  // namespace indim
