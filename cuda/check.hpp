// Status checks for CUDA, cuBLAS and cuSOLVER calls: throw typed indim errors carrying the call
// text, file:line and the status name. The *_WARN forms are for destructors: they report on
// stderr and never throw.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstdio>
#include <string>

#include "indim/error.hpp"

namespace indim::cuda {

const char* cusolver_status_name(cusolverStatus_t s);

inline std::string where(const char* call, const char* file, int line) {
  return std::string(call) + " at " + file + ":" + std::to_string(line);
}

}  // namespace indim::cuda

// A failed runtime call also records itself as the thread's last error, which the next
// cudaGetLastError() (every kernel check) would report: it is cleared when the failure is thrown
// or warned about, so one failed job never fails the next on the same thread. (A sticky error,
// a kernel fault, cannot be cleared: every later call fails with it until the process ends.)
#define INDIM_CUDA_CHECK(call)                                                        \
  do {                                                                                \
    const cudaError_t indim_status_ = (call);                                         \
    if (indim_status_ != cudaSuccess) {                                               \
      cudaGetLastError();                                                             \
      throw ::indim::CudaError(::indim::cuda::where(#call, __FILE__, __LINE__) +      \
                               " failed: " + cudaGetErrorName(indim_status_) + " (" + \
                               cudaGetErrorString(indim_status_) + ")");              \
    }                                                                                 \
  } while (0)

#define INDIM_CUBLAS_CHECK(call)                                                    \
  do {                                                                              \
    const cublasStatus_t indim_status_ = (call);                                    \
    if (indim_status_ != CUBLAS_STATUS_SUCCESS)                                     \
      throw ::indim::CublasError(::indim::cuda::where(#call, __FILE__, __LINE__) +  \
                                 " failed: " + cublasGetStatusName(indim_status_)); \
  } while (0)

#define INDIM_CUSOLVER_CHECK(call)                                                                 \
  do {                                                                                             \
    const cusolverStatus_t indim_status_ = (call);                                                 \
    if (indim_status_ != CUSOLVER_STATUS_SUCCESS)                                                  \
      throw ::indim::CusolverError(::indim::cuda::where(#call, __FILE__, __LINE__) + " failed: " + \
                                   ::indim::cuda::cusolver_status_name(indim_status_));            \
  } while (0)

// Destructors: report, never throw.
#define INDIM_CUDA_WARN(call)                                                            \
  do {                                                                                   \
    const cudaError_t indim_status_ = (call);                                            \
    if (indim_status_ != cudaSuccess) {                                                  \
      cudaGetLastError();                                                                \
      std::fprintf(stderr, "indim: %s at %s:%d failed: %s\n", #call, __FILE__, __LINE__, \
                   cudaGetErrorName(indim_status_));                                     \
    }                                                                                    \
  } while (0)

// After a kernel launch: the launch itself can fail (bad configuration, no device); with
// INDIM_CUDA_SYNC_CHECK defined, also wait and surface execution errors at their kernel.
#ifdef INDIM_CUDA_SYNC_CHECK
#define INDIM_KERNEL_CHECK()                   \
  do {                                         \
    INDIM_CUDA_CHECK(cudaGetLastError());      \
    INDIM_CUDA_CHECK(cudaDeviceSynchronize()); \
  } while (0)
#else
#define INDIM_KERNEL_CHECK() INDIM_CUDA_CHECK(cudaGetLastError())
#endif
