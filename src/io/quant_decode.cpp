// Quantised matrices decoded on the host: each code's value from its format's table, times the
// scale of its block. The CPU backend's conversion, and the reference the device's is tested
// against.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/finite.hpp"
#include "indim/error.hpp"
#include "indim/quant.hpp"

namespace indim {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

const char* quant_format_name(QuantFormat f) {
  switch (f) {
    case QuantFormat::Fp8Block:
      return "fp8-block";
    case QuantFormat::Fp8Channel:
      return "fp8-channel";
    case QuantFormat::Fp8Tensor:
      return "fp8-tensor";
    case QuantFormat::Mxfp4:
      return "mxfp4";
    default:
      return "no-scale";
  }
}

size_t QuantScales::bytes() const {
  return static_cast<size_t>(grid_rows * grid_cols) * static_cast<size_t>(dtype_bits(dtype) / 8);
}

QuantScales QuantRef::scales_for(int64_t slice, int64_t rows, int64_t cols) const {
  QuantScales s;
  if (format == QuantFormat::NoScale) return s;
  s.dtype = scale.info->dtype;
  s.block_rows = block_rows == 0 ? rows : block_rows;
  s.block_cols = block_cols == 0 ? cols : block_cols;
  s.grid_rows = ceil_div(rows, s.block_rows);
  s.grid_cols = ceil_div(cols, s.block_cols);
  s.pow2 = pow2;
  s.data = scale.file->data(*scale.info) + (slice < 0 ? 0 : static_cast<size_t>(slice) * s.bytes());
  s.label = scale.file->path() + ": tensor '" + scale.info->name + "'";
  return s;
}

std::string QuantRef::describe() const {
  if (format == QuantFormat::NoScale) return "not analysable: " + problem;
  std::string d = quant_format_name(format);
  if (format == QuantFormat::Fp8Block)
    d += " " + std::to_string(block_rows) + "x" + std::to_string(block_cols);
  d += ", scale " + scale.info->name + " " + dtype_name(scale.info->dtype) + " " +
       shape_text(scale.info->shape);
  if (pow2) d += " (ue8m0)";
  return d;
}

void decode_codes(const uint8_t* src, DType dtype, size_t first, size_t n, float* dst) {
  const float* table = minifloat_table(dtype);
  if (dtype != DType::F4) {
    for (size_t i = 0; i < n; ++i) dst[i] = table[src[first + i]];
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    const size_t c = first + i;
    dst[i] = table[(src[c >> 1] >> ((c & 1) * 4)) & 0xF];
  }
}

namespace {

// The grid's scales as doubles, each checked: finite, not negative, and a power of two where
// scale_fmt says ue8m0.
std::vector<double> scale_values(const QuantScales& s) {
  const size_t n = static_cast<size_t>(s.grid_rows * s.grid_cols);
  std::vector<double> v(n);
  if (s.dtype == DType::U8 || s.dtype == DType::F8_E8M0) {
    for (size_t i = 0; i < n; ++i) v[i] = minifloat_to_float(s.data[i], DType::F8_E8M0);
  } else {
    convert_elements(s.data, s.dtype, n, v.data());
  }
  for (size_t i = 0; i < n; ++i) {
    int e = 0;
    const bool pow2 = std::frexp(v[i], &e) == 0.5;
    if (!std::isfinite(v[i]) || v[i] < 0 || (s.pow2 && !pow2))
      throw BadInput(InputProblem::NonFinite,
                     s.label + " holds the scale " + std::to_string(v[i]) + " at " +
                         detail::matrix_index_text(i, s.grid_cols) +
                         (s.pow2 && std::isfinite(v[i]) && v[i] >= 0
                              ? ", not a power of two as scale_fmt ue8m0 says"
                              : ", which is not a finite non-negative number"));
  }
  return v;
}

}  // namespace

template <typename T>
void decode_quantised(const uint8_t* codes, DType dtype, int64_t rows, int64_t cols,
                      const QuantScales& scales, bool transpose, const std::string& label,
                      std::vector<T>& dst) {
  const std::vector<double> sv = scale_values(scales);
  dst.resize(static_cast<size_t>(rows * cols));
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t i = 0; i < rows; ++i) {
    decode_codes(codes, dtype, static_cast<size_t>(i * cols), static_cast<size_t>(cols),
                 row.data());
    const size_t bad = detail::first_non_finite(row.data(), row.size());
    if (bad < row.size())
      throw BadInput(
          InputProblem::NonFinite,
          label + " holds a non-finite value at " +
              detail::matrix_index_text(static_cast<size_t>(i) * row.size() + bad, cols));
    const double* srow = sv.data() + (i / scales.block_rows) * scales.grid_cols;
    for (int64_t b = 0; b < scales.grid_cols; ++b) {
      const double sc = srow[b];
      const int64_t end = std::min(cols, (b + 1) * scales.block_cols);
      if (transpose)
        for (int64_t j = b * scales.block_cols; j < end; ++j)
          dst[static_cast<size_t>(j * rows + i)] = static_cast<T>(row[j] * sc);
      else
        for (int64_t j = b * scales.block_cols; j < end; ++j)
          dst[static_cast<size_t>(i * cols + j)] = static_cast<T>(row[j] * sc);
    }
  }
}

template void decode_quantised<float>(const uint8_t*, DType, int64_t, int64_t, const QuantScales&,
                                      bool, const std::string&, std::vector<float>&);
template void decode_quantised<double>(const uint8_t*, DType, int64_t, int64_t, const QuantScales&,
                                       bool, const std::string&, std::vector<double>&);

}  // namespace indim
