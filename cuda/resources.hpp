// Move-only RAII owners of CUDA resources, and the per-device context that binds the cuBLAS
// and cuSOLVER handles to its stream once, at creation.
#pragma once

#include <cstddef>
#include <memory>
#include <utility>

#include "cuda/check.hpp"
#include "cuda/device_scope.hpp"

namespace indim::cuda {

// Owns one resource handle; Destroy is the function that releases it.
template <typename H, void (*Destroy)(H)>
class Owned {
 public:
  Owned() = default;
  explicit Owned(H h) : h_(h) {}
  ~Owned() { reset(); }
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  Owned(Owned&& o) noexcept : h_(std::exchange(o.h_, H{})) {}
  Owned& operator=(Owned&& o) noexcept {
    if (this != &o) reset(), h_ = std::exchange(o.h_, H{});
    return *this;
  }
  H get() const { return h_; }
  void reset() {
    if (h_ != H{}) Destroy(std::exchange(h_, H{}));
  }

 private:
  H h_{};
};

void destroy_stream(cudaStream_t s);
void destroy_event(cudaEvent_t e);
void destroy_cublas(cublasHandle_t h);
void destroy_cusolver(cusolverDnHandle_t h);
void destroy_params(cusolverDnParams_t p);
void destroy_gesvdj(gesvdjInfo_t p);
void destroy_mem_pool(cudaMemPool_t p);

using Stream = Owned<cudaStream_t, destroy_stream>;
using Event = Owned<cudaEvent_t, destroy_event>;
using CublasHandle = Owned<cublasHandle_t, destroy_cublas>;
using CusolverHandle = Owned<cusolverDnHandle_t, destroy_cusolver>;
using SolverParams = Owned<cusolverDnParams_t, destroy_params>;
using GesvdjParams = Owned<gesvdjInfo_t, destroy_gesvdj>;
using MemPool = Owned<cudaMemPool_t, destroy_mem_pool>;

/// @brief A private stream-ordered memory pool on `device` (as RMM's async resource keeps one),
/// keeping up to `keep_bytes` once freed so a run's allocations are served from it. Every
/// backend of a run on that device shares it; when the last one goes the pool is destroyed and
/// its memory returns to the device (once the frees queued on its streams have run), so the
/// next run measures the device's free memory truly, and whoever else uses the device's
/// default pool in the process (PyTorch's async allocator) never sees indim's peak.
std::shared_ptr<MemPool> make_device_pool(int device, uint64_t keep_bytes);

/// Where device memory comes from and in which stream's order it is allocated and freed.
struct Place {
  cudaStream_t stream = nullptr;
  cudaMemPool_t pool = nullptr;
};

/// Device memory of `n` elements of T (uninitialised), allocated from a pool and freed in the
/// order of the stream it belongs to (cudaMallocFromPoolAsync / cudaFreeAsync), so allocating
/// on one stream never waits for the others; grow() reallocates only to enlarge. Memory may be
/// used on another stream once that stream waits for this one (an event).
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(Place at) : at_(at) {}
  DeviceBuffer(size_t n, Place at) : at_(at) { grow(n); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)), at_(o.at_) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o)
      release(), p_ = std::exchange(o.p_, nullptr), n_ = std::exchange(o.n_, 0), at_ = o.at_;
    return *this;
  }
  void grow(size_t n) {
    if (n <= n_) return;
    release();
    void* p = nullptr;
    INDIM_CUDA_CHECK(cudaMallocFromPoolAsync(&p, n * sizeof(T), at_.pool, at_.stream));
    p_ = static_cast<T*>(p);
    n_ = n;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }
  Place place() const { return at_; }

 private:
  void release() {
    if (p_ != nullptr) INDIM_CUDA_WARN(cudaFreeAsync(p_, at_.stream));
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  size_t n_ = 0;
  Place at_;
};

/// The CUDA runtime's device calls, as detail::BasicDeviceScope uses them.
struct RuntimeDevices {
  int current() const;
  void select(int device) const;
  void restore(int device) const noexcept;
  /// Whether the calling thread has a current context (the driver's cuCtxGetCurrent, reached
  /// through the runtime); true when that cannot be asked, so the scope then restores.
  bool has_context() const noexcept;
};

/// Makes a device current for a scope; see detail::BasicDeviceScope for what it restores.
using DeviceScope = detail::BasicDeviceScope<RuntimeDevices>;

/// Whether `device`'s primary context is active, i.e. this process uses that device already.
/// Asking creates nothing. False when it cannot be asked.
bool device_in_use(int device) noexcept;

/// Page-locked host memory, for copies that overlap compute.
template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t n) {
    void* p = nullptr;
    INDIM_CUDA_CHECK(cudaMallocHost(&p, n * sizeof(T)));
    p_ = static_cast<T*>(p);
    n_ = n;
  }
  ~PinnedBuffer() {
    if (p_ != nullptr) INDIM_CUDA_WARN(cudaFreeHost(p_));
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

/// One device's stream, its cuBLAS and cuSOLVER handles (bound to that stream), solver params
/// and `info`, and the device's pool its buffers come from.
class GpuContext {
 public:
  GpuContext(int device, std::shared_ptr<MemPool> pool);
  /// Waits for its stream's work (the frees queued on it among them) before its handles and
  /// its share of the pool go: the last context of a run then returns the pool's memory at once.
  ~GpuContext();
  GpuContext(const GpuContext&) = delete;
  GpuContext& operator=(const GpuContext&) = delete;
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_.get(); }
  /// Where this context's buffers come from: its stream, its device's pool.
  Place place() const { return {stream_.get(), pool_->get()}; }
  /// Where buffers on another stream of this device come from (the copy stream's).
  Place place_on(cudaStream_t s) const { return {s, pool_->get()}; }
  /// An uninitialised device buffer of n elements on this context's stream.
  template <typename T>
  DeviceBuffer<T> buffer(size_t n) const {
    return DeviceBuffer<T>(n, place());
  }
  cublasHandle_t cublas() const { return cublas_.get(); }
  cusolverDnHandle_t cusolver() const { return cusolver_.get(); }
  cusolverDnParams_t params() const { return params_.get(); }
  /// A solver's device workspace of at least `bytes`, held by the caller for the call only: it
  /// goes back to the pool when the call is done instead of staying at its largest size for
  /// the backend's life, and the call's lease covers it.
  DeviceBuffer<unsigned char> workspace(size_t bytes) const;
  int* info() const { return info_.get(); }
  /// Waits for the stream; errors of earlier asynchronous work surface here.
  void sync() const;

 private:
  int device_;
  std::shared_ptr<MemPool> pool_;  // first: every buffer below is freed into it
  Stream stream_;
  CublasHandle cublas_;
  CusolverHandle cusolver_;
  SolverParams params_;
  DeviceBuffer<int> info_;
};

}  // namespace indim::cuda
