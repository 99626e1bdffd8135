// The low-rank route's products on the device (Backend::lowrank_products): W0 from its stored
// (or staged) bytes and U0 from the base's vectors converted into fp64 device buffers, one
// cuBLAS dgemm per product; the blocks it multiplies go up and come down (m x 2r at most).
// The iteration in the base's coordinates stays on the host (src/backend/lowrank.cpp).
#include "backend/lowrank_products.hpp"

#include <algorithm>

#include "cuda/cuda_backend.hpp"
#include "cuda/kernels.cuh"

namespace indim::cuda {

namespace {

class DeviceProducts final : public detail::LowRankProducts {
 public:
  DeviceProducts(GpuContext& ctx, detail::MemoryPool::Lease&& lease, DeviceBuffer<double>&& w0,
                 int64_t rows, int64_t cols)
      : LowRankProducts(rows, cols),
        ctx_(ctx),
        lease_(std::move(lease)),
        w0_(std::move(w0)),
        u0_(ctx.place()),
        x_(ctx.place()),
        y_(ctx.place()) {}

  // The route may end on a thread with another device current: the buffers are freed on
  // theirs (a failure to select it leaves them to the members' own destructors).
  ~DeviceProducts() override {
    try {
      const DeviceScope scope(ctx_.device());
      w0_ = DeviceBuffer<double>(), u0_ = DeviceBuffer<double>();
      x_ = DeviceBuffer<double>(), y_ = DeviceBuffer<double>();
    } catch (const std::exception&) {
    }
  }

  void base(bool transpose, const double* x, int64_t c, double* y) override {
    product(w0_.get(), rows(), cols(), transpose, x, c, y);
  }

  void load_vectors(const Vectors& basis) override {
    const DeviceScope scope(ctx_.device());
    dim_ = basis.dim, count_ = basis.count;
    const size_t n = static_cast<size_t>(dim_ * count_);
    u0_.grow(std::max<size_t>(n, 1));
    if (basis.precision() == Precision::F64) {
      INDIM_CUDA_CHECK(cudaMemcpyAsync(u0_.get(), basis.values<double>().data(), n * sizeof(double),
                                       cudaMemcpyHostToDevice, ctx_.stream()));
    } else {
      DeviceBuffer<float> f = ctx_.buffer<float>(std::max<size_t>(n, 1));
      INDIM_CUDA_CHECK(cudaMemcpyAsync(f.get(), basis.values<float>().data(), n * sizeof(float),
                                       cudaMemcpyHostToDevice, ctx_.stream()));
      cast_to_double(f.get(), u0_.get(), static_cast<int64_t>(n), ctx_.stream());
    }
    ctx_.sync();
  }

  void vectors(bool transpose, const double* x, int64_t c, double* y) override {
    product(u0_.get(), dim_, count_, transpose, x, c, y);
  }

 private:
  // Row-major y = op(a) x for the row-major a [rows, cols] on the device. To cuBLAS a is a^T
  // [cols, rows] (lda = cols), x [k, c] is x^T [c, k] and y [m, c] is y^T [c, m]:
  // y^T = x^T op(a)^T, where op(a)^T is a^T as it lies (N) or its transpose (T).
  void product(const double* a, int64_t rows, int64_t cols, bool transpose, const double* x,
               int64_t c, double* y) {
    const DeviceScope scope(ctx_.device());
    const int64_t m = transpose ? cols : rows, k = transpose ? rows : cols;
    x_.grow(static_cast<size_t>(std::max<int64_t>(k * c, 1)));
    y_.grow(static_cast<size_t>(std::max<int64_t>(m * c, 1)));
    INDIM_CUDA_CHECK(cudaMemcpyAsync(x_.get(), x, static_cast<size_t>(k * c) * sizeof(double),
                                     cudaMemcpyHostToDevice, ctx_.stream()));
    const double one = 1.0, zero = 0.0;
    INDIM_CUBLAS_CHECK(cublasDgemm(
        ctx_.cublas(), CUBLAS_OP_N, transpose ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(c),
        static_cast<int>(m), static_cast<int>(k), &one, x_.get(), static_cast<int>(c), a,
        static_cast<int>(cols), &zero, y_.get(), static_cast<int>(c)));
    INDIM_CUDA_CHECK(cudaMemcpyAsync(y, y_.get(), static_cast<size_t>(m * c) * sizeof(double),
                                     cudaMemcpyDeviceToHost, ctx_.stream()));
    ctx_.sync();
  }

  GpuContext& ctx_;
  detail::MemoryPool::Lease lease_;  // the budget the buffers below hold
  DeviceBuffer<double> w0_, u0_, x_, y_;
  int64_t dim_ = 0, count_ = 0;
};

// Device bytes of the products for an analysed [m, n] with rank r keeping `keep` vectors: W0
// and U0 in fp64, the stored bytes and a float U0 while they convert, and the blocks (2r
// columns in the build, keep in the carry-back and the certificate).
uint64_t products_bytes(int64_t m, int64_t n, int64_t r, int64_t keep, DType dtype) {
  const uint64_t mn = static_cast<uint64_t>(m * n), p = static_cast<uint64_t>(std::min(m, n));
  const uint64_t dim = static_cast<uint64_t>(std::max(m, n));
  const int64_t kept = keep <= 0 ? std::min(m, n) : std::min(keep, std::min(m, n));
  const uint64_t cols = static_cast<uint64_t>(std::max(2 * r, kept));
  const uint64_t blocks = 2 * dim * cols * sizeof(double);
  return mn * (sizeof(double) + static_cast<uint64_t>(dtype_bits(dtype) / 8)) +
         dim * p * (sizeof(double) + sizeof(float)) + blocks;
}

}  // namespace

std::unique_ptr<detail::LowRankProducts> CudaBackend::lowrank_products(
    const LowRankProblem& problem) {
  const int64_t m = problem.conv1d ? problem.cols : problem.rows;
  const int64_t n = problem.conv1d ? problem.rows : problem.cols;
  const uint64_t need = products_bytes(m, n, problem.update->a.rows, problem.keep, problem.dtype);
  // Past the budget the host's kernels do the products: the route's work is O(m n r) either way.
  if (need > pool_->total()) return Backend::lowrank_products(problem);
  const DeviceScope scope(ctx_.device());
  detail::MemoryPool::Lease held = lease(need);
  // In fp64 whatever the working precision, as the host's products read it.
  DeviceBuffer<double> w0 =
      upload_stored<double>(problem.base_bytes, problem.dtype, problem.rows, problem.cols,
                            problem.conv1d, problem.base_label, /*fp32_range=*/false);
  return std::make_unique<DeviceProducts>(ctx_, std::move(held), std::move(w0), m, n);
}

}  // namespace indim::cuda
