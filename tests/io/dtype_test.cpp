#include "indim/dtype.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

using namespace indim;

namespace {
uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// The IEEE half value by its formula, computed in double: an independent reference.
double half_by_formula(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
  double v = exp == 0 ? std::ldexp(mant, -24) : std::ldexp(1024 + mant, exp - 25);
  return sign ? -v : v;
}
}  // namespace

TEST(DType, NamesAndBitsRoundTrip) {
  for (const char* n :
       {"BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ",
        "I16",  "U16", "F16", "BF16",    "I32",     "U32",     "F32",         "I64",
        "U64",  "F64", "C64", "F4",      "F6_E2M3", "F6_E3M2"}) {
    auto t = parse_dtype(n);
    ASSERT_TRUE(t.has_value()) << n;
    EXPECT_STREQ(dtype_name(*t), n);
  }
  EXPECT_FALSE(parse_dtype("bf16").has_value());
  EXPECT_FALSE(parse_dtype("F128").has_value());
  EXPECT_EQ(dtype_bits(DType::F4), 4);
  EXPECT_EQ(dtype_bits(DType::F6_E3M2), 6);
  EXPECT_EQ(dtype_bits(DType::C64), 64);
  EXPECT_TRUE(dtype_is_analysable(DType::BF16));
  EXPECT_FALSE(dtype_is_analysable(DType::F8_E4M3));
  EXPECT_FALSE(dtype_is_analysable(DType::I8));
}

TEST(DType, Fp16EveryBitPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_float(static_cast<uint16_t>(h));
    const int exp = (h >> 10) & 31;
    if (exp == 31) {
      if (h & 1023) {
        EXPECT_TRUE(std::isnan(f)) << h;
      } else {
        EXPECT_TRUE(std::isinf(f)) << h;
        EXPECT_EQ(std::signbit(f), (h >> 15) != 0);
      }
      continue;
    }
    EXPECT_EQ(static_cast<double>(f), half_by_formula(static_cast<uint16_t>(h))) << h;
    EXPECT_EQ(std::signbit(f), (h >> 15) != 0) << h;  // -0 stays -0
    EXPECT_EQ(float_to_fp16(f), h) << h;              // exact values round-trip
  }
}

TEST(DType, Fp16RoundingEdges) {
  EXPECT_EQ(fp16_to_float(0x0001), std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(fp16_to_float(0x03FF), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(fp16_to_float(0x7BFF), 65504.0f);
  EXPECT_EQ(float_to_fp16(65519.0f), 0x7BFF);               // below the rounding boundary
  EXPECT_EQ(float_to_fp16(65520.0f), 0x7C00);               // ties to even: overflows to inf
  EXPECT_EQ(float_to_fp16(std::ldexp(1.0f, -25)), 0x0000);  // half the smallest: ties to even 0
  EXPECT_EQ(float_to_fp16(std::ldexp(3.0f, -26)), 0x0001);  // 0.75 ulp rounds up
  EXPECT_EQ(float_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // tie: even mantissa stays
  EXPECT_EQ(float_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie: odd rounds up
  EXPECT_EQ(float_to_fp16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(float_to_fp16(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_EQ(float_to_fp16(std::nanf("")) & 0x7C00, 0x7C00);
  EXPECT_NE(float_to_fp16(std::nanf("")) & 0x03FF, 0);
}

TEST(DType, Bf16EveryBitPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_float(static_cast<uint16_t>(h));
    EXPECT_EQ(bits(f), h << 16) << h;
    if (!std::isnan(f))
      EXPECT_EQ(float_to_bf16(f), h) << h;
    else
      EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(f)))) << h;
  }
}

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(from_bits(0x3F808000u)), 0x3F80);  // tie, even stays
  EXPECT_EQ(float_to_bf16(from_bits(0x3F818000u)), 0x3F82);  // tie, odd rounds up
  EXPECT_EQ(float_to_bf16(from_bits(0x3F808001u)), 0x3F81);  // above the tie
  EXPECT_EQ(float_to_bf16(from_bits(0x7F7FFFFFu)), 0x7F80);  // max float rounds to inf
  EXPECT_EQ(float_to_bf16(from_bits(0x00000001u)), 0x0000);  // tiny subnormal to zero
  EXPECT_EQ(float_to_bf16(from_bits(0x00018000u)), 0x0002);  // subnormal tie, odd rounds up
  // A signalling NaN whose payload sits in the low half must stay NaN.
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(from_bits(0x7F800001u)))));
}

TEST(DType, ConvertElementsUnalignedLittleEndian) {
  // bf16 1.0 = 0x3F80, fp16 -2.0 = 0xC000, at an odd address.
  const uint8_t raw[] = {0xFF, 0x80, 0x3F, 0x00, 0xC0};
  float f[2];
  convert_elements(raw + 1, DType::BF16, 1, f);
  EXPECT_EQ(f[0], 1.0f);
  convert_elements(raw + 3, DType::F16, 1, f + 1);
  EXPECT_EQ(f[1], -2.0f);
  double d;
  const uint8_t f32[] = {0x00, 0x00, 0x00, 0x00, 0x40, 0x00};  // 2.0f at offset 1
  convert_elements(f32 + 1, DType::F32, 1, &d);
  EXPECT_EQ(d, 2.0);
  EXPECT_THROW(convert_elements(raw, DType::I8, 1, f), std::exception);
}
