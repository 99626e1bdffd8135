// Host matrices from stored bytes, and their transpose: what the backends' host defaults and
// the pipeline's loaders share.
#pragma once

#include <string>

#include "indim/backend.hpp"

namespace indim::detail {

/// src [rows, cols] -> dst [cols, rows], row-major.
template <typename T>
void transpose_into(const T* src, int64_t rows, int64_t cols, T* dst);

/// [rows, cols] -> [cols, rows].
template <typename T>
Dense<T> transposed(const Dense<T>& w);

/// Stored little-endian `dtype` bytes, row-major [rows, cols], as T (transposed to [cols, rows]
/// when `transpose`). Throws indim::BadInput "<label> holds a non-finite value at [i, j]"
/// (stored coordinates).
template <typename T>
Dense<T> from_stored(const void* bytes, DType dtype, int64_t rows, int64_t cols, bool transpose,
                     const std::string& label);

/// As from_stored, into `out` (resized; its storage reused across calls), with `scratch`
/// holding the stored orientation when transposing.
template <typename T>
void stored_into(const void* bytes, DType dtype, int64_t rows, int64_t cols, bool transpose,
                 const std::string& label, std::vector<T>& out, std::vector<T>& scratch);

}  // namespace indim::detail
