// Host matrices from stored bytes, and their transpose: what the backends' host defaults and
// the pipeline's loaders share.
#pragma once

#include <string>

#include "indim/backend.hpp"

namespace indim::detail {

/// [rows, cols] -> [cols, rows].
template <typename T>
Dense<T> transposed(const Dense<T>& w);

/// Stored little-endian `dtype` bytes, row-major [rows, cols], as T (transposed to [cols, rows]
/// when `transpose`). Throws indim::BadInput "<label> holds a non-finite value at [i, j]"
/// (stored coordinates).
template <typename T>
Dense<T> from_stored(const void* bytes, DType dtype, int64_t rows, int64_t cols, bool transpose,
                     const std::string& label);

}  // namespace indim::detail
