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

/// Device memory of `n` elements of T (uninitialised), allocated and freed in the order of the
/// stream it belongs to (cudaMallocAsync / cudaFreeAsync from the device's memory pool), so
/// allocating on one stream never waits for the others; grow() reallocates only to enlarge.
/// Memory may be used on another stream once that stream waits for this one (an event).
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(cudaStream_t s) : s_(s) {}
  DeviceBuffer(size_t n, cudaStream_t s) : s_(s) { grow(n); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)), s_(o.s_) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o)
      release(), p_ = std::exchange(o.p_, nullptr), n_ = std::exchange(o.n_, 0), s_ = o.s_;
    return *this;
  }
  void grow(size_t n) {
    if (n <= n_) return;
    release();
    void* p = nullptr;
    INDIM_CUDA_CHECK(cudaMallocAsync(&p, n * sizeof(T), s_));
    p_ = static_cast<T*>(p);
    n_ = n;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  void release() {
    if (p_ != nullptr) INDIM_CUDA_WARN(cudaFreeAsync(p_, s_));
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  size_t n_ = 0;
  cudaStream_t s_ = nullptr;
};

/// Makes `device` current for the calling thread and restores the previous device on leaving
/// (worker and loader threads start on device 0; library callers keep theirs).
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    INDIM_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) INDIM_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceScope() { INDIM_CUDA_WARN(cudaSetDevice(previous_)); }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
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
  cudaStream_t stream() const { return stream_.get(); }
  /// An uninitialised device buffer of n elements on this context's stream.
  template <typename T>
  DeviceBuffer<T> buffer(size_t n) const {
    return DeviceBuffer<T>(n, stream_.get());
  }
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
