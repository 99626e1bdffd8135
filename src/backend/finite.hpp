// The host's scan for non-finite values, shared by every loader and merge (the device has its
// own in cuda/), and the coordinates its messages print.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "indim/dtype.hpp"

namespace indim::detail {

/// Index of the first value of p[0, n) that is not finite, or n when all are.
template <typename T>
size_t first_non_finite(const T* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) return i;
  return n;
}

/// Converts n stored `t` elements at src into dst and returns the index of the first that is not
/// finite (n when all are): one pass over memory, each block checked while it is in cache.
template <typename T>
size_t convert_finite(const void* src, DType t, size_t n, T* dst) {
  constexpr size_t kBlock = 4096;
  const size_t width = static_cast<size_t>(dtype_bits(t) / 8);
  for (size_t at = 0; at < n; at += kBlock) {
    const size_t len = n - at < kBlock ? n - at : kBlock;
    convert_elements(static_cast<const uint8_t*>(src) + at * width, t, len, dst + at);
    const size_t bad = first_non_finite(dst + at, len);
    if (bad < len) return at + bad;
  }
  return n;
}

/// Whether any of n stored elements of W bytes (an IEEE type whose exponent field is `mask`) is
/// not finite: an all-ones exponent. No early exit, and the flags are OR-ed in a W, not a bool,
/// so the compiler vectorises it (GCC 12 left the bool form scalar: 2.9 against 27 GB/s).
template <typename W>
bool any_non_finite_bits(const uint8_t* src, size_t n, W mask) {
  W any = 0;
  for (size_t i = 0; i < n; ++i) {
    W v;
    std::memcpy(&v, src + i * sizeof(W), sizeof(W));
    any |= (v & mask) == mask ? W{1} : W{0};
  }
  return any != 0;
}

/// The index of the first of n stored `t` elements at src that is not finite, or n: a block at
/// a time by the exponent's bits, the block holding one then converted to find it.
inline size_t first_non_finite_stored(const void* src, DType t, size_t n) {
  constexpr size_t kBlock = 4096;
  const auto* p = static_cast<const uint8_t*>(src);
  const size_t width = static_cast<size_t>(dtype_bits(t) / 8);
  std::vector<double> block;
  for (size_t at = 0; at < n; at += kBlock) {
    const size_t len = n - at < kBlock ? n - at : kBlock;
    const uint8_t* b = p + at * width;
    bool any = true;  // a type without a bit test is converted whole
    if (t == DType::BF16) any = any_non_finite_bits<uint16_t>(b, len, 0x7f80);
    if (t == DType::F16) any = any_non_finite_bits<uint16_t>(b, len, 0x7c00);
    if (t == DType::F32) any = any_non_finite_bits<uint32_t>(b, len, 0x7f800000u);
    if (t == DType::F64) any = any_non_finite_bits<uint64_t>(b, len, 0x7ff0000000000000ull);
    if (!any) continue;
    block.resize(kBlock);
    const size_t bad = convert_finite(b, t, len, block.data());
    if (bad < len) return at + bad;
  }
  return n;
}

template <typename T>
bool all_finite(const std::vector<T>& v) {
  return first_non_finite(v.data(), v.size()) == v.size();
}

/// "[i / cols, i % cols]" (with a leading "slice, " when slice >= 0): where element i of a
/// row-major matrix lies.
inline std::string matrix_index_text(size_t i, int64_t cols, int64_t slice = -1) {
  const size_t c = static_cast<size_t>(cols);
  return "[" + (slice >= 0 ? std::to_string(slice) + ", " : std::string()) + std::to_string(i / c) +
         ", " + std::to_string(i % c) + "]";
}

}  // namespace indim::detail
