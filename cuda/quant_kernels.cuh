// The device's decoding of quantised weights: FP8 codes (E4M3, E5M2 and their FNUZ variants)
// or MXFP4's E2M1 codes (two per byte, low nibble first), each times the scale of its block,
// in the conversion that puts a stored matrix on the device. The host's decoder
// (src/io/quant_decode.cpp) is the reference the GPU tests compare with.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace indim::cuda {

/// Code formats the device decodes (the codes' dtype).
enum class CodeType : int { E4M3 = 0, E5M2 = 1, E4M3Fnuz = 2, E5M2Fnuz = 3, E2M1 = 4 };
/// Scale formats: values (F32, BF16, F16) or E8M0 exponents (2^(e - 127)).
enum class ScaleType : int { F32 = 0, BF16 = 1, F16 = 2, E8M0 = 3 };

/// A matrix's scale grid on the device: scale (i / block_rows, j / block_cols) of the
/// row-major [grid_rows, grid_cols] at `data`.
struct DeviceScales {
  const void* data = nullptr;
  ScaleType type = ScaleType::F32;
  int64_t block_rows = 1, block_cols = 1, grid_rows = 1, grid_cols = 1;
  bool pow2 = false;  ///< every scale must be a power of two (scale_fmt ue8m0)
};

/// Codes row-major [rows, cols] times their scales, to Dst row-major [rows, cols] or, with
/// `transpose`, [cols, rows]. *first_bad receives the smallest stored index of a non-finite
/// code, *bad_scale the smallest grid index of a non-finite, negative or (pow2) not
/// power-of-two scale (ULLONG_MAX when none); the launcher resets both first.
template <typename Dst>
void decode_quantised(const void* codes, CodeType type, int64_t rows, int64_t cols,
                      const DeviceScales& scales, bool transpose, Dst* dst,
                      unsigned long long* first_bad, unsigned long long* bad_scale, cudaStream_t s);

}  // namespace indim::cuda
