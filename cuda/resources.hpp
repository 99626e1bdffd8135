// Move-only RAII owners of CUDA resources, and the per-device context that binds the cuBLAS
// and cuSOLVER handles to its stream once, at creation.
#pragma once

#include <cstddef>
#include <utility>

#include "cuda/check.hpp"

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

using Stream = Owned<cudaStream_t, destroy_stream>;
using Event = Owned<cudaEvent_t, destroy_event>;
using CublasHandle = Owned<cublasHandle_t, destroy_cublas>;
using CusolverHandle = Owned<cusolverDnHandle_t, destroy_cusolver>;
using SolverParams = Owned<cusolverDnParams_t, destroy_params>;
using GesvdjParams = Owned<gesvdjInfo_t, destroy_gesvdj>;

/// Device memory of `n` elements of T (uninitialised); grow() reallocates only to enlarge.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) { grow(n); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) release(), p_ = std::exchange(o.p_, nullptr), n_ = std::exchange(o.n_, 0);
    return *this;
  }
  void grow(size_t n) {
    if (n <= n_) return;
    release();
    void* p = nullptr;
    INDIM_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
    p_ = static_cast<T*>(p);
    n_ = n;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  void release() {
    if (p_ != nullptr) INDIM_CUDA_WARN(cudaFree(p_));
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  size_t n_ = 0;
};

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

/// One device's stream, its cuBLAS and cuSOLVER handles (bound to that stream), solver params,
/// and a grow-only solver workspace.
class GpuContext {
 public:
  explicit GpuContext(int device);
  int device() const { return device_; }
  /// Makes this context's device current for the calling thread (worker and loader threads
  /// start on device 0).
  void activate() const;
  cudaStream_t stream() const { return stream_.get(); }
  cublasHandle_t cublas() const { return cublas_.get(); }
  cusolverDnHandle_t cusolver() const { return cusolver_.get(); }
  cusolverDnParams_t params() const { return params_.get(); }
  /// Device workspace of at least `bytes`.
  void* workspace(size_t bytes);
  int* info() const { return info_.get(); }
  /// Waits for the stream; errors of earlier asynchronous work surface here.
  void sync() const;

 private:
  int device_;
  Stream stream_;
  CublasHandle cublas_;
  CusolverHandle cusolver_;
  SolverParams params_;
  DeviceBuffer<unsigned char> workspace_;
  DeviceBuffer<int> info_;
};

}  // namespace indim::cuda
