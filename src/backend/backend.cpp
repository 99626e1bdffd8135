#include "indim/backend.hpp"

#include "indim/error.hpp"

namespace indim {

const char* precision_name(Precision p) { return p == Precision::F32 ? "fp32" : "fp64"; }

const char* side_name(Side s) {
  switch (s) {
    case Side::Left:
      return "left";
    case Side::Right:
      return "right";
    default:
      return "both";
  }
}

#ifdef INDIM_HAVE_CUDA
bool cuda_built() { return true; }
#else
bool cuda_built() { return false; }

int cuda_device_count(std::string* why) {
  if (why != nullptr) *why = "this build of indim has no CUDA backend";
  return 0;
}

std::unique_ptr<Backend> make_cuda_backend(Precision, const std::string&, int) {
  throw UsageError(
      "--backend cuda: this build of indim has no CUDA backend (the CUDA toolkit "
      "was not found when it was built)");
}
#endif

std::unique_ptr<Backend> make_backend(const std::string& name, Precision precision,
                                      std::string* note, const std::string& algo) {
  const bool cpu_algo = algo == "auto" || algo == "gesdd";
  const bool cuda_algo = algo == "auto" || algo == "gram64" || algo == "gesvd";
  if (!cpu_algo && !cuda_algo)
    throw UsageError("--algo must be auto, gesdd (cpu), gram64 or gesvd (cuda), not \"" + algo +
                     "\"");
  if (name == "cpu") {
    if (!cpu_algo) throw UsageError("--algo " + algo + " runs on the CUDA backend only");
    return make_cpu_backend(precision);
  }
  const std::string cuda_algo_name = algo == "auto" ? "gram64" : algo;
  if (name == "cuda") {
    if (!cuda_algo) throw UsageError("--algo " + algo + " runs on the CPU backend only");
    return make_cuda_backend(precision, cuda_algo_name, 0);
  }
  if (name == "auto") {
    std::string why;
    if (cuda_device_count(&why) > 0 && cuda_algo)
      return make_cuda_backend(precision, cuda_algo_name, 0);
    if (!cpu_algo) throw UsageError("--algo " + algo + " needs a CUDA device (" + why + ")");
    if (note != nullptr)
      *note = "indim: no usable CUDA device (" + why + "); using the CPU backend (LAPACK)";
    return make_cpu_backend(precision);
  }
  throw UsageError("--backend must be auto, cpu or cuda, not \"" + name + "\"");
}

}  // namespace indim
