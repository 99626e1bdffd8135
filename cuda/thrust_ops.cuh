// Device steps Thrust does as well as a hand-written kernel: searches and reorderings. They run
// on the caller's stream, with temporary storage from the caller's pool in that stream's order.
#pragma once

#include <cstdint>

#include "cuda/resources.hpp"

namespace indim::cuda {

/// The smallest index i < n with w[i] not finite (with `fp32_range`: not finite as a float), or
/// n when every value is. Waits for the stream (the answer is needed on the host).
template <typename T>
int64_t first_non_finite(const T* w, int64_t n, Place at, bool fp32_range = false);

/// Column-major src [rows, n] (ld = rows) -> column-major dst [rows, keep] holding src's columns
/// in reverse order: dst[:, j] = src[:, n - 1 - j] (eigenvectors come ascending). Does not wait.
void reverse_columns(const double* src, double* dst, int64_t rows, int64_t n, int64_t keep,
                     Place at);

}  // namespace indim::cuda
