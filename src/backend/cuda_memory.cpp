// The device memory estimate the CUDA backend's budget uses; host arithmetic only, so planning
// and tests use it in builds without CUDA too.
#include <algorithm>

#include "indim/backend.hpp"

namespace indim {

uint64_t cuda_bytes_needed(const std::string& algo, Precision precision, int64_t rows, int64_t cols,
                           int64_t keep, int stored_width) {
  const double m = static_cast<double>(std::max(rows, cols));
  const double n = static_cast<double>(std::min(rows, cols));
  const double k =
      static_cast<double>(keep <= 0 ? n : std::min<int64_t>(keep, std::min(rows, cols)));
  const double t = precision == Precision::F32 ? 4 : 8;
  const double w = stored_width > 0 ? stored_width : t;  // the input as it crosses
  double bytes;
  if (algo == "gram64")  // fp64 copy + staged input, Gram, syevd workspace (~2 n^2), vectors
    bytes = 8 * m * n + w * m * n + 8 * n * n + 16 * n * n + 8 * n * k + 8 * m * k + t * m * k;
  else if (algo == "gesvdp")  // as gesvd, with U and V and 1.66x gesvd's workspace
    bytes = t * (2 * m * n + m * n + n * n + 2 * (m + n) * n);
  else if (algo == "gesvdj")  // input + transposed copy, U, V, Jacobi workspace (~ m n + n^2)
    bytes = t * (2 * m * n + m * n + n * n + m * n + n * n);
  else  // gesvd: input + transposed copy, U, VT, workspace (~ (m + n) n)
    bytes = t * (2 * m * n + m * n + n * n + (m + n) * n);
  return static_cast<uint64_t>(bytes) + (64ull << 20);  // handles, small buffers
}

}  // namespace indim
