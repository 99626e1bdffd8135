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

std::unique_ptr<Backend> make_backend(const std::string& name, Precision precision,
                                      std::string* note) {
  if (name == "cpu") return make_cpu_backend(precision);
  if (name == "auto") {
    if (note != nullptr)
      *note = "indim: no CUDA backend in this build; using the CPU backend (LAPACK)";
    return make_cpu_backend(precision);
  }
  if (name == "cuda") throw UsageError("--backend cuda: this build of indim has no CUDA backend");
  throw UsageError("--backend must be auto, cpu or cuda, not \"" + name + "\"");
}

}  // namespace indim
