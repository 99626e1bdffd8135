// The CUDA error macros (cuda/check.hpp) leave no error behind them: a failed call that was
// thrown or warned about is not reported again by the next check on the same thread (a kernel
// launch's cudaGetLastError), so one failed job never fails the next one; and a device error of a
// decomposition names the matrix and its shape. The first two need a device: without a driver
// the runtime reports its failed initialisation to every call, cudaGetLastError included, so
// there is no clear state to return to.
#include "cuda/check.hpp"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "cuda/cuda_backend.hpp"
#include "gpu_util.hpp"
#include "indim/backend.hpp"
#include "indim/error.hpp"

using namespace indim;

namespace {

// A call that fails on every machine: a device past the last one.
cudaError_t failing_call() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) n = 0;
  return cudaSetDevice(n + 7);
}

}  // namespace

TEST(CudaCheck, AThrownFailureLeavesNoLastError) {
  REQUIRE_GPU();
  cudaGetLastError();
  try {
    INDIM_CUDA_CHECK(failing_call());
    FAIL() << "no error";
  } catch (const CudaError& e) {
    EXPECT_NE(std::string(e.what()).find("failing_call()"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("check_test.cpp:"), std::string::npos) << e.what();
  }
  EXPECT_EQ(cudaPeekAtLastError(), cudaSuccess)
      << "the failure would fail the next kernel check on this thread";
  EXPECT_NO_THROW(INDIM_KERNEL_CHECK());
}

TEST(CudaCheck, AWarnedFailureLeavesNoLastError) {
  REQUIRE_GPU();
  cudaGetLastError();
  testing::internal::CaptureStderr();
  INDIM_CUDA_WARN(failing_call());
  const std::string warned = testing::internal::GetCapturedStderr();
  EXPECT_NE(warned.find("failing_call() at"), std::string::npos) << warned;
  EXPECT_EQ(cudaPeekAtLastError(), cudaSuccess);
}

TEST(CudaCheck, ADecompositionsDeviceErrorNamesTheMatrixItsShapeAndAlgorithm) {
  // How CudaBackend::dispatch rethrows what a call inside a decomposition threw: same type, the
  // matrix in front; a solver's info failure, which names the matrix already, not twice.
  auto rethrown = [](auto thrown) -> std::string {
    try {
      try {
        throw thrown;
      } catch (const Error&) {
        cuda::rethrow_naming("model.layers.0.mlp.up_proj.weight", 11008, 4096, "gram64");
      }
    } catch (const decltype(thrown)& e) {
      return e.what();
    } catch (const std::exception& e) {
      return std::string("wrong type: ") + e.what();
    }
    return "nothing thrown";
  };
  EXPECT_EQ(rethrown(CudaError("cudaMallocFromPoolAsync(...) at x.cpp:1 failed: "
                               "cudaErrorMemoryAllocation (out of memory)")),
            "model.layers.0.mlp.up_proj.weight [11008 x 4096], gram64: cudaMallocFromPoolAsync"
            "(...) at x.cpp:1 failed: cudaErrorMemoryAllocation (out of memory)");
  EXPECT_EQ(rethrown(CusolverError("model.layers.0.mlp.up_proj.weight: cusolverDnXsyevd failed "
                                   "(info 3)")),
            "model.layers.0.mlp.up_proj.weight [11008 x 4096], gram64: cusolverDnXsyevd failed "
            "(info 3)");
  EXPECT_EQ(rethrown(CublasError("cublasDsyrk(...) failed: CUBLAS_STATUS_EXECUTION_FAILED")),
            "model.layers.0.mlp.up_proj.weight [11008 x 4096], gram64: cublasDsyrk(...) failed: "
            "CUBLAS_STATUS_EXECUTION_FAILED");
}
