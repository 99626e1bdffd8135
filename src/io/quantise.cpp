// The producers' weight quantisers: FP8 with an amax scale per block (DeepSeek-V3's and Qwen3's
// `weight_quant`, compressed-tensors' per channel and per tensor), and MXFP4 as OCP MX specifies
// and gpt-oss stores. Used by the noise floor and to generate quantised checkpoints.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "indim/error.hpp"
#include "indim/quant.hpp"

namespace indim {

namespace {

void put_f32(std::vector<uint8_t>& out, size_t at, float v) {
  std::memcpy(out.data() + 4 * at, &v, 4);  // little-endian hosts only, as the readers
}

// The largest finite value of an FP8 dtype.
float fp8_max(DType dtype) {
  float m = 0;
  const float* t = minifloat_table(dtype);
  for (int c = 0; c < 256; ++c)
    if (std::isfinite(t[c])) m = std::max(m, t[c]);
  return m;
}

}  // namespace

Quantised quantise_fp8(const std::vector<double>& w, int64_t rows, int64_t cols, DType dtype,
                       int64_t block_rows, int64_t block_cols, bool ue8m0) {
  if (!dtype_is_minifloat(dtype) || dtype == DType::F4 || dtype == DType::F8_E8M0)
    throw Error(std::string("quantise_fp8: ") + dtype_name(dtype) + " is not an FP8 dtype");
  if (block_rows < 1 || block_cols < 1 || static_cast<int64_t>(w.size()) != rows * cols)
    throw Error("quantise_fp8: inconsistent shape or block");
  Quantised q;
  q.grid_rows = (rows + block_rows - 1) / block_rows;
  q.grid_cols = (cols + block_cols - 1) / block_cols;
  q.codes.resize(static_cast<size_t>(rows * cols));
  q.scales.resize(static_cast<size_t>(q.grid_rows * q.grid_cols) * 4);
  const float top = fp8_max(dtype);
  for (int64_t bi = 0; bi < q.grid_rows; ++bi)
    for (int64_t bj = 0; bj < q.grid_cols; ++bj) {
      const int64_t r1 = std::min(rows, (bi + 1) * block_rows);
      const int64_t c1 = std::min(cols, (bj + 1) * block_cols);
      double amax = 0;
      for (int64_t i = bi * block_rows; i < r1; ++i)
        for (int64_t j = bj * block_cols; j < c1; ++j)
          amax = std::max(amax, std::fabs(w[i * cols + j]));
      float scale = amax > 0 ? static_cast<float>(amax / top) : 1.0f;
      if (ue8m0) scale = std::ldexp(1.0f, static_cast<int>(std::ceil(std::log2(scale))));
      put_f32(q.scales, static_cast<size_t>(bi * q.grid_cols + bj), scale);
      for (int64_t i = bi * block_rows; i < r1; ++i)
        for (int64_t j = bj * block_cols; j < c1; ++j)
          q.codes[i * cols + j] =
              float_to_minifloat(static_cast<float>(w[i * cols + j] / scale), dtype);
    }
  return q;
}

Quantised quantise_mxfp4(const std::vector<double>& w, int64_t rows, int64_t cols) {
  if (cols % 32 != 0 || static_cast<int64_t>(w.size()) != rows * cols)
    throw Error("quantise_mxfp4: columns must be a multiple of 32");
  Quantised q;
  q.grid_rows = rows;
  q.grid_cols = cols / 32;
  q.codes.assign(static_cast<size_t>(rows * cols / 2), 0);
  q.scales.resize(static_cast<size_t>(rows * q.grid_cols));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t b = 0; b < q.grid_cols; ++b) {
      const double* x = w.data() + i * cols + b * 32;
      double amax = 0;
      for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(x[k]));
      // E2M1's largest power of two is 2^2: the shared exponent puts amax in [4, 8).
      int e = amax > 0 ? static_cast<int>(std::floor(std::log2(amax))) - 2 : -127;
      e = std::clamp(e, -127, 127);
      q.scales[static_cast<size_t>(i * q.grid_cols + b)] = static_cast<uint8_t>(e + 127);
      for (int k = 0; k < 32; ++k) {
        const uint8_t c = float_to_minifloat(static_cast<float>(std::ldexp(x[k], -e)), DType::F4);
        const size_t at = static_cast<size_t>(i * cols + b * 32 + k);
        q.codes[at >> 1] |= static_cast<uint8_t>(c << ((at & 1) * 4));
      }
    }
  return q;
}

}  // namespace indim
