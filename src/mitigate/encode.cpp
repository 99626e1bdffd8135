#include "mitigate/encode.hpp"

#include <cmath>
#include <cstring>
#include <limits>

#include "indim/error.hpp"

namespace indim::detail {

namespace {

// x rounded (ties to even) to the target format's grid: `bits` significant bits for a normal
// value of x's size, and below 2^min_exp the subnormals' fixed step 2^(min_exp - bits + 1).
// The result is exact in fp32, so the conversions after it round nothing again.
double round_bits(double x, int bits, int min_exp) {
  if (x == 0 || !std::isfinite(x)) return x;
  int e = 0;
  const double m = std::frexp(x, &e);  // x = m 2^e, 0.5 <= |m| < 1
  if (e - 1 < min_exp) {
    const int step = min_exp - bits + 1;
    return std::ldexp(std::nearbyint(std::ldexp(x, -step)), step);
  }
  return std::ldexp(std::nearbyint(std::ldexp(m, bits)), e - bits);
}

template <typename T>
void put(uint8_t* out, size_t i, T v) {
  std::memcpy(out + i * sizeof(T), &v, sizeof(T));
}

}  // namespace

bool encodable(DType t) {
  return t == DType::F64 || t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

void encode_values(const double* v, size_t n, DType t, uint8_t* out) {
  switch (t) {
    case DType::F64:
      for (size_t i = 0; i < n; ++i) put(out, i, v[i]);
      return;
    case DType::F32:
      for (size_t i = 0; i < n; ++i) put(out, i, static_cast<float>(v[i]));
      return;
    case DType::BF16:  // 8 significant bits; fp32's exponent range
      for (size_t i = 0; i < n; ++i)
        put(out, i, float_to_bf16(static_cast<float>(round_bits(v[i], 8, -126))));
      return;
    case DType::F16:  // 11 significant bits; normal from 2^-14
      for (size_t i = 0; i < n; ++i)
        put(out, i, float_to_fp16(static_cast<float>(round_bits(v[i], 11, -14))));
      return;
    default:
      throw Error(std::string("cannot write values as ") + dtype_name(t));
  }
}

size_t first_overflow(const std::vector<double>& values, DType t) {
  // The largest finite magnitude that rounds into the format: its largest value plus half a
  // step of its last binade (ties to even go to the infinity beyond).
  double limit = std::numeric_limits<double>::infinity();
  if (t == DType::F32 || t == DType::BF16)
    limit = std::ldexp(2.0 - std::ldexp(1.0, t == DType::F32 ? -24 : -8), 127);
  else if (t == DType::F16)
    limit = 65520.0;  // 65504 + 16
  for (size_t i = 0; i < values.size(); ++i)
    if (std::isfinite(values[i]) && std::fabs(values[i]) >= limit) return i;
  return values.size();
}

std::vector<uint8_t> encode_values(const std::vector<double>& values, DType t) {
  std::vector<uint8_t> out(values.size() * static_cast<size_t>(dtype_bits(t) / 8));
  encode_values(values.data(), values.size(), t, out.data());
  return out;
}

}  // namespace indim::detail
