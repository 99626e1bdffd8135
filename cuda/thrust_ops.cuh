// Device steps Thrust does as well as a hand-written kernel: searches and reorderings. They run
// on the caller's stream, with temporary storage allocated on that stream.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace indim::cuda {

/// The smallest index i < n with w[i] not finite, or n when every value is finite. Waits for
/// the stream (the answer is needed on the host).
template <typename T>
int64_t first_non_finite(const T* w, int64_t n, cudaStream_t s);

/// Column-major src [rows, n] (ld = rows) -> column-major dst [rows, keep] holding src's columns
/// in reverse order: dst[:, j] = src[:, n - 1 - j] (eigenvectors come ascending). Does not wait.
void reverse_columns(const double* src, double* dst, int64_t rows, int64_t n, int64_t keep,
                     cudaStream_t s);

}  // namespace indim::cuda
