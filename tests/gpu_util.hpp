// The GPU tests' guard: a test that needs a CUDA device skips without one.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "indim/backend.hpp"

namespace indim::test {

inline bool have_gpu() {
  std::string why;
  return cuda_device_count(&why) > 0;
}

}  // namespace indim::test

#define REQUIRE_GPU() \
  if (!indim::test::have_gpu()) GTEST_SKIP() << "no CUDA device"
