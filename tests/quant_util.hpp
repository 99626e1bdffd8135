// Quantised checkpoints for the tests, written the way the producers write them, and an
// independent dequantisation: each code's value from its format's definition by a formula in
// double (not by indim's decoder, which assembles fp32 bits from a table).
#pragma once

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "indim/backend.hpp"
#include "indim/quant.hpp"
#include "indim/safetensors.hpp"

namespace indim::test {

/// A minifloat code's value from its format's definition (OCP 8-bit floats and MX, AMD's FNUZ):
/// (-1)^s 2^(e - bias) (1 + m / 2^M), subnormals 2^(1 - bias) (m / 2^M), and the format's
/// special codes.
inline double minifloat_by_formula(unsigned code, DType t) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  int E = 0, M = 0, bias = 0;
  switch (t) {
    case DType::F8_E4M3:
      E = 4, M = 3, bias = 7;
      if ((code & 0x7F) == 0x7F) return nan;
      break;
    case DType::F8_E5M2:
      E = 5, M = 2, bias = 15;
      if ((code & 0x7C) == 0x7C) return (code & 3) ? nan : ((code & 0x80) ? -inf : inf);
      break;
    case DType::F8_E4M3FNUZ:
      E = 4, M = 3, bias = 8;
      if (code == 0x80) return nan;
      break;
    case DType::F8_E5M2FNUZ:
      E = 5, M = 2, bias = 16;
      if (code == 0x80) return nan;
      break;
    case DType::F8_E8M0:
      return code == 0xFF ? nan : std::pow(2.0, static_cast<int>(code) - 127);
    case DType::F4:
      E = 2, M = 1, bias = 1;
      code &= 0xF;
      break;
    default:
      return nan;
  }
  const unsigned s = code >> (E + M), e = (code >> M) & ((1u << E) - 1), m = code & ((1u << M) - 1);
  const double frac = static_cast<double>(m) / std::pow(2.0, M);
  const double v = e == 0 ? std::pow(2.0, 1 - bias) * frac
                          : std::pow(2.0, static_cast<int>(e) - bias) * (1.0 + frac);
  return s ? -v : v;
}

/// F32 scales as stored (little-endian) back to doubles.
inline std::vector<double> f32_values(const std::vector<uint8_t>& bytes) {
  std::vector<double> v(bytes.size() / 4);
  for (size_t i = 0; i < v.size(); ++i) {
    float f;
    std::memcpy(&f, bytes.data() + 4 * i, 4);
    v[i] = f;
  }
  return v;
}

/// FP8 codes [rows, cols] times F32 block scales, by the formula.
inline Dense<double> dequantise_fp8(const Quantised& q, DType dtype, int64_t rows, int64_t cols,
                                    int64_t br, int64_t bc) {
  const std::vector<double> s = f32_values(q.scales);
  Dense<double> w{rows, cols, std::vector<double>(static_cast<size_t>(rows * cols))};
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      w.at(i, j) =
          minifloat_by_formula(q.codes[i * cols + j], dtype) * s[(i / br) * q.grid_cols + j / bc];
  return w;
}

/// MXFP4 codes (two per byte, low nibble first) times E8M0 scales per 32, by the formula.
inline Dense<double> dequantise_mxfp4(const Quantised& q, int64_t rows, int64_t cols) {
  Dense<double> w{rows, cols, std::vector<double>(static_cast<size_t>(rows * cols))};
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const size_t at = static_cast<size_t>(i * cols + j);
      const unsigned nib = (q.codes[at / 2] >> ((at % 2) * 4)) & 0xF;
      w.at(i, j) = minifloat_by_formula(nib, DType::F4) *
                   minifloat_by_formula(q.scales[i * (cols / 32) + j / 32], DType::F8_E8M0);
    }
  return w;
}

/// The weight and its `weight_scale_inv` (or `suffix`) tensors of a block-scaled FP8 weight.
inline std::vector<TensorData> fp8_tensors(const std::string& name, const Quantised& q, DType dtype,
                                           int64_t rows, int64_t cols,
                                           const std::string& suffix = "_scale_inv",
                                           std::vector<uint64_t> scale_shape = {}) {
  if (scale_shape.empty())
    scale_shape = {static_cast<uint64_t>(q.grid_rows), static_cast<uint64_t>(q.grid_cols)};
  return {{name, dtype, {static_cast<uint64_t>(rows), static_cast<uint64_t>(cols)}, q.codes},
          {name + suffix, DType::F32, scale_shape, q.scales}};
}

}  // namespace indim::test
