// The GPU tests' guard: skip where no CUDA device is usable, except under INDIM_REQUIRE_GPU=1
// (the device check sets it on the GPU machine), where a test that finds no device fails, so
// "all skipped" never reads as "all passed" (an old driver, a hidden GPU).
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "indim/backend.hpp"

namespace indim::test {

inline bool gpu_required() {
  const char* v = std::getenv("INDIM_REQUIRE_GPU");
  return v != nullptr && std::string(v) == "1";
}

inline bool have_gpu() {
  std::string why;
  return cuda_device_count(&why) > 0;
}

}  // namespace indim::test

#define REQUIRE_GPU()                                                      \
  do {                                                                     \
    std::string why_;                                                      \
    if (::indim::cuda_device_count(&why_) > 0) break;                      \
    if (::indim::test::gpu_required())                                     \
      FAIL() << "INDIM_REQUIRE_GPU=1 but no usable CUDA device: " << why_; \
    GTEST_SKIP() << "no CUDA device (" << why_ << ")";                     \
  } while (0)
