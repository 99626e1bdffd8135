// The host's scan for non-finite values, shared by every loader and merge (the device has its
// own in cuda/), and the coordinates its messages print.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace indim::detail {

/// Index of the first value of p[0, n) that is not finite, or n when all are.
template <typename T>
size_t first_non_finite(const T* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) return i;
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
