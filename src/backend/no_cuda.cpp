// The CUDA entry points of a build without the CUDA backend: zero devices, and a usage error
// for anyone who asks for one.
#include "indim/backend.hpp"
#include "indim/error.hpp"

namespace indim {

bool cuda_built() { return false; }

int cuda_device_count(std::string* why) {
  if (why != nullptr) *why = "this build of indim has no CUDA backend";
  return 0;
}

std::string cuda_device_name(int) { return {}; }

std::vector<DeviceMemoryInfo> cuda_memory_info() { return {}; }

std::vector<std::unique_ptr<Backend>> make_cuda_backends(Precision, const std::string&, int,
                                                         uint64_t, int) {
  throw UsageError(
      "--backend cuda: this build of indim has no CUDA backend (the CUDA toolkit "
      "was not found when it was built)");
}

std::unique_ptr<Backend> make_cuda_backend(Precision precision, const std::string& algo, int device,
                                           uint64_t gpu_mem) {
  return std::move(make_cuda_backends(precision, algo, device, gpu_mem, 1).front());
}

}  // namespace indim
