// The host's scan for non-finite values, shared by every loader and merge (the device has its
// own in cuda/), and the coordinates its messages print.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
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
