// The CUDA backend: cuSOLVER decompositions and the fused similarity kernel, behind the same
// Backend interface as the CPU backend.
//
// Layout: a row-major nn.Linear weight W [out, in] is, to column-major cuBLAS/cuSOLVER, the
// matrix A = W^T [in, out] with lda = in (no copy).
//
// gram64 (default): in fp64, the Gram matrix of the smaller side, G = W W^T (out <= in) or
// W^T W (out > in), by syrk; its eigenvectors (Xsyevd, ascending) are that side's singular
// vectors, sigma = sqrt(lambda); the other side's vectors come from one GEMM, W^T U / sigma or
// W V / sigma. Errors in vector j go as eps * sigma_1^2 / |sigma_i^2 - sigma_j^2|: fp64 keeps
// them far below the fp32 SVD's for all but singular values under ~1e-8 sigma_1.
// gesvd: cusolverDnXgesvd in the working precision; it needs m >= n, so a tall W is transposed
// on the device first.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend/gram_host.hpp"
#include "cuda/check.hpp"
#include "cuda/kernels.cuh"
#include "cuda/memory_pool.hpp"
#include "cuda/resources.hpp"
#include "cuda/staging.hpp"
#include "indim/backend.hpp"

namespace indim {

namespace cuda {

const char* cusolver_status_name(cusolverStatus_t s) {
  switch (s) {
    case CUSOLVER_STATUS_SUCCESS:
      return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED:
      return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED:
      return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE:
      return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH:
      return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_MAPPING_ERROR:
      return "CUSOLVER_STATUS_MAPPING_ERROR";
    case CUSOLVER_STATUS_EXECUTION_FAILED:
      return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR:
      return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED:
      return "CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED";
    case CUSOLVER_STATUS_NOT_SUPPORTED:
      return "CUSOLVER_STATUS_NOT_SUPPORTED";
    case CUSOLVER_STATUS_INVALID_WORKSPACE:
      return "CUSOLVER_STATUS_INVALID_WORKSPACE";
    default:
      return "CUSOLVER_STATUS_(unknown)";
  }
}

void destroy_stream(cudaStream_t s) { INDIM_CUDA_WARN(cudaStreamDestroy(s)); }
void destroy_event(cudaEvent_t e) { INDIM_CUDA_WARN(cudaEventDestroy(e)); }
void destroy_cublas(cublasHandle_t h) { cublasDestroy(h); }
void destroy_cusolver(cusolverDnHandle_t h) { cusolverDnDestroy(h); }
void destroy_params(cusolverDnParams_t p) { cusolverDnDestroyParams(p); }
void destroy_gesvdj(gesvdjInfo_t p) { cusolverDnDestroyGesvdjInfo(p); }

GpuContext::GpuContext(int device) : device_(device) {
  INDIM_CUDA_CHECK(cudaSetDevice(device));
  cudaStream_t s = nullptr;
  INDIM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  stream_ = Stream(s);
  cublasHandle_t b = nullptr;
  INDIM_CUBLAS_CHECK(cublasCreate(&b));
  cublas_ = CublasHandle(b);
  INDIM_CUBLAS_CHECK(cublasSetStream(b, s));
  cusolverDnHandle_t c = nullptr;
  INDIM_CUSOLVER_CHECK(cusolverDnCreate(&c));
  cusolver_ = CusolverHandle(c);
  INDIM_CUSOLVER_CHECK(cusolverDnSetStream(c, s));
  cusolverDnParams_t p = nullptr;
  INDIM_CUSOLVER_CHECK(cusolverDnCreateParams(&p));
  params_ = SolverParams(p);
  info_.grow(1);
}

void* GpuContext::workspace(size_t bytes) {
  workspace_.grow(std::max<size_t>(bytes, 1));
  return workspace_.get();
}

void GpuContext::activate() const { INDIM_CUDA_CHECK(cudaSetDevice(device_)); }

void GpuContext::sync() const { INDIM_CUDA_CHECK(cudaStreamSynchronize(stream_.get())); }

}  // namespace cuda

namespace {

using cuda::DeviceBuffer;
using cuda::GpuContext;

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

void check_info(GpuContext& ctx, const std::string& label, const char* routine) {
  int info = 0;
  INDIM_CUDA_CHECK(
      cudaMemcpyAsync(&info, ctx.info(), sizeof(int), cudaMemcpyDeviceToHost, ctx.stream()));
  ctx.sync();
  if (info != 0)
    throw CusolverError(label + ": " + routine + " failed " + detail::solver_info_text(info));
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(Precision p, std::string algo, int device, std::shared_ptr<detail::MemoryPool> pool,
              uint64_t staging_limit)
      : precision_(p),
        algo_(std::move(algo)),
        ctx_(device),
        pool_(std::move(pool)),
        staging_limit_(staging_limit) {}
  ~CudaBackend() override {
    cudaSetDevice(ctx_.device());  // staged buffers are freed on this thread
    stager_.reset();
  }
  std::string name() const override { return "cuda"; }
  std::string algo() const override { return algo_; }
  Precision precision() const override { return precision_; }

  Decomposition decompose(Dense<float>&& w, Side side, int64_t keep,
                          const std::string& label) override {
    ctx_.activate();
    return run(w, side, keep, label);
  }
  Decomposition decompose(Dense<double>&& w, Side side, int64_t keep,
                          const std::string& label) override {
    ctx_.activate();
    return run(w, side, keep, label);
  }

  Decomposition decompose_stored(const void* bytes, DType dtype, int64_t rows, int64_t cols,
                                 bool transposed, Side side, int64_t keep,
                                 const std::string& label) override {
    ctx_.activate();
    if (rows <= 0 || cols <= 0) throw BadInput(label + ": cannot decompose an empty matrix");
    const int64_t out = transposed ? cols : rows, in = transposed ? rows : cols;
    const int64_t r = std::min(out, in);
    if (keep <= 0 || keep > r) keep = r;
    return dispatch(out, in, side, keep, label, [&](auto type) {
      return upload_stored<decltype(type)>(bytes, dtype, rows, cols, transposed, label);
    });
  }

  Decomposition decompose_merged(const void* base_bytes, DType dtype, int64_t rows, int64_t cols,
                                 const LowRankUpdate& update, bool conv1d, Side side, int64_t keep,
                                 const std::string& base_label, const std::string& label) override {
    ctx_.activate();
    if (rows <= 0 || cols <= 0) throw BadInput(label + ": cannot decompose an empty matrix");
    const int64_t out = conv1d ? cols : rows, in = conv1d ? rows : cols;
    const int64_t r = std::min(out, in);
    if (keep <= 0 || keep > r) keep = r;
    return dispatch(out, in, side, keep, label, [&](auto type) {
      auto w = merged<decltype(type)>(base_bytes, dtype, rows, cols, update, base_label, label);
      return conv1d ? transposed(w, rows, cols) : std::move(w);
    });
  }

  Similarity compare(const Vectors& tuned, const Vectors& base, int64_t k,
                     int64_t head_cols) override {
    if (tuned.dim != base.dim || tuned.precision != base.precision)
      throw Error("compare: vector sets differ in dimension or precision");
    ctx_.activate();
    return tuned.precision == Precision::F32 ? compare_impl<float>(tuned, base, k, head_cols)
                                             : compare_impl<double>(tuned, base, k, head_cols);
  }

  // Staging: a loader thread copies announced inputs through two pinned chunks on a copy
  // stream into device buffers, at most staging_limit_ bytes at once (1 GiB, or an eighth of
  // the budget when smaller, taken from the decompositions' budget while streaming).
  void stream_inputs(const std::vector<std::vector<ByteRange>>& entries) override {
    ctx_.activate();
    stager_.reset();
    if (copy_stream_.get() == nullptr) {
      cudaStream_t s = nullptr;
      INDIM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
      copy_stream_ = cuda::Stream(s);
      for (int i = 0; i < 2; ++i) {
        pinned_.emplace_back(kChunk);
        cudaEvent_t e = nullptr;
        INDIM_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
        chunk_done_.emplace_back(e);
      }
    }
    stager_ = std::make_unique<detail::Stager<Staged>>(
        entries, staging_limit_, [this](const ByteRange& r) { return copy_in(r); });
  }

  void release_inputs(size_t entry) override {
    if (!stager_) return;
    ctx_.activate();
    stager_->release(entry);
  }

  std::string staging_summary() const override {
    if (!stager_) return {};
    std::string s = "cuda:" + std::to_string(ctx_.device()) + ": " +
                    std::to_string(stager_->hits()) +
                    " inputs found staged ahead on the copy stream, peak " +
                    std::to_string(stager_->peak_bytes() >> 20) + " MiB staged";
    const std::string e = stager_->error();
    return e.empty() ? s : s + "; the loader stopped early: " + e;
  }

 private:
  static constexpr size_t kChunk = 64ull << 20;

  // One input staged on the device: its stored bytes, and an event after their copy.
  struct Staged {
    size_t bytes = 0;
    DeviceBuffer<unsigned char> raw;
    cuda::Event ready;
  };

  // On the loader thread: the range through the pinned chunks (alternating, each reused once
  // its previous copy has finished) into a new device buffer.
  Staged copy_in(const ByteRange& r) {
    ctx_.activate();
    Staged st;
    st.bytes = r.bytes;
    st.raw.grow(std::max<size_t>(r.bytes, 1));
    const auto* src = static_cast<const unsigned char*>(r.data);
    for (size_t off = 0, c = 0; off < r.bytes; off += kChunk, ++c) {
      const size_t slot = c % 2, len = std::min(kChunk, r.bytes - off);
      INDIM_CUDA_CHECK(cudaEventSynchronize(chunk_done_[slot].get()));
      std::memcpy(pinned_[slot].get(), src + off, len);
      INDIM_CUDA_CHECK(cudaMemcpyAsync(st.raw.get() + off, pinned_[slot].get(), len,
                                       cudaMemcpyHostToDevice, copy_stream_.get()));
      INDIM_CUDA_CHECK(cudaEventRecord(chunk_done_[slot].get(), copy_stream_.get()));
    }
    cudaEvent_t e = nullptr;
    INDIM_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    st.ready = cuda::Event(e);
    INDIM_CUDA_CHECK(cudaEventRecord(e, copy_stream_.get()));
    return st;
  }

  // The algorithm for an [out, in] matrix within the memory budget: gesvd needs the least and
  // is the fallback of the others; a matrix too large for it is an error naming it.
  std::string choose_algo(int64_t out, int64_t in, int64_t keep, const std::string& label) const {
    std::string algo = algo_;
    const uint64_t budget = pool_->total();
    if (algo != "gesvd" && cuda_bytes_needed(algo, precision_, out, in, keep) > budget)
      algo = "gesvd";
    const uint64_t need = cuda_bytes_needed(algo, precision_, out, in, keep);
    if (need > budget)
      throw Error(label + ": [" + std::to_string(out) + ", " + std::to_string(in) +
                  "] needs about " + std::to_string(need >> 20) + " MiB of GPU memory with " +
                  algo + ", over the budget of " + std::to_string(budget >> 20) +
                  " MiB (--gpu-mem, less what staging holds)");
    return algo;
  }

  // Decomposes the [out, in] matrix that make(T{}) leaves on the device (DeviceBuffer<T>, T
  // double for gram64, else the working precision) with the algorithm the budget allows.
  template <typename Make>
  Decomposition dispatch(int64_t out, int64_t in, Side side, int64_t keep, const std::string& label,
                         Make&& make) {
    const std::string algo = choose_algo(out, in, keep, label);
    // Held until the decomposition's buffers are freed (they are declared after it).
    detail::MemoryPool::Lease lease =
        pool_->acquire(cuda_bytes_needed(algo, precision_, out, in, keep));
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

  // A host matrix: copied to the device in its own precision, cast there.
  template <typename T>
  Decomposition run(const Dense<T>& w, Side side, int64_t keep, const std::string& label) {
    if (w.rows <= 0 || w.cols <= 0) throw BadInput(label + ": cannot decompose an empty matrix");
    const int64_t r = std::min(w.rows, w.cols);
    if (keep <= 0 || keep > r) keep = r;
    return dispatch(w.rows, w.cols, side, keep, label, [&](auto type) {
      using D = decltype(type);
      const size_t count = static_cast<size_t>(w.rows * w.cols);
      DeviceBuffer<T> staged(count);
      INDIM_CUDA_CHECK(cudaMemcpyAsync(staged.get(), w.data.data(), count * sizeof(T),
                                       cudaMemcpyHostToDevice, ctx_.stream()));
      if constexpr (std::is_same<D, T>::value) {
        return staged;
      } else {
        DeviceBuffer<D> a(count);
        cuda::cast(staged.get(), a.get(), static_cast<int64_t>(count), ctx_.stream());
        ctx_.sync();  // staged is freed at scope end
        return a;
      }
    });
  }

  template <typename T>
  DeviceBuffer<T> transposed(DeviceBuffer<T>& w, int64_t rows, int64_t cols) {
    DeviceBuffer<T> t(static_cast<size_t>(rows * cols));
    cuda::transpose(w.get(), t.get(), rows, cols, ctx_.stream());
    ctx_.sync();
    return t;
  }

  template <typename T>
  DeviceBuffer<T> upload(const std::vector<double>& host) {
    std::vector<T> cast(host.begin(), host.end());
    DeviceBuffer<T> d(std::max<size_t>(cast.size(), 1));
    INDIM_CUDA_CHECK(cudaMemcpyAsync(d.get(), cast.data(), cast.size() * sizeof(T),
                                     cudaMemcpyHostToDevice, ctx_.stream()));
    ctx_.sync();  // `cast` goes out of scope
    return d;
  }

  // The stored base [rows, cols] plus scale * B A (or its transpose), then DoRA, on the device.
  template <typename T>
  DeviceBuffer<T> merged(const void* bytes, DType dtype, int64_t rows, int64_t cols,
                         const LowRankUpdate& u, const std::string& base_label,
                         const std::string& label) {
    DeviceBuffer<T> w = upload_stored<T>(bytes, dtype, rows, cols, false, base_label);
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
    if (!u.magnitude.empty()) {
      DeviceBuffer<double> mag(u.magnitude.size());
      INDIM_CUDA_CHECK(cudaMemcpyAsync(mag.get(), u.magnitude.data(),
                                       u.magnitude.size() * sizeof(double), cudaMemcpyHostToDevice,
                                       ctx_.stream()));
      cuda::dora_rescale<T>(w.get(), rows, cols, u.transposed, mag.get(), ctx_.stream());
      ctx_.sync();
    }
    DeviceBuffer<unsigned long long> bad(1);
    cuda::find_non_finite<T>(w.get(), rows * cols, bad.get(), ctx_.stream());
    unsigned long long first = 0;
    INDIM_CUDA_CHECK(
        cudaMemcpyAsync(&first, bad.get(), sizeof first, cudaMemcpyDeviceToHost, ctx_.stream()));
    ctx_.sync();
    if (first != ~0ull)
      throw BadInput(label + ": merging the adapter gives a non-finite value at [" +
                     std::to_string(first / cols) + ", " + std::to_string(first % cols) + "]");
    return w;
  }

  // Stored bytes -> device -> T [out, in], checked for non-finite values.
  template <typename T>
  DeviceBuffer<T> upload_stored(const void* bytes, DType dtype, int64_t rows, int64_t cols,
                                bool transposed, const std::string& label) {
    cuda::StoredType type;
    switch (dtype) {
      case DType::F32:
        type = cuda::StoredType::F32;
        break;
      case DType::F64:
        type = cuda::StoredType::F64;
        break;
      case DType::F16:
        type = cuda::StoredType::F16;
        break;
      case DType::BF16:
        type = cuda::StoredType::BF16;
        break;
      default:
        throw Error(label + ": dtype " + dtype_name(dtype) + " cannot be analysed");
    }
    const size_t count = static_cast<size_t>(rows * cols);
    const size_t nbytes = count * static_cast<size_t>(dtype_bits(dtype) / 8);
    DeviceBuffer<unsigned char> raw;
    DeviceBuffer<unsigned long long> bad(1);
    DeviceBuffer<T> w(count);
    const unsigned char* src = nullptr;
    Staged* staged = stager_ ? stager_->find(bytes) : nullptr;
    if (staged != nullptr && staged->bytes == nbytes) {  // copied ahead: wait for that copy
      INDIM_CUDA_CHECK(cudaStreamWaitEvent(ctx_.stream(), staged->ready.get(), 0));
      src = staged->raw.get();
    } else {
      raw.grow(nbytes);
      INDIM_CUDA_CHECK(
          cudaMemcpyAsync(raw.get(), bytes, nbytes, cudaMemcpyHostToDevice, ctx_.stream()));
      src = raw.get();
    }
    cuda::convert_stored<T>(src, type, rows, cols, transposed, w.get(), bad.get(), ctx_.stream());
    unsigned long long first = 0;
    INDIM_CUDA_CHECK(
        cudaMemcpyAsync(&first, bad.get(), sizeof first, cudaMemcpyDeviceToHost, ctx_.stream()));
    ctx_.sync();
    if (first != ~0ull)
      throw BadInput(label + " holds a non-finite value at [" + std::to_string(first / cols) +
                     ", " + std::to_string(first % cols) + "]");
    return w;
  }

  // Vectors of the output precision from a column-major double block [rows, cols], columns
  // scaled by `scale` (device, length cols).
  Vectors download(const double* colmajor, const double* scale, int64_t rows, int64_t cols) {
    Vectors v;
    v.precision = precision_;
    v.dim = rows;
    v.count = cols;
    const size_t n = static_cast<size_t>(rows * cols);
    if (precision_ == Precision::F32) {
      DeviceBuffer<float> out(n);
      cuda::scale_columns_to_row_major(colmajor, scale, out.get(), rows, cols, ctx_.stream());
      v.f32.resize(n);
      INDIM_CUDA_CHECK(cudaMemcpyAsync(v.f32.data(), out.get(), n * sizeof(float),
                                       cudaMemcpyDeviceToHost, ctx_.stream()));
      ctx_.sync();
    } else {
      DeviceBuffer<double> out(n);
      cuda::scale_columns_to_row_major(colmajor, scale, out.get(), rows, cols, ctx_.stream());
      v.f64.resize(n);
      INDIM_CUDA_CHECK(cudaMemcpyAsync(v.f64.data(), out.get(), n * sizeof(double),
                                       cudaMemcpyDeviceToHost, ctx_.stream()));
      ctx_.sync();
    }
    return v;
  }

  // W [out, in] row-major in fp64 on the device, i.e. A = W^T column-major [in, out].
  Decomposition gram64_device(DeviceBuffer<double>& a, int64_t out, int64_t in, Side side,
                              int64_t keep, const std::string& label) {
    const int64_t n = std::min(out, in);
    cudaStream_t s = ctx_.stream();
    // G = A^T A = W W^T [out, out] when out <= in (the left side's Gram), else
    // G = A A^T = W^T W [in, in] (the right side's).
    const bool left_gram = out <= in;
    DeviceBuffer<double> g(static_cast<size_t>(n * n));
    const double one = 1.0, zero = 0.0;
    INDIM_CUBLAS_CHECK(cublasDsyrk(ctx_.cublas(), CUBLAS_FILL_MODE_LOWER,
                                   left_gram ? CUBLAS_OP_T : CUBLAS_OP_N, n, left_gram ? in : out,
                                   &one, a.get(), in, &zero, g.get(), n));
    Decomposition d;
    std::vector<double> lam(static_cast<size_t>(n));  // ascending
    // The top `keep` eigenvectors, column-major, in descending order.
    DeviceBuffer<double> e(static_cast<size_t>(n * keep));
    std::vector<double> theta;  // the iterative route's leading values, descending
    const int sweeps = detail::subspace_applies(n, keep) ? subspace_top(g, n, keep, theta, e) : 0;
    if (sweeps > 0) {
      d.route = "gram64/subspace, " + std::to_string(sweeps) + " sweeps";
    } else if (keep > n / 2) {
      d.route = "gram64/syevd";
      DeviceBuffer<double> lambda(static_cast<size_t>(n));
      size_t dev_bytes = 0, host_bytes = 0;
      INDIM_CUSOLVER_CHECK(cusolverDnXsyevd_bufferSize(
          ctx_.cusolver(), ctx_.params(), CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n,
          CUDA_R_64F, g.get(), n, CUDA_R_64F, lambda.get(), CUDA_R_64F, &dev_bytes, &host_bytes));
      std::vector<unsigned char> host_work(std::max<size_t>(host_bytes, 1));
      INDIM_CUSOLVER_CHECK(cusolverDnXsyevd(
          ctx_.cusolver(), ctx_.params(), CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n,
          CUDA_R_64F, g.get(), n, CUDA_R_64F, lambda.get(), CUDA_R_64F, ctx_.workspace(dev_bytes),
          dev_bytes, host_work.data(), host_bytes, ctx_.info()));
      check_info(ctx_, label, "cusolverDnXsyevd");
      INDIM_CUDA_CHECK(cudaMemcpyAsync(lam.data(), lambda.get(), lam.size() * sizeof(double),
                                       cudaMemcpyDeviceToHost, s));
      cuda::reverse_columns(g.get(), e.get(), n, n, keep, s);
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
      DeviceBuffer<double> ones_d(ones.size());
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
      DeviceBuffer<double> o(static_cast<size_t>(m * keep)), inv(static_cast<size_t>(keep));
      INDIM_CUBLAS_CHECK(cublasDgemm(ctx_.cublas(), left_gram ? CUBLAS_OP_N : CUBLAS_OP_T,
                                     CUBLAS_OP_N, m, keep, n, &one, a.get(), in, e.get(), n, &zero,
                                     o.get(), m));
      cuda::inverse_column_norms(o.get(), m, keep, 1e-7 * d.sigma[0], inv.get(), s);
      other_side = download(o.get(), inv.get(), m, keep);
    }
    ctx_.sync();  // buffers are freed at scope end
    return d;
  }

  // The top `keep` eigenpairs of the symmetric g [n, n] (lower triangle) by subspace iteration,
  // as the CPU backend's subspace_top: GEMMs on the device, the b x b Rayleigh-Ritz problem on
  // the host, residuals by a kernel. On success `theta` holds the leading max(keep, 50) values
  // and `e` the top keep vectors (column-major [n, keep]), both descending; returns the sweeps
  // it took, or 0: not converged, or not in time (take the exact route).
  int subspace_top(DeviceBuffer<double>& g, int64_t n, int64_t keep, std::vector<double>& theta,
                   DeviceBuffer<double>& e) {
    cudaStream_t s = ctx_.stream();
    const int64_t b = detail::subspace_block(keep);
    const int ni = static_cast<int>(n), bi = static_cast<int>(b);
    const size_t nb = static_cast<size_t>(n * b), bb = static_cast<size_t>(b * b);
    const double one = 1.0, zero = 0.0;
    DeviceBuffer<double> q(nb), y(nb), v(nb), gv(nb), h(bb), sd(bb), tau(static_cast<size_t>(b)),
        theta_d(static_cast<size_t>(b)), resid(static_cast<size_t>(keep));
    std::vector<double> start = detail::subspace_start(n, b), hh(bb), sh, ritz_values,
                        r(static_cast<size_t>(keep));
    INDIM_CUDA_CHECK(
        cudaMemcpyAsync(q.get(), start.data(), nb * sizeof(double), cudaMemcpyHostToDevice, s));
    int lwork_qr = 0, lwork_q = 0;
    INDIM_CUSOLVER_CHECK(
        cusolverDnDgeqrf_bufferSize(ctx_.cusolver(), ni, bi, q.get(), ni, &lwork_qr));
    INDIM_CUSOLVER_CHECK(
        cusolverDnDorgqr_bufferSize(ctx_.cusolver(), ni, bi, bi, q.get(), ni, tau.get(), &lwork_q));
    double* work = static_cast<double*>(
        ctx_.workspace(sizeof(double) * static_cast<size_t>(std::max(lwork_qr, lwork_q))));
    auto orthonormalise = [&](DeviceBuffer<double>& z) {
      INDIM_CUSOLVER_CHECK(cusolverDnDgeqrf(ctx_.cusolver(), ni, bi, z.get(), ni, tau.get(), work,
                                            lwork_qr, ctx_.info()));
      INDIM_CUSOLVER_CHECK(cusolverDnDorgqr(ctx_.cusolver(), ni, bi, bi, z.get(), ni, tau.get(),
                                            work, lwork_q, ctx_.info()));
    };
    orthonormalise(q);
    double before = 0;  // the previous sweep's worst residual, relative to theta_1
    const int max_sweeps = detail::subspace_max_sweeps(n, keep);
    for (int sweep = 0; sweep < max_sweeps; ++sweep) {
      // Y = G Q; H = Q^T Y = S diag(theta) S^T (host); V = Q S, G V = Y S.
      INDIM_CUBLAS_CHECK(cublasDsymm(ctx_.cublas(), CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, ni,
                                     bi, &one, g.get(), ni, q.get(), ni, &zero, y.get(), ni));
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
      cuda::ritz_residuals(gv.get(), v.get(), theta_d.get(), n, keep, resid.get(), s);
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
  void top_eigenvectors(DeviceBuffer<double>& g, int64_t n, int64_t keep, std::vector<double>& lam,
                        DeviceBuffer<double>& e, const std::string& label) {
    cudaStream_t s = ctx_.stream();
    const int ni = static_cast<int>(n), ki = static_cast<int>(keep);
    DeviceBuffer<double> diag(static_cast<size_t>(n)), off(static_cast<size_t>(n)),
        tau(static_cast<size_t>(n));
    int lwork = 0;
    INDIM_CUSOLVER_CHECK(cusolverDnDsytrd_bufferSize(ctx_.cusolver(), CUBLAS_FILL_MODE_LOWER, ni,
                                                     g.get(), ni, diag.get(), off.get(), tau.get(),
                                                     &lwork));
    INDIM_CUSOLVER_CHECK(cusolverDnDsytrd(
        ctx_.cusolver(), CUBLAS_FILL_MODE_LOWER, ni, g.get(), ni, diag.get(), off.get(), tau.get(),
        static_cast<double*>(ctx_.workspace(sizeof(double) * static_cast<size_t>(lwork))), lwork,
        ctx_.info()));
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
    DeviceBuffer<double> zd(z.size());
    INDIM_CUDA_CHECK(
        cudaMemcpyAsync(zd.get(), z.data(), z.size() * sizeof(double), cudaMemcpyHostToDevice, s));
    INDIM_CUSOLVER_CHECK(cusolverDnDormtr_bufferSize(ctx_.cusolver(), CUBLAS_SIDE_LEFT,
                                                     CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, ni, ki,
                                                     g.get(), ni, tau.get(), zd.get(), ni, &lwork));
    INDIM_CUSOLVER_CHECK(cusolverDnDormtr(
        ctx_.cusolver(), CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, ni, ki, g.get(), ni,
        tau.get(), zd.get(), ni,
        static_cast<double*>(ctx_.workspace(sizeof(double) * static_cast<size_t>(lwork))), lwork,
        ctx_.info()));
    check_info(ctx_, label, "cusolverDnDormtr");
    cuda::reverse_columns(zd.get(), e.get(), n, keep, keep, s);
    ctx_.sync();  // zd and z are freed at scope end
  }

  template <typename T>
  Decomposition direct_device(DeviceBuffer<T>& a, int64_t out, int64_t in, Side side, int64_t keep,
                              const std::string& label, const std::string& algo) {
    if (algo == "gesvd") return gesvd_device<T>(a, out, in, side, keep, label);
    return uv_device<T>(a, out, in, side, keep, label, algo);
  }

  // W [out, in] row-major in T on the device.
  template <typename T>
  Decomposition gesvd_device(DeviceBuffer<T>& a, int64_t out, int64_t in, Side side, int64_t keep,
                             const std::string& label) {
    const int64_t r = std::min(out, in);
    const size_t count = static_cast<size_t>(out * in);
    cudaStream_t s = ctx_.stream();
    // Xgesvd needs m >= n. in >= out: use A = W^T [in, out] as it lies; W's left vectors are
    // A's right ones. in < out: transpose to W [out, in] column-major.
    const bool as_is = in >= out;
    DeviceBuffer<T> t;
    T* mat = a.get();
    if (!as_is) {
      t.grow(count);
      cuda::transpose(a.get(), t.get(), out, in, s);  // row-major [in, out] = col-major W
      mat = t.get();
    }
    const int64_t m = as_is ? in : out, n = as_is ? out : in;
    const bool want_left = side != Side::Right, want_right = side != Side::Left;
    // For A = W^T: jobvt gives W's U; for W itself: jobu gives W's U.
    const signed char jobu = (as_is ? want_right : want_left) ? 'S' : 'N';
    const signed char jobvt = (as_is ? want_left : want_right) ? 'S' : 'N';
    DeviceBuffer<T> sv(static_cast<size_t>(r)), u(static_cast<size_t>(m * r)),
        vt(static_cast<size_t>(r * n));
    size_t dev_bytes = 0, host_bytes = 0;
    const cudaDataType dt = data_type<T>();
    INDIM_CUSOLVER_CHECK(cusolverDnXgesvd_bufferSize(ctx_.cusolver(), ctx_.params(), jobu, jobvt, m,
                                                     n, dt, mat, m, dt, sv.get(), dt, u.get(), m,
                                                     dt, vt.get(), r, dt, &dev_bytes, &host_bytes));
    std::vector<unsigned char> host_work(std::max<size_t>(host_bytes, 1));
    INDIM_CUSOLVER_CHECK(cusolverDnXgesvd(ctx_.cusolver(), ctx_.params(), jobu, jobvt, m, n, dt,
                                          mat, m, dt, sv.get(), dt, u.get(), m, dt, vt.get(), r, dt,
                                          ctx_.workspace(dev_bytes), dev_bytes, host_work.data(),
                                          host_bytes, ctx_.info()));
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
  Decomposition uv_device(DeviceBuffer<T>& a, int64_t out, int64_t in, Side side, int64_t keep,
                          const std::string& label, const std::string& algo) {
    const int64_t r = std::min(out, in);
    cudaStream_t s = ctx_.stream();
    const bool as_is = in >= out;
    DeviceBuffer<T> t;
    T* mat = a.get();
    if (!as_is) {
      t.grow(static_cast<size_t>(out * in));
      cuda::transpose(a.get(), t.get(), out, in, s);
      mat = t.get();
    }
    const int64_t m = as_is ? in : out, n = as_is ? out : in;
    DeviceBuffer<T> sv(static_cast<size_t>(r)), u(static_cast<size_t>(m * r)),
        v(static_cast<size_t>(n * r));
    if (algo == "gesvdp") {
      const cudaDataType dt = data_type<T>();
      size_t dev_bytes = 0, host_bytes = 0;
      INDIM_CUSOLVER_CHECK(cusolverDnXgesvdp_bufferSize(
          ctx_.cusolver(), ctx_.params(), CUSOLVER_EIG_MODE_VECTOR, 1, m, n, dt, mat, m, dt,
          sv.get(), dt, u.get(), m, dt, v.get(), n, dt, &dev_bytes, &host_bytes));
      std::vector<unsigned char> host_work(std::max<size_t>(host_bytes, 1));
      double err_sigma = 0;  // how far sigma near zero was perturbed; not needed here
      INDIM_CUSOLVER_CHECK(cusolverDnXgesvdp(
          ctx_.cusolver(), ctx_.params(), CUSOLVER_EIG_MODE_VECTOR, 1, m, n, dt, mat, m, dt,
          sv.get(), dt, u.get(), m, dt, v.get(), n, dt, ctx_.workspace(dev_bytes), dev_bytes,
          host_work.data(), host_bytes, ctx_.info(), &err_sigma));
      check_info(ctx_, label, "cusolverDnXgesvdp");
    } else {
      gesvdjInfo_t raw = nullptr;
      INDIM_CUSOLVER_CHECK(cusolverDnCreateGesvdjInfo(&raw));
      cuda::GesvdjParams params(raw);  // default tolerance (machine eps) and 100 sweeps
      INDIM_CUSOLVER_CHECK(cusolverDnXgesvdjSetSortEig(raw, 1));
      const int mi = static_cast<int>(m), ni = static_cast<int>(n);
      int lwork = 0;
      INDIM_CUSOLVER_CHECK(
          gesvdj_size(ctx_.cusolver(), mi, ni, mat, sv.get(), u.get(), v.get(), &lwork, raw));
      INDIM_CUSOLVER_CHECK(gesvdj_run(ctx_.cusolver(), mi, ni, mat, sv.get(), u.get(), v.get(),
                                      static_cast<T*>(ctx_.workspace(sizeof(T) * lwork)), lwork,
                                      ctx_.info(), raw));
      check_info(ctx_, label, "cusolverDngesvdj");
    }
    Decomposition d;
    d.route = algo;
    std::vector<T> sig(static_cast<size_t>(r));
    INDIM_CUDA_CHECK(
        cudaMemcpyAsync(sig.data(), sv.get(), sig.size() * sizeof(T), cudaMemcpyDeviceToHost, s));
    ctx_.sync();
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

  Vectors empty_vectors(int64_t dim, int64_t count) {
    Vectors v;
    v.precision = precision_;
    v.dim = dim;
    v.count = count;
    (precision_ == Precision::F32 ? v.f32.resize(static_cast<size_t>(dim * count))
                                  : v.f64.resize(static_cast<size_t>(dim * count)));
    return v;
  }

  template <typename T>
  Similarity compare_impl(const Vectors& tuned, const Vectors& base, int64_t k, int64_t head_cols) {
    k = std::min(k, tuned.count);
    const int64_t nb = base.count, d = tuned.dim;
    head_cols = std::min(std::max<int64_t>(head_cols, 0), nb);
    Similarity sim;
    sim.head_cols = head_cols;
    if (k <= 0 || nb <= 0) return sim;
    cudaStream_t s = ctx_.stream();
    const auto& th = tuned.values<T>();
    const auto& bh = base.values<T>();
    DeviceBuffer<T> y(th.size()), x(bh.size());
    INDIM_CUDA_CHECK(
        cudaMemcpyAsync(y.get(), th.data(), th.size() * sizeof(T), cudaMemcpyHostToDevice, s));
    INDIM_CUDA_CHECK(
        cudaMemcpyAsync(x.get(), bh.data(), bh.size() * sizeof(T), cudaMemcpyHostToDevice, s));
    DeviceBuffer<double> maxcos(static_cast<size_t>(k));
    DeviceBuffer<int64_t> argmax(static_cast<size_t>(k));
    DeviceBuffer<float> head(static_cast<size_t>(std::max<int64_t>(k * head_cols, 1)));
    DeviceBuffer<unsigned char> scratch(cuda::similarity_scratch(k, nb));
    cuda::similarity(y.get(), tuned.count, x.get(), nb, d, k, maxcos.get(), argmax.get(),
                     head.get(), head_cols, scratch.get(), s);
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

  Precision precision_;
  std::string algo_;
  GpuContext ctx_;
  std::shared_ptr<detail::MemoryPool> pool_;  // the device's budget, shared by its streams
  cuda::Stream copy_stream_;
  std::vector<cuda::PinnedBuffer<unsigned char>> pinned_;
  std::vector<cuda::Event> chunk_done_;
  uint64_t staging_limit_;
  std::unique_ptr<detail::Stager<Staged>> stager_;  // last: its loader uses the members above
};

}  // namespace

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
  INDIM_CUDA_CHECK(cudaSetDevice(device));
  size_t free_bytes = 0, total_bytes = 0;
  INDIM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const uint64_t budget = gpu_mem > 0 ? gpu_mem : static_cast<uint64_t>(free_bytes * 0.9);
  streams = std::max(streams, 1);
  // Each stream stages up to 1 GiB (an eighth of its part of the budget when smaller); the
  // decompositions share the rest.
  const uint64_t staging =
      std::min<uint64_t>(1ull << 30, budget / (8 * static_cast<uint64_t>(streams)));
  auto pool = std::make_shared<detail::MemoryPool>(budget - staging * streams);
  std::vector<std::unique_ptr<Backend>> out;
  for (int s = 0; s < streams; ++s)
    out.push_back(std::make_unique<CudaBackend>(precision, algo, device, pool, staging));
  return out;
}

std::unique_ptr<Backend> make_cuda_backend(Precision precision, const std::string& algo, int device,
                                           uint64_t gpu_mem) {
  return std::move(make_cuda_backends(precision, algo, device, gpu_mem, 1).front());
}

}  // namespace indim
