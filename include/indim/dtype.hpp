// Element types of the safetensors format and conversion of the analysable ones to float/double.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace indim {

/// @brief Every dtype the safetensors format defines (safetensors `enum Dtype`).
enum class DType {
  BOOL,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  F8_E8M0,
  F8_E4M3FNUZ,
  F8_E5M2FNUZ,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  I64,
  U64,
  F64,
  C64,
  F4,
  F6_E2M3,
  F6_E3M2,
};

/// @brief Parses a safetensors dtype string ("BF16", "F32", ...); nullopt when unknown.
std::optional<DType> parse_dtype(std::string_view s);
/// @brief The safetensors spelling of a dtype.
const char* dtype_name(DType t);
/// @brief Bits per element (F4 is 4, the F6 types 6).
int dtype_bits(DType t);
/// @brief True for the dtypes indim analyses as they are: F64, F32, F16, BF16.
bool dtype_is_analysable(DType t);
/// @brief True for the small float codes a quantised weight stores beside its scales: the FP8
/// dtypes (F8_E4M3, F8_E5M2, F8_E4M3FNUZ, F8_E5M2FNUZ), F8_E8M0 (scales) and F4 (E2M1).
bool dtype_is_minifloat(DType t);

/// @brief The exact value of one code of a minifloat dtype (F4: E2M1 in the low four bits).
/// NaN codes give NaN (E4M3: S.1111.111; the FNUZ types: 0x80; E8M0: 0xFF), E5M2's infinity
/// codes infinity. Throws indim::Error for a dtype that is not a minifloat.
float minifloat_to_float(uint8_t code, DType t);
/// @brief The 256 values of a minifloat dtype's codes (F4: the codes 0..15, then copies).
const float* minifloat_table(DType t);
/// @brief The quantisation step of a minifloat dtype at |f|: the gap between the largest
/// value at most |f| and the next one up (the top gap past the largest finite value).
float minifloat_step(float f, DType t);
/// @brief The code of a minifloat dtype nearest to f, as the producers' quantisers round
/// (nearest, ties to the even code), saturating at the largest finite value; NaN gives the
/// format's NaN code (F4, which has none, gives 0). Throws indim::Error for another dtype.
uint8_t float_to_minifloat(float f, DType t);

/// @brief Exact bf16 -> fp32 (bf16 is the top half of an fp32).
float bf16_to_float(uint16_t bits);
/// @brief Exact IEEE half -> fp32, subnormals, infinities and NaN included.
float fp16_to_float(uint16_t bits);
/// @brief fp32 -> bf16, round to nearest even; NaN stays NaN.
uint16_t float_to_bf16(float f);
/// @brief fp32 -> IEEE half, round to nearest even; overflow gives inf, NaN stays NaN.
uint16_t float_to_fp16(float f);

/// @brief Converts n little-endian elements of an analysable dtype at `src` (any alignment) to
/// float. Throws indim::Error for a dtype that is not analysable.
void convert_elements(const void* src, DType t, size_t n, float* dst);
/// @brief As above, to double.
void convert_elements(const void* src, DType t, size_t n, double* dst);

}  // namespace indim
