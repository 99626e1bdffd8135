// The per-device context (stream, handles bound to it, workspace) and the destroy functions of
// the RAII owners; the status names that errors print.
#include <algorithm>

#include "cuda/resources.hpp"

namespace indim::cuda {

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
  const DeviceScope scope(device);
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
  workspace_ = DeviceBuffer<unsigned char>(s);
  info_ = DeviceBuffer<int>(1, s);
}

void* GpuContext::workspace(size_t bytes) {
  workspace_.grow(std::max<size_t>(bytes, 1));
  return workspace_.get();
}

void GpuContext::sync() const { INDIM_CUDA_CHECK(cudaStreamSynchronize(stream_.get())); }

}  // namespace indim::cuda
