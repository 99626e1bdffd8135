// The per-device context (stream, handles bound to it, per-call workspaces from the device's
// private pool), the pool itself, the device calls the scope makes, and the destroy functions of
// the RAII owners; the status names that errors print.
#include <cuda.h>

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
void destroy_mem_pool(cudaMemPool_t p) { INDIM_CUDA_WARN(cudaMemPoolDestroy(p)); }

std::shared_ptr<MemPool> make_device_pool(int device, uint64_t keep_bytes) {
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  cudaMemPool_t p = nullptr;
  INDIM_CUDA_CHECK(cudaMemPoolCreate(&p, &props));
  auto pool = std::make_shared<MemPool>(p);
  INDIM_CUDA_CHECK(cudaMemPoolSetAttribute(p, cudaMemPoolAttrReleaseThreshold, &keep_bytes));
  return pool;
}

namespace {

// The driver's calls the runtime does not offer, looked up once through the runtime (so the
// binary still loads and runs where there is no driver). Null where the lookup failed.
using CtxGetCurrent = CUresult (*)(CUcontext* ctx);
using DeviceGet = CUresult (*)(CUdevice* dev, int ordinal);
using PrimaryCtxGetState = CUresult (*)(CUdevice dev, unsigned int* flags, int* active);

template <typename Fn>
Fn driver_call(const char* name) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found{};
  if (cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &found) !=
          cudaSuccess ||
      found != cudaDriverEntryPointSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  return reinterpret_cast<Fn>(fn);
}

}  // namespace

int RuntimeDevices::current() const {
  int d = 0;
  INDIM_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

void RuntimeDevices::select(int device) const { INDIM_CUDA_CHECK(cudaSetDevice(device)); }

void RuntimeDevices::restore(int device) const noexcept { INDIM_CUDA_WARN(cudaSetDevice(device)); }

bool RuntimeDevices::has_context() const noexcept {
  static const CtxGetCurrent get = driver_call<CtxGetCurrent>("cuCtxGetCurrent");
  CUcontext ctx = nullptr;
  return get == nullptr || get(&ctx) != CUDA_SUCCESS || ctx != nullptr;
}

bool device_in_use(int device) noexcept {
  static const DeviceGet get = driver_call<DeviceGet>("cuDeviceGet");
  static const PrimaryCtxGetState state =
      driver_call<PrimaryCtxGetState>("cuDevicePrimaryCtxGetState");
  CUdevice dev = 0;
  unsigned int flags = 0;
  int active = 0;
  return get != nullptr && state != nullptr && get(&dev, device) == CUDA_SUCCESS &&
         state(dev, &flags, &active) == CUDA_SUCCESS && active != 0;
}

GpuContext::GpuContext(int device, std::shared_ptr<MemPool> pool)
    : device_(device), pool_(std::move(pool)) {
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
  info_ = DeviceBuffer<int>(1, place());
}

GpuContext::~GpuContext() {
  info_ = DeviceBuffer<int>();
  if (stream_.get() != nullptr) INDIM_CUDA_WARN(cudaStreamSynchronize(stream_.get()));
}

DeviceBuffer<unsigned char> GpuContext::workspace(size_t bytes) const {
  return buffer<unsigned char>(std::max<size_t>(bytes, 1));
}

void GpuContext::sync() const { INDIM_CUDA_CHECK(cudaStreamSynchronize(stream_.get())); }

}  // namespace indim::cuda
