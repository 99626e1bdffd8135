#include "indim/dtype.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

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

// How a minifloat's codes are laid out: sign (not for E8M0), exponent, mantissa, and which codes
// are not numbers (OCP 8-bit floating point spec; AMD's FNUZ variants; OCP MX for E8M0, E2M1).
struct Minifloat {
  enum class Special { Ieee, AllOnesNaN, NegZeroNaN, UnsignedNaN, None };
  int exp_bits, man_bits, bias;
  Special special;
  bool has_sign;
};

Minifloat minifloat_format(DType t) {
  using S = Minifloat::Special;
  switch (t) {
    case DType::F8_E4M3:
      return {4, 3, 7, S::AllOnesNaN, true};
    case DType::F8_E5M2:
      return {5, 2, 15, S::Ieee, true};
    case DType::F8_E4M3FNUZ:
      return {4, 3, 8, S::NegZeroNaN, true};
    case DType::F8_E5M2FNUZ:
      return {5, 2, 16, S::NegZeroNaN, true};
    case DType::F8_E8M0:
      return {8, 0, 127, S::UnsignedNaN, false};
    case DType::F4:
      return {2, 1, 1, S::None, true};
    default:
      throw Error(std::string("dtype ") + dtype_name(t) + " is not a minifloat");
  }
}

// One code's value, assembled as fp32 bits: every minifloat value is a normal or (E8M0's 2^-127)
// subnormal fp32.
float decode_code(uint32_t code, const Minifloat& f) {
  const uint32_t width = static_cast<uint32_t>(f.exp_bits + f.man_bits) + (f.has_sign ? 1 : 0);
  code &= (1u << width) - 1;
  const uint32_t emax = (1u << f.exp_bits) - 1, mmax = (1u << f.man_bits) - 1;
  const uint32_t sign = f.has_sign ? (code >> (f.exp_bits + f.man_bits)) << 31 : 0;
  const uint32_t e = (code >> f.man_bits) & emax, m = code & mmax;
  using S = Minifloat::Special;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  if (f.special == S::NegZeroNaN && code == 1u << (width - 1)) return nan;
  if (f.special == S::AllOnesNaN && e == emax && m == mmax) return nan;
  if (f.special == S::UnsignedNaN && code == 0xFF) return nan;
  if (f.special == S::Ieee && e == emax)
    return bits_float(sign | 0x7F800000u | (m ? 0x400000u : 0));
  if (e == 0 && f.man_bits == 0) return bits_float(0x00400000u);  // E8M0's 2^-127
  if (e != 0)
    return bits_float(sign | ((e + 127 - static_cast<uint32_t>(f.bias)) << 23) |
                      (m << (23 - f.man_bits)));
  if (m == 0) return bits_float(sign);
  // Subnormal: m 2^(1 - bias - man_bits), normalised on its highest set bit.
  int top = 31 - __builtin_clz(m);
  const int exp = top + 1 - f.bias - f.man_bits;
  return bits_float(sign | (static_cast<uint32_t>(exp + 127) << 23) |
                    ((m ^ (1u << top)) << (23 - top)));
}

struct MinifloatTables {
  std::array<float, 256> values{};
  // Non-negative finite values, ascending, each with its code (ties between +0 codes resolved
  // to the plain zero): what the encoder searches.
  std::vector<std::pair<float, uint8_t>> ladder;
  uint8_t nan_code = 0;
};

MinifloatTables make_tables(DType t) {
  const Minifloat f = minifloat_format(t);
  MinifloatTables tab;
  const uint32_t width = static_cast<uint32_t>(f.exp_bits + f.man_bits) + (f.has_sign ? 1 : 0);
  for (uint32_t c = 0; c < 256; ++c) tab.values[c] = decode_code(c, f);
  for (uint32_t c = 0; c < (1u << width); ++c) {
    const float v = tab.values[c];
    if (std::isnan(v)) tab.nan_code = static_cast<uint8_t>(c);
    if (std::isfinite(v) && !std::signbit(v)) tab.ladder.push_back({v, static_cast<uint8_t>(c)});
  }
  std::sort(tab.ladder.begin(), tab.ladder.end());
  return tab;
}

const MinifloatTables& tables(DType t) {
  static const MinifloatTables e4m3 = make_tables(DType::F8_E4M3),
                               e5m2 = make_tables(DType::F8_E5M2),
                               e4m3fnuz = make_tables(DType::F8_E4M3FNUZ),
                               e5m2fnuz = make_tables(DType::F8_E5M2FNUZ),
                               e8m0 = make_tables(DType::F8_E8M0), f4 = make_tables(DType::F4);
  switch (t) {
    case DType::F8_E4M3:
      return e4m3;
    case DType::F8_E5M2:
      return e5m2;
    case DType::F8_E4M3FNUZ:
      return e4m3fnuz;
    case DType::F8_E5M2FNUZ:
      return e5m2fnuz;
    case DType::F8_E8M0:
      return e8m0;
    case DType::F4:
      return f4;
    default:
      minifloat_format(t);  // throws
      return f4;
  }
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

bool dtype_is_minifloat(DType t) {
  return t == DType::F8_E4M3 || t == DType::F8_E5M2 || t == DType::F8_E4M3FNUZ ||
         t == DType::F8_E5M2FNUZ || t == DType::F8_E8M0 || t == DType::F4;
}

const float* minifloat_table(DType t) { return tables(t).values.data(); }

float minifloat_to_float(uint8_t code, DType t) {
  return tables(t).values[t == DType::F4 ? code & 0xF : code];
}

float minifloat_step(float x, DType t) {
  const auto& l = tables(t).ladder;
  const float a = std::fabs(x);
  auto hi = std::upper_bound(l.begin(), l.end(), std::make_pair(a, uint8_t{0xFF}),
                             [](const auto& p, const auto& q) { return p.first < q.first; });
  if (hi == l.end()) return l.back().first - (l.end() - 2)->first;
  return hi == l.begin() ? hi->first : hi->first - (hi - 1)->first;
}

uint8_t float_to_minifloat(float x, DType t) {
  const MinifloatTables& tab = tables(t);
  const Minifloat f = minifloat_format(t);
  if (std::isnan(x)) return tab.nan_code;
  const bool negative = std::signbit(x) && f.has_sign;
  const float a = std::fabs(x);
  const auto& l = tab.ladder;
  auto hi = std::lower_bound(l.begin(), l.end(), std::make_pair(a, uint8_t{0}),
                             [](const auto& p, const auto& q) { return p.first < q.first; });
  uint8_t code;
  if (hi == l.end()) {
    code = l.back().second;  // saturate
  } else if (hi == l.begin() || hi->first == a) {
    code = hi->second;
  } else {
    const auto lo = hi - 1;
    const float dl = a - lo->first, dh = hi->first - a;
    code = dl < dh             ? lo->second
           : dh < dl           ? hi->second
           : (lo->second & 1u) ? hi->second
                               : lo->second;
  }
  if (!negative || tab.values[code] == 0.0f) return code;  // no negative zero (FNUZ has none)
  return static_cast<uint8_t>(code | (1u << (f.exp_bits + f.man_bits)));
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
