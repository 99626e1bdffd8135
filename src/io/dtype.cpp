#include "indim/dtype.hpp"

#include <cmath>
#include <cstring>
#include <string>

#include "indim/error.hpp"

namespace indim {

namespace {
struct DTypeRow {
  DType type;
  const char* name;
  int bits;
};
constexpr DTypeRow kTable[] = {
    {DType::BOOL, "BOOL", 8},
    {DType::U8, "U8", 8},
    {DType::I8, "I8", 8},
    {DType::F8_E5M2, "F8_E5M2", 8},
    {DType::F8_E4M3, "F8_E4M3", 8},
    {DType::F8_E8M0, "F8_E8M0", 8},
    {DType::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8},
    {DType::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8},
    {DType::I16, "I16", 16},
    {DType::U16, "U16", 16},
    {DType::F16, "F16", 16},
    {DType::BF16, "BF16", 16},
    {DType::I32, "I32", 32},
    {DType::U32, "U32", 32},
    {DType::F32, "F32", 32},
    {DType::I64, "I64", 64},
    {DType::U64, "U64", 64},
    {DType::F64, "F64", 64},
    {DType::C64, "C64", 64},
    {DType::F4, "F4", 4},
    {DType::F6_E2M3, "F6_E2M3", 6},
    {DType::F6_E3M2, "F6_E3M2", 6},
};

const DTypeRow& row(DType t) {
  for (const auto& r : kTable)
    if (r.type == t) return r;
  return kTable[0];  // unreachable: every enumerator has a row
}

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <typename T>
void convert_impl(const void* src, DType t, size_t n, T* dst) {
  const auto* p = static_cast<const uint8_t*>(src);
  switch (t) {
    case DType::F32:
      for (size_t i = 0; i < n; ++i) {
        float v;
        std::memcpy(&v, p + 4 * i, 4);
        dst[i] = static_cast<T>(v);
      }
      return;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, p + 8 * i, 8);
        dst[i] = static_cast<T>(v);
      }
      return;
    case DType::BF16:  // the top half of an fp32: a shift the compiler vectorises
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);  // little-endian, as the F32 and F64 cases read
        dst[i] = static_cast<T>(bits_float(static_cast<uint32_t>(h) << 16));
      }
      return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i)
        dst[i] = fp16_to_float(static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)));
      return;
    default:
      throw Error(std::string("dtype ") + dtype_name(t) +
                  " cannot be analysed (supported: F64, F32, F16, BF16)");
  }
}
}  // namespace

std::optional<DType> parse_dtype(std::string_view s) {
  for (const auto& r : kTable)
    if (s == r.name) return r.type;
  return std::nullopt;
}

const char* dtype_name(DType t) { return row(t).name; }
int dtype_bits(DType t) { return row(t).bits; }
bool dtype_is_analysable(DType t) {
  return t == DType::F64 || t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

float bf16_to_float(uint16_t bits) { return bits_float(static_cast<uint32_t>(bits) << 16); }

float fp16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return bits_float(sign | 0x7F800000u | (mant << 13));  // inf / NaN
  if (exp != 0) return bits_float(sign | ((exp + 112) << 23) | (mant << 13));
  // Zero or subnormal: mant * 2^-24, exact in fp32.
  float v = std::ldexp(static_cast<float>(mant), -24);
  return sign ? -v : v;
}

uint16_t float_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u)
    return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

uint16_t float_to_fp16(float f) {
  uint32_t u = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7FFFFFFFu;
  if (u > 0x7F800000u) return sign | 0x7E00u;   // NaN
  if (u >= 0x477FF000u) return sign | 0x7C00u;  // rounds to >= 65520: inf
  if (u < 0x38800000u) {
    // Result is subnormal or zero: round |f| / 2^-24 to nearest even integer.
    float a = bits_float(u);
    float q = std::nearbyint(a * 16777216.0f);  // default rounding mode: nearest even
    return sign | static_cast<uint16_t>(q);
  }
  uint32_t mant = u & 0x7FFFFFu;
  uint32_t exp = (u >> 23) - 112;
  uint32_t half = (exp << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;  // carries into exp correctly
  return sign | static_cast<uint16_t>(half);
}

void convert_elements(const void* src, DType t, size_t n, float* dst) {
  convert_impl(src, t, n, dst);
}
void convert_elements(const void* src, DType t, size_t n, double* dst) {
  convert_impl(src, t, n, dst);
}

}  // namespace indim
