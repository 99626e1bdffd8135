#include <cuda_fp16.h>

#include "cuda/check.hpp"
#include "cuda/quant_kernels.cuh"

namespace indim::cuda {

namespace {

constexpr int kThreads = 256;

// A minifloat code's value, assembled as fp32 bits (every value of these formats is a normal
// fp32, or zero): sign, exponent rebased from the format's bias to 127, mantissa shifted up;
// subnormals normalised on their highest bit. NaN codes give NaN, E5M2's infinities infinity.
__device__ float code_value(unsigned code, CodeType type) {
  int e_bits = 4, m_bits = 3, bias = 7;
  if (type == CodeType::E5M2 || type == CodeType::E5M2Fnuz) e_bits = 5, m_bits = 2;
  if (type == CodeType::E4M3Fnuz) bias = 8;
  if (type == CodeType::E5M2) bias = 15;
  if (type == CodeType::E5M2Fnuz) bias = 16;
  if (type == CodeType::E2M1) e_bits = 2, m_bits = 1, bias = 1;
  const unsigned width = e_bits + m_bits + 1;
  code &= (1u << width) - 1;
  const unsigned emax = (1u << e_bits) - 1, mmax = (1u << m_bits) - 1;
  const unsigned sign = (code >> (width - 1)) << 31;
  const unsigned e = (code >> m_bits) & emax, m = code & mmax;
  if ((type == CodeType::E4M3Fnuz || type == CodeType::E5M2Fnuz) && code == 0x80)
    return __int_as_float(0x7fc00000);
  if (type == CodeType::E4M3 && e == emax && m == mmax) return __int_as_float(0x7fc00000);
  if (type == CodeType::E5M2 && e == emax)
    return __uint_as_float(sign | 0x7f800000u | (m ? 0x400000u : 0u));
  if (e != 0) return __uint_as_float(sign | ((e + 127 - bias) << 23) | (m << (23 - m_bits)));
  if (m == 0) return __uint_as_float(sign);
  const int top = 31 - __clz(m);
  return __uint_as_float(sign | (unsigned(top + 1 - bias - m_bits + 127) << 23) |
                         ((m ^ (1u << top)) << (23 - top)));
}

__device__ double scale_value(const DeviceScales& s, int64_t g) {
  switch (s.type) {
    case ScaleType::F32:
      return static_cast<const float*>(s.data)[g];
    case ScaleType::BF16:
      return __uint_as_float(unsigned(static_cast<const unsigned short*>(s.data)[g]) << 16);
    case ScaleType::F16:
      return __half2float(__ushort_as_half(static_cast<const unsigned short*>(s.data)[g]));
    default: {
      const unsigned e = static_cast<const unsigned char*>(s.data)[g];
      if (e == 0xff) return __int_as_float(0x7fc00000);
      return e == 0 ? __uint_as_float(0x00400000u) : __uint_as_float(e << 23);
    }
  }
}

__device__ bool scale_ok(double v, bool pow2) {
  if (!isfinite(v) || v < 0) return false;
  if (!pow2) return true;
  int e = 0;
  return frexp(v, &e) == 0.5;
}

// One thread per output element, grid-stride. Output (i, j) of [R, C] is stored (i, j), or
// stored (j, i) when transposing; its code is byte i * cols + j (FP8) or nibble i * cols + j of
// the packed bytes (E2M1, low nibble first), its scale grid cell (i / br, j / bc). A bad code
// reports its stored index, a bad scale its grid index, through atomicMin.
template <typename Dst>
__global__ void decode_kernel(const unsigned char* __restrict__ codes, CodeType type, int64_t rows,
                              int64_t cols, DeviceScales s, bool transpose, Dst* __restrict__ dst,
                              unsigned long long* __restrict__ first_bad,
                              unsigned long long* __restrict__ bad_scale) {
  const int64_t n = rows * cols, out_cols = transpose ? rows : cols;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t a = e / out_cols, b = e % out_cols;
    const int64_t i = transpose ? b : a, j = transpose ? a : b, from = i * cols + j;
    const unsigned code =
        type == CodeType::E2M1 ? (codes[from >> 1] >> ((from & 1) * 4)) & 0xFu : codes[from];
    const float v = code_value(code, type);
    if (!isfinite(v)) atomicMin(first_bad, static_cast<unsigned long long>(from));
    const int64_t g = (i / s.block_rows) * s.grid_cols + j / s.block_cols;
    const double sc = scale_value(s, g);
    if (!scale_ok(sc, s.pow2)) atomicMin(bad_scale, static_cast<unsigned long long>(g));
    dst[e] = static_cast<Dst>(static_cast<double>(v) * sc);
  }
}

}  // namespace

template <typename Dst>
void decode_quantised(const void* codes, CodeType type, int64_t rows, int64_t cols,
                      const DeviceScales& scales, bool transpose, Dst* dst,
                      unsigned long long* first_bad, unsigned long long* bad_scale,
                      cudaStream_t s) {
  INDIM_CUDA_CHECK(cudaMemsetAsync(first_bad, 0xff, sizeof *first_bad, s));
  INDIM_CUDA_CHECK(cudaMemsetAsync(bad_scale, 0xff, sizeof *bad_scale, s));
  const int64_t n = rows * cols;
  if (n == 0) return;
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  decode_kernel<Dst><<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kThreads, 0, s>>>(
      static_cast<const unsigned char*>(codes), type, rows, cols, scales, transpose, dst, first_bad,
      bad_scale);
  INDIM_KERNEL_CHECK();
}

template void decode_quantised<float>(const void*, CodeType, int64_t, int64_t, const DeviceScales&,
                                      bool, float*, unsigned long long*, unsigned long long*,
                                      cudaStream_t);
template void decode_quantised<double>(const void*, CodeType, int64_t, int64_t, const DeviceScales&,
                                       bool, double*, unsigned long long*, unsigned long long*,
                                       cudaStream_t);

}  // namespace indim::cuda
